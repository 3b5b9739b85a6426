"""``pfctl``: FreeBSD pfctl's command line, on pfha.

Flags are parsed as pfctl's getopt() parses them: short options may be combined (``-nvf
pf.conf``, ``-vvnf``), an option taking an argument takes the rest of its word or the next
word (``-fpf.conf``, ``-f pf.conf``), ``--`` ends options. Parsing produces a
:class:`Invocation`; the work is a dispatch over ACTIONS, one handler per action flag, run in
pfctl's order, so the data plane adds ``-s``/``-F``/``-k``/``-t``/``-e``/``-d`` by registering
handlers (``register_action``) without touching the parser.

Implemented here: ``-f`` (with ``-n`` to parse only), ``-v``/``-vv``, ``-o`` (``none``,
``basic`` (the default, as pfctl's), ``profile``: pfctl's ruleset optimizer,
:mod:`pfha.conf.optimize`; without ``-o`` the file's ``set ruleset-optimization`` decides),
``-q``, ``-D macro=value``. The flags in ``UNSUPPORTED`` are refused with a one-line reason.
pfha extensions (long options, which pfctl does not have): ``--if NAME=CIDR[,CIDR]`` to check a
ruleset against another machine's interfaces, ``--freebsd-lo0`` for FreeBSD's loopback
addresses (the conformance corpus), ``--no-live`` to not read the host's interfaces.

Output matches pfctl: ``-nv`` prints the options, macros, tables and the expanded rules;
errors are ``FILE:LINE: message`` lines on stderr; exit status 1 on any error, never a
traceback.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, TextIO

from pfha.errors import PfhaError

#: pfctl's getopt string (FreeBSD sbin/pfctl/pfctl.c): letters followed by ':' take an argument
OPTSTRING = "a:AdD:eqf:F:ghi:k:K:mMnNOo:Pp:rRs:t:T:vx:z"

_WHOLE = "it loads a whole ruleset in one nftables transaction"
#: pfctl flags pfha accepts as pfctl does but cannot honour: refused, never silently ignored
UNSUPPORTED = {
    "A": ("load only the queue definitions", _WHOLE),
    "N": ("load only the NAT rules", _WHOLE),
    "R": ("load only the filter rules", _WHOLE),
    "O": ("load only the options", _WHOLE),
    "m": ("merge in new options", _WHOLE),
    "M": ("kill matching states in the opposite direction", "not implemented"),
    "K": ("kill source nodes", "pfha keeps no source nodes"),
    "i": ("restrict to one interface", "not implemented"),
    "P": ("print ports numerically", "not implemented"),
    "r": ("reverse-resolve addresses", "not implemented"),
    "g": ("print debugging output", "not implemented"),
    "x": ("set pf's debug level", "nftables has no such level"),
    "p": ("use another pf device", "it has no pf device, it works on this network namespace's nftables"),
}
OPTIMIZERS = ("none", "basic", "profile")
USAGE = (
    "usage: pfctl [-AdeghMmNnOPqRrvz] [-a anchor] [-D macro=value] [-F modifier]\n"
    "\t[-f file] [-i interface] [-K host | network]\n"
    "\t[-k host | network | gateway | label | id] [-o level] [-p device]\n"
    "\t[-s modifier] [-t table -T command [address ...]] [-x level]"
)


class UsageError(PfhaError):
    exit_status = 1


@dataclass
class Invocation:
    """What the command line asked for."""

    flags: dict[str, list[str]] = field(default_factory=dict)  # letter -> arguments (or [""])
    order: list[str] = field(default_factory=list)  # letters in command-line order
    verbose: int = 0
    interfaces: list[str] = field(default_factory=list)
    freebsd_lo0: bool = False
    live: bool = True
    operands: list[str] = field(default_factory=list)

    def has(self, letter: str) -> bool:
        return letter in self.flags

    def arg(self, letter: str) -> str | None:
        values = self.flags.get(letter)
        return values[-1] if values else None

    @property
    def noaction(self) -> bool:
        return self.has("n")

    @property
    def quiet(self) -> bool:
        return self.has("q")


def parse_args(argv: list[str]) -> Invocation:
    """getopt(3) over pfctl's option string, plus pfha's long options."""
    inv = Invocation()
    takes_arg = {c for i, c in enumerate(OPTSTRING) if c != ":" and OPTSTRING[i + 1:i + 2] == ":"}
    letters = {c for c in OPTSTRING if c != ":"}
    i = 0
    while i < len(argv):
        word = argv[i]
        i += 1
        if word == "--":
            inv.operands.extend(argv[i:])
            break
        if word.startswith("--"):
            i = _long_option(inv, word, argv, i)
            continue
        if not word.startswith("-") or word == "-":
            inv.operands.append(word)
            inv.operands.extend(argv[i:])
            break
        j = 1
        while j < len(word):
            c = word[j]
            j += 1
            if c not in letters:
                raise UsageError(f"pfctl: illegal option -- {c}\n{USAGE}")
            if c in takes_arg:
                if j < len(word):
                    value = word[j:]
                elif i < len(argv):
                    value = argv[i]
                    i += 1
                else:
                    raise UsageError(f"pfctl: option requires an argument -- {c}\n{USAGE}")
                inv.flags.setdefault(c, []).append(value)
                inv.order.append(c)
                break
            inv.flags.setdefault(c, []).append("")
            inv.order.append(c)
            if c == "v":
                inv.verbose += 1
    if inv.has("o"):
        from pfha.conf.optimize import resolve_level

        level = resolve_level(inv.arg("o") or "")
        if level is None:  # pfctl_lookup_option(): a unique prefix of none, basic, profile
            raise UsageError(f"pfctl: Unknown optimization '{inv.arg('o')}'\n{USAGE}")
        inv.flags["o"][-1] = level
    return inv


def _long_option(inv: Invocation, word: str, argv: list[str], i: int) -> int:
    name, eq, value = word[2:].partition("=")
    if name == "if":
        if not eq:
            if i >= len(argv):
                raise UsageError("pfctl: option --if requires NAME=CIDR[,CIDR...]")
            value = argv[i]
            i += 1
        inv.interfaces.append(value)
    elif name == "freebsd-lo0" and not eq:
        inv.freebsd_lo0 = True
    elif name == "no-live" and not eq:
        inv.live = False
    else:
        raise UsageError(f"pfctl: unknown option {word}\n{USAGE}")
    return i


def interface_view(inv: Invocation):
    """The interfaces ``$if`` and friends resolve against (see module docstring)."""
    from pfha.conf import InterfaceView
    from pfha.conf.live import system_resolver

    if inv.freebsd_lo0:
        return InterfaceView.from_specs(inv.interfaces, base=InterfaceView.freebsd_defaults())
    base = InterfaceView.live() if inv.live and not inv.interfaces else InterfaceView.empty()
    return InterfaceView.from_specs(inv.interfaces, base=base, resolver=system_resolver)


# ------------------------------------------------------------------------------ actions
Action = Callable[[Invocation, TextIO, TextIO], int]
#: action letter -> handler, in the order pfctl performs them
ACTIONS: dict[str, Action] = {}
#: called by -f without -n to load the parsed ruleset; the data plane registers it
LOADERS: list[Callable] = []


def register_action(letter: str, handler: Action) -> None:
    """Let another package implement a pfctl action flag (``-s``, ``-F``, ``-e``...)."""
    ACTIONS[letter] = handler


def command_line_macros(inv: Invocation, err: TextIO) -> dict[str, str]:
    """``-D name=value`` (pfctl_cmdline_symset(): split at the last '='); the file cannot
    redefine them. A definition without '=' is skipped with pfctl's warning."""
    macros: dict[str, str] = {}
    for definition in inv.flags.get("D", []):
        name, eq, value = definition.rpartition("=")
        if not eq:
            err.write(f"pfctl: could not parse macro definition {definition}\n")
            continue
        macros.setdefault(name, value)  # symset(): the first persistent definition stays
    return macros


