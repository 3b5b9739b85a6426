"""Benchmark the overload flusher: how long one ``overload ... flush`` takes as the state table grows.

In a scratch namespace, conntrack is filled with N established pf states of other sources plus
K states of one offender (installed through pfha.sync's batched ctnetlink writer); then one
overload event is flushed, (a) the way the flusher does it - kernel-filtered dumps of the
flows naming the offender (CTA_FILTER) - and (b) with a dump of the whole table, as a
reference for kernels without filtered dumps. pf kills the states in the kernel right away;
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

others, mine, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
OFFENDER = "10.250.0.1"
table = KernelTable()
table.install([(make_state(i), False) for i in range(others)])
table.install([(wire.State(wire.AF_INET, wire.IPPROTO_TCP, wire.Tuple(OFFENDER, "10.0.2.100", 30000 + j, 22),
                           wire.Tuple("10.0.2.100", OFFENDER, 22, 30000 + j), status=0xE, timeout=432000,
                           mark=SIDE_A | (5 << A_SHIFT), tcp_state=3, wscale=(7, 7), tcp_flags=(3, 3)).pack(), False)
               for j in range(mine)])
before = len(table.dump(0))
flusher = OverloadFlusher(flows=None if mode == "filtered" else every_flow)
flusher.start()  # binds the overload group and imports pyroute2: paid once, not per event
event = OverloadEvent(ipaddress.ip_address(OFFENDER), 5, "in", "global", 4)
done = flusher.flush([event])
after = len(table.dump(0))
flusher.close()
print(json.dumps({"seconds": done.seconds, "killed": done.killed, "before": before, "after": after}))
"""


def measure(lab: Lab, others: int, mine: int, mode: str) -> dict:
    ns = lab.ns(f"o{len(lab.namespaces)}")
    # conntrack starts tracking in a namespace once a ruleset uses it
    ns.exec("nft", "-f", "-", input="table inet t {\n chain c {\n  type filter hook prerouting priority 0;\n  ct state new counter\n }\n}\n")
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.run(ns.argv([sys.executable, "-c", SNIPPET, str(others), str(mine), mode]), env=env,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    sizes = [(1000, 10), (10000, 10)] if args.quick else [(1000, 10), (10000, 10), (50000, 10), (50000, 200)]
    print("| conntrack entries (others + offender's) | filtered dumps (ms) | whole-table dump (ms) | states killed |")
    print("|---|---|---|---|")
    with Lab(prefix="bo") as lab:
        for others, mine in sizes:
            filtered = measure(lab, others, mine, "filtered")
            whole = measure(lab, others, mine, "whole")
            assert filtered["killed"] == whole["killed"] == mine and filtered["after"] == others, (filtered, whole)
            print(f"| {others} + {mine} | {filtered['seconds'] * 1000:.1f} | {whole['seconds'] * 1000:.1f} | {mine} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
