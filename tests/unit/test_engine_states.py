"""States: key orientation, floating / if-bound, TCP windows, pseudo-states, ICMP errors, timeouts,
modulate and synproxy - each as a worked packet sequence."""

from __future__ import annotations

from engine_ast import PRIMARY, rule, ruleset, trans, view

from pfha.conf import ast
from pfha.engine import Engine
from pfha.engine import packet as P
from pfha.engine.state import PF_TCPS_PROXY_DST, PF_TCPS_PROXY_SRC, TCPS_ESTABLISHED, TCPS_TIME_WAIT

C, S = "198.51.100.9", "203.0.113.2"


def engine(*filter_rules, translation=(), seed=1, **options):
    return Engine(ruleset(filter=[rule("block", 0), *filter_rules], translation=translation, **options),
                  view(**PRIMARY), seed=seed)


def handshake(e, now=0.0, ifname="xl0"):
    """A complete handshake C -> S:22 seen in on xl0 (requests) and out on xl0 (replies)."""
    d1 = e.process(P.tcp(C, 40000, S, 22, "S", seq=100), ifname, "in", now)
    d2 = e.process(P.tcp(S, 22, C, 40000, "SA", seq=900, ack=101), ifname, "out", now)
    d3 = e.process(P.tcp(C, 40000, S, 22, "A", seq=101, ack=901), ifname, "in", now)
    return d1, d2, d3


def test_pass_in_state_matches_replies_out_and_later_packets_in():
    e = engine(rule("pass", 1, "in", on="xl0", proto="tcp", dst=(S, 22)))
    d1, d2, d3 = handshake(e)
    assert (d1.action, d1.state, d1.rule_number) == ("pass", "created", 1)
    assert (d2.action, d2.state, d2.rule_number) == ("pass", "matched", 1)  # no rule allows out: the state does
    assert d3.state == "matched"
    state = d1.state_entry
    assert state.src.state == state.dst.state == TCPS_ESTABLISHED
    assert state.timeout == "tcp.established"
    assert len(e.states) == 1


def test_forwarded_connection_needs_a_state_per_interface():
    """pf-semantics.md §2.4: the in-state on xl1 does not let the packet out on xl0."""
    e = engine(rule("pass", 1, "in", on="xl1", proto="tcp"))
    d_in = e.process(P.tcp("192.168.1.5", 1234, C, 80, "S"), "xl1", "in", 0)
    d_out = e.process(P.tcp("192.168.1.5", 1234, C, 80, "S"), "xl0", "out", 0)
    assert d_in.action == "pass" and d_in.state == "created"
    assert d_out.action == "block" and d_out.rule_number == 0
    e2 = engine(rule("pass", 1, "in", on="xl1", proto="tcp"), rule("pass", 2, "out", on="xl0", proto="tcp"))
    e2.process(P.tcp("192.168.1.5", 1234, C, 80, "S"), "xl1", "in", 0)
    assert e2.process(P.tcp("192.168.1.5", 1234, C, 80, "S"), "xl0", "out", 0).state == "created"
    # the reply uses the out-state coming in on xl0 and the in-state going out on xl1
    reply = P.tcp(C, 80, "192.168.1.5", 1234, "SA", seq=5000, ack=1001)
    assert e2.process(reply, "xl0", "in", 0).rule_number == 2
    assert e2.process(reply, "xl1", "out", 0).rule_number == 1
    assert len(e2.states) == 2


def test_floating_state_matches_on_any_interface_if_bound_does_not():
    floating = engine(rule("pass", 1, "in", proto="udp"))
    floating.process(P.udp(C, 5000, S, 53), "xl0", "in", 0)
    assert floating.process(P.udp(S, 53, C, 5000), "xl1", "out", 0).state == "matched"
    bound = engine(rule("pass", 1, "in", proto="udp"), state_policy="if-bound")
    bound.process(P.udp(C, 5000, S, 53), "xl0", "in", 0)
    assert bound.process(P.udp(S, 53, C, 5000), "xl1", "out", 0).action == "block"
    assert bound.process(P.udp(S, 53, C, 5000), "xl0", "out", 0).state == "matched"
    per_rule = engine(rule("pass", 1, "in", proto="udp",
                           state=ast.StateSpec("keep", (ast.StateOption("if-bound"),))))
    per_rule.process(P.udp(C, 5000, S, 53), "xl0", "in", 0)
    assert per_rule.process(P.udp(S, 53, C, 5000), "xl1", "out", 0).action == "block"


