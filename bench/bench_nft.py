"""Benchmark the kernel data plane: ruleset load times against `nft -f`, forwarding throughput.

Figures (printed as a Markdown table; docs/benchmarks-nft.md keeps a dated copy):

1. compile + load of a generated 10,000-rule pf.conf, as a ratio to `nft -f` loading the very
   same nftables ruleset (the text nft lists after our load) into a fresh namespace;
2. the same for a ruleset whose table holds 100,000 addresses;
3. iperf3 TCP throughput from the LAN to the internet through the tutorial's corrected ruleset
   (NAT + stateful filtering), as a ratio to the same path with no ruleset loaded;
4. (no root needed) CPU seconds of each step before the kernel, as ``pfctl -f`` and the node's
   reloads take them, on bench_conf's two generated 10,000-rule pf.confs: parse, optimize,
   compile, and the JSON text of the batch libnftables is given.

1-3 need root (network namespaces). ``--quick`` shortens the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = Path(os.environ.get("PFHA_SHARED", ROOT.parent / "shared"))
CORRECTED = SHARED / "seed" / "configs" / "corrected" / "pf.conf"

from pfha.lab.netns import Lab  # noqa: E402

LOAD_SNIPPET = """
import json, sys, time
from pfha.conf import parse_text
from pfha.conf.interfaces import InterfaceView
from pfha.nft.compile import compile_ruleset
from pfha.nft import loader
view = InterfaceView.from_specs(["xl0=203.0.113.2/24", "xl1=192.168.1.250/24"])
text = open(sys.argv[1]).read()
t0 = time.perf_counter(); ruleset = parse_text(text, "bench.conf", view)
t1 = time.perf_counter(); compiled = compile_ruleset(ruleset, view)
t2 = time.perf_counter(); loader.load(compiled.commands)
t3 = time.perf_counter()
print(json.dumps({"parse": t1 - t0, "compile": t2 - t1, "load": t3 - t2}))
"""


def rules_conf(count: int) -> str:
    lines = ["block log all"]
    for i in range(count):
        a, b = divmod(i, 250)
        lines.append(f"pass in quick on xl0 inet proto tcp from 10.{a % 250}.{b}.0/24 to 192.168.1.{i % 250 + 1} port {1024 + i % 60000} keep state")
    return "\n".join(lines) + "\n"


def table_conf(count: int) -> str:
    entries = " ".join(f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}" for i in range(count))
    return f"table <big> {{ {entries} }}\nblock in quick on xl0 from <big> to any\npass all\n"


def measure_load(lab: Lab, text: str, env: dict) -> dict:
    ours = lab.ns(f"l{len(lab.namespaces)}")
    theirs = lab.ns(f"l{len(lab.namespaces)}")
    for ns in (ours, theirs):
        ns.exec("ip", "link", "add", "xl0", "type", "veth", "peer", "name", "xl1")
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as conf:
        conf.write(text)
    proc = subprocess.run(ours.argv([sys.executable, "-c", LOAD_SNIPPET, conf.name]), env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode:
        raise RuntimeError(proc.stderr)
    times = json.loads(proc.stdout)
    listed = ours.exec("nft", "list", "table", "inet", "pfha", timeout=600).stdout
    with tempfile.NamedTemporaryFile("w", suffix=".nft", delete=False) as nft:
        nft.write(listed)
    start = time.perf_counter()
    theirs.exec("nft", "-f", nft.name, timeout=1800)
    times["nft_f"] = time.perf_counter() - start
    os.unlink(conf.name)
    os.unlink(nft.name)
    return times


def cpu_median(fn, repeat: int) -> tuple[float, object]:
    """Median CPU seconds of ``repeat`` runs (CPU, not wall: the machine is shared), and the
    last result."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        result = fn()
        times.append(time.process_time() - start)
    return statistics.median(times), result


