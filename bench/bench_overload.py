"""Benchmark the overload flusher: how long one ``overload ... flush`` takes as the state table grows.

In a scratch namespace, conntrack is filled with N established pf states of other sources plus
K states of each of M offenders (installed through pfha.sync's batched ctnetlink writer); then
their overload events are flushed at once, the way the flusher does it (up to 8 offenders:
kernel-filtered dumps of the flows naming each, CTA_FILTER; more: one raw dump of the pf
states), and, as a reference, with a pyroute2 dump of the whole table. pf kills the states in the kernel right away;
the figure that matters is the time from the event to the last delete.

Needs root (network namespaces). ``--quick`` uses smaller tables.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pfha.lab.netns import Lab  # noqa: E402

SNIPPET = """
import ipaddress, json, sys, time
from pfha.nft.compile import A_SHIFT, SIDE_A
from pfha.nft.overload import OverloadEvent
from pfha.nft.overload_linux import OverloadFlusher, every_flow
from pfha.sync import wire
from pfha.sync.conntrack import KernelTable
from pfha.sync.simnet import make_state

others, offenders, each, mode = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
table = KernelTable()
table.install([(make_state(i), False) for i in range(others)])
sources = [f"10.250.{k >> 8}.{k & 255}" for k in range(1, offenders + 1)]
table.install([(wire.State(wire.AF_INET, wire.IPPROTO_TCP, wire.Tuple(src, "10.0.2.100", 30000 + j, 22),
                           wire.Tuple("10.0.2.100", src, 22, 30000 + j), status=0xE, timeout=432000,
                           mark=SIDE_A | (5 << A_SHIFT), tcp_state=3, wscale=(7, 7), tcp_flags=(3, 3)).pack(), False)
               for src in sources for j in range(each)])
before = len(table.dump(0))
flusher = OverloadFlusher(flows=None if mode == "flusher" else every_flow)
flusher.start()  # binds the overload group and opens conntrack: paid once, not per event
events = [OverloadEvent(ipaddress.ip_address(src), 5, "in", "global", 4) for src in sources]
done = flusher.flush(events)
flusher.close()
after = len(table.dump(0))
print(json.dumps({"seconds": done.seconds, "killed": done.killed, "before": before, "after": after}))
"""


def measure(lab: Lab, others: int, offenders: int, each: int, mode: str) -> dict:
    ns = lab.ns(f"o{len(lab.namespaces)}")
    # conntrack starts tracking in a namespace once a ruleset uses it
    ns.exec("nft", "-f", "-", input="table inet t {\n chain c {\n  type filter hook prerouting priority 0;\n  ct state new counter\n }\n}\n")
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.run(ns.argv([sys.executable, "-c", SNIPPET, str(others), str(offenders), str(each), mode]), env=env,
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    result = json.loads(proc.stdout)
    assert result["killed"] == offenders * each and result["after"] == result["before"] - result["killed"], result
    return result


REFERENCE_MAX = 10000  # the whole-table pyroute2 dump takes minutes beyond this


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [(1000, 1, 10), (10000, 1, 10), (10000, 20, 4)] if args.quick else \
        [(1000, 1, 10), (10000, 1, 10), (30000, 1, 10), (30000, 1, 200), (30000, 50, 4)]
    print("| other states | offenders x their states | flusher (ms) | reference: whole table through pyroute2 (ms) |")
    print("|---|---|---|---|")
    with Lab(prefix="bo") as lab:
        for others, offenders, each in sizes:
            ours = measure(lab, others, offenders, each, "flusher")
            reference = "-"
            if others <= REFERENCE_MAX and offenders == 1:
                reference = f"{measure(lab, others, offenders, each, 'reference')['seconds'] * 1000:.0f}"
            print(f"| {others} | {offenders} x {each} | {ours['seconds'] * 1000:.1f} | {reference} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
