"""Translation: binat, rdr in / nat out, first match, no nat, nat pass, pools and ports."""

from __future__ import annotations

from engine_ast import PRIMARY, rule, ruleset, trans, view

from pfha.engine import Engine
from pfha.engine import packet as P

C = "198.51.100.9"
LAN = "192.168.1.0/24"


def make(translation, filter_rules=None, seed=1):
    filter_rules = filter_rules if filter_rules is not None else [rule("pass", 0)]
    return Engine(ruleset(filter=filter_rules, translation=translation), view(**PRIMARY), seed=seed)


def out_syn(e, src="192.168.1.5", sport=1234, dst=C, dport=80, now=0):
    return e.process(P.tcp(src, sport, dst, dport, "S"), "xl0", "out", now)


def test_nat_uses_proxy_ports_50001_65535_and_the_filter_sees_the_new_source():
    e = make([trans("nat", 0, "203.0.113.2", on="xl0", src=LAN)],
             [rule("block", 0), rule("pass", 1, "out", on="xl0", src="203.0.113.2")])
    ports = set()
    for sport in range(1000, 1040):
        d = out_syn(e, sport=sport)
        assert d.action == "pass" and d.rule_number == 1
        assert d.translation.describe()["type"] == "nat" and d.packet.src_text() == "203.0.113.2"
        assert 50001 <= d.packet.sport <= 65535
        ports.add(d.packet.sport)
    assert len(ports) == 40


def test_nat_static_port_and_explicit_range():
    e = make([trans("nat", 0, "203.0.113.2", on="xl0", src=LAN, static_port=True)])
    assert out_syn(e, sport=1234).packet.sport == 1234
    r = make([trans("nat", 0, "203.0.113.2", on="xl0", src=LAN, port_low=2000, port_high=2001)])
    got = {out_syn(r, sport=s).packet.sport for s in (1, 2)}
    assert got == {2000, 2001}
    third = out_syn(r, sport=3)
    assert (third.action, third.reason) == ("block", "map-failed")


def test_nat_translation_creates_state_even_under_no_state():
    e = make([trans("nat", 0, "203.0.113.2", on="xl0", src=LAN)], [rule("pass", 0, state="none", flags=None)])
    d = out_syn(e)
    assert d.state == "created"
    reply = P.tcp(C, 80, "203.0.113.2", d.packet.sport, "SA", seq=7, ack=1001)
    back = e.process(reply, "xl0", "in", 0)
    assert back.state == "matched" and (back.packet.dst_text(), back.packet.dport) == ("192.168.1.5", 1234)


def test_rdr_rewrites_destination_and_ports():
    e = make([trans("rdr", 0, "192.168.1.80", on="xl0", proto="tcp", dst=("203.0.113.11", 80), port_low=8080)])
    d = e.process(P.tcp(C, 4000, "203.0.113.11", 80, "S"), "xl0", "in", 0)
    assert (d.packet.dst_text(), d.packet.dport) == ("192.168.1.80", 8080)
    assert d.translation.describe() == {"type": "rdr", "rule": 0, "src": "198.51.100.9:4000", "dst": "192.168.1.80:8080",
                                        "orig_src": "198.51.100.9:4000", "orig_dst": "203.0.113.11:80"}
    # the reply leaving xl0 gets the public address back from the state
    back = e.process(P.tcp("192.168.1.80", 8080, C, 4000, "SA", seq=1, ack=1001), "xl0", "out", 0)
    assert (back.state, back.packet.src_text(), back.packet.sport) == ("matched", "203.0.113.11", 80)
    # rdr applies only to packets crossing its interface (no reflection) and only inbound
    assert e.process(P.tcp("192.168.1.5", 1, "203.0.113.11", 80, "S"), "xl1", "in", 0).translation is None
    assert e.process(P.tcp(C, 4001, "203.0.113.11", 80, "S"), "xl0", "out", 0).translation is None


