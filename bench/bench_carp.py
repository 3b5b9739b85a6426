"""CARP failover time, pfha beside ucarp and keepalived, as the client sees it (carp.md §7).

Per trial: a switch (bridge) with nodes A (preferred) and B and a client C, all in fresh network
namespaces; start the daemon on A and B, wait until only A holds the shared address, ping it
from C every 10 ms, and after a random 2-3 s (a random point of the advert cycle) fail A:

* ``linkcut``: A's switch port goes down (a cable pull);
* ``kill9``: SIGKILL to A's daemon (a crash; the address stays on A, which no longer answers
  for it once B's gratuitous ARP has moved the client);
* ``stop``: SIGTERM to A's daemon (orderly stop: pfha bows out, keepalived sends priority 0,
  ucarp just runs its down script).

Outage = the largest gap between consecutive echo replies that ends after the failure (10 ms
resolution). Prints a Markdown table of min / median / max per daemon, timers and failure, and
exits 0. Needs root (skips with a note otherwise). ``--quick`` runs 2 trials instead of 8.
Everything runs in namespaces it made; every process is stopped by pid; the lab is removed.
"""

from __future__ import annotations

import argparse
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from pfha.carp.testbed import CarpBed, Daemon, wait_for  # noqa: E402
from pfha.lab.netns import Lab, kill_all  # noqa: E402

VIP = "10.99.0.100"
SCENARIOS = ("linkcut", "kill9", "stop")


@dataclass(frozen=True)
class Setup:
    daemon: str
    timers: str
    start: Callable[[CarpBed, str, bool], Daemon]  # (bed, host, preferred) -> daemon
    master_down: float  # B's nominal master-down, seconds (theory column)
    settle: float  # how long until A is master, worst case


def _pfha(advbase: int, skews: tuple[int, int]) -> Callable[[CarpBed, str, bool], Daemon]:
    def start(bed: CarpBed, host: str, preferred: bool) -> Daemon:
        skew = skews[0] if preferred else skews[1]
        return bed.pfha(host, "--dev", "eth0", "--vhid", "1", "--pass", "secretpass", "--advbase", str(advbase),
                        "--advskew", str(skew), "--preempt", VIP)
    return start


def _ucarp(bed: CarpBed, host: str, preferred: bool) -> Daemon:
    return bed.ucarp(host, advbase=1, advskew=0 if preferred else 100, preempt=True)


def _keepalived(version: int, interval: float) -> Callable[[CarpBed, str, bool], Daemon]:
    def start(bed: CarpBed, host: str, preferred: bool) -> Daemon:
        return bed.keepalived(host, priority=200 if preferred else 100, version=version, advert_int=interval)
    return start


SETUPS = [
    Setup("pfha", "advbase 1, advskew 0 / 100", _pfha(1, (0, 100)), 3 + 100 / 256, 4.5),
    Setup("ucarp", "advbase 1, advskew 0 / 100", _ucarp, 3 + 100 / 256, 5.5),
    Setup("keepalived", "VRRPv2 advert_int 1, prio 200 / 100", _keepalived(2, 1), 3 + 156 / 256, 5.0),
    Setup("pfha", "advbase 0, advskew 26 / 27 (0.10 s)", _pfha(0, (26, 27)), 3 * 27 / 256, 1.5),
    Setup("keepalived", "VRRPv3 advert_int 0.1, prio 200 / 100", _keepalived(3, 0.1), 0.3 + 156 * 0.1 / 256, 1.5),
    Setup("pfha", "advbase 0, advskew 13 / 14 (0.05 s)", _pfha(0, (13, 14)), 3 * 14 / 256, 1.5),
]

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from")
_GARP = re.compile(r"^(\d+\.\d+) (\S+) > .*Request who-has 10\.99\.0\.100 (\(\S+\) )?tell 10\.99\.0\.100")


def first_garp(tcpdump_output: str, mac: str, failed_at: float) -> float | None:
    """Seconds from the failure to the first gratuitous ARP for the VIP from ``mac``."""
    for line in tcpdump_output.splitlines():
        m = _GARP.match(line)
        if m and m.group(2).lower() == mac and float(m.group(1)) >= failed_at:
            return float(m.group(1)) - failed_at
    return None


def outage(ping_output: str, failed_at: float) -> float | None:
    """Largest gap (s) between consecutive replies that ends after ``failed_at``; None if none came back."""
    times = [float(m.group(1)) for m in map(_REPLY.match, ping_output.splitlines()) if m]
    gaps = [b - a for a, b in zip(times, times[1:]) if b > failed_at]
    return max(gaps) if gaps else None


def baseline(ping_output: str, failed_at: float) -> float:
    """Largest gap between replies *before* the failure: the noise floor of the measurement."""
    times = [float(m.group(1)) for m in map(_REPLY.match, ping_output.splitlines()) if m]
    gaps = [b - a for a, b in zip(times, times[1:]) if b <= failed_at]
    return max(gaps) if gaps else 0.0


def reset(bed: CarpBed) -> None:
    """Between trials: every daemon gone, no VIP anywhere, every port up."""
    bed.close()
    for name in ("a", "b"):
        kill_all(bed.hosts[name], grace=1.0)
        bed.hosts[name].exec("ip", "addr", "del", f"{VIP}/24", "dev", "eth0", check=False)
        bed.set_port(name, True)
    wait_for(lambda: "LOWER_UP" in bed.hosts["a"].exec("ip", "link", "show", "eth0").stdout, 3)


