"""pfctl's ruleset optimizer (FreeBSD sbin/pfctl/pfctl_optimize.c) on a parsed :class:`Ruleset`.

FreeBSD's pfctl optimizes every filter ruleset it loads unless told ``-o none`` (its default is
``-o basic``; ``set ruleset-optimization`` in the file applies when no ``-o`` is given). The
rule numbers the kernel reports (pflog's ``rule N``, ``pfctl -vvsr``'s ``@N``) are those of the
optimized ruleset, so pfha optimizes the same way before printing, loading and evaluating.

What it does, pass by pass, exactly as the C code (same orders, same quirks):

1. split the filter rules into *superblocks*: runs of adjacent rules whose BREAK fields (action,
   quick, log, keep state, tag, queue, route, ...) are equal; a rule with a BARRIER field
   (label, probability, ``max``/``max-src-*`` state limits, ``source-track rule``, an anchor
   call) is a superblock of its own; interface groups only share a superblock with rules on the
   same group (pfctl asks the kernel which names are groups; pfha asks ``is_group``);
2. in each superblock, remove rules identical to, or a subset of, another rule
   (``exclude_supersets``);
3. combine rules that differ only in their source (or only their destination) address into one
   rule on a constant table ``<__automatic_...>`` once 6 (TABLE_THRESHOLD) of them agree;
4. reorder the superblock's rules so that rules sharing a skip-step field (interface,
   direction, family, protocol, addresses, ports) are adjacent, splitting the superblock
   recursively.

Every filter ruleset is optimized: the main one, then each inline anchor body as pfctl reaches
it while loading, then the ``load anchor`` files. Only filter rules (pass/block/match); nat,
rdr, binat and scrub rules are never touched. Rules are renumbered 0..n-1 per ruleset.

``-o profile`` (pfctl's block_feedback: reorder quick superblocks by the running ruleset's
packet counters) needs the kernel's per-rule counters; callers pass them as ``profile`` (see
:func:`optimize`), or get ``-o basic`` with a warning.

Pure: no I/O, no randomness of its own (the table-name identifier is a parameter).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Iterable

from pfha.gc_pause import gc_paused
from pfha.conf.names import lookup_option
from pfha.conf.ast import (
    AnchorRule,
    AnyAddress,
    DynamicAddress,
    HostAddress,
    HostMatch,
    NoRoute,
    Origin,
    RangeAddress,
    Rule,
    Ruleset,
    SetOption,
    Table,
    TableAddress,
    TableEntry,
    UrpfFailed,
)

#: pfctl_optimize.c: the size at which a table becomes faster than individual rules
TABLE_THRESHOLD = 6
#: pfvar.h PF_OPT_TABLE_PREFIX
TABLE_PREFIX = "__automatic_"
LEVELS = ("none", "basic", "profile")

# pf_rule_desc's field classes (comparable_rule(t) zeroes the fields of class >= t). _Por keeps
# one tuple per view pfctl compares: rest_break (comparable_rule(NOMERGE): BARRIER, BREAK and
# fields the table does not list, which are never zeroed), rest_unlisted
# (comparable_rule(BREAK)), and rest plus the fields exclude_supersets generalizes
# (comparable_rule(DC)); COMBINED are the two addresses; DC and NEVER fields are left out.

#: state options that are BARRIER fields (max_states, max_src_*)
_BARRIER_STATE_OPTS = frozenset(("max", "max-src-nodes", "max-src-states", "max-src-conn", "max-src-conn-rate"))
#: state options kept outside pf_rule_desc (FreeBSD 15 limiters)
_UNLISTED_STATE_OPTS = frozenset(("state-limiter", "source-limiter"))
_TIMEOUTS = frozenset((
    "tcp.first", "tcp.opening", "tcp.established", "tcp.closing", "tcp.finwait", "tcp.closed",
    "udp.first", "udp.single", "udp.multiple", "icmp.first", "icmp.error", "other.first",
    "other.single", "other.multiple", "frag", "interval", "adaptive.start", "adaptive.end",
    "src.track", "tcp.tsdiff", "sctp.first", "sctp.opening", "sctp.established", "sctp.closing",
    "sctp.closed",
))
#: parse.y returnicmpdefault / returnicmp6default codes (port unreachable)
_ICMP_DEFAULT, _ICMP6_DEFAULT = 3, 4

# skip-step dimensions, in PF_SKIP order as FreeBSD 15's pf.h has them (addresses before ports,
# as in OpenBSD; FreeBSD 14 had source address, source port, destination address, destination
# port). The order only breaks ties between equally common fields.
PF_SKIP_IFP, PF_SKIP_DIR, PF_SKIP_AF, PF_SKIP_PROTO = 0, 1, 2, 3
PF_SKIP_SRC_ADDR, PF_SKIP_DST_ADDR, PF_SKIP_SRC_PORT, PF_SKIP_DST_PORT = 4, 5, 6, 7
PF_SKIP_COUNT = 8

_ZERO_ADDR = ("mask", 0, 0)  # a memset pf_addr_wrap: PF_ADDR_ADDRMASK, address and mask zero


@dataclass
class Optimized:
    """The optimized ruleset and what pfctl -v prints while optimizing.

    ``created`` maps ``id()`` of each (optimized) ruleset object to the automatic tables made
    while optimizing it, in creation order: pfctl prints them just before that ruleset's filter
    rules. Every automatic table is also in the main ruleset's ``tables`` (pfctl defines them in
    the anchor being loaded, where inline anchors' rules find them too).
    """

    ruleset: Ruleset
    level: str
    created: dict[int, tuple[Table, ...]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    order: list[Table] = field(default_factory=list)

    @property
    def tables(self) -> tuple[Table, ...]:
        """Every automatic table, in the order pfctl made them."""
        return tuple(self.order)


# ================================================================================ rule fields
def _addr_key(address) -> tuple:
    """pf_addr_wrap as memcmp sees it: IPv4 in the first 32 bits of the 128 (pf_addr.addr32[0])."""
    kind = type(address)
    if kind is AnyAddress:
        return _ZERO_ADDR
    if kind is HostAddress:
        value = int(address.address)
        if address.address.version == 4:
            value <<= 96
        return ("mask", value, address.prefixlen)
    if kind is TableAddress:
        return ("table", address.name)
    if kind is DynamicAddress:
        return ("dyn", address.interface, tuple(address.modifiers), address.prefixlen, address.family)
    if kind is RangeAddress:
        return ("range", int(address.start), int(address.end), address.start.version)
    if kind is NoRoute:
        return ("noroute",)
    if kind is UrpfFailed:
        return ("urpf",)
    return ("other", repr(address))


def _mask(prefixlen: int) -> int:
    return ((1 << prefixlen) - 1) << (128 - prefixlen) if prefixlen else 0


def _port_key(port) -> tuple:
    if port is None:
        return (0, 0, 0)
    return (port.op, port.low, port.high or 0)


def _block_fields(rule: Rule) -> tuple[tuple, tuple]:
    """(rule_flag + return_ttl: BREAK, return_icmp + return_icmp6: NOMERGE) of a filter rule.

    parse.y stores the ICMP codes only for ``return`` and ``return-icmp*`` (not for ``drop``)."""
    b = rule.block
    if b is None or rule.action != "block" or b.kind == "drop":
        return ("drop", 0), (0, 0)
    if b.kind == "return-rst":
        return ("return-rst", b.ttl or 0), (0, 0)
    kind = "return" if b.kind == "return" else "return-icmp"
    c4 = _ICMP_DEFAULT if b.icmp_code is None else b.icmp_code
    c6 = _ICMP6_DEFAULT if b.icmp6_code is None else b.icmp6_code
    return (kind, 0), (c4, c6)


class _Por:
    """pfctl's pf_opt_rule: one rule and the views of it the passes compare."""

    __slots__ = (
        "rule", "seq", "barrier", "rest_break", "rest_unlisted", "rest", "ifname", "ifnot",
        "direction", "proto", "flags", "flagset", "af", "src", "dst", "src_neg", "dst_neg",
        "sport", "dport", "src_tbl", "dst_tbl", "profile_count",
    )

    def __init__(self, rule: Rule, seq: int) -> None:
        self.rule = rule
        self.seq = seq
        self.src_tbl: _OptTable | None = None
        self.dst_tbl: _OptTable | None = None
        self.profile_count = 0
        state = rule.state
        barrier: list = [rule.labels if any(rule.labels) else (), rule.probability or 0]
        brk: list = [rule.action, rule.quick, rule.log, rule.tag, state.kind, rule.queue, rule.allow_opts,
                     rule.fragment, rule.once]
        unlisted: list = [rule.rtable, rule.ridentifier, rule.received_on, rule.prio, rule.set_prio,
                          rule.dnpipe, rule.dnqueue, rule.divert, rule.max_pkt_rate, rule.max_pkt_size,
                          rule.keep_counters, rule.limiters]
        nomerge: list = [rule.tagged, rule.tagged_negated, rule.src.os, rule.uid, rule.gid, rule.icmp, rule.tos]
        flag_fields, icmp_codes = _block_fields(rule)
        brk.append(flag_fields)
        nomerge.append(icmp_codes)
        timeouts = []
        for o in state.options:
            if o.name in _BARRIER_STATE_OPTS:
                barrier.append(o)
            elif o.name == "source-track" and o.text == "rule":
                barrier.append(o)  # PFRULE_RULESRCTRACK: "also a hard break"
            elif o.name in _TIMEOUTS:
                timeouts.append((o.name, o.value))
            elif o.name in _UNLISTED_STATE_OPTS:
                unlisted.append(o)
            else:
                brk.append(o)
        nomerge.append(tuple(sorted(timeouts)))
        # pools: pfctl moves each rule's pool list into its own TAILQ head, whose pointers differ
        # between any two rules: a rule with route-to/nat-to/rdr-to/af-to never equals another.
        if rule.route is not None or rule.translations:
            brk.append(("pool", id(self)))
        if rule.scrub is not None:
            sc = rule.scrub  # scrub_flags are outside pf_rule_desc; min-ttl, max-mss, set-tos are NEVER
            unlisted.append((sc.no_df, sc.random_id, sc.reassemble_tcp, sc.fragment))
        # a field added to Rule after this was written: must be equal, like any unlisted field
        unlisted.extend((name, getattr(rule, name)) for name in _new_fields(type(rule)))
        self.barrier = any(barrier[:2]) or len(barrier) > 2
        self.rest_break = tuple(barrier) + tuple(brk) + tuple(unlisted)  # comparable_rule(NOMERGE)
        self.rest_unlisted = tuple(barrier) + tuple(unlisted)  # comparable_rule(BREAK)
        iface = rule.interface
        self.ifname = iface.name if iface is not None else ""
        self.ifnot = bool(iface is not None and iface.negated)
        self.direction = rule.direction or 0
        self.proto = rule.proto or 0
        flags = rule.flags
        self.flags, self.flagset = (flags.set, flags.mask) if flags is not None else (0, 0)
        self.af = rule.af or 0
        self.src = _addr_key(rule.src.host.address)
        self.dst = _addr_key(rule.dst.host.address)
        self.src_neg = rule.src.host.negated
        self.dst_neg = rule.dst.host.negated
        self.sport = _port_key(rule.src.port)
        self.dport = _port_key(rule.dst.port)
        # everything exclude_supersets leaves alone: compared as is by the DC/COMBINED views
        self.rest = self.rest_break + tuple(nomerge) + (self.ifnot, self.src_neg, self.dst_neg)

    def combine_key(self) -> tuple:
        """comparable_rule(COMBINED): all but the two addresses, the DC and NEVER fields."""
        return (self.rest, self.ifname, self.direction, self.proto, self.flags, self.flagset, self.af,
                self.sport, self.dport)

    def profile_key(self) -> tuple[tuple, tuple]:
        """(comparable_rule(BREAK), comparable_rule(DC)) against a rule read back from the
        kernel, whose pools are its own: pool identities are left out."""
        rest = tuple(v for v in self.rest if not (type(v) is tuple and len(v) == 2 and v[0] == "pool"))
        return self.rest_unlisted, (rest, self.ifname, self.direction, self.proto, self.flags, self.flagset,
                                    self.af, self.sport, self.dport, self.src, self.dst)


