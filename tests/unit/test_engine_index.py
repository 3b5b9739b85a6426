"""The rule index changes speed, never results: indexed and linear evaluation agree packet by packet."""

from __future__ import annotations

import functools
import random

from hypothesis import given, settings, strategies as st

from pfha.conf import InterfaceView, parse_text
from pfha.engine import Engine
from pfha.engine import packet as P

VIEW = InterfaceView.from_specs(["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "lo0=127.0.0.1/8",
                                  "carp0=203.0.113.10/24,203.0.113.11/24,2001:db8::10/64"])


@functools.lru_cache(maxsize=None)
def generated_ruleset(n: int):
    return parse_text(generated_conf(n), "gen.conf", VIEW)


def generated_conf(n: int, seed: int = 3) -> str:
    rng = random.Random(seed)
    lines = ["table <bad> { 10.66.0.0/16 !10.66.6.0/24 }", "block log all",
             "nat on xl0 from 192.168.1.0/24 to any -> (xl0)",
             "rdr on xl0 proto tcp from any to 203.0.113.2 port 8080 -> 192.168.1.80 port 80"]
    for i in range(n):
        kind = rng.randrange(8)
        q = "quick " if rng.random() < 0.5 else ""
        act = rng.choice(["pass", "block"])
        if kind == 0:
            lines.append(f"{act} in {q}on xl0 inet proto tcp from any to 10.{i % 7}.{rng.randrange(4)}.{rng.randrange(4)} port {rng.randrange(20, 30)}")
        elif kind == 1:
            lines.append(f"{act} in {q}on xl0 inet from 172.16.{rng.randrange(4)}.0/24 to any")
        elif kind == 2:
            lines.append(f"{act} out {q}on xl1 inet proto udp from any to 192.168.1.{rng.randrange(8)} port {rng.randrange(50, 55)}")
        elif kind == 3:
            lines.append(f"{act} in {q}inet proto tcp from <bad> to any port {rng.randrange(20, 25)}")
        elif kind == 4:
            lines.append(f"{act} {q}on xl0 inet proto icmp all icmp-type {rng.choice(['echoreq', 'echorep', 'unreach'])}")
        elif kind == 5:
            lines.append(f"{act} {q}inet proto tcp from any port {rng.randrange(1000, 1004)} to 10.{i % 7}.0.0/16")
        elif kind == 6:  # multi-prefix destination: filed under each of carp0's addresses
            lines.append(f"{act} in {q}on xl0 to (carp0)")
        else:  # multi-prefix source
            lines.append(f"{act} out {q}on {rng.choice(['xl0', 'xl1'])} from (carp0) to any")
    return "\n".join(lines) + "\n"


ADDRS = ["203.0.113.10", "203.0.113.11", "10.0.1.1", "10.1.2.3", "10.66.1.1", "10.66.6.6", "172.16.1.5", "192.168.1.3", "203.0.113.2", "198.51.100.7"]

packets = st.builds(
    lambda kind, s, d, sp, dp, fl: (
        P.tcp(s, sp, d, dp, fl) if kind == 0 else P.udp(s, sp, d, dp) if kind == 1
        else P.icmp(s, d, [8, 0, 3][sp % 3], 0, ident=sp)),
    st.integers(0, 2), st.sampled_from(ADDRS), st.sampled_from(ADDRS),
    st.integers(1000, 1004) | st.integers(20, 30), st.integers(20, 30) | st.sampled_from([53, 54, 8080]),
    st.sampled_from(["S", "SA", "A", "R"]))


@settings(max_examples=40, deadline=None)
@given(batch=st.lists(st.tuples(packets, st.sampled_from(["xl0", "xl1"]), st.sampled_from(["in", "out"])),
                      min_size=1, max_size=25))
def test_indexed_and_linear_evaluation_agree(batch):
    ruleset = generated_ruleset(120)
    fast, slow = Engine(ruleset, VIEW, seed=9), Engine(ruleset, VIEW, seed=9, indexed=False)
    for now, (packet, ifname, direction) in enumerate(batch):
        a = fast.process(packet.copy(), ifname, direction, float(now))
        b = slow.process(packet.copy(), ifname, direction, float(now))
        assert (a.action, a.reason, a.rule_number, a.state, a.log) == (b.action, b.reason, b.rule_number, b.state, b.log)
        assert a.packet.to_bytes() == b.packet.to_bytes()
    fast_packets = [r.counters.packets for r in fast.rules()]
    assert fast_packets == [r.counters.packets for r in slow.rules()]
    assert sum(r.counters.evaluations for r in fast.rules()) <= sum(r.counters.evaluations for r in slow.rules())


def test_multi_prefix_rules_are_only_candidates_for_their_addresses():
    """``to (carp0)`` stands for three prefixes: the index files the rule under each, so packets
    to other addresses never look at it, and a packet to one of them sees it once."""
    conf = "block all\npass in on xl0 proto tcp to (carp0)\npass in on xl0 proto tcp from (carp0:network)\n"
    engine = Engine(parse_text(conf, "multi.conf", VIEW), VIEW)
    to_carp, from_net = engine.rules()[1], engine.rules()[2]
    d = engine.process(P.tcp("198.51.100.7", 1000, "10.0.0.1", 80, "S"), "xl0", "in", 0.0)
    assert d.action == "block" and to_carp.counters.evaluations == 0 and from_net.counters.evaluations == 0
    d = engine.process(P.tcp("198.51.100.7", 1001, "203.0.113.11", 80, "S"), "xl0", "in", 0.0)
    assert d.action == "pass" and d.rule_number == 1 and to_carp.counters.evaluations == 1
    d = engine.process(P.tcp("203.0.113.99", 1002, "203.0.113.10", 80, "S"), "xl0", "in", 0.0)
    assert d.rule_number == 2 and to_carp.counters.evaluations == 2 and from_net.counters.evaluations == 1
    d = engine.process(P.tcp("2001:db8::99", 1003, "2001:db8::10", 80, "S"), "xl0", "in", 0.0)
    assert d.rule_number == 2 and to_carp.counters.evaluations == 3
