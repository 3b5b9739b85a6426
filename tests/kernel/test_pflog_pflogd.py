"""pflogd in a network namespace: NFLOG in, pflog pcap out, rotation on SIGHUP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pfha.pflog.format import Action, Direction, split
from pfha.pflog.pcap import read_file

SRC = str(Path(__file__).resolve().parents[2] / "src")
RULES = """table inet pflogtest {
  chain c {
    type filter hook prerouting priority -99;
    iifname "xl0" udp dport 9999 log prefix "pf:7:-1:1:1:0:0:" group 0 drop;
  };
}"""


def start_pflogd(ns, log: Path, *extra: str) -> subprocess.Popen:
    ready = log.with_suffix(".ready")
    proc = ns.popen(sys.executable, "-m", "pfha.cli.main", "pflogd", "-f", str(log), "--ready-file", str(ready), *extra,
                    env={**os.environ, "PYTHONPATH": SRC}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "pflogd did not start"
        time.sleep(0.05)
    ready.unlink()
    return proc


def send_udp(ns, count: int, port: int = 9999) -> None:
    ns.exec(sys.executable, "-c", f"import socket\ns=socket.socket(2,2)\nfor i in range({count}): s.sendto(b'x%d'%i,('10.9.0.1',{port}))")


def wait_records(path: Path, count: int, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    while True:
        records = read_file(str(path))[1] if path.exists() else []
        if len(records) >= count or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


@pytest.fixture
def pair(lab):
    fw, peer = lab.ns("fw"), lab.ns("peer")
    lab.link(fw, "xl0", peer, "eth0")
    fw.exec("ip", "addr", "add", "10.9.0.1/24", "dev", "xl0")
    peer.exec("ip", "addr", "add", "10.9.0.2/24", "dev", "eth0")
    fw.exec("nft", "-f", "-", input=RULES)
    return fw, peer


def test_pflogd_writes_what_tcpdump_reads_and_rotates_on_hup(pair, tmp_path):
    fw, peer = pair
    log = tmp_path / "pflog"
    proc = start_pflogd(fw, log, "-s", "0")
    try:
        send_udp(peer, 3)
        records = wait_records(log, 3)
        assert len(records) == 3
        header, packet = split(records[0].data)
        assert (header.rulenr, header.action, header.direction, header.ifname) == (7, Action.DROP, Direction.IN, "xl0")
        assert packet[12:16] == bytes([10, 9, 0, 2])
        out = subprocess.run(["tcpdump", "-n", "-e", "-r", str(log)], capture_output=True, text=True, timeout=30).stdout
        assert "rule 7/0(match): block in on xl0: 10.9.0.2." in out and ".9999: UDP, length 2" in out

        rotated = tmp_path / "pflog.0"
        log.rename(rotated)
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.7)  # the daemon reopens at its next tick (0.5 s)
        send_udp(peer, 2)
        assert len(wait_records(log, 2)) == 2
        assert len(read_file(str(rotated))[1]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert "5 packets received, 0 dropped" in err


def test_pflogd_appends_to_valid_log_and_moves_bad_one_aside(pair, tmp_path):
    fw, peer = pair
    log = tmp_path / "pflog"
    log.write_bytes(b"this is not a pcap file at all")
    proc = start_pflogd(fw, log)
    send_udp(peer, 1)
    assert len(wait_records(log, 1)) == 1
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert (tmp_path / "pflog.bad").read_bytes().startswith(b"this is not")
    linktype, records = read_file(str(log))
    assert linktype == 117 and len(records[0].data) <= 116  # FreeBSD's default snaplen

    proc = start_pflogd(fw, log)
    send_udp(peer, 1)
    assert len(wait_records(log, 2)) == 2
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)


def test_second_pflogd_on_the_same_group_is_refused(pair, tmp_path):
    fw, _ = pair
    proc = start_pflogd(fw, tmp_path / "a")
    try:
        out = subprocess.run(fw.argv([sys.executable, "-m", "pfha.cli.main", "pflogd", "-f", str(tmp_path / "b")]),
                             env={**os.environ, "PYTHONPATH": SRC}, capture_output=True, text=True, timeout=20)
        assert out.returncode != 0
        assert out.stderr.startswith("pfha: NFLOG group 0:") and "Traceback" not in out.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)
