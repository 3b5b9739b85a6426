"""``pfha test``: ask the reference engine what pf does with packets written like rules.

    pfha test -f pf.conf --if xl0=203.0.113.2/24 "in on xl0 proto tcp from 198.51.100.9 \
        port 40000 to 203.0.113.11 port 80 flags S"
    pfha test -f pf.conf --scenario conversation.txt --json

All packets of one invocation share one state table, evaluated in order, so a conversation can
be traced across interfaces (in on xl0, out on xl1, the reply in on xl1, out on xl0).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Iterable

from pfha.errors import PfhaError
from pfha.textfile import read_text

NAME = "test"
HELP = "show what pf does with packets (action, rule, translation, state, log) using the reference engine"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, metavar="PF.CONF", help="the pf.conf to load")
    parser.add_argument("--if", dest="interfaces", action="append", default=[], metavar="NAME=CIDR[,CIDR...]",
                        help="an interface and its addresses (repeatable; default: this host's interfaces)")
    parser.add_argument("--scenario", metavar="FILE", help="packets, one per line ('#' comments)")
    parser.add_argument("--json", action="store_true", help="one JSON object per packet")
    parser.add_argument("--seed", type=int, default=0, help="seed for random choices (nat ports, ISNs)")
    parser.add_argument("--states", action="store_true", help="print the state table at the end")
    parser.add_argument("--counters", action="store_true", help="print per-rule counters at the end (pfctl -vsr)")
    parser.add_argument("-o", "--optimize", metavar="LEVEL", type=_level, default=None,
                        help="ruleset optimization as pfctl -o (none, basic, profile; default: the file's "
                             "'set ruleset-optimization', else basic): rule numbers are the kernel's")
    parser.add_argument("packets", nargs="*", metavar="PACKET",
                        help='e.g. "in on xl0 proto tcp from 198.51.100.9 port 40000 to 203.0.113.11 port 80 flags S"')


def _level(text: str) -> str:
    from pfha.cli.commands.check import _level as level

    return level(text)


def load_engine(path: str, specs: list[str], seed: int, level: str | None = None):
    """Parse ``path`` with the given ``--if`` specs (or the live host) and build an engine.

    The ruleset is optimized as pfctl loads it (conf.optimize; ``level`` None: the file's
    ``set ruleset-optimization``, else basic), so the engine's rule numbers are the ones the
    kernel and pflog report. -o profile has no running counters here: it acts as basic."""
    from pfha.warning_groups import print_warnings
    from pfha.conf import InterfaceView, parse_file
    from pfha.conf.live import system_resolver
    from pfha.conf.optimize import default_is_group, optimize
    from pfha.engine import Engine

    view = InterfaceView.from_specs(specs, resolver=system_resolver) if specs else InterfaceView.live()
    try:
        ruleset = parse_file(path, view)
    except OSError as error:
        raise PfhaError(f"{path}: {error.strerror or error}") from None
    optimized = optimize(ruleset, level, is_group=default_is_group(view))
    print_warnings(optimized.warnings)
    return Engine(optimized.ruleset, view, seed=seed)


def _lines(args) -> Iterable[tuple[str, str]]:
    if args.scenario:
        text = read_text(args.scenario).replace("\\\n", " ")
        for number, line in enumerate(text.splitlines(), 1):
            stripped = line.split("#", 1)[0].strip()
            if stripped:
                yield f"{args.scenario}:{number}", stripped
    for index, packet in enumerate(args.packets, 1):
        yield f"packet {index}", packet


def run(args) -> int:
    from pfha.engine.report import format_rules_verbose, format_state
    from pfha.engine.packet import PacketError
    from pfha.engine.spec import Conversation, parse_packet

    engine = load_engine(args.file, args.interfaces, args.seed, args.optimize)
    lines = list(_lines(args))
    if not lines:
        raise PfhaError("no packets: give PACKET arguments or --scenario FILE")
    conversation = Conversation()
    out = sys.stdout
    for where, text in lines:
        try:
            spec = parse_packet(text)
        except PacketError as error:
            raise PfhaError(f"{where}: {error}") from None
        conversation.fill(spec)
        conversation.record(spec.packet)
        engine.purge(conversation.now)
        decision = engine.process(spec.packet, spec.ifname, spec.direction, conversation.now)
        conversation.record(decision.packet)
        conversation.passed(decision.packet, spec.direction, decision.action)
        for emitted in decision.emitted:
            conversation.record(emitted.packet)
        if args.json:
            record = decision.to_json()
            record["input"] = text
            out.write(json.dumps(record) + "\n")
        else:
            out.write(describe(text, decision) + "\n")
    if args.states and not args.json:
        out.write("\nstates:\n")
        for state in engine.states:
            out.write(f"  {format_state(state)}\n")
    if args.counters and not args.json:
        out.write("\nrules:\n" + format_rules_verbose(engine) + "\n")
    return 0


def describe(text: str, decision) -> str:
    """A few indented lines saying what happened to one packet."""
    rule = "default rule" if decision.rule_number is None else f"rule {decision.rule_number}"
    if decision.reason == "skip":
        lines = [text, "  pass (set skip on this interface)"]
        return "\n".join(lines)
    head = f"  {decision.action} ({decision.reason}), {rule}"
    if decision.state:
        head += f", state {decision.state}"
    if decision.log:
        head += ", logged"
    lines = [text, head]
    if decision.rule_text and decision.rule_number is not None:
        lines.append(f"    {decision.rule_text}")
    if decision.translation is not None:
        t = decision.translation.describe()
        lines.append(f"  {t['type']} (rule {t['rule']}): {t['orig_src']} > {t['orig_dst']} becomes {t['src']} > {t['dst']}")
    lines.append(f"  packet now: {decision.packet.summary()}")
    for emitted in decision.emitted:
        lines.append(f"  pf sends ({emitted.why}, toward the {emitted.toward}): {emitted.packet.summary()}")
    return "\n".join(lines)
