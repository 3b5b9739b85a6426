"""Parse+print speed of pfha's pf.conf front end (prints a Markdown table, exits 0).

Workloads:
- two generated 10,000-rule pf.confs (macros, ports by name and operator, tables, nat/rdr,
  labels, flags, state options; the second also with lists that expand), parsed into a
  Ruleset and printed as ``pfctl -nv`` would;
- a table of 100,000 addresses, inline and loaded with ``file``.
Goal (issue 2): >= 50,000 rules/s parse+print.
"""

from __future__ import annotations

import gc
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pfha.conf import InterfaceView  # noqa: E402
from pfha.conf.parser import parse_file, parse_text  # noqa: E402
from pfha.conf.printer import format_ruleset  # noqa: E402
from pfha.conf.ast import ANY_ENDPOINT, Endpoint, HostMatch  # noqa: E402
from pfha.conf.lexer import _PLAIN_RE  # noqa: E402

VIEW = InterfaceView.from_specs(["em0=192.0.2.1/24", "em1=10.0.0.1/16", "lo0=127.0.0.1/8"])


def ruleset_text(n: int, seed: int = 1, lists: bool = False) -> str:
    """About n rules after expansion: a mix of what real rulesets hold.

    ``lists=False``: one rule per line (six shapes: quick pass to a port name, block with a
    ``$nr`` label, udp with a port operator, ``$if:network`` to a table with flags and
    modulate state, rdr with ports, inet6 with state options). ``lists=True`` adds six shapes
    that expand: host and port lists (``!``, a list macro), icmp-type lists, interface and
    protocol lists, user lists with synproxy and a tag, ``log (all)``, overload tables: half
    the lines, and about three quarters of the rules, come from lists.
    """
    rnd = random.Random(seed)
    lines = [
        'ext_if = "em0"',
        'int_if = "em1"',
        'web = "{ www, https }"',
        "table <bad> persist { 198.51.100.0/24 203.0.113.7 }",
        "set block-policy drop",
        "set skip on lo0",
        "scrub in all",
        "nat on $ext_if from $int_if:network to any -> ($ext_if)",
        "block log all",
    ]
    count = 1
    services = ["ssh", "smtp", "domain", "http", "https", "ntp", "imaps", "8080", "3128"]
    kinds = 12 if lists else 6
    i = 0
    while count < n:
        i += 1
        a, b = rnd.randrange(256), rnd.randrange(256)
        kind = i % kinds
        rules = 1
        if kind == 0:
            lines.append(f"pass in quick on $ext_if inet proto tcp from any to 192.0.2.{a} port {rnd.choice(services)} keep state")
        elif kind == 1:
            lines.append(f"block in quick on $ext_if from 10.{a}.{b}.0/24 to any label \"r$nr\"")
        elif kind == 2:
            lines.append(f"pass out on $int_if proto udp from 10.0.{a}.{b} port > 1023 to any port domain")
        elif kind == 3:
            lines.append(f"pass in on $int_if inet proto tcp from $int_if:network to <bad> port {1024 + i % 60000} flags S/SA modulate state")
        elif kind == 4:
            lines.append(f"rdr on $ext_if proto tcp from any to 192.0.2.{a} port {2000 + i % 60000} -> 10.0.{a}.{b} port 80")
        elif kind == 5:
            lines.append(f"pass in log on $ext_if inet6 proto tcp from 2001:db8::{a:x}:{b:x} to any port ssh keep state (max 100, source-track rule, max-src-conn 10)")
        elif kind == 6:
            lines.append(f"pass in on $ext_if proto tcp from {{ 198.51.{a}.{b}, ! 198.51.{b}.{a} }} to ($ext_if) port $web")
            rules = 4
        elif kind == 7:
            lines.append(f"block return in on ! $int_if inet proto icmp from any to 10.{a}.{b}.0/24 icmp-type {{ echoreq, unreach }}")
            rules = 2
        elif kind == 8:
            lines.append(f"pass out quick on {{ $ext_if $int_if }} proto {{ tcp udp }} to 10.{b}.{a}.1 port {rnd.choice(services)}")
            rules = 4
        elif kind == 9:
            lines.append(f"pass in on $int_if proto tcp from 10.0.{a}.{b} to any port {1024 + a}:{2048 + b} user {{ root, 1000 }} flags S/SA synproxy state tag \"t$nr\"")
            rules = 2
        elif kind == 10:
            lines.append(f"block in log (all) quick on $ext_if proto tcp from <bad> to 192.0.2.{a} port {{ {1 + b} {1024 + a} }}")
            rules = 2
        else:
            lines.append(f"pass in on $ext_if inet proto tcp from any to 192.0.2.{a} port {{ 22, 443 }} keep state (max-src-conn-rate 10/5, overload <bad> flush global)")
            rules = 2
        count += rules
    return "\n".join(lines) + "\n"


def timed(fn, repeat: int = 5) -> float:
    """Median CPU seconds of a few runs: CPU time, not wall time, because the machine is shared
    (the median, not the best: the best of a few runs on a busy machine flatters)."""
    times = []
    for _ in range(repeat):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def _rebuild_plan(ruleset) -> list[tuple[type, dict, tuple | None, tuple | None]]:
    """Each rule's class, its fields that differ from the defaults (sides apart), and the
    values its two sides are made of: what any parser must end up constructing."""
    plan = []
    for rule in [*ruleset.scrub, *ruleset.translation, *ruleset.filter]:
        fields = {}
        for name in rule.__dataclass_fields__:
            value = getattr(rule, name)
            default = rule.__dataclass_fields__[name].default
            if name not in ("src", "dst") and value != default:
                fields[name] = value
        sides = tuple(
            None if side is ANY_ENDPOINT else (side.host.address, side.host.negated, side.port, side.os)
            for side in (rule.src, rule.dst)
        )
        plan.append((type(rule), fields, *sides))
    return plan


