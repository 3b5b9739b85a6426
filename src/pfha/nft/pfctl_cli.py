"""pfctl's kernel-facing flags: load, enable/disable, show, flush, kill, tables.

``pfctl`` (src/pfha/cli/pfctl.py, the conf package's front end) owns parsing-only work such as
``-nvf`` printing; it hands everything that reads or changes the kernel to :func:`run` here.
``python -m pfha.nft.pfctl_cli`` runs these flags on their own (what the root tests use).
pfctl's order of actions is kept: -d, -s, -F, -k, -t/-T, -f, -e.

Touches the kernel through :mod:`pfha.nft.operate`.
"""

from __future__ import annotations

import argparse
import sys

from pfha.errors import PfhaError

SHOW = {"r": "rules", "rules": "rules", "n": "nat", "nat": "nat", "s": "states", "states": "states", "i": "info", "info": "info",
        "T": "Tables", "Tables": "Tables", "tables": "Tables", "l": "labels", "labels": "labels", "a": "all", "all": "all"}
FLUSH = {"r": "rules", "rules": "rules", "n": "nat", "nat": "nat", "s": "states", "states": "states", "T": "Tables",
         "Tables": "Tables", "a": "all", "all": "all"}
TABLE_COMMANDS = ("add", "delete", "replace", "show", "flush", "kill")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", dest="file", help="load the rules in FILE (one transaction)")
    parser.add_argument("-n", dest="noaction", action="store_true", help="parse and compile, do not load")
    parser.add_argument("-v", dest="verbose", action="count", default=0)
    parser.add_argument("-q", dest="quiet", action="store_true")
    parser.add_argument("-e", dest="enable", action="store_true", help="enable pf")
    parser.add_argument("-d", dest="disable", action="store_true", help="disable pf")
    parser.add_argument("-s", dest="show", help="show rules|nat|states|info|Tables|labels|all")
    parser.add_argument("-F", dest="flush", help="flush rules|nat|states|Tables|all")
    parser.add_argument("-k", dest="kill", action="append", default=[], metavar="HOST", help="kill states from HOST [to HOST]")
    parser.add_argument("-t", dest="table", help="table for -T")
    parser.add_argument("-T", dest="table_command", choices=TABLE_COMMANDS)
    parser.add_argument("--if", dest="interfaces", action="append", default=[], metavar="NAME=CIDR[,CIDR]",
                        help="pfha extension: compile -f against these interface addresses instead of the live ones")
    parser.add_argument("addresses", nargs="*", help="addresses for -T add|delete|replace")


def wants_kernel(args: argparse.Namespace) -> bool:
    return bool(args.enable or args.disable or args.show or args.flush or args.kill or args.table_command or (args.file and not args.noaction))


def _print(text: str) -> None:
    if text:
        print(text)


def _show(what: str, verbose: int) -> None:
    from pfha.nft import operate

    if what == "rules":
        _print(operate.show_rules(verbose))
    elif what == "nat":
        _print(operate.show_nat(verbose))
    elif what == "states":
        _print(operate.show_states(verbose))
    elif what == "info":
        _print(operate.show_info(verbose))
    elif what == "Tables":
        _print(operate.show_tables(verbose))
    elif what == "labels":
        _print(operate.show_labels())
    else:
        for title, part in (("TRANSLATION RULES:", "nat"), ("FILTER RULES:", "rules"), ("STATES:", "states"), ("INFO:", "info"), ("TABLES:", "Tables")):
            print(title)
            _show(part, verbose)
            print()


def run(args: argparse.Namespace) -> int:
    from pfha.nft import operate

    if args.show and args.show not in SHOW:
        raise PfhaError(f"Unknown show modifier '{args.show}'")
    if args.flush and args.flush not in FLUSH:
        raise PfhaError(f"Unknown flush modifier '{args.flush}'")
    if args.disable:
        print(operate.disable(), file=sys.stderr)
    if args.show:
        _show(SHOW[args.show], args.verbose)
    if args.flush:
        what = FLUSH[args.flush]
        action = {"rules": operate.flush_rules, "nat": operate.flush_nat, "states": operate.flush_states,
                  "Tables": lambda: "tables cleared (kept as empty sets)", "all": operate.flush_all}[what]
        message = action()
        if not args.quiet:
            print(message, file=sys.stderr)
    if args.kill:
        print(operate.kill_states(args.kill), file=sys.stderr)
    if args.table_command:
        if not args.table:
            raise PfhaError("-T needs -t TABLE")
        if args.table_command == "show":
            _print(operate.table_show(args.table))
        else:
            op = "flush" if args.table_command in ("flush", "kill") else args.table_command
            message = operate.table_modify(args.table, op, args.addresses)
            if not args.quiet:
                print(message, file=sys.stderr)
    if args.file:
        view = None
        if getattr(args, "interfaces", None):
            from pfha.conf import InterfaceView

            view = InterfaceView.from_specs(args.interfaces)
        for warning in operate.load_file(args.file, check_only=args.noaction, interfaces=view):
            print(f"pfctl: {warning}", file=sys.stderr)
    if args.enable:
        print(operate.enable(), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pfctl", description="pfctl's kernel commands for pfha (nftables data plane)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except PfhaError as error:
        print(f"pfctl: {error}", file=sys.stderr)
        return error.exit_status


if __name__ == "__main__":
    sys.exit(main())
