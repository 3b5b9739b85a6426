"""pfctl flags beyond -nvf: ``-D name=value``, ``-vv``'s unused-macro warnings, and the flags pfha refuses."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pfha.cli import pfctl
from pfha.conf import InterfaceView
from pfha.conf.errors import ParseError
from pfha.conf.parser import parse_text


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = pfctl.run(argv, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_command_line_macro_wins_over_the_file(tmp_path: Path):
    conf = tmp_path / "pf.conf"
    conf.write_text('ext = "em1"\npass in on $ext\n')
    status, out, err = run(["-D", "ext=em0", "-nvf", str(conf)])
    assert status == 0 and err == ""
    # the file's definition is printed (pfctl prints it before symset() ignores it)
    assert out == 'ext = "em1"\npass in on em0 all flags S/SA keep state\n'


def test_first_definition_stays_and_the_last_equals_sign_splits(tmp_path: Path):
    conf = tmp_path / "pf.conf"
    conf.write_text('pass in on $a\n')
    status, out, _ = run(["-Da=em0", "-D", "a=em2", "-nvf", str(conf)])
    assert status == 0 and "on em0" in out
    # pfctl_cmdline_symset() splits at the LAST '=': "a=b=em3" defines "a=b"
    _, _, err = run(["-D", "a=b=em3", "-nf", str(conf)])
    assert "macro 'a' not defined" in err


def test_definition_without_value_is_warned_and_skipped(tmp_path: Path):
    conf = tmp_path / "pf.conf"
    conf.write_text('pass in on $a\n')
    status, _, err = run(["-D", "a", "-nf", str(conf)])
    assert status == 1
    assert err.splitlines()[0] == "pfctl: could not parse macro definition a"
    assert "macro 'a' not defined" in err


def test_vv_warns_about_macros_never_used_in_pfctls_order(tmp_path: Path):
    conf = tmp_path / "pf.conf"
    conf.write_text('a = "em0"\nb = "x"\nc = "$a"\na = "em1"\npass in on $c\n')
    _, _, err = run(["-D", "z=1", "-D", "y=2", "-nvvf", str(conf)])
    # -D symbols first, then the file's; redefining 'a' made a new, unused symbol at the end
    assert err.splitlines() == ["warning: macro 'z' not used", "warning: macro 'y' not used",
                                "warning: macro 'b' not used", "warning: macro 'a' not used"]
    _, _, err = run(["-nvf", str(conf)])
    assert "not used" not in err


def test_load_anchor_files_see_only_the_command_line_macros(tmp_path: Path):
    """pfctl frees the file's macros after parsing it; -D ones persist into loaded anchors."""
    (tmp_path / "anchor.conf").write_text("pass in on $d\n")
    (tmp_path / "anchor2.conf").write_text("pass in on $f\n")
    text = f'f = "em1"\nanchor a\nload anchor a from "{tmp_path}/anchor.conf"\n'
    ruleset = parse_text(text, "pf.conf", InterfaceView.empty(), macros={"d": "em0"})
    assert ruleset.anchor("a").filter[0].interface.name == "em0"
    text2 = f'f = "em1"\nanchor a\nload anchor a from "{tmp_path}/anchor2.conf"\n'
    with pytest.raises(ParseError, match="macro 'f' not defined"):
        parse_text(text2, "pf.conf", InterfaceView.empty())


@pytest.mark.parametrize("argv,flag", [
    (["-N", "-nf", "x.conf"], "-N (load only the NAT rules)"),
    (["-Rf", "x.conf"], "-R (load only the filter rules)"),
    (["-i", "xl0", "-Fs"], "-i (restrict to one interface)"),
    (["-x", "loud"], "-x (set pf's debug level)"),
    (["-p", "/dev/pf", "-sr"], "-p (use another pf device)"),
    (["-K", "10.0.0.1"], "-K (kill source nodes)"),
])
def test_flags_pfha_cannot_honour_are_refused_not_ignored(argv, flag):
    """pfctl -i xl0 -Fs ignoring -i would flush every state: such flags are refused."""
    status, out, err = run(argv)
    assert status == 1 and out == ""
    assert err.startswith(f"pfctl: {flag} is not supported by pfha: ")


def test_S_is_not_a_pfctl_flag():
    status, _, err = run(["-S"])
    assert status != 0 and err.startswith("pfctl: illegal option -- S")


def test_modifiers_are_looked_up_as_pfctl_does():
    from pfha.conf.names import lookup_option as lookup
    from pfha.nft.pfctl_actions import FLUSH_MODIFIERS, SHOW_MODIFIERS, TABLE_COMMANDS

    assert [lookup(w, SHOW_MODIFIERS) for w in ("r", "ru", "R", "s", "S", "i", "I", "t", "T", "a", "A", "x")] == [
        "rules", "rules", "Running", "states", "Sources", "info", "Interfaces", "timeouts", "Tables", "all",
        "Anchors", None]
    assert [lookup(w, FLUSH_MODIFIERS) for w in ("n", "s", "S", "T", "a", "e", "")] == [
        "nat", "states", "Sources", "Tables", "all", "ethernet", None]
    assert [lookup(w, TABLE_COMMANDS) for w in ("a", "d", "r", "s", "t", "f", "k")] == [
        "add", "delete", "replace", "show", "test", "flush", "kill"]


@pytest.mark.parametrize("argv,message", [
    (["-s", "Sources"], "pfctl: -s Sources is not supported by pfha: it keeps no source nodes"),
    (["-s", "q"], "pfctl: -s queue is not supported by pfha: it has no ALTQ"),
    (["-F", "S"], "pfctl: -F Sources is not supported by pfha: it keeps no source nodes"),
    (["-t", "x", "-T", "test", "10.0.0.1"], "pfctl: -T test is not supported by pfha: not implemented"),
])
def test_modifiers_pfha_cannot_honour_are_refused(argv, message):
    from pfha.nft import pfctl_actions

    inv = pfctl.parse_args(argv)
    handler = {"s": pfctl_actions.show, "F": pfctl_actions.flush, "T": pfctl_actions.table}[inv.order[-1]]
    out, err = io.StringIO(), io.StringIO()
    assert handler(inv, out, err) == 1  # refused before anything touches the kernel
    assert (out.getvalue(), err.getvalue().strip()) == ("", message)
