"""Deterministic simulation: several CARP nodes, shared segments, one virtual clock, faults.

Each node is a real :class:`pfha.carp.machine.Node`; the "network" delivers every advert a node
sends to the other nodes on the same segment after a small delay, unless the sender's or the
receiver's link is down, the sender has crashed, or a seeded loss drops it. Seconds of protocol
time run in milliseconds of wall time, so the invariants can be checked over many seeds.
"""

from __future__ import annotations

import heapq
import ipaddress
import itertools
import random

import pytest

from pfha.carp import wire
from pfha.carp.machine import Node, SendAdvert, State, StateChanged, VhidConfig

KEY = wire.carp_key("simpass")


class Net:
    def __init__(self, seed: int = 0, delay: float = 0.0005, loss: float = 0.0) -> None:
        self.now = 0.0
        self.rng = random.Random(seed)
        self.delay, self.loss = delay, loss
        self.nodes: dict[str, Node] = {}
        self.addr: dict[str, ipaddress.IPv4Address] = {}
        self.crashed: set[str] = set()
        self.link_down: set[tuple[str, str]] = set()
        self.queue: list = []
        self.seq = itertools.count()
        self.wake_gen: dict[str, int] = {}
        self.changes: list[tuple[float, str, StateChanged]] = []
        self.sent: list[tuple[float, str, SendAdvert]] = []

    def add(self, name: str, configs: list[VhidConfig], addr: str) -> Node:
        node = Node(configs, rng=random.Random(self.rng.random()))
        self.nodes[name], self.addr[name] = node, ipaddress.IPv4Address(addr)
        return node

    def at(self, when: float, fn) -> None:
        heapq.heappush(self.queue, (when, next(self.seq), fn))

    def start(self, name: str, when: float | None = None) -> None:
        def go():
            self.crashed.discard(name)
            self.nodes[name].start(self.now)
            self.settle(name)
        self.at(self.now if when is None else when, go)

    def settle(self, name: str) -> None:
        node = self.nodes[name]
        for action in node.actions():
            if isinstance(action, StateChanged):
                self.changes.append((self.now, name, action))
            elif isinstance(action, SendAdvert):
                self.sent.append((self.now, name, action))
                self.deliver(name, action)
        deadline = node.next_deadline()
        gen = self.wake_gen[name] = self.wake_gen.get(name, 0) + 1
        if deadline is not None and name not in self.crashed:
            def wake(gen=gen):
                if self.wake_gen[name] == gen and name not in self.crashed:
                    node.handle_timer(self.now)
                    self.settle(name)
            self.at(max(deadline, self.now), wake)

    def deliver(self, sender: str, action: SendAdvert) -> None:
        if (sender, action.interface) in self.link_down:
            return
        for name, node in self.nodes.items():
            if name == sender or self.rng.random() < self.loss:
                continue
            def arrive(name=name, node=node):
                if name in self.crashed or (name, action.interface) in self.link_down:
                    return
                node.receive(action.interface, action.payload, self.now, source=self.addr[sender])
                self.settle(name)
            self.at(self.now + self.delay, arrive)

    def crash(self, name: str) -> None:
        self.crashed.add(name)

    def stop(self, name: str) -> None:
        self.nodes[name].shutdown(self.now)
        self.settle(name)
        self.crashed.add(name)

    def set_link(self, name: str, iface: str, up: bool) -> None:
        (self.link_down.discard if up else self.link_down.add)((name, iface))
        self.nodes[name].set_link(iface, up, self.now)
        self.settle(name)

    def run(self, until: float) -> None:
        while self.queue and self.queue[0][0] <= until:
            self.now, _, fn = heapq.heappop(self.queue)
            fn()
        self.now = until

    def masters(self, iface: str, vhid: int) -> list[str]:
        return [n for n, node in self.nodes.items() if n not in self.crashed and node.groups[(iface, vhid)].state is State.MASTER]


def pair(advbase=1, skews=(0, 100), preempt=True, vhids=(1, 2, 3), seed=0, loss=0.0):
    net = Net(seed=seed, loss=loss)
    for name, skew, addr in (("a", skews[0], "10.0.0.1"), ("b", skews[1], "10.0.0.2")):
        cfgs = []
        for vhid in vhids:
            iface = "eth0" if vhid % 2 else "eth1"
            addrs = (ipaddress.IPv4Interface(f"10.0.{vhid}.100/24"), ipaddress.IPv4Interface(f"10.0.{vhid}.101/24"))
            cfgs.append(VhidConfig(vhid, iface, addrs, KEY, advbase, skew, preempt, ipaddress.IPv4Address(addr)))
        net.add(name, cfgs, addr)
    return net


