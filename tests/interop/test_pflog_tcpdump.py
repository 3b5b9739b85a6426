"""tcpdump reads the pflog files we write exactly as it reads FreeBSD's (pf-semantics.md §5.3)."""

from __future__ import annotations

import shutil
import struct
import subprocess

import pytest

from pfha.pflog import pcap
from pfha.pflog.checksum import fix_l4_checksum, internet_checksum
from pfha.pflog.format import DLT_PFLOG, Action, Direction, PflogHeader, Reason, frame

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")


def ipv4(src: bytes, dst: bytes, proto: int, payload: bytes) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0, src, dst)
    header = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    return header + payload


def tcp_syn(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 66347012, 0, 0x50, 0x02, 64240, 0, 0)


def tcpdump(path, *flags: str) -> list[str]:
    out = subprocess.run(["tcpdump", "-n", "-tt", *flags, "-r", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_tcpdump_prints_rule_action_direction_interface(tmp_path):
    path = tmp_path / "pflog"
    syn = fix_l4_checksum(ipv4(bytes([192, 0, 2, 7]), bytes([203, 0, 113, 10]), 6, tcp_syn(44426, 22)))
    with open(path, "wb") as stream:
        writer = pcap.PcapWriter(stream, DLT_PFLOG)
        writer.write(1000.5, frame(PflogHeader(Action.DROP, Reason.MATCH, "xl0", Direction.IN, 7), syn))
        writer.write(1001.25, frame(PflogHeader(Action.PASS, Reason.MATCH, "rl0", Direction.OUT, 12), syn))
        writer.write(1002.0, frame(PflogHeader(Action.DROP, Reason.BADSTATE, "xl1", Direction.IN, 3, subrulenr=2, ruleset="ftp-proxy"), syn))
    lines = tcpdump(path, "-e")
    assert lines[0] == "1000.500000 rule 7/0(match): block in on xl0: 192.0.2.7.44426 > 203.0.113.10.22: Flags [S], seq 66347012, win 64240, length 0"
    assert lines[1].startswith("1001.250000 rule 12/0(match): pass out on rl0: 192.0.2.7.44426 > 203.0.113.10.22: Flags [S]")
    assert lines[2].startswith("1002.000000 rule 3.ftp-proxy.2/10(state-mismatch): block in on xl1: ")
    verbose = tcpdump(path, "-e", "-v")
    assert "(correct)" in " ".join(verbose) and "incorrect" not in " ".join(verbose)


def test_tcpdump_names_the_link_type(tmp_path):
    path = tmp_path / "pflog"
    with open(path, "wb") as stream:
        pcap.PcapWriter(stream, DLT_PFLOG)
    out = subprocess.run(["tcpdump", "-r", str(path)], capture_output=True, text=True, timeout=30)
    assert "link-type PFLOG" in out.stderr
