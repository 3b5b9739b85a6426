"""Ruleset lint: each check fails on a ruleset with the mistake and stays quiet without it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pfha.audit.findings import Severity
from pfha.audit.lint import lint_node

from audit_helpers import GOOD_PF, make_pair


def lint(tmp_path, pf_text=GOOD_PF, **kwargs):
    a, b = make_pair(tmp_path, pf_text, **kwargs)
    findings, ruleset = lint_node(a, peers=[b])
    assert ruleset is not None
    return findings


def by_check(findings, check):
    return [f for f in findings if f.check == check]


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_good_ruleset_has_no_findings(tmp_path):
    assert lint(tmp_path) == []


def test_unused_macro(tmp_path):
    text = GOOD_PF.replace('web = "10.1.1.80"', 'web = "10.1.1.80"\nmail = "10.1.1.25"')
    (finding,) = by_check(lint(tmp_path, text), "lint.unused-macro")
    assert finding.place.line == line_of(text, "mail =")
    assert "mail" in finding.message and finding.severity == Severity.INFO


def test_unused_table(tmp_path):
    text = GOOD_PF.replace("set skip on lo0", "table <spammers> { 198.51.100.9 }\nset skip on lo0")
    (finding,) = by_check(lint(tmp_path, text), "lint.unused-table")
    assert finding.place.line == line_of(text, "table <spammers>")
    used = text + "block in quick on $ext_if from <spammers>\n"
    assert by_check(lint(tmp_path, used), "lint.unused-table") == []


def test_unknown_interface_names_the_macro_to_fix(tmp_path):
    text = GOOD_PF.replace('sync_if = "sync0"', 'sync_if = "dc0"')
    findings = lint(tmp_path, text)
    (unknown,) = by_check(findings, "lint.unknown-interface")
    assert unknown.place.line == line_of(text, "proto pfsync")
    assert "dc0" in unknown.message and "never matches" in unknown.message
    assert unknown.related[0].line == line_of(text, "sync_if =")


def test_sync_blocked_on_the_interface_it_uses(tmp_path):
    text = GOOD_PF.replace('sync_if = "sync0"', 'sync_if = "dc0"')
    (finding,) = by_check(lint(tmp_path, text), "lint.ha-traffic")
    assert finding.severity == Severity.ERROR
    assert finding.place.line == line_of(text, "proto pfsync")
    assert finding.fix == f'set sync_if = "sync0" (line {line_of(text, "sync_if =")})'
    assert finding.example == f"out on sync0: pfsync 10.9.9.2 > 10.9.9.3 is blocked by line {line_of(text, 'block log all')}"


def test_carp_blocked_without_a_pass_rule(tmp_path):
    text = GOOD_PF.replace("pass quick proto carp\n", "")
    findings = by_check(lint(tmp_path, text), "lint.ha-traffic")
    assert {f.place.line for f in findings} == {line_of(text, "block log all")}
    assert any("vhid 1" in f.message for f in findings)
    assert "both become MASTER" in findings[0].message


def test_rdr_shadowed_by_an_earlier_rdr(tmp_path):
    text = GOOD_PF.replace("port 80 -> $web", "port 80 -> $web\n"
                           "rdr on $ext_if proto tcp from any to 192.0.2.10 port 80 -> 10.1.1.81")
    (finding,) = by_check(lint(tmp_path, text), "lint.rdr-shadowed")
    first = line_of(text, "-> $web")
    assert finding.place.line == first + 1 and finding.related[0].line == first
    assert finding.severity == Severity.ERROR
    assert "{ 10.1.1.80, 10.1.1.81 } round-robin" in finding.fix
    assert "is translated by line" in finding.example


def test_rdr_pool_is_not_shadowed(tmp_path):
    text = GOOD_PF.replace("port 80 -> $web", "port 80 -> { 10.1.1.80, 10.1.1.81 } round-robin")
    text = text.replace("to $web port 80", "to 10.1.1.0/24 port 80").replace('web = "10.1.1.80"\n', "")
    assert lint(tmp_path, text) == []


def test_nat_shadowed_duplicate_is_a_warning(tmp_path):
    text = GOOD_PF.replace("-> 192.0.2.10\n", "-> 192.0.2.10\nnat on $ext_if from $int_if:network to any -> 192.0.2.10\n")
    (finding,) = by_check(lint(tmp_path, text), "lint.nat-shadowed")
    assert finding.severity == Severity.WARNING and "repeats line" in finding.message


def test_filter_rule_after_a_covering_quick_rule(tmp_path):
    text = GOOD_PF + ("block in quick on $int_if proto tcp from any to any port 23\n"
                      "pass in quick on $int_if proto tcp from $int_if:network to any port 23\n")
    (finding,) = by_check(lint(tmp_path, text), "lint.filter-shadowed")
    assert finding.place.line == len(text.splitlines())
    assert finding.related[0].line == len(text.splitlines()) - 1
    assert "never matches" in finding.message and finding.severity == Severity.WARNING


def test_a_syn_only_pass_does_not_shadow_a_later_block(tmp_path):
    # pass ... keep state carries flags S/SA: packets without SYN fall through to the block.
    text = GOOD_PF + "block in quick on $int_if proto tcp from $int_if:network to any port 443\n"
    assert by_check(lint(tmp_path, text), "lint.filter-shadowed") == []


def test_filter_rule_overridden_by_a_later_rule(tmp_path):
    text = GOOD_PF.replace("block log all\n", "block log all\npass in on $int_if proto udp from any to any port 53\n") \
        + "block in on $int_if proto udp from any to any\n"
    (finding,) = by_check(lint(tmp_path, text), "lint.filter-shadowed")
    assert finding.place.line == line_of(text, "port 53")
    assert finding.severity == Severity.WARNING and "last match" in finding.message


def test_nat_hides_the_source_an_outbound_rule_matches(tmp_path):
    text = GOOD_PF.replace("from 192.0.2.10 to any port 443", "from $int_if:network to any port 443")
    findings = lint(tmp_path, text)
    (hidden,) = by_check(findings, "lint.nat-hides-source")
    assert hidden.place.line == line_of(text, "pass out quick on $ext_if")
    assert hidden.severity == Severity.WARNING and "192.0.2.10" in hidden.fix
    # ...and the LAN's https is now passed in but blocked out:
    (blocked,) = by_check(findings, "lint.forward-blocked")
    assert blocked.place.line == line_of(text, "pass in quick on $int_if")
    assert "matches the source before translation" in blocked.fix


def test_nat_to_the_nodes_own_address(tmp_path):
    text = GOOD_PF.replace("-> 192.0.2.10\n", "-> $ext_if\n").replace("from 192.0.2.10 to", "from $ext_if to")
    (finding,) = by_check(lint(tmp_path, text), "lint.nat-own-address")
    assert finding.severity == Severity.ERROR and "192.0.2.2" in finding.message
    assert finding.fix.startswith("translate to the shared CARP address: nat on $ext_if from $int_if:network to any -> 192.0.2.10")
    assert "after a failover fw2 holds the synced state" in finding.example


def test_nat_to_own_address_is_fine_on_a_single_firewall(tmp_path):
    a, _ = make_pair(tmp_path, GOOD_PF.replace("-> 192.0.2.10\n", "-> $ext_if\n"))
    single = replace(a, config=replace(a.config, carp=()))
    findings, _ = lint_node(single, peers=[])
    assert by_check(findings, "lint.nat-own-address") == []


def test_redirected_traffic_blocked_by_the_filter(tmp_path):
    text = GOOD_PF.replace("pass in quick on $ext_if proto tcp from any to $web port 80\n", "")
    (finding,) = by_check(lint(tmp_path, text), "lint.forward-blocked")
    assert finding.place.line == line_of(text, "rdr on")
    assert "blocked coming in on ext0" in finding.message
    assert finding.example.startswith("in on ext0: tcp 198.51.100.7:40000 > 192.0.2.10:80 [S] is redirected to 10.1.1.80:80")


def test_passed_in_but_blocked_out(tmp_path):
    text = GOOD_PF.replace("pass out quick on $int_if proto tcp from any to $web port 80\n", "")
    findings = by_check(lint(tmp_path, text), "lint.forward-blocked")
    assert {f.place.line for f in findings} == {line_of(text, "pass in quick on $ext_if"), line_of(text, "rdr on")}
    for finding in findings:
        assert "blocked going out on int0" in finding.message
        assert finding.related[0].line == line_of(text, "block log all")
        assert "add a 'pass out quick on int0'" in finding.fix


@pytest.mark.parametrize("line", ["pass in quick on $int_if proto tcp from $int_if:network to any port 443 user 1000"])
def test_unmodelled_conditions_give_no_finding(tmp_path, line):
    text = GOOD_PF.replace("pass in quick on $int_if proto tcp from $int_if:network to any port 443", line)
    text = text.replace("pass out quick on $ext_if proto tcp from 192.0.2.10 to any port 443\n", "")
    assert by_check(lint(tmp_path, text), "lint.forward-blocked") == []


@pytest.mark.parametrize("bad", ["pass in on $int_if frm any\n", "pass in on $nowhere all\n"])
def test_parse_error_is_a_finding_with_the_line(tmp_path, bad):
    a, b = make_pair(tmp_path, GOOD_PF + bad)
    findings, ruleset = lint_node(a, [b])
    assert ruleset is None
    (finding,) = findings
    assert finding.check == "lint.parse" and finding.severity == Severity.ERROR
    assert finding.place.line == len((GOOD_PF + "x").splitlines())


def test_engine_refuting_a_finding_downgrades_it(tmp_path):
    import ipaddress

    from pfha.audit.findings import Finding, Place
    from pfha.audit.lint import Context
    from pfha.audit.match import Matcher, Packet
    from pfha.audit.proof import Probe, engine_available, prove
    from pfha.conf import parse_text

    if not engine_available():
        pytest.skip("the reference engine is not in this build")
    a, _ = make_pair(tmp_path)
    ruleset = parse_text(GOOD_PF, "pf.conf", a.config.interface_view())
    ctx = Context(a, [], ruleset, Matcher(ruleset, a.config.interface_view()), GOOD_PF)
    packet = Packet("out", "sync0", 240, ipaddress.ip_address("10.9.9.2"), ipaddress.ip_address("10.9.9.3"))
    claim = Finding("lint.ha-traffic", Severity.ERROR, Place("pf.conf", 10), "claimed blocked", "fix",
                    probes=(Probe(packet, action="block"),))
    (checked,) = prove(ctx, [claim])
    assert checked.severity == Severity.INFO
    assert checked.proof.startswith("NOT reproduced by the reference engine (out on sync0: pass by line 11")
    (agreed,) = prove(ctx, [replace(claim, probes=(Probe(packet, action="pass", line=11),))])
    assert agreed.severity == Severity.ERROR and agreed.proof.startswith("confirmed")


def test_rule_on_a_skipped_interface(tmp_path):
    text = GOOD_PF + "pass in quick on lo0 all\n"
    (finding,) = by_check(lint(tmp_path, text), "lint.skipped-interface")
    assert finding.place.line == len(text.splitlines())
    assert by_check(lint(tmp_path, GOOD_PF + "pass in quick on $int_if proto udp to port 53\n"),
                    "lint.skipped-interface") == []


def test_rule_on_a_const_empty_table(tmp_path):
    text = GOOD_PF.replace("set skip on lo0", "table <admins> const\nset skip on lo0") + \
        "pass in quick on $ext_if proto tcp from <admins> to 192.0.2.10 port 22\n"
    (finding,) = by_check(lint(tmp_path, text), "lint.empty-table")
    assert finding.place.line == len(text.splitlines())
    assert finding.related[0].line == line_of(text, "table <admins>")
    filled = text.replace("table <admins> const", "table <admins> const { 198.51.100.200 }")
    assert by_check(lint(tmp_path, filled), "lint.empty-table") == []