def _load_file(inv: Invocation, out: TextIO, err: TextIO) -> int:
    from pfha.warning_groups import print_warnings
    from pfha.conf.errors import ParseError
    from pfha.conf.optimize import format_optimized
    from pfha.conf.parser import parse_file
    from pfha.conf.printer import format_ruleset

    path = inv.arg("f")
    view = interface_view(inv)
    try:
        ruleset = parse_file(path, view, macros=command_line_macros(inv, err))
    except ParseError as error:
        for line in error.messages:
            err.write(line + "\n")
        err.flush()
        if inv.verbose and error.output:
            # definitions printed before the error (stdout), after the messages (stderr)
            out.write(_definitions_only(error.output, error.messages))
        if not inv.noaction:
            err.write("pfctl: Syntax error in config file: pf rules not loaded\n")
        return 1
    if not inv.quiet:
        for message in ruleset.messages:
            err.write(message.text + "\n")
        if inv.verbose >= 2:
            for name in ruleset.unused_macros:
                err.write(f"warning: macro '{name}' not used\n")
        err.flush()
    optimized = optimize_for(ruleset, inv, view)
    if not inv.quiet:
        print_warnings(optimized.warnings, "pfctl: warning: ", verbose=inv.verbose > 0, stream=err)
    if optimized.level == "none":
        if inv.verbose:
            out.write(format_ruleset(ruleset, verbose=inv.verbose, messages=False))
    else:
        ruleset = optimized.ruleset
        if inv.verbose:
            out.write(format_optimized(optimized, verbose=inv.verbose, messages=False))
    if not inv.noaction:
        if not LOADERS:
            err.write("pfctl: loading rules needs the pfha data plane (use -n to only parse)\n")
            return 1
        return int(LOADERS[-1](ruleset, inv) or 0)
    return 0


