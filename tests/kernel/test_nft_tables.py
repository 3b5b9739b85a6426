"""pf tables as nftables sets: matching, negation, and pfctl -t TABLE -T add|delete|replace|show|flush."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

RULES = """
table <allowed> { 10.20.0.0/16 !10.20.5.0/24 }
table <fixed> const { 10.20.9.9 }
block all
pass in on xl0 proto tcp from <allowed> to any port 7000
pass in on xl0 proto tcp from <fixed> to any port 7001
"""
SERVER = "10.20.0.1"


@pytest.fixture
def pair(lab, tmp_path):
    from pfha.nft import testbed

    fw, peer = lab.ns("fw"), lab.ns("peer")
    lab.link(fw, "xl0", peer, "eth0")
    fw.exec("ip", "addr", "add", f"{SERVER}/16", "dev", "xl0")
    peer.exec("ip", "addr", "add", "10.20.1.1/16", "dev", "eth0")
    for extra in ("10.20.5.5", "10.21.0.1", "10.20.9.9"):
        peer.exec("ip", "addr", "add", f"{extra}/16" if extra.startswith("10.20") else f"{extra}/32", "dev", "eth0")
    peer.exec("ip", "route", "add", "10.20.0.0/16", "dev", "eth0", "src", "10.20.1.1", check=False)
    fw.exec("ip", "route", "add", "10.21.0.0/16", "dev", "xl0")
    conf = tmp_path / "pf.conf"
    conf.write_text(RULES)
    env = {**os.environ, "PYTHONPATH": testbed.SRC}

    def pfctl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(fw.argv([sys.executable, "-m", "pfha.nft.pfctl_cli", *args]), env=env, capture_output=True, text=True, timeout=60)
        if check:
            assert out.returncode == 0, out.stderr
        return out

    server = fw.popen(sys.executable, "-m", "pfha.nft.testbed", "serve", f"tcp:{SERVER}:7000", f"tcp:{SERVER}:7001", env=env, stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    pfctl("-f", str(conf))

    def probe(src: str, port: int = 7000) -> bool:
        out = subprocess.run(peer.argv([sys.executable, "-m", "pfha.nft.testbed", "probe", "tcp", src, SERVER, str(port), "1"]),
                             env=env, capture_output=True, text=True, timeout=30).stdout
        return out.startswith("OK")

    yield pfctl, probe


def test_table_match_negation_and_edits(pair):
    pfctl, probe = pair
    assert probe("10.20.1.1") and not probe("10.20.5.5") and not probe("10.21.0.1")
    assert pfctl("-sT").stdout.split() == ["allowed", "fixed"]
    shown = pfctl("-t", "allowed", "-T", "show").stdout.split()
    assert "10.20.5.0/24" not in shown and "10.20.0.0/22" in shown  # negation punched out

    out = pfctl("-t", "allowed", "-T", "add", "10.21.0.1")
    assert "1/1 addresses added." in out.stderr
    assert probe("10.21.0.1")
    out = pfctl("-t", "allowed", "-T", "delete", "10.21.0.1")
    assert "1/1 addresses deleted." in out.stderr
    assert not probe("10.21.0.1")

    pfctl("-t", "allowed", "-T", "replace", "10.20.5.5", "10.21.0.0/16")
    assert pfctl("-t", "allowed", "-T", "show").stdout.split() == ["10.20.5.5", "10.21.0.0/16"]
    assert probe("10.20.5.5") and probe("10.21.0.1") and not probe("10.20.1.1")
    pfctl("-t", "allowed", "-T", "flush")
    assert pfctl("-t", "allowed", "-T", "show").stdout.strip() == ""
    assert not probe("10.20.5.5")


def test_const_table_refuses_changes(pair):
    pfctl, probe = pair
    assert probe("10.20.9.9", 7001)
    out = pfctl("-t", "fixed", "-T", "flush", check=False)
    assert out.returncode != 0 and "const" in out.stderr
    assert probe("10.20.9.9", 7001)
    out = pfctl("-t", "nosuch", "-T", "show", check=False)
    assert out.returncode != 0 and "Table does not exist" in out.stderr
