"""Which ``synproxy state`` rules compile to real nft synproxy, and the chains they get (no kernel).

The conditions are those of :mod:`pfha.nft.synproxy`; every refusal must come with a warning
that names the reason, and every rule compiled for real must get no warning.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.conf import ast, parse_text
from pfha.conf.interfaces import InterfaceView
from pfha.nft import synproxy as sp
from pfha.nft.compile import SYNPROXY_CHAINS, compile_ruleset

VIEW = InterfaceView.from_specs(["ext0=172.31.250.1/24", "int0=10.77.0.1/24", "lo0=127.0.0.1/8"])
HEAD = "set skip on lo0\n"
BASE = "block in all\npass out all\n"
PROXY = "pass in on ext0 proto tcp from any to 10.77.0.10 port 80 synproxy state\n"


def compiled(text: str):
    return compile_ruleset(parse_text(text, "pf.conf", VIEW), VIEW)


def synproxy_warnings(result) -> list[str]:
    return [str(w) for w in result.warnings if "synproxy" in str(w)]


def chain_rules(result, chain: str) -> list[dict]:
    return [c["add"]["rule"] for c in result.commands if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain]


def test_plain_rule_is_real_and_gets_its_chains():
    result = compiled(HEAD + BASE + PROXY)
    assert synproxy_warnings(result) == []
    assert result.metadata["synproxy"] == [2]
    chains = {c["add"]["chain"]["name"]: c["add"]["chain"] for c in result.commands if "chain" in c.get("add", {})}
    assert [(chains[n]["hook"], chains[n]["prio"]) for n in SYNPROXY_CHAINS] == [
        ("prerouting", -300), ("forward", 0), ("input", 0), ("output", 0)]
    raw = json.dumps(chain_rules(result, "synproxy_raw"))
    assert '"notrack": null' in raw and '"right": "ext0"' in raw and '"lo"' in raw  # skip, then untrack
    forward = json.dumps(chain_rules(result, "synproxy_fwd"))
    assert forward.count('"synproxy": {"mss": 1460}') == 2 and "wscale" not in forward  # pf's SYN-ACK: MSS only
    out = chain_rules(result, "synproxy_out")
    assert "mangle" in json.dumps(out[-1]) and '"iifname"' not in json.dumps(out[-1])
    # the SYN-ACK and the client's ACK are let through before the state-mismatch drop
    for chain, comment in (("filter_out", "SYN-ACK"), ("filter_in", "cookie check")):
        comments = [r.get("comment", "") for r in chain_rules(result, chain)]
        mismatch = next(i for i, c in enumerate(comments) if c.startswith("state mismatch"))
        assert any(comment in c for c in comments[:mismatch]), comments


def test_family_free_rule_gets_both_mss_values():
    result = compiled(HEAD + BASE + "pass in on ext0 proto tcp to port 80 synproxy state\n")
    forward = json.dumps(chain_rules(result, "synproxy_fwd"))
    assert '"synproxy": {"mss": 1460}' in forward and '"synproxy": {"mss": 1440}' in forward


def test_rulesets_without_real_synproxy_compile_as_before():
    result = compiled(HEAD + BASE + "pass in on ext0 proto tcp to port 80 keep state\n")
    names = {c["add"]["chain"]["name"] for c in result.commands if "chain" in c.get("add", {})}
    assert not names & set(SYNPROXY_CHAINS) and result.metadata["synproxy"] == []
    assert "synproxy" not in json.dumps(result.commands)


@pytest.mark.parametrize("extra, rule, reason", [
    ("", "pass out on int0 proto tcp to 10.77.0.10 port 80 synproxy state", "not a `pass in` rule"),
    ("", "pass on ext0 proto tcp to 10.77.0.10 port 80 synproxy state", "not a `pass in` rule"),
    ("", "pass in on ext0 proto tcp to 10.77.0.10 port 80 synproxy state (if-bound)", "if-bound"),
    ("", "pass in on ext0 proto tcp to 10.77.0.10 port 80 synproxy state (max 10)", "state limits (max)"),
    ("", "pass in on ext0 proto tcp to 10.77.0.10 port 80 synproxy state (max-src-conn 5)", "state limits"),
    ("", "pass in on ext0 proto tcp to 10.77.0.10 port 80 tag WEB synproxy state", "sets a tag"),
    ("", "pass in on ext0 proto tcp to 10.77.0.10 port 80 flags any synproxy state", "bare ACKs"),
    ("pass out tagged WEB\n", PROXY.strip(), "`tagged` at line"),
    ("rdr on ext0 proto tcp to 172.31.250.1 port 80 -> 10.77.0.10 port 80\n", PROXY.strip(), "rdr at line"),
    ("rdr pass on ext0 proto tcp to 172.31.250.1 port 8080 -> 10.77.0.10 port 80\n", PROXY.strip(), "rdr pass at line"),
    ("rdr on ext0 proto tcp to 10.77.0.10 port 80 -> 10.77.0.99\n", PROXY.strip(), "rdr at line"),
    ("nat on ext0 from any to 10.77.0.0/24 -> 172.31.250.1\n", PROXY.strip(), "nat at line"),
    ("binat on ext0 from 10.77.0.10 to any -> 172.31.250.7\n", PROXY.strip(), "binat at line"),
    ("pass in proto tcp to port 80 no state\n", PROXY.strip(), "may pass ACKs without state"),
    ("block return in on ext0 proto tcp to port 80\n", PROXY.strip(), "may answer (block return)"),
])
def test_refusals_keep_state_with_a_reason(extra, rule, reason):
    text = HEAD + ("" if extra.startswith(("pass", "block")) else extra) + BASE + \
        (extra if extra.startswith(("pass", "block")) else "") + rule + "\n"
    result = compiled(text)
    warnings = synproxy_warnings(result)
    assert len(warnings) >= 1 and all("compiled as keep state" in w for w in warnings), warnings
    assert reason in warnings[0], warnings
    assert result.metadata["synproxy"] == [] and "synproxy_raw" not in json.dumps(result.commands)


def test_default_pass_needs_a_covering_block():
    result = compiled(HEAD + "pass out all\n" + PROXY)
    assert "no plain `block` rule covers" in synproxy_warnings(result)[0]
    # a block on another interface does not cover it; one on its interface does
    assert synproxy_warnings(compiled(HEAD + "block in on int0\npass out all\n" + PROXY))
    assert synproxy_warnings(compiled(HEAD + "block in on ext0\npass out all\n" + PROXY)) == []


def test_translations_that_cannot_touch_leave_it_real():
    text = HEAD + ("nat on ext0 from 10.77.0.0/24 to any -> 172.31.250.1\n"
                   "rdr on ext0 proto tcp to 172.31.250.1 port 25 -> 10.77.0.25\n"
                   "no rdr on ext0 proto tcp to 10.77.0.10\n") + BASE + \
        "pass in on ext0 proto tcp from ! 10.77.0.0/24 to 10.77.0.10 port 80 synproxy state\n"
    result = compiled(text)
    assert synproxy_warnings(result) == [] and result.metadata["synproxy"] == [2]


def test_shields_are_the_earlier_deciders_that_may_overlap():
    text = HEAD + BASE + PROXY + (
        "pass in quick on ext0 proto tcp from 198.51.100.1 to any port 80\n"  # quick: decides first
        "pass in on int0 proto tcp to port 80\n"  # other interface: disjoint
        "block in on ext0 proto tcp from 198.51.100.2\n"  # later, non-quick: decides last
        "pass in on ext0 proto udp to port 80\n"  # other protocol
        "pass in on ext0 proto tcp to port 80 flags SA/SA\n")  # never matches a SYN (nor a bare ACK)
    ruleset = parse_text(text, "pf.conf", VIEW)
    rules = list(ruleset.filter)
    plan = sp.plan(rules, ruleset.translation, ruleset.scrub, lambda n: {n}, lambda r: False)
    assert [r.number for r in plan.real] == [2]
    assert sorted(r.number for r in rules if id(r) in plan.shields) == [3, 5]
    raw = chain_rules(compiled(text), "synproxy_raw")
    verdicts = [("notrack" if "notrack" in json.dumps(r["expr"]) else "return") for r in raw[1:] if "skip" not in r.get("comment", "")]
    assert verdicts == ["return", "return", "notrack"]  # quick @3, last-match @5, then the rule


def test_quick_rule_before_it_blocks_nothing_it_would_not():
    # a quick block in front of the synproxy rule decides its SYNs in the raw chain too
    text = HEAD + "block in quick on ext0 from 203.0.113.0/24\n" + BASE + PROXY
    raw = chain_rules(compiled(text), "synproxy_raw")
    assert [("notrack" if "notrack" in json.dumps(r["expr"]) else "return") for r in raw[2:]] == ["return", "notrack"]


def test_tutorial_synproxy_rules_stay_keep_state_because_of_rdr(shared):
    """The tutorial's three synproxy rules serve rdr'd connections: pfha cannot proxy those."""
    for name in ("corrected", "as-published"):
        path = shared / "seed" / "configs" / name / "pf.conf"
        from pfha.nft.testbed import tutorial_view

        view = tutorial_view()
        result = compile_ruleset(parse_text(path.read_text(), "pf.conf", view), view)
        warnings = synproxy_warnings(result)
        assert len(warnings) == 3 and all("rdr at line" in w for w in warnings), warnings
        assert result.metadata["synproxy"] == []


FLAGS = st.builds(ast.TcpFlags, st.integers(0, 0xFF), st.integers(0, 0xFF)).map(lambda f: ast.TcpFlags(f.set & f.mask, f.mask))


@settings(max_examples=300, deadline=None)
@given(flags=FLAGS, packet=st.integers(0, 0xFF))
def test_flags_can_match_agrees_with_brute_force(flags, packet):
    must_set, must_clear = packet & 0x17, ~packet & 0x17  # FIN SYN RST ACK fixed, the others free
    possible = any((p & flags.mask) == flags.set for p in range(256) if p & 0x17 == must_set)
    assert sp.flags_can_match(flags, must_set, must_clear & 0x17) == possible


PORTS = st.one_of(st.none(), st.builds(lambda op, a, b: ast.PortMatch(op, min(a, b), max(a, b) if op in (":", "><", "<>") else None),
                                       st.sampled_from(["=", "!=", "<", "<=", ">", ">=", ":", "><", "<>"]),
                                       st.integers(0, 40), st.integers(0, 40)))


OPS = {"=": lambda p, a, b: p == a, "!=": lambda p, a, b: p != a, "<": lambda p, a, b: p < a, "<=": lambda p, a, b: p <= a,
       ">": lambda p, a, b: p > a, ">=": lambda p, a, b: p >= a, ":": lambda p, a, b: a <= p <= b,
       "><": lambda p, a, b: a < p < b, "<>": lambda p, a, b: p < a or p > b}


def port_members(port) -> set[int]:
    """pf's port operators, directly (ports 0..50 stand for all)."""
    return {p for p in range(51) if port is None or OPS[port.op](p, port.low, port.high)}


@settings(max_examples=300, deadline=None)
@given(a=PORTS, b=PORTS)
def test_ports_disjoint_is_never_wrong(a, b):
    ranges = {p for p in range(51) if any(lo <= p <= hi for lo, hi in sp.port_ranges(a))}
    assert ranges == port_members(a)
    if sp.ports_disjoint(a, b):
        assert not port_members(a) & port_members(b)