def test_out_of_window_segment_is_a_state_mismatch_without_rule_evaluation():
    e = engine(rule("pass", 1, "in", on="xl0", proto="tcp", dst=(S, 22)))
    handshake(e)
    evaluations = sum(r.counters.evaluations for r in e.rules())
    far = P.tcp(C, 40000, S, 22, "A", seq=101 + 10_000_000, ack=901, payload=b"x" * 10)
    d = e.process(far, "xl0", "in", 1)
    assert (d.action, d.reason, d.state) == ("block", "state-mismatch", "matched")
    assert sum(r.counters.evaluations for r in e.rules()) == evaluations
    ok = P.tcp(C, 40000, S, 22, "PA", seq=101, ack=901, payload=b"x" * 10)
    assert e.process(ok, "xl0", "in", 1).action == "pass"


def test_rst_must_be_in_sequence():
    e = engine(rule("pass", 1, "in", on="xl0", proto="tcp", dst=(S, 22)))
    d1, _, _ = handshake(e)
    blind = P.tcp(C, 40000, S, 22, "R", seq=101 + 5000)
    assert e.process(blind, "xl0", "in", 1).reason == "state-mismatch"
    exact = P.tcp(C, 40000, S, 22, "R", seq=101)
    assert e.process(exact, "xl0", "in", 1).action == "pass"
    assert d1.state_entry.src.state == TCPS_TIME_WAIT


def test_close_moves_timeouts_and_a_new_syn_reuses_the_port():
    e = engine(rule("pass", 1, "in", on="xl0", proto="tcp", dst=(S, 22)))
    d1, _, _ = handshake(e)
    st = d1.state_entry
    e.process(P.tcp(C, 40000, S, 22, "FA", seq=101, ack=901), "xl0", "in", 1)
    assert st.timeout == "tcp.closing"
    e.process(P.tcp(S, 22, C, 40000, "FA", seq=901, ack=102), "xl0", "out", 1)
    assert st.timeout == "tcp.finwait"
    e.process(P.tcp(C, 40000, S, 22, "A", seq=102, ack=902), "xl0", "in", 1)
    assert st.timeout == "tcp.closed"
    again = e.process(P.tcp(C, 40000, S, 22, "S", seq=77777), "xl0", "in", 2)
    assert again.state == "created" and again.state_entry is not st


def test_timeouts_default_global_and_per_rule():
    e = engine(rule("pass", 1, "in", proto="udp"))
    d = e.process(P.udp(C, 5000, S, 53), "xl0", "in", 0)
    assert d.state_entry.timeout == "udp.first"
    assert e.process(P.udp(C, 5000, S, 53), "xl0", "in", 59).state == "matched"
    # udp.single is 30 s: the old state is gone, the rule makes a new one
    assert e.process(P.udp(C, 5000, S, 53), "xl0", "in", 59 + 31).state == "created"
    short = engine(rule("pass", 1, "out", proto="udp"), timeouts=(("udp.first", 5),))
    short.process(P.udp(S, 5000, C, 53), "xl0", "out", 0)
    assert short.process(P.udp(C, 53, S, 5000), "xl0", "in", 4).state == "matched"
    assert short.process(P.udp(C, 53, S, 5000), "xl0", "in", 4 + 31).action == "block"
    per_rule = engine(rule("pass", 1, "out", proto="udp",
                           state=ast.StateSpec("keep", (ast.StateOption("udp.first", 2),))))
    per_rule.process(P.udp(S, 5000, C, 53), "xl0", "out", 0)
    assert per_rule.process(P.udp(C, 53, S, 5000), "xl0", "in", 3).action == "block"
    assert per_rule.purge(10) == 0 and len(per_rule.states) == 0  # expired on lookup already


def test_purge_removes_expired_states_and_releases_rule_counts():
    e = engine(rule("pass", 1, "in", proto="udp"))
    e.process(P.udp(C, 5000, S, 53), "xl0", "in", 0)
    r = e.rules()[1]
    assert r.counters.states_cur == 1
    assert e.purge(61) == 1
    assert r.counters.states_cur == 0 and r.counters.states_tot == 1


def test_udp_single_then_multiple():
    e = engine(rule("pass", 1, "in", proto="udp"))
    d = e.process(P.udp(C, 5000, S, 53), "xl0", "in", 0)
    e.process(P.udp(S, 53, C, 5000), "xl0", "out", 1)
    assert d.state_entry.timeout == "udp.single"
    e.process(P.udp(C, 5000, S, 53), "xl0", "in", 2)
    assert d.state_entry.timeout == "udp.multiple"


