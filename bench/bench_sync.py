"""Benchmark: pfha sync beside conntrackd (FTFW), in the same run, on the same machine.

For each implementation a fresh pair of network namespaces is built: ``gen`` (the master, where
a generator opens short UDP flows: one datagram = one new conntrack entry) and ``peer`` (the
backup, which injects the synced entries into its kernel table), joined by a veth sync link.
conntrackd runs FTFW over UDP with ``DisableExternalCache On`` on the backup (entries go straight
into the kernel, like pfha). A listener in ``peer`` timestamps every entry's arrival in the
kernel: the conntrack timestamp extension (``nf_conntrack_timestamp=1``) stamps every entry when
it is created, by the first packet on the master and by the ctnetlink write on the backup; both
stamps come from the one kernel clock, and are read after the run (no listener competes for CPU).

Figures:
* **rate**: flows offered as fast as the generator goes; states installed on the peer per
  second (first packet to last installation) and the share that arrived;
* **burst capacity**: 20,000 flows made while the master's daemon is stopped (SIGSTOP; their
  events wait in its netlink queue), then it is resumed: states installed per second from the
  resume. This is the daemons' own capacity, not the generator's;
* **latency**: 2,000 flows/s for 2 s; creation on the master -> installation on the peer,
  p50 / p99 / max;
* **memory**: resident memory of each daemon after 100,000 synced states, minus before.

Each implementation runs ``BENCH_SYNC_ROUNDS`` times (default 2), in alternating order, one
column per run: the machine is shared and its load drifts. Prints a Markdown table; exits 0 (also when not root: it says why). Run: ``python bench/bench_sync.py``
(as root). Touches only namespaces it creates.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
PY = sys.executable
KEY = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"


def flow_address(i: int) -> tuple[str, int]:
    return f"10.99.{(i >> 8) & 255}.{i & 255}", 1000 + (i >> 16)


# --- helpers run inside the namespaces -------------------------------------------------------
def generate(rate: float, count: int, start: int, out: str) -> None:
    """One UDP datagram per flow; writes the send time of each flow (CLOCK_MONOTONIC)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("10.97.0.1", 0))
    times = []
    t0 = time.monotonic()
    for n in range(count):
        if rate:
            due = t0 + n / rate
            while (now := time.monotonic()) < due:
                time.sleep(min(due - now, 0.001))
        times.append(time.monotonic())
        try:
            sock.sendto(b"x", flow_address(start + n))
        except OSError:
            times[-1] = -1.0
    Path(out).write_text(json.dumps({"start": start, "times": times}))


def kernel_times(out: str) -> None:
    """Creation time of every benchmark flow's conntrack entry in this namespace: the kernel's
    own timestamp (``nf_conntrack_timestamp``, ns, CLOCK_REALTIME), set when the entry is made,
    whether by a packet (master) or by a ctnetlink write (backup)."""
    from pfha.sync import conntrack

    table = conntrack.KernelTable()
    table.sock.send(conntrack.dump_request(1))
    buf = bytearray(1 << 20)
    starts: dict[int, int] = {}
    done = False
    while not done:
        size = table.sock.recv_into(buf)
        off = 0
        while off + 16 <= size:
            length, msg_type = struct.unpack_from("=IH", buf, off)
            if msg_type == conntrack.NLMSG_DONE or length < 16:
                done = True
                break
            top = conntrack._attrs(buf, off + 20, off + length)
            if 20 in top and conntrack.CTA_TUPLE_ORIG in top:
                _, _, dst, _, dport = conntrack._tuple(buf, buf[off + 16], top[conntrack.CTA_TUPLE_ORIG])
                stamp = conntrack._attrs(buf, *top[20])
                if dst[:2] == b"\x0a\x63" and 1 in stamp:
                    index = (dport - 1000) << 16 | dst[2] << 8 | dst[3]
                    starts[index] = struct.unpack_from("!Q", buf, stamp[1][0])[0]
            off += (length + 3) & ~3
    Path(out).write_text(json.dumps(starts))


# --- the bench ---------------------------------------------------------------------------------
def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


CONNTRACKD_CONF = """Sync {{
	Mode FTFW {{
		DisableExternalCache On
	}}
	UDP {{
		IPv4_address {local}
		IPv4_Destination_Address {peer}
		Port 3780
		Interface sync0
		SndSocketBuffer 8388608
		RcvSocketBuffer 8388608
		Checksum on
	}}
}}
General {{
	HashSize 65536
	HashLimit 524288
	LogFile {dir}/{name}.log
	Syslog off
	LockFile {dir}/{name}.lock
	UNIX {{
		Path {dir}/{name}.ctl
	}}
	NetlinkBufferSize 33554432
	NetlinkBufferSizeMaxGrowth 67108864
	Filter From Userspace {{
		Protocol Accept {{
			UDP
			TCP
		}}
		Address Ignore {{
			IPv4_address 127.0.0.1
			IPv4_address 10.96.0.0/24
		}}
	}}
}}
"""


