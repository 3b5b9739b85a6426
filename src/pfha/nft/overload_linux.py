"""The overload flusher: NFLOG overload events in, conntrack entries of the offender out.

The compiled ruleset logs every packet that overloads a rule with ``overload <t> flush`` to
the NFLOG group :data:`pfha.nft.overload.OVERLOAD_GROUP` (the source is already in ``<t>``
and the packet dropped). :class:`OverloadFlusher` binds that group, turns the packets into
events, dumps conntrack and deletes the flows :func:`pfha.nft.overload.doomed` picks - what
pf's pf_overload_task does in the kernel. It runs wherever the data plane does: as a part of
the node daemon (``pfha.node.parts.OverloadPart``) or in the foreground (``pfha
overload-flush``); only one process per network namespace can hold the group.

:func:`listening` tells ``pfctl -f`` whether a flusher holds the group, so a ruleset with
``flush`` loaded without one is reported instead of silently not flushing.

Thin: the NFLOG socket and message codec are pflogd's (:mod:`pfha.pflog.linux`,
:mod:`pfha.pflog.nflog`), conntrack access is :mod:`pfha.nft.conntrack`'s, every decision is
:mod:`pfha.nft.overload`'s. It must never change the ruleset or the tables.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pfha.errors import PfhaError
from pfha.nft import conntrack
from pfha.nft.compile import SIDE_A, SIDE_B
from pfha.nft.overload import (
    COPY_RANGE,
    OVERLOAD_GROUP,
    OverloadError,
    OverloadEvent,
    coalesce,
    doomed,
    event_from_packet,
    lookups,
)
from pfha.nft.states import Flow, Tuple
from pfha.pflog import nflog
from pfha.sync import wire

log = logging.getLogger("pfha.overload")


class OverloadFlushError(PfhaError):
    """The flusher cannot start: the NFLOG group is held by another process, or refused."""


@dataclass
class Flush:
    """One flush: the events it answered and how many conntrack entries went."""

    events: list[OverloadEvent]
    killed: int
    seconds: float

    def describe(self) -> str:
        who = "; ".join(e.describe() for e in self.events[:3])
        if len(self.events) > 3:
            who += f"; and {len(self.events) - 3} more"
        return f"{who}: {self.killed} states killed ({self.seconds * 1000:.1f} ms)"


@dataclass
class Stats:
    events: int = 0
    flushes: int = 0
    killed: int = 0
    ignored: int = 0  # packets on the group that are not overload events
    last: str | None = None
    last_at: float | None = None


FILTERED_MAX = 8  # offenders per flush looked up with filtered dumps (two table walks each)
# where wire.STATE keeps the original source and destination and the reply source and destination
ADDRESS_OFFSETS = (4, 20, 52, 68)


def flow_from_record(record: bytes) -> Flow:
    """A packed conntrack entry (pfha.sync's wire.STATE, as its ctnetlink parser yields them)
    as the :class:`Flow` the decision reads."""
    state = wire.State.unpack(record)
    orig, reply = state.orig, state.reply
    return Flow(4 if state.family == socket.AF_INET else 6, state.proto, Tuple(orig.src, orig.dst, orig.sport, orig.dport),
                Tuple(reply.src, reply.dst, reply.sport, reply.dport), mark=state.mark, status=state.status)


class KernelConntrack:
    """Conntrack as the flusher needs it, through pfha.sync's raw ctnetlink (pyroute2 spends
    tens of milliseconds per request; pf kills at once): dumps filtered by the kernel to the
    flows naming an offender (CTA_FILTER), then batched deletes by original tuple."""

    def __init__(self) -> None:
        self.table: Any = None
        self.keys: dict[Flow, bytes] = {}

    def open(self) -> None:
        from pfha.sync.conntrack import KernelTable

        if self.table is None:
            self.table = KernelTable()

    def find(self, events: Iterable[OverloadEvent]) -> list[Flow]:
        """The flows naming an offender where :func:`pfha.nft.overload.lookups` says: two
        kernel-filtered dumps per event, or, past :data:`FILTERED_MAX` events, one dump."""
        from pfha.sync.conntrack import CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, dump_request_with

        self.open()
        self.keys = {}
        events = list(events)
        if len(events) > FILTERED_MAX:
            return self.find_in_whole_table(events)
        for event in events:
            af = socket.AF_INET if event.family == 4 else socket.AF_INET6
            for tuple_name, end in lookups(event):
                kind = CTA_TUPLE_ORIG if tuple_name == "orig" else CTA_TUPLE_REPLY
                request = functools.partial(dump_request_with, family=af, tuple_kind=kind, end=end, address=event.address.packed)
                for entry in self.table.dump(0, request):
                    self.keys.setdefault(flow_from_record(entry.record), wire.state_key(entry.record))
        return list(self.keys)

    def find_in_whole_table(self, events: list[OverloadEvent]) -> list[Flow]:
        """Many offenders at once (a distributed attack): one dump of the entries holding a
        pf state, and only those naming an offender anywhere are decoded (bytes compared)."""
        wanted = {event.address.packed.ljust(16, b"\0") for event in events}
        for entry in self.table.dump(SIDE_A | SIDE_B):
            record = entry.record
            if any(record[start:start + 16] in wanted for start in ADDRESS_OFFSETS):
                self.keys.setdefault(flow_from_record(record), wire.state_key(record))
        return list(self.keys)

    def delete(self, flows: Iterable[Flow]) -> int:
        """Delete the flows :meth:`find` returned; the number the kernel removed."""
        self.open()
        before = self.table.counters["deleted"]
        self.table.delete([self.keys[flow] for flow in flows if flow in self.keys])
        return self.table.counters["deleted"] - before

    def close(self) -> None:
        if self.table is not None:
            self.table.close()
            self.table = None


def every_flow(events: Iterable[OverloadEvent]) -> list[Flow]:
    """The whole table: the reference the benchmark compares filtered dumps with."""
    return conntrack.list_flows()


class OverloadFlusher:
    """Bind the overload group; :meth:`read` the events; :meth:`flush` them."""

    def __init__(self, group: int = OVERLOAD_GROUP, *, flows: Callable[[list[OverloadEvent]], Iterable[Flow]] | None = None) -> None:
        self.group = group
        self.kernel = KernelConntrack()
        self.flows = flows or self.kernel.find
        self.delete = self.kernel.delete if flows is None else conntrack.delete
        self.stats = Stats()
        self.source: Any = None  # pfha.pflog.linux.NflogSocket once started

    def start(self) -> None:
        from pfha.pflog.linux import NflogSocket, PflogdError

        try:
            self.source = NflogSocket(self.group, COPY_RANGE)
        except PflogdError as error:
            busy = os.geteuid() == 0 and ("Operation not permitted" in str(error) or "busy" in str(error))
            hint = " (another overload flusher - the node daemon or pfha overload-flush - runs in this namespace)" if busy else ""
            raise OverloadFlushError(f"overload flush: {error}{hint}") from None
        try:
            self.kernel.open()
        except OSError as error:
            self.source.close()
            raise OverloadFlushError(f"overload flush: conntrack: {error.strerror or error}") from None

    def fileno(self) -> int:
        return self.source.fileno()

    def read(self) -> list[OverloadEvent]:
        """The events of one datagram (duplicates removed)."""
        events = []
        overruns = self.source.overruns
        packets = self.source.receive()
        if self.source.overruns > overruns:
            log.warning("overload events lost (socket overrun): those offenders keep their states")
        for packet in packets:
            try:
                events.append(event_from_packet(packet.family, packet.prefix, packet.payload))
            except OverloadError as error:
                self.stats.ignored += 1
                log.debug("%s", error)
        self.stats.events += len(events)
        return coalesce(events)

    def flush(self, events: list[OverloadEvent]) -> Flush:
        """Delete the flows holding states pf would kill for ``events`` (blocking: a dump)."""
        started = time.monotonic()
        victims = doomed(events, self.flows(events))
        killed = self.delete(victims) if victims else 0
        done = Flush(events, killed, time.monotonic() - started)
        self.stats.flushes += 1
        self.stats.killed += killed
        self.stats.last, self.stats.last_at = done.describe(), time.time()
        return done

    def poll(self, timeout: float = 0.5) -> Flush | None:
        """Wait up to ``timeout`` for events and flush them."""
        ready, _, _ = select.select([self.source], [], [], timeout)
        if not ready:
            return None
        events = self.read()
        return self.flush(events) if events else None

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
            self.source = None
        self.kernel.close()

    def status(self) -> dict:
        return {"group": self.group, "events": self.stats.events, "flushes": self.stats.flushes,
                "killed": self.stats.killed, "ignored": self.stats.ignored,
                "overruns": self.source.overruns if self.source is not None else 0, "last": self.stats.last,
                "last_at": self.stats.last_at}


def listening(group: int = OVERLOAD_GROUP) -> bool | None:
    """Does a process of this network namespace hold the NFLOG ``group``? None when that
    cannot be told (no CAP_NET_ADMIN, no nfnetlink_log).

    nfnetlink_log refuses a bind to a group another socket holds (EPERM on current kernels,
    EBUSY on older ones); a free group is bound and released at once."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nflog.NETLINK_NETFILTER)
    except OSError:
        return None
    try:
        sock.bind((0, 0))
        sock.settimeout(2.0)
        code = _request(sock, nflog.bind_request(group, 1))
        if code == 0:
            _request(sock, nflog.unbind_request(group, 2))
            return False
        if code in (errno.EPERM, errno.EBUSY) and os.geteuid() == 0:
            return True
        return None
    except OSError:
        return None
    finally:
        sock.close()


