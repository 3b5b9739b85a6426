"""The ``pfha`` command: finds the subcommands in ``pfha.cli.commands`` and runs one.

Every user error is a :class:`pfha.errors.PfhaError`; it is printed as one line on stderr with a
non-zero exit status, never as a traceback.

Start-up cost is part of the interface (an admin types ``pfha check`` many times a day): every
command module is imported to learn its ``NAME`` and ``HELP``, so a command module's top level
must stay cheap, and a command's own arguments are added only when that command is chosen
(:class:`_Commands`), so one command's options never import another command's dependencies.
This module must never import a command's implementation itself.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import os
import sys
from types import ModuleType
from typing import Any, Callable

from pfha import __version__
from pfha.cli import commands
from pfha.errors import PfhaError


def _command_names() -> list[str]:
    """The modules and packages in ``pfha.cli.commands`` whose names do not start with ``_``,
    sorted: what ``pkgutil.iter_modules`` lists, without importing pkgutil (a tenth of the
    dispatcher's own start-up)."""
    suffixes = importlib.machinery.all_suffixes()
    names: set[str] = set()
    for folder in commands.__path__:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            name = entry.name
            if entry.is_dir():
                if name.isidentifier() and os.path.exists(os.path.join(entry.path, "__init__.py")):
                    names.add(name)
                continue
            for suffix in suffixes:
                if name.endswith(suffix):
                    stem = name[: -len(suffix)]
                    if stem.isidentifier():
                        names.add(stem)
                    break
    return sorted(n for n in names if not n.startswith("_"))


def _command_modules() -> list[ModuleType]:
    return [importlib.import_module(f"{commands.__name__}.{name}") for name in _command_names()]


class _Commands(argparse._SubParsersAction):
    """The subcommands, each with its arguments added the first time it is chosen.

    Listing the commands (``pfha --help``, an unknown command) needs only their names and help
    lines; a command's ``add_arguments`` may import what its options are made of (the node's
    part names, the lab's failure modes), which only that command should pay for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: dict[str, Callable[[], None]] = {}

    def add_command(self, module: ModuleType) -> argparse.ArgumentParser:
        command = self.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        command.set_defaults(_run=module.run)
        self._pending[module.NAME] = lambda: module.add_arguments(command)
        return command

    def complete(self, name: str) -> None:
        """Add ``name``'s arguments now, if they are not there yet."""
        add = self._pending.pop(name, None)
        if add is not None:
            add()

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        self.complete(values[0])
        super().__call__(parser, namespace, values, option_string)


def build_parser(complete: bool = False) -> argparse.ArgumentParser:
    """The ``pfha`` parser; ``complete`` adds every command's arguments at once (for tools that
    walk the whole parser; parsing adds the chosen command's by itself)."""
    parser = argparse.ArgumentParser(
        prog="pfha",
        description="pfha: pf, pflog, pfsync and CARP - a redundant failover firewall for Linux.",
    )
    parser.add_argument("--version", action="version", version=f"pfha {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", action=_Commands)
    for module in _command_modules():
        sub.add_command(module)
    if complete:
        for name in list(sub.choices):
            sub.complete(name)
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
