"""overload <t> flush [global] without a kernel: the event contract between the compiled rule
and the flusher, and which conntrack flows an event dooms (pf_overload_task's choice)."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.conf import InterfaceView, parse_text
from pfha.nft.compile import A_SHIFT, B_SHIFT, SIDE_A, SIDE_B, compile_ruleset
from pfha.nft.overload import (
    AF_INET,
    AF_INET6,
    OVERLOAD_GROUP,
    OverloadError,
    OverloadEvent,
    OverloadPrefix,
    coalesce,
    doomed,
    doomed_sides,
    event_from_packet,
    kills,
)
from pfha.nft.states import Flow, Tuple

BAD, GOOD, SERVER, GW = "198.51.100.7", "198.51.100.8", "192.168.1.80", "203.0.113.10"


def ipv4(src: str, dst: str) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, ipaddress.IPv4Address(src).packed,
                       ipaddress.IPv4Address(dst).packed) + bytes(20)


def ipv6(src: str, dst: str) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, 20, 6, 64, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + bytes(20)


def event(address: str = BAD, rule_id: int = 5, direction: str = "in", scope: str = "rule") -> OverloadEvent:
    return OverloadEvent(ipaddress.ip_address(address), rule_id, direction, scope, rule_id - 1)


def inbound(src: str = BAD, sport: int = 40000, rule_a: int = 5, rule_b: int = 9, sides: int = SIDE_A | SIDE_B) -> Flow:
    """src -> the firewall's 203.0.113.10:22, redirected to the server (in-state A, out-state B)."""
    return Flow(4, 6, Tuple(src, GW, sport, 22), Tuple(SERVER, src, 22, sport),
                mark=sides | (rule_a << A_SHIFT) | (rule_b << B_SHIFT))


def outbound(dst: str = BAD, rule_a: int = 7, rule_b: int = 9) -> Flow:
    """The server to dst, NATed to the gateway address: in-state A on the inside, out-state B."""
    return Flow(4, 6, Tuple(SERVER, dst, 5555, 80), Tuple(dst, GW, 80, 62001),
                mark=SIDE_A | SIDE_B | (rule_a << A_SHIFT) | (rule_b << B_SHIFT))


# -- the prefix the compiled rule logs with, and the event the flusher reads back

def test_prefix_round_trip_and_foreign_prefixes_refused():
    prefix = OverloadPrefix(4, "out", "global", 3)
    assert OverloadPrefix.decode(prefix.encode()) == prefix
    assert len(prefix.encode().encode()) < 128  # NF_LOG_PREFIXLEN
    for text in ("pf:3:-1:0:1:0:0:", "pf-overload:4:sideways:rule:3", "pf-overload:x:in:rule:3", "pf-overload:4:in:all:3", ""):
        with pytest.raises(OverloadError):
            OverloadPrefix.decode(text)


def test_event_from_logged_packets_of_both_families():
    text = OverloadPrefix(5, "in", "rule", 4).encode()
    assert event_from_packet(AF_INET, text, ipv4(BAD, GW)) == event()
    six = event_from_packet(AF_INET6, OverloadPrefix(2, "out", "global", 1).encode(), ipv6("2001:db8::7", "2001:db8::1"))
    assert (six.address, six.family, six.direction, six.scope) == (ipaddress.ip_address("2001:db8::7"), 6, "out", "global")
    with pytest.raises(OverloadError):
        event_from_packet(AF_INET, text, ipv4(BAD, GW)[:12])
    with pytest.raises(OverloadError):
        event_from_packet(AF_INET6, text, ipv4(BAD, GW))


def test_coalesce_keeps_one_event_per_offender_and_rule():
    assert coalesce([event(), event(), event(GOOD), event()]) == [event(), event(GOOD)]


# -- which states an event kills

def test_flush_kills_the_offenders_states_of_the_rule_only():
    mine, other_rule, other_source = inbound(sport=1), inbound(sport=2, rule_a=6), inbound(GOOD, sport=3)
    assert doomed([event()], [mine, other_rule, other_source]) == [mine]
    assert doomed_sides([event()], mine) == "A"  # the in-state; the out-state is pass out's


def test_flush_global_kills_every_state_from_the_offender():
    flows = [inbound(sport=1), inbound(sport=2, rule_a=6), inbound(GOOD, sport=3)]
    assert doomed([event(scope="global")], flows) == flows[:2]


def test_an_in_event_compares_addr0_of_the_wire_key_so_out_states_to_the_offender_die_too():
    """pf keys an out-state (dst, src): with global, an in-event kills the out-state of a
    connection from inside to the offender, but not its in-state (whose addr[0] is the inside host)."""
    flow = outbound()
    assert doomed_sides([event(scope="global")], flow) == "B"
    assert doomed_sides([event(rule_id=9)], flow) == "B"  # rule 9 made the out-state
    assert doomed_sides([event(rule_id=7)], flow) == ""  # rule 7's in-state is from the server


def test_an_out_event_compares_addr1_the_post_nat_source():
    """Overload on an out-pass: the source pf saw there is the translated one."""
    flow = outbound(dst=BAD)
    assert doomed_sides([event(GW, rule_id=9, direction="out")], flow) == "B"
    assert doomed_sides([event(SERVER, rule_id=9, direction="out")], flow) == ""
    # an in-state *to* the offender (addr[1] = dst) dies on an out-event too
    assert doomed_sides([event(GW, rule_id=5, direction="out")], inbound()) == "A"


