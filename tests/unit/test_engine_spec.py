"""Packet lines written like rules (``pfha test``), and conversations that fill sequence numbers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pfha.engine import packet as P
from pfha.engine.spec import Conversation, SpecError, parse_packet


def test_tcp_line_with_every_word():
    spec = parse_packet("in on xl0 inet proto tcp from 198.51.100.9 port 40000 to 203.0.113.11 port www "
                        "flags SA seq 5 ack 6 win 100 len 10 mss 1400 wscale 3 ttl 9 at 2.5 tagged LAN")
    p = spec.packet
    assert (spec.direction, spec.ifname, spec.at, spec.seq_given, spec.ack_given) == ("in", "xl0", 2.5, True, True)
    assert (p.sport, p.dport, p.flags, p.seq, p.ack, p.win, len(p.payload), p.ttl, p.tag) == (
        40000, 80, P.TH_SYN | P.TH_ACK, 5, 6, 100, 10, 9, "LAN")
    assert p.mss() == 1400 and p.wscale() == 3


def test_icmp_error_quotes_a_packet_and_v6_words():
    spec = parse_packet("in on xl0 proto icmp from 198.51.100.1 to 203.0.113.2 icmp-type unreach code needfrag "
                        "quote proto udp from 203.0.113.2 port 50001 to 198.51.100.1 port 53")
    p = P.Packet.parse(spec.packet.to_bytes())
    assert (p.icmp_type, p.icmp_code, p.inner.sport, p.inner.dport) == (3, 4, 50001, 53)
    v6 = parse_packet("out on xl0 from 2001:db8::1 to 2001:db8::2 icmp6-type echoreq id 7").packet
    assert (v6.proto, v6.icmp_type, v6.icmp_id) == (58, 128, 7)
    carp = parse_packet("in on rl0 proto carp from 10.10.10.251 to 224.0.0.18").packet
    assert carp.proto == 112
    frag = parse_packet("in on xl0 proto udp from 1.1.1.1 to 2.2.2.2 fragment ip-options").packet
    assert frag.frag_offset and frag.ip_options


@pytest.mark.parametrize("line,message", [
    ("on xl0 proto tcp from 1.1.1.1 to 2.2.2.2", "'in' or 'out'"),
    ("in on xl0 proto tcp from 1.1.1.1", "'from ADDR' and 'to ADDR'"),
    ("in on xl0 proto bogus from 1.1.1.1 to 2.2.2.2", "unknown protocol"),
    ("in on xl0 from 1.1.1.1 to 2001:db8::1 proto udp", "disagree"),
    ("in on xl0 from 1.1.1.1 to 2.2.2.2", "say which protocol"),
    ("in on xl0 proto tcp from 1.1.1.1 to 2.2.2.2 seq x", "not a number"),
    ("in on xl0 proto icmp from 1.1.1.1 to 2.2.2.2 icmp-type nosuch", "unknown icmp type"),
    ("in on xl0 proto tcp from 1.1.1.1 to 2.2.2.2 banana", "unexpected word"),
    ("in on xl0 proto tcp from 1.1.1.1 to 2.2.2.2 port 99999", "port 99999 is out of range"),
    ("in on xl0 proto 256 from 1.1.1.1 to 2.2.2.2", "proto 256 is out of range"),
    ("in on xl0 proto tcp from 1.1.1.1 to 2.2.2.2 seq 4294967296", "seq .* out of range"),
    ("in on xl0 proto tcp from 1.1.1.1 to 2.2.2.2 ttl -1", "ttl -1 is out of range"),
    ("in on xl0 proto tcp from 1.1.1.1 to 2.2.2.2 wscale 15", "wscale 15 is out of range"),
    ("in on xl0 proto icmp from 1.1.1.1 to 2.2.2.2 icmp-type 256", "icmp type 256 is out of range"),
    ("in on xl0 proto udp from 1.1.1.1 to 2.2.2.2 len 65535", "packet too long"),
    ("in on xl0 proto icmp from 1.1.1.1 to 2.2.2.2 icmp-type unreach quote proto udp from 2.2.2.2 "
     "to 1.1.1.1 len 65530", "packet too long"),
])
def test_bad_lines_name_the_problem(line, message):
    with pytest.raises(SpecError, match=message):
        parse_packet(line)


def test_conversation_fills_sequence_numbers_from_what_it_saw():
    talk = Conversation()
    syn = parse_packet("in on xl0 proto tcp from 10.0.0.1 port 1 to 10.0.0.2 port 2 flags S len 0")
    talk.fill(syn)
    talk.record(syn.packet)
    assert syn.packet.seq == Conversation.ISN
    synack = parse_packet("out on xl0 proto tcp from 10.0.0.2 port 2 to 10.0.0.1 port 1 flags SA seq 7000")
    talk.fill(synack)
    talk.record(synack.packet)
    assert synack.packet.ack == Conversation.ISN + 1
    data = parse_packet("in on xl0 proto tcp from 10.0.0.1 port 1 to 10.0.0.2 port 2 flags PA len 5")
    talk.fill(data)
    talk.record(data.packet)
    assert (data.packet.seq, data.packet.ack) == (Conversation.ISN + 1, 7001)
    ack = parse_packet("out on xl0 proto tcp from 10.0.0.2 port 2 to 10.0.0.1 port 1 flags A")
    talk.fill(ack)
    assert ack.packet.ack == Conversation.ISN + 6
    assert talk.now == pytest.approx(0.04)


NUMBERS = st.integers(min_value=-5, max_value=2**33)


@settings(max_examples=300, deadline=None)
@given(
    proto=st.sampled_from(["tcp", "udp", "icmp", "6", "17", "300"]),
    port=st.one_of(st.none(), NUMBERS),
    words=st.lists(st.tuples(st.sampled_from(["seq", "ack", "win", "len", "mss", "wscale", "ttl", "id"]), NUMBERS),
                   max_size=4),
)
def test_any_numbers_give_a_packet_or_a_spec_error(proto, port, words):
    """Numbers a user may type never reach the wire encoder unchecked (it raised struct.error)."""
    to_port = f" port {port}" if port is not None else ""
    extra = "".join(f" {word} {number}" for word, number in words)
    try:
        spec = parse_packet(f"in on xl0 proto {proto} from 1.1.1.1 to 2.2.2.2{to_port}{extra}")
    except SpecError:
        return
    assert len(spec.packet.to_bytes()) <= 65535
