"""The pfctl command lines README.md and docs/dataplane.md show, run in a namespace of the
test's own: what they print and their exit status, as the docs say."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

RULES = """\
table <bad> persist { 198.51.100.9 }
table <fixed> const { 10.0.0.0/8 }
set timeout udp.first 17
block in quick from <bad>
pass in on xl0 proto tcp to port 22 modulate state label "ssh"
pass in on xl0 proto tcp to port 23 modulate state
pass out all
"""


@pytest.fixture
def pfctl(lab, tmp_path):
    from pfha.nft import testbed

    fw, peer = lab.ns("fw"), lab.ns("peer")
    lab.link(fw, "xl0", peer, "eth0")
    fw.exec("ip", "addr", "add", "203.0.113.2/24", "dev", "xl0")
    (tmp_path / "pf.conf").write_text(RULES)
    env = {**os.environ, "PYTHONPATH": testbed.SRC, "PFHA_STATE_DIR": str(tmp_path)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(fw.argv([sys.executable, "-m", "pfha.cli.pfctl", *args]), env=env,
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)

    loaded = run("-f", "pf.conf")
    assert loaded.returncode == 0, loaded.stderr
    # README: warnings once per distinct message, with the lines; -v: every occurrence
    assert loaded.stderr.splitlines() == [
        "pfctl: warning: pf.conf:5, 6: modulate state: compiled as keep state (Linux randomises ISNs"
        " of local sockets; forwarded sequence numbers are not modulated)"]
    return run


def test_show_timeouts_memory_and_zero(pfctl):
    timeouts = pfctl("-s", "timeouts").stdout.splitlines()
    assert "udp.first                    17s" in timeouts and timeouts[0].startswith("tcp.first")
    assert pfctl("-s", "memory").stdout.splitlines()[0].split() == ["states", "hard", "limit", "100000"]
    assert pfctl("-z").returncode == 0
    assert "Packets: 0 " in pfctl("-vsr").stdout


def test_flush_tables_counts_what_it_flushed_and_keeps_const_tables(pfctl):
    assert pfctl("-F", "Tables").stderr == "1 tables flushed.\n"  # on stderr, as pfctl
    assert pfctl("-t", "bad", "-T", "show").stdout == ""
    assert pfctl("-t", "fixed", "-T", "show").stdout.split() == ["10.0.0.0/8"]


def test_flush_all_removes_the_table_until_the_next_load(pfctl):
    assert pfctl("-F", "all").returncode == 0
    enable = pfctl("-e")
    assert enable.returncode == 1 and enable.stderr == "pfctl: pf not loaded: load a ruleset first (pfctl -f)\n"
    assert pfctl("-f", "pf.conf").returncode == 0
    assert pfctl("-s", "info").stdout.startswith("Status: Enabled")


@pytest.mark.parametrize("flags,message", [
    (["-N", "-f", "pf.conf"], "pfctl: -N (load only the NAT rules) is not supported by pfha: it loads a whole ruleset in one nftables transaction\n"),
    (["-K", "1.2.3.4"], "pfctl: -K (kill source nodes) is not supported by pfha: pfha keeps no source nodes\n"),
    (["-s", "Sources"], "pfctl: -s Sources is not supported by pfha: it keeps no source nodes\n"),
    (["-t", "bad", "-T", "test", "1.1.1.1"], "pfctl: -T test is not supported by pfha: not implemented\n"),
])
def test_refused_flags_say_why_in_one_line(pfctl, flags, message):
    out = pfctl(*flags)
    assert out.returncode == 1 and out.stderr == message
