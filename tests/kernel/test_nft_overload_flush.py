"""``overload <t> flush [global]`` on real traffic through a firewall: a client that opens one
connection too many lands in <bad>, and the overload flusher (``pfha overload-flush``) kills its
earlier states - every one with ``global``, only those of the overloading rule without - while
another client is untouched. Which connections keep carrying data is compared with the
reference engine fed the same connections. Without a flusher, ``pfctl -f`` warns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dataclasses import dataclass

import pytest

from conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces, nftables and conntrack")

@dataclass(frozen=True)
class Net:
    """The firewall's inside (a0) and outside (b0) addresses, two clients and the server."""

    fw_in: str
    fw_out: str
    bad: str
    good: str
    server: str
    prefix: int


NETS = {4: Net("10.66.0.1", "10.67.0.1", "10.66.0.2", "10.66.0.3", "10.67.0.2", 24),
        6: Net("fd66::1", "fd67::1", "fd66::2", "fd66::3", "fd67::2", 64)}
FW_IN, FW_OUT, BAD, GOOD, SERVER = (getattr(NETS[4], f) for f in ("fw_in", "fw_out", "bad", "good", "server"))
LIMITED, OTHER = 2222, 2223
LIMIT = 2


def ruleset(flush: str, limited_pass: str = "in") -> str:
    """The limit on the in-pass (on a0; plain pass out on b0), or on the out-pass (on b0; plain
    pass in on a0): an overload seen on the way out compares the other end of pf's state keys."""
    ifname, other, plain = ("a0", "out", "b0") if limited_pass == "in" else ("b0", "in", "a0")
    return ("table <bad> persist\n"
            "block quick from <bad>\n"
            "block all\n"
            f"pass {other} on {plain} proto tcp keep state\n"
            f"pass {limited_pass} on {ifname} proto tcp to port {LIMITED} keep state (max-src-conn {LIMIT}, overload <bad> {flush})\n"
            f"pass {limited_pass} on {ifname} proto tcp to port {OTHER} keep state\n")


ECHO = """
import socket, sys, threading
def serve(port):
    s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((sys.argv[1], port)); s.listen(32)
    while True:
        c = s.accept()[0]
        threading.Thread(target=echo, args=(c,), daemon=True).start()
def echo(c):
    while True:
        data = c.recv(100)
        if not data:
            return
        c.sendall(data)
for p in sys.argv[2:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

# Reads commands from stdin: "open SRC PORT" -> "OK sport" | "FAIL"; "send N" -> "ECHO" | "NOECHO".
CLIENT = """
import socket, sys
conns = []
for line in sys.stdin:
    words = line.split()
    if words[0] == "open":
        c = socket.socket(socket.AF_INET6 if ":" in words[1] else socket.AF_INET); c.settimeout(1.5); c.bind((words[1], 0))
        try:
            c.connect((sys.argv[1], int(words[2]))); conns.append(c); print("OK", c.getsockname()[1], flush=True)
        except OSError:
            conns.append(None); print("FAIL", flush=True)
    elif words[0] == "send":
        c = conns[int(words[1])]
        try:
            c.sendall(b"ping"); print("ECHO" if c.recv(100) == b"ping" else "NOECHO", flush=True)
        except OSError:
            print("NOECHO", flush=True)
