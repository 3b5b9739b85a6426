"""``pfha audit``: lint the ruleset, check the pair, check the host.

``pfha audit`` alone audits the live host (and its node config in /etc/pfha, if any);
``pfha audit NODE [NODE]`` audits node configurations (TOML files, rc.conf files, or folders
holding them); ``--root DIR`` audits a tree of host files instead of the live host
(``--root /`` with nodes: those nodes and this host).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pfha.errors import PfhaError

NAME = "audit"
HELP = "find ruleset mistakes, pair inconsistencies and missing host hardening"


def _families(text: str) -> list[str]:
    from pfha.audit.runner import CHECK_FAMILIES

    names = [n.strip() for n in text.split(",") if n.strip()]
    for name in names:
        if name not in CHECK_FAMILIES:
            raise argparse.ArgumentTypeError(f"unknown check family {name!r} (choose from {', '.join(CHECK_FAMILIES)})")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pfha.audit.runner import CHECK_FAMILIES

    parser.add_argument("nodes", metavar="NODE", nargs="*", type=Path,
                        help="a node TOML, an rc.conf, or a folder of them (two nodes: the pair is checked too)")
    parser.add_argument("--root", metavar="DIR", type=Path,
                        help="check the host files under DIR (etc/ssh/sshd_config, etc/fstab...) instead of the live host")
    parser.add_argument("--no-host", action="store_true", help="skip the host checks")
    parser.add_argument("--only", metavar="LIST", type=_families, default=list(CHECK_FAMILIES),
                        help="comma-separated check families to run: lint,pair,host (default: all)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    parser.add_argument("--strict", action="store_true", help="exit non-zero on warnings too")


def run(args: argparse.Namespace) -> int:
    from pfha.audit.host import HostTree
    from pfha.audit.nodes import discover, discover_in_root
    from pfha.audit.runner import audit

    root = args.root
    if root is not None and not root.is_dir():
        raise PfhaError(f"--root {root}: not a folder")
    if args.nodes:
        nodes = discover(args.nodes, root)
    else:
        nodes = discover_in_root(root or Path("/"))
    tree = None
    if not args.no_host:
        if root is not None:
            # --root / is this host: read the running sysctls and mounts, not just the files.
            tree = HostTree(root, live=root.resolve() == Path("/"))
        elif not args.nodes:
            tree = HostTree(Path("/"), live=True)
    report = audit(nodes, tree, args.only)
    sys.stdout.write(report.to_json() + "\n" if args.json else report.to_text())
    return report.exit_status(args.strict)
