"""The node's ruleset and sync parts in namespaces: the ruleset loads at start and on SIGHUP in
one transaction, a pf.conf that does not parse is refused and the loaded one kept; CARP starts
demoted while the first bulk update is outstanding."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from node_toml import write_node_toml
from pfha.lab.build import python_env
from pfha.node import control

pytestmark = pytest.mark.root

PF_CONF = """\
ext_if = "xl1"
set skip on lo0
block log all
pass in quick on $ext_if proto tcp to port {port}
pass out quick all
"""


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except control.ControlError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def node(request, lab, tmp_path):
    """Node fwa in namespace ``a`` on pf.conf's xl1, which is the Linux device ``device``
    (``xl1`` unless the test is parametrized indirectly with another device name)."""
    device = getattr(request, "param", "xl1")
    a, b = lab.ns("a"), lab.ns("b")
    lab.link(a, device, b, "eth0")
    b.exec("ip", "addr", "add", "192.0.2.9/24", "dev", "eth0")
    procs = []

    def start(port: int = 22, sync: bool = False, without: str = "", pf_text: str | None = None, carp_name: str | None = None):
        pf_conf = tmp_path / "pf.conf"
        pf_conf.write_text(pf_text or PF_CONF.format(port=port))
        key = tmp_path / "sync.key"
        key.write_text("00112233445566778899aabbccddeeff\n")
        config = write_node_toml(
            tmp_path / "node.toml", "fwa", pf_conf, {"xl1": (device, ["192.0.2.2/24"]), "lo0": "lo"},
            carp=[{"vhid": 9, "name": carp_name, "parent": "xl1", "addresses": ["192.0.2.1/24"], "password": "lab"}],
            sync={"device": "xl1", "key_file": key} if sync else None, pflog={"file": tmp_path / "pflog"})
        sock = tmp_path / "node.sock"
        argv = [sys.executable, "-m", "pfha.cli.main", "node", "run", "-c", str(config), "--control", str(sock)]
        if without:
            argv += ["--without", without]
        proc = a.popen(*argv, stdout=open(tmp_path / "node.log", "w"), stderr=subprocess.STDOUT,
                       env=python_env(PFHA_STATE_DIR=str(tmp_path), PFHA_RUN_DIR=str(tmp_path)))
        procs.append(proc)
        wait_for(lambda: control.request(sock, "status", timeout=1), 20, "the control socket")
        return proc, pf_conf, sock

    yield a, b, start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(10)


def test_ruleset_loaded_reloaded_and_bad_pf_conf_refused(node):
    a, b, start = node
    proc, pf_conf, sock = start(port=22)
    first = control.request(sock, "status")["ruleset"]
    assert first["state"] == "loaded"
    assert "table inet pfha" in a.exec("nft", "list", "tables").stdout
    # a change: loaded in one transaction on reload, with a new hash
    pf_conf.write_text(PF_CONF.format(port=2222))
    result = control.request(sock, "reload", timeout=30)
    assert result["ok"] and result["message"] == "ruleset reloaded", result
    second = control.request(sock, "status")["ruleset"]
    assert second["hash"] != first["hash"] and second["loaded_at"] > first["loaded_at"]
    listing = a.exec("nft", "-s", "list", "table", "inet", "pfha").stdout  # -s: no counters
    assert "2222" in listing
    # `set timeout` reaches conntrack through the node as through pfctl -f (namespace-wide part)
    pf_conf.write_text("set timeout icmp.first 17\n" + PF_CONF.format(port=2222))
    result = control.request(sock, "reload", timeout=30)
    assert result["ok"], result
    assert a.exec("sysctl", "-n", "net.netfilter.nf_conntrack_icmp_timeout").stdout.strip() == "17"
    pf_conf.write_text(PF_CONF.format(port=2222))
    assert control.request(sock, "reload", timeout=30)["ok"]
    second = control.request(sock, "status")["ruleset"]
    # a pf.conf that does not parse: refused, the kernel keeps what it had
    pf_conf.write_text("pass in on xl1 proto tcp to port 99999\n")
    result = control.request(sock, "reload", timeout=30)
    assert not result["ok"] and "kept the running config" in result["message"], result
    third = control.request(sock, "status")
    assert third["ruleset"]["hash"] == second["hash"]
    assert third["last_reload"]["ok"] is False
    assert a.exec("nft", "-s", "list", "table", "inet", "pfha").stdout == listing
    assert proc.poll() is None


def test_carp_demoted_until_the_first_bulk_update(node):
    a, b, start = node
    # no peer answers: the bulk update stays outstanding and CARP advertises demoted (skew 240)
    proc, _, sock = start(sync=True, without="ruleset")
    status = control.request(sock, "status")
    assert "pfsync bulk update" in status["carp"]["demoted"], status["carp"]
    assert status["carp"]["vhids"][0]["advskew_effective"] == 240
    assert status["sync"]["bulk_done_at"] is None
    assert status["sync"]["state"] == "running"
    # a reload with the same [sync] keeps the running peer (same epoch) and the demotion
    result = control.request(sock, "reload", timeout=30)
    assert result["ok"], result
    after = control.request(sock, "status")
    assert after["sync"]["epoch"] == status["sync"]["epoch"]
    assert "pfsync bulk update" in after["carp"]["demoted"]


LISTENER = """
import socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", int(sys.argv[1])))
server.listen()
print("ready", flush=True)
while True:
    conn, _ = server.accept()
    conn.sendall(b"hello")
    conn.close()
