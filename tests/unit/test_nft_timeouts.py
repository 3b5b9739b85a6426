"""pf timeouts -> conntrack timeout policies: the mapping, the precedence, where the compiler
attaches them, the warnings, and the loader's in-place batch (pure: no kernel)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.conf import ast, parse_text
from pfha.engine.state import DEFAULT_TIMEOUTS
from pfha.nft import loader
from pfha.nft import timeouts as t
from pfha.nft.compile import compile_ruleset


def compiled(text: str):
    return compile_ruleset(parse_text(text), None)


def objects(c) -> dict[str, dict]:
    return {cmd["add"][t.OBJECT]["name"]: cmd["add"][t.OBJECT] for cmd in c.commands if t.OBJECT in cmd.get("add", {})}


def rules(c, chain: str) -> list[dict]:
    return [cmd["add"]["rule"] for cmd in c.commands if cmd.get("add", {}).get("rule", {}).get("chain") == chain]


def attached(rule: dict) -> list[str]:
    return [e[t.OBJECT] for e in rule["expr"] if t.OBJECT in e]


def test_mapping_covers_pf_names_with_conntrack_states():
    tcp = dict(t.policies(DEFAULT_TIMEOUTS, ("tcp",))[0].states)
    assert tcp == {"syn_sent": 120, "syn_sent2": 120, "syn_recv": 30, "established": 86400, "fin_wait": 900,
                   "close_wait": 900, "last_ack": 900, "time_wait": 45, "close": 90}
    udp = dict(t.policies(DEFAULT_TIMEOUTS, ("udp",))[0].states)
    assert udp == {"unreplied": 60, "replied": 60}


def test_precedence_defaults_then_optimization_then_set_timeout_then_rule():
    options = ast.Options(timeouts=(("tcp.established", 600), ("udp.first", 9)), optimization="aggressive")
    rule = parse_text("pass in proto tcp keep state (tcp.established 60)\n").filter[0]
    values = t.effective(options, rule)
    assert values["tcp.established"] == 60  # the rule's own
    assert values["udp.first"] == 9  # set timeout
    assert values["tcp.first"] == 30  # aggressive preset
    assert values["udp.multiple"] == 60  # pf's default
    assert t.effective(options)["tcp.established"] == 600


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(t.MAPPED)), st.integers(1, 10**6)))
def test_every_policy_value_is_the_effective_pf_value(overrides):
    values = {**DEFAULT_TIMEOUTS, **overrides}
    for policy in t.policies(values):
        states = dict(policy.states)
        for pf_name, conntrack_states in t.POLICY_STATES[policy.protocol].items():
            assert all(states[s] == values[pf_name] for s in conntrack_states)
        assert set(states) == {s for group in t.POLICY_STATES[policy.protocol].values() for s in group}


def test_names_follow_content():
    a, b = t.policies({**DEFAULT_TIMEOUTS, "udp.first": 3}, ("udp",)), t.policies({**DEFAULT_TIMEOUTS, "udp.first": 3}, ("udp",))
    c = t.policies({**DEFAULT_TIMEOUTS, "udp.first": 4}, ("udp",))
    assert a[0].name == b[0].name != c[0].name
    assert a[0].name.startswith("pfto_udp_") and len(a[0].name) < 32


def test_no_timeouts_no_objects_no_statements():
    c = compiled("block all\npass in proto tcp keep state\npass out keep state\n")
    assert objects(c) == {}
    assert not any(t.OBJECT in str(cmd) for cmd in c.commands)


def test_rule_gets_the_policies_of_its_protocols_on_the_creating_branch_only():
    c = compiled("block all\npass in proto udp keep state (udp.first 3)\npass in proto tcp keep state\npass in proto icmp keep state\n")
    objs = objects(c)
    udp3 = next(n for n, o in objs.items() if o["protocol"] == "udp" and o["policy"]["unreplied"] == 3)
    tcp_default = next(n for n, o in objs.items() if o["protocol"] == "tcp" and o["policy"]["established"] == 86400)
    creating = [r for r in rules(c, "filter_in") if any("mangle" in e for e in r["expr"]) and r.get("comment", "").startswith("@")]
    originals = [r for r in creating if {"match": {"op": "==", "left": {"ct": {"key": "direction"}}, "right": "original"}} in r["expr"]]
    replies = [r for r in creating if r not in originals]
    assert [attached(r) for r in originals if r["comment"].startswith("@1 ")] == [[udp3]]
    assert [attached(r) for r in originals if r["comment"].startswith("@2 ")] == [[tcp_default]]
    assert [attached(r) for r in originals if r["comment"].startswith("@3 ")] == [[]]  # icmp: no policy in nft 1.0.6
    assert all(attached(r) == [] for r in replies)  # conntrack already confirmed: a policy would be ignored
    for rule in originals:
        exprs = [next(iter(e)) for e in rule["expr"]]
        if t.OBJECT in exprs:
            assert exprs.index(t.OBJECT) < exprs.index("mangle")  # before the state is recorded


def test_rule_without_protocol_carries_both_and_out_pass_yields_to_in_pass():
    c = compiled("set timeout tcp.established 100\npass out keep state\n")
    out = [r for r in rules(c, "filter_out") if r.get("comment", "").startswith("@0") and attached(r)]
    side_a_unset = {"match": {"op": "==", "left": {"&": [{"ct": {"key": "mark"}}, 1]}, "right": 0}}
    side_a_set = {"match": {"op": "==", "left": {"&": [{"ct": {"key": "mark"}}, 1]}, "right": 1}}
    assert out and all(len(attached(r)) == 2 and r["expr"][0] == side_a_unset for r in out)  # flags S/SA: tcp and non-tcp branches
    twins = [r for r in rules(c, "filter_out") if r.get("comment", "").startswith("@0") and r["expr"][0] == side_a_set]
    assert len(twins) == len(out) and all(attached(r) == [] for r in twins)
    assert [r["expr"][1:] for r in twins] == [[e for e in r["expr"][1:] if t.OBJECT not in e] for r in out]


def test_translation_forced_states_get_the_global_policy():
    c = compiled("set timeout udp.first 7\nnat on eth0 from 10.0.0.0/8 to any -> 192.0.2.1\n")
    forced = [r for r in rules(c, "filter_out") if r.get("comment") == "translation forces state" and attached(r)]
    udp7 = next(n for n, o in objects(c).items() if o["protocol"] == "udp")
    assert forced and udp7 in attached(forced[0])


def test_warnings_name_what_stays_approximate():
    c = compiled("set timeout { udp.single 5, icmp.error 3, tcp.established 100 }\n"
                 "pass in proto tcp keep state (tcp.established 60, tcp.tsdiff 5)\n"
                 "pass in proto icmp keep state (icmp.first 5)\n")
    text = [str(w) for w in c.warnings]
    assert any("set timeout udp.single: not applied" in w for w in text)
    assert any("set timeout icmp.error: not applied" in w for w in text)
    assert any(":2: state option tcp.tsdiff: not enforced per rule" in w for w in text)
    assert any(":3: state option icmp.first: not enforced per rule: nft 1.0.6 creates TCP and UDP" in w for w in text)
    assert not any("tcp.established" in w for w in text)
    assert not any("state option tcp.tsdiff: not enforced by the kernel ruleset" in w for w in text)  # one warning, not two
    assert "net.netfilter.nf_conntrack_udp_timeout" not in c.metadata["sysctls"]  # udp.single has no sysctl either


def test_src_track_pfctl_adds_for_a_conn_rate_is_not_warned_about():
    c = compiled("table <bad> persist\n"
                 "pass in proto tcp to port 22 keep state (max-src-conn-rate 10/5, overload <bad>)\n"
                 "pass in proto tcp to port 23 keep state (src.track 7, max-src-conn-rate 10/5)\n")
    text = [str(w) for w in c.warnings]
    assert not any(":2: state option src.track" in w for w in text)  # pfctl's own src.track 5: the rate set
    assert any(":3: state option src.track: not enforced per rule" in w for w in text)  # one given beside it


def test_text_command_is_nft_syntax():
    policy = t.Policy("udp", (("replied", 8), ("unreplied", 3)))
    assert t.text_command(policy.command()) == (
        f"add ct timeout inet pfha {policy.name} {{ protocol udp; l3proto ip; policy = {{ replied : 8, unreplied : 3 }}; }}")


def test_split_and_referenced():
    c = compiled("pass in proto udp keep state (udp.first 3)\n")
    policies, rest = t.split(c.commands)
    assert {p["add"][t.OBJECT]["name"] for p in policies} == t.referenced(rest) == set(objects(c))
    assert not any(t.OBJECT in cmd.get("add", {}) for cmd in rest)


def test_inplace_batch_keeps_policies_and_deletes_in_dependency_order():
    existing = [{"chain": {"name": "filter_in"}}, {"counter": {"name": "r0_in"}}, {"map": {"name": "state_a_in"}},
                {"set": {"name": "tbl0_v4"}}, {t.OBJECT: {"name": "pfto_udp_x"}}, {"chain": {"name": "pf_status"}}]
    batch = loader.inplace_batch(existing, [{"add": {"counter": {"name": "n"}}}], enabled=False)
    ops = [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in batch]
    assert ops[:2] == [("add", "table"), ("flush", "table")]
    deleted = [kind for op, kind in ops if op == "delete"]
    assert deleted == ["map", "set", "counter", "chain", "chain"]
    assert t.OBJECT not in deleted
    assert batch[-1] == {"add": {"counter": {"name": "n"}}}
    assert {"add": {"rule": {"family": "inet", "table": "pfha", "chain": "pf_status", "expr": [{"accept": None}]}}} in batch


def test_nat_pass_state_gets_the_global_policy_unless_the_in_pass_made_one():
    c = compiled("set timeout udp.first 7\nnat pass on eth0 from 10.0.0.0/8 to any -> 192.0.2.1\n"
                 "rdr pass on eth0 proto tcp to 192.0.2.1 port 80 -> 10.0.0.80\n")
    post = [r for r in rules(c, "nat_post") if any("snat" in e for e in r["expr"])]
    with_policy = [r for r in post if attached(r)]
    assert with_policy and all(r["expr"][0] == {"match": {"op": "==", "left": {"&": [{"ct": {"key": "mark"}}, 1]}, "right": 0}}
                               for r in with_policy)
    assert len(post) == 2 * len(with_policy)
    pre = [r for r in rules(c, "nat_pre") if any("dnat" in e for e in r["expr"])]
    assert pre and all(attached(r) for r in pre)
