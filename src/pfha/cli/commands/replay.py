"""``pfha replay``: run every packet of a capture through the reference engine.

    pfha replay -f pf.conf capture.pcap --in xl0 [--out xl1] [--pflog out.pcap] [--json]
    pfha replay -f pf.conf capture.pcap --in xl0 --both-ways [--local-mac MAC ...]

Each packet is evaluated ``in on`` the ``--in`` interface; a packet that passes is then
evaluated ``out on`` the ``--out`` interface (as forwarded), with the capture's timestamps as
the clock. With ``--both-ways`` the capture is one interface's traffic in both directions (as
``tcpdump -i xl0`` takes it on the firewall): packets the firewall sent are evaluated ``out on``
that interface, the others ``in on`` it; a Linux cooked capture (SLL, or SLL2 as ``tcpdump -i
any`` writes) records the direction itself,
an Ethernet capture needs the firewall's MAC address(es) in ``--local-mac``. At the end it prints every rule with its counters (like ``pfctl -vsr``) and the
state table (like ``pfctl -ss``); logged packets go to a DLT_PFLOG file that
``tcpdump -n -e -r`` reads.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys

from pfha.errors import PfhaError

NAME = "replay"
HELP = "evaluate every packet of a pcap with the reference engine; per-rule summary, states, pflog output"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--file", required=True, metavar="PF.CONF", help="the pf.conf to load")
    parser.add_argument("capture", metavar="CAPTURE.pcap", help="Ethernet, raw-IP or Linux cooked capture")
    parser.add_argument("--in", dest="in_if", required=True, metavar="IF", help="interface the packets arrive on")
    parser.add_argument("--out", dest="out_if", metavar="IF", help="interface passed packets leave on")
    parser.add_argument("--both-ways", action="store_true",
                        help="the capture holds both directions on --in: what the firewall sent is evaluated 'out on' it")
    parser.add_argument("--local-mac", action="append", default=[], metavar="MAC",
                        help="with --both-ways on an Ethernet capture: the firewall's MAC address (repeatable)")
    parser.add_argument("--if", dest="interfaces", action="append", default=[], metavar="NAME=CIDR[,CIDR...]",
                        help="an interface and its addresses (repeatable; default: this host's interfaces)")
    parser.add_argument("--pflog", metavar="OUT.pcap", help="write logged packets here (DLT_PFLOG)")
    parser.add_argument("--json", action="store_true", help="one JSON object per packet, then a summary object")
    parser.add_argument("--seed", type=int, default=0, help="seed for random choices (nat ports, ISNs)")
    parser.add_argument("-o", "--optimize", metavar="LEVEL", type=_level, default=None,
                        help="ruleset optimization as pfctl -o (default: the file's, else basic)")


def _mac(text: str) -> bytes:
    parts = text.replace("-", ":").split(":")
    try:
        if len(parts) != 6:
            raise ValueError
        return bytes(int(part, 16) for part in parts)
    except ValueError:
        raise PfhaError(f"--local-mac {text}: not a MAC address (aa:bb:cc:dd:ee:ff)") from None


def _direction_of(args, linktype: int, capture: str):
    """The per-frame direction callback for ``--both-ways``, or None without it."""
    from pfha.pflog.pcap import LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2, frame_direction

    if not args.both_ways:
        if args.local_mac:
            raise PfhaError("--local-mac needs --both-ways")
        return None
    if args.out_if:
        raise PfhaError("--both-ways and --out exclude each other: a two-way capture is one interface")
    macs = frozenset(_mac(text) for text in args.local_mac)
    if linktype == LINKTYPE_ETHERNET and not macs:
        raise PfhaError(f"{capture}: an Ethernet capture does not record direction: give the firewall's --local-mac")
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL, LINKTYPE_LINUX_SLL2):
        raise PfhaError(f"{capture}: link type {linktype} does not record direction: --both-ways needs an "
                        "Ethernet (with --local-mac) or Linux cooked capture")
    return lambda frame, _packet: frame_direction(linktype, frame, macs) or "in"


def run(args) -> int:
    from pfha.cli.commands.test import load_engine
    from pfha.engine.replay import replay
    from pfha.engine.report import format_rules_verbose, format_state
    from pfha.pflog.pcap import LINKTYPE_PFLOG, PcapError, PcapReader, PcapWriter

    engine = load_engine(args.file, args.interfaces, args.seed, args.optimize)
    out = sys.stdout
    pflog_stream = open(args.pflog, "wb") if args.pflog else None
    writer = PcapWriter(pflog_stream, LINKTYPE_PFLOG) if pflog_stream else None
    on_log = (lambda log: writer.write(log.time, log.frame())) if writer is not None else None
    on_packet = None
    if args.json:
        def on_packet(index: int, now: float, decisions: list) -> None:
            out.write(json.dumps({"index": index, "time": now, "in": decisions[0].to_json(),
                                  "out": decisions[1].to_json() if len(decisions) > 1 else None}) + "\n")
    try:
        try:
            stream = open(args.capture, "rb")
        except OSError as error:
            raise PfhaError(f"{args.capture}: {error.strerror or error}") from None
        with stream:
            # The loop makes no reference cycles (refcounting frees every packet and decision),
            # but the cyclic collector would keep rescanning the growing state table: ~30% of
            # the replay's time on a 10,000-flow capture. It is switched off for the loop only.
            collecting = gc.isenabled()
            gc.disable()
            try:
                reader = PcapReader(stream)
                direction_of = _direction_of(args, reader.linktype, args.capture)
                totals = replay(engine, reader.linktype, reader.frames(), args.in_if, args.out_if,
                                on_packet, on_log, direction_of).as_dict()
            except (PcapError, ValueError) as error:
                raise PfhaError(f"{args.capture}: {error}") from None
            finally:
                if collecting:
                    gc.enable()
    finally:
        if pflog_stream is not None:
            pflog_stream.close()
    states = list(engine.states)
    if args.json:
        rules = [{"rule": r.number, "rule_text": r.text, "evaluations": r.counters.evaluations,
                  "packets": sum(r.counters.packets), "bytes": sum(r.counters.bytes),
                  "states": r.counters.states_cur, "state_creations": r.counters.states_tot}
                 for r in engine.translation_rules() + engine.rules()]
        out.write(json.dumps({"summary": totals, "rules": rules, "states": [format_state(s) for s in states]}) + "\n")
        return 0
    out.write(f"{totals['packets']} packets: {totals['passed']} passed, {totals['blocked']} blocked, "
              f"{totals['logged']} logged, {totals['not_ip']} not IP, {totals['unparsable']} unparsable\n\n")
    out.write("rules:\n" + format_rules_verbose(engine) + "\n\n")
    out.write(f"states ({len(states)}):\n")
    for state in states:
        out.write(f"  {format_state(state)}\n")
    return 0


def _level(text: str) -> str:
    from pfha.cli.commands.check import _level as level

    return level(text)