def all_masters(net, vhids=(1, 2, 3)):
    return {v: net.masters("eth0" if v % 2 else "eth1", v) for v in vhids}


def takeover_time(net, name, after):
    return min(t for t, n, c in net.changes if n == name and c.new is State.MASTER and t >= after)


def test_election_one_master_per_vhid_and_preempt_by_advskew():
    net = pair()
    net.start("b")
    net.run(10)
    assert all_masters(net) == {1: ["b"], 2: ["b"], 3: ["b"]}
    net.start("a")
    net.run(15)
    assert all_masters(net) == {1: ["a"], 2: ["a"], 3: ["a"]}
    reasons = [c.reason for t, n, c in net.changes if n == "a" and c.new is State.MASTER]
    assert all("preempting slower master 10.0.0.2" in r for r in reasons)


def test_crash_fails_over_after_master_down_of_the_last_advert():
    net = pair()
    net.start("a"), net.start("b")
    net.run(10)
    net.crash("a")
    last = max(t for t, n, s in net.sent if n == "a")
    net.run(20)
    assert all_masters(net) == {1: ["b"], 2: ["b"], 3: ["b"]}
    gap = takeover_time(net, "b", 10) - last
    assert gap == pytest.approx(3 + 100 / 256, abs=0.002)


def test_orderly_stop_hands_over_at_once():
    net = pair()
    net.start("a"), net.start("b")
    net.run(10)
    net.stop("a")
    net.run(11)
    assert all_masters(net)[1] == ["b"]
    assert takeover_time(net, "b", 10) - 10 < 0.002  # one network delay


def test_link_down_on_one_parent_moves_every_group_and_back():
    net = pair()
    net.start("a"), net.start("b")
    net.run(10)
    net.set_link("a", "eth0", False)
    net.run(10.1)
    # vhid 2 lives on eth1, whose link is fine: it moves at once on the demoted advert.
    assert all_masters(net) == {1: [], 2: ["b"], 3: []}
    net.run(10 + 3.5)  # the groups on the dead link go quiet: the peer's master-down expires
    assert all_masters(net) == {1: ["b"], 2: ["b"], 3: ["b"]}
    net.set_link("a", "eth0", True)
    net.run(16)
    assert all_masters(net) == {1: ["a"], 2: ["a"], 3: ["a"]}


def test_subsecond_timers():
    net = pair(advbase=0, skews=(26, 27))
    net.start("a"), net.start("b")
    net.run(3)
    assert all_masters(net)[1] == ["a"]
    net.crash("a")
    last = max(t for t, n, s in net.sent if n == "a")
    net.run(5)
    assert takeover_time(net, "b", 3) - last == pytest.approx(3 * 27 / 256, abs=0.002)


@pytest.mark.parametrize("seed", range(25))
def test_random_faults_converge_to_one_master(seed):
    rng = random.Random(seed)
    net = pair(seed=seed, loss=0.05, preempt=rng.random() < 0.5, skews=rng.choice([(0, 100), (0, 0), (50, 20)]))
    net.start("a", rng.uniform(0, 2)), net.start("b", rng.uniform(0, 2))
    t = 3.0
    for _ in range(6):
        t += rng.uniform(1, 6)
        net.run(t)
        fault = rng.choice(["crash", "stop", "link", "none"])
        victim = rng.choice(["a", "b"])
        if fault == "crash" and victim not in net.crashed:
            net.crash(victim)
            net.start(victim, t + rng.uniform(1, 4))
        elif fault == "stop" and victim not in net.crashed:
            net.stop(victim)
            net.start(victim, t + rng.uniform(1, 4))
        elif fault == "link" and victim not in net.crashed:
            net.set_link(victim, "eth0", False)
            net.at(t + rng.uniform(0.5, 3), lambda v=victim: net.set_link(v, "eth0", True))
    net.loss = 0.0
    net.run(t + 20)  # quiet network: must converge
    for vhid, masters in all_masters(net).items():
        assert len(masters) == 1, (seed, vhid, masters)