def trial(bed: CarpBed, setup: Setup, scenario: str, rng: random.Random) -> tuple[float | None, float | None, float]:
    """(client-seen outage, takeover = failure to B's first gratuitous ARP, noise floor), in seconds."""
    a = setup.start(bed, "a", True)
    time.sleep(0.2)
    b = setup.start(bed, "b", False)
    if not wait_for(lambda: bed.holders(VIP) == ["a"], setup.settle + 5):
        raise RuntimeError(f"{setup.daemon}: A never became the only master\n{a.log_text()[-800:]}\n{b.log_text()[-800:]}")
    time.sleep(1.5)
    if bed.holders(VIP) != ["a"]:
        raise RuntimeError(f"{setup.daemon}: mastership not stable before the failure")
    mac_b = bed.hosts["b"].exec("cat", "/sys/class/net/eth0/address").stdout.strip().lower()
    dump = bed.sw.popen("tcpdump", "-i", "br0", "-n", "-e", "-tt", "-l", "--immediate-mode", "arp",
                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    ping = bed.hosts["c"].popen("ping", "-D", "-n", "-i", "0.01", VIP, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    failed_at = float("inf")
    try:
        time.sleep(rng.uniform(2.0, 3.0))
        failed_at = time.time()
        if scenario == "linkcut":
            bed.set_port("a", False)
        elif scenario == "kill9":
            a.stop(signal.SIGKILL)
        else:
            a.stop(signal.SIGTERM)
        wait_for(lambda: bed.has_addr("b", VIP), setup.master_down + 4)
        time.sleep(0.6)
    finally:
        ping.send_signal(signal.SIGINT)
        out, _ = ping.communicate(timeout=5)
        dump.send_signal(signal.SIGINT)
        arp, _ = dump.communicate(timeout=5)
    return outage(out, failed_at), first_garp(arp, mac_b, failed_at), baseline(out, failed_at)


def fmt(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"{ms[0]:.0f} / {statistics.median(ms):.0f} / {ms[-1]:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials per cell instead of 8")
    parser.add_argument("--trials", type=int, help="trials per cell (default 8, or 2 with --quick)")
    parser.add_argument("--only", help="run only setups whose daemon or timers contain this text")
    parser.add_argument("--scenario", choices=SCENARIOS, action="append", help="only these failures (repeatable)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    trials = args.trials or (2 if args.quick else 8)
    import os

    if os.geteuid() != 0:
        print("CARP failover benchmark skipped: needs root (network namespaces).")
        return 0
    # Stop cleanly (labs removed) on SIGTERM, and on SIGINT even when started in the background.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    rng = random.Random(args.seed)
    setups = [s for s in SETUPS if not args.only or args.only in s.daemon or args.only in s.timers]
    rows = []
    started = time.monotonic()
    for setup in setups:
        with Lab(prefix="bc") as lab:
            bed = CarpBed(lab)
            try:
                for scenario in args.scenario or SCENARIOS:
                    values, takeovers, noise, lost = [], [], [], 0
                    for n in range(trials):
                        try:
                            value, takeover, floor = trial(bed, setup, scenario, rng)
                            noise.append(floor)
                        except RuntimeError as error:
                            print(f"{setup.daemon} {scenario} trial {n}: {error}", file=sys.stderr)
                            value = takeover = None
                        finally:
                            reset(bed)
                        if value is None or takeover is None:
                            lost += 1
                        else:
                            values.append(value)
                            takeovers.append(takeover)
                        print(f"{setup.daemon:10} {setup.timers:40} {scenario:8} {n}: outage "
                              f"{'-' if value is None else f'{value * 1000:.0f} ms'}, takeover "
                              f"{'-' if takeover is None else f'{takeover * 1000:.0f} ms'}", file=sys.stderr, flush=True)
                    rows.append((setup, scenario, values, takeovers, noise, lost))
            finally:
                bed.cleanup()
    print(f"CARP failover as seen by a client pinging the shared address every 10 ms through a bridge; "
          f"{trials} trials per row, outage in ms (min / median / max); "
          f"run took {time.monotonic() - started:.0f} s.\n")
    print("| daemon | timers | failure | ping outage min / median / max (ms) | takeover min / median / max (ms) "
          "| trials | B's master-down (s) | ping noise (ms) |")
    print("| --- | --- | --- | --- | --- | ---: | ---: | ---: |")
    for setup, scenario, values, takeovers, noise, lost in rows:
        cell = fmt(values) if values else "no recovery"
        took = fmt(takeovers) if takeovers else "-"
        count = f"{len(values)}" + (f" (+{lost} failed)" if lost else "")
        floor = f"{statistics.median(noise) * 1000:.0f}" if noise else "-"
        print(f"| {setup.daemon} | {setup.timers} | {scenario} | {cell} | {took} | {count} | {setup.master_down:.3f} | {floor} |")
    print("\n*ping noise* = median over the trials of the largest gap between replies in the 2-3 s "
          "*before* the failure: what the 10 ms ping shows on this shared machine with nothing failing.")
    print("\n*takeover* = failure to B's first gratuitous ARP for the address (tcpdump on the bridge). "
          "After kill -9 the address stays on A, whose kernel keeps answering pings until B's "
          "gratuitous ARP moves the client, so for kill9 the ping outage is near zero and the "
          "takeover column is the figure that counts.")
    print("\nucarp has no sub-second row: with advbase 0 its 1 s libpcap receive lag exceeds the "
          "master-down time and the backup flaps (carp.md §6.2).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
