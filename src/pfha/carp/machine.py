"""The CARP state machine, sans-I/O: one :class:`Vhid` per group, one :class:`Demotion` per node.

Everything that decides a state change lives in this file, and every state change goes through
:data:`TRANSITIONS` (the table ``docs/carp.md``'s diagram is generated from) by way of
:meth:`Vhid._transition`, with a human reason. Nothing here reads a clock, sleeps, opens a
socket or touches an address: time comes in as ``now`` (seconds, monotonic), packets come in as
bytes, and what must happen goes out as :class:`Action` values pulled with ``next_action()``.
Randomness (the initial counter) comes from an injected ``random.Random``.

Behaviour follows BSD (design: carp.md §3): OpenBSD/FreeBSD timers, FreeBSD's receive rules,
OpenBSD's demote byte, FreeBSD <= 9's ``net.inet.carp.preempt`` "one fails, all fail" demotion
(advertise advskew 240 while the node is demoted), OpenBSD's bow-out on orderly shutdown.

Usage (what the Linux runner and the simulator do)::

    group = Vhid(config, demotion)
    group.start(now)
    ... group.receive(payload, now, source=addr, ttl=ttl) / group.handle_timer(now) ...
    while (action := group.next_action()) is not None: perform(action)
    sleep until group.next_deadline()
"""

from __future__ import annotations

import collections
import ipaddress
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum

from pfha.carp import wire
from pfha.carp.wire import Advertisement, BadAdvert, DropReason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

DEMOTED_ADVSKEW = 240  # FreeBSD: advertised (and compared) while the node is demoted
SEND_ERROR_LIMIT = 3  # OpenBSD/FreeBSD: 3 send errors demote, 3 successes undo it
_COUNTER_MOD = 1 << 64


class State(str, Enum):
    INIT = "INIT"
    BACKUP = "BACKUP"
    MASTER = "MASTER"


class Trigger(str, Enum):
    """What may move a group from one state to another (the table's edge labels)."""

    START = "start"
    LINK_DOWN = "link down"
    LINK_UP = "link up"
    MASTER_DOWN = "master-down timer expired"
    PREFERRED_MASTER = "advert from a preferred master"
    PREEMPT = "preempt a slower master"
    MASTER_LEAVING = "master bowed out or will time out"
    PEER_DEMOTED = "master more demoted than us"
    SHUTDOWN = "shutdown"


# Who may change state and why. Anything not listed is not a transition (the trigger is
# ignored in that state). Reactions that keep the state (restart the master-down timer,
# reassert a VIP against a slower master, adopt a counter) are plain code in Vhid.receive.
TRANSITIONS: dict[State, dict[Trigger, State]] = {
    State.INIT: {
        Trigger.START: State.BACKUP,
        Trigger.LINK_UP: State.BACKUP,
    },
    State.BACKUP: {
        Trigger.MASTER_DOWN: State.MASTER,
        Trigger.PREEMPT: State.MASTER,
        Trigger.MASTER_LEAVING: State.MASTER,
        Trigger.PEER_DEMOTED: State.MASTER,
        Trigger.LINK_DOWN: State.INIT,
        Trigger.SHUTDOWN: State.INIT,
    },
    State.MASTER: {
        Trigger.PREFERRED_MASTER: State.BACKUP,
        Trigger.LINK_DOWN: State.INIT,
        Trigger.SHUTDOWN: State.INIT,
    },
}


# --- outputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    vhid: int
    interface: str


@dataclass(frozen=True)
class SendAdvert(Action):
    """Send ``payload`` (36 CARP bytes) to the CARP group on ``interface``, TTL 255."""

    payload: bytes
    advert: Advertisement


@dataclass(frozen=True)
class AcquireAddresses(Action):
    """Put the virtual addresses on the parent interface (becoming MASTER)."""

    addresses: tuple[IPInterface, ...]


@dataclass(frozen=True)
class ReleaseAddresses(Action):
    """Take the virtual addresses off (leaving MASTER, or making sure at start-up)."""

    addresses: tuple[IPInterface, ...]


