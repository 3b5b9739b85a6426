"""pf's global timeouts and limits as pfctl_load_options() leaves them (engine, compiler, pfctl -st/-sm)."""

from __future__ import annotations

from pfha.conf import InterfaceView
from pfha.conf.parser import parse_text
from pfha.engine.state import DEFAULT_TIMEOUTS, configured_limits, configured_timeouts


def options(text: str):
    return parse_text(text, "pf.conf", InterfaceView.empty()).options


def test_defaults():
    assert configured_timeouts(options("")) == DEFAULT_TIMEOUTS
    assert configured_limits(options("")) == {"states": 100000, "src-nodes": 10000, "frags": 5000,
                                              "table-entries": 200000}


def test_explicit_values_beat_the_preset_whatever_the_order():
    got = configured_timeouts(options("set timeout tcp.first 7\nset optimization aggressive\n"))
    assert got["tcp.first"] == 7 and got["tcp.closing"] == 60


def test_states_limit_moves_adaptive_timeouts_unless_they_are_set():
    got = configured_timeouts(options("set limit states 20000\n"))
    assert (got["adaptive.start"], got["adaptive.end"]) == (12000, 24000)
    got = configured_timeouts(options("set limit states 20000\nset timeout adaptive.end 30000\n"))
    assert (got["adaptive.start"], got["adaptive.end"]) == (60000, 30000)
    assert configured_limits(options("set limit { states 20000, frags 800 }\n"))["frags"] == 800
