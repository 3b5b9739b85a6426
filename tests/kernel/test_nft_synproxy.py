"""``synproxy state`` on real packets: the firewall answers the client's SYN itself and opens the
connection to the server only once the client completed the handshake (pf.conf(5)).

Runs in the tutorial testbed (ext - fw - lan): servers in the LAN are reached from outside
without translation, which is where the compiler runs real nft synproxy. Each test checks the
wire (tcpdump on the server's side, scapy on the client's), conntrack, pfctl, and the reference
engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces and nftables")

SERVER, PORT = "192.168.1.100", 8080
CLIENT, SHIELDED, SPOOFED = "198.51.100.7", "198.51.100.54", "198.51.100.99"  # SPOOFED: nobody owns it
RULESET = f"""\
ext_if = "xl0"
int_if = "xl1"
set skip on lo0
block in all
pass out all keep state
pass in on $ext_if proto tcp from any to {SERVER} port {{ {PORT}, 8081 }} synproxy state
pass in quick on $ext_if proto tcp from {SHIELDED} to {SERVER} port {PORT} keep state
pass in on $int_if from 192.168.1.0/24 keep state
"""
# A translation that may touch the flows: the rule stays keep state (with its warning).
TRANSLATED = RULESET.replace("block in all\n", f"rdr on xl0 proto tcp from any to 203.0.113.12 port 9000 -> {SERVER} port {PORT}\nblock in all\n")

BULK = """
import socket, sys
s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5, source_address=(sys.argv[1], 0))
greeting = s.recv(4096)
payload = bytes(range(256)) * 1024
s.sendall(payload)
got = b""
while len(got) < len(payload):
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
s.sendall(b"bye\\n")
print(greeting.decode().strip(), "|", "ECHO-OK" if got == payload else f"ECHO-BAD {len(got)}")
"""

SPOOF = """
import sys
from scapy.all import IP, TCP, conf, sr1
conf.verb = 0
src, dst, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
answers = []
for i in range(count):
    syn = IP(src=src, dst=dst) / TCP(sport=30000 + i, dport=port, flags="S", seq=1000 + i,
                                     options=[("MSS", 1460), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 0))])
    reply = sr1(syn, iface="eth0", timeout=2)
    answers.append(reply)
first = answers[0]
ok = sum(1 for r in answers if r is not None and r.haslayer(TCP) and str(r[TCP].flags) == "SA")
print(ok, first[IP].src if first else None, first[TCP].sport if first else None,
      first[TCP].window if first else None, first[TCP].options if first else None)
