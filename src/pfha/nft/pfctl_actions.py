"""pfctl's kernel actions, registered with the pfctl front end (src/pfha/cli/pfctl.py).

``-f`` (load), ``-e``/``-d``, ``-s rules|nat|states|info|Tables|labels|all`` (with ``-v``
counters mapped back from nftables), ``-F rules|nat|states|Tables|all``, ``-k HOST [-k HOST]``
``-t TABLE -T add|delete|replace|show|flush`` and ``-z``. Each handler does one thing through
:mod:`pfha.nft.operate` and writes what pfctl writes: listings on stdout, confirmations and
warnings on stderr.

The front end calls :func:`register` with itself (it may run as ``__main__``); handlers touch
the kernel only when they run. Errors are printed as pfctl prints them: ``pfctl: message``.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any, Callable, TextIO

from pfha.conf.names import lookup_option
from pfha.errors import PfhaError

pfctl: Any = None  # the front-end module the handlers were registered with

#: pfctl.c's option lists, in its order: a modifier is the first entry it is a prefix of
#: (pfctl_lookup_option(): "-s r" is rules, "-s R" Running, "-F s" states, "-T a" add)
SHOW_MODIFIERS = ("ether", "nat", "queue", "rules", "Anchors", "Sources", "states", "info", "Interfaces", "labels",
                  "timeouts", "memory", "Tables", "osfp", "Running", "all")
FLUSH_MODIFIERS = ("nat", "queue", "rules", "Sources", "states", "info", "Tables", "osfp", "all", "ethernet")
TABLE_COMMANDS = ("kill", "flush", "add", "delete", "load", "replace", "show", "test", "zero", "expire")
_NO_ETHER, _NO_ALTQ, _NO_SOURCES = "its data plane has no ethernet rules", "it has no ALTQ", "it keeps no source nodes"
_NO_OSFP, _LATER = "it has no OS fingerprints", "not implemented"
#: what pfha cannot show, flush or do to a table, and why (refused, never an empty answer)
UNSUPPORTED = {
    "-s": {"ether": _NO_ETHER, "queue": _NO_ALTQ, "Anchors": "anchors are inlined into the kernel ruleset",
           "Sources": _NO_SOURCES, "Interfaces": _LATER, "osfp": _NO_OSFP},
    "-F": {"ethernet": _NO_ETHER, "queue": _NO_ALTQ, "Sources": _NO_SOURCES, "info": _LATER, "osfp": _NO_OSFP},
    "-T": {"load": _LATER, "test": _LATER, "zero": _LATER, "expire": _LATER},
}


def _refuse(flag: str, what: str) -> None:
    why = UNSUPPORTED[flag].get(what)
    if why is not None:
        raise PfhaError(f"pfctl: {flag} {what} is not supported by pfha: {why}")


def _pfctl_errors(handler: Callable) -> Callable:
    @functools.wraps(handler)
    def wrapped(inv: Any, out: TextIO, err: TextIO) -> int:
        try:
            return handler(inv, out, err)
        except PfhaError as error:
            text = str(error)
            err.write(text if text.startswith("pfctl:") else f"pfctl: {text}")
            err.write("\n")
            return 1

    return wrapped


def _write(stream: TextIO, text: str) -> None:
    if text:
        stream.write(text + "\n")


def load(ruleset: Any, inv: Any) -> int:
    """-f without -n: compile and load in one transaction; warnings on stderr."""
    import sys

    from pfha.nft.compile import compile_ruleset
    from pfha.nft.operate import load_compiled
    from pfha.warning_groups import print_warnings

    compiled = compile_ruleset(ruleset, pfctl.interface_view(inv))
    compiled.metadata["file"] = inv.arg("f")
    if not inv.quiet:  # each distinct warning once with its lines; -v: every one
        print_warnings(compiled.warnings, "pfctl: warning: ", verbose=inv.verbose > 0)
    try:
        after = load_compiled(compiled)
    except PfhaError as error:
        sys.stderr.write(f"pfctl: {error}\npfctl: pf rules not loaded\n")
        return 1
    if not inv.quiet:
        print_warnings(after, "pfctl: warning: ", verbose=inv.verbose > 0)
    return 0


@_pfctl_errors
def show(inv: Any, out: TextIO, err: TextIO) -> int:
    from pfha.nft import operate

    what = lookup_option(inv.arg("s") or "", SHOW_MODIFIERS)
    if what is None:
        raise PfhaError(f"pfctl: Unknown show modifier '{inv.arg('s')}'")
    _refuse("-s", what)
    if what == "Running":  # pfctl_show_running(): the answer is the exit status too
        running = operate.is_running()
        _write(out, "Enabled" if running else "Disabled")
        return 0 if running else 1
    parts = [("TRANSLATION RULES:", "nat"), ("FILTER RULES:", "rules"), ("STATES:", "states"), ("INFO:", "info"),
             ("TIMEOUTS:", "timeouts"), ("LIMITS:", "memory"), ("TABLES:", "Tables")] if what == "all" else [("", what)]
    for title, part in parts:
        if title:
            out.write(title + "\n")
        text = {"rules": lambda: operate.show_rules(inv.verbose), "nat": lambda: operate.show_nat(inv.verbose),
                "states": lambda: operate.show_states(inv.verbose), "info": lambda: operate.show_info(inv.verbose),
                "Tables": lambda: operate.show_tables(inv.verbose), "labels": operate.show_labels,
                "timeouts": operate.show_timeouts, "memory": operate.show_limits}[part]()
        _write(out, text)
        if title:
            out.write("\n")
    return 0


@_pfctl_errors
def flush(inv: Any, out: TextIO, err: TextIO) -> int:
    from pfha.nft import operate

    what = lookup_option(inv.arg("F") or "", FLUSH_MODIFIERS)
    if what is None:
        raise PfhaError(f"pfctl: Unknown flush modifier '{inv.arg('F')}'")
    _refuse("-F", what)
    action = {"rules": operate.flush_rules, "nat": operate.flush_nat, "states": operate.flush_states,
              "Tables": operate.flush_tables, "all": operate.flush_all}[what]
    message = action()
    if not inv.quiet:
        _write(err, message)
    return 0


@_pfctl_errors
def kill(inv: Any, out: TextIO, err: TextIO) -> int:
    from pfha.nft import operate

    message = operate.kill_states(inv.flags["k"])
    if not inv.quiet:
        _write(err, message)
    return 0


@_pfctl_errors
def table(inv: Any, out: TextIO, err: TextIO) -> int:
    from pfha.nft import operate

    name, command = inv.arg("t"), lookup_option(inv.arg("T") or "", TABLE_COMMANDS)
    if not name:
        raise PfhaError("pfctl: -T needs -t TABLE")
    if command is None:
        raise PfhaError(f"pfctl: Unknown command '{inv.arg('T')}'")
    _refuse("-T", command)
    if command == "show":
        _write(out, operate.table_show(name))
        return 0
    message = operate.table_modify(name, "flush" if command in ("flush", "kill") else command, inv.operands)
    if not inv.quiet:
        _write(err, message)
    return 0


@_pfctl_errors
def enable(inv: Any, out: TextIO, err: TextIO) -> int:
    from pfha.nft import operate

    _write(err, operate.enable())
    return 0


@_pfctl_errors
def disable(inv: Any, out: TextIO, err: TextIO) -> int:
    from pfha.nft import operate

    _write(err, operate.disable())
    return 0


@_pfctl_errors
def zero(inv: Any, out: TextIO, err: TextIO) -> int:
    """-z: clear the filter rules' counters; with -s they are shown first (the front end runs
    -s before -z), as pfctl reads and clears them in one pass."""
    from pfha.nft.operate import clear_rule_counters

    if not inv.noaction:
        clear_rule_counters()
    return 0


def register(front_end: ModuleType) -> None:
    """Add the kernel actions to pfctl's dispatch (``front_end`` is pfha.cli.pfctl)."""
    global pfctl
    pfctl = front_end
    pfctl.register_action("s", show)
    pfctl.register_action("F", flush)
    pfctl.register_action("k", kill)
    pfctl.register_action("T", table)
    pfctl.register_action("e", enable)
    pfctl.register_action("d", disable)
    pfctl.register_action("z", zero)
    if load not in pfctl.LOADERS:
        pfctl.LOADERS.append(load)
