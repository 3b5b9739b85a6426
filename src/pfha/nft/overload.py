"""``overload <table> flush [global]``: which states an overload event kills (pf_overload_task).

In pf, a source that exceeds ``max-src-conn`` / ``max-src-conn-rate`` of a rule with
``overload <t> flush`` is added to ``<t>`` and its states are killed: with ``flush``, the states
created by that rule; with ``flush global``, every state (pf.conf(5): "kills all states
originating from the offending host, regardless of which rule created the state").

nftables can add the source to the table from the packet path but cannot delete conntrack
entries, so the compiled overload branch also sends the offending packet to a dedicated NFLOG
group (:data:`OVERLOAD_GROUP`) with a prefix that names the rule, the pass and the scope
(:class:`OverloadPrefix`); a userspace flusher (:mod:`pfha.nft.overload_linux`, run by the node
daemon or ``pfha overload-flush``) turns each logged packet into an :class:`OverloadEvent` and
deletes the conntrack entries :func:`doomed` picks.

Which states pf kills (pf_overload_task, OpenBSD/FreeBSD pf.c): a state of the same address
family, created by the overloading rule (or any rule with ``global``), whose *wire* state key
holds the offender at the index the overload event's direction gives - ``addr[0]`` for an
in-event, ``addr[1]`` for an out-event. pf keys an in-state as (src, dst) and an out-state as
(dst, src) (``pd->sidx = dir == PF_IN ? 0 : 1``), so an in-event kills in-states *from* the
offender and out-states *to* it; an out-event the reverse. Here a pf state is one side of a
conntrack flow (:mod:`pfha.nft.states`): side A (in-state) has the wire key (orig.src, orig.dst),
side B (out-state) (reply.src, reply.dst) - the post-NAT addresses the out-pass saw.

Pure: packets and flows in, decisions out. Never opens a socket; the OS adapter is
:mod:`pfha.nft.overload_linux`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # states imports the compiler, which imports this module's prefix
    from pfha.nft.states import Flow

OVERLOAD_GROUP = 65270  # NFLOG group of overload events: far above any pflogN a ruleset names
MAGIC = "pf-overload"
SCOPES = ("rule", "global")
DIRECTIONS = ("in", "out")
COPY_RANGE = 64  # bytes of the logged packet needed: its IP header holds the source address
AF_INET, AF_INET6 = 2, 10  # the NFLOG message's nfgen family


class OverloadError(ValueError):
    """Not an overload event (another program's NFLOG prefix, or a truncated packet)."""


@dataclass(frozen=True, slots=True)
class OverloadPrefix:
    """What the compiled overload branch knows at compile time: the rule (its ct-mark id, 0
    when the rule number does not fit the mark, and its pf number for messages), the pass the
    branch sits on, and whether the flush is ``global``."""

    rule_id: int
    direction: str
    scope: str
    rulenr: int = 0

    def encode(self) -> str:
        return f"{MAGIC}:{self.rule_id}:{self.direction}:{self.scope}:{self.rulenr}"

    @classmethod
    def decode(cls, text: str) -> OverloadPrefix:
        fields = text.split(":")
        if len(fields) != 5 or fields[0] != MAGIC:
            raise OverloadError(f"not an overload prefix: {text!r}")
        if fields[2] not in DIRECTIONS or fields[3] not in SCOPES:
            raise OverloadError(f"malformed overload prefix: {text!r}")
        try:
            rule_id, rulenr = int(fields[1]), int(fields[4])
        except ValueError:
            raise OverloadError(f"malformed overload prefix: {text!r}") from None
        return cls(rule_id, fields[2], fields[3], rulenr)


@dataclass(frozen=True, slots=True)
class OverloadEvent:
    """A source that overloaded a rule with ``flush``: pf's struct pf_overload_entry."""

    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    rule_id: int
    direction: str
    scope: str
    rulenr: int = 0

    @property
    def family(self) -> int:
        return self.address.version

    def describe(self) -> str:
        scope = "global" if self.scope == "global" else f"rule {self.rulenr}"
        return f"{self.address} overloaded rule {self.rulenr} ({self.direction}), flush {scope}"


def event_from_packet(family: int, prefix: str, payload: bytes) -> OverloadEvent:
    """The overload event an NFLOG message carries: ``family`` is its nfgen family,
    ``payload`` the logged packet from its IP header on. The offender is the packet's source
    (the ``ip saddr`` the branch added to the table)."""
    head = OverloadPrefix.decode(prefix)
    if family == AF_INET and len(payload) >= 20 and payload[0] >> 4 == 4:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(payload[12:16])
    elif family == AF_INET6 and len(payload) >= 40 and payload[0] >> 4 == 6:
        address = ipaddress.IPv6Address(payload[8:24])
    else:
        raise OverloadError(f"overload event without an IP header (family {family}, {len(payload)} bytes)")
    return OverloadEvent(address, head.rule_id, head.direction, head.scope, head.rulenr)


def _same(text: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    try:
        return ipaddress.ip_address(text) == address
    except ValueError:
        return False


def wire_key(flow: Flow, side: str) -> tuple[str, str]:
    """(addr[0], addr[1]) of the wire key of the flow's pf state on ``side``: side A is the
    in-state made before any translation on the way in, side B the out-state made after it."""
    if side == "A":
        return flow.orig.src, flow.orig.dst
    return flow.reply.src, flow.reply.dst


def lookups(event: OverloadEvent) -> list[tuple[str, str]]:
    """Where a flow holding a state ``event`` kills names the offender: (conntrack tuple, end)
    pairs for the wire-key index the event's direction compares (addr[0]: the tuples' sources,
    addr[1]: their destinations). The flusher asks the kernel only for flows matching one of
    these, then :func:`doomed` decides."""
    end = "src" if event.direction == "in" else "dst"
    return [("orig", end), ("reply", end)]


def kills(event: OverloadEvent, flow: Flow, side: str, rule_id: int) -> bool:
    """Does pf_overload_task kill the state on ``side`` (created by ``rule_id``)?"""
    if flow.family != event.family:
        return False
    if event.scope != "global" and (not event.rule_id or rule_id != event.rule_id):
        return False
    key = wire_key(flow, side)
    return _same(key[0] if event.direction == "in" else key[1], event.address)


class EventIndex:
    """Events by (direction, address), so a flush of many offenders costs one probe per
    state instead of one test per (state, event)."""

    def __init__(self, events: Iterable[OverloadEvent]) -> None:
        self.by_place: dict[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address], list[OverloadEvent]] = {}
        for event in events:
            self.by_place.setdefault((event.direction, event.address), []).append(event)

    def __bool__(self) -> bool:
        return bool(self.by_place)

    def kills(self, flow: Flow, side: str, rule_id: int) -> bool:
        key = wire_key(flow, side)
        for direction, text in (("in", key[0]), ("out", key[1])):
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            if any(kills(event, flow, side, rule_id) for event in self.by_place.get((direction, address), ())):
                return True
        return False


def doomed_sides(events: Sequence[OverloadEvent] | EventIndex, flow: Flow) -> str:
    """The sides ("A", "B", "AB" or "") of ``flow`` whose pf states ``events`` kill."""
    index = events if isinstance(events, EventIndex) else EventIndex(events)
    rule_a, rule_b = flow.rule_ids()
    sides = ""
    for side, rule in (("A", rule_a), ("B", rule_b)):
        if flow.has_side(side) and index.kills(flow, side, rule):
            sides += side
    return sides


def doomed(events: Sequence[OverloadEvent], flows: Iterable[Flow]) -> list[Flow]:
    """The conntrack flows to delete for ``events``: each that holds a state pf would kill.

    A flow is one connection with up to two pf states; deleting it kills both, where pf
    might kill one and keep the other (e.g. ``flush`` of an in-rule keeps the out-state a
    ``pass out`` rule made). The connection's next packet then finds no state on either pass
    and is evaluated by the rules, which (``block quick from <t>``, or ``flags S/SA`` for a
    mid-stream packet) refuse it as pf's rules would on the pass whose state was killed."""
    index = EventIndex(events)
    if not index:
        return []
    return [flow for flow in flows if doomed_sides(index, flow)]


def coalesce(events: Iterable[OverloadEvent]) -> list[OverloadEvent]:
    """Events with duplicates removed, in arrival order: a burst of SYNs over the limit (or
    their retransmissions) logs one event each, and one flush covers them all."""
    return list(dict.fromkeys(events))
