"""The asyncio glue: kernel events and sync datagrams into the core, its output back out.

Used by ``pfha sync run`` (foreground) and, later, by the node daemon, which passes
``on_bulk_complete`` to lift the CARP demotion once the start-up bulk update is in.

The loop's clock (``loop.time()``, monotonic) is the core's ``now``. Received states are written
to the kernel in batches per wake-up; kernel events are read in batches. Nothing here decides
anything about the protocol.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pfha.sync import sched, wire
from pfha.sync.conntrack import KIND_DESTROY, KIND_NEW, EventSource, KernelTable, Run
from pfha.sync.refresh import Refresher
from pfha.sync.peer import (BulkUpdateComplete, BulkUpdateStarted, Peer, PeerRestarted,
                            StateDeleted, StateReceived)
from pfha.sync.transport import Transport

STATUS_INTERVAL = 0.5
READ_HOLD = 0.001  # see Runner._on_kernel_events
#: seconds between refresh sweeps: a third of conntrack's shortest default timeouts (ICMP and
#: unanswered UDP, 30 s), so an active flow's copy is renewed well before it could expire
REFRESH = 10.0
#: the sweep's sweeps are spaced at least this many times their own duration apart
REFRESH_SHARE = 20.0
HOLD_BELOW = 64  # a read of fewer events than this is "trickling"...
HOLD_MIN = 4  # ...if they come faster than HOLD_MIN per hold (4,000/s for 1 ms)


class Runner:
    def __init__(self, peer: Peer, transport: Transport, intake: EventSource, kernel: KernelTable,
                 status_path: Path | None = None,
                 on_bulk_complete: Callable[[BulkUpdateComplete], None] | None = None,
                 log: Callable[[str], None] | None = None, read_hold: float = READ_HOLD,
                 refresh: float = REFRESH) -> None:
        self.peer, self.transport, self.intake, self.kernel = peer, transport, intake, kernel
        self.status_path = status_path
        self.on_bulk_complete = on_bulk_complete
        self.log = log or (lambda line: print(f"pfha sync: {line}", file=sys.stderr, flush=True))
        self.counters = {"events": 0, "own_events": 0, "overruns": 0, "resyncs": 0, "holds": 0}
        self.read_hold = read_hold
        self.refresh = refresh  # seconds between refresh sweeps (pfha.sync.refresh); 0: none
        self.refresher = Refresher()
        self._last_read = -1e9
        self._holding = False  # the intake is paused (its reader removed) until the hold ends
        self._trickle = False  # the last read was a small one soon after the one before
        intake.ignore_writer(kernel.pid)
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped = asyncio.Event()

    def load_kernel_table(self) -> int:
        """States already in the kernel at start are ours to give in a bulk update (not sent)."""
        events = self.kernel.dump(self.intake.mark_mask)
        for event in events:
            if event.record[1] != wire.IPPROTO_PFSYNC:
                self.peer.local_load(event.record)
        return len(events)

    async def run(self) -> None:
        self._loop = loop = asyncio.get_running_loop()
        loaded = self.load_kernel_table()
        self.log(f"node {self.peer.config.node_id:08x} epoch {self.peer.epoch} on {self.transport.dev} "
                 f"to {self.transport.destination}; {loaded} local states loaded")
        loop.add_reader(self.transport.fileno(), self._on_datagrams)
        loop.add_reader(self.intake.fileno(), self._on_kernel_events)
        status = loop.create_task(self._write_status_forever())
        sweeps = loop.create_task(self._refresh_forever()) if self.refresh > 0 else None
        self._service()
        try:
            await self._stopped.wait()
        finally:
            status.cancel()
            if sweeps is not None:
                sweeps.cancel()
            loop.remove_reader(self.transport.fileno())
            loop.remove_reader(self.intake.fileno())
            self._holding = False
            if self._timer:
                self._timer.cancel()
            self.write_status()

    def stop(self) -> None:
        self._stopped.set()

    def _sweep(self, table: KernelTable, mask: int) -> list[bytes]:
        """One refresh sweep (in a worker thread): the kernel's entries whose flows moved."""
        self.refresher.begin()
        return self.refresher.end(table.dump_activity(self.refresher.moved, mask))

    async def _refresh_forever(self) -> None:
        """Every ``refresh`` seconds, send the states whose flows carried packets since the last
        sweep, with their current timeouts (conntrack reports no event for a packet that only
        pushes a state's expiry back). The dump and the choice run in a thread, on a netlink
        socket of their own, so the loop keeps serving sync and CARP meanwhile."""
        table = KernelTable()
        warned = False
        pause = self.refresh
        try:
            while True:
                await asyncio.sleep(pause)
                mask = self.intake.mark_mask
                started = time.monotonic()
                try:
                    records = await asyncio.to_thread(self._sweep, table, mask)
                    # a big table makes a long sweep (~20 µs a state here): the sweeps take at
                    # most a twentieth of the time, the interval stretching as the table grows
                    pause = max(self.refresh, REFRESH_SHARE * (time.monotonic() - started))
                    self.refresher.interval = pause
                except OSError as error:  # a failed dump skips one sweep; the next one tries again
                    self.counters["refresh_errors"] = self.counters.get("refresh_errors", 0) + 1
                    self.log(f"refresh sweep failed: {error}")
                    continue
                if self.refresher.without_counters and not warned:
                    warned = True
                    self.log("conntrack accounting is off (net.netfilter.nf_conntrack_acct=0): active flows cannot be "
                             "told apart and are not refreshed; pfctl -f turns it on, or set the sysctl")
                if records:
                    self.peer.local_updates([(record, False) for record in records], self._now())
                    self._service()
        finally:
            table.close()

    def _now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def _on_datagrams(self) -> None:
        now = self._now()
        # small batches: acknowledgements go out between them, and latency stays low
        for payload, ok in self.transport.receive(limit=16):
            if ok:
                self.peer.receive(payload, now)
            else:
                self.peer.count_reject(wire.RejectReason.TTL)
        self._service()

    def _on_kernel_events(self) -> None:
        items, overrun = self.intake.read_runs(limit=256)
        now = self._now()
        own = self.kernel.pid
        peer = self.peer
        updates: list[tuple[bytes, bool]] = []
        count = 0
        for item in items:
            if item.__class__ is Run:
                count += item.count
                if updates:  # keep the kernel's order
                    peer.local_updates(updates, now)
                    updates = []
                if item.records[1] == wire.IPPROTO_PFSYNC:
                    continue
                if item.kind == KIND_DESTROY:
                    size = wire.STATE.size
                    for i in range(0, len(item.records), size):
                        peer.local_delete(item.records[i:i + wire.KEY_LEN], now)
                else:
                    peer.local_run(item.records, now, item.kind == KIND_NEW)
                continue
            kind, pid, _, record = item
            count += 1
            if pid == own:  # the BPF filter normally drops these already
                continue
            elif record[1] == wire.IPPROTO_PFSYNC:
                continue  # the sync link's own traffic is not a state worth syncing
            elif kind == KIND_DESTROY:
                if updates:  # keep the kernel's order
                    peer.local_updates(updates, now)
                    updates = []
                peer.local_delete(wire.state_key(record), now)
            else:
                updates.append((record, kind == KIND_NEW))
        if updates:
            peer.local_updates(updates, now)
        if peer.seqadj_wanted:
            self._fetch_seqadj(now)
        self.counters["events"] += count
        self._moderate(count, now)
        self.counters["own_events"] = self.intake.ignored
        if overrun:
            # the kernel dropped events: resend our whole table from a dump (pfsync.md §5.4 step 8)
            self.counters["overruns"] += 1
            self.counters["resyncs"] += 1
            for event in self.kernel.dump(self.intake.mark_mask):
                if event.record[1] != wire.IPPROTO_PFSYNC:
                    peer.local_update(event.record, now)
            self.log("conntrack event overrun: resynchronised from a dump")
        self._service()

    def _fetch_seqadj(self, now: float) -> None:
        """Read the entries whose sequence adjustment no event carried from the kernel, once
        each (a synproxied connection's, right after its handshake), and send them on."""
        peer = self.peer
        wanted, peer.seqadj_wanted = dict.fromkeys(peer.seqadj_wanted), []
        for key in wanted:
            record = self.kernel.get(key)
            if record is not None and len(record) == wire.STATE_SEQADJ_SIZE:
                peer.local_update(record, now)
        self.counters["seqadj_fetched"] = self.counters.get("seqadj_fetched", 0) + len(wanted)
        peer.seqadj_wanted.clear()

    def _moderate(self, count: int, now: float) -> None:
        """Interrupt moderation, as NAPI does for a network card: when events trickle in (small
        reads in quick succession, e.g. one per new flow from a busy data plane), stop reading
        for ``read_hold`` and take what gathered in one read. Every wake-up costs the same
        whatever it reads (the event loop, a datagram and its MAC, the peer's wake-up and
        install call): 1-2 states per wake-up cost 50-140 µs of CPU each on the loaded bench
        machine, where a full read costs 2-5 µs a state. The first event after a quiet spell
        is read at once, so a lone change waits for nothing; under a trickle a change waits at
        most ``read_hold`` (1 ms), and only while they come faster than ``HOLD_MIN`` per hold
        (at 2,000 new states/s every event is read as it comes). A full read (a burst) never
        holds."""
        if self._trickle:  # the read after a hold: hold again while enough came meanwhile
            trickle = HOLD_MIN <= count < HOLD_BELOW
        else:
            trickle = 0 < count < HOLD_BELOW and now - self._last_read < self.read_hold / HOLD_MIN
        self._last_read = now
        self._trickle = trickle
        if trickle and self.read_hold > 0 and not self._holding:
            assert self._loop is not None
            self._holding = True
            self.counters["holds"] += 1
            self._loop.remove_reader(self.intake.fileno())
            self._loop.call_later(self.read_hold, self._end_hold)

    def _end_hold(self) -> None:
        if not self._holding:
            return  # stopped meanwhile
        self._holding = False
        assert self._loop is not None
        self._loop.add_reader(self.intake.fileno(), self._on_kernel_events)
        self._on_kernel_events()

    def _service(self) -> None:
        """Run due timers, send what is due, apply what arrived, re-arm the timer."""
        peer, now = self.peer, self._now()
        for _ in range(64):
            deadline = peer.next_deadline()
            if deadline is not None and deadline <= now:
                peer.handle_timer(now)
            datagrams = peer.datagrams_to_send(now)
            if datagrams:
                self.transport.send(datagrams)
            self._apply_events()
            deadline = peer.next_deadline()
            if deadline is None or deadline > now:
                break
        if self._timer:
            self._timer.cancel()
        if deadline is not None:
            assert self._loop is not None
            self._timer = self._loop.call_at(max(deadline, now + 0.0005), self._service)

    def _apply_events(self) -> None:
        installs: list[tuple[bytes, bool]] = []
        deletes: list[bytes] = []
        while (event := self.peer.next_event()) is not None:
            if event.__class__ is StateReceived:
                installs.append(event)  # already the (record, known) pair
            elif isinstance(event, StateDeleted):
                deletes.append(event.key)
            else:
                if installs or deletes:  # keep the kernel in step before reporting
                    self._write_kernel(installs, deletes)
                    installs, deletes = [], []
                self._report(event)
        self._write_kernel(installs, deletes)

    def _write_kernel(self, installs: list[tuple[bytes, bool]], deletes: list[bytes]) -> None:
        if installs:
            self.kernel.install(installs)
        if deletes:
            self.kernel.delete(deletes)

    def _report(self, event: object) -> None:
        if isinstance(event, BulkUpdateComplete):
            verdict = "complete" if event.succeeded else "given up after the last try"
            self.log(f"bulk update {verdict}: {event.states} states")
            self.write_status()
            if self.on_bulk_complete:
                self.on_bulk_complete(event)
        elif isinstance(event, BulkUpdateStarted):
            self.log(f"bulk update from {event.node:08x} started")
        elif isinstance(event, PeerRestarted):
            self.log(f"peer {event.node:08x} restarted (epoch {event.epoch})")

    def status(self) -> dict:
        data = self.peer.status(self._now())
        data.update({
            "time": time.time(), "pid": os.getpid(), "device": self.transport.dev,
            "destination": self.transport.destination, "mark_mask": self.intake.mark_mask,
            "sched": str(sched.current()),
            "intake": dict(self.counters, kernel_overruns=self.intake.overruns),
            "refresh": dict(self.refresher.status(), interval=self.refresh),
            "kernel": dict(self.kernel.counters, last_error=self.kernel.last_error),
            "transport": {"send_errors": self.transport.send_errors, "bad_ttl": self.transport.bad_ttl,
                          "wrong_source": self.transport.wrong_source},
        })
        return data

    def write_status(self) -> None:
        if self.status_path is None:
            return
        self.status_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.status_path.with_name(self.status_path.name + ".tmp")
        tmp.write_text(json.dumps(self.status(), indent=1, sort_keys=True))
        tmp.replace(self.status_path)

    async def _write_status_forever(self) -> None:
        while True:
            self.write_status()
            await asyncio.sleep(STATUS_INTERVAL)
