"""``pfha pflogd``: write packets logged by pf rules (NFLOG) to a pflog file tcpdump reads."""

from __future__ import annotations

import argparse
import sys

NAME = "pflogd"
HELP = "log packets from pf 'log' rules (NFLOG) to a pflog pcap file, like FreeBSD's pflogd"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pfha.pflog.linux import DEFAULT_LOG, DEFAULT_SNAPLEN

    parser.add_argument("-f", dest="file", default=DEFAULT_LOG, help=f"log file (default {DEFAULT_LOG})")
    parser.add_argument("-s", dest="snaplen", type=int, default=DEFAULT_SNAPLEN, help=f"bytes kept per packet, header included (default {DEFAULT_SNAPLEN}; 0 = 65535)")
    parser.add_argument("-g", dest="group", type=int, default=0, help="NFLOG group the ruleset logs to (default 0)")
    parser.add_argument("--ready-file", help="create this file once listening (for scripts and tests)")


def run(args: argparse.Namespace) -> int:
    import logging

    from pfha.pflog.linux import run_daemon

    logging.basicConfig(stream=sys.stderr, format="pflogd: %(message)s", level=logging.INFO)
    run_daemon(args.file, args.group, args.snaplen or 65535, args.ready_file)
    return 0
