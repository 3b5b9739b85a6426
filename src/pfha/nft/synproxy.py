"""Which ``synproxy state`` rules the kernel runs as real nft synproxy, and why not the others.

nft's ``synproxy`` answers a SYN only when conntrack has not seen it: the SYN is untracked
(``notrack``) in a raw-priority prerouting chain, before conntrack, before rdr and before pf's
in-pass. Untracked packets skip NAT, and the raw chain must decide on its own which SYNs pf
would hand to the synproxy rule. So a rule is compiled as real synproxy only when that choice
can be made exactly there (docs/fidelity.md, "synproxy state"):

- it is a ``pass in`` rule, floating, without state limits, tags, probability or routing
  options (the state made for the proxied connection is marked outside the in-pass);
- no translation rule (nat, rdr, binat, including ``nat pass`` / ``rdr pass``) can match its
  connections, before or after rdr;
- the rules that precede it in first-match order and may overlap it are re-evaluated in the raw
  chain (they decide those SYNs there as in the in-pass), so nothing they test may change
  between raw and the in-pass (``tagged``, ``probability``, ``tos`` under ``scrub set-tos``);
- a bare ACK on its connections that carries no valid cookie is dropped by nft synproxy; pf
  would evaluate the rules (no state), so every such ACK must be blocked there too: no pass
  rule that overlaps it may match a bare ACK, no ``block return`` may, and some plain ``block``
  rule must cover all of its connections (else pf's default rule would pass the ACK).

Everything else keeps the ``keep state`` approximation, with a warning that says which of these
conditions failed. "Overlap" is decided conservatively: two tests are disjoint only when that
is certain (different families, protocols, interfaces, host networks or port ranges).

Pure: reads the parsed ruleset only. Never touches the OS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pfha.conf import ast

TH_FIN, TH_SYN, TH_RST, TH_ACK = 0x01, 0x02, 0x04, 0x10
IPPROTO_TCP = 6
PORT_MAX = 65535
# pf_calc_mss on a 1500-byte MTU: what pf's synproxy announces (and sends the server) when the
# client offers more. pf's SYN-ACK carries that MSS and no other option (no window scaling,
# timestamps or SACK: pf_synproxy clears wscale), and so does nft's with only ``mss`` given.
MSS = {"ip": 1460, "ip6": 1440}
LIMIT_OPTIONS = ("max", "max-src-conn", "max-src-conn-rate", "overload")


@dataclass
class Plan:
    """The synproxy rules compiled for real, what shields them in the raw chain, and the
    reason each other synproxy rule stays ``keep state``."""

    real: list[ast.Rule] = field(default_factory=list)  # file order
    shields: set[int] = field(default_factory=set)  # id() of rules re-evaluated in the raw chain
    reasons: dict[int, str] = field(default_factory=dict)  # id(rule) -> why approximated

    def is_real(self, rule: Any) -> bool:
        return bool(self.real) and any(rule is r for r in self.real)


def _where(rule: Any) -> str:
    """Where another rule is, inside a warning already prefixed with the file."""
    origin = getattr(rule, "origin", None)
    return f"line {origin.line}" if origin else "an anchor"


def flags_can_match(flags: ast.TcpFlags | None, must_set: int, must_clear: int) -> bool:
    """Can a TCP packet with ``must_set`` bits set and ``must_clear`` clear (others free)
    pass the test ``flags set/mask``?"""
    if flags is None or not flags.mask:
        return True
    return not (flags.set & must_clear) and not (flags.mask & must_set & ~flags.set)


def bare_ack(flags: ast.TcpFlags | None) -> bool:
    """Can the test match an ACK without SYN, RST or FIN (the handshake's last packet)?"""
    return flags_can_match(flags, TH_ACK, TH_SYN | TH_RST | TH_FIN)


def plain_syn(flags: ast.TcpFlags | None) -> bool:
    return flags_can_match(flags, TH_SYN, TH_ACK)


# ------------------------------------------------------------------------------ overlap
def _networks(address: Any) -> list[Any] | None:
    """The networks an address test covers, or None when not known at compile time."""
    if isinstance(address, ast.HostAddress):
        return [address.network]
    if isinstance(address, ast.RangeAddress):
        return list(ipaddress.summarize_address_range(address.start, address.end))
    return None


def hosts_disjoint(a: ast.HostMatch, b: ast.HostMatch) -> bool:
    """True only when no address can pass both tests."""
    na, nb = _networks(a.address), _networks(b.address)
    if na is None or nb is None:
        return False
    if not a.negated and not b.negated:
        return not any(x.version == y.version and x.overlaps(y) for x in na for y in nb)
    if a.negated and b.negated:
        return False
    positive, negative = (nb, na) if a.negated else (na, nb)
    return all(any(p.version == n.version and p.subnet_of(n) for n in negative) for p in positive)


def port_ranges(port: ast.PortMatch | None) -> list[tuple[int, int]]:
    """A port test as inclusive ranges of 0..65535."""
    if port is None:
        return [(0, PORT_MAX)]
    low, high = port.low, port.high if port.high is not None else port.low
    ranges = {
        "=": [(low, low)], "!=": [(0, low - 1), (low + 1, PORT_MAX)],
        "<": [(0, low - 1)], "<=": [(0, low)], ">": [(low + 1, PORT_MAX)], ">=": [(low, PORT_MAX)],
        ":": [(low, high)], "><": [(low + 1, high - 1)], "<>": [(0, low - 1), (high + 1, PORT_MAX)],
    }.get(port.op, [(0, PORT_MAX)])
    return [(a, b) for a, b in ranges if a <= b]


def ports_disjoint(a: ast.PortMatch | None, b: ast.PortMatch | None) -> bool:
    return not any(x0 <= y1 and y0 <= x1 for x0, x1 in port_ranges(a) for y0, y1 in port_ranges(b))


def interfaces_disjoint(a: ast.InterfaceMatch | None, b: ast.InterfaceMatch | None, members: Callable[[str], set[str]]) -> bool:
    if a is None or b is None or a.name == "any" or b.name == "any":
        return False
    ma, mb = members(a.name), members(b.name)
    if not a.negated and not b.negated:
        return not ma & mb
    if a.negated and b.negated:
        return False
    positive, negative = (mb, ma) if a.negated else (ma, mb)
    return positive <= negative


def _family(rule: Any) -> str | None:
    af = rule.af
    for endpoint in (rule.src, rule.dst):
        af = af or ast.address_family(endpoint.host.address)
    return af


def may_overlap(a: Any, b: Any, members: Callable[[str], set[str]], *, interfaces: bool = True,
                a_dst: ast.HostMatch | None = None, a_dport: Any = "same") -> bool:
    """Can one packet match both rules' tests (on the same pass)? ``a_dst``/``a_dport``
    replace ``a``'s destination (a translation's target)."""
    fa, fb = _family(a), _family(b)
    if fa and fb and fa != fb:
        return False
    if a.proto is not None and b.proto is not None and a.proto != b.proto:
        return False
    if interfaces and interfaces_disjoint(a.interface, b.interface, members):
        return False
    dst = a_dst if a_dst is not None else a.dst.host
    dport = a.dst.port if a_dport == "same" else a_dport
    if hosts_disjoint(a.src.host, b.src.host) or hosts_disjoint(dst, b.dst.host):
        return False
    return not (ports_disjoint(a.src.port, b.src.port) or ports_disjoint(dport, b.dst.port))


def translation_touches(t: ast.TranslationRule, rule: ast.Rule, members: Callable[[str], set[str]]) -> bool:
    """Can translation ``t`` apply to a connection ``rule`` passes (rdr: before or after
    its rewrite; nat: on the way out, any interface; binat: both)?"""
    if t.negated:
        return False  # ``no nat`` / ``no rdr`` never translate
    targets = [ast.HostMatch(p.address) for p in t.pool.addresses] or [ast.HostMatch()]
    if t.kind == "rdr":
        if may_overlap(t, rule, members):
            return True
        port = ast.PortMatch(":", t.pool.port_low, t.pool.port_high or t.pool.port_low) if t.pool.port_low else t.dst.port
        return any(may_overlap(t, rule, members, a_dst=target, a_dport=port) for target in targets)
    if t.kind == "nat":
        return may_overlap(t, rule, members, interfaces=False)
    inside = t.src.host
    for host in (inside, *targets):  # binat: rdr of the outside address, nat of the inside one
        if not hosts_disjoint(host, rule.dst.host) or not hosts_disjoint(inside, rule.src.host):
            if _family(t) is None or _family(rule) is None or _family(t) == _family(rule):
                if t.proto is None or rule.proto is None or t.proto == rule.proto:
                    return True
    return False


# ------------------------------------------------------------------------------ the plan
def _own_reason(rule: ast.Rule, bound: bool) -> str | None:
    if rule.direction != "in":
        return "it is not a `pass in` rule (nft synproxy answers SYNs on the in-pass only)"
    if bound:
        return "its state is if-bound (the proxied connection's state is marked where the interface is not known)"
    limits = [o.name for o in rule.state.options if o.name in LIMIT_OPTIONS]
    if limits:
        return f"state limits ({', '.join(limits)}) count tracked connections, and the proxied SYN is untracked"
    if rule.tag:
        return "it sets a tag (the proxied SYN to the server is a new packet that carries none)"
    if rule.probability is not None and rule.probability < 1:
        return "probability is drawn again in the raw chain"
    if rule.route or rule.divert or rule.translations or rule.received_on or rule.rtable is not None:
        return "route-to/reply-to/divert-to/rtable/received-on/nat-to options"
    if bare_ack(rule.flags):
        return f"its flags ({'any' if not rule.flags or not rule.flags.mask else 'without S/A'}) also make state on bare ACKs"
    return None


def _covering_block(rules: list[ast.Rule], rule: ast.Rule, members: Callable[[str], set[str]]) -> bool:
    """Is there a plain ``block`` that matches every packet of ``rule``'s connections?"""
    for b in rules:
        if b.action != "block" or b.direction not in (None, "in") or (b.block and b.block.kind != "drop"):
            continue
        if b.interface is not None and b.interface.name != "any":
            same = rule.interface is not None and not b.interface.negated and not rule.interface.negated and \
                members(rule.interface.name) <= members(b.interface.name)
            if not same:
                continue
        if b.af is not None and b.af != _family(rule):
            continue
        if b.proto not in (None, IPPROTO_TCP) or (b.flags is not None and b.flags.mask):
            continue
        if b.src != ast.ANY_ENDPOINT or b.dst != ast.ANY_ENDPOINT:
            continue
        if any(getattr(b, name) is not None for name in ("tagged", "probability", "icmp", "tos", "uid", "gid", "received_on")):
            continue
        return True
    return False


def plan(filters: list[Any], translation: Iterable[Any], scrub: Iterable[Any],
         members: Callable[[str], set[str]], bound: Callable[[ast.Rule], bool]) -> Plan:
    """Decide, for every ``synproxy state`` rule, real nft synproxy or ``keep state`` (why)."""
    rules = [r for r in filters if isinstance(r, ast.Rule)]
    result = Plan()
    candidates = [r for r in rules if r.action == "pass" and r.state.kind == "synproxy"]
    if not candidates:
        return result
    translations = [t for t in translation if isinstance(t, ast.TranslationRule)]
    tagged = next((r for r in [*rules, *translations] if r.tagged is not None), None)
    set_tos = any(isinstance(s, ast.ScrubRule) and s.options.set_tos is not None for s in scrub)
    from pfha.nft.compile import first_match_order  # compile imports this module: not at the top

    order = [r for r in first_match_order(rules) if r.direction in (None, "in") and r.action in ("pass", "block")]
    for rule in candidates:
        reason = _own_reason(rule, bound(rule))
        if reason is None and tagged is not None:
            reason = f"the ruleset tests tags (`tagged` at {_where(tagged)}), which are set after the raw chain"
        if reason is None:
            touchers = sorted((t for t in translations if translation_touches(t, rule, members)),
                              key=lambda t: ("rdr", "binat", "nat").index(t.kind))
            if touchers:
                found = list(dict.fromkeys(f"{t.kind}{' pass' if t.pass_ else ''} at {_where(t)}" for t in touchers))
                names = ", ".join(found[:3])
                more = f" and {len(found) - 3} more" if len(found) > 3 else ""
                reason = (f"{names}{more} may translate its connections (the untracked SYN bypasses NAT, and nft "
                          "synproxy checks the client's ACK after rdr rewrote it)")
        if reason is None:
            overlapping = [r for r in rules if r is not rule and r.direction in (None, "in") and r.action in ("pass", "block")
                           and r.proto in (None, IPPROTO_TCP) and may_overlap(r, rule, members)]
            ack_passer = next((r for r in overlapping if bare_ack(r.flags)
                               and (r.action == "pass" or (r.block and r.block.kind != "drop"))), None)
            if ack_passer is not None:
                what = "pass" if ack_passer.action == "pass" else "answer (block return)"
                reason = (f"the rule at {_where(ack_passer)} may {what} ACKs without state on its connections, "
                          "where nft synproxy drops an ACK whose cookie is wrong")
            elif not _covering_block(rules, rule, members):
                reason = ("no plain `block` rule covers its connections: pf's default rule passes an ACK without "
                          "state, nft synproxy drops an ACK whose cookie is wrong")
        if reason is not None:
            result.reasons[id(rule)] = reason
            continue
        position = next(i for i, r in enumerate(order) if r is rule)
        shields = [r for r in order[:position] if r.proto in (None, IPPROTO_TCP) and plain_syn(r.flags)
                   and may_overlap(r, rule, members)]
        changing = next((r for r in shields if (r.probability is not None and r.probability < 1)
                         or (set_tos and r.tos is not None)), None)
        if changing is not None or (set_tos and rule.tos is not None):
            reason = f"the rule at {_where(changing or rule)} tests what changes after the raw chain (probability, tos under scrub set-tos)"
        if reason is not None:
            result.reasons[id(rule)] = reason
            continue
        result.real.append(rule)
        result.shields.update(id(r) for r in shields)
    return result
