"""``pfha audit`` end to end on the tutorial's files: every listed mistake, and none on corrected/."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pfha.cli import main as cli

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tutorial-host"


def run(capsys, *argv) -> tuple[int, dict]:
    status = cli.main(["audit", "--json", *map(str, argv)])
    return status, json.loads(capsys.readouterr().out)


def at(findings, check, file_suffix=None, line=None):
    return [f for f in findings if f["check"] == check
            and (file_suffix is None or (f["file"] or "").endswith(file_suffix))
            and (line is None or f["line"] == line)]


def test_as_published_reports_each_mistake_of_the_readme(shared, capsys):
    folder = shared / "seed" / "configs" / "as-published"
    status, report = run(capsys, "--root", FIXTURE, folder)
    findings = report["findings"]
    assert status == 1
    # 1. pfs_if = "dc0" while pfsync runs on rl0: the pfsync pass never matches, block log all drops sync.
    (sync,) = at(findings, "lint.ha-traffic", "pf.conf", 61)
    assert sync["severity"] == "error" and sync["fix"] == 'set pfs_if = "rl0" (line 5)'
    assert {"file": str(folder / "pf.conf"), "line": 53} in sync["related"]
    # 2. three rdr rules for the same destination: only the first is used.
    rdr = at(findings, "lint.rdr-shadowed", "pf.conf")
    assert [f["line"] for f in rdr] == [47, 48]
    assert "{ 192.168.1.80, 192.168.1.81, 192.168.1.82 } round-robin" in rdr[0]["fix"]
    # 3. nat -> $ext_if: each node's own address.
    (nat,) = at(findings, "lint.nat-own-address", "pf.conf", 37)
    assert nat["severity"] == "error" and "-> 203.0.113.10" in nat["fix"]
    assert set(nat["nodes"]) == {"dell_firewall", "dell_firewall2"}
    # 4. the same advskew on both nodes.
    skew = at(findings, "pair.carp-advskew", "rc.conf.secondary")
    assert [f["line"] for f in skew] == [30, 38, 44] and all("advskew 100" in f["fix"] for f in skew)
    # 5. sshd listens on 192.168.1.1 only while pf lets ssh in from outside to $int_fw.
    listen = at(findings, "host.sshd-listen", "sshd_config")
    assert listen and listen[0]["line"] == 4 and "203.0.113.10" in listen[0]["message"]
    # 6. hosts.allow mentions /etc/ipf.rules on a pf system (and denies the admin host pf lets in).
    assert at(findings, "host.hosts-allow-ipf", "hosts.allow", 9)
    assert at(findings, "host.hosts-allow-ssh", "hosts.allow", 4)
    # The ruleset findings are replayed on the reference engine, which agrees.
    for finding in (sync, nat, *rdr):
        assert finding["proof"].startswith("confirmed by the reference engine"), finding
    assert "out on rl0: block by line 53" in sync["proof"]
    assert "after line 37 made it 203.0.113.2 > 198.51.100.7" in nat["proof"]
    # The hardening findings from the tutorial's original fstab.
    assert len(at(findings, "host.mount-options", "fstab")) == 6
    # Every finding has a place and a fix.
    assert all(f["fix"] for f in findings)
    assert all(f["file"] for f in findings if f["check"] != "host.aide")


def test_corrected_has_none_of_the_first_four(shared, capsys):
    folder = shared / "seed" / "configs" / "corrected"
    status, report = run(capsys, folder)
    checks = {f["check"] for f in report["findings"]}
    assert not checks & {"lint.ha-traffic", "lint.rdr-shadowed", "lint.nat-own-address", "pair.carp-advskew",
                         "lint.unknown-interface", "pair.carp-preempt", "lint.parse"}
    assert report["summary"]["error"] == 0 and status == 0
    # What remains is real: the tutorial's ftp and web-ssh redirections are never passed in, and
    # its mail rule on the way out matches a source nat has already rewritten.
    lines = sorted((f["check"], f["line"]) for f in report["findings"] if f["severity"] == "warning")
    assert lines == [("lint.forward-blocked", 44), ("lint.forward-blocked", 46), ("lint.forward-blocked", 72),
                     ("lint.nat-hides-source", 74)]


def test_text_output_and_strict(shared, capsys):
    folder = shared / "seed" / "configs" / "corrected"
    assert cli.main(["audit", str(folder), "--strict"]) == 1
    out = capsys.readouterr().out
    assert f"{folder / 'pf.conf'}:44: warning: " in out and "    fix: " in out
    assert out.rstrip().splitlines()[-1].startswith("pfha audit: 0 errors, 4 warnings")


def test_only_and_node_tomls(tmp_path, shared, capsys):
    for name in ("fw1", "fw2"):
        text = (Path(__file__).resolve().parents[2] / "examples" / f"{name}.toml").read_text()
        (tmp_path / f"{name}.toml").write_text(text.replace('"/etc/pfha/pf.conf"', '"pf.conf"'))
    shutil.copy(shared / "seed" / "configs" / "corrected" / "pf.conf", tmp_path / "pf.conf")
    status, report = run(capsys, "--only", "pair", tmp_path)
    assert (status, report["findings"]) == (0, [])
    status, report = run(capsys, "--only", "lint", tmp_path / "fw1.toml")
    assert {f["check"] for f in report["findings"]} == {"lint.forward-blocked", "lint.nat-hides-source",
                                                        "lint.unused-macro"}


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["audit", str(tmp_path)]) == 1
    assert "no node configuration here" in capsys.readouterr().err
    assert cli.main(["audit", "--root", str(tmp_path / "nope"), str(tmp_path)]) == 1
    with pytest.raises(SystemExit):
        cli.main(["audit", "--only", "bogus"])
