"""The sync protocol core: sans-I/O, in the style of aioquic's ``QuicConnection``.

One :class:`Peer` per node. The kernel adapter feeds it local state changes
(:meth:`Peer.local_update`, :meth:`Peer.local_delete`); the transport feeds it received datagrams
(:meth:`Peer.receive`); the runner calls :meth:`Peer.handle_timer` at :meth:`Peer.next_deadline`
and sends what :meth:`Peer.datagrams_to_send` returns; what the peer tells the kernel comes out
of :meth:`Peer.next_event`. Every entry point takes ``now`` (seconds, a monotonic clock), so a test
drives minutes of protocol in microseconds.

It never touches a socket, the kernel, a clock or a random source, and it never blocks.

Protocol (pfsync.md §5.2-5.5, docs/sync.md):

* **Batching.** Local changes wait in a collapse queue keyed by state, so repeated updates of one
  state coalesce (pfsync's queues); the queue is flushed after ``collapse_window`` or at once
  when it fills a datagram. With the default window of 0 it is flushed at the next timer check,
  i.e. after the batch of kernel events the adapter fed in.
* **Reliability.** Datagrams with state records are *reliable*: they carry a reliable sequence
  number (rseq), are kept until acknowledged (cumulative ACK, every ``ack_every`` datagrams or
  after ``ack_delay``); on timeout only the oldest is resent (TCP's RTO: at least ``rto``, three
  smoothed round trips, doubling per try), and a receiver that sees a gap sends NACK(first, last). The receiver delivers strictly in rseq order. At most
  ``window`` datagrams are unacknowledged, which also paces a bulk update. ALIVE every
  ``alive_interval`` carries the first rseq the sender can still resend and the last it sent:
  tail loss is found, and loss too old to resend makes the receiver ask for a bulk update.
* **Idempotent, versioned records.** Every state carries its creator node id and a per-creator
  version that only grows (the epoch, milliseconds since 1970, shifted left 20 bits, plus a
  counter), so duplicates and stale copies are dropped, as pfsync drops updates that move a state
  backwards.
* **Authentication and replay.** Every datagram is HMAC'd (``wire.py``); a datagram from
  ourselves, from an older epoch of the peer, or with a sequence number already seen (sliding
  window of ``replay_window``) is rejected and counted.
* **Bulk update.** At start the peer asks for the whole table (BULK_REQ with a nonce) and retries
  every ``bulk_retry`` seconds up to ``bulk_max_tries``; the other side answers BUS START, every
  state, BUS END in its reliable stream. :class:`BulkUpdateComplete` is emitted when the END that
  echoes our nonce is delivered after its START (an END alone means the answer began before we
  joined the stream: asked again), or when the tries run out (``succeeded=False``: pfsync then
  "pretends it worked" so a lonely node still comes up). The node daemon keeps CARP demoted
  until this event.

States received from the peer are never sent back (pfsync marks them NOSYNC): the adapter drops
kernel events caused by its own writes. A node sends a DEL only for a state it created (or took
over by seeing it change locally), so a backup whose copy merely timed out does not delete the
master's live state.
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import repeat
from typing import NamedTuple

from pfha.sync import wire
from pfha.sync.wire import Action, BulkStatus, Header, RejectReason

VERSION_SHIFT = 20  # version = epoch_ms << 20 | counter: grows across restarts
_INS, _UPD, _DEL = int(Action.INS), int(Action.UPD), int(Action.DEL)  # plain ints on hot paths
_CREATOR = wire.STATE_CREATOR.unpack_from
_new_tuple = tuple.__new__  # a StateReceived without the NamedTuple's Python-level __new__
_SECTION = wire.SECTION.pack
_STATE_WORDS = wire.STATE.size // 4
_STATE_SIZE = wire.STATE.size
_STATUS_LOW = 91  # the low byte of a STATE record's conntrack status
_TCP_STATE = 100  # a STATE record's TCP state, then window scales and flag bytes (5 bytes)
_TCP = wire.IPPROTO_TCP
_SEQ_ADJUST = 0x40  # IPS_SEQ_ADJUST: the entry has a sequence adjustment
_SEQ_ADJUST_BITS = bytes(b & _SEQ_ADJUST for b in range(256))


# --- events: what the core asks the adapter (and the node daemon) to do ---------------------
class StateReceived(NamedTuple):
    """Install or refresh this state (a packed ``wire.STATE`` record) in the kernel; ``known``
    says the state was already in the table, so the kernel most likely has it (update first).
    A tuple, not a dataclass: one is made per received state, and it is already the
    ``(record, known)`` pair the kernel adapter's ``install`` takes."""

    record: bytes
    known: bool = False


