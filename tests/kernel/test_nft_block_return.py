"""block return: the client gets pf's answer (RST for TCP, ICMP port unreachable otherwise), and
pf's own answers are not filtered by the out-pass, even under `block all`."""

from __future__ import annotations

import os
import subprocess
import sys


def test_block_return_answers_and_drop_stays_silent(lab, tmp_path):
    from pfha.nft import testbed

    fw, peer = lab.ns("fw"), lab.ns("peer")
    lab.link(fw, "xl0", peer, "eth0")
    fw.exec("ip", "addr", "add", "10.40.0.1/24", "dev", "xl0")
    peer.exec("ip", "addr", "add", "10.40.0.2/24", "dev", "eth0")
    conf = tmp_path / "pf.conf"
    conf.write_text("block all\n"
                    "block return in on xl0 proto { tcp, udp } from any to any port 9\n"
                    "block return-icmp(host-unr) in on xl0 proto udp from any to any port 10\n")
    env = {**os.environ, "PYTHONPATH": testbed.SRC, "PFHA_STATE_DIR": str(tmp_path)}
    subprocess.run(fw.argv([sys.executable, "-m", "pfha.cli.pfctl", "-f", str(conf)]), env=env, check=True, timeout=60)

    def probe(proto: str, port: int) -> str:
        return subprocess.run(peer.argv([sys.executable, "-m", "pfha.nft.testbed", "probe", proto, "10.40.0.2", "10.40.0.1", str(port), "1"]),
                              env=env, capture_output=True, text=True, timeout=30).stdout.strip()

    assert probe("tcp", 9) == "REFUSED"  # RST
    assert probe("udp", 9) == "REFUSED"  # ICMP port unreachable
    capture = peer.popen("tcpdump", "-n", "-l", "-c", "1", "-i", "eth0", "icmp", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        import time

        time.sleep(1.0)
        probe("udp", 10)  # a soft error for the socket; the ICMP itself is what pf sends
        line, _ = capture.communicate(timeout=10)
    finally:
        if capture.poll() is None:
            capture.kill()
    assert "10.40.0.1 > 10.40.0.2: ICMP host 10.40.0.1 unreachable" in line, line
    assert probe("tcp", 11) == "TIMEOUT"  # block drop: silence
    assert fw.exec("sysctl", "-n", "net.ipv4.fwmark_reflect").stdout.strip() == "1"
