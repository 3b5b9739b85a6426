"""``pfha node run`` in namespaces: host settings, CARP through the daemon, the control socket,
SIGHUP reloads (good and bad) and the SIGTERM bow-out. Ruleset and sync are left out with
``--without`` here (their own tests cover them); everything else is the real thing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node_toml import node_toml
from pfha.lab.build import python_env
from pfha.node import control

pytestmark = pytest.mark.root

def node_text(name: str, ip: int, advskew: int) -> str:
    return node_toml(name, "/nonexistent/pf.conf", {"xl1": ("xl1", [f"192.0.2.{ip}/24"]), "lo0": "lo"}, preempt=True,
                     carp=[{"vhid": 7, "name": "carp1", "parent": "xl1", "addresses": ["192.0.2.1/24"], "password": "lab",
                            "advskew": advskew}],
                     pflog={"enabled": False},
                     host={"forwarding": True, "accept_redirects": False, "default_router": "192.0.2.254"})


def start_node(ns, tmp: Path, name: str, ip: int, advskew: int, without: str = "ruleset,sync"):
    config = tmp / f"{name}.toml"
    config.write_text(node_text(name, ip, advskew))
    sock = tmp / f"{name}.sock"
    log = open(tmp / f"{name}.log", "w")
    proc = ns.popen(sys.executable, "-m", "pfha.cli.main", "node", "run", "-c", str(config), "--control", str(sock),
                    "--without", without, stdout=log, stderr=subprocess.STDOUT,
                    env=python_env(PFHA_STATE_DIR=str(tmp), PFHA_RUN_DIR=str(tmp)))
    return proc, config, sock


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def status_or_none(sock: Path):
    try:
        return control.request(sock, "status", timeout=1)
    except control.ControlError:
        return None


def vhid_state(sock: Path) -> str | None:
    status = status_or_none(sock)
    return status["carp"]["vhids"][0]["state"] if status and status["carp"]["vhids"] else None


@pytest.fixture
def pair(lab, tmp_path):
    sw, a, b = lab.ns("sw"), lab.ns("a"), lab.ns("b")
    lab.bridge(sw, "br0")
    lab.attach(sw, "br0", a, "xl1")
    lab.attach(sw, "br0", b, "xl1")
    procs = []
    yield sw, a, b, tmp_path, procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_host_settings_status_and_carp_roles(pair):
    sw, a, b, tmp, procs = pair
    proc_a, _, sock_a = start_node(a, tmp, "fwa", 2, 0)
    proc_b, _, sock_b = start_node(b, tmp, "fwb", 3, 100)
    procs += [proc_a, proc_b]
    wait_for(lambda: vhid_state(sock_a) == "MASTER" and vhid_state(sock_b) == "BACKUP", 15, "a MASTER, b BACKUP")
    status = control.request(sock_a, "status")
    assert status["node"] == "fwa"
    assert status["without"] == ["ruleset", "sync"]
    assert status["ruleset"]["state"].startswith("disabled")
    assert status["carp"]["vhids"][0]["reason"]  # why it is master
    assert a.exec("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "1"
    assert a.exec("sysctl", "-n", "net.ipv4.conf.all.accept_redirects").stdout.strip() == "0"
    assert "default via 192.0.2.254" in a.exec("ip", "route").stdout
    assert "192.0.2.2/24" in a.exec("ip", "-4", "-br", "addr", "show", "xl1").stdout
    assert "192.0.2.1/24" in a.exec("ip", "-4", "-br", "addr", "show", "xl1").stdout  # the VIP
    assert "192.0.2.1/" not in b.exec("ip", "-4", "-br", "addr", "show", "xl1").stdout
    # pfha status prints it for people too
    out = subprocess.run([sys.executable, "-m", "pfha.cli.main", "status", "-s", str(sock_b)],
                         capture_output=True, text=True, env=python_env(), timeout=30)
    assert "vhid 7 on xl1: BACKUP" in out.stdout, out.stdout + out.stderr


def test_sigterm_bows_out_and_backup_takes_over_at_once(pair):
    sw, a, b, tmp, procs = pair
    proc_a, _, sock_a = start_node(a, tmp, "fwa", 2, 0)
    proc_b, _, sock_b = start_node(b, tmp, "fwb", 3, 100)
    procs += [proc_a, proc_b]
    wait_for(lambda: vhid_state(sock_a) == "MASTER" and vhid_state(sock_b) == "BACKUP", 15, "a MASTER, b BACKUP")
    started = time.monotonic()
    proc_a.send_signal(signal.SIGTERM)
    assert proc_a.wait(15) == 0
    wait_for(lambda: vhid_state(sock_b) == "MASTER", 10, "b MASTER")
    took = time.monotonic() - started
    # a bow-out makes the backup take over without waiting out the 3 s master-down timer
    assert took < 3.0, took
    assert not sock_a.exists()
    assert "192.0.2.1/" not in a.exec("ip", "-4", "-br", "addr", "show", "xl1").stdout
    logs = [json.loads(line) for line in (tmp / "fwa.log").read_text().splitlines() if line.startswith("{")]
    assert any(entry["msg"] == "node stopped" for entry in logs)


def test_reload_in_place_and_bad_reload_keeps_running(pair):
    sw, a, b, tmp, procs = pair
    proc_a, config_a, sock_a = start_node(a, tmp, "fwa", 2, 0)
    procs.append(proc_a)
    wait_for(lambda: vhid_state(sock_a) == "MASTER", 15, "a MASTER")
    transitions = lambda: (tmp / "fwa.log").read_text().count('"carp state"')  # noqa: E731
    before = transitions()
    config_a.write_text(config_a.read_text().replace("advskew = 0", "advskew = 20"))
    proc_a.send_signal(signal.SIGHUP)
    wait_for(lambda: (status_or_none(sock_a) or {}).get("last_reload"), 10, "a reload")
    status = control.request(sock_a, "status")
    assert status["last_reload"]["ok"], status["last_reload"]
    group = status["carp"]["vhids"][0]
    assert group["advskew"] == 20 and group["state"] == "MASTER"
    assert transitions() == before  # reconfigured in place: no flap
    # a broken config: the reload is refused, the node runs on with what it had
    config_a.write_text(config_a.read_text().replace("advskew = 20", "advskew = 999"))
    with pytest.raises(control.ControlError, match="advskew"):
        result = control.request(sock_a, "reload", timeout=20)
        assert not result["ok"]
        raise control.ControlError(result["message"])
    status = control.request(sock_a, "status")
    assert status["carp"]["vhids"][0]["advskew"] == 20 and proc_a.poll() is None


def test_missing_device_fails_before_changing_anything(lab, tmp_path):
    a = lab.ns("a")
    config = tmp_path / "n.toml"
    config.write_text(node_text("fwa", 2, 0))
    proc = a.exec(sys.executable, "-m", "pfha.cli.main", "node", "run", "-c", str(config), "--control",
                  str(tmp_path / "s"), "--without", "ruleset,sync", check=False, timeout=60)
    assert proc.returncode == 1
    assert "interfaces missing on this host: xl1" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert a.exec("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip() == "0"
