"""The ``pfctl`` front end (getopt-style flags, dispatch) and ``pfha check``."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from pfha.cli import main as pfha_main
from pfha.cli import pfctl


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = pfctl.run(argv, out=out, err=err)
    return status, out.getvalue(), err.getvalue()


def test_combined_short_flags():
    inv = pfctl.parse_args(["-o", "none", "-vvnf", "pf.conf"])
    assert inv.noaction and inv.verbose == 2 and inv.arg("f") == "pf.conf" and inv.arg("o") == "none"
    inv = pfctl.parse_args(["-nfpf.conf", "-q"])
    assert inv.arg("f") == "pf.conf" and inv.quiet and not inv.verbose


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["-n", "-Z"], "illegal option -- Z"), (["-nf"], "option requires an argument -- f"), (["-o", "fast", "-nf", "x"], "Unknown optimization")],
)
def test_bad_flags_are_one_usage_error(argv, message):
    status, out, err = run(argv)
    assert status == 1 and message in err and "Traceback" not in err


def test_nvf_prints_the_expansion(tmp_path: Path):
    conf = tmp_path / "pf.conf"
    conf.write_text('ext = "xl0"\npass in on $ext proto tcp to $ext port { ssh www }\n')
    status, out, err = run(["-nvf", str(conf), "--if", "xl0=203.0.113.2/24"])
    assert (status, err) == (0, "")
    assert out == (
        'ext = "xl0"\n'
        "pass in on xl0 inet proto tcp from any to 203.0.113.2 port = ssh flags S/SA keep state\n"
        "pass in on xl0 inet proto tcp from any to 203.0.113.2 port = http flags S/SA keep state\n"
    )


def test_nf_is_silent_and_errors_name_file_and_line(tmp_path: Path):
    conf = tmp_path / "pf.conf"
    conf.write_text("pass\n")
    assert run(["-nf", str(conf), "--no-live"]) == (0, "", "")
    conf.write_text("pass\npass on\n")
    status, out, err = run(["-nf", str(conf), "--no-live"])
    assert status == 1 and err == f"{conf}:2: syntax error\n"


def test_missing_file_is_a_clean_error(tmp_path: Path):
    status, out, err = run(["-nf", str(tmp_path / "nope.conf"), "--no-live"])
    assert status == 1 and "cannot open" in err and "Traceback" not in err


def test_loading_without_a_data_plane_says_so(tmp_path: Path, monkeypatch):
    # without a data plane for certain: once something in the session had registered the
    # kernel loader, this test (root, no namespace of its own) loaded "pass" into the host's
    # nftables
    monkeypatch.setattr(pfctl, "LOADERS", [])
    conf = tmp_path / "pf.conf"
    conf.write_text("pass\n")
    status, out, err = run(["-f", str(conf), "--no-live"])
    assert status == 1 and "data plane" in err


def test_actions_are_a_dispatch_table(tmp_path: Path):
    seen = []
    pfctl.register_action("s", lambda inv, out, err: seen.append(inv.arg("s")) or 0)
    try:
        assert run(["-sr"])[0] == 0
        assert seen == ["r"]
    finally:
        del pfctl.ACTIONS["s"]


def test_pfha_check(tmp_path: Path, capsys):
    conf = tmp_path / "pf.conf"
    conf.write_text("pass in on xl1 from xl1:network\n")
    assert pfha_main.main(["check", str(conf), "--if", "xl1=192.168.1.250/24"]) == 0
    assert "OK (1 rules" in capsys.readouterr().out
    assert pfha_main.main(["check", str(conf), "--if", "xl1=192.168.1.250/24", "-v"]) == 0
    assert capsys.readouterr().out == "pass in on xl1 inet from 192.168.1.0/24 to any flags S/SA keep state\n"
    conf.write_text("pass in on xl1 from xl2:network\n")
    assert pfha_main.main(["check", str(conf), "--if", "xl1=192.168.1.250/24"]) == 1
    assert f"{conf}:1: could not parse host specification" in capsys.readouterr().err