def test_rdr_port_ranges():
    single = make([trans("rdr", 0, "192.168.1.80", on="xl0", proto="tcp", dst=("203.0.113.11", (":", 2000, 2999)),
                         port_low=4000)])
    assert single.process(P.tcp(C, 1, "203.0.113.11", 2500, "S"), "xl0", "in", 0).packet.dport == 4000
    ranged = make([trans("rdr", 0, "192.168.1.80", on="xl0", proto="tcp", dst=("203.0.113.11", (":", 2000, 2999)),
                         port_low=4000, port_high=4999)])
    assert ranged.process(P.tcp(C, 1, "203.0.113.11", 2500, "S"), "xl0", "in", 0).packet.dport == 4500


def test_first_match_no_nat_and_no_rdr():
    e = make([trans("nat", 0, "", on="xl0", src="192.168.1.5", negated=True),
              trans("nat", 1, "203.0.113.2", on="xl0", src=LAN),
              trans("nat", 2, "203.0.113.12", on="xl0", src=LAN)])
    assert out_syn(e, src="192.168.1.5").translation is None
    d = out_syn(e, src="192.168.1.6")
    assert d.translation.rule.number == 1 and d.packet.src_text() == "203.0.113.2"
    r = make([trans("rdr", 0, "", on="xl0", proto="tcp", src="198.51.100.0/24", negated=True),
              trans("rdr", 1, "192.168.1.80", on="xl0", proto="tcp", dst=("203.0.113.11", 80))])
    assert r.process(P.tcp(C, 1, "203.0.113.11", 80, "S"), "xl0", "in", 0).translation is None
    assert r.process(P.tcp("192.0.2.1", 1, "203.0.113.11", 80, "S"), "xl0", "in", 0).translation is not None


def test_rdr_pass_skips_the_filter_rules():
    blocked = make([trans("rdr", 0, "192.168.1.80", on="xl0", proto="tcp", dst=("203.0.113.11", 80))],
                   [rule("block", 0)])
    assert blocked.process(P.tcp(C, 1, "203.0.113.11", 80, "S"), "xl0", "in", 0).action == "block"
    passing = make([trans("rdr", 0, "192.168.1.80", on="xl0", proto="tcp", dst=("203.0.113.11", 80), pass_=True)],
                   [rule("block", 0)])
    d = passing.process(P.tcp(C, 1, "203.0.113.11", 80, "S"), "xl0", "in", 0)
    assert (d.action, d.rule_number, d.state) == ("pass", None, "created")
    # only this pass: out on xl1 the filter still applies
    assert passing.process(d.packet, "xl1", "out", 0).action == "block"


def test_binat_maps_both_ways_keeping_host_bits():
    e = make([trans("binat", 0, "203.0.113.100", on="xl0", src="192.168.1.10")])
    d = out_syn(e, src="192.168.1.10", sport=5555)
    assert (d.packet.src_text(), d.packet.sport, d.translation.kind) == ("203.0.113.100", 5555, "binat")
    inbound = e.process(P.tcp(C, 9, "203.0.113.100", 22, "S"), "xl0", "in", 0)
    assert inbound.translation.kind == "binat" and inbound.packet.dst_text() == "192.168.1.10"
    net = make([trans("binat", 0, "203.0.113.0/28", on="xl0", src="192.168.1.0/28")])
    assert out_syn(net, src="192.168.1.7").packet.src_text() == "203.0.113.7"
    # binat is tried before nat
    both = make([trans("nat", 0, "203.0.113.2", on="xl0", src=LAN),
                 trans("binat", 1, "203.0.113.100", on="xl0", src="192.168.1.10")])
    assert out_syn(both, src="192.168.1.10").translation.kind == "binat"


