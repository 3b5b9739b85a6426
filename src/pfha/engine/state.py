"""pf's state table: keys in pf's orientation, peers, timeouts, source nodes.

A state has a *wire* key and a *stack* key (they differ only under translation). Both are
normalised to the inbound orientation (sys/netpfil/pf/pf.c, ``pf_state_key_setup`` and
``pf_find_state``):

- a packet going **in** is keyed ``(src, sport, dst, dport)`` and searched among wire keys;
- a packet going **out** is keyed ``(dst, dport, src, sport)`` and searched among stack keys.

So a state made by ``pass in`` matches later inbound packets of its flow and the outbound
replies; a forwarded connection needs one state per interface it crosses. Found packets are
rewritten from one key to the other: an inbound packet gets the stack key's addresses
(``src = stack[0]``, ``dst = stack[1]``), an outbound one the wire key's (``src = wire[1]``,
``dst = wire[0]``).

This module holds data and bookkeeping only; what a packet does to a state (TCP windows,
synproxy) lives in :mod:`pfha.engine.tracking`. It never reads a clock: every time is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from pfha.conf.ast import Options

# TCP peer states (netinet/tcp_fsm.h), as pf stores them in pf_state_peer.state.
TCPS_CLOSED = 0
TCPS_LISTEN = 1
TCPS_SYN_SENT = 2
TCPS_SYN_RECEIVED = 3
TCPS_ESTABLISHED = 4
TCPS_CLOSE_WAIT = 5
TCPS_FIN_WAIT_1 = 6
TCPS_CLOSING = 7
TCPS_LAST_ACK = 8
TCPS_FIN_WAIT_2 = 9
TCPS_TIME_WAIT = 10
# synproxy pseudo-states (pfvar.h PF_TCPS_PROXY_SRC / _DST)
PF_TCPS_PROXY_SRC = 11
PF_TCPS_PROXY_DST = 12
TCP_STATE_NAMES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
                   "FIN_WAIT_1", "CLOSING", "LAST_ACK", "FIN_WAIT_2", "TIME_WAIT",
                   "PROXY_SRC", "PROXY_DST")

# UDP / other pseudo-states (pfvar.h PFUDPS_* / PFOTHERS_*)
PFUDPS_NO_TRAFFIC = 0
PFUDPS_SINGLE = 1
PFUDPS_MULTIPLE = 2
UDP_STATE_NAMES = ("NO_TRAFFIC", "SINGLE", "MULTIPLE")

#: pf's default timeouts in seconds (sys/net/pfvar.h PFTM_*_VAL).
DEFAULT_TIMEOUTS: dict[str, int] = {
    "tcp.first": 120,
    "tcp.opening": 30,
    "tcp.established": 86400,
    "tcp.closing": 900,
    "tcp.finwait": 45,
    "tcp.closed": 90,
    "tcp.tsdiff": 30,
    "udp.first": 60,
    "udp.single": 30,
    "udp.multiple": 60,
    "icmp.first": 20,
    "icmp.error": 10,
    "other.first": 60,
    "other.single": 30,
    "other.multiple": 60,
    "frag": 30,
    "interval": 10,
    "src.track": 0,
    "adaptive.start": 60000,  # PFSTATE_ADAPT_START: 60% of the default state limit
    "adaptive.end": 120000,  # PFSTATE_ADAPT_END
}
#: ``set optimization`` presets (pfctl.c: pfctl_set_optimization).
OPTIMIZATION_PRESETS: dict[str, dict[str, int]] = {
    "normal": {},
    "default": {},
    "high-latency": {"tcp.first": 300, "tcp.opening": 35, "tcp.established": 86400, "tcp.closing": 1800,
                      "tcp.finwait": 90, "tcp.closed": 180},
    "satellite": {"tcp.first": 300, "tcp.opening": 35, "tcp.established": 86400, "tcp.closing": 1800,
                  "tcp.finwait": 90, "tcp.closed": 180},
    "aggressive": {"tcp.first": 30, "tcp.opening": 5, "tcp.established": 18000, "tcp.closing": 60,
                   "tcp.finwait": 30, "tcp.closed": 30, "tcp.tsdiff": 10},
    "conservative": {"tcp.first": 3600, "tcp.opening": 900, "tcp.established": 432000,
                     "tcp.closing": 3600, "tcp.finwait": 600, "tcp.closed": 180},
}

#: Default for ``set limit states`` (pfvar.h PFSTATE_HIWAT) and ``src-nodes`` (PFSNODE_HIWAT).
DEFAULT_STATE_LIMIT = 100000
DEFAULT_SRC_NODE_LIMIT = 10000
#: pf's memory pool limits (``set limit``), as ``pfctl -sm`` lists them: PFSTATE_HIWAT,
#: PFSNODE_HIWAT, PFFRAG_FRENT_HIWAT, PFR_KENTRY_HIWAT
DEFAULT_LIMITS: dict[str, int] = {"states": DEFAULT_STATE_LIMIT, "src-nodes": DEFAULT_SRC_NODE_LIMIT,
                                  "frags": 5000, "table-entries": 200000}


def configured_timeouts(options: Options) -> dict[str, int]:
    """pf's global timeouts once pfctl has loaded ``options`` (a conf Options): the defaults,
    then the ``set optimization`` preset, then each ``set timeout`` whatever its place in the
    file; a ``set limit states`` without explicit adaptive timeouts sets them to 60% / 120% of
    the limit, as pfctl_load_options() does."""
    values = dict(DEFAULT_TIMEOUTS)
    values.update(OPTIMIZATION_PRESETS.get(options.optimization, {}))
    explicit = dict(options.timeouts)
    values.update(explicit)
    limits = dict(options.limits)
    if "states" in limits and "adaptive.start" not in explicit and "adaptive.end" not in explicit:
        values["adaptive.start"] = (limits["states"] // 10) * 6
        values["adaptive.end"] = (limits["states"] // 10) * 12
    return values


def configured_limits(options: Options) -> dict[str, int]:
    """pf's memory limits once pfctl has loaded ``options``: the defaults and each ``set limit``."""
    return {**DEFAULT_LIMITS, **dict(options.limits)}

