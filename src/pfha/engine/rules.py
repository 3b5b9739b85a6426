"""The compiled ruleset: AST rules turned into fast match tests, an index, and counters.

pf evaluates rules in order and jumps over runs of rules that cannot match with *skip steps*
(pf_calc_skip_steps). Skip steps only help when neighbouring rules share fields; this engine
instead keeps an index that gives, for a packet's (interface, direction, family, protocol), its
destination port and its destination address, only the rules that could match it, still in
rule order. Every candidate is then tested in full, so the index changes speed, never results
(pf.conf(5): skip steps "do not change the result"). Only the ``Evaluations`` counters differ
from pf's, as they already do between pf versions.

Addresses are compiled into (family, network, mask) integer tests, tables into a longest-prefix
match with negation, dynamic ``(if)`` addresses resolved through the injected
:class:`~pfha.conf.InterfaceView`. This module never touches the OS.
"""

from __future__ import annotations

import operator
import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from pfha.conf import ast
from pfha.conf.interfaces import InterfaceView
from pfha.engine.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet

AddrTest = Callable[[int, int], bool]
PortTest = Callable[[int], bool]

_FAMILY = {"inet": 4, "inet6": 6, None: None}
_BITS = {4: 32, 6: 128}
_PORT_PROTOS = (IPPROTO_TCP, IPPROTO_UDP)


def mask_of(af: int, prefixlen: int) -> int:
    bits = _BITS[af]
    return ((1 << bits) - 1) ^ ((1 << (bits - prefixlen)) - 1)


Prefix = tuple  # (af, network, mask)


def prefix_of(addr: "ipaddress.IPv4Address | ipaddress.IPv6Address", prefixlen: int) -> Prefix:
    af = addr.version
    mask = mask_of(af, prefixlen)
    return (af, int(addr) & mask, mask)


# ---------------------------------------------------------------------- tables
class Table:
    """A pf table: longest-prefix match over entries, ``!`` entries meaning "not in the table".

    Mutable (overload adds addresses); lookups are one dict probe per distinct prefix length.
    """

    def __init__(self, name: str, entries: Iterable[tuple[Prefix, bool]] = ()) -> None:
        self.name = name
        self.entries: dict[Prefix, bool] = {}
        self._lengths: dict[int, list[int]] = {4: [], 6: []}
        self.matches = 0
        self.misses = 0
        for prefix, negated in entries:
            self.add(prefix, negated)

    def add(self, prefix: Prefix, negated: bool = False) -> bool:
        """Add an entry; False when it was already there (pfctl -T add says "0/1 added")."""
        if prefix in self.entries:
            return False
        self.entries[prefix] = negated
        af, _net, mask = prefix
        if mask not in self._lengths[af]:
            self._lengths[af].append(mask)
            self._lengths[af].sort(reverse=True)
        return True

    def add_host(self, af: int, addr: int) -> bool:
        return self.add((af, addr, mask_of(af, _BITS[af])))

    def contains(self, af: int, addr: int) -> bool:
        entries = self.entries
        for mask in self._lengths.get(af, ()):
            negated = entries.get((af, addr & mask, mask))
            if negated is not None:
                if negated:
                    self.misses += 1
                    return False
                self.matches += 1
                return True
        self.misses += 1
        return False

    def __len__(self) -> int:
        return len(self.entries)