def _request(sock: socket.socket, message: bytes) -> int:
    """Send one acked request; its errno (0: done)."""
    sock.send(message)
    seq = struct.unpack_from("=I", message, 8)[0]
    while True:
        for reply in nflog.messages(sock.recv(65536)):
            if reply.type == nflog.NLMSG_ERROR and reply.seq == seq:
                return -nflog.error_code(reply)


def missing_flusher_warnings(metadata: dict[str, Any]) -> list[str]:
    """``pfctl -f`` warnings for a ruleset whose ``overload ... flush`` nobody carries out."""
    spec = metadata.get("overload_flush")
    if not spec:
        return []
    state = listening(spec.get("group", OVERLOAD_GROUP))
    if state:
        return []
    why = "no overload flusher runs in this namespace" if state is False else "cannot tell whether an overload flusher runs"
    return [f"{rule['where']}: overload flush: {why} (the node daemon, or `pfha overload-flush`): "
            "until one does, the offender joins the table but its existing states are not flushed"
            for rule in spec.get("rules", [])]


def run_foreground(group: int = OVERLOAD_GROUP, ready_file: str | None = None) -> OverloadFlusher:
    """``pfha overload-flush``: flush until SIGTERM/SIGINT; one log line per flush (as pf's
    "pf_overload_task: N states killed" at debug level misc)."""
    from pfha.pflog.linux import serve_until_signalled

    flusher = OverloadFlusher(group)

    def start() -> None:
        flusher.start()
        log.info("listening on NFLOG group %d", group)

    def step() -> None:
        done = flusher.poll()
        if done is not None:
            log.warning("%s", done.describe())

    def finish() -> None:
        flusher.close()
        log.info("%d events, %d flushes, %d states killed", flusher.stats.events, flusher.stats.flushes, flusher.stats.killed)

    serve_until_signalled(start, step, finish, ready_file)
    return flusher