def compile_rows(repeat: int) -> list[tuple[str, int, float, float, float, float]]:
    """Figure 4: (workload, filter rules, parse, optimize, compile, JSON text) per file."""
    from bench_conf import VIEW, ruleset_text

    from pfha.conf.parser import parse_text
    from pfha.nft.compile import compile_ruleset
    from pfha.nft.loader import batch_text, replace_batch
    from pfha.nft.operate import optimize_for_kernel

    rows = []
    for label, lists in (("one rule per line", False), ("with lists", True)):
        text = ruleset_text(10_000, lists=lists)
        t_parse, ruleset = cpu_median(lambda: parse_text(text, "bench.conf", VIEW), repeat)
        t_opt, (optimized, _) = cpu_median(lambda: optimize_for_kernel(ruleset, VIEW, None, 1), repeat)
        t_compile, compiled = cpu_median(lambda: compile_ruleset(optimized, VIEW), repeat)
        t_json, _text = cpu_median(lambda: batch_text(replace_batch(compiled.commands)), repeat)
        rows.append((f"10,000-rule pf.conf ({label})", len(optimized.filter), t_parse, t_opt, t_compile, t_json))
    return rows


def print_compile_rows(rows) -> None:
    print("| workload (CPU s, median) | filter rules | parse | optimize | compile | JSON batch text | total |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, nrules, parse, opt, comp, text in rows:
        print(f"| {label} | {nrules:,} | {parse:.2f} | {opt:.2f} | {comp:.2f} | {text:.2f} | {parse + opt + comp + text:.2f} |")
    print()


def iperf(bed, seconds: int) -> float:
    server = bed.ext.popen("iperf3", "-s", "-B", "198.51.100.80", "-p", "80", "-1", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = bed.lan.exec("iperf3", "-c", "198.51.100.80", "-p", "80", "-B", "192.168.1.100", "-t", str(seconds), "-J", timeout=seconds + 30).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"]
    finally:
        server.kill()
        server.wait()


def measure_throughput(seconds: int, rounds: int) -> tuple[float, float]:
    from pfha.nft import testbed

    bed = testbed.build("nftb")
    try:
        specs = [f"--if={s}" for s in testbed.VIEW_SPECS]
        plain, filtered = [], []
        for _ in range(rounds):
            bed.pfctl(bed.fw, "-F", "all", check=False)
            plain.append(iperf(bed, seconds))
            bed.pfctl(bed.fw, *specs, "-f", str(CORRECTED))
            filtered.append(iperf(bed, seconds))
        return statistics.median(plain), statistics.median(filtered)
    finally:
        bed.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print_compile_rows(compile_rows(1 if args.quick else 3))
    if os.geteuid() != 0:
        print("| nft benchmark | skipped: needs root |\n|---|---|")
        return 0
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    n_rules = 2000 if args.quick else 10000
    n_table = 20000 if args.quick else 100000
    rows = []
    with Lab(prefix="nftbench") as lab:
        for label, text in ((f"{n_rules} rules", rules_conf(n_rules)), (f"table of {n_table} addresses", table_conf(n_table))):
            t = measure_load(lab, text, env)
            ours = t["compile"] + t["load"]
            rows.append((label, t["parse"], t["compile"], t["load"], t["nft_f"], ours / t["nft_f"]))
    print("| ruleset | parse (s) | compile (s) | load via libnftables JSON (s) | `nft -f` same ruleset (s) | (compile+load) / `nft -f` |")
    print("|---|---|---|---|---|---|")
    for label, parse, comp, load, nft_f, ratio in rows:
        print(f"| {label} | {parse:.2f} | {comp:.2f} | {load:.2f} | {nft_f:.2f} | {ratio:.2f} |")
    print()
    if CORRECTED.exists():
        seconds, rounds = (2, 1) if args.quick else (5, 3)
        plain, filtered = measure_throughput(seconds, rounds)
        print("| forwarding (iperf3, LAN -> internet, TCP) | no ruleset | tutorial ruleset (NAT + states) | ratio (goal >= 0.95) |")
        print("|---|---|---|---|")
        print(f"| Gbit/s, median of {rounds} x {seconds} s | {plain / 1e9:.2f} | {filtered / 1e9:.2f} | {filtered / plain:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
