"""Speed of pfctl's ruleset optimizer, ``pfha.conf.optimize`` (prints a Markdown table, exits 0).

The optimizer runs on every ``pfctl -nvf``/``-f``, ``pfha check``, ``pfha load`` and node
reload; pfctl_optimize.c compares rules pairwise inside each superblock, so one big superblock
is its worst case. Only ``optimize()`` is timed (parsing happens outside the timing), with the
arguments the loaders pass (``optimize_for_kernel``: the view's ``is_group``, a fixed table
identifier instead of a random one, so every run does the same work).

Workloads:
- one superblock of 1,000 / 5,000 / 10,000 rules with nothing in common (``pass in on em0
  proto tcp from <host> to <host> port N``, every address and port different);
- one superblock of 10,000 rules where many differ in exactly one field: runs of rules that
  differ only in the destination (combined into tables), only in the source (tables too), only
  in the port (not combinable), plus copies and narrower copies (removed);
- one superblock of 5,000 rules that differ only in their destination table (none combinable:
  pfctl's combine pass compares them all);
- ``-o profile`` on one superblock of 2,000 quick rules, given the running rules' counters
  (block_feedback: each running rule looks for its equal);
- the two generated 10,000-rule pf.confs of ``bench_conf.py`` (one rule per line, with lists);
- the tutorial's two pf.confs (as published, corrected).

Usage: ``python bench/bench_optimize.py [--quick]`` (``--quick``: one run per workload).
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_conf import VIEW, loop_speed, ruleset_text, timed  # noqa: E402
from pfha.conf import InterfaceView  # noqa: E402
from pfha.conf.optimize import Optimized, default_is_group, optimize  # noqa: E402
from pfha.conf.parser import parse_file, parse_text  # noqa: E402

#: the table identifier the loaders would draw at random (fixed: the same work every run)
IDENTIFIER = 0x5EED1D
_REPO = Path(__file__).resolve().parent.parent
SEED = Path(os.environ.get("PFHA_SHARED", _REPO.parent / "shared")) / "seed" / "configs"
#: the tutorial's primary firewall (tests/unit/test_conf_optimize.py PRIMARY)
PRIMARY = ["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "rl0=10.10.10.250/24",
           "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24", "lo0=127.0.0.1/8"]


def distinct_superblock(n: int, seed: int = 1) -> str:
    """n rules that may all be reordered (same action, no quick, same state) and share no
    address or port: nothing to remove, combine or gather."""
    rnd = random.Random(seed)
    hosts = rnd.sample(range(1 << 24), n)
    lines = []
    for i, h in enumerate(hosts):
        lines.append(f"pass in on em0 proto tcp from 10.{h >> 16}.{(h >> 8) & 255}.{h & 255} "
                     f"to 198.{18 + (i >> 16)}.{(i >> 8) & 255}.{i & 255} port {1 + i}")
    return "\n".join(lines) + "\n"


def one_field_superblock(n: int, seed: int = 2) -> str:
    """About n rules in one superblock, in runs that differ in one field only: destination
    (8 rules: a table), source (8: a table), destination port (4: kept, gathered by port),
    and a rule with a copy and a narrower copy (the copies removed), in shuffled order."""
    rnd = random.Random(seed)
    lines: list[str] = []
    g = 0
    while len(lines) < n:
        g += 1
        a, b = (g >> 8) & 255, g & 255
        port = 1 + g % 60000
        lines.extend(f"pass in on em0 proto tcp from 10.{a}.{b}.1 to 172.16.{a}.{i} port {port}" for i in range(1, 9))
        lines.extend(f"pass in on em0 proto tcp from 10.{a}.{b}.{i + 10} to 172.17.{a}.{b} port {port}"
                     for i in range(8))
        lines.extend(f"pass in on em0 proto udp from 10.{a}.{b}.99 to 172.18.{a}.{b} port {port + i}" for i in range(4))
        wide = f"pass in on em0 proto tcp from 10.{a}.{b}.0/24 to 172.19.{a}.{b} port {port}"
        lines.extend((wide, wide, f"pass in on em0 proto tcp from 10.{a}.{b}.7 to 172.19.{a}.{b} port {port}"))
    del lines[n:]
    rnd.shuffle(lines)
    return "\n".join(lines) + "\n"


def table_superblock(n: int) -> str:
    """n rules that differ only in their destination, each a different table: pfctl's combine
    pass looks at every pair of them (same source, same ports) and can combine none (only
    addresses go into tables)."""
    tables = [f"table <t{i}> {{ 10.{i >> 8}.{i & 255}.0/24 }}" for i in range(n)]
    rules = [f"pass in on em0 proto tcp from any to <t{i}> port 22" for i in range(n)]
    return "\n".join(tables + rules) + "\n"


def workloads() -> list[tuple[str, Callable]]:
    """(name, make) pairs; make() -> (ruleset, view, profile), parsed once, outside any timing
    (profile: the running rules and their packet counts for -o profile, else None)."""
    def text(t: str, view=VIEW):
        return lambda: (parse_text(t, "bench.conf", view), view, None)

    def seed(variant: str):
        view = InterfaceView.from_specs(PRIMARY)
        return lambda: (parse_file(str(SEED / variant / "pf.conf"), view), view, None)

    def profiled(n: int):
        def make():
            quick = distinct_superblock(n).replace("pass in on", "pass in quick on")
            ruleset = parse_text(quick, "bench.conf", VIEW)
            rnd = random.Random(3)  # the running ruleset: the same rules, some with packets
            return ruleset, VIEW, [(rule, rnd.choice((0, 0, 1, 10, 1000))) for rule in ruleset.filter]
        return make

    result = [(f"one superblock, {n:,} rules, nothing in common", text(distinct_superblock(n)))
              for n in (1_000, 5_000, 10_000)]
    result.append(("one superblock, 10,000 rules differing in one field", text(one_field_superblock(10_000))))
    result.append(("one superblock, 5,000 rules to different tables", text(table_superblock(5_000))))
    result.append(("-o profile: one quick superblock, 2,000 rules, with counters", profiled(2_000)))
    result.append(("generated 10,000-rule pf.conf (one rule per line)", text(ruleset_text(10_000, lists=False))))
    result.append(("generated 10,000-rule pf.conf (with lists)", text(ruleset_text(10_000, lists=True))))
    for variant in ("as-published", "corrected"):
        if (SEED / variant / "pf.conf").exists():
            result.append((f"tutorial pf.conf ({variant})", seed(variant)))
    return result


def run_optimize(ruleset, view, profile=None) -> Optimized:
    """What pfha.nft.operate.optimize_for_kernel does, the identifier fixed."""
    return optimize(ruleset, "basic" if profile is None else "profile", is_group=default_is_group(view),
                    identifier=IDENTIFIER, profile=profile)


def main(argv: list[str]) -> int:
    quick = "--quick" in argv
    repeat = 1 if quick else 5
    print("| workload | filter rules in | rules out | tables made | CPU seconds (median) | rules/s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, make in workloads():
        ruleset, view, profile = make()
        result = run_optimize(ruleset, view, profile)
        n = len(ruleset.filter)
        seconds = timed(lambda: run_optimize(ruleset, view, profile), repeat)
        print(f"| {name} | {n:,} | {len(result.ruleset.filter):,} | {len(result.tables):,} | "
              f"{seconds:.3f} | {n / seconds if seconds else float('inf'):,.0f} |")
    print()
    print(f"machine pace: an empty 1,000,000-iteration loop takes {loop_speed() * 1e3:.0f} ms of CPU "
          f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
