"""The refresh sweep on real kernels: a UDP flow that keeps talking but reports no conntrack
event after it is answered keeps its copy on the backup only because the master's runner sends
it again as its packet counters move. The same flow without the sweep loses its copy: that is
what the sweep is for (and what makes this test able to fail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
MARK_LOCAL_UDP = ("table inet t {\n chain out {\n  type filter hook output priority 0;\n"
                  "  udp dport 5000 ct mark set 0x101\n }\n}\n")
ECHO = ("import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('127.0.0.1', 5000))\n"
        "while True:\n    data, peer = s.recvfrom(100)\n    s.sendto(data, peer)\n")
TALK = ("import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.bind(('127.0.0.1', 40000))\n"
        "s.settimeout(1)\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n"
        "    s.sendto(b'x', ('127.0.0.1', 5000))\n    s.recv(10)\n    time.sleep(0.5)\n")


def copies(ns) -> list[str]:
    out = ns.exec("conntrack", "-L", "-p", "udp", "--dport", "5000", check=False).stdout
    return [line for line in out.splitlines() if "sport=40000" in line]


@pytest.mark.root
@pytest.mark.parametrize("refresh, kept", [("1", True), ("0", False)])
def test_an_answered_udp_flow_keeps_its_copy_only_with_the_sweep(lab, tmp_path, refresh, kept):
    master, backup = lab.ns("m"), lab.ns("b")
    lab.link(master, "sync0", backup, "sync0")
    for n, ns in ((1, master), (2, backup)):
        ns.exec("ip", "addr", "add", f"10.0.9.{n}/24", "dev", "sync0")
    master.exec("nft", "-f", "-", input=MARK_LOCAL_UDP)
    master.sysctl("net.netfilter.nf_conntrack_acct", 1)
    master.sysctl("net.netfilter.nf_conntrack_udp_timeout", 4)  # unanswered
    master.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", 6)  # answered: 6 s after each packet
    (tmp_path / "key").write_text(KEY + "\n")
    os.chmod(tmp_path / "key", 0o600)
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    daemons = {}
    for name, ns in (("m", master), ("b", backup)):
        log = open(tmp_path / f"{name}.log", "w")
        daemons[name] = ns.popen(PY, "-m", "pfha.cli.main", "sync", "run", "--dev", "sync0", "--key-file",
                                 str(tmp_path / "key"), "--status-file", str(tmp_path / f"{name}.json"),
                                 "--sched", "other", "--refresh", refresh, "--bulk-retry", "1",
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # both running and past their start-up bulk
        try:
            states = [json.loads((tmp_path / f"{n}.json").read_text()) for n in ("m", "b")]
            if all(s.get("bulk", {}).get("done") for s in states):
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    echo = master.popen(PY, "-c", ECHO)
    try:
        time.sleep(0.3)
        talk = master.popen(PY, "-c", TALK.format(seconds=16))
        time.sleep(3)
        assert copies(backup), "the flow never reached the backup: " + (tmp_path / "b.log").read_text()
        assert talk.wait(timeout=30) == 0  # 16 s of packets: more than twice the 6 s timeout
        assert copies(master)
        status = json.loads((tmp_path / "m.json").read_text())
        assert bool(copies(backup)) is kept, (copies(backup), status.get("refresh"), status.get("sent"), status.get("intake"))
        if kept:
            assert status["refresh"]["sweeps"] >= 8 and status["refresh"]["sent"] >= 8, status["refresh"]
            assert json.loads((tmp_path / "b.json").read_text())["refresh"]["sent"] == 0  # copies carried nothing
    finally:
        echo.kill()
        for proc in daemons.values():
            proc.terminate()
            proc.wait(timeout=10)
