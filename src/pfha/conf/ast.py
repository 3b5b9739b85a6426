"""The typed, immutable form of a parsed and expanded pf.conf.

Everything downstream (the reference engine, the nftables compiler, the audit) reads pf.conf
through these values. They are what pfctl holds after parsing and *expansion*: one rule per
combination of the lists written in the file (pf.conf(5): "lists are expanded"), interface
names resolved to addresses through the injected interface view, dynamic ``(if)`` addresses
kept symbolic, defaults applied (``keep state``, ``flags S/SA``, block policy) exactly as
pfctl's parse.y applies them.

Rules of this module:
- values only: frozen, slotted dataclasses and tuples; no I/O, no parsing, no printing;
- fields are added, never renamed or removed (other packages build on them);
- numbers are stored as numbers (ports, protocols, uids), names only where pf keeps names
  (interfaces, tables, tags, queues, labels);
- every rule carries its :class:`Origin` (file, line) and its number in its ruleset.
"""

from __future__ import annotations

import dataclasses
import inspect
import ipaddress
from dataclasses import dataclass
from typing import Any, Callable, Literal, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

Family = Literal["inet", "inet6"]
Direction = Literal["in", "out"]

#: pf's address modifiers on interface names (``em0:network`` ...): pfi_kif aflags.
IfModifier = Literal["network", "broadcast", "peer", "0"]


# Building the values -------------------------------------------------------------------
#
# Every class here is a frozen, slotted dataclass whose ``__init__`` stores each field through
# its slot descriptor: the dataclass one calls ``object.__setattr__`` per field (a 44-field Rule
# took about 10 us to build, a tenth of the parse time of a 10,000-rule file).
#
# Importing this module is a cost every ``pfha check`` and ``pfctl -nf`` pays, and nearly all
# of it is class creation: ``dataclass()`` writes each method as source text and compiles it
# with ``exec`` (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__`` and
# ``__delattr__``: six compilations for each of the 42 classes). The fast ``__init__`` used to
# be made after the dataclass one, so ``__init__`` was compiled twice per class (plus an
# ``inspect.signature`` each); :func:`_value` asks the dataclass for no ``__init__`` and writes
# the fast one straight from the fields, then records ``init=True`` as the class's dataclass
# parameters (which is what the class does). Same signatures, defaults, errors and
# immutability (tests/unit/test_conf_ast.py).


def _fast_init_fn(cls: type, fields: tuple[dataclasses.Field, ...]) -> Callable[..., None]:
    """The ``__init__`` the dataclass would write for ``fields``, storing through the slots."""
    namespace: dict[str, Any] = {}
    args: list[str] = []
    kw_only = False
    required_after_default = None
    for f in fields:
        if not f.init:
            continue
        if f.kw_only and not kw_only:
            args.append("*")
            kw_only = True
        if f.default is dataclasses.MISSING:
            if not kw_only and required_after_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
            args.append(f.name)
        else:
            required_after_default = required_after_default or not kw_only
            namespace[f"_d_{f.name}"] = f.default
            args.append(f"{f.name}=_d_{f.name}")
    body = []
    for f in fields:
        namespace[f"_s_{f.name}"] = getattr(cls, f.name).__set__
        body.append(f"    _s_{f.name}(self, {f.name})")
    source = f"def __init__(self, {', '.join(args)}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # noqa: S102 - generated from the class's own fields
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__doc__ = None
    return init


def _plain_storing(cls: type) -> bool:
    """Whether the dataclass ``__init__`` would only store its arguments (nothing to run)."""
    return not hasattr(cls, "__post_init__") and all(
        f.init and f.default_factory is dataclasses.MISSING for f in dataclasses.fields(cls))


