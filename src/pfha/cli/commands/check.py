"""``pfha check FILE``: parse a pf.conf as pfctl would, and say whether it loads.

The friendly form of ``pfctl -nf``: exit 0 when the ruleset is valid, 1 otherwise, every error
as ``FILE:LINE: message``. ``--if NAME=CIDR[,CIDR...]`` gives another machine's interface
addresses (repeatable; without it the host's own interfaces are used); ``-v`` prints the
expansion exactly as ``pfctl -nv`` would, optimized as pfctl optimizes it by default
(``-o none|basic|profile``; without ``-o``, the file's ``set ruleset-optimization``, else basic).
"""

from __future__ import annotations

import sys

NAME = "check"
HELP = "check a pf.conf: parse and expand it as pfctl does (exit 0 valid, 1 invalid)"


def add_arguments(parser) -> None:
    parser.add_argument("file", help="the pf.conf to check ('-' for standard input)")
    parser.add_argument(
        "--if",
        dest="interfaces",
        action="append",
        default=[],
        metavar="NAME=CIDR[,CIDR...]",
        help="an interface and its addresses, e.g. xl1=192.168.1.250/24 (repeatable); "
        "given at least once, the host's own interfaces are not read",
    )
    parser.add_argument("--freebsd-lo0", action="store_true", help="add FreeBSD's lo0 (127.0.0.1, ::1, fe80::1)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="print the expanded ruleset (pfctl -nv)")
    parser.add_argument("-o", "--optimize", metavar="LEVEL", type=_level, default=None,
                        help="ruleset optimization as pfctl -o: none, basic or profile (default: the file's "
                        "'set ruleset-optimization', else basic, as pfctl)")


def _level(text: str) -> str:
    import argparse

    from pfha.conf.optimize import resolve_level

    level = resolve_level(text)
    if level is None:
        raise argparse.ArgumentTypeError(f"unknown optimization {text!r} (none, basic, profile)")
    return level


def run(args) -> int:
    from pfha.conf import InterfaceView
    from pfha.conf.errors import ParseError
    from pfha.conf.optimize import default_is_group, format_optimized, optimize, ruleset_level
    from pfha.conf.parser import parse_file
    from pfha.conf.printer import format_ruleset
    from pfha.warning_groups import print_warnings
    from pfha.cli.pfctl import _raw_streams, running_profile

    _raw_streams()
    from pfha.conf.live import system_resolver

    if args.freebsd_lo0:
        base = InterfaceView.freebsd_defaults()
    elif args.interfaces:
        base = InterfaceView.empty()
    else:
        base = InterfaceView.live()
    view = InterfaceView.from_specs(args.interfaces, base=base,
                                    resolver=None if args.freebsd_lo0 else system_resolver)
    try:
        ruleset = parse_file(args.file, view)
    except ParseError as error:
        for line in error.messages:
            print(line, file=sys.stderr)
        return 1
    for message in ruleset.messages:
        print(message.text, file=sys.stderr)
    profile = running_profile() if ruleset_level(ruleset, args.optimize) == "profile" else None
    optimized = optimize(ruleset, args.optimize, is_group=default_is_group(view), profile=profile)
    print_warnings(optimized.warnings, verbose=bool(args.verbose))
    if args.verbose and optimized.level == "none":
        sys.stdout.write(format_ruleset(ruleset, verbose=args.verbose, messages=False))
    elif args.verbose:
        sys.stdout.write(format_optimized(optimized, verbose=args.verbose, messages=False))
    else:
        ruleset = optimized.ruleset
        count = len(ruleset.filter) + len(ruleset.translation) + len(ruleset.scrub) + len(ruleset.ether)
        print(f"{args.file}: OK ({count} rules, {len(ruleset.tables)} tables)")
    return 0