# conntrackd 1.4.7 puts itself into SCHED_RR at priority 99 by default (its `Scheduler` section
# unset: `ps -o cls,rtprio` shows RR 99): on a loaded machine it then preempts every ordinary
# process, while a daemon under SCHED_OTHER gets its fair share only. So both implementations run
# in one class: "rr" (conntrackd's default, the default here) or "other" (both demoted).
SCHED = os.environ.get("BENCH_SYNC_SCHED", "rr")


def set_scheduling(procs) -> None:
    policy, priority = (os.SCHED_RR, 99) if SCHED == "rr" else (os.SCHED_OTHER, 0)
    for proc in procs:
        os.sched_setscheduler(proc.pid, policy, os.sched_param(priority))


class Pair:
    def __init__(self, lab, tmp: Path, impl: str) -> None:
        self.lab, self.tmp, self.impl = lab, tmp, impl
        self.gen, self.peer = lab.ns("gen"), lab.ns("peer")
        lab.link(self.gen, "sync0", self.peer, "sync0")
        self.gen.exec("ip", "addr", "add", "10.96.0.1/24", "dev", "sync0")
        self.peer.exec("ip", "addr", "add", "10.96.0.2/24", "dev", "sync0")
        g = self.gen
        g.exec("ip", "link", "add", "gen0", "type", "veth", "peer", "name", "gen0p")
        g.exec("ip", "addr", "add", "10.98.0.1/24", "dev", "gen0")
        g.exec("ip", "addr", "add", "10.97.0.1/24", "dev", "gen0")
        g.exec("ip", "link", "set", "gen0", "up")
        g.exec("ip", "link", "set", "gen0p", "up")
        g.exec("ip", "neigh", "add", "10.98.0.2", "lladdr", "02:00:00:00:00:02", "dev", "gen0", "nud", "permanent")
        g.exec("ip", "route", "add", "10.99.0.0/16", "via", "10.98.0.2", "dev", "gen0")
        # the data plane's mark: states "pf" created (pf-semantics.md §3.2), so pfha syncs them
        g.exec("nft", "-f", "-", input="table inet bench {\n chain out {\n  type filter hook output priority filter;\n"
                                       "  ct state new ct mark set 0x00000101\n }\n}\n")
        self.peer.exec("nft", "-f", "-", input="table inet bench {\n chain in {\n  type filter hook input priority filter;\n"
                                                "  ct state new counter\n }\n}\n")
        for ns in (self.gen, self.peer):
            ns.sysctl("net.netfilter.nf_conntrack_udp_timeout", 600)
            ns.sysctl("net.netfilter.nf_conntrack_udp_timeout_stream", 600)
            ns.sysctl("net.netfilter.nf_conntrack_timestamp", 1)
        self.daemons: dict[str, subprocess.Popen] = {}
        self.next_flow = 0

    def start(self) -> None:
        if self.impl.startswith("pfha"):
            (self.tmp / "key").write_text(KEY)
            os.chmod(self.tmp / "key", 0o600)
            # "pfha@DIR": the pfha of another checkout (e.g. the previous version, for before/after)
            source = Path(self.impl.partition("@")[2] or REPO) / "src"
            env = dict(os.environ, PYTHONPATH=str(source))
            for name, ns in (("peer", self.peer), ("gen", self.gen)):
                self.daemons[name] = ns.popen(
                    PY, "-m", "pfha.cli.main", "sync", "run", "--dev", "sync0", "--key-file", str(self.tmp / "key"),
                    "--status-file", str(self.tmp / f"{name}.json"), "--bulk-retry", "0.5", "--bulk-tries", "2", *os.environ.get("BENCH_SYNC_ARGS", "").split(),
                    env=env, stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{name}.log", "w"))
        else:
            for name, ns, local, peer in (("peer", self.peer, "10.96.0.2", "10.96.0.1"),
                                          ("gen", self.gen, "10.96.0.1", "10.96.0.2")):
                conf = self.tmp / f"ctd-{name}.conf"
                conf.write_text(CONNTRACKD_CONF.format(local=local, peer=peer, dir=self.tmp, name=f"ctd-{name}"))
                self.daemons[name] = ns.popen("conntrackd", "-C", str(conf), stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL)
        time.sleep(2.0)
        for name, proc in self.daemons.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{self.impl} {name} exited at start")
        set_scheduling(self.daemons.values())

    def times(self, ns) -> dict[int, int]:
        out = self.tmp / "times.json"
        ns.exec(PY, __file__, "times", str(out), timeout=120)
        return {int(k): v for k, v in json.loads(out.read_text()).items()}

    def run_flows(self, rate: float, count: int, drain: float = 2.0, burst: bool = False) -> dict:
        """Offer ``count`` flows at ``rate`` (0: as fast as possible), wait until the backup's
        table stops growing, then compare the kernels' creation timestamps flow by flow.

        ``burst``: the master's daemon is stopped (SIGSTOP) while the flows are made, so their
        events wait in its netlink queue, then resumed: the rate is then the daemons' own
        capacity, measured from the resume, whatever the generator manages."""
        out_g = self.tmp / "flows-sent.json"
        cpu0 = {n: cpu_s(p.pid) for n, p in self.daemons.items()}
        start = self.next_flow
        self.next_flow += count
        if burst:
            self.daemons["gen"].send_signal(signal.SIGSTOP)
        self.gen.exec(PY, __file__, "gen", str(rate), str(count), str(start), str(out_g), timeout=600)
        resumed_ns = time.time_ns()
        if burst:
            self.daemons["gen"].send_signal(signal.SIGCONT)
        sent = [t for t in json.loads(out_g.read_text())["times"] if t > 0]
        deadline = time.monotonic() + 90
        last, still = -1, 0.0
        while time.monotonic() < deadline:
            time.sleep(0.25)
            n = int(self.peer.exec("conntrack", "-C").stdout.strip() or 0)
            if n == last:
                still += 0.25
                if still >= drain or n >= self.next_flow:
                    break
            else:
                last, still = n, 0.0
        cpu1 = {n: cpu_s(p.pid) for n, p in self.daemons.items()}
        created, installed = self.times(self.gen), self.times(self.peer)
        flows = [i for i in range(start, start + count) if i in created]
        latencies = sorted((installed[i] - created[i]) / 1e6 for i in flows if i in installed)
        arrived = [installed[i] for i in flows if i in installed]
        first = resumed_ns if burst else min(created[i] for i in flows)
        span = (max(arrived) - first) / 1e9 if arrived else 0.0

        def pct(q: float) -> float | None:
            return latencies[min(int(len(latencies) * q), len(latencies) - 1)] if latencies else None

        return {"offered": count, "offered_rate": len(sent) / (max(sent) - min(sent) or 1e-9),
                "created": len(flows), "installed": len(arrived),
                "rate": len(arrived) / span if span else 0.0,
                "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": latencies[-1] if latencies else None,
                "cpu_s": {n: round(cpu1[n] - cpu0[n], 2) for n in cpu0}}

    def rss(self) -> dict[str, int]:
        return {n: rss_kib(p.pid) for n, p in self.daemons.items()}

    def stop(self) -> None:
        for proc in self.daemons.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def bench(impl: str) -> dict:
    from pfha.lab.netns import Lab

    tmp = Path(tempfile.mkdtemp(prefix=f"bench-sync-{impl.partition('@')[0]}-"))
    try:
        with Lab(prefix="bs") as lab:
            pair = Pair(lab, tmp, impl)
            pair.start()
            rss0 = pair.rss()
            latency = pair.run_flows(2000, 4000)
            rate = pair.run_flows(0, 40000)
            burst = pair.run_flows(0, 20000, burst=True)
            remaining = 100_000 - pair.next_flow
            pair.run_flows(0, remaining, drain=2.0)
            installed = int(pair.peer.exec("conntrack", "-C").stdout.strip() or 0)
            rss1 = pair.rss()
            statuses = {n: json.loads((tmp / f"{n}.json").read_text()) for n in ("gen", "peer")
                        if (tmp / f"{n}.json").exists()}
            pair.stop()
            return {"latency": latency, "rate": rate, "burst": burst, "states": installed, "status": statuses,
                    "rss_kib_per_100k": {n: round((rss1[n] - rss0[n]) * 100_000 / max(installed, 1))
                                         for n in rss0}}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def table(results: dict) -> str:
    rows = ["| | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]

    def row(label, fn):
        rows.append(f"| {label} | " + " | ".join(fn(r) for r in results.values()) + " |")

    row("new states synced per second (flows offered at max rate)",
        lambda r: f"{r['rate']['rate']:,.0f}/s ({r['rate']['installed']:,} of {r['rate']['created']:,} "
                  f"offered at {r['rate']['offered_rate']:,.0f}/s)")
    row("burst capacity: 20,000 new states queued while the master daemon is stopped, then resumed",
        lambda r: f"{r['burst']['rate']:,.0f}/s ({r['burst']['installed']:,} of {r['burst']['created']:,})")
    row("CPU per state in the burst, master / backup daemon (user+system; what the machine's load does not change)",
        lambda r: f"{r['burst']['cpu_s']['gen'] * 1e6 / max(r['burst']['installed'], 1):.1f} / "
                  f"{r['burst']['cpu_s']['peer'] * 1e6 / max(r['burst']['installed'], 1):.1f} µs")
    row("CPU seconds in the max-rate run (master / backup daemon)",
        lambda r: f"{r['rate']['cpu_s']['gen']} / {r['rate']['cpu_s']['peer']}")
    row("states per CPU-second in that run (master / backup; independent of the machine's load)",
        lambda r: f"{r['rate']['installed'] / max(r['rate']['cpu_s']['gen'], 0.01):,.0f} / "
                  f"{r['rate']['installed'] / max(r['rate']['cpu_s']['peer'], 0.01):,.0f}")
    row("latency creation -> installation, p50 (2,000 flows/s)", lambda r: f"{r['latency']['p50_ms']:.1f} ms")
    row("latency p99", lambda r: f"{r['latency']['p99_ms']:.1f} ms")
    row("latency max", lambda r: f"{r['latency']['max_ms']:.1f} ms")
    row("states installed at that rate", lambda r: f"{r['latency']['installed']:,} of {r['latency']['created']:,}")
    row("memory per 100,000 states, master daemon (RSS growth)",
        lambda r: f"{r['rss_kib_per_100k']['gen'] / 1024:.1f} MiB")
    row("memory per 100,000 states, backup daemon (RSS growth)",
        lambda r: f"{r['rss_kib_per_100k']['peer'] / 1024:.1f} MiB")
    return "\n".join(rows)


def summary(results: dict, impls: list[str]) -> str:
    """Medians over the rounds per implementation, and each one's ratio to conntrackd's."""
    def median(values: list[float]) -> float:
        values = sorted(values)
        mid = len(values) // 2
        return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2

    figures = {
        "burst capacity (states/s)": lambda r: r["burst"]["rate"],
        "max-rate run (states/s)": lambda r: r["rate"]["rate"],
        "burst CPU per state, master (µs)": lambda r: r["burst"]["cpu_s"]["gen"] * 1e6 / max(r["burst"]["installed"], 1),
        "burst CPU per state, backup (µs)": lambda r: r["burst"]["cpu_s"]["peer"] * 1e6 / max(r["burst"]["installed"], 1),
        "latency p99 (ms)": lambda r: r["latency"]["p99_ms"],
    }
    medians = {impl: {name: median([fn(r) for label, r in results.items() if label.rpartition(" (")[0] == impl
                                    or label == impl]) for name, fn in figures.items()} for impl in impls}
    rows = ["| median of the rounds | " + " | ".join(impls) + " |", "|---|" + "---|" * len(impls)]
    for name in figures:
        cells = []
        for impl in impls:
            value = medians[impl][name]
            cell = f"{value:,.1f}" if value < 100 else f"{value:,.0f}"
            base = medians.get("conntrackd", {}).get(name)
            if impl != "conntrackd" and base:
                cell += f" ({value / base:.2f}x conntrackd)"
            cells.append(cell)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> int:
    if os.geteuid() != 0:
        print("bench_sync: skipped: needs root (network namespaces, conntrack)")
        return 0
    impls = os.environ.get("BENCH_SYNC_IMPLS", "pfha conntrackd").split()
    if "conntrackd" in impls and shutil.which("conntrackd") is None:
        print("bench_sync: conntrackd not installed; pfha only")
        impls.remove("conntrackd")
    rounds = int(os.environ.get("BENCH_SYNC_ROUNDS", "2"))
    results = {}
    for n in range(rounds):  # alternate the order: the machine's load drifts during a run
        for impl in impls if n % 2 == 0 else impls[::-1]:
            results[f"{impl} ({n + 1})" if rounds > 1 else impl] = bench(impl)
    print(f"Both daemons of each pair scheduled {'SCHED_RR 99' if SCHED == 'rr' else 'SCHED_OTHER'} "
          f"(BENCH_SYNC_SCHED={SCHED}).")
    print()
    print(table(results))
    if rounds > 1:
        print()
        print(summary(results, impls))
    if "--json" in sys.argv:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "gen":
        generate(float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "times":
        kernel_times(sys.argv[2])
    else:
        sys.exit(main())
