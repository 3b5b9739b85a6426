"""The ``pfha`` command: finds the subcommands in ``pfha.cli.commands`` and runs one.

Every user error is a :class:`pfha.errors.PfhaError`; it is printed as one line on stderr with a
non-zero exit status, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from types import ModuleType

from pfha import __version__
from pfha.cli import commands
from pfha.errors import PfhaError


def _command_modules() -> list[ModuleType]:
    modules = []
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"{commands.__name__}.{info.name}"))
    return modules


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pfha",
        description="pfha: pf, pflog, pfsync and CARP - a redundant failover firewall for Linux.",
    )
    from pfha.conf import implementation  # the commands import pfha.conf anyway

    parser.add_argument("--version", action="version", version=f"pfha {__version__} (pf.conf front end: {implementation()})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "_run"):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except PfhaError as error:
        print(f"pfha: {error}", file=sys.stderr)
        return error.exit_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
