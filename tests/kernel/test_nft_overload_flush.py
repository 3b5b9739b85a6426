"""``overload <t> flush [global]`` on real traffic through a firewall: a client that opens one
connection too many lands in <bad>, and the overload flusher (``pfha overload-flush``) kills its
earlier states - every one with ``global``, only those of the overloading rule without - while
another client is untouched. Which connections keep carrying data is compared with the
reference engine fed the same connections. Without a flusher, ``pfctl -f`` warns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces, nftables and conntrack")

FW_IN, FW_OUT = "10.66.0.1", "10.67.0.1"
BAD, GOOD, SERVER = "10.66.0.2", "10.66.0.3", "10.67.0.2"
LIMITED, OTHER = 2222, 2223
LIMIT = 2


def ruleset(flush: str) -> str:
    return ("table <bad> persist\n"
            "block quick from <bad>\n"
            "block all\n"
            "pass out on b0 proto tcp keep state\n"
            f"pass in on a0 proto tcp to port {LIMITED} keep state (max-src-conn {LIMIT}, overload <bad> {flush})\n"
            f"pass in on a0 proto tcp to port {OTHER} keep state\n")


ECHO = """
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
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
        c = socket.socket(); c.settimeout(1.5); c.bind((words[1], 0))
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
    def __init__(self, ns) -> None:
        self.proc = ns.popen(sys.executable, "-u", "-c", CLIENT, SERVER, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True)

    def ask(self, line: str) -> str:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


def build(lab):
    fw, c, s = lab.ns("fw"), lab.ns("c"), lab.ns("s")
    lab.link(fw, "a0", c, "eth0")
    lab.link(fw, "b0", s, "eth0")
    fw.exec("ip", "addr", "add", f"{FW_IN}/24", "dev", "a0")
    fw.exec("ip", "addr", "add", f"{FW_OUT}/24", "dev", "b0")
    fw.sysctl("net.ipv4.ip_forward", 1)
    for address in (BAD, GOOD):
        c.exec("ip", "addr", "add", f"{address}/24", "dev", "eth0")
    c.exec("ip", "route", "add", "default", "via", FW_IN)
    s.exec("ip", "addr", "add", f"{SERVER}/24", "dev", "eth0")
    s.exec("ip", "route", "add", "default", "via", FW_OUT)
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


def flows(fw) -> list[tuple[str, int, int]]:
    """(source, source port, destination port) of the tracked TCP connections to the server."""
    out = fw.exec("conntrack", "-L", "-p", "tcp", "-d", SERVER, check=False).stdout
    result = []
    for line in out.splitlines():
        fields: dict[str, str] = {}
        for word in line.split():
            if "=" in word:
                fields.setdefault(*word.split("=", 1))  # the original tuple comes first
        result.append((fields["src"], int(fields["sport"]), int(fields["dport"])))
    return sorted(result)


def engine_survivors(flush: str, connections: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], bool]:
    """The same connections through the reference engine (each packet on both passes), then
    the connection that overloads: does each earlier connection's next data packet still pass
    the firewall?"""
    from pfha.conf import parse_text
    from pfha.conf.interfaces import InterfaceView
    from pfha.engine.engine import Engine
    from pfha.engine.packet import tcp

    view = InterfaceView.from_specs([f"a0={FW_IN}/24", f"b0={FW_OUT}/24", "lo0=127.0.0.1/8"])
    engine = Engine(parse_text(ruleset(flush), interfaces=view), view)
    now = 1000.0

    def forward(packet_in, packet_out, inside: bool) -> bool:
        first, second = ("a0", "b0") if inside else ("b0", "a0")
        return (engine.process(packet_in, first, "in", now).action == "pass"
                and engine.process(packet_out, second, "out", now).action == "pass")

    def handshake(src: str, sport: int, dport: int) -> bool:
        syn = lambda: tcp(src, sport, SERVER, dport, flags="S", seq=1)  # noqa: E731
        synack = lambda: tcp(SERVER, dport, src, sport, flags="SA", seq=100, ack=2)  # noqa: E731
        ack = lambda: tcp(src, sport, SERVER, dport, flags="A", seq=2, ack=101)  # noqa: E731
        return forward(syn(), syn(), True) and forward(synack(), synack(), False) and forward(ack(), ack(), True)

    for connection in connections:
        now += 0.1
        assert handshake(*connection)
    now += 0.1
    handshake(BAD, 40999, LIMITED)  # one too many: overload
    survivors = {}
    for src, sport, dport in connections:
        data = lambda: tcp(src, sport, SERVER, dport, flags="PA", seq=2, ack=101, payload=b"ping")  # noqa: E731
        survivors[(src, sport, dport)] = forward(data(), data(), True)
    return survivors


@pytest.mark.parametrize("flush", ["flush global", "flush"])
def test_overload_flush_kills_the_offenders_states(lab, tmp_path, flush):
    fw, c, s = build(lab)
    env = pfha_env(tmp_path)
    conf = tmp_path / "pf.conf"
    conf.write_text(ruleset(flush))
    flusher = start_flusher(fw, env, tmp_path)
    server = s.popen(sys.executable, "-c", ECHO, SERVER, str(LIMITED), str(OTHER), stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    client = Client(c)
    try:
        loaded = pfctl(fw, env, "-f", str(conf))
        assert "overload flush" not in loaded.stderr  # a flusher is listening: nothing to warn about
        assert server.stdout.readline().strip() == "ready"
        plan = [(BAD, LIMITED), (BAD, LIMITED), (BAD, OTHER), (GOOD, LIMITED)]
        opened = []
        for src, port in plan:
            answer = client.ask(f"open {src} {port}")
            assert answer.startswith("OK"), (src, port, answer)
            opened.append((src, int(answer.split()[1]), port))
        assert all(client.ask(f"send {i}") == "ECHO" for i in range(len(opened)))
        assert flows(fw) == sorted(opened)
        assert client.ask(f"open {BAD} {LIMITED}") == "FAIL"  # over max-src-conn: into <bad>
        assert pfctl(fw, env, "-t", "bad", "-T", "show").stdout.split() == [BAD]
        deadline = time.monotonic() + 10
        expected_gone = {o for o in opened if o[0] == BAD and (flush == "flush global" or o[2] == LIMITED)}
        while set(flows(fw)) & expected_gone and time.monotonic() < deadline:
            time.sleep(0.1)
        remaining = set(flows(fw))
        carrying = {o: client.ask(f"send {i}") == "ECHO" for i, o in enumerate(opened)}
    finally:
        client.close()
        server.kill()
        server.wait(timeout=10)
        flusher.terminate()
        flusher.wait(timeout=10)
    log = (tmp_path / "flusher.log").read_text()
    assert remaining == set(opened) - expected_gone, log
    assert f"{BAD} overloaded rule" in log and "states killed" in log
    # the other client's connection, and (flush without global) the offender's connection through
    # another rule, carry on; the flushed ones are refused by `block quick from <bad>`
    assert carrying == {o: o not in expected_gone for o in opened}
    assert carrying == engine_survivors(flush, opened)


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
