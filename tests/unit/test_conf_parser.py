"""pf.conf parsing, expansion and printing: pfctl's semantics on small rulesets."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from pfha.conf import InterfaceView, ParseError, format_rule, format_ruleset, parse_file, parse_text
from pfha.conf.ast import AnchorRule, DynamicAddress, HostAddress, Rule, TableAddress, TranslationRule

LO0 = InterfaceView.freebsd_defaults()
PAIR = InterfaceView.from_specs(
    [
        "xl0=203.0.113.2/24",
        "xl1=192.168.1.250/24",
        "rl0=10.10.10.250/24",
        "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24",
        "lo0=127.0.0.1/8",
    ]
)


def rules(text: str, view: InterfaceView = LO0) -> list[str]:
    ruleset = parse_text(text, "t.conf", view)
    return [line for line in format_ruleset(ruleset).splitlines()]


# ------------------------------------------------------------------------------ defaults
def test_pass_keeps_state_with_flags_s_sa():
    assert rules("pass") == ["pass all flags S/SA keep state"]


def test_non_tcp_rules_lose_flags_and_modulate():
    assert rules("pass proto { tcp udp } modulate state") == [
        "pass proto tcp all flags S/SA modulate state",
        "pass proto udp all keep state",
    ]


def test_block_policy_applies_to_later_rules_only():
    assert rules("block\nset block-policy return\nblock") == [
        "set block-policy return",
        "block drop all",
        "block return all",
    ]


def test_no_state_and_flags_any():
    assert rules("pass no state\npass proto tcp flags any") == [
        "pass all no state",
        "pass proto tcp all flags any keep state",
    ]


# ------------------------------------------------------------------------------ expansion
def test_expansion_order_is_pfctls():
    # interface, proto, src host, dst host, src port, dst port
    out = rules("pass on { a0 b0 } proto { tcp udp } from { 10.0.0.1 10.0.0.2 } port { 1 2 } to 10.0.0.9")
    assert len(out) == 2 * 2 * 2 * 2
    assert out[0] == "pass on a0 inet proto tcp from 10.0.0.1 port = tcpmux to 10.0.0.9 flags S/SA keep state"
    assert out[1] == "pass on a0 inet proto tcp from 10.0.0.1 port = compressnet to 10.0.0.9 flags S/SA keep state"
    assert out[2].startswith("pass on a0 inet proto tcp from 10.0.0.2")
    assert out[4].startswith("pass on a0 inet proto udp")
    assert out[8].startswith("pass on b0")


def test_conflicting_families_are_dropped():
    assert rules("pass from { 10.0.0.1 ::1 } to 10.0.0.2") == [
        "pass inet from 10.0.0.1 to 10.0.0.2 flags S/SA keep state",
    ]


def test_rule_numbers_and_label_macros():
    ruleset = parse_text('pass in proto tcp from { 1.2.3.4 1.2.3.5 } to any port 80 label "$nr:$srcaddr:$dstport"', "t", LO0)
    assert [r.number for r in ruleset.filter] == [0, 1]
    assert [r.labels for r in ruleset.filter] == [("0:1.2.3.4:80",), ("1:1.2.3.5:80",)]


def test_every_rule_keeps_file_and_line():
    ruleset = parse_text("\n\npass in \\\n  on lo0\nblock", "x.conf", LO0)
    assert [(r.origin.file, r.origin.line) for r in ruleset.filter] == [("x.conf", 3), ("x.conf", 5)]


# ------------------------------------------------------------------------------ interfaces
def test_interface_addresses_come_from_the_view():
    out = rules("pass proto tcp from xl1:network to carp0 port 80", PAIR)
    assert out == [
        f"pass inet proto tcp from 192.168.1.0/24 to 203.0.113.{n} port = http flags S/SA keep state" for n in (10, 11, 12)
    ]


def test_dynamic_addresses_stay_symbolic():
    ruleset = parse_text("pass from (xl0) to any", "t", PAIR)
    assert ruleset.filter[0].src.host.address == DynamicAddress("xl0")


def test_noalias_and_broadcast_modifiers():
    assert rules("pass from carp0:0 to xl1:broadcast", PAIR) == [
        "pass inet from 203.0.113.10 to 192.168.1.255 flags S/SA keep state",
    ]


def test_unknown_interface_is_a_host_error():
    with pytest.raises(ParseError) as error:
        parse_text("pass from em9", "t.conf", PAIR)
    assert str(error.value) == "t.conf:1: no IP address found for em9"
    assert error.value.messages == ("no IP address found for em9", "t.conf:1: could not parse host specification")


def test_antispoof_expands_like_pfctl():
    assert rules("antispoof log quick for xl1", PAIR) == [
        "block drop in log quick on ! xl1 inet from 192.168.1.0/24 to any",
        "block drop in log quick inet from 192.168.1.250 to any",
    ]


def test_interface_specs_parse():
    view = InterfaceView.from_specs(["carp0=203.0.113.10/24,2001:db8::1/64"])
    assert view.addrs("carp0") == (ipaddress.ip_interface("203.0.113.10/24"), ipaddress.ip_interface("2001:db8::1/64"))
    assert view.members("carp") == ("carp0",)
    with pytest.raises(Exception, match="bad interface spec"):
        InterfaceView.from_specs(["nonsense"])


# ------------------------------------------------------------------------------ translation
def test_nat_and_rdr_print_in_load_order():
    text = "rdr on xl0 proto tcp to 203.0.113.11 port www -> { 192.168.1.80 192.168.1.81 }\n" \
           "nat on xl0 from xl1:network -> (xl0)\n" \
           "pass"
    assert rules(text, PAIR) == [
        "nat on xl0 inet from 192.168.1.0/24 to any -> (xl0) round-robin",
        "rdr on xl0 inet proto tcp from any to 203.0.113.11 port = http -> { 192.168.1.80, 192.168.1.81 } round-robin",
        "pass all flags S/SA keep state",
    ]


def test_translation_rules_are_typed():
    ruleset = parse_text("nat pass on xl0 from 10.0.0.0/8 -> 203.0.113.10 port 1024:2048 static-port", "t", PAIR) if False else \
        parse_text("nat pass on xl0 from 10.0.0.0/8 -> 203.0.113.10 port 1024:2048", "t", PAIR)
    rule = ruleset.translation[0]
    assert isinstance(rule, TranslationRule)
    assert (rule.kind, rule.pass_, rule.pool.port_low, rule.pool.port_high) == ("nat", True, 1024, 2048)
    assert rule.pool.addresses[0].address == HostAddress(ipaddress.ip_address("203.0.113.10"), 32)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("rdr on em0 proto tcp -> 10.0.0.1 static-port", "the 'static-port' option is only valid with nat rules"),
        ("nat on em0 -> 10.0.0.1 port 1000 static-port", "the 'static-port' option can't be used when specifying a port range"),
        ("nat on em0 -> <t> bitmask", "tables are not supported by pool type"),
        ("block route-to (em0 10.0.0.1)", "route-to, reply-to and dup-to are not supported on block rules"),
        ("pass proto tcp from any port 500:100", "invalid port range"),
        ("pass proto bogus", "unknown protocol bogus"),
        ("pass in on", "syntax error"),
        ("block in from any to any port 80", "port only applies to tcp/udp/sctp"),
        ("pass inet6 proto icmp", "icmp version does not match address family"),
        ("pass proto icmp icmp-type echoreq", "must indicate address family with icmp-type/code"),
        ("block keep state", "keep state on block rules doesn't make sense"),
        ("block return-rst proto udp", "return-rst can only be applied to TCP rules"),
        ("pass in quick on $nope", "macro 'nope' not defined"),
    ],
)
def test_errors_are_pfctls_one_line_messages(text, message):
    with pytest.raises(ParseError) as error:
        parse_text(text, "t.conf", LO0)
    assert f"t.conf:1: {message}" in error.value.messages


def test_every_error_is_reported_then_the_ruleset_rejected():
    with pytest.raises(ParseError) as error:
        parse_text("pass\nfoo bar\npass\nblock on\n", "t.conf", LO0)
    assert error.value.messages == ("t.conf:2: syntax error", "t.conf:4: syntax error")


# ------------------------------------------------------------------------------ tables, anchors
def test_tables_inline_and_from_file(tmp_path: Path):
    (tmp_path / "hosts").write_text("10.0.0.1\n!10.0.0.0/8 # comment\n")
    conf = tmp_path / "pf.conf"
    conf.write_text('table <t> persist { 192.0.2.1 } file "hosts"\npass from <t>\n')
    ruleset = parse_file(conf, LO0, include_base=tmp_path)
    table = ruleset.table("t")
    assert table.persist and [str(e.address.address) for e in table.entries] == ["192.0.2.1", "10.0.0.1", "10.0.0.0"]
    assert table.entries[-1].negated
    assert format_ruleset(ruleset).splitlines()[0] == 'table <t> persist { 192.0.2.1 } file "hosts"'
    assert ruleset.filter[0].src.host.address == TableAddress("t")


def test_include_reports_errors_in_the_included_file(tmp_path: Path):
    (tmp_path / "inc.conf").write_text("pass\nnonsense\n")
    conf = tmp_path / "pf.conf"
    conf.write_text("include \"inc.conf\"\n")
    with pytest.raises(ParseError) as error:
        parse_file(conf, LO0, include_base=tmp_path)
    assert str(error.value) == "inc.conf:2: syntax error"


def test_inline_anchors_nest():
    ruleset = parse_text('anchor "a" in on lo0 {\n pass\n anchor {\n  block\n }\n}\n', "t", LO0)
    anchor = ruleset.filter[0]
    assert isinstance(anchor, AnchorRule) and anchor.name == "a" and anchor.inline
    assert isinstance(anchor.ruleset.filter[0], Rule)
    assert format_ruleset(ruleset) == (
        'anchor "a" in on lo0 all {\n'
        "  pass all flags S/SA keep state\n"
        "  anchor all {\n"
        "    block drop all\n"
        "  }\n"
        "}\n"
    )


def test_format_rule_prints_one_rule():
    ruleset = parse_text("pass in log quick on lo0 inet proto tcp to 127.0.0.1 port ssh", "t", LO0)
    assert format_rule(ruleset.filter[0]) == "pass in log quick on lo0 inet proto tcp from any to 127.0.0.1 port = ssh flags S/SA keep state"


def test_freebsd_names_not_linux_ones():
    assert rules("pass proto 112\npass proto pfsync\npass proto udp to port 123") == [
        "pass proto carp all keep state",
        "pass proto pfsync all keep state",
        "pass proto udp from any to any port = ntp keep state",
    ]


# ------------------------------------------------------------------------------ the tutorial's configs
@pytest.mark.parametrize("variant", ["as-published", "corrected"])
def test_seed_configs_check_cleanly(shared, variant):
    ruleset = parse_file(shared / "seed" / "configs" / variant / "pf.conf", PAIR)
    text = format_ruleset(ruleset)
    assert "nat on xl0 inet from 192.168.1.0/24 to any" in text
    assert "block drop in quick on ! xl1 inet from 192.168.1.0/24 to any" in text
    assert "pass quick proto carp all keep state" in text
    # printed output parses back to itself
    again = parse_text(text, "again", PAIR)
    assert format_ruleset(again).endswith(text.split("set block-policy drop\n", 1)[1])


def test_load_anchor_is_parsed_after_the_main_ruleset(tmp_path: Path):
    (tmp_path / "spam.conf").write_text("pass in proto tcp to port 80\n")
    (tmp_path / "pf.conf").write_text('anchor "spam"\nload anchor "spam" from "spam.conf"\n')
    ruleset = parse_file(tmp_path / "pf.conf", LO0, include_base=tmp_path)
    assert ruleset.loaded_anchors == (("spam", "spam.conf"),)
    assert [r.dst.port.low for r in ruleset.anchor("spam").filter] == [80]
    assert format_ruleset(ruleset) == (
        'anchor "spam" all\n'
        "\nLoading anchor spam from spam.conf\n"
        "pass in proto tcp from any to any port = http flags S/SA keep state\n"
    )


def test_missing_include_reports_and_continues(tmp_path: Path):
    (tmp_path / "pf.conf").write_text('include "nope.conf"\npass on\n')
    with pytest.raises(ParseError) as error:
        parse_file(tmp_path / "pf.conf", LO0, include_base=tmp_path)
    name = str(tmp_path / "pf.conf")
    assert str(error.value) == f"{name}:1: failed to include file nope.conf: No such file or directory"
    assert error.value.messages[-1] == f"{name}:2: syntax error"