def _rebuild(plan) -> list:
    out = []
    for cls, fields, src, dst in plan:
        if src is not None:
            fields["src"] = Endpoint(HostMatch(src[0], src[1]), src[2], src[3])
        if dst is not None:
            fields["dst"] = Endpoint(HostMatch(dst[0], dst[1]), dst[2], dst[3])
        out.append(cls(**fields))
    return out


def ceiling(text: str, ruleset) -> list[tuple[str, float]]:
    """What parse+print costs with no grammar at all: the floor of this design on this machine.

    Three steps any parser of this AST and printer must take, each timed alone: split every
    line into token texts with the lexer's own regular expression (no token objects, no kinds,
    no macros), construct each rule's objects from values already known (its two sides and the
    rule from its non-default fields, the cheapest construction the frozen AST allows; no
    checks, no address parsing, no list expansion), and print the ruleset. The grammar, every
    check pfctl makes, macro expansion and address parsing all come on top of this.
    """
    lines = text.split("\n")
    plan = _rebuild_plan(ruleset)
    gc.disable()  # as the parser runs: the collector is paused while it builds
    try:
        t_tokens = timed(lambda: [_PLAIN_RE.findall(line) for line in lines])
        t_build = timed(lambda: _rebuild(plan))
        t_print = timed(lambda: format_ruleset(ruleset))
    finally:
        gc.enable()
    return [("split into tokens", t_tokens), ("construct the rules", t_build), ("print", t_print)]


def loop_speed() -> float:
    """CPU seconds of an empty one-million-iteration Python loop: this machine's pace."""
    def spin() -> None:
        for _ in range(1_000_000):
            pass
    return timed(spin)


def main() -> int:
    rows = []
    floors = []
    for label, lists in (("one rule per line", False), ("with lists", True)):
        text = ruleset_text(10_000, lists=lists)
        ruleset = parse_text(text, "bench.conf", VIEW)
        nrules = len(ruleset.filter) + len(ruleset.translation) + len(ruleset.scrub)
        t_parse = timed(lambda: parse_text(text, "bench.conf", VIEW))
        t_print = timed(lambda: format_ruleset(ruleset))
        t_both = t_parse + t_print
        rows.append((f"10,000-rule pf.conf ({label}): parse", nrules, t_parse, nrules / t_parse))
        rows.append((f"10,000-rule pf.conf ({label}): print (pfctl -nv)", nrules, t_print, nrules / t_print))
        rows.append((f"10,000-rule pf.conf ({label}): parse+print", nrules, t_both, nrules / t_both))
        steps = ceiling(text, ruleset)
        floors.append((label, nrules, steps, t_both))

    rnd = random.Random(2)
    addrs = [f"10.{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(256)}" for _ in range(100_000)]
    table_text = "table <big> persist { " + " ".join(addrs) + " }\npass in from <big> to any\n"
    t_table = timed(lambda: format_ruleset(parse_text(table_text, "table.conf", VIEW)), repeat=1)
    rows.append(("100,000-address table inline: parse+print", 100_000, t_table, 100_000 / t_table))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.txt"
        path.write_text("\n".join(addrs) + "\n")
        conf = Path(tmp) / "pf.conf"
        conf.write_text(f'table <big> persist file "{path}"\npass in from <big> to any\n')
        t_file = timed(lambda: format_ruleset(parse_file(conf, VIEW)), repeat=1)
        rows.append(("100,000-address table from file: parse+print", 100_000, t_file, 100_000 / t_file))

    print("| workload | items | CPU seconds | items/s |")
    print("|---|---:|---:|---:|")
    for name, items, seconds, rate in rows:
        print(f"| {name} | {items:,} | {seconds:.3f} | {rate:,.0f} |")
    print()
    print("Ceiling of this design: no grammar at all (see ceiling()); microseconds per rule")
    print()
    print("| workload | split into tokens | construct the rules | print | sum | ceiling rules/s | parse+print now |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for label, nrules, steps, t_both in floors:
        per = [seconds / nrules * 1e6 for _, seconds in steps]
        total = sum(seconds for _, seconds in steps)
        print(f"| {label} | {per[0]:.1f} | {per[1]:.1f} | {per[2]:.1f} | {sum(per):.1f} | "
              f"{nrules / total:,.0f} | {nrules / t_both:,.0f} |")
    print()
    print(f"machine pace: an empty 1,000,000-iteration loop takes {loop_speed() * 1e3:.0f} ms of CPU")
    print()
    for row, (_, nrules, steps, _) in zip((rows[2], rows[5]), floors):
        rate = row[3]
        ceiling_rate = nrules / sum(seconds for _, seconds in steps)
        print(f"goal >= 50,000 rules/s, {row[0]}: {'met' if rate >= 50_000 else 'NOT met'} ({rate:,.0f} rules/s; "
              f"ceiling of this design {ceiling_rate:,.0f}; Python {sys.version.split()[0]}, {os.cpu_count()} CPUs shared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