def test_other_protocol_pseudo_state():
    e = engine(rule("pass", 1, "out", proto=47))
    d = e.process(P.other(S, C, 47, b"gre"), "xl0", "out", 0)
    assert d.state_entry.timeout == "other.first"
    assert e.process(P.other(C, S, 47, b"gre"), "xl0", "in", 1).state == "matched"


def test_icmp_echo_state_and_reply():
    e = engine(rule("pass", 1, "out", proto="icmp"))
    e.process(P.icmp(S, C, 8, 0, ident=42), "xl0", "out", 0)
    assert e.process(P.icmp(C, S, 0, 0, ident=42), "xl0", "in", 1).state == "matched"
    assert e.process(P.icmp(C, S, 0, 0, ident=43), "xl0", "in", 1).action == "block"


def test_icmp_error_is_matched_to_the_quoted_packets_state_through_nat():
    e = engine(rule("pass", 1, "out", on="xl0"), rule("pass", 2, "in", on="xl1"),
               translation=[trans("nat", 0, "203.0.113.2", on="xl0", src="192.168.1.0/24")])
    e.process(P.udp("192.168.1.5", 3333, C, 53), "xl1", "in", 0)
    out = e.process(P.udp("192.168.1.5", 3333, C, 53), "xl0", "out", 0)
    nat_port = out.packet.sport
    assert out.translation is not None and out.packet.src_text() == S
    quoted = P.udp(S, nat_port, C, 53, b"q" * 20)
    error = P.icmp(C, S, 3, 3, inner=quoted)
    d = e.process(Packet_parse(error), "xl0", "in", 1)
    assert (d.action, d.state) == ("pass", "matched")
    assert d.packet.dst_text() == "192.168.1.5"  # outer destination translated back
    assert d.packet.inner.src_text() == "192.168.1.5" and d.packet.inner.sport == 3333
    unrelated = P.icmp(C, S, 3, 3, inner=P.udp(S, 1, C, 53))
    assert e.process(Packet_parse(unrelated), "xl0", "in", 1).action == "block"


def Packet_parse(p):
    return P.Packet.parse(p.to_bytes())


def test_modulate_state_rewrites_isn_and_translates_acks():
    e = engine(rule("pass", 1, "out", on="xl0", proto="tcp", state="modulate"), seed=7)
    syn = e.process(P.tcp(S, 1111, C, 80, "S", seq=5000), "xl0", "out", 0)
    modulated = syn.packet.seq
    assert modulated != 5000
    # the server acknowledges the modulated sequence; pf hands the client its own numbers back
    synack = e.process(P.tcp(C, 80, S, 1111, "SA", seq=70000, ack=modulated + 1), "xl0", "in", 0)
    assert synack.action == "pass" and synack.packet.ack == 5001
    # the responder gets a modulator too (deferred generation)
    assert synack.packet.seq != 70000
    # the client acknowledges the modulated number it saw; the server gets its own back
    ack = e.process(P.tcp(S, 1111, C, 80, "A", seq=5001, ack=synack.packet.seq + 1), "xl0", "out", 0)
    assert ack.action == "pass"
    assert ack.packet.seq == modulated + 1 and ack.packet.ack == 70001
    assert syn.state_entry.src.state == syn.state_entry.dst.state == TCPS_ESTABLISHED


def test_synproxy_answers_the_client_then_opens_to_the_server():
    e = engine(rule("pass", 1, "in", on="xl0", proto="tcp", state="synproxy"), rule("pass", 2, "out", on="xl1"),
               translation=[trans("rdr", 0, "192.168.1.80", on="xl0", proto="tcp", dst=("203.0.113.11", 80))],
               seed=3)
    V, SRV = "203.0.113.11", "192.168.1.80"
    d = e.process(P.tcp(C, 4000, V, 80, "S", seq=100, mss=1400), "xl0", "in", 0)
    assert (d.action, d.reason, d.state) == ("block", "synproxy", "created")
    st = d.state_entry
    assert st.src.state == PF_TCPS_PROXY_SRC
    [synack] = d.emitted
    assert synack.toward == "sender" and synack.skip_firewall
    assert synack.packet.src_text() == V and synack.packet.flags == P.TH_SYN | P.TH_ACK
    assert synack.packet.ack == 101 and synack.packet.mss() == 1400
    fw_isn = synack.packet.seq
    # the client completes the handshake with pf; pf opens toward the server
    d = e.process(P.tcp(C, 4000, V, 80, "A", seq=101, ack=fw_isn + 1), "xl0", "in", 1)
    assert d.reason == "synproxy" and st.src.state == PF_TCPS_PROXY_DST
    [syn] = d.emitted
    assert syn.toward == "destination" and not syn.skip_firewall
    assert (syn.packet.src_text(), syn.packet.dst_text(), syn.packet.dport) == (C, SRV, 80)
    # that SYN is filtered out on xl1 like any packet
    out = e.process(syn.packet.copy(), "xl1", "out", 1)
    assert out.action == "pass" and out.state == "created"
    # the server answers; the reply crosses xl1 (its out-state) then meets the synproxy state out on xl0
    server_synack = P.tcp(SRV, 80, C, 4000, "SA", seq=9000, ack=syn.packet.seq + 1)
    assert e.process(server_synack.copy(), "xl1", "in", 2).state == "matched"
    d = e.process(server_synack.copy(), "xl0", "out", 2)
    assert d.reason == "synproxy"
    acks = {em.toward: em.packet for em in d.emitted}
    assert acks["sender"].dst_text() == SRV and acks["sender"].ack == 9001
    assert acks["destination"].dst_text() == C and acks["destination"].seq == fw_isn + 1
    assert st.src.state == st.dst.state == TCPS_ESTABLISHED
    # data now flows, sequence numbers translated between the two handshakes
    data = e.process(P.tcp(C, 4000, V, 80, "PA", seq=101, ack=fw_isn + 1, payload=b"GET /"), "xl0", "in", 3)
    assert data.action == "pass" and data.packet.dst_text() == SRV
    assert data.packet.seq == syn.packet.seq + 1 and data.packet.ack == 9001
    _ = PF_TCPS_PROXY_DST


