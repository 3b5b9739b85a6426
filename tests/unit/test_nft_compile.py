"""The pf -> nftables compiler, checked without a kernel: layout, ordering, translation, warnings."""

from __future__ import annotations

import ipaddress
import json
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.conf import ast
from pfha.conf.interfaces import InterfaceView
from pfha.nft.compile import (A_RULE_MASK, B_RULE_MASK, SIDE_A, SIDE_B, _table_networks, compile_ruleset,
                              first_match_order, side_of)

O = ast.Origin("pf.conf", 1)
VIEW = InterfaceView.from_specs(["ext0=172.31.250.1/24", "int0=10.77.0.1/24", "lo0=127.0.0.1/8"])


def host(text: str) -> ast.HostMatch:
    net = ipaddress.ip_network(text, strict=False)
    return ast.HostMatch(ast.HostAddress(net.network_address, net.prefixlen))


def pool(*addresses: str, **kw) -> ast.Pool:
    return ast.Pool(tuple(ast.PoolAddress(host(a).address) for a in addresses), **kw)


SA = ast.TcpFlags(0x02, 0x12)


def rule(number: int, action: str, **kw) -> ast.Rule:
    if action == "pass" and "state" not in kw:
        kw["state"] = ast.StateSpec("keep")
    return ast.Rule(origin=ast.Origin("pf.conf", 10 + number), number=number, action=action, **kw)


def prototype_ruleset(**options) -> ast.Ruleset:
    """The prototype's ruleset (pf-semantics.md §4), as the parser would hand it over."""
    return ast.Ruleset(
        options=ast.Options(skip=("lo0",), **options),
        scrub=(ast.ScrubRule(origin=O, direction="in"),),
        translation=(
            ast.TranslationRule(origin=O, kind="nat", interface=ast.InterfaceMatch("ext0"), af="inet", src=ast.Endpoint(host("10.77.0.0/24")),
                                pool=ast.Pool((ast.PoolAddress(ast.DynamicAddress("ext0")),), method="round-robin")),
            ast.TranslationRule(origin=O, kind="rdr", interface=ast.InterfaceMatch("ext0"), af="inet", proto=6,
                                dst=ast.Endpoint(ast.HostMatch(ast.DynamicAddress("ext0")), ast.PortMatch("=", 8080)), pool=pool("10.77.0.10", port_low=80)),
        ),
        filter=(
            rule(0, "block", log=ast.Log(), block=ast.BlockReturn()),
            rule(1, "pass", direction="in", quick=True, interface=ast.InterfaceMatch("ext0"), af="inet", proto=6,
                 dst=ast.Endpoint(host("10.77.0.10"), ast.PortMatch("=", 80)), flags=SA),
            rule(2, "pass", direction="in", interface=ast.InterfaceMatch("int0"), af="inet", src=ast.Endpoint(host("10.77.0.0/24")), flags=SA),
            rule(3, "pass", direction="out", interface=ast.InterfaceMatch("ext0"), flags=SA),
        ),
    )


def chain_rules(compiled, chain: str) -> list[dict]:
    return [c["add"]["rule"] for c in compiled.commands if "rule" in c["add"] and c["add"]["rule"]["chain"] == chain]


def test_four_base_chains_around_conntrack_nat_hooks():
    compiled = compile_ruleset(prototype_ruleset(), VIEW)
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in compiled.commands if "chain" in c["add"]}
    assert {n: (chains[n]["type"], chains[n]["hook"], chains[n]["prio"]) for n in ("nat_pre", "filter_in", "nat_post", "filter_out")} == {
        "nat_pre": ("nat", "prerouting", -100), "filter_in": ("filter", "prerouting", -99),
        "nat_post": ("nat", "postrouting", 100), "filter_out": ("filter", "postrouting", 101)}
    for name in ("nat_pre", "filter_in", "nat_post", "filter_out"):
        first, second = chain_rules(compiled, name)[:2]
        assert first["expr"] == [{"jump": {"target": "pf_status"}}]
        skipped = second["expr"][0]["match"]["right"]
        assert "lo" in skipped["set"] and second["expr"][-1] == {"accept": None}  # lo0 is Linux's lo
    json.dumps(compiled.document())  # plain JSON all the way down


def _rule_comments(compiled, chain: str) -> list[str]:
    return [r.get("comment", "") for r in chain_rules(compiled, chain)]


def test_filter_order_is_quick_first_then_reversed():
    compiled = compile_ruleset(prototype_ruleset(), VIEW)
    decided = [c.split()[0] for c in _rule_comments(compiled, "filter_in") if c.startswith("@")]
    assert decided == ["@1", "@1", "@2", "@2", "@2", "@2", "@0"]  # quick, then 2 (tcp+flags / non-tcp), then 0; x2 ct directions
    decided_out = [c.split()[0] for c in _rule_comments(compiled, "filter_out") if c.startswith("@")]
    assert decided_out == ["@3", "@3", "@3", "@3", "@0"]


