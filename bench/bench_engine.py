"""Benchmark of the reference engine: replay throughput and rule-evaluation cost.

1. A 10,000-flow capture (10 packets a flow: handshake, data both ways, close; 100,000 packets)
   is written as an Ethernet pcap and replayed through the tutorial's ruleset
   (seed/configs/corrected/pf.conf, the primary's interfaces) with ``pfha replay``'s own loop
   (pfha.engine.replay: read the record, find the IP packet, parse, pf_test, count). Flows go
   from the admin host to the firewall's ssh port (rule ``pass in quick on $ext_if ... port
   $firewall_ssh_ports keep state``): the first packet of each flow is evaluated against the
   rules, the other nine match its state. Measured twice: the 90,000 state-matching packets
   alone (the flows' SYNs went through the engine first, off the clock: issue 3's goal), and
   the whole capture.
2. The whole capture through a generated 1,000-rule ruleset whose matching rule is the last one.
3. The state-matching packets through pf_test alone (already parsed), and parse + pf_test.
4. Rule evaluation alone (first packets, no state) for generated rulesets of 10 to 10,000 rules,
   indexed and linear: microseconds per packet and rules evaluated per packet.

Times are CPU time of this process (``time.process_time``) with the cyclic garbage collector
off during the loop (as ``pfha replay`` runs it); each throughput is the median of 5 runs (3
with ``--quick``, which also uses 2,000 flows), printed with the range, because the machine is
shared. Prints Markdown tables and exits 0. Goal (issue 3): >= 100,000 packets/s for
state-matching packets on one core; rule-evaluation cost sublinear in rules.
"""

from __future__ import annotations

