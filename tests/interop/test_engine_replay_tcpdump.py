"""``pfha replay --both-ways`` on what tcpdump really writes: a ``tcpdump -i any`` capture
(Linux cooked v2) of one host's TCP connection, taken inside the test's own namespaces."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from pfha.cli.main import main

pytestmark = pytest.mark.skipif(shutil.which("tcpdump") is None, reason="tcpdump not installed")

SERVER = "import socket;s=socket.socket();s.bind(('10.9.0.2',8080));s.listen();c,_=s.accept();c.send(b'hi');c.close()"
CLIENT = "import socket;s=socket.create_connection(('10.9.0.2',8080),timeout=5);assert s.recv(2)==b'hi';s.close()"


def test_replay_both_ways_on_a_tcpdump_any_capture(lab, tmp_path, capsys):
    host, peer = lab.ns("host"), lab.ns("peer")
    lab.link(host, "va", peer, "vb")
    host.exec("ip", "addr", "add", "10.9.0.1/24", "dev", "va")
    peer.exec("ip", "addr", "add", "10.9.0.2/24", "dev", "vb")
    capture = tmp_path / "any.pcap"
    server = peer.popen("python3", "-c", SERVER)
    dump = host.popen("tcpdump", "-i", "any", "--immediate-mode", "-Z", "root", "-U", "-w", str(capture), "tcp port 8080",
                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1.0)  # tcpdump announces itself on stderr only once listening, not reliably
        host.exec("python3", "-c", CLIENT, timeout=10)
        server.wait(timeout=10)
        time.sleep(0.5)
    finally:
        dump.terminate()
        dump.wait(timeout=10)
    assert capture.read_bytes()[20:24] == (276).to_bytes(4, "little")  # LINKTYPE_LINUX_SLL2
    conf = tmp_path / "pf.conf"
    conf.write_text("block all\npass out on va proto tcp keep state\n")
    args = ["replay", "-f", str(conf), "--if", "va=10.9.0.1/24", str(capture), "--in", "va"]
    assert main(args + ["--both-ways"]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    packets = int(first.split()[0])
    assert packets >= 7 and first.startswith(f"{packets} packets: {packets} passed, 0 blocked"), out
    assert "all tcp 10.9.0.1:" in out and "-> 10.9.0.2:8080" in out
    assert main(args) == 0  # read one way only, every packet "arrives": the default block wins
    assert capsys.readouterr().out.startswith(f"{packets} packets: 0 passed, {packets} blocked")
