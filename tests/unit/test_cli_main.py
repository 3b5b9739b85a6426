"""The pfha dispatcher: finds its subcommands and turns user errors into one line."""

import pytest

from pfha.cli import main as cli


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    assert "COMMAND" in capsys.readouterr().out


def test_no_command_is_usage_error(capsys):
    assert cli.main([]) == 2