@dataclass(frozen=True)
class Announce(Action):
    """Gratuitous ARP for each IPv4 address, unsolicited NA for each IPv6 one."""

    addresses: tuple[IPInterface, ...]


@dataclass(frozen=True)
class StateChanged(Action):
    old: State
    new: State
    trigger: Trigger
    reason: str
    at: float

    def __str__(self) -> str:
        return f"vhid {self.vhid} on {self.interface}: {self.reason}"


@dataclass(frozen=True)
class Dropped(Action):
    """An advert that failed a check; counted, and for the runner to log (rate-limited)."""

    reason: DropReason
    detail: str
    source: IPAddress | None


# --- configuration and the node-wide demotion counter ---------------------------------------


@dataclass(frozen=True)
class VhidConfig:
    """One group, as ``ifconfig em0 vhid 1 advskew 100 pass foo alias 10.0.0.1/24`` sets it.

    ``source`` is our own real address on ``interface``: adverts from it are our own (loop),
    and it breaks ties between equal masters.
    """

    vhid: int
    interface: str
    addresses: tuple[IPInterface, ...]
    key: bytes = b""
    advbase: int = 1
    advskew: int = 0
    preempt: bool = False
    source: IPAddress | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.vhid <= 255:
            raise ValueError(f"vhid {self.vhid} out of range 1-255")
        if not 0 <= self.advbase <= 254:
            raise ValueError(f"advbase {self.advbase} out of range 0-254")
        if not 0 <= self.advskew <= wire.MAX_ADVSKEW:
            raise ValueError(f"advskew {self.advskew} out of range 0-{wire.MAX_ADVSKEW}")
        if not self.addresses:
            raise ValueError(f"vhid {self.vhid}: no virtual address")
        if len(self.key) > wire.CARP_KEY_LEN - 1:
            raise ValueError("key longer than 19 bytes (use wire.carp_key to cut a passphrase)")

    @property
    def ipv4(self) -> list[ipaddress.IPv4Address]:
        return [a.ip for a in self.addresses if a.version == 4]

    @property
    def ipv6(self) -> list[ipaddress.IPv6Address]:
        return [a.ip for a in self.addresses if a.version == 6]