#: the Rule fields _Por reads (or pfctl ignores: origin, number, set-tos, probability's text)
_KNOWN_FIELDS = frozenset((
    "origin", "number", "direction", "log", "quick", "interface", "af", "proto", "src", "dst", "tagged",
    "tagged_negated", "tag", "labels", "rtable", "ridentifier", "received_on", "action", "block", "uid",
    "gid", "flags", "icmp", "tos", "prio", "set_prio", "set_tos", "state", "probability",
    "probability_text", "fragment", "allow_opts", "scrub", "queue", "dnpipe", "dnqueue", "route",
    "translations", "divert", "once", "max_pkt_rate", "max_pkt_size", "keep_counters", "limiters",
))
_NEW_FIELDS: dict[type, tuple[str, ...]] = {}


def _new_fields(cls: type) -> tuple[str, ...]:
    names = _NEW_FIELDS.get(cls)
    if names is None:
        names = _NEW_FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.name not in _KNOWN_FIELDS)
    return names


def _subset_of(sub: _Por, sup: _Por) -> bool:
    """exclude_supersets(super=sup, sub) followed by memcmp(sup, sub) == 0: every packet ``sub``
    matches, ``sup`` matches too, and they agree on everything else."""
    if sup.rest != sub.rest:
        return False
    if (sub.ifname if sup.ifname else "") != sup.ifname:
        return False
    if (sub.direction if sup.direction else 0) != sup.direction:
        return False
    flags, flagset = sub.flags, sub.flagset
    if (sup.proto == 0 or sup.proto == sub.proto) and sup.flags == 0 and sup.flagset == 0 and (flags or flagset):
        flags, flagset = sup.flags, sup.flagset
    if flags != sup.flags or flagset != sup.flagset:
        return False
    if (sub.proto if sup.proto else 0) != sup.proto:
        return False
    if (sub.sport if sup.sport[0] else (0, 0, 0)) != sup.sport:
        return False
    if (sub.dport if sup.dport[0] else (0, 0, 0)) != sup.dport:
        return False
    if _sub_addr(sup.src, sup.src_neg, sub.src, sub.src_neg, sup.af, sub.af) != sup.src:
        return False
    if _sub_addr(sup.dst, sup.dst_neg, sub.dst, sub.dst_neg, sup.af, sub.af) != sup.dst:
        return False
    return (sub.af if sup.af else 0) == sup.af