@dataclass(frozen=True, slots=True)
class StateDeleted:
    """Remove the state with this key (``wire.state_key``) from the kernel."""

    key: bytes


@dataclass(frozen=True, slots=True)
class BulkUpdateStarted:
    node: int


@dataclass(frozen=True, slots=True)
class BulkUpdateComplete:
    """The bulk update we asked for is delivered (``succeeded``) or was given up after the last
    try. ``initial`` is true for the start-up one: the node daemon keeps CARP demoted until it."""

    succeeded: bool
    states: int
    initial: bool


@dataclass(frozen=True, slots=True)
class PeerRestarted:
    node: int
    epoch: int


Event = StateReceived | StateDeleted | BulkUpdateStarted | BulkUpdateComplete | PeerRestarted


@dataclass(frozen=True)
class Config:
    node_id: int
    keyring: wire.Keyring
    collapse_window: float = 0.0
    ack_delay: float = 0.02
    ack_every: int = 32
    rto: float = 0.2
    rto_max: float = 2.0
    window: int = 256
    reorder_limit: int = 2048
    alive_interval: float = 1.0
    peer_timeout: float = 3.5
    bulk_retry: float = 2.0
    bulk_max_tries: int = 12
    bulk_burst: int = 32
    replay_window: int = 4096
    max_datagram: int = wire.MAX_DATAGRAM
    request_bulk_on_start: bool = True


@dataclass
class Stats:
    datagrams_sent: int = 0
    datagrams_received: int = 0
    states_sent: int = 0
    states_received: int = 0
    deletes_sent: int = 0
    deletes_received: int = 0
    retransmits: int = 0
    nacks_sent: int = 0
    duplicates: int = 0
    stale: int = 0
    lost_unrecoverable: int = 0
    bulk_updates_sent: int = 0
    bulk_updates_received: int = 0
    rejects: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: RejectReason) -> None:
        name = reason.name.lower()
        self.rejects[name] = self.rejects.get(name, 0) + 1


@dataclass
class _Stream:
    """What we know of one peer's reliable stream (receive side) and its acks of ours."""

    node: int
    epoch: int
    last_heard: float
    next_rseq: int | None = None  # None until the first reliable seq or ALIVE is seen
    buffer: dict[int, tuple] = field(default_factory=dict)
    unacked: int = 0
    ack_due: float | None = None
    nack_at: float = -1e9
    highest_seq: int = 0
    seen: int = 0  # bitmap of seqs highest_seq - i
    acked: int = 0  # highest rseq of ours this peer acknowledged (in our current epoch)


@dataclass
class _InFlight:
    rseq: int
    body: bytes
    sent_at: float
    tries: int = 0


