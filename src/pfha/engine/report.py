"""Text views of an engine's insides, shaped like pfctl's: ``-vsr`` counters and ``-ss`` states.

Pure formatting of engine objects; no I/O.
"""

from __future__ import annotations

from pfha.engine.packet import addr_to_text
from pfha.engine.state import TCP_STATE_NAMES, UDP_STATE_NAMES, State

_PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 112: "carp", 240: "pfsync"}


def _endpoint(af: int, addr: int, port: int, proto: int) -> str:
    text = addr_to_text(af, addr)
    if proto in (6, 17):
        return f"{text}[{port}]" if af == 6 else f"{text}:{port}"
    return text


def format_state(state: State) -> str:
    """One line as ``pfctl -ss`` prints it (print_state): interface, proto, hosts, peer states."""
    af, proto = state.wire[0], state.wire[1]
    where = state.ifname or "all"
    name = _PROTO_NAMES.get(proto, str(proto))
    if state.direction == "out":
        s, w = state.stack, state.wire
        text = _endpoint(af, s[4], s[5], proto)
        if (s[4], s[5]) != (w[4], w[5]):
            text += f" ({_endpoint(af, w[4], w[5], proto)})"
        text += f" -> {_endpoint(af, w[2], w[3], proto)}"
        if (s[2], s[3]) != (w[2], w[3]):
            text += f" ({_endpoint(af, s[2], s[3], proto)})"
    else:
        s, w = state.stack, state.wire
        text = _endpoint(af, s[4], s[5], proto)
        if (s[4], s[5]) != (w[4], w[5]):
            text += f" ({_endpoint(af, w[4], w[5], proto)})"
        text += f" <- {_endpoint(af, w[2], w[3], proto)}"
        if (s[2], s[3]) != (w[2], w[3]):
            text += f" ({_endpoint(af, s[2], s[3], proto)})"
    if proto == 6:
        peers = f"{_peer_name(TCP_STATE_NAMES, state.src.state)}:{_peer_name(TCP_STATE_NAMES, state.dst.state)}"
    elif proto in (1, 58):
        peers = f"{state.src.state}:{state.dst.state}"
    else:
        peers = f"{_peer_name(UDP_STATE_NAMES, state.src.state)}:{_peer_name(UDP_STATE_NAMES, state.dst.state)}"
    return f"{where} {name} {text}       {peers}"


def _peer_name(names: tuple, value: int) -> str:
    return names[value] if 0 <= value < len(names) else str(value)


def format_counters(rule) -> str:
    """The two ``pfctl -vsr`` lines under a rule."""
    c = rule.counters
    return (f"  [ Evaluations: {c.evaluations:<8d}  Packets: {sum(c.packets):<8d}  Bytes: {sum(c.bytes):<10d}  "
            f"States: {c.states_cur:<6d}]\n"
            f"  [ Inserted: uid 0 pid 0 State Creations: {c.states_tot:<6d}]")


def format_rules_verbose(engine) -> str:
    """``pfctl -vsn`` then ``-vsr``: every rule's text and counters, translation first."""
    lines = []
    for rule in engine.translation_rules() + engine.rules():
        indent = "  " * rule.anchor_path.count("/") + ("  " if rule.anchor_path else "")
        lines.append(f"{indent}@{rule.number} {rule.text}")
        lines.extend(indent + line for line in format_counters(rule).splitlines())
    return "\n".join(lines)