def test_icmp_error_quoting_a_segment_outside_the_window_is_dropped():
    e = engine(rule("pass", 1, "in", on="xl0", proto="tcp", dst=(S, 22)))
    handshake(e)
    good = P.icmp(C, S, 3, 4, inner=P.tcp(S, 22, C, 40000, "A", seq=901, ack=101))
    d = e.process(Packet_parse(good), "xl0", "in", 1)
    assert (d.action, d.state) == ("pass", "matched")
    bad = P.icmp(C, S, 3, 4, inner=P.tcp(S, 22, C, 40000, "A", seq=901 + 50_000_000, ack=101))
    d = e.process(Packet_parse(bad), "xl0", "in", 1)
    assert (d.action, d.reason) == ("block", "state-mismatch")


def test_ipv6_tcp_and_icmp6_states():
    e = engine(rule("pass", 1, "in", on="xl0", proto="tcp"), rule("pass", 2, "out", proto="icmp6"))
    syn = P.tcp("2001:db8::9", 40000, "2001:db8::2", 22, "S", seq=100)
    assert e.process(Packet_parse(syn), "xl0", "in", 0).state == "created"
    sa = P.tcp("2001:db8::2", 22, "2001:db8::9", 40000, "SA", seq=900, ack=101)
    assert e.process(Packet_parse(sa), "xl0", "out", 0).state == "matched"
    e.process(P.icmp("2001:db8::2", "2001:db8::9", 128, 0, ident=3), "xl0", "out", 0)
    d = e.process(Packet_parse(P.icmp("2001:db8::9", "2001:db8::2", 129, 0, ident=3)), "xl0", "in", 0)
    assert (d.action, d.state) == ("pass", "matched")
    # an IPv4 packet never matches an IPv6 state
    assert e.process(P.icmp("192.0.2.9", "192.0.2.2", 0, 0, ident=3), "xl0", "in", 0).action == "block"


def test_adaptive_timeouts_shrink_as_the_table_fills():
    # set limit states 10: pfctl makes adaptive.start 6 and adaptive.end 12
    e = engine(rule("pass", 1, "in", proto="udp"), limits=(("states", 10),))
    first = e.process(P.udp(C, 1, S, 53), "xl0", "in", 0).state_entry
    assert e.states.expires_at(first) == 60  # udp.first, table nearly empty
    for port in range(2, 10):
        e.process(P.udp(C, port, S, 53), "xl0", "in", 0)
    assert len(e.states) == 9
    assert e.states.expires_at(first) == 60 * (12 - 9) / (12 - 6)  # 30 s
    assert e.process(P.udp(C, 1, S, 53), "xl0", "in", 31).state == "created"  # the old one had expired
    # per rule (pfctl gives "max 10" adaptive.start 6, adaptive.end 12): the rule's own states count
    r = engine(rule("pass", 1, "in", proto="udp", state=ast.StateSpec("keep", (
        ast.StateOption("max", 10), ast.StateOption("adaptive.start", 6), ast.StateOption("adaptive.end", 12)))))
    states = [r.process(P.udp(C, p, S, 53), "xl0", "in", 0).state_entry for p in range(1, 10)]
    assert states[0].adaptive and r.states.expires_at(states[0]) == 30
