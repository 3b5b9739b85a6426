"""``pfha overload-flush``: kill the states of sources that overload ``max-src-conn*`` rules.

pf does this in the kernel (``overload <t> flush [global]``); on Linux the ruleset reports each
overload to an NFLOG group and this process deletes the offender's conntrack entries. The node
daemon runs the same flusher as one of its parts; use this command without the node daemon.
"""

from __future__ import annotations

import argparse
import sys

NAME = "overload-flush"
HELP = "carry out 'overload <table> flush [global]': kill the offending source's states (foreground; the node daemon does it itself)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pfha.nft.overload import OVERLOAD_GROUP

    parser.add_argument("-g", dest="group", type=int, default=OVERLOAD_GROUP,
                        help=f"NFLOG group the ruleset reports overloads to (default {OVERLOAD_GROUP})")
    parser.add_argument("--ready-file", help="create this file once listening (for scripts and tests)")
    parser.add_argument("-v", dest="verbose", action="store_true", help="also log start, stop and ignored packets")


def run(args: argparse.Namespace) -> int:
    import logging

    from pfha.nft.overload_linux import run_foreground

    logging.basicConfig(stream=sys.stderr, format="overload-flush: %(message)s", level=logging.WARNING)
    logging.getLogger("pfha.overload").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    run_foreground(args.group, args.ready_file)
    return 0
