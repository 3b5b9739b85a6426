"""max-src-conn / max-src-conn-rate with overload on real traffic: a source opening more connections than allowed
is refused and lands in the overload table, which the ruleset then blocks (the tutorial's
brute-force pattern); pfctl -T shows and flushes the entry. The engine agrees on the table and
on the later connection."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces and nftables")

FW_ADDR, H_ADDR, PORT = "10.65.0.1", "10.65.0.2", 2222
LIMITS = ("max-src-conn 2", "max-src-conn-rate 2/10")


def ruleset(limit: str) -> str:
    return (f"table <bruteforce> persist\nblock quick from <bruteforce>\nblock all\n"
            f"pass in on a0 proto tcp from any to any port {PORT} flags S/SA keep state ({limit}, overload <bruteforce>)\n")

SERVER = """
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); s.settimeout(15.0)
held = []
try:
    while True:
        held.append(s.accept()[0])
except socket.timeout:
    pass
"""

CLIENT = """
import socket, sys
held = []
for i in range(int(sys.argv[3])):
    c = socket.socket(); c.settimeout(1.5)
    try:
        c.connect((sys.argv[1], int(sys.argv[2]))); held.append(c); print("OK", flush=True)
    except OSError:
        print("FAIL", flush=True)
"""


def engine_view():
    from pfha.conf.interfaces import InterfaceView

    return InterfaceView.from_specs([f"a0={FW_ADDR}/24", "lo0=127.0.0.1/8"])


def engine_run(text: str) -> tuple[bool, bool]:
    """Four TCP handshakes from distinct ports through the engine: is the source in the table
    afterwards, and did the 4th connection's SYN pass?"""
    from pfha.conf import parse_text
    from pfha.engine.engine import Engine
    from pfha.engine.packet import addr_to_int, tcp

    view = engine_view()
    engine = Engine(parse_text(text, interfaces=view), view)
    now, last = 1000.0, False
    for sport in (42000, 42001, 42002, 42003):
        now += 0.1
        syn = engine.process(tcp(H_ADDR, sport, FW_ADDR, PORT, flags="S", seq=1), "a0", "in", now)
        last = syn.action == "pass"
        if last:
            engine.process(tcp(FW_ADDR, PORT, H_ADDR, sport, flags="SA", seq=100, ack=2), "a0", "out", now + 0.01)
            engine.process(tcp(H_ADDR, sport, FW_ADDR, PORT, flags="A", seq=2, ack=101), "a0", "in", now + 0.02)
    table = engine.resolver.tables.get("bruteforce")
    return table is not None and table.contains(*addr_to_int(H_ADDR)), last


@pytest.mark.parametrize("limit", LIMITS)
def test_max_src_conn_overloads_the_source_into_the_table(lab, tmp_path, limit):
    from pfha.nft import testbed

    fw, h = lab.ns("fw"), lab.ns("h")
    lab.link(fw, "a0", h, "eth0")
    fw.exec("ip", "addr", "add", f"{FW_ADDR}/24", "dev", "a0")
    h.exec("ip", "addr", "add", f"{H_ADDR}/24", "dev", "eth0")
    conf = tmp_path / "pf.conf"
    conf.write_text(ruleset(limit))
    env = {**os.environ, "PYTHONPATH": testbed.SRC, "PFHA_STATE_DIR": str(tmp_path)}

    def pfctl(*args: str) -> str:
        return subprocess.run(fw.argv([sys.executable, "-m", "pfha.cli.pfctl", *args]), env=env, check=True, timeout=60,
                              capture_output=True, text=True).stdout

    pfctl("-f", str(conf))
    server = fw.popen(sys.executable, "-c", SERVER, FW_ADDR, str(PORT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        results = h.exec(sys.executable, "-c", CLIENT, FW_ADDR, str(PORT), "4", timeout=60).stdout.split()
        shown = pfctl("-t", "bruteforce", "-T", "show").split()
        pfctl("-t", "bruteforce", "-T", "flush")
        after_flush = pfctl("-t", "bruteforce", "-T", "show").split()
    finally:
        server.kill()
        server.wait(timeout=10)
    # pf lets the 3rd handshake complete before killing its state; the kernel refuses its SYN
    assert results[:2] == ["OK", "OK"] and results[2:] == ["FAIL", "FAIL"]
    assert shown == [H_ADDR]
    assert after_flush == []
    listed, fourth_passed = engine_run(ruleset(limit))
    assert listed and not fourth_passed
