"""Translation: ``binat``, then ``rdr`` (in) or ``nat`` (out), first match; pools and ports.

pf.conf(5) "Translation" and sys/netpfil/pf/pf_lb.c (pf_match_translation, pf_get_translation,
pf_map_addr, pf_get_sport):

- binat rules are tried first in both directions, then rdr rules for an inbound packet or nat
  rules for an outbound one; each list is first-match and ``no nat``/``no rdr``/``no binat``
  match and stop;
- pools: one host is used as is; a list, a table or a multi-address interface is round-robin;
  a network block allows ``bitmask``, ``random``, ``source-hash`` (with a key) and
  ``round-robin``; ``sticky-address`` makes a source keep its first choice;
- nat source ports: 50001-65535 unless ``static-port`` or an explicit range, starting at a
  random port and searching up, then down, for one no state uses (pf_get_sport);
- rdr destination ports: ``port a`` sends the whole matched range to a, ``port a:*`` keeps the
  offset.

Randomness comes from the engine's seeded RNG. Nothing here touches the OS.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Callable, Optional

from pfha.conf import ast
from pfha.engine.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, Packet, addr_to_text
from pfha.engine.rules import CompiledRule, Prefix, Resolver, RuleList, compile_common, mask_of

NAT_PORT_LOW = 50001  # PF_NAT_PROXY_PORT_LOW
NAT_PORT_HIGH = 65535  # PF_NAT_PROXY_PORT_HIGH
_BITS = {4: 32, 6: 128}


class MapFailed(Exception):
    """No address or port could be found (pf's PFRES_MAPFAILED)."""


@dataclass
class CompiledPool:
    """A translation pool with its round-robin cursor (pf_kpool.cur / counter)."""

    prefixes: list  # [(af, net, mask)] or a table name
    table: Optional[object]
    method: Optional[str]
    key: bytes
    sticky: bool
    static_port: bool
    port_low: int
    port_high: int
    port_star: bool
    cursor: int = 0
    offset: int = 0

    def _entries(self, af: int) -> list[Prefix]:
        if self.table is not None:
            return [p for p, neg in self.table.entries.items() if not neg and p[0] == af]
        return [p for p in self.prefixes if p[0] == af]

    def choose(self, af: int, src: int, orig: int, rng: random.Random) -> int:
        """pf_map_addr: one address of the pool for a packet from ``src`` (``orig`` is the
        address being replaced, used by bitmask/binat)."""
        entries = self._entries(af)
        if not entries:
            raise MapFailed("no address of the right family in the pool")
        method = self.method
        full = mask_of(af, _BITS[af])
        if len(entries) == 1 and method in (None, "bitmask", "random", "source-hash"):
            _af, net, mask = entries[0]
            if mask == full:
                return net
            if method == "random":
                return net | (rng.getrandbits(_BITS[af]) & ~mask & full)
            if method == "source-hash":
                digest = hashlib.md5(self.key + src.to_bytes(16, "big")).digest()
                return net | (int.from_bytes(digest, "big") & ~mask & full)
            return net | (orig & ~mask & full)  # bitmask (the default for a block)
        # round-robin over the entries, walking each block's hosts in turn
        _af, net, mask = entries[self.cursor % len(entries)]
        size = (~mask & full) + 1
        if size == 1:
            self.cursor = (self.cursor + 1) % len(entries)
            return net
        hosts = size - 2 if af == 4 and size > 2 else size  # skip network and broadcast
        first = net + (1 if af == 4 and size > 2 else 0)
        address = first + self.offset % hosts
        self.offset += 1
        if self.offset >= hosts:
            self.offset = 0
            self.cursor = (self.cursor + 1) % len(entries)
        return address


@dataclass
class Translation:
    """What a translation did to a packet: for the decision and the state keys."""

    kind: str  # "nat" | "rdr" | "binat"
    rule: CompiledRule
    orig_src: tuple  # (af, addr, port)
    orig_dst: tuple
    new_src: tuple
    new_dst: tuple

    def describe(self) -> dict:
        return {
            "type": self.kind,
            "rule": self.rule.number,
            "src": endpoint_text(self.new_src),
            "dst": endpoint_text(self.new_dst),
            "orig_src": endpoint_text(self.orig_src),
            "orig_dst": endpoint_text(self.orig_dst),
        }


def endpoint_text(endpoint: tuple) -> str:
    af, addr, port = endpoint
    text = addr_to_text(af, addr)
    return f"[{text}]:{port}" if af == 6 else f"{text}:{port}"


def compile_pool(pool: ast.Pool, resolver: Resolver, rule_number: int) -> CompiledPool:
    prefixes: list = []
    table = None
    multi = False
    for entry in pool.addresses:
        address = entry.address
        if isinstance(address, ast.TableAddress):
            table = resolver.tables.get(address.name)
            if table is None:
                from pfha.engine.rules import Table

                table = resolver.tables.setdefault(address.name, Table(address.name))
            multi = True
            continue
        found = resolver.prefixes(address) or []
        if isinstance(address, ast.DynamicAddress) and len(found) > 1:
            multi = True
        prefixes.extend(found)
    method = pool.method
    if method is None and (multi or len(prefixes) > 1):
        method = "round-robin"
    key = (pool.hash_key or f"pfha-rule-{rule_number}").encode()
    return CompiledPool(prefixes, table, method, key, pool.sticky, pool.static_port,
                        pool.port_low, pool.port_high, pool.port_star)


@dataclass(eq=False)
class TranslationRuleC:
    """A compiled nat/rdr/binat rule: the match part and the pool."""

    rule: CompiledRule
    kind: str
    negated: bool
    pass_: bool
    pool: Optional[CompiledPool]
    dst_port_low: int = 0  # rdr: the low end of the matched destination port range


def compile_translation(rule: ast.TranslationRule, resolver: Resolver, inbound_binat: bool = False) -> TranslationRuleC:
    compiled = compile_common(rule, rule.kind, resolver, rule.number, swap_sides=inbound_binat)
    pool = compile_pool(rule.pool, resolver, rule.number) if rule.pool.addresses else None
    if inbound_binat and pool is not None:
        # Inbound binat matches packets addressed to the external (pool) address.
        from pfha.engine.rules import _prefix_test

        compiled.dst = _prefix_test(pool.prefixes)
        compiled.dport = None
        compiled.index_port = None
        compiled.index_dst = (pool.prefixes[0][1], pool.prefixes[0][2]) if len(pool.prefixes) == 1 else None
        compiled.index_dsts = ()  # compile_common's came from the swapped side: not this test
        compiled.index_src = compiled.index_src
    low = rule.dst.port.low if rule.dst.port is not None else 0
    return TranslationRuleC(compiled, rule.kind, rule.negated, rule.pass_, pool, low)


class Translator:
    """The translation rulesets and their first-match evaluation."""

    def __init__(self, binat_out: list, binat_in: list, rdr: list, nat: list) -> None:
        self.binat_out = binat_out
        self.binat_in = binat_in
        self.rdr = rdr
        self.nat = nat
        self.lists = {
            "binat_out": RuleList([t.rule for t in binat_out]),
            "binat_in": RuleList([t.rule for t in binat_in]),
            "rdr": RuleList([t.rule for t in rdr]),
            "nat": RuleList([t.rule for t in nat]),
        }
        self._by_rule = {id(t.rule): t for t in binat_out + binat_in + rdr + nat}

    def match(self, packet: Packet, ifname: str, inbound: bool) -> Optional[TranslationRuleC]:
        """pf_get_translation's rule lookup: binat first, then rdr/nat; first match."""
        order = ("binat_in", "rdr") if inbound else ("binat_out", "nat")
        for name in order:
            for rule in self.lists[name].candidates(packet, ifname, inbound):
                rule.counters.evaluations += 1
                if rule.matches(packet, ifname, inbound, packet.tag) and all(
                        gate.matches(packet, ifname, inbound, packet.tag) for gate in rule.gates):
                    return self._by_rule[id(rule)]
        return None


def apply(tr: TranslationRuleC, packet: Packet, inbound: bool, rng: random.Random,
          port_free: Callable[[int, int, int], bool], sticky: Optional[dict] = None) -> Translation:
    """Rewrite ``packet`` per ``tr`` (pf_get_translation + pf_change_ap) and say what changed.

    ``port_free(af, addr, port)`` tells whether a nat source (addr, port) would clash with an
    existing state for this destination.
    """
    af = packet.af
    orig_src = (af, packet.src, packet.sport)
    orig_dst = (af, packet.dst, packet.dport)
    pool = tr.pool
    if pool is None:
        raise MapFailed("translation rule without a pool")
    kind = tr.kind
    if kind == "nat" or (kind == "binat" and not inbound):
        new_addr = _pool_address(pool, af, packet.src, packet.src, rng, sticky)
        if kind == "binat":
            # binat maps the whole block one to one: keep the host bits (pf_map_addr bitmask).
            _paf, net, mask = pool.prefixes[0] if pool.prefixes else (af, new_addr, mask_of(af, _BITS[af]))
            full = mask_of(af, _BITS[af])
            new_addr = net | (packet.src & ~mask & full)
            new_port = packet.sport
        else:
            new_port = _nat_port(pool, packet, new_addr, rng, port_free)
        packet.src = new_addr
        if packet.proto in (IPPROTO_TCP, IPPROTO_UDP):
            packet.sport = new_port
        elif packet.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and packet.icmp_id == packet.sport:
            packet.sport = packet.dport = packet.icmp_id = new_port
    elif kind == "rdr":
        new_addr = _pool_address(pool, af, packet.src, packet.dst, rng, sticky)
        packet.dst = new_addr
        if packet.proto in (IPPROTO_TCP, IPPROTO_UDP) and pool.port_low:
            packet.dport = _rdr_port(tr, pool, packet.dport)
    else:  # binat inbound: back to the internal address, host bits kept
        prefixes = _internal_prefixes(tr)
        _iaf, net, mask = prefixes[0]
        full = mask_of(af, _BITS[af])
        packet.dst = net | (packet.dst & ~mask & full)
    return Translation(kind, tr.rule, orig_src, orig_dst, (af, packet.src, packet.sport), (af, packet.dst, packet.dport))


def _internal_prefixes(tr: TranslationRuleC) -> list:
    cached = tr.rule.extra.get("binat_internal")
    if cached is None:
        raise MapFailed("binat rule without an internal address")
    return cached


def _pool_address(pool: CompiledPool, af: int, src: int, orig: int, rng: random.Random, sticky: Optional[dict]) -> int:
    if pool.sticky and sticky is not None:
        key = (id(pool), af, src)
        found = sticky.get(key)
        if found is not None:
            return found
        chosen = pool.choose(af, src, orig, rng)
        sticky[key] = chosen
        return chosen
    return pool.choose(af, src, orig, rng)


def _nat_port(pool: CompiledPool, packet: Packet, new_addr: int, rng: random.Random,
              port_free: Callable[[int, int, int], bool]) -> int:
    """pf_get_sport: static-port, an explicit range, or 50001-65535 from a random start."""
    af = packet.af
    if packet.proto not in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6):
        return packet.sport
    if pool.static_port:
        if port_free(af, new_addr, packet.sport):
            return packet.sport
        raise MapFailed("static-port: the source port is in use")
    low, high = (pool.port_low, pool.port_high or pool.port_low) if pool.port_low else (NAT_PORT_LOW, NAT_PORT_HIGH)
    if packet.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        if packet.icmp_id != packet.sport:
            return packet.sport  # not a query: pf does not change ICMP type/code
        low, high = 1, 65535  # pf_get_sport: echo ids are drawn from the whole range
    if low > high:
        low, high = high, low
    if low == high:
        if port_free(af, new_addr, low):
            return low
        raise MapFailed("the nat port is in use")
    cut = rng.randrange(low, high + 1)
    for port in range(cut, high + 1):
        if port_free(af, new_addr, port):
            return port
    for port in range(cut - 1, low - 1, -1):
        if port_free(af, new_addr, port):
            return port
    raise MapFailed("no free nat port")


def _rdr_port(tr: TranslationRuleC, pool: CompiledPool, dport: int) -> int:
    if pool.port_high and pool.port_high != pool.port_low:
        span = pool.port_high - pool.port_low + 1
        return pool.port_low + ((dport - tr.dst_port_low) % span)
    if pool.port_star:
        return pool.port_low + (dport - tr.dst_port_low)
    return pool.port_low
