"""Filter semantics: last match, quick, default pass, anchors, tags, match rules, tables, self,
set skip, scrub, antispoof, block return, IP options, counters and pflog records."""

from __future__ import annotations

from engine_ast import PRIMARY, host, rule, ruleset, table, view

from pfha.conf import ast
from pfha.engine import Engine
from pfha.engine import packet as P
from pfha.pflog.format import PflogHeader

C, S = "198.51.100.9", "203.0.113.2"


def make(filter_rules, **kw):
    tables = kw.pop("tables", ())
    scrub = kw.pop("scrub", ())
    return Engine(ruleset(filter=filter_rules, tables=tables, scrub=scrub, **kw), view(**PRIMARY), seed=1)


def syn(dport=22, src=C, dst=S):
    return P.tcp(src, 40000, dst, dport, "S")


def test_last_matching_rule_wins_and_quick_stops():
    e = make([rule("block", 0), rule("pass", 1, "in", proto="tcp"), rule("block", 2, "in", proto="tcp", dst=(S, 23))])
    assert e.process(syn(22), "xl0", "in", 0).rule_number == 1
    assert e.process(syn(23), "xl0", "in", 0).rule_number == 2
    q = make([rule("pass", 0, "in", quick=True, proto="tcp", dst=(S, 22)), rule("block", 1)])
    d = q.process(syn(22), "xl0", "in", 0)
    assert (d.action, d.rule_number) == ("pass", 0)
    assert q.rules()[1].counters.evaluations == 0  # never looked at


def test_default_rule_passes_without_state():
    e = make([rule("block", 0, "out")])
    d = e.process(syn(), "xl0", "in", 0)
    assert (d.action, d.rule_number, d.state) == ("pass", None, None)
    assert len(e.states) == 0


def test_no_state_rule_creates_no_state():
    e = make([rule("pass", 0, "in", proto="tcp", state="none", flags=None)])
    d = e.process(syn(), "xl0", "in", 0)
    assert d.action == "pass" and d.state is None


def test_flags_s_sa_only_creates_state_on_a_syn():
    e = make([rule("block", 0), rule("pass", 1, "in", proto="tcp")])
    assert e.process(P.tcp(C, 1, S, 22, "A"), "xl0", "in", 0).action == "block"
    assert e.process(P.tcp(C, 1, S, 22, "S"), "xl0", "in", 0).action == "pass"
    # flags apply to TCP only: UDP passes a rule with flags S/SA and no protocol
    any_proto = make([rule("block", 0), rule("pass", 1, "in")])
    assert any_proto.rules()[1].flags == (P.TH_SYN, P.TH_SYN | P.TH_ACK)
    assert any_proto.process(P.udp(C, 1, S, 53), "xl0", "in", 0).action == "pass"
    assert any_proto.process(P.tcp(C, 1, S, 22, "A"), "xl0", "in", 0).action == "block"


def test_anchor_rules_and_quick_inside():
    inner = ast.Ruleset(filter=(rule("pass", 0, "in", proto="tcp", dst=(S, 80)),
                                rule("block", 1, "in", quick=True, proto="tcp", dst=(S, 25))), path="web")
    anchor = ast.AnchorRule(origin=ast.Origin("t", 1), number=1, name="web", ruleset=inner)
    e = make([rule("block", 0), anchor, rule("block", 2, "in", proto="tcp", dst=(S, 443))])
    d = e.process(syn(80), "xl0", "in", 0)
    assert (d.action, d.rule_number, d.anchor) == ("pass", 0, "web")
    d = e.process(syn(25), "xl0", "in", 0)
    assert (d.action, d.rule_number) == ("block", 1)
    assert e.rules()[3].counters.evaluations == 1  # rule 2 of the main ruleset only saw the port 80 SYN


def test_quick_anchor_ends_evaluation_when_something_inside_matched():
    inner = ast.Ruleset(filter=(rule("pass", 0, "in", proto="tcp"),), path="a")
    anchor = ast.AnchorRule(origin=ast.Origin("t", 1), number=0, name="a", quick=True, ruleset=inner)
    e = make([anchor, rule("block", 1)])
    assert e.process(syn(), "xl0", "in", 0).action == "pass"
    assert e.process(P.udp(C, 1, S, 2), "xl0", "in", 0).action == "block"


