"""State limits on real traffic: ``keep state (max N)`` refuses the rule's (N+1)th connection
while N are alive, as the reference engine does."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import is_root
from test_nft_if_bound import ECHO, SEND

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces and nftables")

FW_ADDR, H_ADDR, DPORT = "10.64.0.1", "10.64.0.2", 5000
SPORTS = (41000, 41001, 41002, 41000)  # the 4th packet belongs to the 1st connection
RULESET = f"block all\npass in on a0 proto udp from any to any port {DPORT} keep state (max 2)\n"


def engine_steps() -> list[bool]:
    """Each request, then its echo, through the engine: did both pass?"""
    from pfha.conf import parse_text
    from pfha.conf.interfaces import InterfaceView
    from pfha.engine.engine import Engine
    from pfha.engine.packet import udp

    view = InterfaceView.from_specs([f"a0={FW_ADDR}/24", "lo0=127.0.0.1/8"])
    engine = Engine(parse_text(RULESET, interfaces=view), view)
    now, result = 1000.0, []
    for sport in SPORTS:
        request = engine.process(udp(H_ADDR, sport, FW_ADDR, DPORT), "a0", "in", now)
        reply = engine.process(udp(FW_ADDR, DPORT, H_ADDR, sport), "a0", "out", now + 0.01) if request.action == "pass" else None
        result.append(request.action == "pass" and reply is not None and reply.action == "pass")
        now += 0.1
    return result


def test_max_refuses_connections_over_the_limit(lab, tmp_path):
    from pfha.nft import testbed

    fw, h = lab.ns("fw"), lab.ns("h")
    lab.link(fw, "a0", h, "eth0")
    fw.exec("ip", "addr", "add", f"{FW_ADDR}/24", "dev", "a0")
    h.exec("ip", "addr", "add", f"{H_ADDR}/24", "dev", "eth0")
    conf = tmp_path / "pf.conf"
    conf.write_text(RULESET)
    env = {**os.environ, "PYTHONPATH": testbed.SRC, "PFHA_STATE_DIR": str(tmp_path)}
    subprocess.run(fw.argv([sys.executable, "-m", "pfha.cli.pfctl", "-f", str(conf)]), env=env, check=True, timeout=60)
    server = fw.popen(sys.executable, "-c", ECHO, FW_ADDR, str(DPORT), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.5)
        kernel = [h.exec(sys.executable, "-c", SEND, H_ADDR, str(sport), FW_ADDR, str(DPORT), f"p{i}").stdout.strip() == "ECHO"
                  for i, sport in enumerate(SPORTS)]
        flows = fw.exec("conntrack", "-L", "-p", "udp", "--dport", str(DPORT), check=False).stdout
    finally:
        server.kill()
        server.communicate(timeout=10)
    assert kernel == engine_steps() == [True, True, False, True]
    assert flows.count(f"dport={DPORT}") == 2  # the refused connection was never confirmed