def test_flows_without_a_pf_state_or_of_another_family_are_left_alone():
    stateless = inbound(sides=0)
    v6 = Flow(6, 6, Tuple("2001:db8::7", "2001:db8::1", 1, 22), Tuple("2001:db8::1", "2001:db8::7", 22, 1),
              mark=SIDE_A | (5 << A_SHIFT))
    assert doomed([event(scope="global")], [stateless, v6]) == []
    assert doomed([event("2001:db8::7", scope="global")], [stateless, v6]) == [v6]
    assert doomed([], [inbound()]) == []


def test_a_rule_past_the_mark_never_matches_a_state_without_global():
    unnumbered = inbound(rule_a=0)
    assert doomed([event(rule_id=0)], [unnumbered]) == []
    assert doomed([event(rule_id=0, scope="global")], [unnumbered]) == [unnumbered]


flow_strategy = st.builds(
    lambda src, sport, rule_a, rule_b, sides: inbound(src, sport, rule_a, rule_b, sides),
    st.sampled_from([BAD, GOOD, SERVER]), st.integers(1, 65535), st.integers(0, 8), st.integers(0, 8),
    st.sampled_from([0, SIDE_A, SIDE_B, SIDE_A | SIDE_B]))
event_strategy = st.builds(event, st.sampled_from([BAD, GOOD, SERVER, GW]), st.integers(0, 8), st.sampled_from(["in", "out"]),
                           st.sampled_from(["rule", "global"]))


@settings(max_examples=200, deadline=None)
@given(st.lists(event_strategy, max_size=4), st.lists(flow_strategy, max_size=12))
def test_events_doom_the_union_of_what_each_dooms_and_global_covers_rule(events, flows):
    together = doomed(events, flows)
    assert together == [f for f in flows if any(f in doomed([e], flows) for e in events)]
    # the index is only a faster way to the same answer as testing every (state, event) pair
    brute = [f for f in flows if any(f.has_side(side) and kills(e, f, side, rule)
                                     for e in events for side, rule in zip("AB", f.rule_ids()))]
    assert together == brute
    for e in events:
        widened = OverloadEvent(e.address, e.rule_id, e.direction, "global", e.rulenr)
        assert all(f in doomed([widened], flows) for f in doomed([e], flows))


# -- the compiled branch

RULES = """table <bad> persist
block quick from <bad>
pass in on a0 proto tcp to port 22 keep state (max-src-conn 2, overload <bad> flush global)
pass in on a0 proto tcp to port 23 keep state (max-src-conn-rate 3/5, overload <bad> flush)
pass in on a0 proto tcp to port 24 keep state (max-src-conn 2, overload <bad>)
"""


def compiled():
    view = InterfaceView.from_specs(["a0=192.0.2.1/24"])
    return compile_ruleset(parse_text(RULES, interfaces=view), view)


def test_the_overload_branch_logs_flush_events_to_the_overload_group():
    result = compiled()
    logs = [e["log"] for c in result.commands if "rule" in c.get("add", {}) for e in c["add"]["rule"]["expr"] if "log" in e]
    prefixes = sorted({(OverloadPrefix.decode(entry["prefix"]), entry["group"]) for entry in logs}, key=str)
    assert prefixes == sorted({(OverloadPrefix(2, "in", "global", 1), OVERLOAD_GROUP),
                               (OverloadPrefix(3, "in", "rule", 2), OVERLOAD_GROUP)}, key=str)
    assert len(logs) == 4  # one per family for each flushing rule; none for overload without flush
    rules = result.metadata["overload_flush"]["rules"]
    assert sorted((r["rule"], r["scope"]) for r in rules) == [(1, "global"), (2, "rule")]
    assert not any("flush" in str(w) for w in result.warnings)


def test_a_ruleset_without_flush_has_no_overload_metadata():
    view = InterfaceView.from_specs(["a0=192.0.2.1/24"])
    text = RULES.splitlines()
    plain = compile_ruleset(parse_text("\n".join(text[:2] + text[4:]) + "\n", interfaces=view), view)
    assert "overload_flush" not in plain.metadata


# -- the adapter's pure pieces: the kernel-filtered dump request, records read back as flows

def test_filtered_dump_request_names_one_address_of_one_tuple():
    import socket

    from pfha.sync import conntrack as ct
    from pfha.pflog.nflog import attributes

    message = ct.dump_request_with(7, socket.AF_INET, ct.CTA_TUPLE_REPLY, "dst", ipaddress.ip_address(BAD).packed)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", message)
    assert (length, kind, flags & ct.NLM_F_DUMP, seq, message[16]) == (len(message), 1 << 8 | 1, ct.NLM_F_DUMP, 7, socket.AF_INET)
    top = attributes(message[20:])
    ip = attributes(attributes(top[ct.CTA_TUPLE_REPLY])[ct.CTA_TUPLE_IP])
    assert ip == {ct.CTA_IP_V4_DST: ipaddress.ip_address(BAD).packed}
    assert attributes(top[ct.CTA_FILTER]) == {ct.CTA_FILTER_REPLY_FLAGS: struct.pack("=I", ct.CTA_FILTER_F_IP_DST)}


def test_records_from_the_raw_dump_read_back_as_flows():
    from pfha.nft.overload_linux import flow_from_record
    from pfha.sync import wire

    record = wire.State(wire.AF_INET, 6, wire.Tuple(BAD, GW, 40000, 22), wire.Tuple(SERVER, BAD, 22, 40000),
                        status=0xE, mark=SIDE_A | (5 << A_SHIFT)).pack()
    flow = flow_from_record(record)
    assert flow == dataclasses.replace(inbound(sides=SIDE_A, rule_b=0), status=0xE)
    assert doomed([event()], [flow]) == [flow]