#: A key: (af, proto, addr0, port0, addr1, port1), in inbound orientation.
StateKey = tuple


def key_for(af: int, proto: int, src: int, sport: int, dst: int, dport: int, inbound: bool) -> StateKey:
    """The lookup key of a packet seen in a direction (pf_state_key_setup's sidx/didx)."""
    if inbound:
        return (af, proto, src, sport, dst, dport)
    return (af, proto, dst, dport, src, sport)


@dataclass(slots=True)
class Peer:
    """One end of a connection as pf tracks it (struct pf_state_peer)."""

    seqlo: int = 0
    seqhi: int = 0
    seqdiff: int = 0
    max_win: int = 0
    mss: int = 0
    wscale: int = 0  # low 4 bits: the shift; PF_WSCALE_FLAG: the option was seen
    state: int = 0


PF_WSCALE_FLAG = 0x80
PF_WSCALE_MASK = 0x0F


@dataclass(slots=True)
class SourceNode:
    """Source tracking for one source address under one rule (or globally): struct pf_ksrc_node."""

    af: int
    addr: int
    rule_id: int  # id() of the rule's record, or 0 for global tracking
    states: int = 0
    conn: int = 0
    conn_rate_count: int = 0
    conn_rate_last: float = 0.0
    translated: Optional[tuple] = None  # sticky-address: (af, addr) chosen for this source
    expire: float = 0.0
    registry: Optional[set] = None  # the rule's set of its source nodes (max-src-nodes)


@dataclass(slots=True, eq=False)
class State:
    """One pf state. ``direction`` is the direction of the packet that created it.

    ``src`` is the peer that sent the creating packet (pf's ``state->src``), ``dst`` the other.
    """

    id: int
    wire: StateKey
    stack: StateKey
    direction: str
    ifname: Optional[str]  # None: floating
    created_on: str
    rule: object  # engine.rules.CompiledRule (or the default rule)
    nat_rule: object = None
    anchor: object = None
    src: Peer = field(default_factory=Peer)
    dst: Peer = field(default_factory=Peer)
    timeout: str = "tcp.first"
    timeouts: dict = field(default_factory=dict)  # the effective timeouts (rule over global)
    creation: float = 0.0
    expire: float = 0.0  # time of the last packet: expiry is expire + timeouts[timeout]
    packets: list = field(default_factory=lambda: [0, 0])  # [from src side, from dst side]
    bytes: list = field(default_factory=lambda: [0, 0])
    tag: Optional[str] = None
    log_all: bool = False
    src_nodes: tuple = ()
    sloppy: bool = False
    no_sync: bool = False
    synproxy_pending: list = field(default_factory=list)
    purged: bool = False
    icmp_replied: bool = False
    adaptive: bool = False  # the rule has its own adaptive timeouts (``max n`` gives 60%/120% of n)

    @property
    def proto(self) -> int:
        return self.wire[1]

    @property
    def af(self) -> int:
        return self.wire[0]

    def expires_at(self) -> float:
        return self.expire + self.timeouts.get(self.timeout, 0)

    def expired(self, now: float) -> bool:
        """Expired without adaptive scaling (see :meth:`StateTable.expired` for the full rule)."""
        return self.purged or now >= self.expire + self.timeouts[self.timeout]


