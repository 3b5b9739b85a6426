"""Host names in pf.conf resolve through the view's resolver, as pfctl's host_dns() does:
every address of the name (v4 and v6), one rule each, names in tables too, and pfctl's
wording when a name has no address. The real resolver (getaddrinfo) is tested as root in
tests/kernel/test_conf_names_resolver.py."""

from __future__ import annotations

import pytest

from pfha.conf import InterfaceView, parse_text
from pfha.conf.errors import ParseError
from pfha.conf.printer import format_ruleset

NAMES = {"www.example.com": ("192.0.2.80", "2001:db8::80"), "mail.example.com": ("192.0.2.25",)}


def view(asked: list[str] | None = None) -> InterfaceView:
    def resolver(name: str) -> tuple[str, ...]:
        if asked is not None:
            asked.append(name)
        return NAMES.get(name, ())

    return InterfaceView.from_specs(["xl0=203.0.113.2/24"], resolver=resolver)


def printed(text: str, v: InterfaceView) -> str:
    return format_ruleset(parse_text(text, "pf.conf", v), verbose=False)


def test_a_name_becomes_one_rule_per_address():
    out = printed("pass in on xl0 proto tcp from any to www.example.com port 80\n", view())
    assert out.splitlines() == [
        "pass in on xl0 inet proto tcp from any to 192.0.2.80 port = http flags S/SA keep state",
        "pass in on xl0 inet6 proto tcp from any to 2001:db8::80 port = http flags S/SA keep state",
    ]


def test_names_in_lists_tables_and_with_a_mask():
    out = printed("table <mx> { mail.example.com }\n"
                  "pass out on xl0 from { www.example.com, mail.example.com } to <mx>\n"
                  "block in from www.example.com/24\n", view())
    assert "table <mx> { 192.0.2.25 }" in out
    assert "pass out on xl0 inet from 192.0.2.80 to <mx> flags S/SA keep state" in out
    assert "pass out on xl0 inet6 from 2001:db8::80 to <mx> flags S/SA keep state" in out
    assert "pass out on xl0 inet from 192.0.2.25 to <mx> flags S/SA keep state" in out
    assert "block drop in inet from 192.0.2.0/24 to any" in out


def test_interfaces_and_addresses_never_reach_the_resolver():
    asked: list[str] = []
    printed("pass in on xl0 from xl0:network to { 10.1.2.3, fe80::1%xl0, localhost, 10/8 }\n", view(asked))
    assert asked == []


def test_an_unknown_name_is_pfctls_error():
    with pytest.raises(ParseError) as caught:
        parse_text("pass in from nowhere.example.com\n", "pf.conf", view())
    assert list(caught.value.messages[:2]) == ["no IP address found for nowhere.example.com",
                                         "pf.conf:1: could not parse host specification"]


def test_a_view_without_resolver_knows_only_localhost():
    with pytest.raises(ParseError):
        parse_text("pass in from www.example.com\n", "pf.conf", InterfaceView.from_specs(["xl0=203.0.113.2/24"]))
    out = printed("pass in from localhost\n", InterfaceView.empty())
    assert "from 127.0.0.1" in out and "from ::1" in out
