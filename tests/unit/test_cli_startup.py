"""The CLI's cheap path: listing commands and running ``pfha check`` import only what they use.

Checked structurally (which modules a fresh interpreter holds), not by timing: start-up time is
measured in docs/benchmarks-cli.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pfha.cli import main as cli

SRC = Path(__file__).resolve().parents[2] / "src"

#: what no command's listing and no parse-only command may pull in
HEAVY = ("asyncio", "scapy", "pfha.lab", "pfha.audit", "pfha.node", "pfha.sync", "pfha.carp",
         "pfha.nft", "pfha.pflog", "pfha.engine")


def _modules_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code`` (a new process: this one
    has imported everything already)."""
    script = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if any(m == h or m.startswith(h + ".") for h in HEAVY)]


def test_listing_and_parsing_a_check_import_no_command_implementation():
    modules = _modules_after(
        "from pfha.cli import main\n"
        "args = main.build_parser().parse_args(['check', 'x.conf'])\n"
        "assert args.command == 'check'\n"
    )
    assert _heavy(modules) == []
    assert "logging" not in modules  # the daemons' commands set logging up when they run
    assert "pfha.cli.commands.check" in modules and "pfha.cli.commands.node" in modules


def test_pfha_check_runs_without_the_daemon_lab_or_audit(tmp_path):
    conf = tmp_path / "tiny.conf"
    conf.write_text("pass in all\n")
    modules = _modules_after(
        "from pfha.cli import main\n"
        f"assert main.main(['check', '--if', 'em0=192.0.2.1/24', {str(conf)!r}]) == 0\n"
    )
    assert _heavy(modules) == []
    assert "pfha.conf.parser" in modules  # it did the work


def test_pfctl_n_imports_no_daemon_part(tmp_path):
    conf = tmp_path / "tiny.conf"
    conf.write_text("pass in all\n")
    modules = _modules_after(
        "from pfha.cli import pfctl\n"
        f"assert pfctl.run(['-nvf', {str(conf)!r}, '--if', 'em0=192.0.2.1/24']) == 0\n"
    )
    assert _heavy(modules) == []


@pytest.mark.parametrize("name", ["status", "node", "lab", "demo", "audit", "pflogd", "overload-flush"])
def test_a_command_s_arguments_import_its_dependencies_only_when_chosen(name):
    """``pfha NAME --help`` builds NAME's arguments (which may import its package); the other
    commands' are never built."""
    modules = _modules_after(
        "from pfha.cli import main\n"
        "parser = main.build_parser()\n"
        "try:\n"
        f"    parser.parse_args([{name!r}, '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
    )
    assert not any(m.startswith("pfha.lab") for m in modules) or name in ("lab", "demo")
    assert not any(m.startswith("pfha.audit") for m in modules) or name == "audit"


def test_every_command_module_is_found_and_all_arguments_can_be_built():
    parser = cli.build_parser(complete=True)
    sub = next(a for a in parser._actions if isinstance(a, cli._Commands))
    assert sub._pending == {}
    names = list(sub.choices)
    assert names == sorted(names, key=lambda n: n.replace("-", "_"))
    assert {"check", "load", "test", "status", "node", "demo"} <= set(names)
    assert "_demo" not in names
    check = sub.choices["check"]
    assert any("--if" in a.option_strings for a in check._actions)


def test_discovery_finds_the_modules_pkgutil_finds():
    import pkgutil

    from pfha.cli import commands

    expected = sorted(i.name for i in pkgutil.iter_modules(commands.__path__) if not i.name.startswith("_"))
    assert cli._command_names() == expected


def test_a_new_command_module_appears_without_being_listed(tmp_path, monkeypatch, capsys):
    from pfha.cli import commands

    (tmp_path / "zz_hello.py").write_text(
        'NAME = "zz-hello"\nHELP = "say hello (a test command)"\n'
        "def add_arguments(parser):\n    parser.add_argument('who')\n"
        "def run(args):\n    print('hello', args.who)\n    return 0\n")
    (tmp_path / "_zz_private.py").write_text("raise AssertionError('not a command: never imported')\n")
    monkeypatch.setattr(commands, "__path__", [*commands.__path__, str(tmp_path)])
    try:
        with pytest.raises(SystemExit):
            cli.main(["--help"])
        assert "zz-hello" in capsys.readouterr().out
        assert cli.main(["zz-hello", "admin"]) == 0
        assert capsys.readouterr().out == "hello admin\n"
    finally:
        sys.modules.pop("pfha.cli.commands.zz_hello", None)


def test_ast_values_built_with_one_init_still_read_as_plain_dataclasses():
    """pfha.conf.ast asks the dataclass for no __init__ (its own is written once, faster to
    import); the classes must still say init=True and document their signature."""
    import dataclasses

    from pfha.conf import ast

    values = [c for c in vars(ast).values()
              if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == ast.__name__]
    assert len(values) > 40
    for cls in values:
        params = cls.__dataclass_params__
        assert (params.init, params.frozen, params.eq) == (True, True, True), cls
        assert "__slots__" in cls.__dict__ and cls.__hash__ is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        ast.Origin("f", 1).line = 2  # type: ignore[misc]
    assert ast.Origin("f", 1) == ast.Origin(file="f", line=1)
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'line'"):
        ast.Origin("f")  # type: ignore[call-arg]


def test_ast_value_decorator_documents_and_refuses_like_dataclass():
    import dataclasses

    from pfha.conf.ast import _value

    @_value
    class Bare:
        a: int
        b: str = "x"

    @dataclasses.dataclass(frozen=True, slots=True)
    class Bare2:
        a: int
        b: str = "x"

    @_value(kw_only=True)
    class Keyed:
        a: int
        b: bool = False

    @dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
    class Keyed2:
        a: int
        b: bool = False

    assert Bare.__doc__ == Bare2.__doc__.replace("Bare2", "Bare")
    assert Keyed.__doc__ == Keyed2.__doc__.replace("Keyed2", "Keyed") == "Keyed(*, a: 'int', b: 'bool' = False)"
    with pytest.raises(TypeError, match="positional argument"):
        Keyed(1)  # type: ignore[misc]
    assert Bare(1) == Bare(a=1, b="x") and repr(Bare(2)).endswith("Bare(a=2, b='x')")
    with pytest.raises(TypeError, match="non-default argument 'c' follows default argument"):
        @_value
        class Wrong:
            a: int = 0
            c: int
    with pytest.raises(TypeError, match="only stores its fields"):
        @_value
        class Factory:
            a: tuple = dataclasses.field(default_factory=tuple)