def test_state_check_uses_the_right_side_per_pass_and_direction():
    assert side_of("in", "original") == "A" and side_of("out", "reply") == "A"
    assert side_of("out", "original") == "B" and side_of("in", "reply") == "B"
    compiled = compile_ruleset(prototype_ruleset(), VIEW)
    accepts = [r["expr"] for r in chain_rules(compiled, "filter_out") if r.get("comment", "").startswith("state side") and r["expr"][-1] == {"accept": None}]
    assert [(e[0]["match"]["right"], e[1]["match"]["right"]) for e in accepts] == [("original", SIDE_B), ("reply", SIDE_A)]
    rule1 = [r["expr"] for r in chain_rules(compiled, "filter_in") if r.get("comment", "").startswith("@1 ")]
    assert [e[-4]["match"]["right"] for e in rule1] == ["original", "reply"]
    mark = rule1[0][-2]["mangle"]["value"]["|"]
    assert mark[1] == SIDE_A | (2 << 2)  # rule 1 is stored as id 2 in side A's field
    assert mark[0]["&"][1] & (SIDE_A | A_RULE_MASK) == 0 and mark[0]["&"][1] & (SIDE_B | B_RULE_MASK) == SIDE_B | B_RULE_MASK
    reply_mark = rule1[1][-2]["mangle"]["value"]["|"]
    assert reply_mark[1] == SIDE_B | (2 << 17)


def test_block_log_prefix_and_nat_proxy_ports():
    compiled = compile_ruleset(prototype_ruleset(), VIEW)
    block = [r for r in chain_rules(compiled, "filter_in") if r.get("comment", "").startswith("@0")][0]
    assert {"log": {"prefix": "pf:0:-1:1:1:0:0:", "group": 0}} in block["expr"] and block["expr"][-1] == {"drop": None}
    nat = [r["expr"] for r in chain_rules(compiled, "nat_post") if any("masquerade" in e for e in r["expr"])]
    assert {"masquerade": {"port": {"range": [50001, 65535]}, "flags": "random"}} in nat[0]
    assert {"masquerade": None} in nat[1]
    rdr = [r["expr"] for r in chain_rules(compiled, "nat_pre") if any("dnat" in e for e in r["expr"])]
    assert rdr[0][-1] == {"dnat": {"family": "ip", "addr": "10.77.0.10", "port": 80}}
    assert any(str(e.get("match", {}).get("right")).startswith("@dyn") for e in rdr[0])


def test_static_port_and_explicit_nat_address():
    rs = ast.Ruleset(translation=(
        ast.TranslationRule(origin=O, kind="nat", interface=ast.InterfaceMatch("ext0"), src=ast.Endpoint(host("10.77.0.0/24")), pool=pool("203.0.113.10")),
        ast.TranslationRule(origin=O, kind="nat", interface=ast.InterfaceMatch("ext0"), src=ast.Endpoint(host("10.78.0.0/24")), pool=pool("203.0.113.11", static_port=True)),
    ))
    nat = [r["expr"][-1] for r in chain_rules(compile_ruleset(rs, VIEW), "nat_post") if "snat" in r["expr"][-1]]
    assert nat == [{"snat": {"family": "ip", "addr": "203.0.113.10", "port": {"range": [50001, 65535]}, "flags": "random"}},
                   {"snat": {"family": "ip", "addr": "203.0.113.10"}},
                   {"snat": {"family": "ip", "addr": "203.0.113.11"}}]


def test_round_robin_pool_uses_numgen():
    rs = ast.Ruleset(translation=(ast.TranslationRule(origin=O, kind="rdr", interface=ast.InterfaceMatch("ext0"), proto=6,
                                                      dst=ast.Endpoint(host("203.0.113.11"), ast.PortMatch("=", 80)),
                                                      pool=pool("192.168.1.80", "192.168.1.81", "192.168.1.82", method="round-robin")),))
    (dnat,) = [r["expr"][-1]["dnat"] for r in chain_rules(compile_ruleset(rs, VIEW), "nat_pre") if "dnat" in r["expr"][-1]]
    assert dnat["addr"]["map"]["key"] == {"numgen": {"mode": "inc", "mod": 3}}
    assert dnat["addr"]["map"]["data"]["set"] == [[0, "192.168.1.80"], [1, "192.168.1.81"], [2, "192.168.1.82"]]