def _sub_addr(sup: tuple, sup_neg: bool, sub: tuple, sub_neg: bool, sup_af, sub_af) -> tuple:
    """What exclude_supersets leaves in the subset rule's address."""
    if sup[0] != "mask":
        return sub
    if not sup_neg and not sub_neg and sup[2] == 0:
        return _ZERO_ADDR
    if (sub[0] == "mask" and sup_neg == sub_neg and sup_af == sub_af and sup[2] < sub[2]
            and sup[1] == (sub[1] & _mask(sup[2]))):
        return sup
    return sub


# ================================================================================ tables
@dataclass(eq=False)
class _OptTable:
    """pf_opt_tbl: the addresses gathered for one automatic table."""

    name: str
    af: object
    entries: list = field(default_factory=list)
    rulecount: int = 0
    generated: bool = False


class _Namer:
    """Table names as pfctl gives them: a temporary ``__automatic_N`` per table started
    (add_opt_table's static counter, which survives across rulesets and anchors), renamed to
    ``__automatic_<hex id>_<n>`` when created in the kernel (not with -n)."""

    def __init__(self, identifier: int | None, taken: Iterable[str], reroll: Callable[[], int] | None) -> None:
        self.started = 0
        self.created = 0
        self.identifier = identifier
        self.taken = {name.lower() for name in taken}
        self.reroll = reroll

    def temporary(self) -> str:
        name = f"{TABLE_PREFIX}{self.started}"
        self.started += 1
        return name

    def final(self, temporary: str) -> str:
        if self.identifier is None:  # -n: pfctl never creates the table and keeps the name
            return temporary
        while True:
            name = f"{TABLE_PREFIX}{self.identifier:x}_{self.created}"
            if name.lower() not in self.taken:
                break
            if self.reroll is None:
                self.identifier = (self.identifier * 1103515245 + 12345) & 0xFFFFFFFF
            else:
                self.identifier = self.reroll() & 0xFFFFFFFF
        self.created += 1
        self.taken.add(name.lower())
        return name


# ================================================================================ superblocks
class _Block:
    """A superblock; ``before`` holds the superblocks reorder_rules split off it, which pfctl
    inserts just before it (TAILQ_INSERT_BEFORE), in the order they were made."""

    __slots__ = ("rules", "before", "profiled")

    def __init__(self, rules: list | None = None) -> None:
        self.rules: list[_Por] = rules if rules is not None else []
        self.before: list[_Block] = []
        self.profiled: _Block | None = None

    def flatten(self) -> Iterable[_Por]:
        for block in self.before:
            yield from block.flatten()
        yield from self.rules


class _Context:
    def __init__(self, level: str, namer: _Namer, is_group: Callable[[str], bool]) -> None:
        self.level = level
        self.namer = namer
        self.is_group = is_group


