"""``pfha check FILE``: parse a pf.conf as pfctl would, and say whether it loads.

The friendly form of ``pfctl -nf``: exit 0 when the ruleset is valid, 1 otherwise, every error
as ``FILE:LINE: message``. ``--if NAME=CIDR[,CIDR...]`` gives another machine's interface
addresses (repeatable; without it the host's own interfaces are used); ``-v`` prints the
expansion exactly as ``pfctl -nv`` would.
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


def run(args) -> int:
    from pfha.conf import InterfaceView
    from pfha.conf.errors import ParseError
    from pfha.conf.parser import parse_file
    from pfha.conf.printer import format_ruleset
    from pfha.cli.pfctl import _raw_streams

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
    if args.verbose:
        sys.stdout.write(format_ruleset(ruleset, verbose=args.verbose, messages=False))
    else:
        count = len(ruleset.filter) + len(ruleset.translation) + len(ruleset.scrub) + len(ruleset.ether)
        print(f"{args.file}: OK ({count} rules, {len(ruleset.tables)} tables)")
    return 0
