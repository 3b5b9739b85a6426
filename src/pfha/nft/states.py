"""pf's state table as seen through conntrack: which pf states a flow holds, printed as pfctl -ss.

The compiled ruleset records pf states as ct-mark bits (:mod:`pfha.nft.compile`): side A is the
state a connection's original packet made on an in-pass, side B the one made on an out-pass.
A conntrack flow therefore carries zero, one or two pf states. They are printed in the arrow
form pfctl has used for NAT'd states::

    all tcp 192.168.1.100:5555 -> 203.0.113.10:62001 -> 198.51.100.53:53 ESTABLISHED:ESTABLISHED
    all tcp 192.168.1.80:25 <- 198.51.100.7:40000 ESTABLISHED:ESTABLISHED

("all": states are floating). Pure: flows in, text out; the kernel side is
:mod:`pfha.nft.conntrack`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pfha.nft.compile import A_RULE_MASK, A_SHIFT, B_RULE_MASK, B_SHIFT, SIDE_A, SIDE_B

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 112: "carp", 132: "sctp", 240: "pfsync"}

# conntrack TCP state -> pf's (initiator, responder) peer states (pfctl's tcpstates names).
TCP_STATES = {
    "NONE": ("CLOSED", "CLOSED"),
    "SYN_SENT": ("SYN_SENT", "CLOSED"),
    "SYN_RECV": ("SYN_SENT", "SYN_RCVD"),
    "ESTABLISHED": ("ESTABLISHED", "ESTABLISHED"),
    "FIN_WAIT": ("FIN_WAIT_2", "ESTABLISHED"),
    "CLOSE_WAIT": ("ESTABLISHED", "FIN_WAIT_2"),
    "LAST_ACK": ("FIN_WAIT_2", "FIN_WAIT_2"),
    "TIME_WAIT": ("TIME_WAIT", "TIME_WAIT"),
    "CLOSE": ("CLOSED", "CLOSED"),
    "SYN_SENT2": ("SYN_SENT", "SYN_SENT"),
}
IPS_SEEN_REPLY = 0x2


@dataclass(frozen=True, slots=True)
class Tuple:
    src: str
    dst: str
    sport: int = 0
    dport: int = 0


@dataclass(frozen=True, slots=True)
class Flow:
    """One conntrack entry, reduced to what pf's views need."""

    family: int  # 4 or 6
    proto: int
    orig: Tuple
    reply: Tuple
    mark: int = 0
    status: int = 0
    tcp_state: str | None = None
    timeout: int = 0
    packets: tuple[int, int] = (0, 0)
    bytes: tuple[int, int] = (0, 0)
    id: int = 0

    def rule_ids(self) -> tuple[int, int]:
        """(side A rule id, side B rule id); 0 when the side has no state or no rule."""
        return (self.mark & A_RULE_MASK) >> A_SHIFT, (self.mark & B_RULE_MASK) >> B_SHIFT

    def has_side(self, side: str) -> bool:
        return bool(self.mark & (SIDE_A if side == "A" else SIDE_B))


@dataclass(frozen=True, slots=True)
class PfState:
    """One pf state of a flow: its direction and the three addresses pfctl prints."""

    flow: Flow
    side: str
    direction: str  # "in" | "out"
    rule_id: int

    def endpoints(self) -> tuple[Tuple, Tuple | None, Tuple]:
        """(first, translated or None, last) in pfctl's print order."""
        orig, reply = self.flow.orig, self.flow.reply
        if self.direction == "out":
            lan = Tuple(orig.src, "", orig.sport)
            gwy = Tuple(reply.dst, "", reply.dport)
            ext = Tuple(reply.src, "", reply.sport)
            return lan, (gwy if (gwy.src, gwy.sport) != (lan.src, lan.sport) else None), ext
        lan = Tuple(reply.src, "", reply.sport)
        gwy = Tuple(orig.dst, "", orig.dport)
        ext = Tuple(orig.src, "", orig.sport)
        return lan, (gwy if (gwy.src, gwy.sport) != (lan.src, lan.sport) else None), ext


def pf_states(flow: Flow) -> list[PfState]:
    """The pf states a flow holds: side A is an in-state, side B an out-state."""
    rule_a, rule_b = flow.rule_ids()
    states = []
    if flow.has_side("A"):
        states.append(PfState(flow, "A", "in", rule_a))
    if flow.has_side("B"):
        states.append(PfState(flow, "B", "out", rule_b))
    return states


def _host(t: Tuple, family: int, proto: int) -> str:
    address = t.src
    if family == 6:
        address = f"{address}[{t.sport}]" if proto in (6, 17, 132, 1, 58) else address
        return address
    if proto in (6, 17, 132, 1, 58):
        return f"{address}:{t.sport}"
    return address


def peer_states(flow: Flow) -> str:
    if flow.proto == 6:
        first, second = TCP_STATES.get(flow.tcp_state or "NONE", ("CLOSED", "CLOSED"))
        return f"{first}:{second}"
    if flow.proto in (1, 58):
        return "0:0"
    replied = bool(flow.status & IPS_SEEN_REPLY)
    return "MULTIPLE:MULTIPLE" if replied else "SINGLE:NO_TRAFFIC"


def format_state(state: PfState, verbose: int = 0, rule_numbers: dict[int, int] | None = None) -> str:
    flow = state.flow
    first, middle, last = state.endpoints()
    arrow = " -> " if state.direction == "out" else " <- "
    parts = [_host(first, flow.family, flow.proto)]
    if middle is not None:
        parts.append(_host(middle, flow.family, flow.proto))
    parts.append(_host(last, flow.family, flow.proto))
    line = f"all {PROTO_NAMES.get(flow.proto, str(flow.proto))} {arrow.join(parts)} {peer_states(flow)}"
    if verbose:
        packets = "%d:%d pkts" % flow.packets
        octets = "%d:%d bytes" % flow.bytes
        rule = ""
        if state.rule_id:
            number = (rule_numbers or {}).get(state.rule_id, state.rule_id - 1)
            rule = f", rule {number}"
        minutes, seconds = divmod(flow.timeout, 60)
        hours, minutes = divmod(minutes, 60)
        line += f"\n   expires in {hours:02d}:{minutes:02d}:{seconds:02d}, {packets}, {octets}{rule}"
    return line


def involves(flow: Flow, network: ipaddress.IPv4Network | ipaddress.IPv6Network, role: str = "src") -> bool:
    """pfctl -k: does the state's source (or destination) lie in ``network``?"""
    try:
        address = ipaddress.ip_address(flow.orig.src if role == "src" else flow.reply.src)
    except ValueError:
        return False
    return address.version == network.version and address in network