class Peer:
    """One node's side of the sync protocol. Not thread-safe; one event loop drives it."""

    def __init__(self, config: Config, epoch: int, now: float) -> None:
        self.config = config
        self.epoch = epoch
        self.stats = Stats()
        self._seq = 0
        self._rseq = 0
        self._version = epoch << VERSION_SHIFT
        self._table: dict[bytes, bytes] = {}
        # keys of local states whose status says they have a sequence adjustment that no event
        # carried yet (synproxy sets it without an IPCT_SEQADJ event): the adapter fetches them
        self.seqadj_wanted: list[bytes] = []
        self._pending: dict[bytes, tuple[int, bytes]] = {}
        self._pending_since: float | None = None
        self._per_datagram = self._records_per_datagram(wire.STATE.size)
        self._creator = wire.CLEAR.pack(config.node_id)  # the node id as it stands in a record
        self._out: deque[tuple[int, bytes]] = deque()
        self._control: list[tuple[int, bytes]] = []
        self._ring: OrderedDict[int, _InFlight] = OrderedDict()  # unacknowledged, by rseq
        self._srtt = 0.0
        self._streams: dict[int, _Stream] = {}
        self._events: deque[Event] = deque()
        self._tx: list[bytes] = []
        self._alive_due = now
        self._last_sent = now
        self._last_received: float | None = None
        # bulk update we answer: (nonce, iterator over a snapshot of keys)
        self._bulk_out: tuple[int, Iterator[bytes]] | None = None
        # bulk update we asked for
        self._bulk_nonce: int | None = None
        self._bulk_tries = 0
        self._bulk_due: float | None = None
        self._bulk_states = 0
        self._bulk_started = False
        self._bulk_initial = False
        self.bulk_done = not config.request_bulk_on_start
        if config.request_bulk_on_start:
            self.request_bulk(now, initial=True)

    # --- local changes ----------------------------------------------------------------------
    def local_update(self, record: bytes, now: float, new: bool = False) -> None:
        """A state this node's kernel created or changed (a packed STATE; creator/version are
        filled in here)."""
        self._version += 1
        key = record[:wire.KEY_LEN]
        record = key + wire.STATE_CREATOR.pack(self.config.node_id, self._version) + record[52:]
        if not record[_TCP_STATE] and record[1] == _TCP or record[_STATUS_LOW] & _SEQ_ADJUST and len(record) == _STATE_SIZE:
            record = self._complete(key, record)
        self._table[key] = record
        self._queue(key, Action.INS if new else Action.UPD, record, now)

    def _complete(self, key: bytes, record: bytes) -> bytes:
        """``record`` with what its event left out and the state had: the TCP protoinfo (an
        event carries it only when the TCP state changed: IPCT_PROTOINFO) and the sequence
        adjustment (reported only in the event that set it, IPCT_SEQADJ, and in dumps; an
        entry keeps it for its life). A state's record replaces the one before it, in the table
        and in the queue, so a partial event must not drop these from what the peer installs
        or a bulk update hands out."""
        previous = self._table.get(key)
        if previous is not None and not record[_TCP_STATE] and previous[_TCP_STATE] and record[1] == _TCP:
            record = record[:_TCP_STATE] + previous[_TCP_STATE:_TCP_STATE + 5] + record[_TCP_STATE + 5:]
        if record[_STATUS_LOW] & _SEQ_ADJUST and len(record) == _STATE_SIZE:
            if previous is not None and len(previous) == wire.STATE_SEQADJ_SIZE:
                return record + previous[_STATE_SIZE:]
            self.seqadj_wanted.append(key)  # the adapter reads it from the kernel (local_update)
        return record

    def local_updates(self, changes: Iterable[tuple[bytes, bool]], now: float) -> None:
        """``local_update(record, now, new)`` for each ``(record, new)``, in order: the intake's
        batch in one call, with the per-state work inlined (this is the sender's hot path)."""
        node, pack = self.config.node_id, wire.STATE_CREATOR.pack
        table, pending, per_datagram = self._table, self._pending, self._per_datagram
        version = self._version
        for record, new in changes:
            version += 1
            key = record[:40]
            record = key + pack(node, version) + record[52:]
            if not record[_TCP_STATE] and record[1] == _TCP or record[_STATUS_LOW] & _SEQ_ADJUST and len(record) == _STATE_SIZE:
                record = self._complete(key, record)
            table[key] = record
            if new:
                pending[key] = (_INS, record)
            else:
                previous = pending.get(key)
                pending[key] = (_INS if previous is not None and previous[0] == _INS else _UPD, record)
            if len(pending) >= per_datagram:
                self._flush_pending()
        self._version = version
        if pending and self._pending_since is None:
            self._pending_since = now

    def local_run(self, records: bytes, now: float, new: bool = False) -> None:
        """``local_updates`` for a run of packed STATE records back to back (the intake decodes
        a run of same-layout kernel events in one piece): creator and version are written into
        all of them at once, and the table and queue take them in one update each."""
        size = wire.STATE.size
        n = len(records) // size
        if not n:
            return
        version = self._version
        self._version = version + n
        out = bytearray(records)
        words = memoryview(out).cast("I")  # a record is 27 words; creator at 10, version at 11-12
        words[10::27] = memoryview(self._creator * n).cast("I")
        versions = memoryview(struct.pack(f">{n}Q", *range(version + 1, version + n + 1))).cast("I")
        words[11::27] = versions[0::2]
        words[12::27] = versions[1::2]
        blob = bytes(out)
        recs = [blob[i:i + size] for i in range(0, n * size, size)]
        keys = [r[:40] for r in recs]
        if blob[_STATUS_LOW::size].translate(_SEQ_ADJUST_BITS).strip(b"\0") \
                or blob[1] == _TCP and b"\0" in blob[_TCP_STATE::size]:  # synproxied, or partial events
            recs = [self._complete(k, r) if not r[_TCP_STATE] or r[_STATUS_LOW] & _SEQ_ADJUST else r
                    for k, r in zip(keys, recs)]
        self._table.update(zip(keys, recs))
        pending = self._pending
        if new:
            pending.update(zip(keys, zip(repeat(_INS), recs)))
        else:
            get = pending.get
            for key, record in zip(keys, recs):
                previous = get(key)
                pending[key] = (_INS if previous is not None and previous[0] == _INS else _UPD, record)
        if len(pending) >= self._per_datagram:
            self._flush_pending()
        elif pending and self._pending_since is None:
            self._pending_since = now

    def local_load(self, record: bytes) -> None:
        """A state found in the kernel at start: kept (and given in bulk updates), not sent."""
        self._version += 1
        key = record[:wire.KEY_LEN]
        self._table[key] = key + wire.STATE_CREATOR.pack(self.config.node_id, self._version) + record[52:]

    def local_delete(self, key: bytes, now: float) -> None:
        """A state this node's kernel destroyed. Sent on only if this node owns the state."""
        current = self._table.pop(key, None)
        if current is None or wire.creator_version(current)[0] != self.config.node_id:
            return  # already gone (a DEL may be queued: keep it), or the peer's to delete
        self._version += 1
        self._queue(key, Action.DEL, wire.delete_record(key, self.config.node_id, self._version), now)

    def local_clear(self, now: float) -> None:
        """Every state this node created is gone (pfctl -F states, a table flush): one CLR for
        all of them instead of a DEL each (pfsync's CLR)."""
        mine = [k for k, r in self._table.items() if wire.creator_version(r)[0] == self.config.node_id]
        for key in mine:
            del self._table[key]
            self._pending.pop(key, None)
        self._flush_pending()
        self._out.append((Action.CLR, wire.CLEAR.pack(self.config.node_id)))

    def _queue(self, key: bytes, action: int, record: bytes, now: float) -> None:
        previous = self._pending.get(key)
        if previous is not None and previous[0] == Action.INS and action == Action.UPD:
            action = Action.INS  # still new to the peer
        self._pending[key] = (action, record)
        if self._pending_since is None:
            self._pending_since = now
        if len(self._pending) >= self._per_datagram:
            self._flush_pending()

    def _flush_pending(self) -> None:
        self._out.extend(self._pending.values())
        self._pending.clear()
        self._pending_since = None

    def request_bulk(self, now: float, initial: bool = False) -> None:
        """Ask the peer for its whole table (at start, or after unrecoverable loss)."""
        if self._bulk_nonce is not None:
            return
        self._bulk_nonce = (self.epoch << 16 | self._seq + 1) & 0xFFFFFFFFFFFFFFFF
        self._bulk_tries = 0
        self._bulk_states = 0
        self._bulk_started = False
        self._bulk_initial = initial
        self._bulk_due = now

    # --- received datagrams -----------------------------------------------------------------
    def count_reject(self, reason: RejectReason) -> None:
        """For checks only the transport can make (TTL, interface)."""
        self.stats.reject(reason)

    def receive(self, data: bytes, now: float) -> None:
        try:
            datagram = wire.open_datagram(self.config.keyring, data)
        except wire.Rejected as rejected:
            self.stats.reject(rejected.reason)
            return
        header = datagram.header
        if header.node == self.config.node_id:
            self.stats.reject(RejectReason.LOOP)
            return
        stream = self._stream_for(header, now)
        if stream is None or not self._fresh(stream, header.seq):
            self.stats.reject(RejectReason.REPLAY)
            return
        stream.last_heard = now
        self._last_received = now
        self.stats.datagrams_received += 1
        if header.flags & wire.FLAG_RELIABLE:
            self._receive_reliable(stream, header.rseq, datagram.sections, now)
        else:
            for action, records in datagram.sections:
                self._control_section(stream, action, records, now)

    def _stream_for(self, header: Header, now: float) -> _Stream | None:
        stream = self._streams.get(header.node)
        if stream is None or header.epoch > stream.epoch:
            restarted = stream is not None
            stream = _Stream(header.node, header.epoch, now)
            if restarted:
                stream.next_rseq = 1
                self._events.append(PeerRestarted(header.node, header.epoch))
            self._streams[header.node] = stream
        elif header.epoch < stream.epoch:
            return None
        return stream

    def _fresh(self, stream: _Stream, seq: int) -> bool:
        """Sliding-window replay check (IPsec style); marks ``seq`` as seen."""
        window = self.config.replay_window
        if seq > stream.highest_seq:
            shift = seq - stream.highest_seq
            stream.seen = ((stream.seen << shift) | 1) & ((1 << window) - 1) if shift < window else 1
            stream.highest_seq = seq
            return True
        offset = stream.highest_seq - seq
        if offset >= window or stream.seen >> offset & 1:
            return False
        stream.seen |= 1 << offset
        return True

    def _receive_reliable(self, stream: _Stream, rseq: int, sections: tuple, now: float) -> None:
        if stream.next_rseq is None:
            # a stream we join mid-way starts at the first datagram we see: what came before is
            # in the bulk update we asked for (see _apply_bus for a bulk that began before it)
            stream.next_rseq = rseq
        if rseq < stream.next_rseq or rseq in stream.buffer:
            self.stats.duplicates += 1
            self._ack_soon(stream, now, immediate=True)
            return
        if rseq > stream.next_rseq:
            if len(stream.buffer) < self.config.reorder_limit:
                stream.buffer[rseq] = sections
            self._nack(stream, stream.next_rseq, rseq - 1, now)
            return
        self._deliver(stream, sections, now)
        stream.next_rseq += 1
        while stream.next_rseq in stream.buffer:
            self._deliver(stream, stream.buffer.pop(stream.next_rseq), now)
            stream.next_rseq += 1
        self._ack_soon(stream, now)

    def _ack_soon(self, stream: _Stream, now: float, immediate: bool = False) -> None:
        stream.unacked += 1
        if immediate or stream.unacked >= self.config.ack_every:
            stream.ack_due = now
        elif stream.ack_due is None:
            stream.ack_due = now + self.config.ack_delay

    def _nack(self, stream: _Stream, first: int, last: int, now: float) -> None:
        if now - stream.nack_at < self.config.rto / 2:
            return
        stream.nack_at = now
        self.stats.nacks_sent += 1
        self._control.append((Action.NACK, wire.NACK.pack(stream.epoch, first, last)))

    def _deliver(self, stream: _Stream, sections: tuple, now: float) -> None:
        for action, records in sections:
            if action == Action.INS or action == Action.UPD:
                for record in records:
                    self._apply_state(record)
            elif action == Action.DEL:
                for record in records:
                    self._apply_delete(record)
            elif action == Action.CLR:
                for record in records:
                    self._apply_clear(wire.CLEAR.unpack(record)[0])
            elif action == Action.BUS:
                for record in records:
                    self._apply_bus(stream, *wire.BUS.unpack(record), now=now)
            else:
                self._control_section(stream, action, records, now)

    def _apply_state(self, record: bytes) -> None:
        key = record[:wire.KEY_LEN]
        current = self._table.get(key)
        creator, version = _CREATOR(record, wire.KEY_LEN)
        if current is not None:
            old_creator, old_version = _CREATOR(current, wire.KEY_LEN)
            if creator == old_creator and version <= old_version:
                self.stats.stale += 1
                return
        elif creator == self.config.node_id and version > self.epoch << VERSION_SHIFT:
            # our own state, of this run, that we no longer have: we deleted it since the peer
            # copied it (its bulk update may echo it back). States of an earlier run of ours
            # (same --node-id, older epoch) are taken back: that is what a restart needs.
            self.stats.stale += 1
            return
        self._table[key] = record
        self.stats.states_received += 1
        if self._bulk_nonce is not None:
            self._bulk_states += 1
        self._events.append(_new_tuple(StateReceived, (record, current is not None)))

    def _apply_delete(self, record: bytes) -> None:
        key = record[:wire.KEY_LEN]
        self.stats.deletes_received += 1
        current = self._table.get(key)
        if current is None:
            return
        creator, version = wire.creator_version(record)
        old_creator, old_version = wire.creator_version(current)
        if creator == old_creator and version <= old_version:
            self.stats.stale += 1
            return
        del self._table[key]
        self._events.append(StateDeleted(key))

    def _apply_clear(self, creator: int) -> None:
        doomed = [k for k, r in self._table.items() if wire.creator_version(r)[0] == creator]
        for key in doomed:
            del self._table[key]
            self._events.append(StateDeleted(key))

    def _apply_bus(self, stream: _Stream, status: int, nonce: int, now: float) -> None:
        if nonce != self._bulk_nonce:
            return  # an answer to an older request, or to another node's
        if status == BulkStatus.START:
            self._bulk_started = True
            self._bulk_states = 0
            self._bulk_due = now + self.config.bulk_retry + self._bulk_allowance()
            self._events.append(BulkUpdateStarted(stream.node))
        elif status == BulkStatus.END and self._bulk_started:
            self._finish_bulk(True)
        # an END without its START: the answer began before we joined the stream, so part of it
        # passed us by; the retry timer asks again and the peer answers anew (never a stall: the
        # stream itself flows meanwhile, where waiting for the START could wait behind a full
        # window until the request gave up)

    def _bulk_allowance(self) -> float:
        # time scaled to the table size, as FreeBSD's bulk failure timer (pfsync.md §1.5)
        return 60.0

    def _finish_bulk(self, succeeded: bool) -> None:
        self.stats.bulk_updates_received += succeeded
        self._events.append(BulkUpdateComplete(succeeded, self._bulk_states, self._bulk_initial))
        self._bulk_nonce = None
        self._bulk_due = None
        self.bulk_done = True

    def _control_section(self, stream: _Stream, action: int, records: tuple, now: float) -> None:
        if action == Action.ACK:
            for record in records:
                epoch, rseq = wire.ACK.unpack(record)
                if epoch == self.epoch and rseq > stream.acked:
                    stream.acked = min(rseq, self._rseq)
            self._release_acked(now)
        elif action == Action.NACK:
            for record in records:
                self._on_nack(*wire.NACK.unpack(record), now=now)
        elif action == Action.ALIVE:
            for record in records:
                self._on_alive(stream, *wire.ALIVE.unpack(record), now=now)
        elif action == Action.BULK_REQ:
            for record in records:
                self._start_bulk_answer(wire.BULK_REQ.unpack(record)[0])

    def _release_acked(self, now: float) -> None:
        acked = min((s.acked for s in self._live_streams(now)), default=self._rseq)
        ring = self._ring
        while ring:
            rseq, entry = next(iter(ring.items()))
            if rseq > acked:
                break
            if entry.tries == 0:  # Karn: only never-resent datagrams give an RTT sample
                self._srtt = 0.875 * self._srtt + 0.125 * (now - entry.sent_at)
            del ring[rseq]

    def _live_streams(self, now: float) -> list[_Stream]:
        return [s for s in self._streams.values() if now - s.last_heard <= self.config.peer_timeout]

    def _on_nack(self, epoch: int, first: int, last: int, now: float) -> None:
        if epoch != self.epoch:
            return
        for rseq in range(first, min(last, self._rseq) + 1):
            entry = self._ring.get(rseq)
            if entry is not None:
                self._resend(entry, now)
        if first not in self._ring and first <= self._rseq:
            self._alive_due = now  # tell the receiver at once what can no longer be resent

    def _on_alive(self, stream: _Stream, first: int, last: int, now: float) -> None:
        if stream.next_rseq is None:
            if self._bulk_nonce is None:
                stream.next_rseq = last + 1
            return
        if stream.next_rseq < first:
            # loss older than the sender's resend ring: skip it and re-learn the table
            self.stats.lost_unrecoverable += first - stream.next_rseq
            stream.next_rseq = first
            while stream.next_rseq in stream.buffer:
                self._deliver(stream, stream.buffer.pop(stream.next_rseq), now)
                stream.next_rseq += 1
            for rseq in [r for r in stream.buffer if r < stream.next_rseq]:
                del stream.buffer[rseq]
            self.request_bulk(now)
        if stream.next_rseq <= last:
            self._nack(stream, stream.next_rseq, last, now)

    def _start_bulk_answer(self, nonce: int) -> None:
        if self._bulk_out is not None and self._bulk_out[0] == nonce:
            return  # a retry of the request we are answering
        self.stats.bulk_updates_sent += 1
        self._out.append((Action.BUS, wire.BUS.pack(BulkStatus.START, nonce)))
        self._bulk_out = (nonce, iter(list(self._table)))

    # --- timers -----------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When :meth:`handle_timer` must next be called (None: only on input)."""
        candidates = [self._alive_due]
        if self._pending_since is not None:
            candidates.append(self._pending_since + self.config.collapse_window)
        for stream in self._streams.values():
            if stream.ack_due is not None:
                candidates.append(stream.ack_due)
        if self._ring:
            entry = next(iter(self._ring.values()))
            candidates.append(entry.sent_at + self._rto(entry.tries))
        if self._bulk_due is not None:
            candidates.append(self._bulk_due)
        if self._control or self._tx or (self._out or self._bulk_out) and self._window_open():
            candidates.append(self._last_sent)  # more to send as soon as possible
        return min(candidates)

    def _rto(self, tries: int) -> float:
        # at least config.rto; more when acknowledgements are slow (a busy receiver)
        base = max(self.config.rto, 3 * self._srtt)
        return min(base * (2 ** tries), self.config.rto_max)

    def handle_timer(self, now: float) -> None:
        if self._pending_since is not None and now >= self._pending_since + self.config.collapse_window:
            self._flush_pending()
        for stream in self._streams.values():
            if stream.ack_due is not None and now >= stream.ack_due:
                self._control.append((Action.ACK, wire.ACK.pack(stream.epoch, stream.next_rseq - 1
                                                                if stream.next_rseq else 0)))
                stream.ack_due = None
                stream.unacked = 0
        if self._ring and not self._live_streams(now):
            self._ring.clear()  # nobody is listening: keep the states, not the datagrams
        if self._ring:
            # like TCP's RTO: resend only the oldest; the cumulative ACK it earns releases the
            # rest, and NACKs name any other gap (resending everything due invites a storm of
            # duplicates when the receiver is merely slow)
            entry = next(iter(self._ring.values()))
            if now >= entry.sent_at + self._rto(entry.tries):
                self._resend(entry, now)
        if now >= self._alive_due:
            first = next(iter(self._ring)) if self._ring else self._rseq + 1
            self._control.append((Action.ALIVE, wire.ALIVE.pack(first, self._rseq)))
            self._alive_due = now + self.config.alive_interval
        if self._bulk_due is not None and now >= self._bulk_due:
            self._retry_bulk(now)

    def _retry_bulk(self, now: float) -> None:
        if self._bulk_tries >= self.config.bulk_max_tries:
            self._finish_bulk(False)
            return
        self._bulk_tries += 1
        self._control.append((Action.BULK_REQ, wire.BULK_REQ.pack(self._bulk_nonce)))
        self._bulk_due = now + self.config.bulk_retry

    def _resend(self, entry: _InFlight, now: float) -> None:
        self.stats.retransmits += 1
        entry.tries += 1
        entry.sent_at = now
        self._emit(entry.body, now, entry.rseq)

    # --- output -----------------------------------------------------------------------------
    def _window_open(self) -> bool:
        return len(self._ring) < self.config.window

    def _records_per_datagram(self, size: int) -> int:
        room = self.config.max_datagram - wire.HEADER.size - wire.MAC_LEN - wire.SECTION.size
        return max(1, room // size)

    def datagrams_to_send(self, now: float) -> list[bytes]:
        """Everything due now, sealed; the transport sends them in order."""
        if self._control:
            body = b"".join(wire.section(a, [r for b, r in self._control if b == a])
                            for a in dict.fromkeys(a for a, _ in self._control))
            self._control.clear()
            self._emit(body, now, 0)
        bursts = 0
        while self._window_open() and bursts < self.config.bulk_burst:
            if not self._out and self._bulk_out is not None:
                self._refill_from_bulk()
            if not self._out:
                break
            self._send_reliable(now)
            bursts += 1
        tx, self._tx = self._tx, []
        return tx

    def _refill_from_bulk(self) -> None:
        assert self._bulk_out is not None
        nonce, keys = self._bulk_out
        room = self._records_per_datagram(wire.STATE.size)
        for key in keys:
            record = self._table.get(key)
            if record is not None:
                self._out.append((Action.UPD, record))
                room -= 1
                if room == 0:
                    return
        self._out.append((Action.BUS, wire.BUS.pack(BulkStatus.END, nonce)))
        self._bulk_out = None

    def _send_reliable(self, now: float) -> None:
        out = self._out
        action = out[0][0]
        if action == _INS or action == _UPD:
            # the common case: a datagram of state records of one action, taken in one piece
            popleft = out.popleft
            head = [popleft() for _ in range(min(self._per_datagram, len(out)))]
            actions = [a for a, _ in head]
            if actions.count(action) != len(head):  # another action follows: stop before it
                cut = next(i for i, a in enumerate(actions) if a != action)
                out.extendleft(reversed(head[cut:]))
                del head[cut:]
            body = b"".join([r for _, r in head])
            if len(body) == len(head) * _STATE_SIZE:
                self.stats.states_sent += len(head)
                self._send_body(_SECTION(action, _STATE_WORDS, len(head)) + body, now)
                return
            out.extendleft(reversed(head))  # records with a seqadj among them: sections by size
        room = self.config.max_datagram - wire.HEADER.size - wire.MAC_LEN
        parts: list[bytes] = []
        action, records, size = None, [], 0
        out, section_size = self._out, wire.SECTION.size
        states = deletes = 0
        while out:
            next_action, record = out[0]
            # a new section for another action, or for state records of another size (seqadj)
            other = next_action != action or len(record) != size
            extra = len(record) + (section_size if other else 0)
            if extra > room:
                break
            room -= extra
            out.popleft()
            if other:
                if records:
                    parts.append(wire.section(action, records))
                action, records, size = next_action, [], len(record)
            records.append(record)
            if next_action == _INS or next_action == _UPD:
                states += 1
            elif next_action == _DEL:
                deletes += 1
        self.stats.states_sent += states
        self.stats.deletes_sent += deletes
        if records:
            parts.append(wire.section(action, records))
        self._send_body(b"".join(parts), now)

    def _send_body(self, body: bytes, now: float) -> None:
        self._rseq += 1
        if self._live_streams(now):
            self._ring[self._rseq] = _InFlight(self._rseq, body, now)
        self._emit(body, now, self._rseq)

    def _emit(self, body: bytes, now: float, rseq: int) -> None:
        self._seq += 1
        config = self.config
        self._tx.append(wire.seal_fields(config.keyring, wire.FLAG_RELIABLE if rseq else 0, config.node_id,
                                         self.epoch, self._seq, rseq, body))
        self.stats.datagrams_sent += 1
        self._last_sent = now

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # --- introspection ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._table)

    def states(self) -> dict[bytes, bytes]:
        """The table (read only): key -> packed record, local and received."""
        return self._table

    def status(self, now: float) -> dict:
        """What ``pfha sync status`` shows (plain data, JSON-ready)."""
        peers = []
        for stream in self._streams.values():
            peers.append({
                "node": f"{stream.node:08x}", "epoch": stream.epoch,
                "last_heard_s": round(now - stream.last_heard, 3),
                "alive": now - stream.last_heard <= self.config.peer_timeout,
                "acked_rseq": stream.acked, "received_rseq": (stream.next_rseq or 1) - 1,
                "reorder_buffer": len(stream.buffer),
            })
        oldest = next(iter(self._ring.values())).sent_at if self._ring else None
        stats = self.stats
        return {
            "node": f"{self.config.node_id:08x}", "epoch": self.epoch,
            "states": len(self._table), "peers": peers,
            "last_message_s": None if self._last_received is None else round(now - self._last_received, 3),
            "sent_rseq": self._rseq, "unacknowledged": len(self._ring),
            "lag_s": 0.0 if oldest is None else round(now - oldest, 3),
            "queued": len(self._pending) + len(self._out),
            "bulk": {"done": self.bulk_done, "in_progress": self._bulk_nonce is not None,
                     "tries": self._bulk_tries, "answering": self._bulk_out is not None},
            "counters": {k: v for k, v in vars(stats).items()},
        }
