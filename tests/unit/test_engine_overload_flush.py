"""The reference engine's overload flush (pf_overload_task): ``flush`` kills the offender's
states made by the overloading rule, ``flush global`` every state from it; other sources keep
theirs. The kernel data plane is checked against these semantics in
tests/kernel/test_nft_overload_flush.py."""

from __future__ import annotations

from engine_ast import PRIMARY, rule, ruleset, table, view

from pfha.conf import ast
from pfha.engine import Engine
from pfha.engine import packet as P

S = "203.0.113.2"
BAD, GOOD = "198.51.100.1", "198.51.100.2"


def make(*flush: str) -> Engine:
    """Port 22 limited to two connections per source (overload <bad> ...); port 23 unlimited."""
    option = ast.StateOption("overload", text="bad", flush="flush" in flush, flush_global="global" in flush)
    limited = ast.StateSpec("keep", (ast.StateOption("max-src-conn", value=2), option))
    rs = ruleset(filter=[rule("block", 0), rule("block", 1, "in", quick=True, src="<bad>"),
                         rule("pass", 2, "in", proto="tcp", dst=(S, 22), state=limited),
                         rule("pass", 3, "in", proto="tcp", dst=(S, 23))],
                 tables=[table("bad")])
    return Engine(rs, view(**PRIMARY), seed=1)


def connect(e: Engine, src: str, sport: int, dport: int = 22) -> str:
    if e.process(P.tcp(src, sport, S, dport, "S", seq=100), "xl0", "in", 0).action != "pass":
        return "block"
    e.process(P.tcp(S, dport, src, sport, "SA", seq=500, ack=101), "xl0", "out", 0)
    return e.process(P.tcp(src, sport, S, dport, "A", seq=101, ack=501), "xl0", "in", 0).action


def carries(e: Engine, src: str, sport: int, dport: int = 22) -> bool:
    return e.process(P.tcp(src, sport, S, dport, "PA", seq=101, ack=501, payload=b"x"), "xl0", "in", 1).action == "pass"


def scenario(*flush: str) -> dict[tuple[str, int, int], bool]:
    e = make(*flush)
    opened = [(BAD, 1, 22), (BAD, 2, 22), (BAD, 3, 23), (GOOD, 4, 22)]
    assert all(connect(e, *c) == "pass" for c in opened)
    assert connect(e, BAD, 5) == "block"  # the third handshake overloads: its state is killed
    assert e.resolver.tables["bad"].contains(4, int.from_bytes(bytes([198, 51, 100, 1]), "big"))
    return {c: carries(e, *c) for c in opened}


def test_flush_kills_only_the_states_of_the_overloading_rule():
    assert scenario("flush") == {(BAD, 1, 22): False, (BAD, 2, 22): False, (BAD, 3, 23): True, (GOOD, 4, 22): True}


def test_flush_global_kills_every_state_of_the_source():
    assert scenario("flush", "global") == {(BAD, 1, 22): False, (BAD, 2, 22): False, (BAD, 3, 23): False, (GOOD, 4, 22): True}


def test_without_flush_established_connections_go_on():
    assert scenario() == {(BAD, 1, 22): True, (BAD, 2, 22): True, (BAD, 3, 23): True, (GOOD, 4, 22): True}
