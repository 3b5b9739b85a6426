"""``pfha demo`` (what ``make demo`` runs): the tutorial's pair at work, start to finish.

Brings the lab up with the corrected configs, shows who is master, shows traffic flowing (LAN to
the internet through NAT, the internet to the web pool through rdr), fails the master in the
middle of two running transfers, shows them finish through the backup, brings the old master
back (it takes over again only after its bulk update), and tears everything down.
"""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "run the tutorial's failover pair in namespaces and show a failover under traffic (root)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pfha.lab.build import FAIL_MODES

    parser.add_argument("--config", default="corrected", help="as-published, corrected (default) or a directory")
    parser.add_argument("--how", choices=FAIL_MODES, default="kill", help="how the master fails (default kill)")
    parser.add_argument("--name", default="demo", help="lab name (default demo)")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end ('pfha lab --name demo down')")


def run(args: argparse.Namespace) -> int:
    from pfha.cli.commands._demo import run as demo

    return demo(args)
