"""``pfha import-freebsd``: a FreeBSD rc.conf (and sysctl.conf) turned into a node TOML.

Prints what could not be carried over on stderr, one ``FILE:LINE: setting: why`` per line, and
writes the same list as comments at the top of the TOML.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pfha.errors import PfhaError

NAME = "import-freebsd"
HELP = "turn a FreeBSD rc.conf (and sysctl.conf) into a pfha node configuration (TOML)"


def _mapping(text: str) -> tuple[str, str]:
    name, sep, device = text.partition("=")
    if not sep or not name or not device:
        raise argparse.ArgumentTypeError(f"expected BSDNAME=LINUXDEV (like xl0=eth1), got {text!r}")
    return name, device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rc_conf", metavar="RC.CONF", help="the node's /etc/rc.conf")
    parser.add_argument("sysctl_conf", metavar="SYSCTL.CONF", nargs="?", help="the node's /etc/sysctl.conf")
    parser.add_argument("--map", metavar="BSD=LINUX", action="append", type=_mapping, default=[],
                        help="use Linux device LINUX for the interface rc.conf calls BSD (repeatable; lo0=lo is implied)")
    parser.add_argument("--name", help="node name (default: rc.conf's hostname)")
    parser.add_argument("--pf-conf", help="pf.conf path to write (default: rc.conf's pf_rules)")
    parser.add_argument("-o", "--output", metavar="OUT", help="write the TOML here instead of stdout")
    parser.add_argument("-q", "--quiet", action="store_true", help="do not list what was not carried over")


def run(args: argparse.Namespace) -> int:
    from pfha.node import config as node_config
    from pfha.node.freebsd import import_files
    from pfha.node.toml_out import dumps

    device_map = dict(args.map)
    if len(device_map) != len(args.map):
        raise PfhaError("--map names the same interface twice")
    imported = import_files(args.rc_conf, args.sysctl_conf, device_map=device_map, name=args.name,
                            pf_conf=args.pf_conf)
    sources = " and ".join(str(p) for p in (args.rc_conf, args.sysctl_conf) if p)
    text = dumps(imported.config, imported.origins, imported.notes,
                 header=f"pfha node configuration, imported from {sources} by pfha import-freebsd.")
    # What we write must read back: a failure here is a bug, but never write a file we cannot load.
    node_config.loads(text, Path(args.output) if args.output else Path("<output>"))
    if not args.quiet:
        for note in imported.notes:
            print(f"note: {note}", file=sys.stderr)
    if args.output:
        try:
            Path(args.output).write_text(text, encoding="utf-8")
        except OSError as error:
            raise PfhaError(f"{args.output}: cannot write: {error.strerror}") from None
    else:
        sys.stdout.write(text)
    return 0
