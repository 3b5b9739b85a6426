"""if-bound states on real traffic: a state made on one interface does not match the same flow
on another one (pf_find_state's kif check), checked against the reference engine.

A host ``h`` reaches the firewall's address 10.63.0.1 through two links (a0, b0). One UDP flow
(same addresses and ports) goes in on a0, gets its echo back out a0 (state only: ``block all``),
then is re-routed through b0, where only a floating state lets it in, then back on a0.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces and nftables")

FW_ADDR, H_ADDR, SPORT, DPORT = "10.63.0.1", "10.61.0.2", 40000, 5000

ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(8.0)
try:
    while True:
        data, peer = s.recvfrom(100)
        print(data.decode(), flush=True)
        s.sendto(data, peer)
except socket.timeout:
    pass
"""

SEND = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(1.0)
s.sendto(sys.argv[5].encode(), (sys.argv[3], int(sys.argv[4])))
try:
    print("ECHO" if s.recv(100) == sys.argv[5].encode() else "OTHER")
except socket.timeout:
    print("NONE")
"""

CASES = {
    "policy": ("set state-policy if-bound\n", "keep state"),
    "rule": ("", "keep state (if-bound)"),
    "floating-rule-overrides-policy": ("set state-policy if-bound\n", "keep state (floating)"),
    "floating": ("", "keep state"),
}


def ruleset(case: str) -> str:
    options, state = CASES[case]
    return f"{options}block all\npass in on a0 proto udp from any to any port {DPORT} {state}\n"


def engine_steps(text: str) -> list[bool]:
    """The engine's decisions for the kernel test's packets: [in a0, echo out a0, in b0, in a0]."""
    from pfha.conf import parse_text
    from pfha.conf.interfaces import InterfaceView
    from pfha.engine.engine import Engine
    from pfha.engine.packet import udp

    view = InterfaceView.from_specs(["a0=10.61.0.1/24", "b0=10.62.0.1/24", f"lo0=127.0.0.1/8,{FW_ADDR}/32"])
    engine = Engine(parse_text(text, interfaces=view), view)
    request, reply = udp(H_ADDR, SPORT, FW_ADDR, DPORT), udp(FW_ADDR, DPORT, H_ADDR, SPORT)
    steps = [(request, "a0", "in"), (reply, "a0", "out"), (request, "b0", "in"), (request, "a0", "in")]
    return [engine.process(p, ifname, direction, 1000.0 + i).action == "pass" for i, (p, ifname, direction) in enumerate(steps)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_if_bound_state_does_not_match_on_another_interface(lab, tmp_path, case):
    from pfha.nft import testbed

    fw, h = lab.ns("fw"), lab.ns("h")
    lab.link(fw, "a0", h, "eth0")
    lab.link(fw, "b0", h, "eth1")
    for key in ("all", "default", "a0", "b0"):
        fw.sysctl(f"net.ipv4.conf.{key}.rp_filter", 0)
    fw.exec("ip", "addr", "add", "10.61.0.1/24", "dev", "a0")
    fw.exec("ip", "addr", "add", "10.62.0.1/24", "dev", "b0")
    fw.exec("ip", "addr", "add", f"{FW_ADDR}/32", "dev", "lo")
    h.exec("ip", "addr", "add", f"{H_ADDR}/24", "dev", "eth0")
    h.exec("ip", "addr", "add", "10.62.0.2/24", "dev", "eth1")
    h.exec("ip", "route", "add", f"{FW_ADDR}/32", "via", "10.61.0.1", "dev", "eth0")
    text = ruleset(case)
    conf = tmp_path / "pf.conf"
    conf.write_text(text)
    env = {**os.environ, "PYTHONPATH": testbed.SRC, "PFHA_STATE_DIR": str(tmp_path)}
    subprocess.run(fw.argv([sys.executable, "-m", "pfha.cli.pfctl", "-f", str(conf)]), env=env, check=True, timeout=60)

    server = fw.popen(sys.executable, "-c", ECHO, FW_ADDR, str(DPORT), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        def send(payload: str) -> str:
            return h.exec(sys.executable, "-c", SEND, H_ADDR, str(SPORT), FW_ADDR, str(DPORT), payload).stdout.strip()

        import time

        time.sleep(0.5)  # the echo server binds
        first = send("one")  # in on a0 (rule), echo out on a0 (state only)
        h.exec("ip", "route", "replace", f"{FW_ADDR}/32", "via", "10.62.0.1", "dev", "eth1")
        send("two")  # in on b0: only a floating state lets it in; its echo leaves on a0 (state)
        h.exec("ip", "route", "replace", f"{FW_ADDR}/32", "via", "10.61.0.1", "dev", "eth0")
        third = send("three")
        server.terminate()
        received = server.communicate(timeout=10)[0].split()
    finally:
        if server.poll() is None:
            server.kill()
    kernel = ["one" in received, first == "ECHO", "two" in received, "three" in received and third == "ECHO"]
    assert kernel == engine_steps(text)
    bound = case in ("policy", "rule")
    assert kernel == [True, True, not bound, True]
