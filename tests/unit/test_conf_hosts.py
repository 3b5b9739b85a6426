"""Numeric host parsing: the fast dotted-quad reader accepts exactly what ipaddress does."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.conf.hosts import parse_v4

_OCTETS = st.sampled_from(["0", "00", "1", "01", "9", "10", "99", "255", "256", "999", "0001", "1a", "", " 1", "\u0661"])


def _reference(text: str):
    """inet_pton(AF_INET) as ipaddress implements it (four decimal octets, no leading zeros)."""
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isascii() and p.isdigit() and len(p) <= 3 for p in parts):
        return None
    try:
        return ipaddress.IPv4Address(text)
    except ValueError:
        return None


@settings(max_examples=400, deadline=None)
@given(st.lists(_OCTETS, min_size=1, max_size=5).map(".".join))
def test_parse_v4_matches_ipaddress(text):
    assert parse_v4(text) == _reference(text)


def test_parse_v4_examples():
    assert parse_v4("192.0.2.1") == ipaddress.IPv4Address("192.0.2.1")
    assert parse_v4("0.0.0.0") == ipaddress.IPv4Address(0)
    assert parse_v4("010.0.0.1") is None  # leading zero
    assert parse_v4("1.2.3.256") is None
    assert parse_v4("1.2.3") is None