def test_what_the_kernel_cannot_do_is_a_warning():
    rs = ast.Ruleset(filter=(
        rule(0, "pass", direction="out", proto=6, flags=SA, state=ast.StateSpec("modulate")),
        rule(1, "pass", direction="in", proto=6, flags=SA, state=ast.StateSpec("synproxy")),
        rule(2, "block", direction="out", block=ast.BlockReturn("return-rst")),
    ))
    warnings = [str(w) for w in compile_ruleset(rs, VIEW).warnings]
    assert any(w.startswith("pf.conf:10: modulate state") for w in warnings)
    assert any(w.startswith("pf.conf:11: synproxy state") for w in warnings)
    assert any(w.startswith("pf.conf:12: block return on the out-pass") for w in warnings)


def test_set_timeout_becomes_conntrack_sysctls():
    compiled = compile_ruleset(ast.Ruleset(options=ast.Options(timeouts=(("tcp.established", 3600), ("udp.multiple", 90), ("interval", 5)))), VIEW)
    assert compiled.metadata["sysctls"] == {"net.netfilter.nf_conntrack_tcp_timeout_established": 3600,
                                            "net.netfilter.nf_conntrack_udp_timeout_stream": 90,
                                            "net.netfilter.nf_conntrack_acct": 1}
    assert any("set timeout interval" in str(w) for w in compiled.warnings)


def test_block_return_in_rejects_tcp_with_rst_and_others_with_icmp():
    rs = ast.Ruleset(filter=(rule(0, "block", direction="in", block=ast.BlockReturn("return")),))
    rules = chain_rules(compile_ruleset(rs, VIEW), "filter_in")
    verdicts = [r["expr"][-1] for r in rules if r.get("comment", "").startswith("@0")]
    assert verdicts == [{"reject": {"type": "tcp reset"}}, {"reject": {"type": "icmp", "expr": "port-unreachable"}},
                        {"reject": {"type": "icmpv6", "expr": "port-unreachable"}}, {"drop": None}]


def test_table_negation_is_longest_prefix():
    entries = (ast.TableEntry(host("10.0.0.0/8").address), ast.TableEntry(host("10.1.0.0/16").address, negated=True),
               ast.TableEntry(host("10.1.2.3").address), ast.TableEntry(host("2001:db8::/32").address))
    v4, v6 = _table_networks(entries, None)
    inside = lambda a: any(ipaddress.ip_address(a) in n for n in v4)
    assert inside("10.2.0.1") and not inside("10.1.0.1") and inside("10.1.2.3") and not inside("11.0.0.1")
    assert [str(n) for n in v6] == ["2001:db8::/32"]
    for a, b in zip(v4, v4[1:]):
        assert not a.overlaps(b)


# -------------------------------------------------------------- quick/last-match ordering
FIELDS = ("iface", "proto", "src")


def _pf_last_match(rules, packet):
    chosen = None
    for r in rules:
        if all(r[f] is None or r[f] == packet[f] for f in FIELDS):
            chosen = r
            if r["quick"]:
                break
    return chosen["nr"] if chosen else None


def _first_match(rules, packet):
    for r in rules:
        if all(r[f] is None or r[f] == packet[f] for f in FIELDS):
            return r["nr"]
    return None


class _R(dict):
    @property
    def quick(self):
        return self["quick"]


rules_st = st.lists(st.fixed_dictionaries({
    "quick": st.booleans(),
    "iface": st.sampled_from([None, "a", "b"]),
    "proto": st.sampled_from([None, 6, 17]),
    "src": st.sampled_from([None, 1, 2]),
}), max_size=10)


@settings(max_examples=300, deadline=None)
@given(rules_st, st.fixed_dictionaries({"iface": st.sampled_from(["a", "b"]), "proto": st.sampled_from([6, 17]), "src": st.sampled_from([1, 2])}))
def test_reordering_gives_pfs_decision(raw, packet):
    rules = [_R(r, nr=i) for i, r in enumerate(raw)]
    assert _first_match(first_match_order(rules), packet) == _pf_last_match(rules, packet)


prefixes = st.builds(lambda a, n: ipaddress.ip_network((a & ~((1 << (32 - n)) - 1) & 0xFFFFFFFF, n)),
                     st.integers(0x0A000000, 0x0A00FFFF), st.integers(16, 32))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(prefixes, st.booleans()), max_size=12), st.lists(st.integers(0x0A000000, 0x0A00FFFF), min_size=1, max_size=20))
def test_table_networks_match_a_longest_prefix_lookup(items, probes):
    entries = [ast.TableEntry(ast.HostAddress(net.network_address, net.prefixlen), negated=neg) for net, neg in items]
    v4, _ = _table_networks(entries, None)
    last = {net: neg for net, neg in items}
    for value in probes:
        address = ipaddress.ip_address(value)
        matching = [net for net in last if address in net]
        expected = bool(matching) and not last[max(matching, key=lambda n: n.prefixlen)]
        assert any(address in n for n in v4) == expected
    for a, b in zip(v4, v4[1:]):
        assert not a.overlaps(b)