def _inclusive(block: _Block, por: _Por, ctx: _Context) -> bool:
    """superblock_inclusive(): may ``por`` join ``block``?"""
    if por.barrier:
        return False
    first = block.rules[0]
    if ctx.is_group(por.ifname) or ctx.is_group(first.ifname):
        if por.ifname.lower() != first.ifname.lower():
            return False
    return first.rest_break == por.rest_break


def _construct_superblocks(pors: list[_Por], ctx: _Context) -> list[_Block]:
    blocks: list[_Block] = []
    block: _Block | None = None
    for por in pors:
        if block is None or not _inclusive(block, por, ctx):
            block = _Block()
            blocks.append(block)
        block.rules.append(por)
    return blocks


# ---------------------------------------------------------------------------------- pass 1
#: the fields exclude_supersets generalizes, in the order the candidate index nests them
_GENERAL_FIELDS = ("ifname", "direction", "af", "proto", "flagpair", "sport", "dport", "src", "dst")


def _generalizations(por: _Por, name: str, prefixes: dict[str, list[int]]) -> tuple:
    """Values a superset rule may hold in field ``name`` (a necessary condition only).
    ``prefixes``: the prefix lengths the superblock's addresses have, per side (a wider
    network of another length cannot be there to find)."""
    if name == "ifname":
        return (por.ifname, "")
    if name == "direction":
        return (por.direction, 0)
    if name == "af":
        return (por.af, 0)
    if name == "proto":
        return (por.proto, 0)
    if name == "flagpair":
        return ((por.flags, por.flagset), (0, 0))
    if name in ("sport", "dport"):
        return (getattr(por, name), (0, 0, 0))
    address, neg = (por.src, por.src_neg) if name == "src" else (por.dst, por.dst_neg)
    result = [address]
    if not neg:
        result.append(_ZERO_ADDR)
    if address[0] == "mask":
        result.extend(("mask", address[1] & _mask(plen), plen) for plen in prefixes[name] if plen < address[2])
    return tuple(result)


def _value(por: _Por, name: str):
    return (por.flags, por.flagset) if name == "flagpair" else getattr(por, name)


def _remove_identical_rules(block: _Block) -> None:
    """Pass 1, remove_identical_rules(): for each rule in order, each later rule that is (a
    subset of) it goes; a rule that is a subset of a later one goes and stops its scan.

    pfctl compares every pair; here an index finds the pairs that can be related (equal
    non-generalizable fields; each generalizable field equal or more general), and those are
    visited in pfctl's order, which gives pfctl's result."""
    by_rest: dict[tuple, list[_Por]] = {}
    for por in block.rules:
        by_rest.setdefault(por.rest, []).append(por)
    candidates: dict[int, list[list[_Por]]] = {}
    for members in by_rest.values():
        if len(members) < 2:
            continue
        trie: dict = {}
        prefixes = {side: sorted({getattr(p, side)[2] for p in members if getattr(p, side)[0] == "mask"})
                    for side in ("src", "dst")}
        # a field all these rules hold alike tells none apart (each rule's own value is one it
        # looks up): the trie only has levels for the fields that differ
        levels = tuple(name for name in _GENERAL_FIELDS if len({_value(p, name) for p in members}) > 1) or ("dst",)
        for por in members:
            node = trie
            for name in levels[:-1]:
                node = node.setdefault(_value(por, name), {})
            node.setdefault(_value(por, levels[-1]), []).append(por)
        subs_of: dict[int, list[_Por]] = {}
        for por in members:
            for bucket in _supersets(trie, por, levels, prefixes):
                candidates.setdefault(id(por), []).append(bucket)
                subs_of.setdefault(id(bucket), []).append(por)
        for por in members:
            own = _bucket(trie, por, levels)
            candidates.setdefault(id(por), []).append(subs_of.get(id(own), []))
    removed: set[int] = set()
    for por1 in block.rules:
        if id(por1) in removed or id(por1) not in candidates:
            continue
        later = {id(p): p for lst in candidates[id(por1)] for p in lst if p.seq > por1.seq and id(p) not in removed}
        for por2 in sorted(later.values(), key=_seq):
            if id(por2) in removed:
                continue
            if _subset_of(por2, por1):
                removed.add(id(por2))
            elif _subset_of(por1, por2):
                removed.add(id(por1))
                break
    if removed:
        block.rules = [p for p in block.rules if id(p) not in removed]


def _seq(por: _Por) -> int:
    return por.seq


def _supersets(trie: dict, por: _Por, levels: tuple[str, ...], prefixes: dict[str, list[int]]) -> list[list]:
    """The trie's buckets of rules that may be supersets of ``por``, level by level."""
    nodes = [trie]
    for name in levels:
        values = dict.fromkeys(_generalizations(por, name, prefixes))
        nodes = [node[value] for node in nodes for value in values if value in node]
        if not nodes:
            break
    return nodes


def _bucket(trie: dict, por: _Por, levels: tuple[str, ...]) -> list:
    node = trie
    for name in levels:
        node = node[_value(por, name)]
    return node


# ---------------------------------------------------------------------------------- pass 2
def _add_opt_table(ctx: _Context, table: _OptTable | None, af, rule_address) -> _OptTable:
    if table is None:
        table = _OptTable(ctx.namer.temporary(), af)
    table.entries.append(rule_address)
    table.rulecount += 1
    return table


def _combine_rules(block: _Block, ctx: _Context) -> list[Table]:
    """Pass 2, combine_rules(): rules differing only in one address become one rule on a table
    of those addresses once TABLE_THRESHOLD of them agree."""
    return _generate_tables(block, ctx, _gather_tables(block.rules, ctx))


