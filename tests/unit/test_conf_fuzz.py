"""Hostile input never crashes the pf.conf front end: a clean ParseError or a ruleset.

Three generators: arbitrary text, mutations of FreeBSD's corpus and of the tutorial's
pf.conf (token insertions, deletions, replacements), and rules assembled from grammar pieces.
Rulesets that parse must also print, and the printed text must parse back to the same text
(pfctl's own ".ok fed back in" property).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfha.conf import InterfaceView, ParseError, format_ruleset, parse_text

VIEW = InterfaceView.from_specs(["xl0=203.0.113.2/24", "xl1=192.168.1.250/24,fe80::1/64", "carp0=203.0.113.10/24"],
                                base=InterfaceView.freebsd_defaults())
_REPO = Path(__file__).resolve().parents[2]
_SHARED = Path(os.environ.get("PFHA_SHARED", _REPO.parent / "shared"))


def _corpus() -> list[str]:
    texts = []
    folder = _SHARED / "conformance" / "pfctl"
    if folder.is_dir():
        texts += [p.read_text() for p in sorted(folder.glob("pf*.in"))]
    seed = _SHARED / "seed" / "configs" / "corrected" / "pf.conf"
    if seed.exists():
        texts.append(seed.read_text())
    return texts or ["pass in on xl0 proto tcp from any to any port 80\n"]


CORPUS = _corpus()
VOCAB = sorted({w for t in CORPUS for w in t.split()}) + list("{}()<>!=/,-:\"'$#\\\n\f") + [
    "->", "!=", "<>", "><", "$x", "port", "0x", "4294967296", "-1", "99999999999999999999", "\\\n",
]
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse_or_reject(text: str) -> None:
    """The contract: ParseError (one line, file:line) or a ruleset that prints."""
    try:
        ruleset = parse_text(text, "fuzz.conf", VIEW)
    except ParseError as error:
        assert str(error).startswith("fuzz.conf"), str(error)
        assert "\n" not in str(error)
        return
    format_ruleset(ruleset)


@SETTINGS
@given(st.text(max_size=300))
def test_arbitrary_text(text):
    parse_or_reject(text)


@SETTINGS
@given(st.text(alphabet=st.sampled_from(list("pasblockin out{}()<>!=/,-:\"'$#\\\n 0123456789.")), max_size=200))
def test_punctuation_soup(text):
    parse_or_reject(text)


@SETTINGS
@given(
    st.sampled_from(CORPUS),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2), st.sampled_from(VOCAB)), min_size=1, max_size=5),
)
def test_mutated_real_rulesets(text, edits):
    words = text.split(" ")
    for position, op, word in edits:
        i = position % (len(words) + 1)
        if op == 0:
            words.insert(i, word)
        elif op == 1 and words:
            words.pop(min(i, len(words) - 1))
        elif words:
            words[min(i, len(words) - 1)] = word
    parse_or_reject(" ".join(words))


ACTIONS = st.sampled_from(["pass", "block", "block return", "block return-rst", "match", "pass in quick", "block out log"])
IFACES = st.sampled_from(["", " on xl0", " on ! xl1", " on { xl0 xl1 }", " on carp0"])
AFS = st.sampled_from(["", " inet", " inet6"])
PROTOS = st.sampled_from(["", " proto tcp", " proto udp", " proto { tcp udp }", " proto icmp", " proto 112"])
HOSTS = st.sampled_from(["any", "10.0.0.0/8", "xl1:network", "(xl0)", "<t>", "! 192.168.1.1", "{ 1.2.3.4 2001:db8::1 }",
                         "carp0", "self", "no-route", "10.0.0.1 - 10.0.0.9", "xl1:0"])
PORTS = st.sampled_from(["", " port 80", " port { ssh www }", " port 1024:2048", " port > 1023", " port 1 >< 9"])
OPTS = st.sampled_from(["", " keep state", " modulate state", " no state", " flags S/SA", ' label "$nr-$srcaddr"',
                        " tag T", " queue q", " keep state (max 100, source-track rule, max-src-conn 5)",
                        " probability 25%", " tos 0x10", " set prio 3", " rtable 1", " allow-opts"])


@SETTINGS
@given(ACTIONS, IFACES, AFS, PROTOS, HOSTS, PORTS, HOSTS, PORTS, st.lists(OPTS, max_size=3))
def test_generated_rules_round_trip(action, iface, af, proto, src, sport, dst, dport, opts):
    text = f"{action}{iface}{af}{proto} from {src}{sport} to {dst}{dport}{''.join(opts)}\n"
    try:
        ruleset = parse_text("table <t> { 10.1.1.1 }\n" + text, "gen.conf", VIEW)
    except ParseError as error:
        assert str(error).startswith("gen.conf:")
        return
    printed = format_ruleset(ruleset)
    again = format_ruleset(parse_text(printed, "printed.conf", VIEW))
    assert again == printed
