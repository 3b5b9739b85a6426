"""State limits and source tracking: max, max-src-nodes, max-src-states, max-src-conn,
max-src-conn-rate with overload <table> flush, set limit states."""

from __future__ import annotations

from engine_ast import PRIMARY, rule, ruleset, table, view

from pfha.conf import ast
from pfha.engine import Engine
from pfha.engine import packet as P

S = "203.0.113.2"


def opts(*pairs):
    out = []
    for name, *rest in pairs:
        kw = {}
        if name == "overload":
            kw = {"text": rest[0], "flush": "flush" in rest, "flush_global": "global" in rest}
        elif len(rest) == 2:
            kw = {"value": rest[0], "value2": rest[1]}
        elif rest:
            kw = {"value": rest[0]}
        out.append(ast.StateOption(name, **kw))
    return ast.StateSpec("keep", tuple(out))


def make(state, tables=(), **options):
    rs = ruleset(filter=[rule("block", 0), rule("block", 1, "in", quick=True, src="<bad>"),
                         rule("pass", 2, "in", proto="tcp", dst=(S, 22), state=state)],
                 tables=[table("bad")] + list(tables), **options)
    return Engine(rs, view(**PRIMARY), seed=1)


def connect(e, src, sport, now=0.0):
    d1 = e.process(P.tcp(src, sport, S, 22, "S", seq=100), "xl0", "in", now)
    if d1.action != "pass":
        return d1
    e.process(P.tcp(S, 22, src, sport, "SA", seq=500, ack=101), "xl0", "out", now)
    return e.process(P.tcp(src, sport, S, 22, "A", seq=101, ack=501), "xl0", "in", now)


def test_max_states_per_rule():
    e = make(opts(("max", 2)))
    assert connect(e, "198.51.100.1", 1).action == "pass"
    assert connect(e, "198.51.100.1", 2).action == "pass"
    d = e.process(P.tcp("198.51.100.1", 3, S, 22, "S"), "xl0", "in", 0)
    assert (d.action, d.reason) == ("block", "state-limit")


def test_global_state_limit():
    e = make(opts(), limits=(("states", 1),))
    connect(e, "198.51.100.1", 1)
    assert e.process(P.tcp("198.51.100.1", 2, S, 22, "S"), "xl0", "in", 0).reason == "state-limit"


def test_max_src_states_and_max_src_nodes():
    e = make(opts(("max-src-states", 1)))
    assert connect(e, "198.51.100.1", 1).action == "pass"
    assert e.process(P.tcp("198.51.100.1", 2, S, 22, "S"), "xl0", "in", 0).reason == "src-limit"
    assert connect(e, "198.51.100.2", 1).action == "pass"
    n = make(opts(("max-src-nodes", 2)))
    assert connect(n, "198.51.100.1", 1).action == "pass"
    assert connect(n, "198.51.100.2", 1).action == "pass"
    assert n.process(P.tcp("198.51.100.3", 1, S, 22, "S"), "xl0", "in", 0).reason == "src-limit"
    assert connect(n, "198.51.100.1", 2).action == "pass"  # a known source may add states


def test_max_src_conn_overloads_into_a_table_and_flushes():
    e = make(opts(("max-src-conn", 2), ("overload", "bad", "flush", "global")))
    assert connect(e, "198.51.100.1", 1).action == "pass"
    assert connect(e, "198.51.100.1", 2).action == "pass"
    assert len(e.states) == 2
    third = connect(e, "198.51.100.1", 3)
    assert (third.action, third.reason) == ("block", "src-limit")
    assert e.resolver.tables["bad"].contains(4, int.from_bytes(bytes([198, 51, 100, 1]), "big"))
    assert len(e.states) == 0  # flush: every state of the source is gone
    d = e.process(P.tcp("198.51.100.1", 4, S, 22, "S"), "xl0", "in", 1)
    assert (d.action, d.rule_number) == ("block", 1)
    assert connect(e, "198.51.100.2", 1).action == "pass"


def test_max_src_conn_rate():
    e = make(opts(("max-src-conn-rate", 3, 10), ("overload", "bad")))
    results = [connect(e, "198.51.100.7", p, now=float(p)).action for p in range(1, 6)]
    assert results[:3] == ["pass"] * 3 and "block" in results[3:]
    # without flush the earlier connections stay
    assert len(e.states) >= 2
    slow = make(opts(("max-src-conn-rate", 3, 10), ("overload", "bad")))
    assert all(connect(slow, "198.51.100.7", p, now=p * 20.0).action == "pass" for p in range(1, 8))


def test_source_nodes_are_released_when_their_states_expire():
    e = make(opts(("max-src-nodes", 1)))
    assert connect(e, "198.51.100.1", 1).action == "pass"
    assert e.process(P.tcp("198.51.100.2", 1, S, 22, "S"), "xl0", "in", 1).reason == "src-limit"
    e.process(P.tcp("198.51.100.1", 1, S, 22, "R", seq=101), "xl0", "in", 2)  # closes: tcp.closed 90 s
    assert e.purge(2 + 91) == 1
    assert connect(e, "198.51.100.2", 1, now=100).action == "pass"