def _gather_tables(rules: list[_Por], ctx: _Context) -> set[int]:
    """combine_rules()'s first loop: give rules that differ in one address a shared table ->
    the rules a table of TABLE_THRESHOLD made redundant.

    pfctl compares each rule p1 with every later rule p2 still without a table. Here two
    indexes hold, for each p1, exactly the later rules that would combine with it: by_src, the
    rules with p1's combine key, source and both negations whose destination is a plain
    address (they join p1's destination table), by_dst the same with the sides swapped. A rule
    leaves both indexes when it gets a table (it can never combine again) and when its own
    turn as p1 has passed (only later rules are p2s), so every rule left is a later one that
    still can. pfctl's walk takes p2s in rule order until one combines; that first one decides
    which of p1's addresses becomes a table (the other branch needs p1 without a table), so
    the earlier of the two indexes' first combinable rules wins, as in pfctl."""
    src_lists: dict[tuple, list[_Por]] = {}
    dst_lists: dict[tuple, list[_Por]] = {}
    keys: dict[int, tuple[tuple, tuple]] = {}
    for por in rules:
        key = por.combine_key()
        src_key = (key, por.src, por.src_neg, por.dst_neg)
        dst_key = (key, por.dst, por.dst_neg, por.src_neg)
        keys[id(por)] = (src_key, dst_key)
        if por.dst[0] == "mask":  # pfctl's addrs_combineable(): only plain addresses go into a table
            src_lists.setdefault(src_key, []).append(por)
        if por.src[0] == "mask":
            dst_lists.setdefault(dst_key, []).append(por)
    # a rule alone under its key has no one to combine with
    by_src = {k: {id(p): p for p in lst} for k, lst in src_lists.items() if len(lst) > 1}
    by_dst = {k: {id(p): p for p in lst} for k, lst in dst_lists.items() if len(lst) > 1}
    removed: set[int] = set()

    def taken(por: _Por) -> None:  # p2 got a table: no longer free to combine
        src_key, dst_key = keys[id(por)]
        by_src.get(src_key, {}).pop(id(por), None)
        by_dst.get(dst_key, {}).pop(id(por), None)

    for p1 in rules:
        taken(p1)  # its turn: from now on only later rules are compared
        if id(p1) in removed:
            continue
        src_key, dst_key = keys[id(p1)]
        # src_eq and not dst_eq: the first later rule with another destination
        to_dst = (_first_other(by_src.get(src_key), p1.dst, "dst")
                  if p1.src_tbl is None and p1.dst[0] == "mask" else None)
        # not src_eq and dst_eq
        to_src = (_first_other(by_dst.get(dst_key), p1.src, "src")
                  if p1.dst_tbl is None and p1.src[0] == "mask" else None)
        if to_dst is not None and (to_src is None or to_dst.seq < to_src.seq):
            for p2 in list(by_src[src_key].values()):
                if p2.dst == p1.dst:
                    continue  # equal source and destination: neither branch
                if p1.dst_tbl is None:
                    p1.dst_tbl = _add_opt_table(ctx, None, p1.af, p1.rule.dst.host.address)
                _add_opt_table(ctx, p1.dst_tbl, p1.af, p2.rule.dst.host.address)
                p2.dst_tbl = p1.dst_tbl
                taken(p2)
                if p1.dst_tbl.rulecount >= TABLE_THRESHOLD:
                    removed.add(id(p2))
        elif to_src is not None:
            for p2 in list(by_dst[dst_key].values()):
                if p2.src == p1.src:
                    continue
                if p1.src_tbl is None:
                    p1.src_tbl = _add_opt_table(ctx, None, p1.af, p1.rule.src.host.address)
                _add_opt_table(ctx, p1.src_tbl, p1.af, p2.rule.src.host.address)
                p2.src_tbl = p1.src_tbl
                taken(p2)
                if p1.src_tbl.rulecount >= TABLE_THRESHOLD:
                    removed.add(id(p2))
    return removed


def _generate_tables(block: _Block, ctx: _Context, removed: set[int]) -> list[Table]:
    """combine_rules()'s final loop: name each table and put it into the first rule that
    holds it; the other rules holding it go."""
    created: list[Table] = []
    result: list[_Por] = []
    for p1 in block.rules:
        if id(p1) in removed:
            continue
        drop = False
        for side in ("src", "dst"):
            table = p1.src_tbl if side == "src" else p1.dst_tbl
            if table is None or table.rulecount < TABLE_THRESHOLD:
                continue
            if table.generated:
                drop = True  # this rule is included in a table
                break
            table.generated = True
            table.name = ctx.namer.final(table.name)
            created.append(_table_def(table))
            endpoint = getattr(p1.rule, side)
            host = HostMatch(TableAddress(table.name), endpoint.host.negated)
            p1.rule = dataclasses.replace(p1.rule, **{side: dataclasses.replace(endpoint, host=host)})
            setattr(p1, side, _addr_key(host.address))
        if not drop:
            result.append(p1)
    block.rules = result
    return created


def _first_other(candidates: dict[int, _Por] | None, address: tuple, side: str) -> _Por | None:
    """The first rule in ``candidates`` whose ``side`` address is not ``address``."""
    for por in (candidates or {}).values():
        if getattr(por, side) != address:
            return por
    return None


def _table_def(table: _OptTable) -> Table:
    """What pf_opt_create_table defines: a const table of the gathered addresses."""
    entries = tuple(TableEntry(_table_address(address, table.af)) for address in table.entries)
    return Table(name=table.name, origin=Origin("", 0), const=True, entries=entries, layout=(entries,))


def _table_address(address, af):
    if type(address) is AnyAddress:
        zero = ipaddress.IPv6Address(0) if af == "inet6" else ipaddress.IPv4Address(0)
        return HostAddress(zero, 0)
    return address


