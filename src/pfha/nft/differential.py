"""Differential checking: the same connection attempts through the reference engine and the kernel.

An :class:`Attempt` is the opening exchange of a connection (TCP SYN, SYN-ACK, ACK; or a UDP
request and its answer) between a host outside or inside the testbed and a server. The engine
is asked what pf does at every (interface, direction) the packets cross - routing as the
testbed routes - and the kernel answers with real packets (``testbed.probe``). Both are reduced
to an :class:`Outcome`: delivered or not, the address and port the server saw the client come
from, and where the connection landed. Ports chosen by NAT are compared as a class ("kept" or
"proxy range"), since pf and conntrack draw them differently at random.

The engine half is pure; :func:`kernel_outcomes` needs a :class:`pfha.nft.testbed.Testbed`.
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Collection
from dataclasses import dataclass, replace
from typing import Any

from pfha.conf import ast
from pfha.engine import Engine
from pfha.engine.packet import addr_to_text, tcp, udp

ROUTES = (("192.168.1.0/24", "xl1"), ("10.10.10.0/24", "rl0"), ("203.0.113.0/24", "xl0"), ("0.0.0.0/0", "xl0"))
FIREWALL = frozenset({"203.0.113.2", "203.0.113.10", "203.0.113.11", "203.0.113.12", "192.168.1.250", "192.168.1.1", "10.10.10.250"})
LAN = ipaddress.ip_network("192.168.1.0/24")


@dataclass(frozen=True)
class Attempt:
    proto: str  # "tcp" | "udp"
    src: str
    dst: str
    dport: int
    sport: int

    @property
    def side(self) -> str:
        """The namespace the client lives in."""
        return "lan" if ipaddress.ip_address(self.src) in LAN else "ext"

    @property
    def entry(self) -> str:
        return "xl1" if self.side == "lan" else "xl0"


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    server: str | None = None  # "addr:port" the connection landed on
    client_addr: str | None = None  # the source address the server saw
    client_port: str | None = None  # "kept" | "proxy" | "other"
    where: str = ""  # for humans: where the engine blocked it

    def same_as(self, other: "Outcome") -> bool:
        return (self.delivered, self.server, self.client_addr, self.client_port) == (other.delivered, other.server, other.client_addr, other.client_port)


def route(dst: str) -> str:
    address = ipaddress.ip_address(dst)
    for network, interface in ROUTES:
        if address in ipaddress.ip_network(network):
            return interface
    raise ValueError(dst)


def port_class(seen: int, sent: int) -> str:
    if seen == sent:
        return "kept"
    return "proxy" if 50001 <= seen <= 65535 else "other"


def kernel_equivalent(ruleset: ast.Ruleset, real_synproxy: Collection[int] = ()) -> ast.Ruleset:
    """The ruleset as the kernel runs it: ``modulate`` and the ``synproxy state`` rules the
    compiler could not run as nft synproxy are compiled as ``keep state`` (docs/fidelity.md), so
    the oracle is asked about that ruleset; those divergences are listed, not re-discovered on
    every packet. ``real_synproxy``: the numbers of the rules the kernel proxies for real
    (``Compiled.metadata["synproxy"]``); the engine proxies those too."""

    def plain(rule: Any) -> Any:
        if isinstance(rule, ast.Rule) and (rule.state.kind == "modulate" or
                                           (rule.state.kind == "synproxy" and rule.number not in real_synproxy)):
            return replace(rule, state=replace(rule.state, kind="keep"))
        return rule

    return replace(ruleset, filter=tuple(plain(r) for r in ruleset.filter))


class EngineSide:
    """Drives the engine through the testbed's routing for each attempt."""

    def __init__(self, ruleset: Any, interfaces: Any, seed: int = 0) -> None:
        self.engine = Engine(ruleset, interfaces, seed=seed)
        self.last: Any = None  # the last decision _cross asked for
        self.proxied = False  # did pf answer the last attempt's SYN itself (synproxy)?
        self.now = 1000.0

    def _cross(self, packet: Any, hops: list[tuple[str, str]]) -> tuple[Any, str | None]:
        """Run ``packet`` through (interface, direction) hops; (packet, where it was blocked)."""
        for ifname, direction in hops:
            self.now += 0.001
            decision = self.last = self.engine.process(packet, ifname, direction, self.now)
            if decision.action != "pass":
                return packet, f"{direction} on {ifname} by rule {decision.rule_number} ({decision.reason})"
            packet = decision.packet
        return packet, None

    def outcome(self, attempt: Attempt) -> Outcome:
        make = tcp if attempt.proto == "tcp" else udp
        first = make(attempt.src, attempt.sport, attempt.dst, attempt.dport, "S", seq=1000) if attempt.proto == "tcp" else \
            make(attempt.src, attempt.sport, attempt.dst, attempt.dport, b"probe")
        packet, blocked = self._cross(first, [(attempt.entry, "in")])
        proxied = self.proxied = bool(blocked) and attempt.proto == "tcp" and self.last.reason == "synproxy"
        if proxied:
            packet, blocked = self._client_handshake(attempt, self.last)
        if blocked:
            return Outcome(False, where=blocked)
        local = addr_to_text(packet.af, packet.dst) in FIREWALL
        out_if = None if local else route(addr_to_text(packet.af, packet.dst))
        if out_if is not None:
            packet, blocked = self._cross(packet, [(out_if, "out")])
            if blocked:
                return Outcome(False, where=blocked)
        seen_src, seen_sport = addr_to_text(packet.af, packet.src), packet.sport
        server = f"{addr_to_text(packet.af, packet.dst)}:{packet.dport}"
        back = [(out_if, "in")] if out_if else []
        back.append((attempt.entry, "out"))
        if attempt.proto == "tcp":
            reply = tcp(addr_to_text(packet.af, packet.dst), packet.dport, seen_src, seen_sport, "SA", seq=5000, ack=(packet.seq + 1) & 0xFFFFFFFF)
        else:
            reply = udp(addr_to_text(packet.af, packet.dst), packet.dport, seen_src, seen_sport, b"answer")
        if proxied:
            return self._server_handshake(reply, back, packet, attempt)
        answer, blocked = self._cross(reply, back)
        if blocked:
            return Outcome(False, where="reply " + blocked)
        if (addr_to_text(answer.af, answer.dst), answer.dport) != (attempt.src, attempt.sport):
            return Outcome(False, where="reply not translated back")
        if attempt.proto == "tcp":
            forward = [(attempt.entry, "in")] + ([(out_if, "out")] if out_if else [])
            ack = tcp(attempt.src, attempt.sport, attempt.dst, attempt.dport, "A", seq=1001, ack=(answer.seq + 1) & 0xFFFFFFFF)
            _, blocked = self._cross(ack, forward)
            if blocked:
                return Outcome(False, where="ack " + blocked)
        return Outcome(True, server, seen_src, port_class(seen_sport, attempt.sport))

    def _client_handshake(self, attempt: Attempt, answered: Any) -> tuple[Any, str | None]:
        """pf answered the SYN itself (synproxy): the client completes the handshake with pf,
        which then sends its own SYN toward the server; that SYN is what the out-pass sees."""
        synack = next((e.packet for e in answered.emitted if e.toward == "sender"), None)
        if synack is None:
            return None, "synproxy sent no SYN-ACK"
        ack = tcp(attempt.src, attempt.sport, attempt.dst, attempt.dport, "A", seq=1001, ack=(synack.seq + 1) & 0xFFFFFFFF)
        self.now += 0.001
        decision = self.engine.process(ack, attempt.entry, "in", self.now)
        syn = next((e.packet for e in decision.emitted if e.toward == "destination"), None)
        if syn is None:
            return None, f"in on {attempt.entry}: synproxy did not open the server side ({decision.reason})"
        return syn, None

    def _server_handshake(self, synack: Any, hops: list[tuple[str, str]], syn: Any, attempt: Attempt) -> Outcome:
        """The server's SYN-ACK to pf's SYN goes back until it meets the synproxy state, where
        pf acknowledges it to both ends."""
        for ifname, direction in hops:
            self.now += 0.001
            decision = self.engine.process(synack, ifname, direction, self.now)
            if decision.reason == "synproxy" and len(decision.emitted) == 2:
                return Outcome(True, f"{addr_to_text(syn.af, syn.dst)}:{syn.dport}", addr_to_text(syn.af, syn.src),
                               port_class(syn.sport, attempt.sport))
            if decision.action != "pass":
                return Outcome(False, where=f"reply {direction} on {ifname} by rule {decision.rule_number} ({decision.reason})")
            synack = decision.packet
        return Outcome(False, where="synproxy never completed the handshake")


_SEEN = re.compile(r"^OK (\S+):(\d+) from (\S+):(\d+)$")


def kernel_outcome(text: str, attempt: Attempt) -> Outcome:
    match = _SEEN.match(text)
    if not match:
        return Outcome(False, where=text)
    local, lport, peer, pport = match.groups()
    return Outcome(True, f"{local}:{lport}", peer, port_class(int(pport), attempt.sport))


def kernel_outcomes(bed: Any, attempts: list[Attempt], timeout: float = 1.0) -> list[Outcome]:
    """Probe every attempt through the testbed at once (they use distinct source ports)."""
    results: list[str] = [""] * len(attempts)

    def run(i: int, attempt: Attempt) -> None:
        ns = bed.lan if attempt.side == "lan" else bed.ext
        results[i] = bed.probe(ns, attempt.proto, attempt.src, attempt.dst, attempt.dport, timeout=timeout, sport=attempt.sport)

    threads = [threading.Thread(target=run, args=(i, a)) for i, a in enumerate(attempts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [kernel_outcome(text, attempt) for text, attempt in zip(results, attempts)]