class StateTable:
    """Every state, indexed by wire key (inbound lookups) and stack key (outbound lookups).

    Lookups return the first state on the key that the interface may use: if-bound states
    before floating ones (pf keeps each key's list sorted that way).
    """

    __slots__ = ("wire", "stack", "states", "next_id", "src_nodes", "limit", "adaptive_start", "adaptive_end")

    def __init__(self, limit: int = DEFAULT_STATE_LIMIT, adaptive: tuple[int, int] = (60000, 120000)) -> None:
        self.wire: dict[StateKey, list[State]] = {}
        self.stack: dict[StateKey, list[State]] = {}
        self.states: dict[int, State] = {}
        self.next_id = 1
        self.src_nodes: dict[tuple, SourceNode] = {}
        self.limit = limit
        self.adaptive_start, self.adaptive_end = adaptive

    def expires_at(self, state: State) -> float:
        """pf_state_expires: the state's deadline, with adaptive timeouts.

        Past ``adaptive.start`` states the timeout shrinks linearly, reaching zero at
        ``adaptive.end`` (a rule with its own adaptive values counts only its own states).
        """
        timeout = state.timeouts[state.timeout]
        if state.adaptive:
            start, end = state.timeouts["rule.adaptive.start"], state.timeouts.get("rule.adaptive.end", 0)
            count = state.rule.counters.states_cur
        else:
            start, end = self.adaptive_start, self.adaptive_end
            count = len(self.states)
        if start and end and count > start:
            if count >= end:
                return state.expire
            timeout = timeout * (end - count) / (end - start)
        return state.expire + timeout

    def expired(self, state: State, now: float) -> bool:
        return state.purged or now >= self.expires_at(state)

    def __len__(self) -> int:
        return len(self.states)

    def __iter__(self):
        return iter(list(self.states.values()))

    def lookup(self, key: StateKey, inbound: bool, ifname: str) -> Optional[State]:
        bucket = (self.wire if inbound else self.stack).get(key)
        if not bucket:
            return None
        for state in bucket:
            if state.ifname is None or state.ifname == ifname:
                return state
        return None

    def conflicts(self, state: State) -> bool:
        """pf_state_key_attach: a state on the same key, interface binding and direction."""
        for index, key in ((self.wire, state.wire), (self.stack, state.stack)):
            for other in index.get(key, ()):
                if other.direction == state.direction and (other.ifname is None or state.ifname is None
                                                           or other.ifname == state.ifname):
                    return True
        return False

    def insert(self, state: State) -> None:
        for index, key in ((self.wire, state.wire), (self.stack, state.stack)):
            bucket = index.setdefault(key, [])
            if state.ifname is None:
                bucket.append(state)
            else:
                bucket.insert(0, state)
        self.states[state.id] = state

    def new_id(self) -> int:
        value = self.next_id
        self.next_id += 1
        return value

    def remove(self, state: State) -> None:
        if self.states.pop(state.id, None) is None:
            return
        state.purged = True
        for index, key in ((self.wire, state.wire), (self.stack, state.stack)):
            bucket = index.get(key)
            if bucket and state in bucket:
                bucket.remove(state)
                if not bucket:
                    del index[key]
        for node in state.src_nodes:
            node.states -= 1
        release = getattr(state.rule, "state_removed", None)
        if release is not None:
            release()
        if state.nat_rule is not None:
            release = getattr(state.nat_rule, "state_removed", None)
            if release is not None:
                release()

    def purge(self, now: float) -> int:
        """Remove every expired state (pf's purge thread); returns how many went."""
        dead = [s for s in self.states.values() if self.expired(s, now)]
        for state in dead:
            self.remove(state)
        for key in [k for k, n in self.src_nodes.items() if n.states <= 0 and now >= n.expire]:
            node = self.src_nodes.pop(key)
            if node.registry is not None:
                node.registry.discard(key)
        return len(dead)

    def by_source(self, af: int, addr: int) -> list[State]:
        """States whose creating peer is ``addr`` (for overload flush)."""
        result = []
        for state in self.states.values():
            key = state.wire if state.direction == "in" else state.stack
            src = key[2] if state.direction == "in" else key[4]
            if key[0] == af and src == addr:
                result.append(state)
        return result