"""

CONNECT = """
import socket, sys
try:
    with socket.create_connection(("192.0.2.2", int(sys.argv[1])), timeout=1.5) as conn:
        print(conn.recv(5).decode())
except OSError as error:
    print("refused" if isinstance(error, ConnectionRefusedError) else "timeout")
"""


@pytest.mark.parametrize("node", ["eth7"], indirect=True)
def test_renamed_interface_rules_on_the_linux_device(node):
    """pf.conf says xl1, the node config says xl1 is eth7: the rules match eth7."""
    a, b, start = node
    proc, _, sock = start(port=22, without="sync")
    assert control.request(sock, "status")["ruleset"]["state"] == "loaded"
    listing = a.exec("nft", "-s", "list", "table", "inet", "pfha").stdout
    assert '"eth7"' in listing and '"xl1"' not in listing
    servers = [a.popen(sys.executable, "-c", LISTENER, str(port), stdout=subprocess.PIPE, text=True) for port in (22, 23)]
    try:
        for server in servers:
            assert server.stdout.readline().strip() == "ready"
        # pass in quick on $ext_if (xl1 = eth7) ... port 22: answered; port 23: blocked (no RST)
        assert b.exec(sys.executable, "-c", CONNECT, "22").stdout.strip() == "hello"
        assert b.exec(sys.executable, "-c", CONNECT, "23").stdout.strip() == "timeout"
        # pflog names the interface as pf.conf does: "block in on xl1", not eth7
        wait_for(lambda: control.request(sock, "status")["pflog"].get("written"), 5, "a pflog record")
        from pfha.pflog.format import split
        from pfha.pflog.pcap import read_file

        _, records = read_file(control.request(sock, "status")["pflog"]["file"])
        assert records and {split(r.data)[0].ifname for r in records} == {"xl1"}
    finally:
        for server in servers:
            server.kill()
            server.wait(5)


DYNAMIC_PF = """\
set skip on lo0
block all
pass in quick on xl1 proto tcp to (xl1) port 22
pass in quick on xl1 proto tcp to (carp0) port 23
"""


def dynamic_sets(ns) -> dict[str, set[str]]:
    """Each ``dyn*`` set of our table -> its elements (addresses or prefixes, as text)."""
    import json

    listing = json.loads(ns.exec("nft", "-j", "list", "sets", "inet").stdout)["nftables"]
    out = {}
    for item in listing:
        found = item.get("set")
        if found and found["table"] == "pfha" and found["name"].startswith("dyn") and found["name"].endswith("v4"):
            elems = found.get("elem", [])
            out[found["name"]] = {e if isinstance(e, str) else "{addr}/{len}".format(**e["prefix"]) for e in elems}
    return out


def test_dynamic_addresses_follow_the_host_not_carp(node):
    """(xl1) follows addresses added and removed at run time; (carp0) keeps its VIP whether
    this node holds it (MASTER) or not, as on BSD, so a failover never rewrites the sets."""
    a, b, start = node
    proc, _, sock = start(without="sync", pf_text=DYNAMIC_PF, carp_name="carp0")
    status = control.request(sock, "status")
    assert status["ruleset"]["dynamic"]["sets"] == 4 and status["ruleset"]["dynamic"]["following"]  # v4 and v6 each
    wanted = {"192.0.2.2"}, {"192.0.2.1"}
    assert sorted(dynamic_sets(a).values(), key=sorted) == sorted(wanted, key=sorted)
    wait_for(lambda: control.request(sock, "status")["carp"]["vhids"][0]["state"] == "MASTER", 10, "MASTER")
    assert sorted(dynamic_sets(a).values(), key=sorted) == sorted(wanted, key=sorted)  # VIP now held: same sets
    a.exec("ip", "addr", "add", "192.0.2.7/24", "dev", "xl1")
    wait_for(lambda: {"192.0.2.2", "192.0.2.7"} in dynamic_sets(a).values(), 5, "(xl1) to gain 192.0.2.7")
    a.exec("ip", "addr", "del", "192.0.2.1/24", "dev", "xl1")  # the VIP leaves the device (as on a BACKUP)
    a.exec("ip", "addr", "del", "192.0.2.7/24", "dev", "xl1")
    wait_for(lambda: {"192.0.2.2"} in dynamic_sets(a).values(), 5, "(xl1) to lose 192.0.2.7")
    assert {"192.0.2.1"} in dynamic_sets(a).values()
    assert control.request(sock, "status")["ruleset"]["dynamic"]["refreshes"] >= 2
    assert proc.poll() is None
