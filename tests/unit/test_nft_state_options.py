"""State options in the compiled JSON: if-bound states (the creating rule binds the side to the
packet's interface in the ct label; the state check only accepts on a bound interface) and
``max N`` (one shared ct count per rule)."""

from __future__ import annotations

from pfha.conf import ast, parse_text
from pfha.conf.interfaces import InterfaceView
from pfha.nft.compile import LABEL_BOUND, compile_ruleset, label_bit

VIEW = InterfaceView.from_specs(["ext0=172.31.250.1/24", "int0=10.77.0.1/24", "lo0=127.0.0.1/8"])
IFS = ["ext0", "int0", "lo0"]  # the view's devices, sorted: label bits in this order


def chain_rules(compiled, chain: str) -> list[list[dict]]:
    return [c["add"]["rule"]["expr"] for c in compiled.commands if "rule" in c["add"] and c["add"]["rule"]["chain"] == chain]


def chains(compiled) -> set[str]:
    return {c["add"]["chain"]["name"] for c in compiled.commands if "chain" in c["add"]}


def compiled(text: str):
    return compile_ruleset(parse_text(text, interfaces=VIEW), VIEW)


def label(bit: int) -> dict:
    return {"mangle": {"key": {"ct": {"key": "label"}}, "value": bit}}


def test_floating_rulesets_have_no_binding_chains():
    result = compiled("block all\npass in on int0 proto udp keep state (floating)\n")
    assert not any(name.startswith(("bind_", "ifcheck_")) for name in chains(result))
    assert not any("label" in str(expr) for name in chains(result) for expr in chain_rules(result, name))


def test_if_bound_rule_binds_the_side_to_the_packets_interface():
    result = compiled("block all\npass in on int0 proto udp keep state (if-bound)\n")
    assert {"bind_a_in", "bind_b_in", "bind_a_out", "bind_b_out"} <= chains(result)
    creating = [r for r in chain_rules(result, "filter_in") if {"goto": {"target": "bind_a_in"}} in r]
    assert creating and all(r[-2]["mangle"]["key"] == {"ct": {"key": "mark"}} for r in creating)
    bind = chain_rules(result, "bind_a_in")
    index = next(i for i, r in enumerate(bind) if {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "int0"}} in r)
    assert bind[index][1:] == [label(LABEL_BOUND["A"]), label(label_bit("A", index)), {"accept": None}]
    assert bind[-1] == [{"accept": None}]  # a device unknown at load time: floating
    assert any(w.endswith("not enforced by the kernel ruleset") for w in map(str, result.warnings)) is False


def test_state_check_returns_to_the_rules_when_bound_elsewhere():
    result = compiled("set state-policy if-bound\nblock all\npass out on ext0 proto tcp keep state\n")
    assert not any("if-bound" in str(w) for w in result.warnings)
    check = chain_rules(result, "ifcheck_a_out_reply")  # replies of an inbound state leave through the out-pass
    bound = {"match": {"op": "in", "left": {"ct": {"key": "label"}}, "right": LABEL_BOUND["A"]}}
    devices = [r[1]["match"]["right"] for r in check[:-2]]
    assert all(r[0] == bound and r[1]["match"]["left"] == {"meta": {"key": "oifname"}} for r in check[:-2])
    assert [r[2]["match"]["right"] for r in check[:-2]] == [label_bit("A", i) for i in range(len(devices))]
    assert all(r[3] == {"goto": {"target": "state_a_out_reply"}} for r in check[:-2])
    assert check[-2] == [bound, {"return": None}]
    assert check[-1] == [{"goto": {"target": "state_a_out_reply"}}]
    assert [{"accept": None}] in chain_rules(result, "state_a_out_reply")
    # the policy also binds translation-forced states
    forced = [r for r in chain_rules(result, "filter_out") if {"goto": {"target": "bind_b_out"}} in r]
    assert forced


def test_nat_pass_binds_inline_or_warns():
    result = compiled("set state-policy if-bound\nnat pass on ext0 from 10.77.0.0/24 to any -> 172.31.250.1\n"
                      "nat pass from 10.0.0.0/8 to any -> 172.31.250.1\npass all\n")
    nat = chain_rules(result, "nat_post")
    bound = [r for r in nat if label(LABEL_BOUND["B"]) in r]
    ext0 = {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "ext0"}}
    assert bound and all(ext0 in r and label(label_bit("B", IFS.index("ext0"))) in r for r in bound)
    assert len(bound) < len(nat)  # the rule without an interface stays floating
    assert any("nat pass: if-bound needs one interface" in str(w) for w in result.warnings)