# ---------------------------------------------------------------------------------- pass 3
def _skip_key(i: int, por: _Por):
    """The value skip_cmp_* compares in dimension ``i``; None when the rule can share it with no
    other rule (no interface, direction, family, protocol or port; ``any``; a range)."""
    if i == PF_SKIP_IFP:
        return (por.ifname, por.ifnot) if por.ifname else None
    if i == PF_SKIP_DIR:
        return por.direction or None
    if i == PF_SKIP_AF:
        return por.af or None
    if i == PF_SKIP_PROTO:
        return por.proto or None
    if i in (PF_SKIP_SRC_ADDR, PF_SKIP_DST_ADDR):
        address, neg = (por.src, por.src_neg) if i == PF_SKIP_SRC_ADDR else (por.dst, por.dst_neg)
        if address[0] == "mask":
            return (address, neg) if address[1] != 0 else None
        if address[0] in ("dyn", "table", "noroute", "urpf"):
            return (address, neg)
        return None
    port = por.sport if i == PF_SKIP_SRC_PORT else por.dport
    return port if port[0] else None


class _SkipList:
    __slots__ = ("count", "rules", "popped", "stamp")

    def __init__(self) -> None:
        self.count = 0
        self.rules: dict[int, _Por] = {}  # in append order
        self.popped = False
        self.stamp = 0  # when it last grew: skip_append leaves lists of a count in that order


class _SkipLists:
    """One dimension's skiplists in pfctl's order: sorted by count, largest first, and among
    equal counts in the order pfctl's one-step bubbling leaves them. A list whose count grows
    by one moves behind the others of its new count (skip_append); one whose count drops by
    one moves in front of the others of its new count (remove_from_skipsteps). Each count's
    lists are kept in an OrderedDict, so both moves are O(1)."""

    def __init__(self) -> None:
        self.runs: dict[int, OrderedDict[int, _SkipList]] = {}
        self.top = 0
        self.frozen: _SkipList | None = None

    def first(self) -> _SkipList | None:
        if self.frozen is not None:
            return self.frozen
        while self.top > 0 and not self.runs.get(self.top):
            self.top -= 1
        run = self.runs.get(self.top)
        return next(iter(run.values())) if run else None

    def build(self, skiplists: list[_SkipList]) -> None:
        """The order skip_append()'s bubbling leaves: by count, then by when each list
        reached its count (each growth moves a list behind the others of its new count)."""
        for skiplist in sorted(skiplists, key=lambda sk: (-sk.count, sk.stamp)):
            self.runs.setdefault(skiplist.count, OrderedDict())[id(skiplist)] = skiplist
            self.top = max(self.top, skiplist.count)

    def shrink(self, skiplist: _SkipList) -> None:
        del self.runs[skiplist.count][id(skiplist)]
        skiplist.count -= 1
        run = self.runs.setdefault(skiplist.count, OrderedDict())
        run[id(skiplist)] = skiplist
        run.move_to_end(id(skiplist), last=False)

    def pop_first(self) -> _SkipList:
        skiplist = self.first()
        del self.runs[skiplist.count][id(skiplist)]
        skiplist.popped = True
        return skiplist


def _reorder_rules(block: _Block, depth: int, skips: dict[int, tuple] | None = None) -> None:
    """Pass 3, reorder_rules(): gather the rules sharing the most common skip-step field, split
    them off into a superblock of their own (reordered again) when more than two, repeat.

    pfctl makes a skiplist for every rule in every dimension; a list of one rule is never
    picked (only a count above one is), nor shrunk by remove_from_skipsteps() to anything
    but inert, so only the lists of two rules or more are made here. ``skips``: each rule's
    skip-step keys, worked out once for the whole recursion."""
    if skips is None:
        skips = {id(por): tuple(_skip_key(i, por) for i in range(PF_SKIP_COUNT)) for por in block.rules}
    dims = [_SkipLists() for _ in range(PF_SKIP_COUNT)]
    member: list[dict[int, _SkipList]] = [{} for _ in range(PF_SKIP_COUNT)]  # id(rule) -> its skiplist
    for i in range(PF_SKIP_COUNT):
        by_key: dict = {}
        for at, por in enumerate(block.rules):
            key = skips[id(por)][i]
            if key is not None:
                by_key.setdefault(key, []).append((at, por))
        made: list[_SkipList] = []
        for pors in by_key.values():
            if len(pors) < 2:
                continue
            skiplist = _SkipList()
            skiplist.rules = {id(por): por for _at, por in pors}
            skiplist.count = len(pors)
            skiplist.stamp = pors[-1][0]  # when it last grew
            made.append(skiplist)
            for _at, por in pors:
                member[i][id(por)] = skiplist
        dims[i].build(made)  # skip_append(): the list of skiplists kept sorted
    rule_count = len(block.rules)
    largest = 0
    for i in range(PF_SKIP_COUNT):
        skiplist = dims[i].first()
        if skiplist is None or skiplist.count == rule_count:
            # the same in every rule, or in none (pfctl: a first list of one): of no use
            dims[i].frozen = skiplist if skiplist is not None else _SkipList()
            dims[i].frozen.count = 0
        elif skiplist.count > largest:
            largest = skiplist.count
    if largest == 0:
        return
    head = {id(p): p for p in block.rules}
    block.rules = []
    while head:
        largest, largest_list = 1, -1
        for i in range(PF_SKIP_COUNT):
            skiplist = dims[i].first()
            if skiplist is not None and skiplist.count > largest:
                largest, largest_list = skiplist.count, i
        if largest <= 1:
            block.rules.extend(head.values())  # nothing useful left: the rest in order
            break
        skiplist = dims[largest_list].pop_first()
        if skiplist.count > 2:
            newblock = _Block()  # further commonality inside: a superblock of its own
            block.before.append(newblock)
        else:
            newblock = block
        for por in list(skiplist.rules.values()):
            del head[id(por)]
            del skiplist.rules[id(por)]
            newblock.rules.append(por)
            _remove_from_skipsteps(dims, member, por, skiplist)
        if newblock is not block:
            _reorder_rules(newblock, depth + 1, skips)