"""


@pytest.fixture(scope="module")
def bed():
    from pfha.nft import testbed

    bed = testbed.build("nfsp")
    try:
        bed.specs = [f"--if={s}" for s in testbed.VIEW_SPECS]
        bed.serve(bed.lan, [f"tcp:{SERVER}:{PORT}", f"tcp:{SERVER}:8081", "tcp:192.168.1.80:80", "tcp:192.168.1.80:22"])
        bed.serve(bed.ext, ["tcp:198.51.100.80:80"])
        bed.serve(bed.fw, ["tcp:203.0.113.10:8000"])
        yield bed
    finally:
        bed.close()


def load(bed, text: str) -> str:
    path = os.path.join(bed.state_dir, "pf.conf")
    with open(path, "w") as out:
        out.write(text)
    return bed.pfctl(bed.fw, *bed.specs, "-f", path).stderr


class Capture:
    """tcpdump on the server's link (lan eth0), read back with scapy."""

    def __init__(self, bed, path: str) -> None:
        self.path = path
        self.proc = bed.lan.popen("tcpdump", "-n", "-U", "-i", "eth0", "-w", path, f"tcp port {PORT}",
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.proc.stderr.readline()  # "listening on eth0 ..."
        time.sleep(0.3)  # the machine is shared: let the capture settle before traffic starts

    def packets(self, expect=None, timeout: float = 8.0):
        return stop_capture(self.proc, self.path, expect, timeout)


def stop_capture(proc, path: str, expect=None, timeout: float = 8.0) -> list:
    """What tcpdump wrote, once ``expect(packets)`` holds (tcpdump may lag on a busy machine,
    and the packets it has not read yet are lost when it stops) or after ``timeout``; without
    ``expect``, after a second."""
    deadline = time.monotonic() + (timeout if expect else 1.0)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        if expect is not None and expect(read_pcap(path)):
            break
    proc.terminate()
    proc.wait(timeout=10)
    return read_pcap(path)


def read_pcap(path: str) -> list:
    from scapy.all import rdpcap

    try:
        return list(rdpcap(path)) if os.path.getsize(path) > 24 else []
    except Exception:  # a record half written by tcpdump: read again later
        return []


def syns(packets, src: str):
    from scapy.all import IP, TCP

    return [p for p in packets if p.haslayer(TCP) and p[IP].src == src and str(p[TCP].flags) == "S"]


def flows(bed, address: str) -> str:
    return bed.fw.exec("conntrack", "-L", "-s", address, check=False).stdout


def test_real_connection_is_proxied_and_carries_data(bed, tmp_path):
    warnings = load(bed, RULESET)
    assert "synproxy" not in warnings
    cap = Capture(bed, str(tmp_path / "server.pcap"))
    out = bed.ext.exec(sys.executable, "-c", BULK, CLIENT, SERVER, str(PORT), timeout=60).stdout.strip()
    packets = cap.packets(lambda got: syns(got, CLIENT))
    assert out.startswith(f"{SERVER}:{PORT} from {CLIENT}:") and out.endswith("ECHO-OK"), out
    # The server got the firewall's SYN, sent after the client's handshake: it carries the MSS
    # pf would send and none of the client's other options (Linux offers wscale, SACK, timestamps).
    proxied = syns(packets, CLIENT)  # once, or again if the client's data overtook the server's SYN-ACK
    assert proxied and all([name for name, _ in p["TCP"].options] == ["MSS"] for p in proxied), packets
    # The connection holds both pf states (side A by the synproxy rule, side B by pass out).
    entry = flows(bed, CLIENT)
    assert "dport=8080" in entry and "mark=" in entry
    mark = int(entry.split("mark=")[1].split()[0])
    assert mark & 0x3 == 0x3
    states = bed.pfctl(bed.fw, "-ss").stdout
    assert f"{CLIENT}:" in states and f"{SERVER}:{PORT}" in states
    rules = bed.pfctl(bed.fw, "-vsr").stdout
    proxied = rules.split("synproxy state", 1)[1].split("\n", 2)[1]
    assert "Packets:" in proxied and "Packets: 0 " not in proxied, rules


def tcp_in_segments(ns) -> int:
    """The namespace's TCP InSegs (every TCP segment its stack received)."""
    lines = [line.split() for line in ns.exec("cat", "/proc/net/snmp").stdout.splitlines() if line.startswith("Tcp:")]
    return int(lines[1][lines[0].index("InSegs")])


def test_spoofed_syns_are_answered_and_never_reach_the_server(bed, tmp_path):
    load(bed, RULESET)
    cap = Capture(bed, str(tmp_path / "server.pcap"))
    before = tcp_in_segments(bed.lan)
    out = bed.ext.exec(sys.executable, "-c", SPOOF, SPOOFED, SERVER, str(PORT), "20", timeout=120).stdout.strip().split(maxsplit=4)
    packets = cap.packets()
    assert tcp_in_segments(bed.lan) == before  # the server's stack received no segment at all
    answered, src, sport, window, options = out
    assert int(answered) == 20  # every SYN got the firewall's SYN-ACK ...
    assert (src, int(sport), int(window)) == (SERVER, PORT, 0)
    assert options == "[('MSS', 1460)]"  # ... with pf's MSS and no other option, window 0 as pf's
    assert syns(packets, SPOOFED) == [] and packets == []  # ... and the server saw nothing
    assert SPOOFED not in flows(bed, SPOOFED)  # no conntrack entry was made


def test_engine_answers_the_spoofed_syn_the_same_way():
    from pfha.conf import parse_text
    from pfha.engine import Engine
    from pfha.engine.packet import addr_to_text, tcp
    from pfha.nft import testbed

    view = testbed.tutorial_view()
    engine = Engine(parse_text(RULESET, "pf.conf", view), view)
    decision = engine.process(tcp(SPOOFED, 30000, SERVER, PORT, "S", seq=1000, mss=1460, wscale=7), "xl0", "in", 1000.0)
    assert (decision.action, decision.reason) == ("block", "synproxy")
    (answer,) = decision.emitted
    assert answer.toward == "sender" and addr_to_text(answer.packet.af, answer.packet.src) == SERVER
    assert answer.packet.tcp_options == bytes((2, 4, 1460 >> 8, 1460 & 0xFF))  # MSS only, as nft's
    assert answer.packet.win == 0  # as on the wire
    later = engine.process(tcp(SPOOFED, 30000, SERVER, PORT, "S", seq=1000, mss=1460, wscale=7), "xl0", "in", 1001.0)
    assert [e.toward for e in later.emitted] == ["sender"]  # a retransmitted SYN: answered again, never forwarded


def test_first_match_decides_which_syns_are_proxied(bed, tmp_path):
    """A quick rule for one client precedes the synproxy rule in pf's decision: that client's
    SYN reaches the server as it sent it (its own options), the others' are proxied."""
    load(bed, RULESET)
    cap = Capture(bed, str(tmp_path / "server.pcap"))
    for source in (SHIELDED, CLIENT):
        out = bed.probe(bed.ext, "tcp", source, SERVER, PORT)
        assert out.startswith(f"OK {SERVER}:{PORT} from {source}:"), out
    packets = cap.packets(lambda got: syns(got, SHIELDED) and syns(got, CLIENT))
    direct, proxied = syns(packets, SHIELDED), syns(packets, CLIENT)
    summary = [p.summary() for p in packets if CLIENT in p.summary()]
    assert direct and all("WScale" in [name for name, _ in p["TCP"].options] for p in direct), summary
    assert proxied and all([name for name, _ in p["TCP"].options] == ["MSS"] for p in proxied), summary


def test_kernel_agrees_with_engine(bed):
    from pfha.conf import parse_text
    from pfha.nft import testbed
    from pfha.nft.compile import compile_ruleset
    from pfha.nft.differential import Attempt, EngineSide, kernel_equivalent, kernel_outcomes

    view = testbed.tutorial_view()
    for base, text, real in ((42100, RULESET, True), (42200, TRANSLATED, False)):
        warnings = load(bed, text)
        bed.pfctl(bed.fw, "-F", "states")
        assert ("synproxy state: compiled as keep state: rdr at line 4 may translate" in warnings) is not real, warnings
        ruleset = parse_text(text, "pf.conf", view)
        numbers = compile_ruleset(ruleset, view).metadata["synproxy"]
        assert len(numbers) == (2 if real else 1)  # the rdr's target is port 8080: the 8081 rule stays proxied
        attempts = [Attempt("tcp", CLIENT, SERVER, PORT, base), Attempt("tcp", SHIELDED, SERVER, PORT, base + 1),
                    Attempt("tcp", "198.51.100.53", SERVER, 8081, base + 2), Attempt("tcp", CLIENT, SERVER, 22, base + 3)]
        engine = EngineSide(kernel_equivalent(ruleset, numbers), view)
        want = [engine.outcome(a) for a in attempts]
        got = kernel_outcomes(bed, attempts)
        assert [w.delivered for w in want] == [True, True, True, False]
        problems = [f"{a}: engine {w}, kernel {g}" for a, w, g in zip(attempts, want, got) if not w.same_as(g)]
        assert problems == []


def test_reload_and_disable_keep_proxied_connections(bed):
    load(bed, RULESET)
    stream = bed.python(bed.ext, "stream", CLIENT, SERVER, str(PORT), "6", "0.05", stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    for text in (TRANSLATED, RULESET, RULESET):
        load(bed, text)
        time.sleep(0.5)
    bed.pfctl(bed.fw, "-d")
    try:
        # pf disabled: nothing is untracked or proxied; the SYN reaches the server as sent
        assert bed.probe(bed.ext, "tcp", CLIENT, SERVER, 8081).startswith("OK")
    finally:
        bed.pfctl(bed.fw, "-e")
    out, _ = stream.communicate(timeout=30)
    assert out.strip().startswith("OK"), out
    assert bed.probe(bed.ext, "tcp", CLIENT, SERVER, PORT).startswith(f"OK {SERVER}:{PORT}")


def test_proxied_connection_to_the_firewall_itself(bed, tmp_path):
    """A synproxy rule for a service on the firewall: nft synproxy answers in the input hook
    and its SYN reaches the local socket over the loopback."""
    text = RULESET.replace("pass in quick", "pass in on $ext_if proto tcp to 203.0.113.2 port 8090 synproxy state\npass in quick")
    assert "synproxy" not in load(bed, text)
    bed.serve(bed.fw, ["tcp:203.0.113.2:8090"])
    cap = bed.fw.popen("tcpdump", "-n", "-U", "-i", "any", "-w", str(tmp_path / "fw.pcap"), "tcp port 8090",
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cap.stderr.readline()
    time.sleep(0.3)
    out = bed.ext.exec(sys.executable, "-c", BULK, CLIENT, "203.0.113.2", "8090", timeout=60).stdout.strip()

    def options(packets):
        return {tuple(name for name, _ in p["TCP"].options) for p in syns(packets, CLIENT)}

    seen = options(stop_capture(cap, str(tmp_path / "fw.pcap"), lambda got: len(options(got)) >= 2))
    assert out.startswith(f"203.0.113.2:8090 from {CLIENT}:") and out.endswith("ECHO-OK"), out
    # on xl0 the client's SYN (its own options), on lo the firewall's (MSS only)
    assert ("MSS",) in seen and any("WScale" in options for options in seen), seen
    assert all(options == ("MSS",) or "WScale" in options for options in seen), seen


def test_flushed_rules_stop_proxying(bed, tmp_path):
    load(bed, RULESET)
    bed.pfctl(bed.fw, "-F", "rules")
    try:
        cap = Capture(bed, str(tmp_path / "server.pcap"))
        assert bed.probe(bed.ext, "tcp", CLIENT, SERVER, PORT).startswith("OK")
        own = syns(cap.packets(lambda got: syns(got, CLIENT)), CLIENT)
        assert own and all("WScale" in [name for name, _ in p["TCP"].options] for p in own)  # the client's own SYN
    finally:
        load(bed, RULESET)


# ------------------------------------------------------------------ generated rulesets
CASES = [("198.51.100.7", "192.168.1.80", 80), ("198.51.100.54", "192.168.1.80", 80), ("198.51.100.7", "192.168.1.80", 22),
         ("192.168.1.100", "198.51.100.80", 80), ("198.51.100.7", "203.0.113.10", 8000), ("198.51.100.80", SERVER, PORT)]
HOSTS = ["any", "192.168.1.0/24", "198.51.100.0/24", "192.168.1.80", "198.51.100.54", "! 198.51.100.54", "<nets>", "! <nets>"]
_bases = iter(range(43000, 60000, 10))


@st.composite
def synproxy_rule(draw) -> str:
    parts = ["pass", draw(st.sampled_from(["in", "in", "in", ""])), draw(st.sampled_from(["", "quick"])),
             draw(st.sampled_from(["on xl0", "on xl0", "", "on xl1"])), "proto tcp",
             f"from {draw(st.sampled_from(HOSTS))}", f"to {draw(st.sampled_from(HOSTS))}"]
    port = draw(st.sampled_from(["", "80", "22", str(PORT), "< 1024"]))
    return " ".join(p for p in parts + ([f"port {port}"] if port else []) + ["synproxy state"] if p)


@st.composite
def synproxy_ruleset(draw) -> str:
    from test_nft_differential import rule_text

    lines = ["set skip on lo0", "table <nets> { 198.51.100.0/24 !198.51.100.54 }"]
    if draw(st.booleans()):
        lines.append("nat on xl0 from 192.168.1.0/24 to any -> 203.0.113.10")
    if draw(st.booleans()):
        lines.append("rdr on xl0 proto tcp from any to 203.0.113.10 port 8000 -> 192.168.1.80 port 80")
    lines.append(draw(st.sampled_from(["block all", "block in all", "block in all", "pass all"])))
    lines.append("pass out all")
    rules = draw(st.lists(rule_text(), max_size=3))
    rules.insert(draw(st.integers(0, len(rules))), draw(synproxy_rule()))
    return "\n".join(lines + rules) + "\n"


def proxied_in_kernel(bed, run, expected: set[tuple[str, int]]) -> tuple[list, set[tuple[str, int]]]:
    """Run the attempts with tcpdump on all of the firewall's interfaces; the (client, port)
    of every SYN that carries only an MSS: the firewall's own SYN toward the server (the
    clients are Linux sockets, whose SYNs also offer SACK, timestamps and window scaling)."""
    from scapy.all import IP, TCP

    path = os.path.join(bed.state_dir, "fw.pcap")
    cap = bed.fw.popen("tcpdump", "-n", "-U", "-i", "any", "-w", path, "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cap.stderr.readline()
    time.sleep(0.3)
    result = run()

    def proxied(packets):
        return {(p[IP].src, p[TCP].sport) for p in packets if p.haslayer(TCP) and [n for n, _ in p[TCP].options] == ["MSS"]}

    return result, proxied(stop_capture(cap, path, (lambda got: expected <= proxied(got)) if expected else None))


@settings(max_examples=int(os.environ.get("PFHA_SYNPROXY_EXAMPLES", "6")), deadline=None,
          derandomize=not os.environ.get("PFHA_DIFF_RANDOM"), database=None, suppress_health_check=list(HealthCheck))
@given(text=synproxy_ruleset())
def test_generated_rulesets_proxy_what_the_engine_proxies(bed, text):
    """Delivered or not, where, and *whether the firewall proxied the SYN*: kernel = engine."""
    from pfha.conf import parse_text
    from pfha.nft import testbed
    from pfha.nft.compile import compile_ruleset
    from pfha.nft.differential import Attempt, EngineSide, kernel_equivalent, kernel_outcomes

    view = testbed.tutorial_view()
    load(bed, text)
    bed.pfctl(bed.fw, "-F", "states")
    ruleset = parse_text(text, "pf.conf", view)
    real = compile_ruleset(ruleset, view).metadata["synproxy"]
    base = next(_bases)
    attempts = [Attempt("tcp", src, dst, port, base + i) for i, (src, dst, port) in enumerate(CASES)]
    engine = EngineSide(kernel_equivalent(ruleset, real), view)
    want = []
    for attempt in attempts:
        outcome = engine.outcome(attempt)
        want.append((outcome, outcome.delivered and engine.proxied))
    expected = {(a.src, a.sport) for a, (_, w_proxied) in zip(attempts, want) if w_proxied}
    got, proxied = proxied_in_kernel(bed, lambda: kernel_outcomes(bed, attempts), expected)
    problems = []
    for attempt, (w, w_proxied), g in zip(attempts, want, got):
        g_proxied = g.delivered and (attempt.src, attempt.sport) in proxied
        if not w.same_as(g) or w_proxied != g_proxied:
            problems.append(f"{attempt}: engine {w} proxied={w_proxied}, kernel {g} proxied={g_proxied}")
    assert problems == [], text + "\n" + "\n".join(problems)


def test_ipv6_connection_is_proxied(lab, tmp_path):
    """The same over IPv6: the firewall answers with MSS 1440, the server gets the firewall's SYN,
    and a client that never completes the handshake never reaches the server."""
    from pfha.nft import testbed

    c, fw, s = lab.ns("c"), lab.ns("fw"), lab.ns("s")
    lab.link(fw, "c0", c, "eth0")
    lab.link(fw, "s0", s, "eth0")
    for ns, dev, address, gateway in ((fw, "c0", "2001:db8:1::1", None), (fw, "s0", "2001:db8:2::1", None),
                                      (c, "eth0", "2001:db8:1::2", "2001:db8:1::1"), (s, "eth0", "2001:db8:2::2", "2001:db8:2::1")):
        ns.exec("ip", "-6", "addr", "add", f"{address}/64", "dev", dev, "nodad")
        if gateway:
            ns.exec("ip", "-6", "route", "add", "default", "via", gateway)
    c.exec("ip", "-6", "addr", "add", "2001:db8:1::99/64", "dev", "eth0", "nodad")  # the client that never ACKs
    c.exec("nft", "add table ip6 t; add chain ip6 t o { type filter hook output priority 0; }; "
           "add rule ip6 t o ip6 saddr 2001:db8:1::99 tcp flags & (syn|ack) == ack drop")
    fw.sysctl("net.ipv6.conf.all.forwarding", 1)
    conf = tmp_path / "pf.conf"
    conf.write_text("block in all\npass out all\npass quick inet6 proto icmp6 all no state\n"
                    "pass in on c0 inet6 proto tcp to 2001:db8:2::2 port 8080 synproxy state\n")
    env = {**os.environ, "PYTHONPATH": testbed.SRC}
    load = subprocess.run(fw.argv([sys.executable, "-m", "pfha.cli.pfctl", "-f", str(conf)]), env=env,
                          capture_output=True, text=True, timeout=60)
    assert load.returncode == 0 and "synproxy" not in load.stderr, load.stderr
    server = s.popen(sys.executable, "-c", "import socket\nl = socket.create_server(('::', 8080), family=socket.AF_INET6)\n"
                     "while True:\n    c, _ = l.accept(); c.sendall(c.recv(100)[::-1]); c.close()",
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    caps = [ns.popen("tcpdump", "-n", "-U", "-i", "eth0", "-w", str(tmp_path / f"{name}.pcap"), "tcp port 8080",
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for ns, name in ((s, "s"), (c, "c"))]
    for cap in caps:
        cap.stderr.readline()
    time.sleep(0.3)
    connect = "import socket, sys\nx = socket.create_connection(('2001:db8:2::2', 8080), timeout=2, source_address=(sys.argv[1], 0))\n" \
              "x.sendall(b'hello'); print(x.recv(100).decode())"
    try:
        time.sleep(0.5)
        out = c.exec(sys.executable, "-c", connect, "2001:db8:1::2", timeout=30).stdout.strip()
        stuck = c.exec(sys.executable, "-c", connect, "2001:db8:1::99", timeout=30, check=False)
    finally:
        from scapy.all import TCP, IPv6

        server_side = stop_capture(caps[0], str(tmp_path / "s.pcap"), lambda got: any(p.haslayer(TCP) for p in got))
        client_side = stop_capture(caps[1], str(tmp_path / "c.pcap"),
                                   lambda got: len({p[IPv6].dst for p in got if p.haslayer(TCP) and str(p[TCP].flags) == "SA"}) == 2)
        server.kill()
        server.wait(timeout=10)
    assert out == "olleh" and stuck.returncode != 0
    at_server = [(p[IPv6].src, [n for n, _ in p[TCP].options]) for p in server_side
                 if p.haslayer(TCP) and str(p[TCP].flags) == "S"]
    # the firewall's SYN for the first client only (sent again if the client's data came first)
    assert {(src, tuple(options)) for src, options in at_server} == {("2001:db8:1::2", ("MSS",))}
    answers = [(p[IPv6].dst, p[TCP].window, p[TCP].options) for p in client_side
               if p.haslayer(TCP) and str(p[TCP].flags) == "SA"]
    assert ("2001:db8:1::99", 0, [("MSS", 1440)]) in answers and ("2001:db8:1::2", 0, [("MSS", 1440)]) in answers