# ---------------------------------------------------------------------- addresses
@dataclass
class Resolver:
    """Turns AST addresses into integer tests against one interface view and table set."""

    interfaces: InterfaceView
    tables: dict[str, Table] = field(default_factory=dict)

    def interface_prefixes(self, name: str, modifiers: tuple = (), prefixlen: Optional[int] = None,
                           family: Optional[str] = None) -> list[Prefix]:
        """``(if)``, ``(if:network)``, ``self``...: what the kernel would hold right now."""
        want = _FAMILY.get(family)
        result: list[Prefix] = []
        addrs = self.interfaces.addrs(name)
        if "0" in modifiers:
            first: dict[int, object] = {}
            for a in addrs:
                if a.version == 6 and a.ip.is_link_local:
                    continue
                first.setdefault(a.version, a)
            addrs = tuple(first.values())
        for iface in addrs:
            af = iface.version
            if want is not None and af != want:
                continue
            if "network" in modifiers:
                if af == 6 and iface.ip.is_link_local:
                    continue
                result.append(prefix_of(iface.network.network_address, iface.network.prefixlen))
            elif "broadcast" in modifiers:
                if af == 4:
                    result.append(prefix_of(iface.network.broadcast_address, 32))
            elif "peer" in modifiers:
                for peer in self.interfaces.peers.get(name, ()):
                    result.append(prefix_of(peer.ip, _BITS[peer.version]))
            else:
                result.append(prefix_of(iface.ip, prefixlen if prefixlen is not None else _BITS[af]))
        return result

    def prefixes(self, address: ast.Address) -> Optional[list[Prefix]]:
        """The prefixes an address stands for, or None when it is not a fixed set."""
        if isinstance(address, ast.HostAddress):
            return [prefix_of(address.address, address.prefixlen)]
        if isinstance(address, ast.DynamicAddress):
            return self.interface_prefixes(address.interface, address.modifiers, address.prefixlen, address.family)
        return None

    def test(self, match: ast.HostMatch) -> Optional[AddrTest]:
        """An address test, or None for ``any`` (so rules can skip it entirely)."""
        address = match.address
        test: AddrTest
        if isinstance(address, ast.AnyAddress):
            if not match.negated:
                return None
            return lambda af, a: False
        if isinstance(address, ast.HostAddress) or isinstance(address, ast.DynamicAddress):
            prefixes = self.prefixes(address) or []
            test = _prefix_test(prefixes)
        elif isinstance(address, ast.RangeAddress):
            af, low, high = address.start.version, int(address.start), int(address.end)
            test = lambda f, a: f == af and low <= a <= high  # noqa: E731
        elif isinstance(address, ast.TableAddress):
            table = self.tables.setdefault(address.name, Table(address.name))
            test = table.contains
        else:  # no-route, urpf-failed: the engine has no routing table; they never match
            test = lambda f, a: False  # noqa: E731
        if match.negated:
            inner = test
            return lambda f, a: not inner(f, a)
        return test

    def table_from_ast(self, table: ast.Table) -> Table:
        result = self.tables.setdefault(table.name, Table(table.name))
        for entry in tuple(table.entries) + tuple(table.file_entries):
            for prefix in self.prefixes(entry.address) or []:
                result.add(prefix, entry.negated)
        return result


def _prefix_test(prefixes: list[Prefix]) -> AddrTest:
    if not prefixes:
        return lambda f, a: False
    if len(prefixes) == 1:
        paf, net, mask = prefixes[0]
        return lambda f, a: f == paf and (a & mask) == net
    items = tuple(prefixes)
    return lambda f, a: any(f == paf and (a & mask) == net for paf, net, mask in items)


def single_prefix(match: ast.HostMatch, resolver: Resolver) -> Optional[tuple[int, int]]:
    """(network, mask) when the test is one prefix (not negated): the index files rules by it."""
    if match.negated or not isinstance(match.address, (ast.HostAddress, ast.DynamicAddress)):
        return None
    prefixes = resolver.prefixes(match.address) or []
    if len(prefixes) != 1:
        return None
    _af, net, mask = prefixes[0]
    return (net, mask)


def prefix_set(match: ast.HostMatch, resolver: Resolver) -> tuple:
    """Every (family, network, mask) of a non-negated address that stands for a fixed set of
    prefixes (``(carp0)`` with three addresses, ``(xl0)`` with IPv4 and IPv6): the index files
    such a rule under each of them instead of handing it to every packet. Empty otherwise."""
    if match.negated or not isinstance(match.address, (ast.HostAddress, ast.DynamicAddress)):
        return ()
    return tuple(dict.fromkeys(resolver.prefixes(match.address) or ()))


def port_test(match: Optional[ast.PortMatch]) -> Optional[PortTest]:
    """pf_match_port: the operators of pf.conf(5) "Ports"."""
    if match is None:
        return None
    op, low, high = match.op, match.low, match.high if match.high is not None else match.low
    if op == "=":
        return lambda p: p == low
    if op == "!=":
        return lambda p: p != low
    if op == "<":
        return lambda p: p < low
    if op == "<=":
        return lambda p: p <= low
    if op == ">":
        return lambda p: p > low
    if op == ">=":
        return lambda p: p >= low
    if op == "><":
        return lambda p: low < p < high
    if op == "<>":
        return lambda p: p < low or p > high
    if op == ":":
        return lambda p: low <= p <= high
    raise ValueError(f"unknown port operator {op!r}")