class Demotion:
    """The node-wide demotion counter (``net.inet.carp.suppress_preempt`` / ``carpdemote``).

    Shared by every group of a node: while it is non-zero every group advertises advskew 240
    and the demote count, so a peer takes over *all* of them (carp.md §3.5). Each cause is
    held under its own reason, so raising it twice for the same cause counts once and
    ``undemote(reason)`` undoes exactly that cause. The sync layer calls
    ``demote("pfsync bulk update", 32)`` / ``undemote(...)`` the same way.
    """

    def __init__(self) -> None:
        self._reasons: dict[str, int] = {}
        self.generation = 0
        self._listeners: list[Callable[[], None]] = []

    @property
    def value(self) -> int:
        return sum(self._reasons.values())

    @property
    def reasons(self) -> dict[str, int]:
        return dict(self._reasons)

    def demote(self, reason: str, amount: int = 1) -> None:
        self._set(reason, amount)

    def undemote(self, reason: str) -> None:
        self._set(reason, 0)

    def adjust(self, delta: int, reason: str) -> None:
        self._set(reason, self._reasons.get(reason, 0) + delta)

    def subscribe(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` after each change (I/O glue uses it to re-arm its timer)."""
        self._listeners.append(callback)

    def _set(self, reason: str, amount: int) -> None:
        before = self._reasons.get(reason, 0)
        if amount <= 0:
            self._reasons.pop(reason, None)
            amount = 0
        else:
            self._reasons[reason] = amount
        if amount != before:
            self.generation += 1
            for callback in self._listeners:
                callback()


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def _timing(advbase: int, advskew: int) -> str:
    return f"advbase {advbase} advskew {advskew}"


# --- one group -----------------------------------------------------------------------------


class Vhid:
    """One CARP group (one vhid on one parent interface) on this node."""

    def __init__(self, config: VhidConfig, demotion: Demotion | None = None, *, rng: random.Random | None = None) -> None:
        self.config = config
        self.demotion = demotion if demotion is not None else Demotion()
        self.rng = rng if rng is not None else random.SystemRandom()
        self.state = State.INIT
        self.link_up = True
        self.started = False
        self.counter: int | None = None  # None until a valid advert is heard: then fresh per send
        self.last_sent_counter: int | None = None
        self.stats: collections.Counter[str] = collections.Counter()
        self._deadline: float | None = None
        self._actions: collections.deque[Action] = collections.deque()
        self._announce_after = 0  # adverts until the repeated gratuitous ARP (carp.md §3.4)
        self._since = 0.0  # when the current BACKUP wait began
        self._last_master: tuple[IPAddress | None, float] | None = None
        self._demotion_seen = self.demotion.generation
        self._send_errors = 0
        self._send_successes = 0

    # -- timing (carp.md §3.1), in 1/256 s ticks to compare exactly

    @property
    def advskew(self) -> int:
        """The advskew we advertise and compare with: 240 while the node is demoted."""
        if self.demotion.value > 0:
            return max(self.config.advskew, DEMOTED_ADVSKEW)
        return self.config.advskew

    @property
    def ticks(self) -> int:
        return self.config.advbase * 256 + self.advskew or 1  # OpenBSD: 0/0 means 1/256 s

    @property
    def advert_interval(self) -> float:
        return self.ticks / 256

    @property
    def master_down_ticks(self) -> int:
        """3 x advbase + advskew/256 from our *configured* values; OpenBSD's 3 x skew if advbase 0."""
        base, skew = self.config.advbase, self.config.advskew
        if base == 0:
            return 3 * max(skew, 1)
        return 3 * base * 256 + skew

    @property
    def master_down_interval(self) -> float:
        return self.master_down_ticks / 256

    @property
    def demote_byte(self) -> int:
        return min(self.demotion.value, 255)

    # -- entry points

    def start(self, now: float) -> None:
        """INIT -> BACKUP (unless the link is down); the addresses are released to be sure."""
        self.started = True
        if self.state is State.INIT and self.link_up:
            self._transition(Trigger.START, now, "started")

    def shutdown(self, now: float) -> None:
        """Orderly stop: a MASTER bows out (advbase = advskew = 255) so its backup takes over at once."""
        self.started = False
        if self.state is State.MASTER:
            self._send(now, bow_out=True)
        if self.state is not State.INIT:
            self._transition(Trigger.SHUTDOWN, now, "shutdown" + (", bowed out" if self.state is State.MASTER else ""))

    def set_link(self, up: bool, now: float) -> None:
        """Carrier of the parent interface changed (the node also demotes: see :class:`Node`)."""
        if up == self.link_up:
            return
        self.link_up = up
        if not up and self.state is not State.INIT:
            self._transition(Trigger.LINK_DOWN, now, f"link down on {self.config.interface}")
        elif up and self.started and self.state is State.INIT:
            self._transition(Trigger.LINK_UP, now, f"link up on {self.config.interface}")

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called; ``0.0`` means "now"."""
        if self.state is State.MASTER and self.demotion.generation != self._demotion_seen:
            return 0.0  # demotion changed: advertise at once on every group (carp.md §3.5)
        return self._deadline

    def handle_timer(self, now: float) -> None:
        if self.state is State.MASTER and self.demotion.generation != self._demotion_seen:
            self._send(now)
            self._deadline = now + self.advert_interval
        if self._deadline is None or now < self._deadline:
            return
        if self.state is State.MASTER:
            self._send(now)
            self._deadline = now + self.advert_interval
        elif self.state is State.BACKUP:
            self._transition(Trigger.MASTER_DOWN, now, self._silence_reason(now))

    def receive(self, data: bytes | Advertisement, now: float, *, source: IPAddress | None = None, ttl: int = wire.CARP_TTL) -> Advertisement | None:
        """One advert for this group (36 CARP bytes, or already decoded); returns it if accepted."""
        advert = self._validate(data, source, ttl)
        if advert is None:
            return None
        self.stats["accepted"] += 1
        self.counter = advert.counter  # FreeBSD/ucarp: carry on from the master's counter
        if self.state is State.MASTER:
            self._receive_as_master(advert, now, source)
        elif self.state is State.BACKUP:
            self._receive_as_backup(advert, now, source)
        return advert

    def report_send(self, ok: bool) -> None:
        """The adapter says whether an advert went out: 3 failures demote the node, 3 successes undo."""
        key = f"send errors vhid {self.config.vhid} on {self.config.interface}"
        if ok:
            self._send_errors = 0
            self._send_successes += 1
            if self._send_successes >= SEND_ERROR_LIMIT and key in self.demotion.reasons:
                self.demotion.undemote(key)
        else:
            self._send_successes = 0
            self._send_errors += 1
            if self._send_errors >= SEND_ERROR_LIMIT:
                self.demotion.demote(key)

    def next_action(self) -> Action | None:
        return self._actions.popleft() if self._actions else None

    def actions(self) -> list[Action]:
        drained = list(self._actions)
        self._actions.clear()
        return drained

    # -- receiving

    def _drop(self, reason: DropReason, detail: str, source: IPAddress | None) -> None:
        self.stats[reason.value] += 1
        self._actions.append(Dropped(self.config.vhid, self.config.interface, reason, detail, source))

    def _validate(self, data: bytes | Advertisement, source: IPAddress | None, ttl: int) -> Advertisement | None:
        """BSD's carp_input checks, in its order; a failure is counted and reported, never raised."""
        if ttl != wire.CARP_TTL:
            self._drop(DropReason.TTL, f"TTL {ttl}, not {wire.CARP_TTL}", source)
            return None
        if isinstance(data, Advertisement):
            advert = data
        else:
            try:
                advert = wire.decode(data)
            except BadAdvert as bad:
                self._drop(bad.reason, bad.detail, source)
                return None
        if advert.vhid != self.config.vhid:
            self._drop(DropReason.VHID, f"vhid {advert.vhid}, ours is {self.config.vhid}", source)
            return None
        if (source is not None and source == self.config.source) or advert.counter == self.last_sent_counter:
            self._drop(DropReason.LOOP, "our own advert came back", source)
            return None
        cfg = self.config
        if not wire.digest_matches(cfg.key, cfg.vhid, cfg.ipv4, cfg.ipv6, advert.counter, advert.digest):
            self._drop(DropReason.HMAC, "bad HMAC: check vhid, password and virtual addresses", source)
            return None
        return advert

    def _wins_tie(self, source: IPAddress | None) -> bool:
        """Equal masters: the lower real address keeps the role (a deterministic end to the duel)."""
        mine = self.config.source
        return mine is not None and source is not None and mine.version == source.version and mine < source

    def _receive_as_master(self, advert: Advertisement, now: float, source: IPAddress | None) -> None:
        mine, theirs = self.ticks, advert.ticks
        my_demote, their_demote = self.demote_byte, advert.demote
        who = str(source) if source else "a peer"
        if their_demote < my_demote:
            why = f"{who} is less demoted (demote {their_demote} < {my_demote})"
        elif their_demote == my_demote and (theirs < mine or (theirs == mine and not self._wins_tie(source))):
            why = (f"preferred master {who} advertising "
                   f"({_timing(advert.advbase, advert.advskew)} vs ours {_timing(self.config.advbase, self.advskew)})")
        else:
            # A slower (or more demoted) master: reassert at once rather than wait a period.
            self.stats["reasserted"] += 1
            self._send(now)
            self._deadline = now + self.advert_interval
            self._actions.append(Announce(self.config.vhid, self.config.interface, self.config.addresses))
            return
        self._transition(Trigger.PREFERRED_MASTER, now, why)
        self._last_master = (source, now)

    def _receive_as_backup(self, advert: Advertisement, now: float, source: IPAddress | None) -> None:
        who = str(source) if source else "a peer"
        my_demote, their_demote = self.demote_byte, advert.demote
        if advert.is_bow_out:
            self._transition(Trigger.MASTER_LEAVING, now, f"{who} bowed out")
        elif their_demote > my_demote:
            self._transition(Trigger.PEER_DEMOTED, now, f"{who} is demoted (demote {their_demote} > {my_demote})")
        elif self.config.preempt and advert.ticks > self.ticks and their_demote >= my_demote:
            self._transition(Trigger.PREEMPT, now, f"preempting slower master {who} "
                             f"({_timing(advert.advbase, advert.advskew)} vs ours {_timing(self.config.advbase, self.advskew)})")
        elif advert.ticks > self.master_down_ticks:
            self._transition(Trigger.MASTER_LEAVING, now, f"{who} advertises every {_seconds(advert.interval)}, "
                             f"longer than our master-down {_seconds(self.master_down_interval)}")
        else:
            self._last_master = (source, now)
            self._deadline = now + self.master_down_interval

    def _silence_reason(self, now: float) -> str:
        if self._last_master is not None:
            source, seen = self._last_master
            return f"no advert from {source or 'the master'} for {_seconds(now - seen)}"
        return f"no advert heard for {_seconds(now - self._since)}"

    # -- sending and state changes

    def _send(self, now: float, *, bow_out: bool = False) -> None:
        if self.counter is None:
            counter = self.rng.getrandbits(64)  # never heard a master: a fresh cookie each time
        else:
            self.counter = counter = (self.counter + 1) % _COUNTER_MOD
        cfg = self.config
        advert = Advertisement(
            vhid=cfg.vhid,
            advbase=wire.BOW_OUT if bow_out else cfg.advbase,
            advskew=wire.BOW_OUT if bow_out else self.advskew,
            counter=counter,
            digest=wire.compute_digest(cfg.key, cfg.vhid, cfg.ipv4, cfg.ipv6, counter),
            demote=self.demote_byte,
        )
        self.last_sent_counter = counter
        self._demotion_seen = self.demotion.generation
        self.stats["sent"] += 1
        self._actions.append(SendAdvert(cfg.vhid, cfg.interface, wire.encode(advert), advert))
        if self._announce_after > 0 and not bow_out:
            self._announce_after -= 1
            if self._announce_after == 0:
                self._actions.append(Announce(cfg.vhid, cfg.interface, cfg.addresses))

    def _transition(self, trigger: Trigger, now: float, why: str) -> None:
        old = self.state
        new = TRANSITIONS[old].get(trigger)
        if new is None:
            raise AssertionError(f"no transition from {old.value} on {trigger.value}")  # a bug here, not input
        self.state = new
        cfg = self.config
        self._actions.append(StateChanged(cfg.vhid, cfg.interface, old, new, trigger, f"{old.value} -> {new.value}: {why}", now))
        self.stats[f"to_{new.value.lower()}"] += 1
        if new is State.MASTER:
            self._actions.append(AcquireAddresses(cfg.vhid, cfg.interface, cfg.addresses))
            self._announce_after = 0
            self._send(now)
            self._actions.append(Announce(cfg.vhid, cfg.interface, cfg.addresses))
            self._announce_after = 2  # once more two adverts later, "for some L3 switches"
            self._deadline = now + self.advert_interval
        elif new is State.BACKUP:
            self._actions.append(ReleaseAddresses(cfg.vhid, cfg.interface, cfg.addresses))
            self._since = now
            self._last_master = None
            self._deadline = now + self.master_down_interval
        else:
            if old is State.MASTER:
                self._actions.append(ReleaseAddresses(cfg.vhid, cfg.interface, cfg.addresses))
            self._deadline = None
            self._last_master = None

    def status(self) -> dict[str, object]:
        """What ``ifconfig`` shows for the group, plus counters (for ``pfha carp status``)."""
        cfg = self.config
        return {
            "vhid": cfg.vhid, "interface": cfg.interface, "state": self.state.value,
            "advbase": cfg.advbase, "advskew": cfg.advskew, "advskew_effective": self.advskew,
            "preempt": cfg.preempt, "demote": self.demote_byte,
            "addresses": [str(a) for a in cfg.addresses], "stats": dict(self.stats),
        }


# --- a node: every group, one demotion counter -----------------------------------------------


class Node:
    """All the groups of one host and their shared :class:`Demotion`.

    Link loss on one parent demotes the whole node, so a peer with preempt takes over every
    group, not just the one on the broken link ("if one interface fails then all will fail
    over", FreeBSD carp(4)); the demotion is lifted when the link returns.
    """

    def __init__(self, configs: Iterable[VhidConfig], *, demotion: Demotion | None = None, rng: random.Random | None = None) -> None:
        self.demotion = demotion if demotion is not None else Demotion()
        self.groups: dict[tuple[str, int], Vhid] = {}
        for config in configs:
            key = (config.interface, config.vhid)
            if key in self.groups:
                raise ValueError(f"vhid {config.vhid} configured twice on {config.interface}")
            self.groups[key] = Vhid(config, self.demotion, rng=rng)
        self.stats: collections.Counter[str] = collections.Counter()
        self._actions: collections.deque[Action] = collections.deque()

    @property
    def interfaces(self) -> list[str]:
        return sorted({iface for iface, _ in self.groups})

    def start(self, now: float) -> None:
        for group in self.groups.values():
            group.start(now)

    def shutdown(self, now: float) -> None:
        for group in self.groups.values():
            group.shutdown(now)

    def set_link(self, interface: str, up: bool, now: float) -> None:
        reason = f"link down on {interface}"
        if up:
            self.demotion.undemote(reason)
        else:
            self.demotion.demote(reason)
        for (iface, _), group in self.groups.items():
            if iface == interface:
                group.set_link(up, now)

    def receive(self, interface: str, payload: bytes, now: float, *, source: IPAddress | None = None, ttl: int = wire.CARP_TTL) -> Advertisement | None:
        """Dispatch one advert by its vhid byte; unknown vhids are counted here (carps_badvhid)."""
        vhid = payload[1] if len(payload) > 1 else 0
        group = self.groups.get((interface, vhid))
        if group is None:
            reason = DropReason.SHORT if len(payload) < 2 else DropReason.VHID
            self.stats[reason.value] += 1
            self._actions.append(Dropped(vhid, interface, reason, f"no vhid {vhid} on {interface}", source))
            return None
        return group.receive(payload, now, source=source, ttl=ttl)

    def handle_timer(self, now: float) -> None:
        for group in self.groups.values():
            deadline = group.next_deadline()
            if deadline is not None and deadline <= now:
                group.handle_timer(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (g.next_deadline() for g in self.groups.values()) if d is not None]
        return min(deadlines) if deadlines else None

    def next_action(self) -> Action | None:
        if self._actions:
            return self._actions.popleft()
        for group in self.groups.values():
            action = group.next_action()
            if action is not None:
                return action
        return None

    def actions(self) -> list[Action]:
        drained = list(self._actions)
        self._actions.clear()
        for group in self.groups.values():
            drained.extend(group.actions())
        return drained

    def status(self) -> dict[str, object]:
        return {
            "demotion": self.demotion.value,
            "demotion_reasons": self.demotion.reasons,
            "groups": [g.status() for g in self.groups.values()],
            "dropped_unknown": dict(self.stats),
        }


def diagram() -> str:
    """The transition table as a Mermaid state diagram (docs/carp.md embeds this output)."""
    lines = ["stateDiagram-v2", "    [*] --> INIT"]
    for old, edges in TRANSITIONS.items():
        for trigger, new in edges.items():
            lines.append(f"    {old.value} --> {new.value}: {trigger.value}")
    return "\n".join(lines)
