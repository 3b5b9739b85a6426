"""Read and delete conntrack flows of the current network namespace (pfctl -ss, -F states, -k).

A thin adapter over pyroute2's conntrack netlink socket: dump entries into
:class:`pfha.nft.states.Flow` values, delete by original tuple, flush. Everything about what the
flows mean for pf lives in :mod:`pfha.nft.states`.

Touches the kernel's connection tracking; it must never touch nftables.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from typing import Any

from pfha.errors import PfhaError
from pfha.nft.states import Flow, Tuple

TCP_STATE_NAMES = ["NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2"]


class ConntrackError(PfhaError):
    """The conntrack netlink interface refused a request."""


def _socket(family: int):
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTSocket

    return NFCTSocket(nfgen_family=family)


def _attr(message: Any, name: str, default: Any = None) -> Any:
    value = message.get_attr(name)
    return default if value is None else value


def _tuple(nested: Any, family: int) -> tuple[int, Tuple]:
    ip = nested.get_attr("CTA_TUPLE_IP")
    proto = nested.get_attr("CTA_TUPLE_PROTO")
    suffix = "V4" if family == socket.AF_INET else "V6"
    src = ip.get_attr(f"CTA_IP_{suffix}_SRC")
    dst = ip.get_attr(f"CTA_IP_{suffix}_DST")
    number = proto.get_attr("CTA_PROTO_NUM")
    if number in (1, 58):
        icmp_id = proto.get_attr("CTA_PROTO_ICMP_ID") or proto.get_attr("CTA_PROTO_ICMPV6_ID") or 0
        return number, Tuple(src, dst, icmp_id, icmp_id)
    return number, Tuple(src, dst, proto.get_attr("CTA_PROTO_SRC_PORT") or 0, proto.get_attr("CTA_PROTO_DST_PORT") or 0)


def flow_from_message(message: Any, family: int) -> Flow:
    proto, orig = _tuple(message.get_attr("CTA_TUPLE_ORIG"), family)
    _, reply = _tuple(message.get_attr("CTA_TUPLE_REPLY"), family)
    tcp_state = None
    info = message.get_attr("CTA_PROTOINFO")
    if info is not None:
        tcp = info.get_attr("CTA_PROTOINFO_TCP")
        if tcp is not None:
            number = tcp.get_attr("CTA_PROTOINFO_TCP_STATE")
            tcp_state = TCP_STATE_NAMES[number] if number is not None and number < len(TCP_STATE_NAMES) else None
    counters = []
    for name in ("CTA_COUNTERS_ORIG", "CTA_COUNTERS_REPLY"):
        nested = message.get_attr(name)
        counters.append((nested.get_attr("CTA_COUNTERS_PACKETS") or 0, nested.get_attr("CTA_COUNTERS_BYTES") or 0) if nested is not None else (0, 0))
    return Flow(
        family=4 if family == socket.AF_INET else 6,
        proto=proto,
        orig=orig,
        reply=reply,
        mark=_attr(message, "CTA_MARK", 0),
        status=_attr(message, "CTA_STATUS", 0),
        tcp_state=tcp_state,
        timeout=_attr(message, "CTA_TIMEOUT", 0),
        packets=(counters[0][0], counters[1][0]),
        bytes=(counters[0][1], counters[1][1]),
        id=_attr(message, "CTA_ID", 0),
    )


def list_flows() -> list[Flow]:
    flows: list[Flow] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        sock = _socket(family)
        try:
            for message in sock.dump():
                if message.get_attr("CTA_TUPLE_ORIG") is not None:
                    flows.append(flow_from_message(message, family))
        finally:
            sock.close()
    return flows


def _orig_tuple(flow: Flow):
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    family = socket.AF_INET if flow.family == 4 else socket.AF_INET6
    if flow.proto in (1, 58):
        return family, NFCTAttrTuple(family=family, saddr=flow.orig.src, daddr=flow.orig.dst, proto=flow.proto, icmp_id=flow.orig.sport, icmp_type=8 if flow.proto == 1 else 128, icmp_code=0)
    return family, NFCTAttrTuple(family=family, saddr=flow.orig.src, daddr=flow.orig.dst, proto=flow.proto, sport=flow.orig.sport or None, dport=flow.orig.dport or None)


def delete(flows: Iterable[Flow]) -> int:
    """Delete flows (both of their pf states); the number actually removed. One socket per
    address family (opening one costs more than a delete)."""
    removed = 0
    sockets: dict[int, Any] = {}
    try:
        for flow in flows:
            family, orig = _orig_tuple(flow)
            if family not in sockets:
                sockets[family] = _socket(family)
            try:
                sockets[family].entry("del", tuple_orig=orig)
                removed += 1
            except Exception:  # gone meanwhile (expired or closed): nothing to kill
                pass
    finally:
        for sock in sockets.values():
            sock.close()
    return removed


def kill(predicate: Callable[[Flow], bool]) -> int:
    return delete([flow for flow in list_flows() if predicate(flow)])


def flush() -> int:
    """pfctl -F states: every flow goes; the number there was."""
    count = len(list_flows())
    for family in (socket.AF_INET, socket.AF_INET6):
        sock = _socket(family)
        try:
            sock.flush()
        except Exception as error:
            raise ConntrackError(f"conntrack flush: {error}") from None
        finally:
            sock.close()
    return count


def set_timeouts(sysctls: dict[str, int]) -> None:
    """Apply ``set timeout`` (compiled to conntrack sysctls) in the current network namespace."""
    for key, value in sysctls.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as out:
                out.write(f"{int(value)}\n")
        except OSError as error:
            raise ConntrackError(f"{key}: {error.strerror}") from None
