"""``pfha load FILE``: compile a pf.conf and load it into nftables in one transaction (= pfctl -f).

The ruleset is optimized first, as pfctl optimizes it (``-o basic`` unless ``-o``/``--optimize``
or the file's ``set ruleset-optimization`` says otherwise), so the kernel's rule numbers (pflog,
``pfctl -vsr``) are FreeBSD's."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "load"
HELP = "compile a pf.conf to nftables and load it atomically (pfctl -f); -n checks without loading"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="pf.conf to load")
    parser.add_argument("-n", "--dry-run", action="store_true", help="parse and compile only; never touch the kernel")
    parser.add_argument("--check", action="store_true", help="also let the kernel validate the batch without committing it")
    parser.add_argument("--json", action="store_true", help="print the nftables JSON instead of loading it")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="print every warning at every rule it applies to (default: each distinct warning "
                             "once, with the lines it applies to)")
    parser.add_argument("--follow-addresses", action="store_true",
                        help="after loading, keep (if) addresses current as interfaces change, until interrupted")
    parser.add_argument("--if", dest="interfaces", action="append", default=[], metavar="NAME=CIDR[,CIDR]",
                        help="interface addresses to compile against instead of the live ones (repeatable)")
    parser.add_argument("--map", dest="devices", action="append", default=[], metavar="NAME=DEVICE",
                        help="pf.conf interface NAME is Linux DEVICE (xl0=eth1; repeatable): the live DEVICE's "
                             "addresses stand for NAME, and the kernel rules match DEVICE")
    parser.add_argument("-o", "--optimize", metavar="LEVEL", type=_level, default=None,
                        help="ruleset optimization as pfctl -o: none, basic or profile (default: the file's "
                             "'set ruleset-optimization', else basic, as pfctl)")


def _level(text: str) -> str:
    from pfha.cli.commands.check import _level as level

    return level(text)


def run(args: argparse.Namespace) -> int:
    from pfha.warning_groups import print_warnings
    from pfha.conf import InterfaceView
    from pfha.nft import loader
    from pfha.nft.compile import parse_device_map
    from pfha.nft.operate import compile_file, load_compiled, watch_dynamic

    devices = parse_device_map(args.devices)
    from pfha.conf.live import system_resolver

    view = InterfaceView.from_specs(args.interfaces, resolver=system_resolver) if args.interfaces else None
    compiled = compile_file(args.file, view, devices, args.optimize)
    print_warnings(compiled.warnings, verbose=args.verbose)
    if args.json:
        json.dump(compiled.document(), sys.stdout, indent=1)
        print()
        return 0
    if args.dry_run:
        return 0
    if args.check:
        loader.check(compiled.commands)
        return 0
    print_warnings(load_compiled(compiled), verbose=args.verbose)
    if args.follow_addresses:
        watch_dynamic()
    return 0
