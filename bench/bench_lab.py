"""The tutorial's pair end to end: how long a failover stalls running connections, as the
applications see it (carp.md §7 measures the address move alone; this is the whole system:
CARP, state sync, NAT and rdr through the compiled ruleset).

Per trial, in the lab (``pfha lab up``, corrected configs, both nodes): two paced transfers
(LAN client to an internet server through NAT, internet client to the web pool through rdr)
run when the master fails by ``kill`` (power loss), ``link`` (LAN cable cut) or ``stop``
(SIGTERM, bow-out); fw1 is then recovered and must be master again before the next trial.

Columns: connections that survived, the takeover time (failure until the backup holds every
vhid whose link is up, polled every 0.1 s over the control socket), and the longest gap
between two reads of a transfer (the stall the application saw). Needs root (prints a note
and exits 0 otherwise). ``--quick``: 1 trial per mode instead of 3. Everything runs in the lab's
namespaces and is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pfha.lab import build, scenarios  # noqa: E402


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trials", type=int)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_lab: needs root (network namespaces); skipped")
        return 0
    trials = args.trials or (1 if args.quick else 3)
    name = f"b{os.getpid() % 100000}"
    rows = []
    running = build.up(name, config="corrected")
    try:
        scenarios.wait_master(running, "fw1", timeout=30)
        for how in build.FAIL_MODES:
            survived, total, takeovers, stalls = 0, 0, [], []
            for _ in range(trials):
                run = scenarios.failover_under_traffic(running, how, nbytes=3_000_000, rate=1_000_000,
                                                       fail_after=1.2, stall_timeout=10)
                takeovers.append(run.takeover_seconds)
                for transfer in run.transfers:
                    total += 1
                    survived += bool(transfer.result and transfer.result.ok)
                    if transfer.result:
                        stalls.append(transfer.result.longest_stall)
                running.recover(run.failed)
                scenarios.wait_master(running, run.failed, timeout=60)
            rows.append((how, survived, total, takeovers, stalls))
    finally:
        build.down(name)
    print(f"### pfha pair: failover under traffic ({trials} trial(s) per mode, advbase 1, backup advskew 100)\n")
    print("| failure | connections kept | takeover s (min / median / max) | longest stall s (min / median / max) |")
    print("|---|---|---|---|")
    for how, survived, total, takeovers, stalls in rows:
        print(f"| {how} | {survived}/{total} | {_spread(takeovers)} | {_spread(stalls)} |")
    print("\nTheory: a backup takes over after 3 x advbase + advskew/256 = 3.4 s of silence (kill, link on"
          " the LAN; link loss demotes the whole node, so the peer preempts at once on the other vhids),"
          " or at once on a bow-out (stop). Takeover is polled every 0.1 s.")
    return 0


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