import gc
import io
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
SHARED = Path(os.environ.get("PFHA_SHARED", REPO.parent / "shared"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared")

from pfha.conf import InterfaceView, parse_file, parse_text  # noqa: E402
from pfha.engine import Engine  # noqa: E402
from pfha.engine import packet as P  # noqa: E402
from pfha.engine.packet import Packet  # noqa: E402
from pfha.engine.replay import replay as replay_capture  # noqa: E402
from pfha.pflog import pcap  # noqa: E402

PRIMARY = ["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "rl0=10.10.10.250/24",
           "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24", "lo0=127.0.0.1/8"]
ADMIN, FW, PORT = "198.51.100.200", "203.0.113.10", 8081
START = 1700000000.0  # the capture's first timestamp
ADMIN_INT = int.from_bytes(bytes([198, 51, 100, 200]), "big")


def flow_packets(flows: int) -> list[bytes]:
    """Ten packets per flow, in waves (every flow's SYN, then every SYN-ACK, ...)."""
    waves: list[list[bytes]] = [[] for _ in range(10)]
    for i in range(flows):
        cport = 10000 + i % 50000
        client = f"198.51.100.{200 if i < 50000 else 201}"
        c, s = 1000 + i, 900000 + i
        seq = [
            P.tcp(client, cport, FW, PORT, "S", seq=c, mss=1460),
            P.tcp(FW, PORT, client, cport, "SA", seq=s, ack=c + 1, mss=1460),
            P.tcp(client, cport, FW, PORT, "A", seq=c + 1, ack=s + 1),
            P.tcp(client, cport, FW, PORT, "PA", seq=c + 1, ack=s + 1, payload=b"x" * 100),
            P.tcp(FW, PORT, client, cport, "A", seq=s + 1, ack=c + 101),
            P.tcp(FW, PORT, client, cport, "PA", seq=s + 1, ack=c + 101, payload=b"y" * 200),
            P.tcp(client, cport, FW, PORT, "A", seq=c + 101, ack=s + 201),
            P.tcp(client, cport, FW, PORT, "FA", seq=c + 101, ack=s + 201),
            P.tcp(FW, PORT, client, cport, "FA", seq=s + 201, ack=c + 102),
            P.tcp(client, cport, FW, PORT, "A", seq=c + 102, ack=s + 202),
        ]
        for wave, packet in zip(waves, seq):
            wave.append(packet.to_bytes())
    return [data for wave in waves for data in wave]


def write_capture(packets: list[bytes]) -> bytes:
    stream = io.BytesIO()
    writer = pcap.PcapWriter(stream, pcap.LINKTYPE_ETHERNET)
    for i, data in enumerate(packets):
        writer.write(START + i * 1e-5, pcap.ethernet_frame(data))
    return stream.getvalue()


def replay(engine: Engine, capture: bytes, warm: list[bytes] = ()) -> tuple[float, int, dict]:
    """``pfha replay``'s loop (pfha.engine.replay): read the record, find the IP packet, parse,
    pf_test, count. The capture holds both directions of xl0: the admin's packets go in.
    ``warm`` packets (the flows' SYNs) go through the engine first, off the clock."""
    for data in warm:
        engine.process(Packet.parse(data), "xl0", "in", START - 1.0)
    reader = pcap.PcapReader(io.BytesIO(capture))
    admin_net = ADMIN_INT >> 8
    gc.disable()
    start = time.process_time()
    totals = replay_capture(engine, reader.linktype, reader.frames(), "xl0", None, None, None,
                            lambda p: "in" if p.src >> 8 == admin_net else "out")
    elapsed = time.process_time() - start
    gc.enable()
    # nothing blocked and one state per flow: every other packet passed on its flow's state
    created = sum(r.counters.states_tot for r in engine.rules()) - len(warm)
    outcome = {"pass": totals.passed, "block": totals.blocked, "matched": totals.passed - created}
    return elapsed, totals.packets, outcome


def state_match_only(ruleset, view, packets: list[bytes], flows: int) -> tuple[float, float]:
    """Packets/s for state-matching packets already parsed: (pf_test only, parse + pf_test)."""
    rest = packets[flows:]
    engine = Engine(ruleset, view)
    for d in packets[:flows]:
        engine.process(Packet.parse(d), "xl0", "in", 0.0)
    parsed = [Packet.parse(d) for d in rest]
    dirs = ["in" if p.src >> 8 == ADMIN_INT >> 8 else "out" for p in parsed]
    gc.disable()
    start = time.process_time()
    for p, direction in zip(parsed, dirs):
        engine.process(p, "xl0", direction, 1.0)
    only = len(rest) / (time.process_time() - start)
    gc.enable()
    engine = Engine(ruleset, view)
    for d in packets[:flows]:
        engine.process(Packet.parse(d), "xl0", "in", 0.0)
    gc.disable()
    start = time.process_time()
    for data, direction in zip(rest, dirs):
        engine.process(Packet.parse(data), "xl0", direction, 1.0)
    both = len(rest) / (time.process_time() - start)
    gc.enable()
    return only, both


def parse_only(packets: list[bytes]) -> float:
    gc.disable()
    start = time.process_time()
    for data in packets:
        Packet.parse(data)
    elapsed = time.process_time() - start
    gc.enable()
    return len(packets) / elapsed


def median_of(runs: int, measure) -> tuple[float, float, float]:
    """(median, lowest, highest) packets/s of ``runs`` measurements: the machine is shared, so
    one run says little; the median is the figure, the range shows the noise."""
    values = sorted(measure() for _ in range(runs))
    return statistics.median(values), values[0], values[-1]


def generated_conf(n: int, seed: int = 11) -> str:
    """``n`` varied rules that do not match the benchmark's flows, then the one that does."""
    rng = random.Random(seed)
    lines = ["set skip on lo0", "block log all", "table <bad> { 10.66.0.0/16 }",
             "nat on xl0 from 192.168.1.0/24 to any -> (xl0)"]
    for i in range(n):
        kind = i % 5
        a, b = (i // 250) % 250, i % 250
        if kind == 0:
            lines.append(f"pass in quick on xl0 inet proto tcp from any to 10.{a}.{b}.1 port {1000 + i % 5000}")
        elif kind == 1:
            lines.append(f"block in quick on xl0 inet from 172.{16 + a % 16}.{b}.0/24 to any")
        elif kind == 2:
            lines.append(f"pass out quick on xl1 inet proto udp from any to 192.168.{a}.{b} port {rng.randrange(1, 1024)}")
        elif kind == 3:
            lines.append(f"pass in on xl0 inet proto tcp from 100.{a}.{b}.0/24 to any port {rng.randrange(1, 1024)}")
        else:
            lines.append(f"pass in on rl0 inet proto udp from 10.10.{a}.{b} to any port 8{b:03d}")
    lines.append(f"pass in quick on xl0 inet proto tcp from {ADMIN} to {FW} port {PORT} keep state")
    return "\n".join(lines) + "\n"


def first_packet_cost(ruleset, view, indexed: bool, flows: int) -> tuple[float, float]:
    """Microseconds per new-flow packet (rule evaluation + state creation) and rules looked at."""
    engine = Engine(ruleset, view, indexed=indexed)
    syns = [P.tcp(ADMIN, 10000 + i % 50000, FW, PORT, "S", seq=1) for i in range(flows)]
    gc.disable()
    start = time.process_time()
    for p in syns:
        engine.process(p, "xl0", "in", 0.0)
    elapsed = time.process_time() - start
    gc.enable()
    evaluations = sum(r.counters.evaluations for r in engine.rules())
    return elapsed / flows * 1e6, evaluations / flows


def main(argv: list[str]) -> int:
    flows = 2000 if "--quick" in argv else 10000
    view = InterfaceView.from_specs(PRIMARY)
    tutorial = parse_file(str(SHARED / "seed" / "configs" / "corrected" / "pf.conf"), view)
    packets = flow_packets(flows)
    capture = write_capture(packets)
    runs = 3 if "--quick" in argv else 5
    count = len(packets)
    rows = []

    def full_replay(ruleset) -> float:
        elapsed, n, outcome = replay(Engine(ruleset, view), capture)
        assert n == count and outcome["block"] == 0 and outcome["matched"] == count - flows, outcome
        return n / elapsed

    def state_replay() -> float:
        elapsed, n, outcome = replay(Engine(tutorial, view), rest_capture, packets[:flows])
        assert n == count - flows and outcome["block"] == 0 and outcome["matched"] == n, outcome
        return n / elapsed

    rest_capture = write_capture(packets[flows:])
    rows.append(("replay, tutorial ruleset: state-matching packets (read+parse+pf_test+counters)",
                 count - flows, median_of(runs, state_replay)))
    rows.append(("replay, tutorial ruleset: whole capture (10% new flows)", count,
                 median_of(runs, lambda: full_replay(tutorial))))
    gen = parse_text(generated_conf(1000), "generated.conf", view)
    rows.append(("replay, generated 1,000-rule ruleset: whole capture", count, median_of(runs, lambda: full_replay(gen))))
    pairs = [state_match_only(tutorial, view, packets, flows) for _ in range(runs)]
    rows.append(("state-matching packets, already parsed: pf_test only", count - flows,
                 median_of(runs, iter(p[0] for p in pairs).__next__)))
    rows.append(("state-matching packets, from IP bytes: parse + pf_test", count - flows,
                 median_of(runs, iter(p[1] for p in pairs).__next__)))
    rows.append(("Packet.parse alone", count, median_of(runs, lambda: parse_only(packets))))

    print(f"Reference engine on {platform.python_implementation()} {platform.python_version()}, "
          f"{platform.machine()}, one core; {flows:,} flows x 10 packets.\n")
    print(f"| workload | packets | packets/s (median of {runs}) | range |")
    print("|---|---:|---:|---:|")
    for name, n, (median, low, high) in rows:
        print(f"| {name} | {n:,} | {median:,.0f} | {low:,.0f}-{high:,.0f} |")
    print()
    print("Rule evaluation for new flows (SYN: translation + filter + state creation), matching rule last:\n")
    print("| filter rules | indexed: us/packet | indexed: rules evaluated | linear: us/packet | linear: rules evaluated |")
    print("|---:|---:|---:|---:|---:|")
    sizes = (10, 100, 1000) if "--quick" in argv else (10, 100, 1000, 10000)
    n_syn = 1000 if "--quick" in argv else 3000
    for n in sizes:
        rs = parse_text(generated_conf(n), "generated.conf", view)
        fast_us, fast_evals = first_packet_cost(rs, view, True, n_syn)
        slow_us, slow_evals = first_packet_cost(rs, view, False, min(n_syn, 300) if n >= 1000 else n_syn)
        print(f"| {n + 2:,} | {fast_us:.1f} | {fast_evals:.1f} | {slow_us:.1f} | {slow_evals:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
