"""The pf.conf grammar (FreeBSD's parse.y, hand-written as recursive descent).

One statement per line (``\\`` continues a line; ``{ }`` lists and inline anchors may span
lines). Each rule is parsed into a :class:`_Spec` holding the lists as written, then expanded
(:mod:`pfha.conf.expand`) into one immutable rule per combination, in pfctl's nesting order.
Errors are pfctl's, ``FILE:LINE: message``; like pfctl, parsing continues on the next line
after an error so that every error is reported, and the ruleset is rejected at the end.

Reads only the files the ruleset names (``include``, ``table ... file``, ``load anchor``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping, NoReturn
from pathlib import Path

from pfha.conf.ast import (
    AnyAddress,
    BlockReturn,
    Divert,
    DynamicAddress,
    EtherRule,
    HostAddress,
    HostMatch,
    IdMatch,
    InterfaceMatch,
    Limiter,
    Log,
    MacAddress,
    Macro,
    NoRoute,
    Options,
    Origin,
    PortMatch,
    Queue,
    RangeAddress,
    Ruleset,
    ScrubOptions,
    SetOption,
    SetPrio,
    StateOption,
    Table,
    TableAddress,
    TableEntry,
    TcpFlags,
    UrpfFailed,
)
from pfha.conf.errors import ParseError
from pfha.conf.hosts import ANY_HOST as _ANY_HOST, HostError, ResolvedHost, interface_addresses, resolve, split_modifiers
from pfha.conf.interfaces import InterfaceView
from pfha.conf.lexer import Lexer, Token
from pfha.conf import expand as _expand
from pfha.conf import names
from pfha import data
from pfha.gc_pause import gc_paused

TIMEOUTS = (
    "tcp.first", "tcp.opening", "tcp.established", "tcp.closing", "tcp.finwait", "tcp.closed",
    "tcp.tsdiff", "udp.first", "udp.single", "udp.multiple", "icmp.first", "icmp.error",
    "other.first", "other.single", "other.multiple", "frag", "interval", "adaptive.start",
    "adaptive.end", "src.track", "sctp.first", "sctp.opening", "sctp.established",
    "sctp.closing", "sctp.closed",
)
LIMITS = ("states", "frags", "src-nodes", "tables", "table-entries", "anchors", "eth-anchors")
OPTIMIZATIONS = ("default", "normal", "high-latency", "satellite", "aggressive", "conservative")

MAX_INCLUDE_DEPTH = 16
MAX_ANCHOR_DEPTH = 64  # pfctl: PFCTL_ANCHOR_STACK_DEPTH


class _Abort(Exception):
    """Unwinds the current statement after an error was recorded."""


class _Spec:
    """A filter/anchor/translation rule as written, before list expansion (a plain class,
    not a dataclass: compiled, its __init__ is native code; dataclasses generate Python)."""

    def __init__(self, line: int, kind: str, action: str = "pass") -> None:
        self.line: int = line
        self.kind: str = kind  # "filter", "anchor", "nat", "rdr", "binat", "scrub"
        self.action: str = action
        self.block: BlockReturn | None = None
        self.direction: str | None = None
        self.log: Log | None = None
        self.quick: bool = False
        self.interfaces: list[InterfaceMatch] | None = None
        self.af: str | None = None
        self.protos: list[int] | None = None
        self.src_hosts: list[ResolvedHost] | None = None
        self.src_ports: list[PortMatch] | None = None
        self.src_os: list[str] | None = None
        self.dst_hosts: list[ResolvedHost] | None = None
        self.dst_ports: list[PortMatch] | None = None
        self.uids: list[IdMatch] | None = None
        self.gids: list[IdMatch] | None = None
        self.icmps: list[tuple[int, int | None, bool]] | None = None
        self.opts: dict = {}
        self.route: tuple | None = None  # (kind, [ (iface, ResolvedHost|None) ], pool options)
        self.translations: list[tuple] = []
        # translation rules
        self.negated: bool = False
        self.pass_: bool = False
        self.redirect: list[ResolvedHost] | None = None
        self.redirect_ports: tuple[int, int, bool] | None = None
        self.pool_opts: dict = {}
        # anchors
        self.name: str = ""
        self.body: "_Builder | None" = None
        self.end_line: int = 0


@dataclass
class _Builder:
    """A ruleset being built (the main one or an anchor's)."""

    path: str
    scrub: list = field(default_factory=list)
    translation: list = field(default_factory=list)
    filter: list = field(default_factory=list)
    ether: list = field(default_factory=list)
    anchors: list = field(default_factory=list)
    counters: dict = field(default_factory=lambda: {"filter": 0, "scrub": 0, "nat": 0, "rdr": 0, "binat": 0, "ether": 0})
    inline_count: int = 0


class Parser:
    """One parse of one pf.conf (with its includes)."""

    def __init__(self, view: InterfaceView, include_base: str | os.PathLike | None = None,
                 macros: Mapping[str, str] | None = None) -> None:
        self.view = view
        self.include_base = Path(include_base) if include_base is not None else None
        # pfctl -D name=value: defined before the file and kept (symset(..., persist=1))
        self.macros: dict[str, str] = dict(macros or {})
        self.persistent = frozenset(self.macros)
        self.used_macros: set[str] = set()
        self.definitions: list = []
        self.messages: list[str] = []
        self.errors: list[ParseError] = []
        self.options: dict = {}
        self.timeouts: list[tuple[str, int]] = []
        self.limits: list[tuple[str, int]] = []
        self.skip: list[str] = []
        self.state_defaults: tuple[StateOption, ...] = ()
        self.tables: dict[str, Table] = {}
        self.table_order: list[str] = []
        self.queues: list[Queue] = []
        self.altq: dict[str, dict] = {}
        self.queue_defs: dict[str, dict] = {}
        self.limiters: dict[tuple[str, str], Limiter] = {}
        self.blockpolicy = "drop"
        # a placeholder until parse_text(): errors before it name "pf.conf", as pfctl does
        self.lexer: Lexer = Lexer("", "pf.conf", self.macros)
        self.tok: Token = Token("eof", "", 0)
        self.include_depth = 0
        self.anchor_depth = 0
        self.load_anchors: list[tuple[str, str, int, str]] = []
        self.loaded: list[tuple[str, str, Ruleset]] = []
        self.main = _Builder("")
        self.if_matches: dict[tuple[str, bool], InterfaceMatch] = {}

    # ============================================================== token plumbing
    def _advance(self) -> Token:
        tok = self.tok
        lx = self.lexer
        i = lx._index
        if i < len(lx._tokens) and not lx._pending:  # the common case, without a call
            self.tok = lx._tokens[i]
            lx._index = i + 1
        else:
            self.tok = lx.next()
        return tok

    def _word(self, *words: str) -> bool:
        return self.tok.kind == "word" and self.tok.value in words

    def _accept(self, word: str) -> bool:
        if self.tok.kind == "word" and self.tok.value == word:
            self._advance()
            return True
        return False

    def _accept_kind(self, kind: str) -> bool:
        if self.tok.kind == kind:
            self._advance()
            return True
        return False

    def _expect_kind(self, kind: str) -> Token:
        if self.tok.kind != kind:
            self._syntax()
        return self._advance()

    def _expect(self, word: str) -> None:
        if not self._accept(word):
            self._syntax()

    def _skip_nl(self) -> None:
        while self.tok.kind == "nl":
            self._advance()

    def _error(self, message: str, line: int | None = None, *, pre: str | None = None) -> NoReturn:
        """Record an error (pfctl's yyerror) and unwind the statement."""
        line = self.tok.line if line is None else line
        self._record(message, line, pre=pre)
        raise _Abort()

    def _record(self, message: str, line: int, *, pre: str | None = None, summary: str | None = None) -> None:
        """pfctl prints ``pre`` (a line without position, e.g. from host()) before the
        ``FILE:LINE: message`` line; the ParseError carries the more useful of the two."""
        name = self.lexer.filename
        if pre is not None:
            self.messages.append(pre)
        self.messages.append(f"{name}:{line}: {message}")
        text = summary if summary is not None else (pre if pre is not None else message)
        self.errors.append(ParseError(text, name, line))

    def _syntax(self) -> NoReturn:
        self._error("syntax error")

    def _braced_list(self, item: Callable[[], Any], *, flatten: bool = False, nonempty: bool = False) -> list:
        """``item`` alone or ``{ item [,] item ... }`` (newlines allowed inside the braces): the one
        list grammar parse.y repeats for hosts, ports, interfaces, protocols, users, icmp types...
        ``flatten`` for items that are lists themselves (a host may expand to several);
        ``nonempty`` where parse.y rejects ``{ }``."""
        if self.tok.kind != "{":
            return item() if flatten else [item()]
        self._advance()
        out: list = []
        self._skip_nl()
        while self.tok.kind != "}":
            if flatten:
                out.extend(item())
            else:
                out.append(item())
            self._accept_kind(",")
            self._skip_nl()
        self._advance()
        if nonempty and not out:
            self._syntax()
        return out

    def _string(self) -> str:
        """STRING in parse.y: a quoted string or an unquoted word."""
        if self.tok.kind in ("word", "string"):
            return self._advance().value
        if self.tok.kind == "number":
            return self._advance().value
        self._syntax()
        return ""

    def _number(self, low: int | None = None, high: int | None = None, what: str = "number") -> int:
        tok = self.tok
        if tok.kind == "number":
            value = tok.number
        elif tok.kind == "word" and tok.value[:2] in ("0x", "0X"):
            # hex, as pfctl prints some values (set hostid 0x...); pfctl itself wants decimal
            try:
                value = int(tok.value, 16)
            except ValueError:
                self._syntax()
        else:
            self._syntax()
        self._advance()
        if (low is not None and value < low) or (high is not None and value > high):
            self._error(f"illegal {what} value {value}", tok.line)
        return value

    # ============================================================== files
    def parse_file(self, path: str, display: str | None = None) -> None:
        text = self._read(path, display or path)
        self.parse_text(text, display or path)

    def _read(self, path: str, display: str) -> str:
        full = Path(path)
        if self.include_base is not None and not full.is_absolute():
            full = self.include_base / full
        try:
            raw = full.read_bytes()
        except OSError as error:
            raise ParseError(f"cannot open {display}: {error.strerror or error}") from None
        return raw.decode("utf-8", errors="surrogateescape")

    def parse_text(self, text: str, filename: str) -> None:
        saved = (self.lexer, self.tok)
        self.lexer = Lexer(text, filename, self.macros, self.used_macros)
        self.lexer.on_error = lambda message, line: self._record(message, line)
        try:
            self.tok = self.lexer.next()
        except ParseError as error:
            self._record(error.message, error.line or 1)
            self.tok = Token("eof", "", error.line or 1)
        self._statements(self.main, inline=False)
        self.lexer, self.tok = saved

    # ============================================================== statements
    def _statements(self, builder: _Builder, inline: bool) -> None:
        while True:
            try:
                tok = self.tok
                if tok.kind == "eof":
                    if inline:
                        self._record("syntax error", tok.line)
                    return
                if tok.kind == "nl":
                    self._advance()
                    continue
                if tok.kind == "}" and inline:
                    self._advance()
                    return
                self._statement(builder)
            except _Abort:
                self._recover()
            except ParseError as error:  # from the lexer
                self._record(error.message, error.line or self.tok.line)
                self._recover()

    def _recover(self) -> None:
        """Skip to the end of the line (parse.y: ``grammar error '\\n'``)."""
        while True:
            try:
                if self.tok.kind in ("nl", "eof"):
                    if self.tok.kind == "nl":
                        self._advance()
                    return
                self._advance()
            except ParseError as error:
                self._record(error.message, error.line or self.tok.line)
                self.tok = Token("nl", "\n", self.tok.line)

    def _end_of_statement(self) -> int:
        """Consume the newline ending a statement; returns its line (pfctl reports errors
        found when a rule is reduced on that line)."""
        line = self.tok.line
        if self.tok.kind == "nl":
            self._advance()
        elif self.tok.kind != "eof":
            self._syntax()
        return line

    def _statement(self, b: _Builder) -> None:
        tok = self.tok
        if tok.kind != "word":
            self._syntax()
        word = tok.value
        if word == "include":
            self._advance()
            self._include()
            return
        # macro definition: STRING '=' value
        self._advance()
        if self.tok.kind == "=":
            self._macro(tok)
            return
        handler = _STATEMENTS.get(word)
        if handler is None:
            if word == "no":
                nxt = self._string()
                if nxt in ("nat", "rdr", "binat"):
                    self._translation(b, nxt, tok.line, negated=True)
                    return
                if nxt == "scrub":
                    self._scrub(b, tok.line, negated=True)
                    return
            self._error("syntax error", tok.line)
        handler(self, b, tok)

    # ------------------------------------------------------------------ include, macros
    def _include(self) -> None:
        line = self.tok.line
        if self.tok.kind != "string" and self.tok.kind != "word":
            self._syntax()
        name = self._advance().value
        self._end_of_statement()
        # the statement is complete: report problems without skipping the next line
        if self.include_depth >= MAX_INCLUDE_DEPTH:
            self._record(f"failed to include file {name}", line, pre="pfctl: include depth exceeded")
            return
        try:
            text = self._read(name, name)
        except ParseError as error:
            reason = error.message.removeprefix("cannot open ")
            self._record(f"failed to include file {name}", line, pre=f"pfctl: {reason}",
                         summary=f"failed to include file {reason}")
            return
        self.include_depth += 1
        try:
            self.parse_text(text, name)
        finally:
            self.include_depth -= 1

    def _macro(self, name_tok: Token) -> None:
        self._advance()  # '='
        parts: list[str] = []
        while self.tok.kind in ("word", "string", "number"):
            parts.append(self._advance().value)
        if not parts or self.tok.kind not in ("nl", "eof"):
            self._syntax()
        name = name_tok.value
        if not all(c.isalnum() or c == "_" for c in name):
            self._error("syntax error", name_tok.line)
        value = " ".join(parts)
        # defined before the next line is read: that line may use it; a -D definition wins
        # (pfctl prints the file's definition all the same)
        if name not in self.persistent:
            self.macros.pop(name, None)  # a new definition: last in pfctl's list, not yet used
            self.macros[name] = value
            self.used_macros.discard(name)
        self.definitions.append(Macro(name, value, self._origin(name_tok.line)))
        self._end_of_statement()

    def _origin(self, line: int) -> Origin:
        return Origin(self.lexer.filename, line)

    # ------------------------------------------------------------------ set
    def _set(self, b: _Builder, tok: Token) -> None:
        opt = self._string()
        line = tok.line
        value: object = None
        text = ""
        if opt == "block-policy":
            value = self._string()
            if value not in ("drop", "return"):
                self._syntax()
            self.blockpolicy = value
            text = f"set block-policy {value}"
        elif opt == "state-policy":
            value = self._string()
            if value not in ("if-bound", "floating"):
                self._syntax()
            text = f"set state-policy {value}"
        elif opt == "optimization":
            value = self._string()
            if value not in OPTIMIZATIONS:
                self._error(f"unknown optimization {value}", line)
            text = f"set optimization {value}"
        elif opt == "ruleset-optimization":
            value = self._string()
            if value not in ("none", "basic", "profile"):
                self._error(f"unknown ruleset-optimization {value}", line)
            text = f"set ruleset-optimization {value}"
        elif opt in ("timeout", "limit"):
            known, values = (TIMEOUTS, self.timeouts) if opt == "timeout" else (LIMITS, self.limits)
            for name, n in self._set_pairs(known, opt):
                values.append((name, n))
                self._add_set(f"{opt} {name}", n, line, f"set {opt} {name} {n}")
            self._end_of_statement()
            return
        elif opt == "loginterface":
            value = self._string()
            text = f"set loginterface {value}"
        elif opt == "hostid":
            value = self._number(1, 0xFFFFFFFF, "hostid")
            text = "set hostid 0x%08x" % value
        elif opt == "debug":
            value = self._string()
            if value not in ("none", "urgent", "misc", "loud", "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"):
                self._error(f"unknown debug level {value}", line)
            text = f"set debug {value}"
        elif opt == "skip":
            self._expect("on")
            ifs = self._interface_list()
            for i in ifs:
                if i.negated:
                    self._error("skip on ! <interface> is not supported", line)
                self.skip.append(i.name)
            value = tuple(i.name for i in ifs)
            # pfctl -v: "set skip on {" then " name" per interface, then " }"
            text = "set skip on {" + "".join(f" {n}" for n in value) + " }"
        elif opt == "reassemble":
            value = self._string()
            if value not in ("yes", "no"):
                self._syntax()
            nodf = self._accept("no-df")
            self.options["reassemble_no_df"] = nodf
        elif opt == "fingerprints":
            value = self._string()
            text = f'set fingerprints "{value}"'
        elif opt == "state-defaults":
            self.state_defaults = self._state_opt_list(parens=self.tok.kind == "(")
            value = self.state_defaults
        elif opt == "keepcounters":
            value = True
        elif opt == "syncookies":
            mode = self._string()
            if mode not in ("never", "always", "adaptive"):
                self._syntax()
            value = mode
            if self.tok.kind == "(":
                self._advance()
                while self.tok.kind != ")":
                    if self.tok.kind == "eof" or self.tok.kind == "nl":
                        self._syntax()
                    self._advance()
                self._advance()
        elif opt == "fail-policy":
            value = self._string()
        elif opt == "require-order":
            answer = self._string()
            if answer not in ("yes", "no"):
                self._syntax()
            value = answer == "yes"
            text = f"set require-order {answer}"
        else:
            self._error("syntax error", line)
        self._end_of_statement()
        self._add_set(opt, value, line, text)

    def _add_set(self, name: str, value, line: int, text: str) -> None:
        self.options.setdefault("_order", []).append(name)
        self.options[name] = value
        self.definitions.append(SetOption(name, value, self._origin(line), text))

    def _set_pairs(self, allowed: tuple[str, ...], what: str) -> list[tuple[str, int]]:
        pairs: list[tuple[str, int]] = []

        def one() -> None:
            name = self._string()
            if name not in allowed:
                self._error(f"unknown {what} {name}")
            pairs.append((name, self._number(0, 0x7FFFFFFF, what)))

        if self._accept_kind("{"):
            self._skip_nl()
            while self.tok.kind != "}":
                one()
                self._accept_kind(",")
                self._skip_nl()
            self._advance()
        else:
            one()
        return pairs

    # ------------------------------------------------------------------ tables
    def _table(self, b: _Builder, tok: Token) -> None:
        line = tok.line
        self._expect_kind("<")
        name = self._string()
        self._expect_kind(">")
        if len(name) >= 32:
            self._error(f"table name too long, max 31 chars", line)
        flags = {"persist": False, "const": False, "counters": False}
        layout: list = []
        entries: list[TableEntry] = []
        written_empty = False
        while True:
            if self._word("persist", "const", "counters"):
                flags[self._advance().value] = True
            elif self._accept("file"):
                path = self._string()
                layout.append(path)
                entries.extend(self._table_file(path, line))
            elif self.tok.kind == "{":
                self._advance()
                items = self._table_entries()
                if not items:
                    written_empty = True
                if layout and not isinstance(layout[-1], str):
                    layout[-1] = layout[-1] + tuple(items)
                else:
                    layout.append(tuple(items))
                entries.extend(items)
            else:
                break
        self._end_of_statement()
        if name in self.tables:
            self._error(f"table <{name}> redefined", line)
        layout = [part for part in layout if isinstance(part, str) or part]
        table = Table(
            name=name,
            origin=self._origin(line),
            persist=flags["persist"],
            const=flags["const"],
            counters=flags["counters"],
            entries=tuple(entries),
            files=tuple(p for p in layout if isinstance(p, str)),
            layout=tuple(layout),
            written_empty=written_empty,
        )
        self.tables[name] = table
        self.table_order.append(name)
        self.definitions.append(table)

    def _table_entries(self) -> list[TableEntry]:
        items: list[TableEntry] = []
        self._skip_nl()
        while self.tok.kind != "}":
            negated = self._accept_kind("!")
            for h in self._host(allow_table=False, allow_range=False):
                items.append(TableEntry(h.address, negated != h.negated))
            self._accept_kind(",")
            self._skip_nl()
        self._advance()
        return items

    def _table_file(self, path: str, line: int) -> list[TableEntry]:
        try:
            text = self._read(path, path)
        except ParseError:
            self._error(f'cannot load "{path}": No such file or directory', line)
        out: list[TableEntry] = []
        for raw in text.splitlines():
            raw = raw.split("#", 1)[0]
            for word in raw.split():
                negated = word.startswith("!")
                word = word.lstrip("!")
                addr, _, mask = word.partition("/")
                try:
                    hosts = resolve(addr, self.view, int(mask) if (mask.isascii() and mask.isdigit()) else None)
                except HostError as error:
                    self._error(str(error), line)
                for h in hosts:
                    out.append(TableEntry(h.address, negated))
        return out

    # ------------------------------------------------------------------ hosts
    def _host(self, *, allow_table: bool = True, allow_range: bool = True) -> list[ResolvedHost]:
        """host (parse.y): address[/mask], range, (dynamic), <table>, no-route, urpf-failed, self."""
        tok = self.tok
        line = tok.line
        if tok.kind == "<":
            self._advance()
            name = self._string()
            self._expect_kind(">")
            if not allow_table:
                self._error("tables not allowed here", line)
            return [ResolvedHost(TableAddress(name))]
        if tok.kind == "(":
            return [self._dynaddr()]
        if tok.kind not in ("word", "number", "string"):
            self._syntax()
        text = self._advance().value
        if tok.kind == "word" and text == "no-route":
            return [ResolvedHost(NoRoute())]
        if tok.kind == "word" and text == "urpf-failed":
            return [ResolvedHost(UrpfFailed())]
        if allow_range and self.tok.kind == "-":
            self._advance()
            end_text = self._string()
            return [self._range(text, end_text, line)]
        mask = None
        if self.tok.kind == "/":
            self._advance()
            mask = self._number()
        try:
            hosts = resolve(text, self.view, mask)
        except HostError as error:
            self._error("could not parse host specification", line, pre=str(error))
        return hosts

    def _range(self, start: str, end: str, line: int) -> ResolvedHost:
        try:
            a = ipaddress.ip_address(start)
            z = ipaddress.ip_address(end)
        except ValueError:
            self._error("could not parse host specification", line)
        if a.version != z.version:
            self._error("address family mismatch", line)
        return ResolvedHost(RangeAddress(a, z), family="inet" if a.version == 4 else "inet6")

    def _dynaddr(self) -> ResolvedHost:
        line = self.tok.line
        self._expect_kind("(")
        name = self._string()
        self._expect_kind(")")
        split = split_modifiers(name)
        if split is None:
            self._error("could not parse host specification", line)
        ifname, mods = split
        if len(set(mods) & {"network", "broadcast", "peer"}) > 1:
            self._error("illegal combination of interface modifiers", line)
        mask = None
        if self.tok.kind == "/":
            self._advance()
            mask = self._number(0, 128, "netmask")
            if "network" in mods or "broadcast" in mods:
                self._error("network or broadcast lookup, but extra netmask given", line)
        return ResolvedHost(DynamicAddress(ifname, mods, mask))  # type: ignore[arg-type] # checked by split_modifiers

    def _host_list(self) -> list[ResolvedHost]:
        """ipspec: any | [!] host | { [!] host, ... }"""
        if self._accept("any"):
            return [_ANY_HOST]
        return self._braced_list(self._not_host, flatten=True, nonempty=True)

    def _not_host(self) -> list[ResolvedHost]:
        negated = self._accept_kind("!")
        if self._word("any") and not negated:
            self._advance()
            return [_ANY_HOST]
        if self._accept("self"):
            hosts = interface_addresses("self", (), self.view)
            if not hosts:
                self._error("could not parse host specification", self.tok.line, pre="no IP address found for self")
        else:
            hosts = self._host()
        if negated:
            hosts = [replace(h, negated=not h.negated) for h in hosts]
        return hosts

    # ------------------------------------------------------------------ ports
    def _port_item(self, proto_hint: str = "tcp") -> PortMatch:
        tok = self.tok
        if tok.kind in ("=", "!=", "<", "<=", ">", ">="):
            op = self._advance().kind
            port = self._port_value(self._string())
            return PortMatch(op, port)
        text = self._string()
        if ":" in text:
            low_text, _, high_text = text.partition(":")
            low = self._port_value(low_text)
            high = self._port_value(high_text)
            if low > high:
                self._error("invalid port range", tok.line)
            return PortMatch(":", low, high)
        low = self._port_value(text)
        if self.tok.kind in ("<>", "><"):
            op = self._advance().kind
            high = self._port_value(self._string())
            return PortMatch(op, low, high)
        if self.tok.kind == ":" :
            self._advance()
            high = self._port_value(self._string())
            return PortMatch(":", low, high)
        return PortMatch("=", low)

    def _port_value(self, text: str) -> int:
        port = names.port_number(text)
        if port is None:
            self._error(f'unknown port {text}' if not (text.isascii() and text.isdigit()) else "illegal port value %s" % text)
        return port

    def _port_list(self) -> list[PortMatch]:
        return self._braced_list(self._port_item, nonempty=True)

    # ------------------------------------------------------------------ interfaces, protos
    def _if_item(self) -> InterfaceMatch:
        negated = self._accept_kind("!")
        name = self._string()
        if len(name) >= 16:
            self._error(f"interface name too long", self.tok.line)
        key = (name, negated)
        match = self.if_matches.get(key)
        if match is None:  # one shared value per interface test: rules hold thousands
            match = self.if_matches[key] = InterfaceMatch(name, negated)
        return match

    def _interface_list(self) -> list[InterfaceMatch]:
        return self._braced_list(self._if_item, nonempty=True)

    def _proto_item(self) -> int:
        tok = self.tok
        if tok.kind == "number":
            self._advance()
            if not 0 <= tok.number <= 255:
                self._error("protocol outside range", tok.line)
            return tok.number
        name = self._string()
        number = names.protocol_number(name)
        if number is None:
            self._error(f"unknown protocol {name}", tok.line)
        return number

    def _proto_list(self) -> list[int]:
        return self._braced_list(self._proto_item, nonempty=True)

    # ------------------------------------------------------------------ rule heads
    def _log_opts(self) -> Log:
        log = Log()
        if self.tok.kind == "(":
            self._advance()
            while True:
                word = self._string()
                if word == "all":
                    log = replace(log, all=True)
                elif word == "matches":
                    log = replace(log, matches=True)
                elif word == "user":
                    log = replace(log, user=True)
                elif word == "to":
                    target = self._string()
                    if not (target.startswith("pflog") and (target[5:].isascii() and target[5:].isdigit())):
                        self._error(f"{target}: not a pflog interface")
                    log = replace(log, to=target if target != "pflog0" else None)
                else:
                    self._syntax()
                if self._accept_kind(","):
                    continue
                self._expect_kind(")")
                break
        return log

    def _logquick(self, spec: _Spec) -> None:
        while self.tok.kind == "word":
            word = self.tok.value
            if word == "log":
                self._advance()
                spec.log = self._log_opts()
            elif word == "quick":
                self._advance()
                spec.quick = True
            else:
                return

    def _fromto(self, spec: _Spec) -> None:
        if self.tok.kind != "word":
            return
        word = self.tok.value
        if word == "all":
            self._advance()
            return
        if word == "from":
            self._advance()
            spec.src_hosts, spec.src_ports = self._ipportspec()
            if self._accept("os"):
                spec.src_os = self._os_list()
        if self._accept("to"):
            spec.dst_hosts, spec.dst_ports = self._ipportspec()

    def _ipportspec(self):
        tok = self.tok
        if tok.kind == "word" and tok.value == "port":
            hosts = None
        elif tok.kind == "word" and tok.value == "any":
            self._advance()
            hosts = [_ANY_HOST]
        else:
            hosts = self._host_list()
        ports = None
        if self.tok.kind == "word" and self.tok.value == "port":
            self._advance()
            ports = self._port_list()
        return hosts, ports

    def _os_list(self) -> list[str]:
        if self.tok.kind == "{":
            self._advance()
            out = []
            while self.tok.kind != "}":
                out.append(self._string())
                self._accept_kind(",")
            self._advance()
            return out
        return [self._string()]

    # ------------------------------------------------------------------ filter rules
    def _filter(self, b: _Builder, tok: Token) -> None:
        spec = _Spec(line=tok.line, kind="filter", action=tok.value)
        if tok.value == "block":
            spec.block = self._block_return()
        self._rule_body(spec)
        spec.end_line = self._end_of_statement()
        _expand.expand_filter(self, b, spec)

    def _block_return(self) -> BlockReturn | None:
        if self._accept("drop"):
            return BlockReturn("drop")
        if self._accept("return"):
            return BlockReturn("return")
        if self._accept("return-rst"):
            ttl = None
            if self.tok.kind == "(":
                self._advance()
                self._expect("ttl")
                ttl = self._number(0, 255, "ttl")
                self._expect_kind(")")
            return BlockReturn("return-rst", ttl=ttl)
        if self._accept("return-icmp"):
            c4 = c6 = None
            if self.tok.kind == "(":
                self._advance()
                c4 = self._icmp_return_code(False)
                if self._accept_kind(","):
                    c6 = self._icmp_return_code(True)
                self._expect_kind(")")
            return BlockReturn("return-icmp", icmp_code=c4, icmp6_code=c6)
        if self._accept("return-icmp6"):
            c6 = None
            if self.tok.kind == "(":
                self._advance()
                c6 = self._icmp_return_code(True)
                self._expect_kind(")")
            return BlockReturn("return-icmp6", icmp6_code=c6)
        return None

    def _icmp_return_code(self, v6: bool) -> int:
        tok = self.tok
        if tok.kind == "number":
            self._advance()
            if not 0 <= tok.number <= 255:
                self._error("invalid icmp code %d" % tok.number, tok.line)
            return tok.number
        name = self._string()
        code = data.icmp_code_number(1 if v6 else 3, name, v6)
        if code is None:
            self._error(f"unknown icmp code {name}", tok.line)
        return code

    def _rule_body(self, spec: _Spec) -> None:
        if self._word("in", "out"):
            spec.direction = self._advance().value
        self._logquick(spec)
        if self._accept("on"):
            spec.interfaces = self._interface_list()
        if self._word("route-to", "reply-to", "dup-to", "fastroute"):
            self._route_opt(spec)
        if self._word("inet", "inet6"):
            spec.af = self._advance().value
        if self._accept("proto"):
            spec.protos = self._proto_list()
        self._fromto(spec)
        self._filter_opts(spec)

    def _route_opt(self, spec: _Spec) -> bool:
        if not self._word("route-to", "reply-to", "dup-to", "fastroute"):
            return False
        kind = self._advance().value
        if kind == "fastroute":
            spec.route = ("fastroute", [], {})
            return True
        items = self._braced_list(self._route_host, flatten=True)
        opts = self._pool_opts()
        spec.route = (kind, items, opts)
        return True

    def _route_host(self) -> list[tuple[str | None, ResolvedHost | None]]:
        if self.tok.kind == "(":
            self._advance()
            ifname = self._string()
            hosts = None
            if self.tok.kind != ")":
                hosts = self._host(allow_table=True, allow_range=False)
            self._expect_kind(")")
            if hosts is None:
                return [(ifname, None)]
            return [(ifname, h) for h in hosts]
        name = self._string()
        return [(name, None)]

    def _pool_opts(self) -> dict:
        opts: dict = {}
        while True:
            if self._word("round-robin", "random", "bitmask"):
                if "method" in opts:
                    self._error("pool type cannot be redefined")
                opts["method"] = self._advance().value
            elif self._accept("source-hash"):
                if "method" in opts:
                    self._error("pool type cannot be redefined")
                opts["method"] = "source-hash"
                if self.tok.kind in ("word", "string") and not self._word(
                    "sticky-address", "static-port", "port", "round-robin", "random", "bitmask", "map-e-portset",
                    "endpoint-independent", "prefer-ipv6-nexthop", "inet", "inet6", "proto", "from", "to", "all",
                ):
                    opts["key"] = self._hash_key(self._advance().value)
            elif self._accept("sticky-address"):
                opts["sticky"] = True
            elif self._accept("static-port"):
                opts["static_port"] = True
            elif self._accept("endpoint-independent"):
                opts["endpoint_independent"] = True
            elif self._accept("prefer-ipv6-nexthop"):
                opts["prefer_ipv6_nexthop"] = True
            elif self._accept("map-e-portset"):
                parts = [self._string()]
                while self.tok.kind == "/" and len(parts) < 3:
                    self._advance()
                    parts.append(self._string())
                if len(parts) == 1:
                    parts = parts[0].split("/")
                if len(parts) != 3:
                    self._syntax()
                try:
                    vals = tuple(int(p, 0) for p in parts)
                except ValueError:
                    self._syntax()
                opts["map_e"] = vals
            else:
                return opts

    def _hash_key(self, text: str) -> str:
        if text.startswith("0x"):
            digits = text[2:]
            if len(digits) != 32 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                self._error("hex key must be 128 bits (32 hex digits) long")
            return digits.lower()
        digest = hashlib.md5(text.encode()).digest()
        words = [int.from_bytes(digest[i:i + 4], "little") for i in range(0, 16, 4)]
        return "".join("%08x" % w for w in words)

    def _filter_opts(self, spec: _Spec) -> None:  # noqa: C901 - one grammar rule
        o = spec.opts
        while True:
            tok = self.tok
            if tok.kind == "!":
                self._advance()
                self._expect("tagged")
                o["tagged"] = (self._string(), True)
                continue
            if tok.kind == "(" and "state" in o and o["state"][0] != "none" and not o["state"][1]:
                # pfctl prints "keep state probability 50% (max 10)": read its own output back
                o["state"] = (o["state"][0], self._state_opt_list())
                continue
            if tok.kind != "word":
                return
            w = tok.value
            if w in ("user", "group"):
                self._advance()
                items = self._ugid_list(w)
                key = "uids" if w == "user" else "gids"
                current = getattr(spec, key)
                setattr(spec, key, items + (current or []))
            elif w == "flags":
                self._advance()
                o["flags"] = self._flags()
            elif w in ("icmp-type", "icmp6-type"):
                self._advance()
                spec.icmps = (spec.icmps or []) + self._icmp_list(w == "icmp6-type")
            elif w == "tos":
                self._advance()
                o["tos"] = self._tos()
            elif w in ("keep", "modulate", "synproxy"):
                self._advance()
                self._expect("state")
                kind = {"keep": "keep", "modulate": "modulate", "synproxy": "synproxy"}[w]
                state_opts = self._state_opt_list() if self.tok.kind == "(" else ()
                o["state"] = (kind, state_opts)
            elif w == "no":
                self._advance()
                self._expect("state")
                o["state"] = ("none", ())
            elif w == "fragment":
                self._advance()
                o["fragment"] = True
            elif w == "allow-opts":
                self._advance()
                o["allow_opts"] = True
            elif w == "label":
                self._advance()
                o.setdefault("labels", []).append(self._string())
            elif w == "queue":
                self._advance()
                o["queue"] = self._queue_names()
            elif w == "tag":
                self._advance()
                o["tag"] = self._string()
            elif w == "tagged":
                self._advance()
                o["tagged"] = (self._string(), False)
            elif w == "probability":
                self._advance()
                o["probability"] = self._probability()
            elif w == "rtable":
                self._advance()
                o["rtable"] = self._number(0, 0xFFFF, "rtable")
            elif w == "divert-to":
                self._advance()
                o["divert"] = self._divert()
            elif w == "divert-reply":
                self._advance()
                o["divert"] = Divert(reply=True)
            elif w == "prio":
                self._advance()
                o["prio"] = self._number(0, names.PRIO_MAX, "prio")
            elif w == "set":
                self._advance()
                self._set_opt(o)
            elif w == "scrub":
                self._advance()
                o["scrub"] = self._scrub_paren()
            elif w == "once":
                self._advance()
                o["once"] = True
            elif w == "max-pkt-rate":
                self._advance()
                a = self._number(0, 0xFFFFFFFF)
                self._expect_kind("/")
                o["max_pkt_rate"] = (a, self._number(0, 0xFFFFFFFF))
            elif w == "max-pkt-size":
                self._advance()
                o["max_pkt_size"] = self._number(0, 65535, "max-pkt-size")
            elif w == "received-on":
                self._advance()
                o["received_on"] = self._if_item()
            elif w == "ridentifier":
                self._advance()
                o["ridentifier"] = self._number(0, 0xFFFFFFFF, "ridentifier")
            elif w in ("dnpipe", "dnqueue"):
                self._advance()
                if self.tok.kind == "(":
                    self._advance()
                    a = self._number()
                    self._expect_kind(",")
                    z = self._number()
                    self._expect_kind(")")
                    o[w] = (a, z)
                else:
                    o[w] = (self._number(),)
            elif w in ("route-to", "reply-to", "dup-to"):
                self._route_opt(spec)
            elif w in ("nat-to", "rdr-to", "binat-to"):
                self._advance()
                hosts = self._redirpool()
                ports = None
                if self._accept("port"):
                    ports = self._redir_port()
                opts = self._pool_opts()
                spec.translations.append((w, hosts, ports, opts, tok.line))
            elif w == "af-to":
                self._advance()
                af = self._string()
                if af not in ("inet", "inet6"):
                    self._syntax()
                self._expect("from")
                hosts = self._redirpool()
                opts = self._pool_opts()
                to_hosts = None
                if self._accept("to"):
                    to_hosts = self._redirpool()
                    self._pool_opts()
                spec.translations.append(("af-to", hosts, None, opts, tok.line, af, to_hosts))
            elif w in ("state", "source") and self._peek_word("limiter"):
                self._advance()
                self._advance()
                if self._accept("id"):
                    ident = self._number()
                    lim = next((l for (k, _), l in self.limiters.items() if k == w and l.id == ident), None)
                    name = str(ident)
                else:
                    name = self._string()
                    lim = self.limiters.get((w, name))
                if lim is None:
                    self._error(f"{w} limiter {name} not defined")
                text = f"{w} limiter id {lim.id}"
                if self.tok.kind == "(":
                    self._advance()
                    inner = []
                    while self.tok.kind != ")":
                        if self.tok.kind in ("nl", "eof"):
                            self._syntax()
                        inner.append(self._advance().value)
                    self._advance()
                    text += " (" + " ".join(inner) + ")"
                o.setdefault("limiters", []).append(text)
            else:
                return

    def _peek_word(self, word: str) -> bool:
        nxt = self.lexer.next()
        self.lexer.push_back(nxt)
        return nxt.kind == "word" and nxt.value == word

    def _redirpool(self) -> list[ResolvedHost]:
        return self._braced_list(self._host, flatten=True)

    def _redir_port(self) -> tuple[int, int, bool]:
        text = self._string()
        if ":" in text:
            low_text, _, high_text = text.partition(":")
            low = self._port_value(low_text)
            if high_text == "*":
                return (low, 0, True)
            high = self._port_value(high_text)
            if low > high:
                self._error("invalid port range")
            return (low, high, False)
        low = self._port_value(text)
        if self.tok.kind == ":":
            self._advance()
            if self.tok.kind == "word" and self.tok.value == "*":
                self._advance()
                return (low, 0, True)
            high = self._port_value(self._string())
            return (low, high, False)
        return (low, low, False)

    def _set_opt(self, o: dict) -> None:
        if self.tok.kind == "(":
            # the printed form: set ( prio N, prio(a, b), tos ... )
            self._advance()
            while self.tok.kind != ")":
                if self.tok.kind in ("nl", "eof"):
                    self._syntax()
                self._set_opt(o)
                self._accept_kind(",")
            self._advance()
            return
        if self._accept("prio"):
            if self.tok.kind == "(":
                self._advance()
                p1 = self._number(0, names.PRIO_MAX, "prio")
                p2 = p1
                if self.tok.kind != ")":
                    self._accept_kind(",")
                    p2 = self._number(0, names.PRIO_MAX, "prio")
                self._expect_kind(")")
                o["set_prio"] = SetPrio(p1, p2)
            else:
                p = self._number(0, names.PRIO_MAX, "prio")
                o["set_prio"] = SetPrio(p, p)
        elif self._accept("tos"):
            o["set_tos"] = self._tos()
        elif self._accept("queue"):
            o["queue"] = self._queue_names()
        else:
            self._syntax()

    def _queue_names(self) -> tuple[str, ...]:
        """``queue NAME`` or ``queue (NAME[, PRIORITY-NAME])``, after the keyword (filter and set options)."""
        if self.tok.kind != "(":
            return (self._string(),)
        self._advance()
        q1 = self._string()
        q2 = None
        if self._accept_kind(","):
            q2 = self._string()
        self._expect_kind(")")
        return (q1, q2) if q2 else (q1,)

    def _divert(self) -> Divert:
        line = self.tok.line
        if self.tok.kind == "number" and not self._peek_word("port"):
            return Divert(port=self._number(1, 65535, "port"))
        text = self._string()
        if self._accept("port"):
            port = self._port_value(self._string())
            try:
                hosts = resolve(text, self.view)
            except HostError as error:
                self._error("could not parse host specification", line, pre=str(error))
            addr = hosts[0].address.address if hosts and isinstance(hosts[0].address, HostAddress) else None
            return Divert(address=addr, port=port)
        port = self._port_value(text)
        return Divert(port=port)

    def _probability(self) -> float:
        tok = self.tok
        text = self._string()
        percent = text.endswith("%")
        try:
            value = float(text[:-1] if percent else text)
        except ValueError:
            self._error(f"invalid probability: {text}", tok.line)
        if percent:
            value *= 0.01
        if not 0.0 <= value <= 1.0:
            self._error(f"invalid probability: {text}", tok.line)
        return value

    def _tos(self) -> int:
        tok = self.tok
        text = self._string()
        if text in names.TOS_NAMES:
            return names.TOS_NAMES[text]
        try:
            value = int(text, 0)
        except ValueError:
            value = -1
        if not 0 <= value <= 255:
            self._error(f"illegal tos value {text}", tok.line)
        return value

    def _flags(self) -> TcpFlags:
        tok = self.tok
        if self._accept("any"):
            return TcpFlags(0, 0)
        first = ""
        if self.tok.kind != "/":
            first = self._string()
        if self._accept_kind("/"):
            second = self._string()
        else:
            second = None
        f = names.parse_flags(first) if first else 0
        m = names.parse_flags(second) if second else 0xFF
        if f is None or m is None:
            self._error("bad flags", tok.line)
        if second is None and not first:
            self._syntax()
        return TcpFlags(f, m)

    def _ugid_list(self, what: str) -> list[IdMatch]:
        def item() -> IdMatch:
            if self.tok.kind in ("=", "!=", "<", "<=", ">", ">="):
                op = self._advance().kind
                return IdMatch(op, self._ugid_value(what))
            low = self._ugid_value(what)
            if self.tok.kind in ("<>", "><", ":"):
                op = self._advance().kind
                return IdMatch(op, low, self._ugid_value(what))
            return IdMatch("=", low)

        return self._braced_list(item)

    def _ugid_value(self, what: str) -> int:
        tok = self.tok
        if tok.kind == "number":
            self._advance()
            return tok.number
        name = self._string()
        if name == "unknown":
            return names.UID_MAX
        value = data.user_id(name) if what == "user" else data.group_id(name)
        if value is None:
            self._error(f"unknown {what} {name}", tok.line)
        return value

    def _icmp_list(self, v6: bool) -> list[tuple[int, int | None, bool]]:
        def item() -> tuple[int, int | None, bool]:
            tok = self.tok
            if tok.kind == "number":
                self._advance()
                typ = tok.number
                if not 0 <= typ <= 255:
                    self._error("illegal icmp-type %d" % typ, tok.line)
            else:
                name = self._string()
                found = data.icmp_type_number(name, v6)
                if found is None:
                    self._error(f"unknown icmp{'6' if v6 else ''}-type {name}", tok.line)
                typ = found
            code = None
            if self._accept("code"):
                ctok = self.tok
                if ctok.kind == "number":
                    self._advance()
                    code = ctok.number
                    if not 0 <= code <= 255:
                        self._error("illegal icmp-code %d" % code, ctok.line)
                else:
                    cname = self._string()
                    code = data.icmp_code_number(typ, cname, v6)
                    if code is None:
                        self._error(f"unknown icmp-code {cname}", ctok.line)
            return (typ, code, v6)

        return self._braced_list(item)

    def _state_opt_list(self, parens: bool = True) -> tuple[StateOption, ...]:
        if parens:
            self._expect_kind("(")
        out: list[StateOption] = []
        while True:
            tok = self.tok
            w = self._string()
            if w == "max":
                out.append(StateOption("max", self._number(0, 0xFFFFFFFF)))
            elif w == "no-sync":
                out.append(StateOption("no-sync"))
            elif w == "source-track":
                mode = "rule"
                if self._word("rule", "global"):
                    mode = self._advance().value
                out.append(StateOption("source-track", text=mode))
            elif w in ("max-src-states", "max-src-conn", "max-src-nodes"):
                out.append(StateOption(w, self._number(0, 0xFFFFFFFF)))
            elif w == "max-src-conn-rate":
                a = self._number(0, 0xFFFFFFFF)
                self._expect_kind("/")
                out.append(StateOption(w, a, self._number(0, 0xFFFFFFFF)))
            elif w == "overload":
                self._expect_kind("<")
                name = self._string()
                self._expect_kind(">")
                flush = flush_global = False
                if self._accept("flush"):
                    flush = True
                    flush_global = self._accept("global")
                out.append(StateOption("overload", text=name, flush=flush, flush_global=flush_global))
            elif w in ("if-bound", "floating", "sloppy", "pflow", "allow-related"):
                out.append(StateOption(w))
            elif w in TIMEOUTS:
                out.append(StateOption(w, self._number(0, 0x7FFFFFFF)))
            else:
                self._error("syntax error", tok.line)
            if self._accept_kind(","):
                continue
            if parens:
                self._expect_kind(")")
            return tuple(out)

    def _scrub_paren(self) -> ScrubOptions:
        self._expect_kind("(")
        sc = ScrubOptions()
        while self.tok.kind != ")":
            sc = self._scrub_opt(sc)
            self._accept_kind(",")
        self._advance()
        return sc

    def _scrub_opt(self, sc: ScrubOptions) -> ScrubOptions:
        w = self._string()
        if w == "no-df":
            return replace(sc, no_df=True)
        if w == "random-id":
            return replace(sc, random_id=True)
        if w == "min-ttl":
            return replace(sc, min_ttl=self._number(0, 255, "min-ttl"))
        if w == "max-mss":
            return replace(sc, max_mss=self._number(0, 65535, "max-mss"))
        if w == "set-tos":
            return replace(sc, set_tos=self._tos())
        if w == "reassemble":
            self._expect("tcp")
            return replace(sc, reassemble_tcp=True)
        if w == "fragment":
            if self._accept("reassemble"):
                return replace(sc, fragment="reassemble")
            if self._accept("crop"):
                return replace(sc, fragment="crop")
            if self._accept("drop-ovl"):
                return replace(sc, fragment="drop-ovl")
            if self._accept("no"):
                self._expect("reassemble")
                return replace(sc, fragment="no-reassemble")
        self._syntax()
        return sc

    # ------------------------------------------------------------------ scrub
    def _scrub_stmt(self, b: _Builder, tok: Token) -> None:
        self._scrub(b, tok.line, negated=False)

    def _scrub(self, b: _Builder, line: int, negated: bool) -> None:
        spec = _Spec(line=line, kind="scrub")
        spec.negated = negated
        if self._word("in", "out"):
            spec.direction = self._advance().value
        self._logquick(spec)
        if self._accept("on"):
            spec.interfaces = self._interface_list()
        if self._word("inet", "inet6"):
            spec.af = self._advance().value
        if self._accept("proto"):
            spec.protos = self._proto_list()
        self._fromto(spec)
        sc = ScrubOptions(fragment=None)
        while self.tok.kind == "word":
            if self._word("no-df", "random-id", "min-ttl", "max-mss", "set-tos", "reassemble", "fragment"):
                sc = self._scrub_opt(sc)
            elif self._accept("label"):
                spec.opts.setdefault("labels", []).append(self._string())
            else:
                break
        if sc.fragment is None:
            sc = replace(sc, fragment="reassemble")
        spec.opts["scrub"] = sc
        spec.end_line = self._end_of_statement()
        _expand.expand_scrub(self, b, spec)

    # ------------------------------------------------------------------ translation rules
    def _translation_stmt(self, b: _Builder, tok: Token) -> None:
        self._translation(b, tok.value, tok.line, negated=False)

    def _translation(self, b: _Builder, kind: str, line: int, negated: bool) -> None:
        spec = _Spec(line=line, kind=kind)
        spec.negated = negated
        if self._accept("pass"):
            spec.pass_ = True
            if self._accept("log"):
                spec.log = self._log_opts()
        elif self._accept("log"):
            spec.log = self._log_opts()
        if self._accept("on"):
            spec.interfaces = self._interface_list()
        if self._word("inet", "inet6"):
            spec.af = self._advance().value
        if self._accept("proto"):
            spec.protos = self._proto_list()
        self._fromto(spec)
        while self._word("tag", "tagged", "rtable") or self.tok.kind == "!":
            if self.tok.kind == "!":
                self._advance()
                self._expect("tagged")
                spec.opts["tagged"] = (self._string(), True)
            else:
                w = self._advance().value
                if w == "tag":
                    spec.opts["tag"] = self._string()
                elif w == "tagged":
                    spec.opts["tagged"] = (self._string(), False)
                else:
                    spec.opts["rtable"] = self._number(0, 0xFFFF, "rtable")
        if self.tok.kind == "->":
            arrow_line = self.tok.line
            self._advance()
            if negated:
                self._error("syntax error", arrow_line)
            spec.redirect = self._redirpool()
            if self._accept("port"):
                spec.redirect_ports = self._redir_port()
            spec.pool_opts = self._pool_opts()
        spec.end_line = self._end_of_statement()
        _expand.expand_translation(self, b, spec)

    # ------------------------------------------------------------------ antispoof
    def _antispoof(self, b: _Builder, tok: Token) -> None:
        spec = _Spec(line=tok.line, kind="filter", action="block")
        self._logquick(spec)
        self._expect("for")
        ifs: list[tuple[str, bool]] = self._braced_list(self._antispoof_if)
        if self._word("inet", "inet6"):
            spec.af = self._advance().value
        while self._word("label", "ridentifier"):
            if self._accept("label"):
                spec.opts.setdefault("labels", []).append(self._string())
            else:
                self._advance()
                spec.opts["ridentifier"] = self._number()
        spec.end_line = self._end_of_statement()
        _expand.expand_antispoof(self, b, spec, ifs)

    def _antispoof_if(self) -> tuple[str, bool]:
        if self.tok.kind == "(":
            self._advance()
            name = self._string()
            self._expect_kind(")")
            return name, True
        return self._string(), False

    # ------------------------------------------------------------------ anchors
    def _anchor(self, b: _Builder, tok: Token) -> None:
        kind = tok.value
        name = ""
        if self.tok.kind in ("string",) or (
            self.tok.kind == "word"
            and self.tok.value not in ("in", "out", "log", "quick", "on", "inet", "inet6", "proto", "from", "to", "all")
        ):
            name = self._advance().value
        spec = _Spec(line=tok.line, kind="anchor", action=kind)
        spec.name = name
        if kind == "anchor":
            self._rule_body(spec)
        else:
            if self._accept("on"):
                spec.interfaces = self._interface_list()
            if self._word("inet", "inet6"):
                spec.af = self._advance().value
            if self._accept("proto"):
                spec.protos = self._proto_list()
            self._fromto(spec)
        if self.tok.kind == "{":
            self._advance()
            if self.anchor_depth >= MAX_ANCHOR_DEPTH:
                self._error(f"anchor depth exceeded ({MAX_ANCHOR_DEPTH})", tok.line)
            if name and ("/" in name.strip("/") or name.endswith("*")):
                self._error("anchor names with wildcards or paths cannot be inline")
            child_path = name or f"_{b.inline_count + 1}"
            b.inline_count += 1
            body = _Builder(path=f"{b.path}/{child_path}" if b.path else child_path)
            saved_policy = self.blockpolicy
            self.anchor_depth += 1
            try:
                self._statements(body, inline=True)
            finally:
                self.anchor_depth -= 1
            self.blockpolicy = saved_policy
            spec.body = body
        spec.end_line = self._end_of_statement()
        _expand.expand_anchor(self, b, spec)

    def _load(self, b: _Builder, tok: Token) -> None:
        self._expect("anchor")
        name = self._string()
        self._expect("from")
        path = self._string()
        line = self._end_of_statement()
        # pfctl loads these after the main ruleset, each as a ruleset of its own
        self.load_anchors.append((name, path, line, self.lexer.filename))

    # ------------------------------------------------------------------ ether
    def _ether(self, b: _Builder, tok: Token) -> None:
        action = self._string()
        if action not in ("pass", "block", "anchor"):
            self._syntax()
        line = tok.line
        rule: dict = {"action": action if action != "anchor" else "pass"}
        if action == "anchor":
            rule["anchor"] = self._string()
        if self._word("in", "out"):
            rule["direction"] = self._advance().value
        if self._accept("quick"):
            rule["quick"] = True
        if self._accept("on"):
            rule["interface"] = self._if_item()
        if self._accept("bridge-to"):
            rule["bridge_to"] = self._string()
        if self._accept("proto"):
            p = self._string()
            try:
                rule["proto"] = int(p, 0)
            except ValueError:
                self._error(f"unknown ethertype {p}")
        if self._accept("from"):
            rule["src"] = (self._mac(),)
        if self._accept("to"):
            rule["dst"] = (self._mac(),)
        if self._accept("l3"):
            spec = _Spec(line=line, kind="filter")
            self._fromto(spec)
            if spec.src_hosts:
                rule["l3_src"] = HostMatch(spec.src_hosts[0].address, spec.src_hosts[0].negated)
            if spec.dst_hosts:
                rule["l3_dst"] = HostMatch(spec.dst_hosts[0].address, spec.dst_hosts[0].negated)
        labels: list[str] = []
        while self.tok.kind == "word":
            w = self._advance().value
            if w == "label":
                labels.append(self._string())
            elif w == "ridentifier":
                rule["ridentifier"] = self._number(0, 0xFFFFFFFF)
            elif w == "tag":
                rule["tag"] = self._string()
            elif w == "tagged":
                rule["tagged"] = self._string()
            elif w == "queue":
                rule["queue"] = self._string()
            elif w == "dnpipe":
                rule["dnpipe"] = self._number()
            elif w == "dnqueue":
                rule["dnqueue"] = self._number()
            else:
                self._syntax()
        self._end_of_statement()
        number = b.counters["ether"]
        b.counters["ether"] += 1
        b.ether.append(EtherRule(origin=self._origin(line), number=number, labels=tuple(labels), **rule))

    def _mac(self) -> MacAddress:
        negated = self._accept_kind("!")
        text = self._string()
        addr_text, _, mask_text = text.partition("&")
        addr = _parse_mac(addr_text)
        mask = _parse_mac(mask_text) if mask_text else None
        if addr is None or (mask_text and mask is None):
            self._error("invalid MAC address")
        return MacAddress(addr, mask, negated)

    # ------------------------------------------------------------------ altq
    def _altq(self, b: _Builder, tok: Token) -> None:
        from pfha.conf.altq import parse_altq

        parse_altq(self, tok)

    def _queue(self, b: _Builder, tok: Token) -> None:
        from pfha.conf.altq import parse_queue

        parse_queue(self, tok)

    # ------------------------------------------------------------------ limiters
    def _limiter(self, b: _Builder, tok: Token) -> None:
        kind = tok.value
        self._expect("limiter")
        name = self._string()
        self._expect("id")
        ident = self._number(1, 255, "id")
        parts = [f"{kind} limiter {name} id {ident}"]
        while self.tok.kind == "word":
            w = self._advance().value
            if w == "limit":
                parts.append(f"limit {self._number(0, 0xFFFFFFFF)}")
            elif w == "rate":
                a = self._number()
                self._expect_kind("/")
                parts.append(f"rate {a}/{self._number()}")
            else:
                parts.append(w)
                if self.tok.kind == "number":
                    parts.append(self._advance().value)
        self._end_of_statement()
        lim = Limiter(kind, name, ident, self._origin(tok.line), " ".join(parts))  # type: ignore[arg-type] # "state"/"source" only
        self.limiters[(kind, name)] = lim
        self.definitions.append(lim)

    # ------------------------------------------------------------------ results
    def ruleset(self) -> Ruleset:
        return _expand.build_ruleset(self, self.main)

    def build_options(self) -> Options:
        o = self.options
        return Options(
            block_policy=o.get("block-policy", "drop"),
            state_policy=o.get("state-policy", "floating"),
            optimization=o.get("optimization", "normal"),
            ruleset_optimization=o.get("ruleset-optimization", "basic"),
            timeouts=tuple(self.timeouts),
            limits=tuple(self.limits),
            skip=tuple(self.skip),
            loginterface=o.get("loginterface"),
            hostid=o.get("hostid"),
            debug=o.get("debug"),
            reassemble=(o["reassemble"] == "yes") if "reassemble" in o else None,
            reassemble_no_df=bool(o.get("reassemble_no_df")),
            syncookies=o.get("syncookies"),
            fingerprints=o.get("fingerprints"),
            state_defaults=self.state_defaults,
            keep_counters=bool(o.get("keepcounters")),
            fail_policy=o.get("fail-policy"),
            require_order=o.get("require-order"),
        )


def _parse_mac(text: str) -> bytes | None:
    parts = text.split(":")
    if len(parts) != 6:
        return None
    try:
        values = [int(p, 16) for p in parts]
    except ValueError:
        return None
    if any(not 0 <= v <= 255 for v in values):
        return None
    return bytes(values)


_STATEMENTS = {
    "set": Parser._set,
    "table": Parser._table,
    "pass": Parser._filter,
    "block": Parser._filter,
    "match": Parser._filter,
    "scrub": Parser._scrub_stmt,
    "nat": Parser._translation_stmt,
    "rdr": Parser._translation_stmt,
    "binat": Parser._translation_stmt,
    "antispoof": Parser._antispoof,
    "anchor": Parser._anchor,
    "nat-anchor": Parser._anchor,
    "rdr-anchor": Parser._anchor,
    "binat-anchor": Parser._anchor,
    "load": Parser._load,
    "ether": Parser._ether,
    "altq": Parser._altq,
    "queue": Parser._queue,
    "state": Parser._limiter,
    "source": Parser._limiter,
}


# ==================================================================================== API
def _load_anchors(parser: Parser) -> None:
    """``load anchor NAME from FILE``: parsed after the main ruleset, like pfctl_load_anchors()."""
    for name, path, line, origin_file in parser.load_anchors:
        # pfctl keeps only the -D macros (persistent symbols) for the files parsed after
        sub = Parser(parser.view, parser.include_base, {n: parser.macros[n] for n in parser.persistent})
        sub.main.path = name
        try:
            text = sub._read(path, path)
        except ParseError as error:
            parser.messages.append(f"pfctl: {error.message.removeprefix('cannot open ')}")
            parser.errors.append(ParseError(f"cannot load anchor {name} from {path}", origin_file, line))
            parser.messages.append(f"{origin_file}:{line}: cannot load anchor {name} from {path}")
            continue
        _guarded(sub, text, path)
        if sub.errors:
            parser.errors.extend(sub.errors)
            parser.messages.extend(sub.messages)
            continue
        parser.loaded.append((name, path, sub.ruleset()))


def _finish(parser: Parser) -> Ruleset:
    _load_anchors(parser)
    if parser.errors:
        first = parser.errors[0]
        raise ParseError(
            first.message,
            first.filename,
            first.line,
            messages=tuple(parser.messages),
            output=_partial_output(parser),
        )
    ruleset = parser.ruleset()
    unused = tuple(name for name in parser.macros if name not in parser.used_macros)
    return replace(ruleset, unused_macros=unused) if unused else ruleset


def _partial_output(parser: Parser) -> str:
    from pfha.conf.printer import format_definition

    out = [m + "\n" for m in parser.messages]
    for d in parser.definitions:
        text = format_definition(d)
        if text:
            out.append(text + "\n")
    return "".join(out)


def parse_text(text: str, filename: str = "pf.conf", interfaces: InterfaceView | None = None, *, include_base=None,
               macros: Mapping[str, str] | None = None) -> Ruleset:
    """Parse pf.conf text into an expanded :class:`Ruleset` (raises :class:`ParseError`).
    ``macros``: definitions given on the command line (``pfctl -D``), which the file cannot change."""
    parser = Parser(interfaces if interfaces is not None else InterfaceView.empty(), include_base, macros)
    _guarded(parser, text, filename)
    return _finish(parser)


def _guarded(parser: Parser, text: str, filename: str) -> None:
    """Parse, turning resource exhaustion by hostile input into a clean error.

    The cyclic garbage collector is paused meanwhile (:func:`pfha.gc_pause.gc_paused`):
    parsing allocates many small acyclic objects that all stay alive, and repeated collections
    over them cost a third of the time on large rulesets (measured in bench/bench_conf.py).
    """
    try:
        with gc_paused():
            parser.parse_text(text, filename)
    except RecursionError:
        raise ParseError("ruleset nested too deeply", filename) from None
    except MemoryError:
        raise ParseError("ruleset too large", filename) from None


def parse_file(path, interfaces: InterfaceView | None = None, *, include_base=None, display: str | None = None,
               macros: Mapping[str, str] | None = None) -> Ruleset:
    """Parse a pf.conf file. Errors name the file as given (pfctl prints the -f argument);
    ``macros`` as for :func:`parse_text`."""
    parser = Parser(interfaces if interfaces is not None else InterfaceView.empty(), include_base, macros)
    name = display if display is not None else ("stdin" if str(path) == "-" else str(path))  # as pushfile()
    try:
        raw = Path(path).read_bytes() if str(path) != "-" else __import__("sys").stdin.buffer.read()
    except OSError as error:
        raise ParseError(f"cannot open the main config file!: {error.strerror or error}", name) from None
    _guarded(parser, raw.decode("utf-8", errors="surrogateescape"), name)
    return _finish(parser)
