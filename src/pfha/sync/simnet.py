"""A deterministic in-process sync link for tests and the simulator: two or more :class:`Peer`
cores, a virtual clock, and a seeded network that loses, delays, reorders and duplicates.

Pure: the only randomness is the ``random.Random(seed)`` it is given, the only clock its own.
It also plays the kernel adapter's part: ``kernel[node]`` is the table the events built.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from pfha.sync import wire
from pfha.sync.peer import BulkUpdateComplete, Config, Peer, StateDeleted, StateReceived

KEYRING = wire.Keyring({1: b"0123456789abcdef0123456789abcdef"})


def make_state(i: int, *, tcp_state: int = 3, mark: int = 0x101, port: int = 443) -> bytes:
    """A packed established-TCP state, distinct for every ``i``."""
    src = f"10.{1 + (i >> 16) % 200}.{(i >> 8) & 255}.{i & 255}"
    state = wire.State(wire.AF_INET, wire.IPPROTO_TCP, wire.Tuple(src, "10.0.2.100", 10000 + i % 50000, port),
                       wire.Tuple("10.0.2.100", "10.0.2.1", port, 20000 + i % 40000), status=0x19E,
                       timeout=432000, mark=mark, tcp_state=tcp_state, wscale=(7, 7), tcp_flags=(3, 3))
    return state.pack()


@dataclass
class Link:
    loss: float = 0.0
    duplicate: float = 0.0
    delay: float = 0.0005
    jitter: float = 0.0  # uniform extra delay: reorders when larger than the gap between sends


@dataclass
class Node:
    peer: Peer
    kernel: dict[bytes, bytes] = field(default_factory=dict)
    events: list = field(default_factory=list)
    up: bool = True


class SimNet:
    """Nodes on one multicast segment; every datagram goes to every other live node."""

    def __init__(self, seed: int = 0, link: Link | None = None, now: float = 1000.0) -> None:
        self.rng = random.Random(seed)
        self.link = link or Link()
        self.now = now
        self.nodes: dict[int, Node] = {}
        self._queue: list[tuple[float, int, int, bytes]] = []
        self._order = 0
        self.tap: Callable[[int, bytes], None] | None = None  # sees every datagram sent

    def add(self, node_id: int, epoch: int | None = None, **config) -> Node:
        cfg = Config(node_id=node_id, keyring=KEYRING, **config)
        node = Node(Peer(cfg, epoch if epoch is not None else int(self.now * 1000) + node_id, self.now))
        self.nodes[node_id] = node
        return node

    def inject(self, to: int, data: bytes, at: float | None = None) -> None:
        """Deliver raw bytes to a node (forged, replayed or corrupted datagrams)."""
        self._order += 1
        heapq.heappush(self._queue, (self.now if at is None else at, self._order, to, data))

    def _transmit(self, sender: int, data: bytes) -> None:
        if self.tap:
            self.tap(sender, data)
        for node_id, node in self.nodes.items():
            if node_id == sender or not node.up:
                continue
            copies = 0 if self.rng.random() < self.link.loss else 1
            if copies and self.rng.random() < self.link.duplicate:
                copies = 2
            for _ in range(copies):
                at = self.now + self.link.delay + self.rng.random() * self.link.jitter
                self.inject(node_id, data, at)

    def _pump(self, node_id: int) -> None:
        node = self.nodes[node_id]
        for data in node.peer.datagrams_to_send(self.now):
            if node.up:
                self._transmit(node_id, data)
        while (event := node.peer.next_event()) is not None:
            node.events.append(event)
            if isinstance(event, StateReceived):
                node.kernel[wire.state_key(event.record)] = event.record
            elif isinstance(event, StateDeleted):
                node.kernel.pop(event.key, None)

    def run(self, duration: float) -> None:
        """Advance the clock by ``duration``, delivering datagrams and firing timers in order."""
        end = self.now + duration
        while True:
            for node_id in self.nodes:
                self._pump(node_id)
            deadlines = [n.peer.next_deadline() for n in self.nodes.values() if n.up]
            next_timer = min((d for d in deadlines if d is not None), default=end)
            next_packet = self._queue[0][0] if self._queue else end
            at = min(next_timer, next_packet, end)
            if at >= end and next_timer >= end and next_packet >= end:
                self.now = end
                break
            self.now = max(self.now, at)
            while self._queue and self._queue[0][0] <= self.now:
                _, _, to, data = heapq.heappop(self._queue)
                if self.nodes[to].up:
                    self.nodes[to].peer.receive(data, self.now)
                    self._pump(to)
            for node in self.nodes.values():
                deadline = node.peer.next_deadline()
                if node.up and deadline is not None and deadline <= self.now:
                    node.peer.handle_timer(self.now)
        for node_id in self.nodes:
            self._pump(node_id)

    def bulk_complete(self, node_id: int) -> list[BulkUpdateComplete]:
        return [e for e in self.nodes[node_id].events if isinstance(e, BulkUpdateComplete)]
