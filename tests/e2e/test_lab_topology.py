"""The lab's topology on its own (no daemons, no filtering): every segment, route and service
works, faults cut what they should, and ``down`` removes everything, also after a crash."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import requires_root

pytestmark = [requires_root, pytest.mark.root]


@pytest.fixture(scope="module")
def running():
    from pfha.lab import build

    name = f"t{os.getpid() % 100000}"
    lab = build.up(name, daemons=False)
    try:
        yield lab
    finally:
        build.down(name)


def test_lan_reaches_its_servers_and_gateway(running):
    targets = ["tcp:192.168.1.80:25", "tcp:192.168.1.80:8084", "tcp:192.168.1.81:443",
               "tcp:192.168.1.82:80", "tcp:192.168.1.119:8080"]
    results = running.probe("client", targets)
    assert [r.ok for r in results] == [True] * len(targets), results
    assert results[0].answer == "pfha-lab srv80 25 from 192.168.1.10"
    running.exec("client", ["ping", "-c", "1", "-W", "2", "192.168.1.1"])


def test_internet_hosts_and_shared_addresses(running):
    results = running.probe("admin", ["tcp:198.51.100.53:53", "udp:198.51.100.54:53", "udp:198.51.100.100:123",
                                      "tcp:203.0.113.10:8081", "tcp:203.0.113.3:8081"])
    assert all(r.ok for r in results), results
    # the static master (fw1) holds every shared address
    assert results[3].answer == "pfha-lab fw1 8081 from 198.51.100.200"


def test_fw1_forwards_lan_traffic(running):
    # 203.0.113.3 is fw2's external address: the LAN client reaches it through its gateway
    # 192.168.1.1 (fw1), which must forward out of xl0.
    (result,) = running.probe("client", ["tcp:203.0.113.3:8081"])
    assert result.ok and result.answer == "pfha-lab fw2 8081 from 192.168.1.10"


def test_heartbeat_wire_and_cable_cut(running):
    running.exec("fw1", ["ping", "-c", "1", "-W", "2", "10.10.10.251"])
    running.set_cable("fw1", "rl0", up=False)
    try:
        assert running.exec("fw1", ["ping", "-c", "1", "-W", "1", "10.10.10.251"], check=False).returncode != 0
        carrier = running.exec("fw1", ["cat", "/sys/class/net/rl0/carrier"], check=False).stdout.strip()
        assert carrier in ("0", "")
    finally:
        running.set_cable("fw1", "rl0", up=True)
    running.exec("fw1", ["ping", "-c", "1", "-W", "2", "10.10.10.251"])


def test_private_lan_is_not_routed_from_the_internet(running):
    # The ISP only knows 203.0.113.0/24: without rdr, the LAN is unreachable from outside.
    (result,) = running.probe("inet", ["tcp:192.168.1.80:25"], timeout=1.0)
    assert not result.ok


def test_down_after_a_crash_removes_everything():
    """A builder killed mid-life leaves namespaces and processes; ``down`` still finds them."""
    from pfha.lab import build

    name = f"c{os.getpid() % 100000}"
    code = f"from pfha.lab import build; build.up({name!r}, daemons=False); import os; os._exit(9)"
    proc = subprocess.run([sys.executable, "-c", code], env=build.python_env(), timeout=120, capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr
    assert any(n.startswith(build.ns_prefix(name)) for n in build._netns_list())
    state = build.LabState.load(name)
    pids = list(state.processes.values())
    assert pids and all(build._pid_alive(p) for p in pids)
    removed = build.down(name)
    assert removed
    assert not any(n.startswith(build.ns_prefix(name) + "-") for n in build._netns_list())
    assert not any(build._pid_alive(p) for p in pids)
    assert not build.state_dir(name).exists()


def test_cli_status_and_exec(running):
    env = build_env()
    out = subprocess.run([sys.executable, "-m", "pfha.cli.main", "lab", "--name", running.name, "status", "--json"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    import json

    status = json.loads(out.stdout)
    assert status["hosts"]["srv80"]["processes"] == {"services": "running"}
    assert "192.168.1.80/24" in status["hosts"]["srv80"]["addresses"]["eth0"]
    out = subprocess.run([sys.executable, "-m", "pfha.cli.main", "lab", "--name", running.name, "exec", "fw2", "--",
                          "ip", "-4", "-br", "addr", "show", "dev", "rl0"], capture_output=True, text=True, env=env, timeout=60)
    assert "10.10.10.251/8" in out.stdout


def build_env():
    from pfha.lab import build

    return build.python_env()
