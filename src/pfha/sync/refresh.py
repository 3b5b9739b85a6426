"""Which states to send again so that the peer's copies live as long as the flows do.

conntrack reports a connection's creation, its state changes and its end, but not the packets
that merely push its expiry back. A UDP flow, an ICMP exchange, or a TCP connection under a
short ``tcp.established`` would therefore expire on the backup while it is alive on the master,
and a failover would lose it: pfsync avoids this by sending updates as packets move states. The
refresh sweep does the same at a coarser grain: every few seconds the runner reads the kernel
table with conntrack's packet counters, and this module picks the entries whose counters moved
since the last sweep, i.e. the flows this node is carrying. They are sent as ordinary updates
with their current timeout, which the peer writes into its copy.

Counting packets, not looking at roles, is what keeps the two nodes from refreshing each
other's copies with stale timeouts: a copy installed from the peer carries no traffic on the
backup, so its counters stay still and it is never sent back; after a failover the new master
forwards those flows, their counters move, and it refreshes them to the other node in turn.

Pure: no sockets, no clock; the runner passes the dumped entries in.
"""

from __future__ import annotations

from pfha.sync import wire


class Refresher:
    """Remembers each state's packet count from one sweep to the next.

    A sweep is :meth:`begin`, :meth:`moved` for every entry of the dump (identity, packets),
    then :meth:`end` with the records of the entries that moved: the kernel adapter parses only
    those (``KernelTable.dump_activity``)."""

    def __init__(self) -> None:
        self._packets: dict[bytes, int] = {}
        self._current: dict[bytes, int] = {}
        self._missing = 0
        self.sweeps = 0
        self.sent = 0
        self.without_counters = 0  # entries the kernel listed without counters (accounting off)
        self.interval = 0.0  # the runner's current spacing of sweeps (it stretches for big tables)

    def begin(self) -> None:
        self._current, self._missing = {}, 0

    def moved(self, ident: bytes, packets: int | None) -> bool:
        """Whether the flow carried packets since the previous sweep (on the first sweep: at
        all, what it carried before is unknown); entries without counters never count."""
        if packets is None:
            self._missing += 1
            return False
        self._current[ident] = packets
        return packets > self._packets.get(ident, 0)

    def end(self, records: list[bytes]) -> list[bytes]:
        """Close the sweep: entries not listed are forgotten; returns the records to send (the
        sync link's own flow is never one)."""
        chosen = [record for record in records if record[1] != wire.IPPROTO_PFSYNC]
        self._packets = self._current
        self._current = {}
        self.sweeps += 1
        self.sent += len(chosen)
        self.without_counters = self._missing
        return chosen

    def status(self) -> dict:
        return {"sweeps": self.sweeps, "sent": self.sent, "tracked": len(self._packets),
                "without_counters": self.without_counters, "spacing": round(self.interval, 3)}


__all__ = ["Refresher"]