def test_tag_sticks_and_tagged_matches_later_rules_and_the_state():
    e = make([rule("block", 0), rule("match", 1, "in", on="xl1", tag="LAN"),
              rule("pass", 2, "in", on="xl1", tagged="LAN"),
              rule("pass", 3, "out", on="xl0", tagged="LAN")])
    d = e.process(P.tcp("192.168.1.5", 1, C, 80, "S"), "xl1", "in", 0)
    assert (d.action, d.rule_number, d.tag) == ("pass", 2, "LAN")
    assert d.state_entry.tag == "LAN"
    # the tag travels with the forwarded packet to its out pass
    assert e.process(d.packet, "xl0", "out", 0).rule_number == 3
    untagged = P.tcp("192.168.1.5", 2, C, 80, "S")
    assert e.process(untagged, "xl0", "out", 0).action == "block"


def test_match_rules_never_decide():
    e = make([rule("block", 0), rule("match", 1, "in")])
    assert e.process(syn(), "xl0", "in", 0).rule_number == 0


def test_tables_longest_prefix_and_negation():
    t = table("bad", "10.0.0.0/8", "!10.1.0.0/16", "10.1.2.3")
    e = make([rule("pass", 0, "in"), rule("block", 1, "in", quick=True, src="<bad>")], tables=[t])
    for src, action in (("10.9.9.9", "block"), ("10.1.9.9", "pass"), ("10.1.2.3", "block"), ("11.0.0.1", "pass")):
        assert e.process(P.udp(src, 1, S, 2), "xl0", "in", 0).action == action, src


def test_self_and_dynamic_interface_addresses():
    e = make([rule("block", 0), rule("pass", 1, "in", proto="tcp", dst="(self)"),
              rule("pass", 2, "in", proto="udp", dst="(xl1:network)")])
    assert e.process(syn(22, dst="203.0.113.11"), "xl0", "in", 0).action == "pass"  # a carp0 address
    assert e.process(syn(22, dst="203.0.113.99"), "xl0", "in", 0).action == "block"
    assert e.process(P.udp(C, 1, "192.168.1.77", 2), "xl0", "in", 0).action == "pass"


def test_interface_negation_and_groups_like_antispoof():
    # antispoof for xl1: block in on ! xl1 from 192.168.1.0/24; block in from 192.168.1.250
    e = make([rule("pass", 0),
              rule("block", 1, "in", quick=True, on="!xl1", src="192.168.1.0/24"),
              rule("block", 2, "in", quick=True, src="192.168.1.250")])
    assert e.process(P.udp("192.168.1.5", 1, S, 2), "xl0", "in", 0).rule_number == 1
    assert e.process(P.udp("192.168.1.5", 1, S, 2), "xl1", "in", 0).action == "pass"
    assert e.process(P.udp("192.168.1.250", 1, S, 2), "xl1", "in", 0).rule_number == 2
    g = make([rule("block", 0), rule("pass", 1, on="carp")])
    assert g.process(P.udp(C, 1, S, 2), "carp0", "in", 0).action == "pass"


def test_set_skip_passes_untouched():
    e = make([rule("block", 0)], skip=("lo0",))
    d = e.process(syn(), "lo0", "in", 0)
    assert (d.action, d.reason, d.rule) == ("pass", "skip", None)


def test_scrub_drops_illegal_flag_combinations_and_strips_fin_from_syn():
    scrub = [ast.ScrubRule(origin=ast.Origin("t", 1), number=0, direction="in")]
    e = make([rule("pass", 0, state="none", flags=None)], scrub=scrub)
    for flags in ("SR", "F", "FP", "", "U"):
        d = e.process(P.tcp(C, 1, S, 22, flags), "xl0", "in", 0)
        assert (d.action, d.reason) == ("block", "normalize"), flags
    d = e.process(P.tcp(C, 1, S, 22, "SF"), "xl0", "in", 0)
    assert d.action == "pass" and d.packet.flags == P.TH_SYN
    # scrub in only: outbound packets are not normalised
    assert e.process(P.tcp(S, 22, C, 1, "F"), "xl0", "out", 0).action == "pass"


