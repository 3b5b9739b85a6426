"""``pfha carp run|status``: a foreground CARP node (like ucarp) and what ``ifconfig`` shows of it.

    pfha carp run --dev eth0 --vhid 1 --pass foo [--advbase 1] [--advskew 0] [--preempt] VIP[/len]...
              [--group 'vhid=2 dev=eth1 advskew=100 10.0.2.1/24 10.0.2.2/24']...
    pfha carp status [--json]

Each ``--group`` adds another vhid; keys it does not set (dev, pass, advbase, advskew,
preempt, src) are taken from the main flags. A VIP without /len takes the prefix length of the
parent's subnet that holds it (FreeBSD <= 9 style), else /32.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from pfha.errors import PfhaError

NAME = "carp"
HELP = "run CARP groups in the foreground (like ucarp), or show their state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="carp_command", metavar="{run,status}")
    run = sub.add_parser("run", help="run one or more CARP groups until SIGTERM (then bow out)")
    run.add_argument("--dev", "-i", required=True, help="parent interface (carpdev)")
    run.add_argument("--vhid", "-v", type=int, required=True, help="virtual host id, 1-255")
    run.add_argument("--pass", "-p", dest="passphrase", default="", help="passphrase (BSD uses its first 19 bytes)")
    run.add_argument("--advbase", "-b", type=int, default=1, help="advertisement base interval, seconds (0 allows sub-second with advskew)")
    run.add_argument("--advskew", "-k", type=int, default=0, help="skew in 1/256 s; lower wins (0-254)")
    run.add_argument("--preempt", "-P", action="store_true", help="take over from a slower master (net.inet.carp.preempt=1)")
    run.add_argument("--src", "-s", help="real source address (default: the parent's first IPv4 address)")
    run.add_argument("--group", action="append", default=[], metavar="SPEC",
                     help="another group: 'vhid=N [dev=IF] [pass=P] [advbase=B] [advskew=S] [preempt=1] VIP...'")
    run.add_argument("--status-file", type=Path, help="where to write the JSON status (default /run/pfha/carp/<pid>.json)")
    run.add_argument("--debug", action="store_true", help="log every action")
    run.add_argument("vips", nargs="+", metavar="VIP[/len]",
                     help="the group's virtual addresses (without /len: the prefix of the parent's subnet holding it, else /32)")
    status = sub.add_parser("status", help="per group: carp: STATE vhid N advbase B advskew S")
    status.add_argument("--json", action="store_true", help="the raw status of every running node")
    status.add_argument("--status-dir", type=Path, help="directory of status files (default /run/pfha/carp)")


def _configs(args: argparse.Namespace) -> list:
    import ipaddress

    from pfha.carp import linux, wire
    from pfha.carp.machine import VhidConfig
    from pfha.carp.runner import parse_vip

    main = {"dev": args.dev, "vhid": str(args.vhid), "pass": args.passphrase, "advbase": str(args.advbase),
            "advskew": str(args.advskew), "preempt": "1" if args.preempt else "0", "src": args.src or ""}
    specs = [(main, args.vips)]
    for text in args.group:
        keys, vips = dict(main), []
        for word in shlex.split(text):
            if "=" in word:
                key, value = word.split("=", 1)
                if key not in main:
                    raise PfhaError(f"--group: unknown key {key!r} (known: {', '.join(main)})")
                keys[key] = value
            else:
                vips.append(word)
        if not vips:
            raise PfhaError(f"--group {text!r}: no virtual address")
        specs.append((keys, vips))
    infos: dict[str, linux.InterfaceInfo] = {}
    configs = []
    for keys, vips in specs:
        dev = keys["dev"]
        if dev not in infos:
            infos[dev] = linux.interface_info(dev)
        try:
            configs.append(VhidConfig(
                vhid=int(keys["vhid"]), interface=dev,
                addresses=tuple(parse_vip(v, infos[dev]) for v in vips),
                key=wire.carp_key(keys["pass"]), advbase=int(keys["advbase"]), advskew=int(keys["advskew"]),
                preempt=keys["preempt"] not in ("0", "", "no", "false"),
                source=ipaddress.IPv4Address(keys["src"]) if keys["src"] else None,
            ))
        except ValueError as error:
            raise PfhaError(f"carp: {error}") from error
    return configs


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from pfha.carp.runner import CarpRunner

    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s pfha-carp[%(process)d] %(message)s")
    runner = CarpRunner(_configs(args), status_path=args.status_file)
    asyncio.run(runner.run())
    return 0


def _status(args: argparse.Namespace) -> int:
    from pfha.carp.runner import format_status, read_status

    statuses = read_status(args.status_dir)
    if args.json:
        print(json.dumps(statuses, indent=1))
        return 0
    if not statuses:
        raise PfhaError("carp: no running pfha carp node (no live status file)")
    print(format_status(statuses))
    return 0


def run(args: argparse.Namespace) -> int:
    if args.carp_command == "run":
        return _run(args)
    if args.carp_command == "status":
        return _status(args)
    raise PfhaError("carp: say 'run' or 'status' (pfha carp --help)")