"""


class Client:
    def __init__(self, ns, server: str = SERVER) -> None:
        self.proc = ns.popen(sys.executable, "-u", "-c", CLIENT, server, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def build(lab, net: Net = NETS[4]):
    fw, c, s = lab.ns("fw"), lab.ns("c"), lab.ns("s")
    lab.link(fw, "a0", c, "eth0")
    lab.link(fw, "b0", s, "eth0")
    six = ["-6"] if ":" in net.server else []
    extra = ["nodad"] if six else []
    fw.exec("ip", *six, "addr", "add", f"{net.fw_in}/{net.prefix}", "dev", "a0", *extra)
    fw.exec("ip", *six, "addr", "add", f"{net.fw_out}/{net.prefix}", "dev", "b0", *extra)
    fw.sysctl("net.ipv6.conf.all.forwarding" if six else "net.ipv4.ip_forward", 1)
    for address in (net.bad, net.good):
        c.exec("ip", *six, "addr", "add", f"{address}/{net.prefix}", "dev", "eth0", *extra)
    c.exec("ip", *six, "route", "add", "default", "via", net.fw_in)
    s.exec("ip", *six, "addr", "add", f"{net.server}/{net.prefix}", "dev", "eth0", *extra)
    s.exec("ip", *six, "route", "add", "default", "via", net.fw_out)
    if six:  # pf's `block all` also blocks neighbour discovery: static neighbours instead
        for here, here_if, there, there_if, addresses in ((c, "eth0", fw, "a0", [net.fw_in]), (fw, "a0", c, "eth0", [net.bad, net.good]),
                                                         (s, "eth0", fw, "b0", [net.fw_out]), (fw, "b0", s, "eth0", [net.server])):
            mac = json.loads(there.exec("ip", "-j", "link", "show", there_if).stdout)[0]["address"]
            for address in addresses:
                here.exec("ip", "-6", "neigh", "replace", address, "lladdr", mac, "dev", here_if, "nud", "permanent")
    return fw, c, s


def pfha_env(tmp_path: Path) -> dict[str, str]:
    from pfha.nft import testbed

    return {**os.environ, "PYTHONPATH": testbed.SRC, "PFHA_STATE_DIR": str(tmp_path)}


def pfctl(fw, env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(fw.argv([sys.executable, "-m", "pfha.cli.pfctl", *args]), env=env, check=True, timeout=60,
                          capture_output=True, text=True)


def start_flusher(fw, env, tmp_path: Path) -> subprocess.Popen:
    ready = tmp_path / "flusher.ready"
    proc = fw.popen(sys.executable, "-m", "pfha.cli.main", "overload-flush", "-v", "--ready-file", str(ready), env=env,
                    stdout=subprocess.DEVNULL, stderr=open(tmp_path / "flusher.log", "w"))
    deadline = time.monotonic() + 20
    while not ready.exists():
        assert proc.poll() is None, (tmp_path / "flusher.log").read_text()
        assert time.monotonic() < deadline, "overload-flush did not start"
        time.sleep(0.05)
    return proc


def flows(fw, server: str = SERVER) -> list[tuple[str, int, int]]:
    """(source, source port, destination port) of the tracked TCP connections to the server."""
    family = ["-f", "ipv6"] if ":" in server else []
    out = fw.exec("conntrack", "-L", *family, "-p", "tcp", "-d", server, check=False).stdout
    result = []
    for line in out.splitlines():
        fields: dict[str, str] = {}
        for word in line.split():
            if "=" in word:
                fields.setdefault(*word.split("=", 1))  # the original tuple comes first
        result.append((fields["src"], int(fields["sport"]), int(fields["dport"])))
    return sorted(result)


def engine_survivors(flush: str, connections: list[tuple[str, int, int]], net: Net, limited_pass: str = "in") -> dict[tuple[str, int, int], bool]:
    """The same connections through the reference engine (each packet on both passes), then
    the connection that overloads: does each earlier connection's next data packet still pass
    the firewall?"""
    from pfha.conf import parse_text
    from pfha.conf.interfaces import InterfaceView
    from pfha.engine.engine import Engine
    from pfha.engine.packet import tcp

    view = InterfaceView.from_specs([f"a0={net.fw_in}/{net.prefix}", f"b0={net.fw_out}/{net.prefix}", "lo0=127.0.0.1/8"])
    engine = Engine(parse_text(ruleset(flush, limited_pass), interfaces=view), view)
    now = 1000.0

    def forward(packet_in, packet_out, inside: bool) -> bool:
        first, second = ("a0", "b0") if inside else ("b0", "a0")
        return (engine.process(packet_in, first, "in", now).action == "pass"
                and engine.process(packet_out, second, "out", now).action == "pass")

    def handshake(src: str, sport: int, dport: int) -> bool:
        syn = lambda: tcp(src, sport, net.server, dport, flags="S", seq=1)  # noqa: E731
        synack = lambda: tcp(net.server, dport, src, sport, flags="SA", seq=100, ack=2)  # noqa: E731
        ack = lambda: tcp(src, sport, net.server, dport, flags="A", seq=2, ack=101)  # noqa: E731
        return forward(syn(), syn(), True) and forward(synack(), synack(), False) and forward(ack(), ack(), True)

    for connection in connections:
        now += 0.1
        assert handshake(*connection)
    now += 0.1
    handshake(net.bad, 40999, LIMITED)  # one too many: overload
    survivors = {}
    for src, sport, dport in connections:
        data = lambda: tcp(src, sport, net.server, dport, flags="PA", seq=2, ack=101, payload=b"ping")  # noqa: E731
        survivors[(src, sport, dport)] = forward(data(), data(), True)
    return survivors


@pytest.mark.parametrize("flush, family, limited_pass", [("flush global", 4, "in"), ("flush", 4, "in"), ("flush global", 6, "in"),
                                                         ("flush global", 4, "out"), ("flush", 4, "out")])
def test_overload_flush_kills_the_offenders_states(lab, tmp_path, flush, family, limited_pass):
    net = NETS[family]
    fw, c, s = build(lab, net)
    env = pfha_env(tmp_path)
    conf = tmp_path / "pf.conf"
    conf.write_text(ruleset(flush, limited_pass))
    flusher = start_flusher(fw, env, tmp_path)
    server = s.popen(sys.executable, "-c", ECHO, net.server, str(LIMITED), str(OTHER), stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    client = Client(c, net.server)
    try:
        loaded = pfctl(fw, env, "-f", str(conf))
        assert "overload flush" not in loaded.stderr  # a flusher is listening: nothing to warn about
        assert server.stdout.readline().strip() == "ready"
        plan = [(net.bad, LIMITED), (net.bad, LIMITED), (net.bad, OTHER), (net.good, LIMITED)]
        opened = []
        for src, port in plan:
            answer = client.ask(f"open {src} {port}")
            assert answer.startswith("OK"), (src, port, answer)
            opened.append((src, int(answer.split()[1]), port))
        assert all(client.ask(f"send {i}") == "ECHO" for i in range(len(opened)))
        assert flows(fw, net.server) == sorted(opened)
        assert client.ask(f"open {net.bad} {LIMITED}") == "FAIL"  # over max-src-conn: into <bad>
        assert pfctl(fw, env, "-t", "bad", "-T", "show").stdout.split() == [net.bad]
        deadline = time.monotonic() + 10
        expected_gone = {o for o in opened if o[0] == net.bad and (flush == "flush global" or o[2] == LIMITED)}
        while set(flows(fw, net.server)) & expected_gone and time.monotonic() < deadline:
            time.sleep(0.1)
        remaining = set(flows(fw, net.server))
        carrying = {o: client.ask(f"send {i}") == "ECHO" for i, o in enumerate(opened)}
    finally:
        client.close()
        server.kill()
        server.wait(timeout=10)
        flusher.terminate()
        flusher.wait(timeout=10)
    log = (tmp_path / "flusher.log").read_text()
    assert remaining == set(opened) - expected_gone, log
    assert f"{net.bad} overloaded rule" in log and "states killed" in log
    # the other client's connection, and (flush without global) the offender's connection through
    # another rule, carry on; the flushed ones are refused by `block quick from <bad>`
    assert carrying == {o: o not in expected_gone for o in opened}
    assert carrying == engine_survivors(flush, opened, net, limited_pass)


def test_load_without_a_flusher_warns(lab, tmp_path):
    fw, _, _ = build(lab)
    env = pfha_env(tmp_path)
    conf = tmp_path / "pf.conf"
    conf.write_text(ruleset("flush global"))
    loaded = pfctl(fw, env, "-f", str(conf))
    assert "pf.conf:5: overload flush: no overload flusher runs in this namespace" in loaded.stderr
    conf.write_text(ruleset(""))  # overload without flush needs no flusher
    assert "overload flush" not in pfctl(fw, env, "-f", str(conf)).stderr


def test_node_daemon_runs_the_flusher_while_the_ruleset_needs_it(lab, tmp_path):
    """The node daemon starts its overload part with a flushing ruleset (pfctl -f then has
    nothing to warn about), flushes, and stops the part when a reload drops the flush."""
    from node_toml import write_node_toml

    from pfha.lab.build import python_env
    from pfha.node import control

    fw, c, s = build(lab)
    env = pfha_env(tmp_path)
    conf = tmp_path / "pf.conf"
    conf.write_text(ruleset("flush global"))
    config = write_node_toml(tmp_path / "node.toml", "fwa", conf, {"a0": "a0", "b0": "b0", "lo0": "lo"},
                             pflog={"file": tmp_path / "pflog"})
    sock = tmp_path / "node.sock"
    node = fw.popen(sys.executable, "-m", "pfha.cli.main", "node", "run", "-c", str(config), "--control", str(sock),
                    "--without", "carp,sync", stdout=open(tmp_path / "node.log", "w"), stderr=subprocess.STDOUT,
                    env=python_env(PFHA_STATE_DIR=str(tmp_path), PFHA_RUN_DIR=str(tmp_path)))
    server = s.popen(sys.executable, "-c", ECHO, SERVER, str(LIMITED), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True)
    client = Client(c)

    def status() -> dict:
        deadline = time.monotonic() + 20
        while True:
            try:
                return control.request(sock, "status", timeout=1)
            except control.ControlError:
                assert node.poll() is None and time.monotonic() < deadline, (tmp_path / "node.log").read_text()
                time.sleep(0.1)

    try:
        assert status()["overload"]["state"] == "running"
        assert "overload flush" not in pfctl(fw, env, "-f", str(conf)).stderr
        assert server.stdout.readline().strip() == "ready"
        opened = []
        for src in (BAD, BAD, GOOD):
            answer = client.ask(f"open {src} {LIMITED}")
            assert answer.startswith("OK"), answer
            opened.append((src, int(answer.split()[1]), LIMITED))
        assert client.ask(f"open {BAD} {LIMITED}") == "FAIL"
        deadline = time.monotonic() + 10
        while status()["overload"].get("killed", 0) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert status()["overload"]["killed"] == 2
        assert flows(fw) == [o for o in sorted(opened) if o[0] == GOOD]
        assert [client.ask(f"send {i}") for i in range(3)] == ["NOECHO", "NOECHO", "ECHO"]
        conf.write_text(ruleset(""))  # overload without flush: the part is no longer needed
        assert control.request(sock, "reload", timeout=30)["ok"]
        assert status()["overload"]["state"].startswith("not needed")
        conf.write_text(ruleset("flush"))  # and the group is free again: a plain pfctl -f warns
        assert "no overload flusher runs" in pfctl(fw, env, "-f", str(conf)).stderr
        # another flusher holds the group: the node logs it and runs on (that one flushes)
        other = start_flusher(fw, env, tmp_path)
        try:
            assert control.request(sock, "reload", timeout=30)["ok"]
            overload = status()["overload"]
            assert overload["state"] == "not running" and "another overload flusher" in overload["error"], overload
            assert node.poll() is None
        finally:
            other.terminate()
            other.wait(timeout=10)
    finally:
        client.close()
        server.kill()
        server.wait(timeout=10)
        node.terminate()
        node.wait(timeout=20)