#: -o profile: returns the running main ruleset's filter rules with their packet counts, or
#: None when the data plane cannot tell (registered by the data plane, like LOADERS)
PROFILERS: list[Callable] = []


def optimize_for(ruleset, inv: Invocation, view):
    """pfctl's optimizer as this invocation asks for it: ``-o`` first, else the file's
    ``set ruleset-optimization``, else basic. Loading (no -n) names the automatic tables as
    pfctl does in the kernel, ``__automatic_<random hex>_<n>``; -n keeps ``__automatic_<n>``."""
    import random

    from pfha.conf.optimize import default_is_group, optimize, ruleset_level

    level = ruleset_level(ruleset, inv.arg("o") if inv.has("o") else None)
    profile = None
    if level == "profile":
        profile = PROFILERS[-1](inv) if PROFILERS else running_profile()
    identifier = None if inv.noaction else random.getrandbits(32)
    return optimize(ruleset, level, is_group=default_is_group(view), identifier=identifier,
                    reroll=lambda: random.getrandbits(32), profile=profile)


def running_profile():
    """-o profile's feedback (see :func:`pfha.nft.operate.running_profile`); None without the
    data plane."""
    try:
        from pfha.nft.operate import running_profile as from_kernel
    except ImportError:  # a checkout without the data plane: parse-only pfctl
        return None
    return from_kernel()


def _definitions_only(output: str, messages: tuple[str, ...]) -> str:
    lines = output.splitlines(True)
    return "".join(lines[len(messages):])


register_action("f", _load_file)


def _register_data_plane() -> None:
    """nft: add the kernel actions (-s -F -k -T -e -d, and loading for -f) to the dispatch."""
    try:
        from pfha.nft.pfctl_actions import register
    except ImportError:  # a checkout without the data plane: parse-only pfctl
        return
    register(sys.modules[__name__])


def run(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        inv = parse_args(argv)
        for letter, (what, why) in UNSUPPORTED.items():
            if inv.has(letter):
                err.write(f"pfctl: -{letter} ({what}) is not supported by pfha: {why}\n")
                return 1
        if inv.operands and not inv.has("T"):  # nft: -T add|delete|replace take addresses
            raise UsageError(USAGE)
        todo = [letter for letter in ACTIONS if inv.has(letter)]
        if not todo:
            if any(inv.has(c) for c in "sFktTedz"):
                err.write("pfctl: this action needs the pfha data plane, which is not installed here\n")
                return 1
            raise UsageError(USAGE)
        status = 0
        for letter in ("F", "f", "e", "d", "s", "k", "K", "t", "T", "z"):
            if letter in todo:
                status |= ACTIONS[letter](inv, out, err)
        for letter in todo:
            if letter not in ("F", "f", "e", "d", "s", "k", "K", "t", "T", "z"):
                status |= ACTIONS[letter](inv, out, err)
        return 1 if status else 0
    except PfhaError as error:
        err.write(f"{error}\n")
        return error.exit_status
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


def _raw_streams() -> None:
    """Undecodable bytes of a pf.conf (read with surrogateescape) go back out unchanged."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="surrogateescape")
        except (AttributeError, ValueError):
            pass


def main(argv: list[str] | None = None) -> int:
    _raw_streams()
    _register_data_plane()  # nft: the command (not run(), which tests drive) gets the kernel actions
    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
