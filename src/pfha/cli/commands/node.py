"""``pfha node run -c node.toml``: run one firewall of the pair (see pfha.node.daemon)."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "node"
HELP = "run a pfha node: host settings, ruleset, pflogd, CARP and state sync in one process"


def _parts(text: str) -> frozenset[str]:
    from pfha.node.parts import PART_NAMES

    parts = frozenset(p.strip() for p in text.split(",") if p.strip())
    unknown = parts - set(PART_NAMES)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown part {', '.join(sorted(unknown))} (parts: {', '.join(PART_NAMES)})")
    return parts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pfha.node.control import DEFAULT_SOCKET
    from pfha.node.parts import PART_NAMES

    sub = parser.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run the node in the foreground (SIGHUP reloads, SIGTERM bows out)")
    run.add_argument("-c", "--config", required=True, type=Path, help="the node's TOML configuration")
    run.add_argument("--control", type=Path, default=DEFAULT_SOCKET, help=f"control socket (default {DEFAULT_SOCKET})")
    run.add_argument("--without", type=_parts, default=frozenset(),
                     help=f"leave parts out on purpose, comma-separated ({', '.join(PART_NAMES)})")
    run.add_argument("--log-format", choices=("json", "text"), default="json",
                     help="json: one object per line on stderr (the default, for the journal); text: for a terminal")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info",
                     help="the least important level logged (default info)")
    check = sub.add_parser("check", help="read the config and compile the ruleset without changing anything")
    check.add_argument("-c", "--config", required=True, type=Path, help="the node's TOML configuration")
    reload = sub.add_parser("reload", help="ask a running node to reload (as SIGHUP does), and print the outcome")
    reload.add_argument("--control", type=Path, default=DEFAULT_SOCKET, help=f"the node's control socket (default {DEFAULT_SOCKET})")


def run(args: argparse.Namespace) -> int:
    if args.node_command == "run":
        from pfha.node import daemon, logs

        logs.setup(args.log_format, args.log_level)
        return daemon.run(args.config, args.control, args.without)
    if args.node_command == "check":
        from pfha.node import config as node_config
        from pfha.node.parts import RulesetPart

        config = node_config.load(args.config)
        compiled = RulesetPart().prepare(config)
        print(f"{args.config}: node {config.name}, ruleset {compiled.source} compiles (hash {compiled.digest[:16]})")
        return 0
    from pfha.node import control

    result = control.request(args.control, "reload", timeout=60)
    print(result["message"])
    return 0 if result["ok"] else 1
