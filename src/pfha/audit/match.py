"""Which rules a concrete packet meets, and which rules cover which: the audit's view of pf.

The lint needs two questions answered on the parsed ruleset:

- *evaluation*: what do translation (first match) and the filter (last match, ``quick``
  stops) decide for one packet on one interface and direction? (pf.conf(5) "Translation",
  "Packet filtering"); used to compute the example packet behind each finding;
- *coverage*: does rule A match every packet rule B matches? (the basis of shadowing).

Both are deliberately conservative: any match condition this module does not model (user,
tags, OS fingerprints, probability, anchors...) makes the answer "unknown", and the lint then
reports nothing rather than something false. The reference engine (``pfha.engine``) is the
authority on pf semantics; when it is available the lint replays each example packet through it
(:mod:`pfha.audit.proof`). Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Literal

from pfha.conf import ast
from pfha.conf.interfaces import InterfaceView

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Tri = bool | None  # True, False, or None: "cannot tell"

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 112: "carp", 240: "pfsync"}
TH_SYN, TH_ACK = 0x02, 0x10


@dataclass(frozen=True)
class Packet:
    """A packet as pf's rules see it on one interface in one direction."""

    direction: Literal["in", "out"]
    ifname: str
    proto: int
    src: IPAddress
    dst: IPAddress
    sport: int | None = None
    dport: int | None = None
    flags: int | None = None  # TCP flags; a connection's first packet is SYN
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def af(self) -> str:
        return "inet" if self.src.version == 4 else "inet6"

    def __str__(self) -> str:
        proto = PROTO_NAMES.get(self.proto, str(self.proto))
        src = f"{self.src}:{self.sport}" if self.sport is not None else str(self.src)
        dst = f"{self.dst}:{self.dport}" if self.dport is not None else str(self.dst)
        extra = ""
        if self.proto == 6 and self.flags is not None:
            extra = " [" + "".join(l for b, l in zip(range(8), "FSRPAUEW") if self.flags & (1 << b)) + "]"
        elif self.icmp_type is not None:
            extra = f" type {self.icmp_type}" + (f" code {self.icmp_code}" if self.icmp_code is not None else "")
        return f"{self.direction} on {self.ifname}: {proto} {src} > {dst}{extra}"


# ---------------------------------------------------------------------------------------------
# An index of rules by the fields most rules pin down


def _exact_port(match: ast.PortMatch | None) -> int | None:
    return match.low if match is not None and match.op == "=" else None


class RuleIndex:
    """Rules bucketed by (interface, direction, protocol, destination port), None = any.

    A packet (or a rule looking for the rules that cover it) only needs the buckets whose key
    parts are either its own value or None: at most 16 lists, merged back into rule order.
    This keeps the lint near-linear on large rulesets instead of quadratic. Rules on negated
    interfaces or interface groups go to the "any interface" bucket and are checked in full.
    """

    def __init__(self, rules, view: InterfaceView) -> None:
        self.rules = list(rules)
        self.buckets: dict[tuple, list[int]] = {}
        for position, rule in enumerate(self.rules):
            self.buckets.setdefault(self._key(rule, view), []).append(position)

    @staticmethod
    def _key(rule, view: InterfaceView) -> tuple:
        interface = getattr(rule, "interface", None)
        name = None
        if interface is not None and not interface.negated and interface.name != "any" and not view.groups.get(interface.name):
            name = interface.name
        return (name, rule.direction, rule.proto, _exact_port(rule.dst.port))

    def candidates(self, ifname: str | None, direction: str | None, proto: int | None, dport: int | None) -> list:
        """Rules that may match something with these values (None: the value itself is "any")."""
        found: list[int] = []
        for a in {ifname, None}:
            for b in {direction, None}:
                for c in {proto, None}:
                    for d in {dport, None}:
                        found.extend(self.buckets.get((a, b, c, d), ()))
        return [self.rules[i] for i in sorted(found)]


# ---------------------------------------------------------------------------------------------
# Matching one rule


def _and(*values: Tri) -> Tri:
    if any(v is False for v in values):
        return False
    if any(v is None for v in values):
        return None
    return True