def test_ip_options_need_allow_opts():
    e = make([rule("pass", 0, "in", proto="udp"), rule("pass", 1, "in", proto="udp", src="10.0.0.1", allow_opts=True)])
    d = e.process(P.udp(C, 1, S, 2, ip_options=b"\x94\x04\x00\x00"), "xl0", "in", 0)
    assert (d.action, d.reason) == ("block", "ip-option")
    assert e.process(P.udp("10.0.0.1", 1, S, 2, ip_options=b"\x94\x04\x00\x00"), "xl0", "in", 0).action == "pass"


def test_block_return_sends_rst_for_tcp_and_unreachable_for_udp():
    ret = ast.BlockReturn("return")
    e = make([rule("block", 0, "in", block=ret)])
    d = e.process(P.tcp(C, 40000, S, 22, "S", seq=500), "xl0", "in", 0)
    [rst] = d.emitted
    assert rst.toward == "sender"
    assert (rst.packet.src_text(), rst.packet.dst_text(), rst.packet.sport, rst.packet.dport) == (S, C, 22, 40000)
    assert rst.packet.flags == P.TH_RST | P.TH_ACK and rst.packet.ack == 501
    d = e.process(P.udp(C, 5000, S, 53, b"q"), "xl0", "in", 0)
    [unreach] = d.emitted
    assert (unreach.packet.icmp_type, unreach.packet.icmp_code) == (3, 3)
    assert unreach.packet.inner.dport == 53
    assert e.process(P.icmp(C, S, 8, ident=1), "xl0", "in", 0).emitted == []  # never for ICMP
    assert e.process(P.tcp(C, 1, S, 22, "R"), "xl0", "in", 0).emitted == []  # never for a RST
    drop = make([rule("block", 0, "in")])
    assert drop.process(syn(), "xl0", "in", 0).emitted == []
    v6 = make([rule("block", 0, "in", block=ret)])
    [u6] = v6.process(P.udp("2001:db8::1", 1, "2001:db8::2", 2), "xl0", "in", 0).emitted
    assert (u6.packet.proto, u6.packet.icmp_type, u6.packet.icmp_code) == (58, 1, 4)


def test_counters_like_pfctl_vsr():
    e = make([rule("block", 0), rule("pass", 1, "in", proto="tcp", dst=(S, 22))])
    e.process(syn(), "xl0", "in", 0)
    e.process(P.tcp(S, 22, C, 40000, "SA", seq=1, ack=1001), "xl0", "out", 0)
    e.process(syn(80), "xl0", "in", 0)
    block, allow = e.rules()
    assert allow.counters.packets == [1, 1] and allow.counters.states_cur == 1 and allow.counters.states_tot == 1
    assert allow.counters.bytes[0] == 40 and allow.counters.bytes[1] == 40
    assert block.counters.packets == [1, 0]  # only the packet it decided is charged
    assert block.counters.evaluations == 2
    assert allow.counters.evaluations == 1  # the index never offered it the port 80 SYN


def test_log_produces_pflog_records_after_translation():
    e = make([rule("block", 0, log=True), rule("pass", 1, "in", proto="tcp", dst=(S, 22), log=True),
              rule("pass", 2, "in", proto="udp", log=ast.Log(all=True))])
    d = e.process(syn(23), "xl0", "in", 5.0)
    [rec] = d.logs
    header = PflogHeader.decode(rec.frame())
    assert header.describe() == "rule 0/0(match): block in on xl0"
    assert P.Packet.parse(rec.packet).dport == 23 and rec.time == 5.0
    d = e.process(syn(22), "xl0", "in", 6)
    assert d.log and PflogHeader.decode(d.logs[0].frame()).describe() == "rule 1/0(match): pass in on xl0"
    # log: only the packet that created the state; log (all): every packet of it
    assert not e.process(P.tcp(S, 22, C, 40000, "SA", seq=1, ack=1001), "xl0", "out", 6).log
    e.process(P.udp(C, 1, S, 2), "xl0", "in", 7)
    assert e.process(P.udp(S, 2, C, 1), "xl0", "out", 7).log
    assert len(e.log) == 4