# ---------------------------------------------------------------------- compiled rules
@dataclass(eq=False)
class Counters:
    """What ``pfctl -vsr`` shows under a rule: [0] in, [1] out."""

    evaluations: int = 0
    packets: list = field(default_factory=lambda: [0, 0])
    bytes: list = field(default_factory=lambda: [0, 0])
    states_cur: int = 0
    states_tot: int = 0


@dataclass(eq=False)
class CompiledRule:
    """One rule (filter, translation, scrub or anchor call) ready for matching."""

    ast: object
    number: int
    kind: str  # "pass" "block" "match" "nat" "rdr" "binat" "scrub" "anchor"
    text: str
    quick: bool = False
    direction: Optional[str] = None
    ifnames: Optional[frozenset] = None
    if_negated: bool = False
    af: Optional[int] = None
    proto: Optional[int] = None
    src: Optional[AddrTest] = None
    dst: Optional[AddrTest] = None
    sport: Optional[PortTest] = None
    dport: Optional[PortTest] = None
    flags: Optional[tuple[int, int]] = None
    icmp: Optional[tuple[int, Optional[int], int]] = None  # (type, code, proto)
    tagged: Optional[str] = None
    tagged_negated: bool = False
    never: bool = False  # user/group/os tests: no socket or fingerprint knowledge here
    fragment_ok: bool = True  # no ports, flags or icmp-type: may match a later fragment
    fragments_only: bool = False  # ``fragment``: skipped for whole packets (PFRULE_FRAGMENT)
    probability: Optional[float] = None
    anchor: Optional["RuleList"] = None
    anchor_path: str = ""
    gates: tuple = ()  # translation rules inside nat-/rdr-anchors: the anchors' own tests
    counters: Counters = field(default_factory=Counters)
    # index keys
    index_port: Optional[int] = None
    index_dst: Optional[tuple[int, int]] = None  # (network, mask) the destination must be in
    index_src: Optional[tuple[int, int]] = None
    index_dsts: tuple = ()  # (af, network, mask) of a multi-prefix destination (see prefix_set)
    index_srcs: tuple = ()
    # filled by the engine
    extra: dict = field(default_factory=dict)

    def state_removed(self) -> None:
        self.counters.states_cur -= 1

    @property
    def trivial(self) -> bool:
        """No test beyond interface, direction, family and protocol (the index's bucket key):
        every whole packet of its bucket matches (``scrub in all``, ``pass out on xl0``)."""
        return (self.src is None and self.dst is None and self.sport is None and self.dport is None
                and self.flags is None and self.icmp is None and self.tagged is None and not self.never
                and self.probability is None and not self.fragments_only)

    def matches(self, packet: Packet, ifname: str, inbound: bool, tag: Optional[str], rng=None) -> bool:
        """Every test of the rule (pf_test_rule's loop body), in pf's order."""
        if self.never:
            return False
        if self.ifnames is not None and (ifname in self.ifnames) == self.if_negated:
            return False
        if self.direction is not None and (self.direction == "in") != inbound:
            return False
        af = packet.af
        if self.af is not None and self.af != af:
            return False
        proto = packet.proto
        if self.proto is not None and self.proto != proto:
            return False
        if self.src is not None and not self.src(af, packet.src):
            return False
        if self.dst is not None and not self.dst(af, packet.dst):
            return False
        if packet.frag_offset:
            if not self.fragment_ok:
                return False
        elif self.fragments_only:
            return False
        if self.sport is not None or self.dport is not None:
            if proto != IPPROTO_TCP and proto != IPPROTO_UDP:
                return False
            if self.sport is not None and not self.sport(packet.sport):
                return False
            if self.dport is not None and not self.dport(packet.dport):
                return False
        if self.flags is not None and proto == IPPROTO_TCP:
            fset, fmask = self.flags
            if packet.flags & fmask != fset:
                return False
        if self.icmp is not None:
            itype, code, iproto = self.icmp
            if proto != iproto or packet.icmp_type != itype or (code is not None and packet.icmp_code != code):
                return False
        if self.tagged is not None and (tag == self.tagged) == self.tagged_negated:
            return False
        if self.probability is not None and rng is not None and rng.random() >= self.probability:
            return False
        return True


