"""pfha load without a kernel: --json prints the compiled table, warnings go to stderr, errors are one line."""

from __future__ import annotations

import json

import pytest

from conftest import SEED_CONFIGS
from pfha.cli import main as cli

SPECS = ["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "rl0=10.10.10.250/8", "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24", "lo0=127.0.0.1/8"]


def test_json_of_the_tutorial_ruleset(capsys):
    corrected = SEED_CONFIGS / "corrected" / "pf.conf"
    if not corrected.exists():
        pytest.skip("tutorial configs not found")
    args = ["load", "--json"] + [f"--if={s}" for s in SPECS] + [str(corrected)]
    assert cli.main(args) == 0
    out, err = capsys.readouterr()
    document = json.loads(out)["nftables"]
    chains = {c["add"]["chain"]["name"] for c in document if "chain" in c["add"]}
    assert {"nat_pre", "filter_in", "nat_post", "filter_out"} <= chains
    snat = [e for c in document if "rule" in c["add"] for e in c["add"]["rule"]["expr"] if "snat" in e]
    assert {"snat": {"family": "ip", "addr": "203.0.113.10", "port": {"range": [50001, 65535]}, "flags": "random"}} in snat
    assert "pfha: warning:" in err and "modulate state" in err


def test_parse_error_is_one_line(tmp_path, capsys):
    bad = tmp_path / "pf.conf"
    bad.write_text("pass in on xl0 proto tcp from any to any port 99999\n")
    assert cli.main(["load", "-n", "--if=xl0=10.0.0.1/24", str(bad)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