def fast_init(cls: type) -> type:
    """Give a frozen, slotted dataclass (already made) the slot-storing ``__init__``: same
    signature, defaults and errors as the dataclass one; nothing else changes. Classes whose
    ``__init__`` does more than store (``__post_init__``, default factories) keep theirs."""
    if _plain_storing(cls):
        init = _fast_init_fn(cls, dataclasses.fields(cls))
        init.__doc__ = cls.__init__.__doc__  # type: ignore[misc]
        cls.__init__ = init  # type: ignore[misc]
    return cls


def _value(cls: type | None = None, /, *, kw_only: bool = False) -> Any:
    """``@dataclass(frozen=True, slots=True[, kw_only=True])`` with :func:`fast_init`'s
    ``__init__``, compiled once instead of after the dataclass's own."""

    def make(cls: type) -> type:
        plain = not hasattr(cls, "__post_init__") and not any(isinstance(v, dataclasses.Field) for v in vars(cls).values())
        undocumented = cls.__dict__.get("__doc__") is None
        made = dataclass(cls, init=False, frozen=True, slots=True, kw_only=kw_only)
        if not (plain and _plain_storing(made) and len(made.__dataclass_fields__) == len(dataclasses.fields(made))):
            # field(), __post_init__, InitVar, ClassVar: not values as this module means them
            raise TypeError(f"{cls.__name__}: an AST value only stores its fields; use @dataclass")
        made.__init__ = _fast_init_fn(made, dataclasses.fields(made))  # type: ignore[misc]
        made.__dataclass_params__.init = True  # type: ignore[attr-defined]
        if undocumented:  # the dataclass documents a class by its __init__'s annotated signature
            kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            made.__doc__ = made.__name__ + str(inspect.Signature([
                inspect.Parameter(f.name, kinds[bool(f.kw_only)], annotation=f.type,
                                  default=inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default)
                for f in dataclasses.fields(made)]))
        return made

    return make if cls is None else make(cls)


@_value
class Origin:
    """Where a rule or definition was written."""

    file: str
    line: int


# --------------------------------------------------------------------------------------------
# Addresses
# --------------------------------------------------------------------------------------------


@_value
class AnyAddress:
    """``any``: matches every address."""