# ---------------------------------------------------------------------- the index
_position = operator.itemgetter(0)


class _Bucket:
    """The rules that can match one (interface, direction, family, protocol), filed by a test
    each rule cannot match without: its destination host (and port), its destination port, its
    destination network, its source network - or, for rules with none of these, ``generic``.

    A packet's candidates are ``generic`` plus one dictionary probe per port and per distinct
    prefix length, merged back into rule order. Lists hold (position, rule) pairs so the merge
    restores file order; a bucket with only generic rules hands its list out as is.
    """

    __slots__ = ("generic", "generic_rules", "by_host_port", "by_port", "by_dst", "by_src", "simple", "multi")

    def __init__(self) -> None:
        self.generic: list[tuple[int, CompiledRule]] = []
        self.generic_rules: list[CompiledRule] = []
        self.by_host_port: dict[tuple[int, int], list] = {}
        self.by_port: dict[int, list] = {}
        self.by_dst: dict[int, dict[int, list]] = {}
        self.by_src: dict[int, dict[int, list]] = {}
        self.simple = True
        self.multi = False  # some rule is filed under several prefixes: merges deduplicate

    def add(self, index: int, rule: CompiledRule, af: int, full: int) -> None:
        dst, src, port = rule.index_dst, rule.index_src, rule.index_port
        item = (index, rule)
        if dst is None and src is None and port is None and (rule.index_dsts or rule.index_srcs):
            # a multi-prefix address: filed under each prefix of this family (none: never matches)
            if rule.index_dsts:
                for paf, net, mask in rule.index_dsts:
                    if paf == af:
                        self.by_dst.setdefault(mask, {}).setdefault(net, []).append(item)
            else:
                for paf, net, mask in rule.index_srcs:
                    if paf == af:
                        self.by_src.setdefault(mask, {}).setdefault(net, []).append(item)
            self.simple = False
            self.multi = True
            return
        if dst is not None and dst[1] == full and port is not None:
            self.by_host_port.setdefault((dst[0], port), []).append(item)
        elif dst is not None and dst[1] == full:
            self.by_dst.setdefault(dst[1], {}).setdefault(dst[0], []).append(item)
        elif port is not None:
            self.by_port.setdefault(port, []).append(item)
        elif dst is not None:
            self.by_dst.setdefault(dst[1], {}).setdefault(dst[0], []).append(item)
        elif src is not None:
            self.by_src.setdefault(src[1], {}).setdefault(src[0], []).append(item)
        else:
            self.generic.append(item)
            self.generic_rules.append(rule)
            return
        self.simple = False

    def candidates(self, port: int, src: int, dst: int) -> list:
        if self.simple:
            return self.generic_rules
        lists = [self.generic] if self.generic else []
        if port >= 0:
            if self.by_port:
                found = self.by_port.get(port)
                if found:
                    lists.append(found)
            if self.by_host_port:
                found = self.by_host_port.get((dst, port))
                if found:
                    lists.append(found)
        for mask, nets in self.by_dst.items():
            found = nets.get(dst & mask)
            if found:
                lists.append(found)
        for mask, nets in self.by_src.items():
            found = nets.get(src & mask)
            if found:
                lists.append(found)
        if not lists:
            return []
        if len(lists) == 1:
            return [rule for _i, rule in lists[0]]
        merged = [item for found in lists for item in found]
        merged.sort(key=_position)  # back into file order (timsort on a few short runs)
        if not self.multi:
            return [rule for _i, rule in merged]
        result = []
        last = -1
        for position, rule in merged:
            if position != last:  # a rule filed under several prefixes may be found twice
                result.append(rule)
                last = position
        return result


