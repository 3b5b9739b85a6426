"""tcpdump reads the pflog file ``pfha replay`` writes from the reference engine's log records.

No root needed: the capture is generated, replayed through the tutorial's ruleset, and the
resulting DLT_PFLOG file is printed with ``tcpdump -n -e -r``.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from pfha.cli.main import main
from pfha.engine import packet as P
from pfha.pflog import pcap

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")

PRIMARY = ["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "rl0=10.10.10.250/24",
           "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24", "lo0=127.0.0.1/8"]


def write_capture(path, packets):
    with open(path, "wb") as stream:
        writer = pcap.PcapWriter(stream, pcap.LINKTYPE_ETHERNET)
        for i, packet in enumerate(packets):
            writer.write(1700000000 + i, pcap.ethernet_frame(packet.to_bytes()))


def test_replay_writes_pflog_that_tcpdump_prints(tmp_path, shared, capsys):
    capture = tmp_path / "in.pcap"
    pflog = tmp_path / "pflog.pcap"
    write_capture(capture, [
        P.tcp("198.51.100.9", 40000, "203.0.113.10", 23, "S", seq=66347012, win=64240),  # blocked, logged
        P.tcp("198.51.100.200", 40001, "203.0.113.10", 8081, "S", seq=5, win=64240),  # admin ssh: passes
        P.udp("198.51.100.9", 36607, "192.168.1.20", 5353, b"\x01"),  # blocked, logged
        P.icmp("198.51.100.9", "203.0.113.10", 5, 1, inner=P.udp("203.0.113.10", 1, "198.51.100.9", 2)),
    ])
    conf = shared / "seed" / "configs" / "as-published" / "pf.conf"
    args = ["replay", "-f", str(conf), str(capture), "--in", "xl0", "--pflog", str(pflog), "--json"]
    for spec in PRIMARY:
        args += ["--if", spec]
    assert main(args) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["in"]["action"] for line in lines[:4]] == ["block", "pass", "block", "block"]
    assert lines[-1]["summary"]["logged"] == 3
    out = subprocess.run(["tcpdump", "-n", "-e", "-r", str(pflog)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    printed = out.stdout.splitlines()
    assert len(printed) == 3
    assert printed[0].endswith("rule 0/0(match): block in on xl0: 198.51.100.9.40000 > 203.0.113.10.23: "
                               "Flags [S], seq 66347012, win 64240, length 0")
    assert "rule 0/0(match): block in on xl0: 198.51.100.9.36607 > 192.168.1.20.5353: " in printed[1]
    assert "rule 0/0(match): block in on xl0: 198.51.100.9 > 203.0.113.10: ICMP redirect" in printed[2]
    assert "link-type PFLOG" in out.stderr
    verbose = subprocess.run(["tcpdump", "-n", "-e", "-v", "-r", str(pflog)], capture_output=True, text=True,
                             timeout=30).stdout
    assert "incorrect" not in verbose and "(correct)" in verbose


def test_engine_log_records_carry_translated_headers(tmp_path, shared):
    """pf logs after translation: a logged rdr'd packet shows the server's address."""
    from pfha.conf import InterfaceView, parse_text
    from pfha.engine import Engine

    view = InterfaceView.from_specs(PRIMARY)
    rs = parse_text("rdr on xl0 proto tcp from any to 203.0.113.11 port 80 -> 192.168.1.80\n"
                    "block log all\n", "t.conf", view)
    e = Engine(rs, view)
    d = e.process(P.tcp("198.51.100.9", 4000, "203.0.113.11", 80, "S", seq=1), "xl0", "in", 12.0)
    path = tmp_path / "log.pcap"
    with open(path, "wb") as stream:
        writer = pcap.PcapWriter(stream, pcap.LINKTYPE_PFLOG)
        for record in d.logs:
            writer.write(record.time, record.frame())
    out = subprocess.run(["tcpdump", "-n", "-e", "-tt", "-r", str(path)], capture_output=True, text=True,
                         timeout=30).stdout
    assert out.startswith("12.000000 rule 0/0(match): block in on xl0: 198.51.100.9.4000 > 192.168.1.80.80: Flags [S]")