def test_state_mismatch_is_logged_with_its_reason_under_log_all():
    e = make([rule("pass", 0, "in", proto="tcp", log=ast.Log(all=True))])
    e.process(syn(), "xl0", "in", 0)
    d = e.process(P.tcp(C, 40000, S, 22, "A", seq=99999999, ack=5, payload=b"x"), "xl0", "in", 1)
    assert d.reason == "state-mismatch"
    assert PflogHeader.decode(d.logs[0].frame()).describe() == "rule 0/10(state-mismatch): block in on xl0"


def test_index_keeps_evaluation_sublinear():
    rules = [rule("block", 0)]
    for i in range(1, 1001):
        rules.append(rule("pass", i, "in", quick=True, on="xl0", proto="tcp",
                          dst=(f"10.{i // 250}.{i % 250}.1", 1000 + i)))
    e = make(rules)
    d = e.process(P.tcp(C, 1, "10.2.0.1", 1500, "S"), "xl0", "in", 0)
    assert (d.action, d.rule_number) == ("pass", 500)
    assert sum(r.counters.evaluations for r in e.rules()) <= 3
    assert e.process(P.tcp(C, 1, "10.2.0.1", 1501, "S"), "xl0", "in", 0).rule_number == 0


def test_host_helper_negation():
    e = make([rule("block", 0), rule("pass", 1, src=ast.Endpoint(host("192.168.0.0/16", True)))])
    assert e.process(P.udp(C, 1, S, 2), "xl0", "in", 0).action == "pass"
    assert e.process(P.udp("192.168.3.3", 1, S, 2), "xl0", "in", 0).action == "block"


def test_later_fragments_see_only_ip_rules_and_fragment_rules():
    e = make([rule("block", 0), rule("pass", 1, "in", proto="udp", dst=(S, 53)),
              rule("pass", 2, "in", proto="udp", dst=S, fragment=True, state="none", flags=None)])
    whole = P.udp(C, 1, S, 53)
    assert e.process(whole, "xl0", "in", 0).rule_number == 1
    frag = P.udp(C, 1, S, 53, b"z" * 16)
    frag.frag_offset = 1480
    d = e.process(frag, "xl0", "in", 0)
    assert (d.action, d.rule_number, d.state) == ("pass", 2, None)
    other = P.udp(C, 1, S, 54)
    assert e.process(other, "xl0", "in", 0).rule_number == 0  # rule 2 is for fragments only


def test_scrub_reassembles_fragments_before_filtering():
    scrub = [ast.ScrubRule(origin=ast.Origin("t", 1), number=0, direction="in")]
    e = make([rule("block", 0), rule("pass", 1, "in", proto="udp", dst=(S, 53))], scrub=scrub)
    whole = P.udp(C, 5000, S, 53, bytes(range(200)) * 10, ip_id=77)
    data = whole.to_bytes()
    l4 = data[20:]
    first = P.Packet.parse(data[:20] + l4[:1480], lenient=True)
    first.more_frags, first.ip_id = True, 77
    second = P.Packet(4, whole.src, whole.dst, 17, payload=l4[1480:], ip_id=77)
    second.frag_offset = 1480
    d1 = e.process(second, "xl0", "in", 0)  # out of order: held
    assert (d1.action, d1.reason) == ("pass", "held")
    d2 = e.process(first, "xl0", "in", 0)
    assert (d2.action, d2.rule_number, d2.state) == ("pass", 1, "created")
    assert d2.packet.payload == whole.payload and not d2.packet.more_frags
    # without scrub, a later fragment meets only IP-level rules and the default block
    bare = make([rule("block", 0), rule("pass", 1, "in", proto="udp", dst=(S, 53))])
    assert bare.process(second.copy(), "xl0", "in", 0).action == "block"