class RuleList:
    """An ordered rule list (a ruleset or an anchor's) with its candidate index."""

    def __init__(self, rules: list[CompiledRule], path: str = "", indexed: bool = True) -> None:
        self.rules = rules
        self.path = path
        self.indexed = indexed  # False: every rule in order, as without skip steps (for comparison)
        self._buckets: dict[tuple, _Bucket] = {}

    def __iter__(self):
        return iter(self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def _bucket(self, ifname: str, inbound: bool, af: int, proto: int) -> _Bucket:
        key = (ifname, inbound, af, proto)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket()
            for index, rule in enumerate(self.rules):
                if rule.ifnames is not None and (ifname in rule.ifnames) == rule.if_negated:
                    continue
                if rule.direction is not None and (rule.direction == "in") != inbound:
                    continue
                if rule.af is not None and rule.af != af:
                    continue
                if rule.proto is not None and rule.proto != proto:
                    continue
                if rule.never:
                    continue
                bucket.add(index, rule, af, mask_of(af, _BITS[af]))
            self._buckets[key] = bucket
        return bucket

    def candidates(self, packet: Packet, ifname: str, inbound: bool) -> Iterable[CompiledRule]:
        if not self.rules:
            return ()
        if not self.indexed:
            return self.rules
        proto = packet.proto
        bucket = self._buckets.get((ifname, inbound, packet.af, proto))
        if bucket is None:
            bucket = self._bucket(ifname, inbound, packet.af, proto)
        if bucket.simple:
            return bucket.generic_rules
        port = packet.dport if (proto == IPPROTO_TCP or proto == IPPROTO_UDP) and not packet.frag_offset else -1
        return bucket.candidates(port, packet.src, packet.dst)


# ---------------------------------------------------------------------- compiling
def _format(rule) -> str:
    try:
        from pfha.conf import format_rule

        return format_rule(rule)
    except Exception:  # the printer may not know every rule kind; the number still identifies it
        return f"@{getattr(rule, 'number', '?')} {type(rule).__name__}"


def compile_common(rule, kind: str, resolver: Resolver, number: int, *, swap_sides: bool = False) -> CompiledRule:
    """The RuleBase fields every kind shares. ``swap_sides`` is for binat's inbound half."""
    src_ep, dst_ep = (rule.dst, rule.src) if swap_sides else (rule.src, rule.dst)
    compiled = CompiledRule(ast=rule, number=number, kind=kind, text=_format(rule))
    compiled.quick = bool(getattr(rule, "quick", False))
    compiled.direction = rule.direction
    if rule.interface is not None and rule.interface.name != "any":
        members = resolver.interfaces.members(rule.interface.name) or (rule.interface.name,)
        compiled.ifnames = frozenset(members)
        compiled.if_negated = rule.interface.negated
    compiled.af = _FAMILY.get(rule.af)
    compiled.proto = rule.proto
    compiled.src = resolver.test(src_ep.host)
    compiled.dst = resolver.test(dst_ep.host)
    compiled.sport = port_test(src_ep.port)
    compiled.dport = port_test(dst_ep.port)
    if src_ep.os is not None:
        compiled.never = True
    if dst_ep.port is not None and dst_ep.port.op == "=":
        compiled.index_port = dst_ep.port.low
    compiled.index_dst = single_prefix(dst_ep.host, resolver)
    compiled.index_src = single_prefix(src_ep.host, resolver)
    if compiled.index_dst is None:
        compiled.index_dsts = prefix_set(dst_ep.host, resolver)
    if compiled.index_src is None:
        compiled.index_srcs = prefix_set(src_ep.host, resolver)
    compiled.tagged = rule.tagged
    compiled.tagged_negated = rule.tagged_negated
    compiled.fragment_ok = src_ep.port is None and dst_ep.port is None
    return compiled


def compile_filter_rule(rule: ast.Rule, resolver: Resolver) -> CompiledRule:
    compiled = compile_common(rule, rule.action, resolver, rule.number)
    if rule.flags is not None and (rule.flags.mask or rule.flags.set):
        compiled.flags = (rule.flags.set, rule.flags.mask)
    if rule.icmp is not None:
        iproto = IPPROTO_ICMPV6 if (rule.icmp.v6 or rule.af == "inet6") else IPPROTO_ICMP
        compiled.icmp = (rule.icmp.type, rule.icmp.code, iproto)
    if compiled.flags is not None or compiled.icmp is not None:
        compiled.fragment_ok = False
    if rule.uid is not None or rule.gid is not None:
        compiled.never = True  # no local socket owner is known to the engine
    compiled.probability = rule.probability if rule.probability not in (None, 1, 1.0) else None
    compiled.fragments_only = rule.fragment
    return compiled