def _remove_from_skipsteps(dims: list[_SkipLists], member: list[dict[int, _SkipList]], por: _Por,
                           active: _SkipList) -> None:
    for i in range(PF_SKIP_COUNT):
        lists = dims[i]
        first = lists.first()
        if first is None or first is active or first.count <= 1:
            continue
        sk = member[i].get(id(por))
        if sk is None or sk.popped or id(por) not in sk.rules:
            continue
        del sk.rules[id(por)]
        lists.shrink(sk)  # does this change the sorting order? it moves ahead of its new count


# ---------------------------------------------------------------------------------- pass 4
def _load_feedback(blocks: list[_Block], running: list[tuple[Rule, int]], ctx: _Context) -> None:
    """load_feedback_profile(): split the running ruleset into superblocks too and pair them
    with ours while their first rules agree on comparable_rule(BREAK)."""
    pors = []
    for seq, (rule, packets) in enumerate(running):
        por = _Por(rule, seq) if isinstance(rule, Rule) else _AnchorPor(rule, seq)
        por.profile_count = packets
        pors.append(por)
    for block, other in zip(blocks, _construct_superblocks(pors, ctx)):
        if block.rules[0].profile_key()[0] != other.rules[0].profile_key()[0]:
            break
        block.profiled = other


def _block_feedback(block: _Block) -> None:
    """block_feedback(): copy the running rules' counters onto equal rules
    (comparable_rule(DC)), then sort the superblock by them, most packets first (stable).

    pfctl gives each running rule's count to the first of our rules that is equal to it and
    has no count yet (a count of 0 leaves the rule free for the next one); rules indexed by
    their comparable_rule(DC) view, in order, find that rule without comparing every pair. Its
    insertion sort (before the first rule with fewer packets) is a stable sort, most first."""
    counts: dict[int, int] = {}
    by_key: dict[tuple, list[_Por]] = {}
    for por2 in block.rules:
        by_key.setdefault(por2.profile_key()[1], []).append(por2)
    first: dict[tuple, int] = {}  # key -> where its first rule without a count is
    for por1 in block.profiled.rules:
        key = por1.profile_key()[1]
        equal = by_key.get(key)
        if equal is None:
            continue
        at = first.get(key, 0)
        while at < len(equal) and counts.get(id(equal[at])):
            at += 1
        first[key] = at
        if at < len(equal):
            counts[id(equal[at])] = por1.profile_count
    block.profiled = None
    block.rules = sorted(block.rules, key=lambda por: -counts.get(id(por), 0))


# ================================================================================ rulesets
def _optimize_superblock(block: _Block, ctx: _Context, created: list[Table], profile: bool) -> None:
    if len(block.rules) < 2:
        return  # shortcut: there will be a lot of 1-rule superblocks
    _remove_identical_rules(block)
    created.extend(_combine_rules(block, ctx))
    if profile and block.rules[0].rule.quick and block.profiled is not None:
        _block_feedback(block)
    else:
        _reorder_rules(block, 0)


def _optimize_filter(rules: tuple, ctx: _Context, running: list[tuple[Rule, int]] | None) -> tuple[list, list[Table]]:
    """pfctl_optimize_ruleset() for one ruleset's filter rules -> (rules renumbered, tables)."""
    pors = [_Por(rule, i) if isinstance(rule, Rule) else _AnchorPor(rule, i) for i, rule in enumerate(rules)]
    blocks = _construct_superblocks(pors, ctx)
    if running is not None:
        _load_feedback(blocks, running, ctx)
    created: list[Table] = []
    for block in blocks:
        _optimize_superblock(block, ctx, created, running is not None)
    result = []
    for number, por in enumerate(p for block in blocks for p in block.flatten()):
        rule = por.rule
        result.append(rule if rule.number == number else dataclasses.replace(rule, number=number))
    return result, created


class _AnchorPor(_Por):
    """An anchor call: a BARRIER ("anchor ... for now"), equal to nothing else."""

    def __init__(self, rule, seq: int) -> None:  # pylint: disable=super-init-not-called
        self.rule = rule
        self.seq = seq
        self.barrier = True
        self.src_tbl = self.dst_tbl = None
        self.profile_count = 0
        self.rest_break = self.rest_unlisted = self.rest = ("anchor", id(self))
        iface = rule.interface
        self.ifname = iface.name if iface is not None else ""
        self.ifnot = bool(iface is not None and iface.negated)
        self.direction = self.proto = self.flags = self.flagset = self.af = 0
        self.src = self.dst = ("anchor", id(self))
        self.src_neg = self.dst_neg = False
        self.sport = self.dport = (0, 0, 0)


def default_is_group(view=None) -> Callable[[str], bool]:
    """Which interface names pfctl's interface_group() would call groups.

    A name the interface view knows as a group is one; so is a name it does not know as an
    interface that does not end in a digit (FreeBSD refuses group names ending in a digit, and
    interface names end in their unit number): erring towards "group" only keeps rules apart."""
    groups = set(view.groups) if view is not None else set()
    interfaces = set(view.addresses) if view is not None else set()

    def is_group(name: str) -> bool:
        if not name or name in interfaces or name == "any":  # "on any" names no interface
            return False
        return name in groups or not name[-1].isdigit()

    return is_group


def stable_identifier(text: str) -> int:
    """A table-name identifier that stays the same for the same pf.conf: for loaders that
    compare what they compiled with what is loaded (pfctl itself draws arc4random())."""
    return zlib.crc32(text.encode("utf-8", "surrogateescape"))


def ruleset_level(ruleset: Ruleset, cli_level: str | None = None) -> str:
    """The optimization pfctl applies: ``-o`` when given, else the file's first
    ``set ruleset-optimization`` (parse.y ignores later ones), else ``basic``."""
    if cli_level is not None:
        return cli_level
    for d in ruleset.definitions:
        if type(d) is SetOption and d.name == "ruleset-optimization":
            return str(d.value)
    return "basic"