@_value
class HostAddress:
    """An address with a prefix length (pf keeps address bits masked: 10.1/8 is 10.0.0.0/8).

    ``prefixlen`` is 32/128 for a single host. ``address`` is already masked.
    """

    address: IPAddress
    prefixlen: int

    @property
    def family(self) -> Family:
        return "inet" if self.address.version == 4 else "inet6"

    @property
    def network(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return ipaddress.ip_network((self.address, self.prefixlen), strict=False)


@_value
class RangeAddress:
    """``a.b.c.d - e.f.g.h``: an inclusive address range."""

    start: IPAddress
    end: IPAddress

    @property
    def family(self) -> Family:
        return "inet" if self.start.version == 4 else "inet6"


@_value
class TableAddress:
    """``<name>``: a lookup in a table."""

    name: str


@_value
class DynamicAddress:
    """``(if)``, ``(if:network)``...: the interface's addresses, tracked by the kernel.

    ``interface`` may be ``self`` or an interface group. ``prefixlen`` is an explicit
    ``(if)/24`` mask, None when absent. ``family`` narrows by the rule's address family.
    """

    interface: str
    modifiers: tuple[IfModifier, ...] = ()
    prefixlen: int | None = None
    family: Family | None = None


@_value
class NoRoute:
    """``no-route``: the address has no route."""


@_value
class UrpfFailed:
    """``urpf-failed``: the reverse path check on the source failed."""


Address = Union[AnyAddress, HostAddress, RangeAddress, TableAddress, DynamicAddress, NoRoute, UrpfFailed]


def address_family(addr: Address) -> Family | None:
    """The family an address pins a rule to (None: either)."""
    if isinstance(addr, (HostAddress, RangeAddress)):
        return addr.family
    if isinstance(addr, DynamicAddress):
        return addr.family
    return None


@_value
class HostMatch:
    """One side's address test: ``[!] address``."""

    address: Address = AnyAddress()
    negated: bool = False


@_value
class PortMatch:
    """A port (or uid/gid) test, host byte order.

    ``op`` is one of ``= != < <= > >= >< <> :``; ``high`` is set for the binary operators.
    """

    op: str
    low: int
    high: int | None = None


@_value
class Endpoint:
    """``from``/``to`` side of a rule after expansion: one host test, one port test."""

    host: HostMatch = HostMatch()
    port: PortMatch | None = None
    os: str | None = None  # ``from ... os "name"`` (source only)


ANY_ENDPOINT = Endpoint()


# --------------------------------------------------------------------------------------------
# Pieces of rules
# --------------------------------------------------------------------------------------------


@_value
class InterfaceMatch:
    """``on [!] name`` (name may be an interface group, or ``any``)."""

    name: str
    negated: bool = False


@_value
class Log:
    """``log [(all, matches, user, to pflogN)]``."""

    all: bool = False
    matches: bool = False
    user: bool = False
    to: str | None = None


@_value
class TcpFlags:
    """``flags X/Y`` as bit masks (FIN=0x01 SYN=0x02 RST=0x04 PUSH=0x08 ACK=0x10 URG=0x20
    ECE=0x40 CWR=0x80). ``flags any`` is ``TcpFlags(0, 0)``."""

    set: int
    mask: int


@_value
class IcmpMatch:
    """``icmp-type T [code C]`` / ``icmp6-type``; numbers, ``code`` None when absent."""

    type: int
    code: int | None = None
    v6: bool = False


@_value
class BlockReturn:
    """How a block rule answers. ``kind``: ``drop``, ``return``, ``return-rst``,
    ``return-icmp`` (``icmp_code``/``icmp6_code`` hold numbers; None = default port-unr)."""

    kind: Literal["drop", "return", "return-rst", "return-icmp", "return-icmp6"] = "drop"
    ttl: int | None = None
    icmp_code: int | None = None
    icmp6_code: int | None = None


@_value
class StateOption:
    """One option inside ``keep state ( ... )``.

    ``name``: ``max``, ``no-sync``, ``source-track``, ``max-src-nodes``, ``max-src-states``,
    ``max-src-conn``, ``max-src-conn-rate``, ``overload``, ``if-bound``, ``floating``,
    ``sloppy``, ``pflow``, ``allow-related``, ``state-limiter``, ``source-limiter``, or a
    timeout name (``tcp.established``...). ``value``/``value2`` hold the numbers (rate a/b),
    ``text`` a table or limiter name or ``rule``/``global``; ``flush``/``flush_global`` for
    ``overload <t> flush [global]``.
    """

    name: str
    value: int | None = None
    value2: int | None = None
    text: str | None = None
    flush: bool = False
    flush_global: bool = False


@_value
class StateSpec:
    """``no state`` / ``keep state`` / ``modulate state`` / ``synproxy state`` and options."""

    kind: Literal["none", "keep", "modulate", "synproxy"] = "keep"
    options: tuple[StateOption, ...] = ()


@_value
class IdMatch:
    """``user``/``group`` test on uid/gid numbers (pfctl prints them numerically)."""

    op: str
    low: int
    high: int | None = None


@_value
class PoolAddress:
    """One address of a pool: ``addr``, ``(if)``, ``<table>``, or ``(if addr)`` for route-to."""

    address: Address
    interface: str | None = None


@_value
class Pool:
    """Translation or routing targets and how to choose among them.

    ``method``: None, ``round-robin``, ``random``, ``source-hash``, ``bitmask``.
    ``port_low``/``port_high``: the target port range (``port a[:b]``), 0 when absent;
    ``port_star`` for ``port a:*``.
    """

    addresses: tuple[PoolAddress, ...] = ()
    port_low: int = 0
    port_high: int = 0
    port_star: bool = False
    method: str | None = None
    hash_key: str | None = None
    sticky: bool = False
    static_port: bool = False
    map_e_portset: tuple[int, int, int] | None = None  # offset, psid len, psid
    prefer_ipv6_nexthop: bool = False
    endpoint_independent: bool = False


@_value
class Route:
    """``route-to`` / ``reply-to`` / ``dup-to`` with its pool."""

    kind: Literal["route-to", "reply-to", "dup-to"]
    pool: Pool


@_value
class Translation:
    """``nat-to`` / ``rdr-to`` / ``binat-to`` / ``af-to`` on a pass/match rule."""

    kind: Literal["nat-to", "rdr-to", "binat-to", "af-to"]
    pool: Pool
    af: Family | None = None  # af-to: the new family
    pool6: Pool | None = None  # af-to ... to <addr>: the destination pool


@_value
class ScrubOptions:
    """Normalisation options: of ``scrub`` rules, and of ``match ... scrub (...)``."""

    no_df: bool = False
    random_id: bool = False
    min_ttl: int | None = None
    max_mss: int | None = None
    set_tos: int | None = None
    reassemble_tcp: bool = False
    fragment: Literal["reassemble", "crop", "drop-ovl", "no-reassemble"] | None = None


@_value
class SetPrio:
    """``set prio (p1[, p2])`` and the newer ``set tos``/``set queue`` kept beside it."""

    prio: int
    prio2: int | None = None


@_value
class Divert:
    """``divert-to host port p`` / ``divert-reply`` / FreeBSD ``divert-to port``."""

    address: IPAddress | None = None
    port: int = 0
    reply: bool = False


# --------------------------------------------------------------------------------------------
# Rules
# --------------------------------------------------------------------------------------------


@_value(kw_only=True)
class RuleBase:
    """The fields every kind of pf rule has (the common part of pfctl's pf_rule)."""

    origin: Origin
    number: int = 0
    direction: Direction | None = None
    log: Log | None = None
    quick: bool = False
    interface: InterfaceMatch | None = None
    af: Family | None = None
    proto: int | None = None
    src: Endpoint = ANY_ENDPOINT
    dst: Endpoint = ANY_ENDPOINT
    tagged: str | None = None
    tagged_negated: bool = False
    tag: str | None = None
    labels: tuple[str, ...] = ()
    rtable: int | None = None
    ridentifier: int | None = None
    received_on: InterfaceMatch | None = None


@_value(kw_only=True)
class Rule(RuleBase):
    """A filter rule: ``pass`` / ``block`` / ``match``."""

    action: Literal["pass", "block", "match"]
    block: BlockReturn | None = None  # block rules: how (policy already applied)
    uid: IdMatch | None = None
    gid: IdMatch | None = None
    flags: TcpFlags | None = None
    icmp: IcmpMatch | None = None
    tos: int | None = None
    prio: int | None = None
    set_prio: SetPrio | None = None
    set_tos: int | None = None
    state: StateSpec = StateSpec("none")
    probability: float | None = None  # a fraction, 0 < p <= 1
    probability_text: str | None = None  # as pfctl prints it ("50%")
    fragment: bool = False
    allow_opts: bool = False
    scrub: ScrubOptions | None = None  # match/pass ... scrub (...)
    queue: tuple[str, ...] = ()  # (queue) or (queue, priority-queue)
    dnpipe: tuple[int, ...] = ()
    dnqueue: tuple[int, ...] = ()
    route: Route | None = None
    translations: tuple[Translation, ...] = ()
    divert: Divert | None = None
    once: bool = False
    max_pkt_rate: tuple[int, int] | None = None
    max_pkt_size: int | None = None
    keep_counters: bool = False
    limiters: tuple[str, ...] = ()  # ``state limiter id N (...)`` as pfctl prints them


@_value(kw_only=True)
class ScrubRule(RuleBase):
    """A legacy ``scrub`` / ``no scrub`` rule (pf.conf(5) "Traffic normalization")."""

    negated: bool = False  # ``no scrub``
    options: ScrubOptions = ScrubOptions(fragment="reassemble")


@_value(kw_only=True)
class TranslationRule(RuleBase):
    """A classic ``nat`` / ``rdr`` / ``binat`` rule (``no`` and ``pass`` variants)."""

    kind: Literal["nat", "rdr", "binat"]
    negated: bool = False  # ``no nat`` ...
    pass_: bool = False  # ``nat pass`` ...: filter rules are skipped for the packet
    pool: Pool = Pool()


AnchorKind = Literal["anchor", "nat-anchor", "rdr-anchor", "binat-anchor"]


@_value(kw_only=True)
class AnchorRule(RuleBase):
    """An anchor call ``anchor "name" [match fields] [{ inline rules }]``.

    ``name`` is as written ("" for an unnamed inline anchor, "x/*" for wildcard calls).
    ``ruleset`` holds the inline body, or the rules loaded with ``load anchor``.
    """

    kind: AnchorKind = "anchor"
    name: str = ""
    uid: IdMatch | None = None
    gid: IdMatch | None = None
    flags: TcpFlags | None = None
    icmp: IcmpMatch | None = None
    ruleset: "Ruleset | None" = None
    inline: bool = False  # the body was written in braces (pfctl prints it nested)


@_value
class MacAddress:
    """An ethernet address test: ``[!] 00:11:22:33:44:55[/mask]`` (as 6-byte values)."""

    address: bytes
    mask: bytes | None = None
    negated: bool = False
    table: str | None = None  # <table>


@_value(kw_only=True)
class EtherRule:
    """An ``ether pass|block`` rule (FreeBSD layer-2 filtering)."""

    origin: Origin
    number: int = 0
    action: Literal["pass", "block"]
    direction: Direction | None = None
    quick: bool = False
    interface: InterfaceMatch | None = None
    bridge_to: str | None = None
    proto: int | None = None  # ethertype
    src: tuple[MacAddress, ...] = ()
    dst: tuple[MacAddress, ...] = ()
    l3_src: HostMatch = HostMatch()
    l3_dst: HostMatch = HostMatch()
    queue: str | None = None
    tag: str | None = None
    tagged: str | None = None
    labels: tuple[str, ...] = ()
    ridentifier: int | None = None
    dnpipe: int | None = None
    dnqueue: int | None = None
    anchor: str | None = None  # ``ether anchor "x"`` call
    log: Log | None = None


# --------------------------------------------------------------------------------------------
# Definitions
# --------------------------------------------------------------------------------------------


@_value
class TableEntry:
    """One entry of a table: ``[!] address``."""

    address: Address
    negated: bool = False


@_value
class Table:
    """``table <name> [persist] [const] [counters] [{ entries }] [file "path" ...]``.

    ``entries`` are the written entries resolved (hosts, interface names); ``files`` the file
    names as written and ``file_entries`` what they contained.
    """

    name: str
    origin: Origin
    persist: bool = False
    const: bool = False
    counters: bool = False
    entries: tuple[TableEntry, ...] = ()
    files: tuple[str, ...] = ()
    file_entries: tuple[TableEntry, ...] = ()
    layout: tuple["str | tuple[TableEntry, ...]", ...] = ()  # as written: file names and {} lists
    written_empty: bool = False  # ``{ }`` written


@_value
class Macro:
    """``name = "value"``: a textual macro (value as written, lists included)."""

    name: str
    value: str
    origin: Origin


@_value
class SetOption:
    """One ``set`` statement, typed loosely: ``name`` as pfctl prints it, ``value`` the
    parsed value (str, int, tuple...). The structured view is :class:`Options`."""

    name: str
    value: object
    origin: Origin
    text: str = ""  # the line pfctl -v prints for it ("" when it prints nothing)


@_value
class Options:
    """The effective ``set`` options after the whole file (defaults from pf.conf(5))."""

    block_policy: Literal["drop", "return"] = "drop"
    state_policy: Literal["floating", "if-bound"] = "floating"
    optimization: str = "normal"
    ruleset_optimization: str = "basic"
    timeouts: tuple[tuple[str, int], ...] = ()  # explicitly set, file order
    limits: tuple[tuple[str, int], ...] = ()
    skip: tuple[str, ...] = ()
    loginterface: str | None = None
    hostid: int | None = None
    debug: str | None = None
    reassemble: bool | None = None
    reassemble_no_df: bool = False
    syncookies: str | None = None
    syncookies_start: str | None = None
    syncookies_end: str | None = None
    fingerprints: str | None = None
    state_defaults: tuple[StateOption, ...] = ()
    keep_counters: bool = False
    fail_policy: str | None = None
    require_order: bool | None = None


@_value(kw_only=True)
class Queue:
    """An ALTQ definition: ``altq on if ...`` (``parent`` None) or ``queue name ...``."""

    origin: Origin
    name: str  # "" for the ``altq on`` root line
    interface: str | None = None
    scheduler: str | None = None  # cbq, priq, hfsc, fairq, codel
    bandwidth: int | None = None  # bits/s
    bandwidth_percent: int | None = None
    tbrsize: int | None = None
    qlimit: int | None = None
    priority: int | None = None
    children: tuple[str, ...] = ()
    parent: str | None = None
    options: tuple[str, ...] = ()  # scheduler options, as pfctl prints them
    text: str = ""  # the exact line pfctl -v prints


@_value
class Limiter:
    """``state limiter "name" id N limit L [rate a/b]`` (FreeBSD 15) and ``source limiter``."""

    kind: Literal["state", "source"]
    name: str
    id: int
    origin: Origin
    text: str = ""


Definition = Union[SetOption, Macro, Table, Queue, Limiter]


@_value
class Message:
    """A diagnostic pfctl prints while parsing (warning or error), in output order."""

    text: str
    origin: Origin | None = None
    error: bool = False


@_value
class Ruleset:
    """A parsed pf.conf (or anchor body): definitions, rules, nested anchors.

    Rule tuples are in file order within their kind. ``translation`` keeps nat, rdr and binat
    rules interleaved as written; pfctl loads (and prints) them nat, then rdr, then binat.
    ``definitions`` are the set/macro/table/queue statements in file order, as pfctl -v prints
    them while parsing.
    """

    options: Options = Options()
    macros: tuple[Macro, ...] = ()
    tables: tuple[Table, ...] = ()
    scrub: tuple[ScrubRule, ...] = ()
    translation: tuple[TranslationRule | AnchorRule, ...] = ()
    filter: tuple[Rule | AnchorRule, ...] = ()
    ether: tuple[EtherRule, ...] = ()
    queues: tuple[Queue, ...] = ()
    anchors: tuple[tuple[str, "Ruleset"], ...] = ()  # named anchors defined/loaded here
    definitions: tuple[Definition, ...] = ()
    messages: tuple[Message, ...] = ()
    path: str = ""  # anchor path ("" for the main ruleset)
    loaded_anchors: tuple[tuple[str, str], ...] = ()  # ``load anchor NAME from FILE``, in order
    unused_macros: tuple[str, ...] = ()  # macros never expanded (pfctl -vv warns), in pfctl's order

    def table(self, name: str) -> Table | None:
        for table in self.tables:
            if table.name == name:
                return table
        return None

    def anchor(self, name: str) -> "Ruleset | None":
        for anchor_name, ruleset in self.anchors:
            if anchor_name == name:
                return ruleset
        return None

    @property
    def nat(self) -> tuple[TranslationRule | AnchorRule, ...]:
        return tuple(r for r in self.translation if r.kind in ("nat", "nat-anchor"))

    @property
    def rdr(self) -> tuple[TranslationRule | AnchorRule, ...]:
        return tuple(r for r in self.translation if r.kind in ("rdr", "rdr-anchor"))

    @property
    def binat(self) -> tuple[TranslationRule | AnchorRule, ...]:
        return tuple(r for r in self.translation if r.kind in ("binat", "binat-anchor"))


__all__ = [name for name in dir() if not name.startswith("_")]