def test_the_bind_chains_follow_the_rules_interface_names():
    result = compile_ruleset(parse_text("pass in on em9 all keep state (if-bound)\n"), None)
    bind = chain_rules(result, "bind_a_in")
    assert bind[0][0]["match"]["right"] == "em9" and len(bind) == 2


def test_max_shares_one_ct_count_across_branches_and_passes():
    # pf expands { tcp, udp } into two rules, each with its own limit; ! 10.0.0.0/8 makes branches
    result = compiled("pass proto { tcp, udp } from ! 10.0.0.0/8 to any port 53 keep state (max 7)\n")
    for number in (0, 1):
        assert chain_rules(result, f"max_r{number}") == [[{"ct count": {"val": 7, "inv": True}}, {"drop": None}]]
        for chain in ("filter_in", "filter_out"):
            rules = chain_rules(result, chain)
            jumps = [i for i, r in enumerate(rules) if {"jump": {"target": f"max_r{number}"}} in r]
            assert jumps and all(rules[i + 1][-1] == {"accept": None} for i in jumps)  # then the state-creating rule
    warnings = [str(w) for w in result.warnings]
    assert not any("option max" in w for w in warnings)
    assert any("adaptive timeouts" in w for w in warnings)


def test_max_src_conn_and_rate_feed_the_overload_companion_set():
    result = compiled("table <bad> persist\nblock quick from <bad>\n"
                      "pass in on ext0 proto tcp to port 22 keep state (max-src-conn 5, max-src-conn-rate 3/7, overload <bad> flush global)\n")
    sets = {c["add"]["set"]["name"]: c["add"]["set"] for c in result.commands if "set" in c["add"]}
    assert {"tbl0_v4_ovl", "tbl0_v6_ovl", "r1_conn_v4", "r1_conn_v6", "r1_rate_v4", "r1_rate_v6"} <= set(sets)
    assert "interval" not in sets["tbl0_v4_ovl"].get("flags", [])  # the packet path cannot add to interval sets
    assert sets["r1_rate_v4"]["flags"] == ["timeout"] and sets["r1_rate_v4"]["timeout"] == 7
    limits = [r for r in chain_rules(result, "filter_in") if r[-1] == {"drop": None} and any("set" in e for e in r)]
    conn = next(r for r in limits if any(e.get("set", {}).get("set") == "@r1_conn_v4" for e in r))
    assert {"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@r1_conn_v4",
                    "stmt": [{"ct count": {"val": 5, "inv": True}}]}} in conn
    assert {"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@tbl0_v4_ovl"}} in conn
    rate = next(r for r in limits if any(e.get("set", {}).get("set") == "@r1_rate_v6" for e in r))
    stmt = next(e["set"] for e in rate if e.get("set", {}).get("set") == "@r1_rate_v6")
    assert stmt["op"] == "update" and stmt["stmt"] == [{"limit": {"rate": 37029, "per": "day", "burst": 3, "inv": True}}]
    # the table's lookups check both sets; pfctl -T sees the companion sets through the metadata
    blocks = [r for r in chain_rules(result, "filter_in") if r[-1] == {"drop": None} and "@tbl0" in str(r)]
    assert {str(r).count("_ovl") for r in blocks} == {0, 1}
    assert result.metadata["tables"][0]["overload"] == {"ip": "tbl0_v4_ovl", "ip6": "tbl0_v6_ovl"}
    warnings = [str(w) for w in result.warnings]
    # flush is carried out by the overload flusher (pfha.nft.overload): no compile-time warning
    assert not any("overload flush" in w for w in warnings) and result.metadata["overload_flush"]["rules"][0]["scope"] == "global"
    assert not any("max-src-conn" in w or "source-track" in w or "option overload" in w for w in warnings)


def test_negated_overload_table_excludes_both_sets():
    result = compiled("pass in proto tcp from ! <bad> keep state (max-src-conn 1, overload <bad>)\n")
    rules = [r for r in chain_rules(result, "filter_in") if "@tbl0_v4" in str(r) and r[-1] == {"accept": None}]
    assert rules and all("@tbl0_v4_ovl" in str(r) and str(r).count("'!='") >= 2 for r in rules)


def test_rate_units():
    from pfha.nft.compile import _rate

    assert _rate(10, 5) == (2, "second")
    assert _rate(3, 60) == (3, "minute")
    assert _rate(3, 7) == (37029, "day")  # 3 per 7 s is 37028.6 a day: rounded up