def resolve_level(text: str) -> str | None:
    """pfctl_lookup_option() over ``none basic profile``."""
    return lookup_option(text, LEVELS)


def optimize(ruleset: Ruleset, level: str | None = None, *, is_group: Callable[[str], bool] | None = None,
             identifier: int | None = None, reroll: Callable[[], int] | None = None,
             taken: Iterable[str] = (), profile: list[tuple[Rule, int]] | None = None) -> Optimized:
    """Optimize ``ruleset`` as pfctl does at ``level`` (None: the file's own setting, else basic).

    ``identifier``: None for ``pfctl -n`` (tables keep their temporary ``__automatic_N`` names),
    else the 32-bit random number pfctl puts into kernel table names (``reroll`` draws another
    on a collision with ``taken`` or the ruleset's own tables). ``profile``: for ``-o profile``,
    the running main ruleset's filter rules with their packet counts (in + out); without it
    profile acts as basic, with a warning. ``is_group``: see :func:`default_is_group`.
    """
    level = ruleset_level(ruleset, level)
    result = Optimized(ruleset, level)
    if level == "none":
        return result
    running = None
    if level == "profile":
        if profile is None:
            result.warnings.append("-o profile needs the running ruleset's rule counters, which are not "
                                   "available: optimizing as -o basic")
        else:
            running = list(profile)
    names = {t.name for t in ruleset.tables} | set(taken)
    for _name, anchor in ruleset.anchors:
        names.update(t.name for t in anchor.tables)
    ctx = _Context(level, _Namer(identifier, names, reroll), is_group or default_is_group())
    done: dict[int, tuple[Ruleset, Ruleset]] = {}
    with gc_paused():  # as the parser: its many small acyclic objects live until the end
        root = _optimize_ruleset(ruleset, ctx, result, done, running)
        # `load anchor` files are loaded (and optimized) after the main ruleset, in order
        loaded = {name for name, _path in ruleset.loaded_anchors}
        anchors = []
        for name, anchor in root.anchors:
            if name in loaded:
                anchor = _optimize_ruleset(anchor, ctx, result, done, None)
            else:
                anchor = _same_body(anchor, done)
            anchors.append((name, anchor))
    created = result.created.pop(id(root), None)
    extra = tuple(t for t in result.order if root.table(t.name) is None)
    result.ruleset = dataclasses.replace(root, anchors=tuple(anchors), tables=root.tables + extra)
    if created:
        result.created[id(result.ruleset)] = created
    return result


def _same_body(anchor: Ruleset, done: dict[int, tuple[Ruleset, Ruleset]]) -> Ruleset:
    """The parser builds a named inline anchor twice (the call's body and the named
    definition): the definition becomes what the call's body became."""
    for original, optimized in done.values():
        if original == anchor:
            return optimized
    return anchor


def _optimize_ruleset(ruleset: Ruleset, ctx: _Context, result: Optimized, done: dict[int, tuple[Ruleset, Ruleset]],
                      running: list | None) -> Ruleset:
    """pfctl_load_ruleset(FILTER): optimize this ruleset's filter rules, then each inline
    anchor body in rule order as loading reaches it."""
    if id(ruleset) in done:
        return done[id(ruleset)][1]
    rules, created = _optimize_filter(ruleset.filter, ctx, running)
    result.order.extend(created)
    final = []
    for rule in rules:
        if isinstance(rule, AnchorRule) and rule.ruleset is not None and rule.inline:
            body = _optimize_ruleset(rule.ruleset, ctx, result, done, None)
            if body is not rule.ruleset:
                rule = dataclasses.replace(rule, ruleset=body)
        final.append(rule)
    optimized = dataclasses.replace(ruleset, filter=tuple(final))
    if created:
        result.created[id(optimized)] = tuple(created)
    done[id(ruleset)] = (ruleset, optimized)
    return optimized


# ================================================================================ printing
def format_optimized(result: Optimized, verbose: int = 1, messages: bool = True) -> str:
    """What ``pfctl -nv`` prints with the optimizer on: :func:`pfha.conf.printer.format_ruleset`
    with each automatic table printed where pfctl prints it, just before the filter rules of
    the ruleset it was made for (inline anchors: after the ``{`` line, not indented)."""
    return _format(result.ruleset, result, verbose, messages)


def _format(ruleset: Ruleset, result: Optimized, verbose: int, messages: bool) -> str:
    from pfha.conf.printer import format_ruleset

    return format_ruleset(ruleset, verbose, messages,
                          lambda rs, v, depth, out: _emit(rs, result, v, depth, out))


def _emit(ruleset: Ruleset, result: Optimized, verbose: int, depth: int, out: list[str]) -> None:
    from pfha.conf.printer import format_table

    indent = "  " * depth
    rules = list(ruleset.scrub)
    for kinds in (("nat", "nat-anchor"), ("rdr", "rdr-anchor"), ("binat", "binat-anchor")):
        rules.extend(r for r in ruleset.translation if r.kind in kinds)
    for rule in rules:
        _emit_rule(rule, result, verbose, depth, indent, out)
    for table in result.created.get(id(ruleset), ()):
        out.append(format_table(table) + "\n")
    for rule in ruleset.filter:
        _emit_rule(rule, result, verbose, depth, indent, out)


def _emit_rule(rule, result: Optimized, verbose: int, depth: int, indent: str, out: list[str]) -> None:
    from pfha.conf.printer import format_rule

    line = format_rule(rule, verbose)
    if isinstance(rule, AnchorRule) and rule.ruleset is not None and rule.inline:
        out.append(f"{indent}{line} {{\n")
        _emit(rule.ruleset, result, verbose, depth + 1, out)
        out.append(f"{indent}}}\n")
    else:
        out.append(f"{indent}{line}\n")