class Matcher:
    """Matches packets against rules of one ruleset, on one node's interfaces."""

    def __init__(self, ruleset: ast.Ruleset, view: InterfaceView) -> None:
        self.ruleset = ruleset
        self.view = view
        self.tables = {t.name: t for t in ruleset.tables}
        self.filter_index = RuleIndex(ruleset.filter, view)

    # -- addresses -----------------------------------------------------------------------------

    def address_contains(self, address: ast.Address, ip: IPAddress) -> Tri:
        if isinstance(address, ast.AnyAddress):
            return True
        if isinstance(address, ast.HostAddress):
            return ip.version == address.address.version and ip in address.network
        if isinstance(address, ast.RangeAddress):
            return ip.version == address.start.version and address.start <= ip <= address.end
        if isinstance(address, ast.TableAddress):
            table = self.tables.get(address.name)
            if table is None or table.persist and not table.const:
                return None  # filled at run time (pfctl -t ... -T add)
            best: tuple[int, bool] | None = None
            for entry in table.entries + table.file_entries:
                hit = self.address_contains(entry.address, ip)
                if hit is None:
                    return None
                if hit:
                    length = entry.address.prefixlen if isinstance(entry.address, ast.HostAddress) else 0
                    if best is None or length > best[0]:
                        best = (length, not entry.negated)
            return bool(best and best[1])
        if isinstance(address, ast.DynamicAddress):
            networks = self.dynamic_networks(address)
            if networks is None:
                return None
            return any(ip in net for net in networks if net.version == ip.version)
        return None  # no-route, urpf-failed: depend on the routing table

    def dynamic_networks(self, address: ast.DynamicAddress) -> list | None:
        if address.interface != "self" and not self.view.exists(address.interface):
            return None
        out = []
        for iface in self.view.addrs(address.interface):
            if "network" in address.modifiers:
                out.append(iface.network)
            elif "broadcast" in address.modifiers or "peer" in address.modifiers:
                return None
            else:
                out.append(ipaddress.ip_network(iface.ip))
        return out

    def host_match(self, match: ast.HostMatch, ip: IPAddress) -> Tri:
        hit = self.address_contains(match.address, ip)
        if hit is None:
            return None
        return hit != match.negated

    @staticmethod
    def port_match(match: ast.PortMatch | None, port: int | None) -> Tri:
        if match is None:
            return True
        if port is None:
            return False  # pf: a port test never matches a packet without ports
        low, high, op = match.low, match.high, match.op
        table = {
            "=": lambda: port == low, "!=": lambda: port != low, "<": lambda: port < low,
            "<=": lambda: port <= low, ">": lambda: port > low, ">=": lambda: port >= low,
            "><": lambda: low < port < high, "<>": lambda: port < low or port > high,
            ":": lambda: low <= port <= high,
        }
        test = table.get(op)
        return None if test is None else test()

    def interface_match(self, match: ast.InterfaceMatch | None, ifname: str) -> Tri:
        if match is None or match.name == "any":
            return True
        if not self.view.exists(match.name):
            hit = match.name == ifname
        else:
            hit = ifname in self.view.members(match.name)
        return hit != match.negated

    # -- rules ---------------------------------------------------------------------------------

    def matches(self, rule: ast.RuleBase, packet: Packet) -> Tri:
        """Does ``rule`` match ``packet``? Conditions this module does not model give None."""
        if rule.direction is not None and rule.direction != packet.direction:
            return False
        if rule.af is not None and rule.af != packet.af:
            return False
        if rule.proto is not None and rule.proto != packet.proto:
            return False
        checks: list[Tri] = [
            self.interface_match(rule.interface, packet.ifname),
            self.host_match(rule.src.host, packet.src),
            self.host_match(rule.dst.host, packet.dst),
            self.port_match(rule.src.port, packet.sport),
            self.port_match(rule.dst.port, packet.dport),
        ]
        if rule.tagged or rule.received_on or rule.src.os:
            checks.append(None)
        if isinstance(rule, (ast.Rule, ast.AnchorRule)):
            if rule.uid or rule.gid:
                checks.append(None)
            if rule.flags is not None and packet.proto == 6:
                checks.append((packet.flags or 0) & rule.flags.mask == rule.flags.set)
            if rule.icmp is not None:
                if packet.icmp_type is None:
                    checks.append(False)
                else:
                    checks.append(rule.icmp.type == packet.icmp_type and
                                  (rule.icmp.code is None or rule.icmp.code == packet.icmp_code))
        if isinstance(rule, ast.Rule):
            if rule.tos is not None or rule.prio is not None or rule.probability is not None or rule.fragment:
                checks.append(None)
        if isinstance(rule, ast.AnchorRule):
            checks.append(None)
        return _and(*checks)

    # -- evaluation ----------------------------------------------------------------------------

    def skipped(self, ifname: str) -> bool:
        return any(ifname in self.view.members(name) or ifname == name for name in self.ruleset.options.skip)

    def translate(self, packet: Packet) -> tuple[Packet, ast.TranslationRule | None, bool]:
        """Translation, first match: binat, then rdr (in) or nat (out). Returns the packet the
        filter sees, the rule that applied, and whether the outcome is certain."""
        wanted = ("binat", "rdr") if packet.direction == "in" else ("binat", "nat")
        for kind in wanted:
            for rule in self.ruleset.translation:
                if not isinstance(rule, ast.TranslationRule):
                    if getattr(rule, "kind", "").startswith(kind):
                        return packet, None, False
                    continue
                if rule.kind != kind:
                    continue
                probe = packet
                if kind == "binat" and packet.direction == "in":
                    continue  # binat inbound matches on the translated side; not modelled
                hit = self.matches(replace(rule, direction=None) if rule.direction is None else rule, probe)
                if hit is None:
                    return packet, None, False
                if not hit:
                    continue
                if rule.negated:
                    return packet, rule, True
                return self.apply(rule, packet), rule, True
        return packet, None, True

    def pool_address(self, pool: ast.Pool) -> IPAddress | None:
        for member in pool.addresses:
            address = member.address
            if isinstance(address, ast.HostAddress):
                return address.address
            if isinstance(address, ast.DynamicAddress):
                nets = self.dynamic_networks(address)
                if nets:
                    return nets[0].network_address
            return None
        return None

    def apply(self, rule: ast.TranslationRule, packet: Packet) -> Packet:
        target = self.pool_address(rule.pool)
        if target is None:
            return packet
        if rule.kind == "rdr" or (rule.kind == "binat" and packet.direction == "in"):
            port = packet.dport
            if rule.pool.port_low and packet.dport is not None:
                offset = 0
                if rule.dst.port is not None and rule.dst.port.op == ":" and rule.pool.port_high:
                    offset = packet.dport - rule.dst.port.low
                port = rule.pool.port_low + offset
            return replace(packet, dst=target, dport=port)
        return replace(packet, src=target)

    def filter(self, packet: Packet) -> tuple[str, ast.Rule | None, bool]:
        """The filter's decision: (``pass``/``block``, deciding rule or None for the default,
        certain?)."""
        if self.skipped(packet.ifname):
            return "pass", None, True
        decision: tuple[str, ast.Rule | None] = ("pass", None)
        certain = True
        for rule in self.filter_index.candidates(packet.ifname, packet.direction, packet.proto, packet.dport):
            hit = self.matches(rule, packet)
            if hit is None:
                certain = False
                continue
            if not hit or not isinstance(rule, ast.Rule) or rule.action == "match":
                continue
            decision = (rule.action, rule)
            if rule.quick:
                break
        return decision[0], decision[1], certain