def test_pools_round_robin_random_source_hash_bitmask_sticky():
    rr = make([trans("rdr", 0, ["192.168.1.80", "192.168.1.81", "192.168.1.82"], on="xl0", proto="tcp",
                     dst=("203.0.113.11", 80), method="round-robin")])
    seen = [rr.process(P.tcp(C, p, "203.0.113.11", 80, "S"), "xl0", "in", 0).packet.dst_text() for p in range(1, 7)]
    assert seen == ["192.168.1.80", "192.168.1.81", "192.168.1.82"] * 2
    rnd = make([trans("nat", 0, "203.0.113.0/28", on="xl0", src=LAN, method="random")])
    picks = {out_syn(rnd, sport=p).packet.src_text() for p in range(1, 40)}
    assert len(picks) > 3 and all(a.startswith("203.0.113.") and int(a.rsplit(".", 1)[1]) < 16 for a in picks)
    sh = make([trans("nat", 0, "203.0.113.0/28", on="xl0", src=LAN, method="source-hash")])
    first = out_syn(sh, src="192.168.1.5", sport=1).packet.src_text()
    assert all(out_syn(sh, src="192.168.1.5", sport=p).packet.src_text() == first for p in range(2, 8))
    assert len({out_syn(sh, src=f"192.168.1.{h}", sport=1).packet.src_text() for h in range(10, 40)}) > 3
    bm = make([trans("nat", 0, "203.0.113.0/24", on="xl0", src=LAN, method="bitmask")])
    assert out_syn(bm, src="192.168.1.77").packet.src_text() == "203.0.113.77"
    sticky = make([trans("rdr", 0, ["192.168.1.80", "192.168.1.81"], on="xl0", proto="tcp",
                         dst=("203.0.113.11", 80), method="round-robin", sticky=True)])
    targets = {sticky.process(P.tcp(C, p, "203.0.113.11", 80, "S"), "xl0", "in", 0).packet.dst_text()
               for p in range(1, 5)}
    assert len(targets) == 1
    other = sticky.process(P.tcp("198.51.100.10", 1, "203.0.113.11", 80, "S"), "xl0", "in", 0)
    assert other.packet.dst_text() not in targets


def test_translation_is_deterministic_for_a_seed():
    def run(seed):
        e = make([trans("nat", 0, "203.0.113.2", on="xl0", src=LAN)], seed=seed)
        return [out_syn(e, sport=s).packet.sport for s in range(5)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_nat_port_choice_avoids_ports_in_use():
    e = make([trans("nat", 0, "203.0.113.2", on="xl0", src=LAN, port_low=3000, port_high=3002)])
    ports = [out_syn(e, sport=s).packet.sport for s in range(3)]
    assert sorted(ports) == [3000, 3001, 3002]
    # same ports toward another destination are free again
    assert out_syn(e, sport=9, dst="198.51.100.10").action == "pass"


def test_nat_of_icmp_echo_draws_a_new_id_and_replies_come_back():
    e = make([trans("nat", 0, "203.0.113.2", on="xl0", src=LAN)])
    d = e.process(P.icmp("192.168.1.5", C, 8, 0, ident=4242), "xl0", "out", 0)
    new_id = d.packet.icmp_id
    assert d.packet.src_text() == "203.0.113.2" and 1 <= new_id <= 65535
    back = e.process(P.icmp(C, "203.0.113.2", 0, 0, ident=new_id), "xl0", "in", 0)
    assert back.state == "matched" and back.packet.dst_text() == "192.168.1.5" and back.packet.icmp_id == 4242
    assert P.Packet.parse(back.packet.to_bytes()).icmp_id == 4242


def test_translation_rules_inside_nat_and_rdr_anchors():
    from pfha.conf import ast

    inner = ast.Ruleset(translation=(trans("rdr", 0, "192.168.1.80", proto="tcp", dst=("203.0.113.2", 80)),), path="web")
    anchor = ast.AnchorRule(origin=ast.Origin("t", 1), number=0, kind="rdr-anchor", name="web",
                            interface=ast.InterfaceMatch("xl0"), ruleset=inner)
    e = make([anchor])
    assert e.process(P.tcp(C, 1, "203.0.113.2", 80, "S"), "xl0", "in", 0).packet.dst_text() == "192.168.1.80"
    assert e.process(P.tcp(C, 1, "203.0.113.2", 80, "S"), "xl1", "in", 0).translation is None
