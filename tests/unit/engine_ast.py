"""Tiny builders of pf.conf AST values for the engine's unit tests.

The engine's tests build rules directly, so each semantic point is pinned independently of the
parser; the scenario tests read the tutorial's pf.conf through the real parser.
"""

from __future__ import annotations

import ipaddress

from pfha.conf import ast
from pfha.conf.interfaces import InterfaceView

O = ast.Origin("test.conf", 1)
PROTO = {"tcp": 6, "udp": 17, "icmp": 1, "icmp6": 58, "carp": 112, "pfsync": 240, None: None}


def host(text: str, negated: bool = False) -> ast.HostMatch:
    if text == "any":
        return ast.HostMatch(ast.AnyAddress(), negated)
    if text.startswith("<"):
        return ast.HostMatch(ast.TableAddress(text.strip("<>")), negated)
    if text.startswith("("):
        name, _, mod = text.strip("()").partition(":")
        return ast.HostMatch(ast.DynamicAddress(name, (mod,) if mod else ()), negated)
    net = ipaddress.ip_network(text, strict=False)
    return ast.HostMatch(ast.HostAddress(net.network_address, net.prefixlen), negated)


def port(spec) -> ast.PortMatch | None:
    if spec is None:
        return None
    if isinstance(spec, int):
        return ast.PortMatch("=", spec)
    if isinstance(spec, tuple):
        return ast.PortMatch(spec[0], spec[1], spec[2] if len(spec) > 2 else None)
    raise TypeError(spec)


def ep(addr: str = "any", p=None, negated: bool = False) -> ast.Endpoint:
    return ast.Endpoint(host(addr, negated), port(p))


def _common(kw: dict) -> dict:
    out = {}
    if "on" in kw:
        name = kw.pop("on")
        neg = name.startswith("!")
        out["interface"] = ast.InterfaceMatch(name.lstrip("!"), neg)
    if "proto" in kw:
        out["proto"] = PROTO.get(kw["proto"], kw["proto"])
        kw.pop("proto")
    if "src" in kw:
        s = kw.pop("src")
        out["src"] = s if isinstance(s, ast.Endpoint) else ep(*s) if isinstance(s, tuple) else ep(s)
    if "dst" in kw:
        d = kw.pop("dst")
        out["dst"] = d if isinstance(d, ast.Endpoint) else ep(*d) if isinstance(d, tuple) else ep(d)
    return out


def rule(action: str, number: int, direction=None, *, quick=False, log=None, state=None, flags="default",
         **kw) -> ast.Rule:
    fields = _common(kw)
    if state is None:
        state = ast.StateSpec("keep") if action == "pass" else ast.StateSpec("none")
    elif isinstance(state, str):
        state = ast.StateSpec(state)
    if flags == "default":
        flags = ast.TcpFlags(0x02, 0x12) if action == "pass" and state.kind != "none" and fields.get("proto") in (6, None) else None
    if action == "block" and "block" not in kw:
        kw["block"] = ast.BlockReturn("drop")
    if isinstance(log, bool):
        log = ast.Log() if log else None
    return ast.Rule(origin=O, number=number, action=action, direction=direction, quick=quick, log=log,
                    state=state, flags=flags, **fields, **kw)


def trans(kind: str, number: int, pool: list[str] | str, *, method=None, port_low=0, port_high=0,
          static_port=False, sticky=False, negated=False, pass_=False, **kw) -> ast.TranslationRule:
    fields = _common(kw)
    pools = [pool] if isinstance(pool, str) else pool
    addrs = tuple(ast.PoolAddress(host(p).address) for p in pools) if not negated else ()
    p = ast.Pool(addrs, port_low=port_low, port_high=port_high, method=method, static_port=static_port,
                 sticky=sticky)
    return ast.TranslationRule(origin=O, number=number, kind=kind, negated=negated, pass_=pass_, pool=p,
                               **fields, **kw)


def ruleset(filter=(), translation=(), scrub=(), tables=(), **options) -> ast.Ruleset:
    return ast.Ruleset(options=ast.Options(**options), filter=tuple(filter), translation=tuple(translation),
                       scrub=tuple(scrub), tables=tuple(tables))


def table(name: str, *entries: str) -> ast.Table:
    items = []
    for e in entries:
        neg = e.startswith("!")
        items.append(ast.TableEntry(host(e.lstrip("!")).address, neg))
    return ast.Table(name, O, entries=tuple(items))


def view(**ifs: str) -> InterfaceView:
    return InterfaceView.from_specs([f"{k}={v}" for k, v in ifs.items()])


PRIMARY = dict(xl0="203.0.113.2/24", xl1="192.168.1.250/24", rl0="10.10.10.250/24",
               carp0="203.0.113.10/24,203.0.113.11/24,203.0.113.12/24", lo0="127.0.0.1/8")