# ---------------------------------------------------------------------------------------------
# Coverage: does rule A match everything rule B matches?


def address_covers(a: ast.Address, b: ast.Address) -> bool:
    if isinstance(a, ast.AnyAddress):
        return True
    if isinstance(a, ast.HostAddress) and isinstance(b, ast.HostAddress):
        return a.address.version == b.address.version and b.network.subnet_of(a.network)
    return a == b


def host_covers(a: ast.HostMatch, b: ast.HostMatch) -> bool:
    if isinstance(a.address, ast.AnyAddress) and not a.negated:
        return True
    if a.negated or b.negated:
        return a == b
    return address_covers(a.address, b.address)


def port_covers(a: ast.PortMatch | None, b: ast.PortMatch | None) -> bool:
    if a is None:
        return True
    if b is None:
        return False
    return a == b or (_port_range(a) is not None and _port_range(b) is not None
                      and _port_range(a)[0] <= _port_range(b)[0] and _port_range(b)[1] <= _port_range(a)[1])


def _port_range(match: ast.PortMatch) -> tuple[int, int] | None:
    return {"=": (match.low, match.low), ":": (match.low, match.high or match.low),
            ">=": (match.low, 65535), "<=": (0, match.low), ">": (match.low + 1, 65535),
            "<": (0, match.low - 1), "><": (match.low + 1, (match.high or 0) - 1)}.get(match.op)


def endpoint_covers(a: ast.Endpoint, b: ast.Endpoint) -> bool:
    return host_covers(a.host, b.host) and port_covers(a.port, b.port) and (a.os is None or a.os == b.os)


def covers(a: ast.RuleBase, b: ast.RuleBase) -> bool:
    """True when every packet rule ``b`` matches is matched by rule ``a`` (never a guess)."""
    if a.direction is not None and a.direction != b.direction:
        return False
    if a.interface is not None and a.interface != b.interface:
        return False
    if a.af is not None and a.af != b.af:
        return False
    if a.proto is not None and a.proto != b.proto:
        return False
    if not (endpoint_covers(a.src, b.src) and endpoint_covers(a.dst, b.dst)):
        return False
    for name in ("tagged", "tagged_negated", "received_on"):
        if getattr(a, name) and getattr(a, name) != getattr(b, name):
            return False
    if isinstance(a, ast.Rule):
        if not isinstance(b, ast.Rule):
            return False
        for name in ("uid", "gid", "icmp", "tos", "prio", "probability"):
            if getattr(a, name) is not None and getattr(a, name) != getattr(b, name):
                return False
        if a.flags is not None and a.flags != b.flags and (a.proto == 6 or b.proto == 6 or b.proto is None):
            return False
        if a.fragment and not b.fragment:
            return False
    return True
