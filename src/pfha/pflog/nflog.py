"""NFLOG (nfnetlink_log) messages: build the configuration requests, decode logged packets.

pyroute2 has no NFLOG support (pf-semantics.md §5.2), so the few messages pflogd needs are
defined here as struct layouts, in the kernel header's names (linux/netfilter/nfnetlink_log.h),
and tested on captured bytes without a socket. :mod:`pfha.pflog.linux` moves the bytes.

Pure: never opens a socket.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

# linux/netlink.h
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NLMSG_ERROR = 0x2
NLMSG_DONE = 0x3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLA_TYPE_MASK = 0x3FFF  # attribute type without NLA_F_NESTED / NLA_F_NET_BYTEORDER

# linux/netfilter/nfnetlink.h
NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (network order)

# linux/netfilter/nfnetlink_log.h
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_NLBUFSIZ = 3
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULA_CFG_FLAGS = 6
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2
NFULNL_CFG_F_SEQ = 0x0001

NFULA_PACKET_HDR = 1
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_IFINDEX_OUTDEV = 5
NFULA_PAYLOAD = 9
NFULA_PREFIX = 10
NFULA_SEQ = 12

AF_UNSPEC = 0
AF_INET = 2
AF_INET6 = 10

MSG_PACKET = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET
MSG_CONFIG = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG


def attribute(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def attributes(buf: bytes) -> dict[int, bytes]:
    """Netlink attributes of ``buf`` by type (flag bits masked off)."""
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(buf):
        length, kind = struct.unpack_from("=HH", buf, offset)
        if length < 4:
            break
        found[kind & NLA_TYPE_MASK] = buf[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def config_message(group: int, attrs: list[bytes], seq: int) -> bytes:
    """An NFULNL_MSG_CONFIG request for ``group`` (acked, so errors are seen)."""
    body = struct.pack("!BBH", AF_UNSPEC, 0, group) + b"".join(attrs)  # res_id is big endian
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def bind_request(group: int, seq: int) -> bytes:
    return config_message(group, [attribute(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_BIND))], seq)


def unbind_request(group: int, seq: int) -> bytes:
    return config_message(group, [attribute(NFULA_CFG_CMD, struct.pack("B", NFULNL_CFG_CMD_UNBIND))], seq)


def mode_request(group: int, seq: int, copy_range: int) -> bytes:
    """Copy packets up to ``copy_range`` bytes, deliver each at once (QTHRESH=1: the default
    batching of 100 packets / 1 s delays delivery and skews receipt stamps), number them
    (NFULA_SEQ, so pflogd can count what the kernel dropped)."""
    return config_message(
        group,
        [
            attribute(NFULA_CFG_MODE, struct.pack("!IBx", copy_range, NFULNL_COPY_PACKET)),
            attribute(NFULA_CFG_QTHRESH, struct.pack("!I", 1)),
            attribute(NFULA_CFG_TIMEOUT, struct.pack("!I", 0)),
            attribute(NFULA_CFG_FLAGS, struct.pack("!H", NFULNL_CFG_F_SEQ)),
        ],
        seq,
    )


@dataclass(frozen=True, slots=True)
class Message:
    """One netlink message: type, flags, sequence number and body (after the header)."""

    type: int
    flags: int
    seq: int
    body: bytes


def messages(buf: bytes) -> Iterator[Message]:
    """The netlink messages in one datagram."""
    offset = 0
    while offset + NLMSG_HDR.size <= len(buf):
        length, kind, flags, seq, _pid = NLMSG_HDR.unpack_from(buf, offset)
        if length < NLMSG_HDR.size:
            return
        yield Message(kind, flags, seq, buf[offset + NLMSG_HDR.size : offset + length])
        offset += (length + 3) & ~3


def error_code(message: Message) -> int:
    """The errno of an NLMSG_ERROR message (0 is an ack); negative values as the kernel sends."""
    return struct.unpack_from("=i", message.body, 0)[0]


@dataclass(frozen=True, slots=True)
class LoggedPacket:
    """A packet the kernel logged: its family, prefix, interfaces and bytes from the IP header."""

    family: int
    prefix: str
    payload: bytes
    indev: int = 0
    outdev: int = 0
    seq: int | None = None
    mark: int = 0


def decode_packet(message: Message) -> LoggedPacket | None:
    """The logged packet in an NFULNL_MSG_PACKET message; None for other message types."""
    if message.type != MSG_PACKET or len(message.body) < NFGENMSG.size:
        return None
    family = message.body[0]
    attrs = attributes(message.body[NFGENMSG.size :])

    def be32(kind: int) -> int:
        raw = attrs.get(kind)
        return struct.unpack("!I", raw[:4])[0] if raw and len(raw) >= 4 else 0

    return LoggedPacket(
        family=family,
        prefix=attrs.get(NFULA_PREFIX, b"").split(b"\0", 1)[0].decode("ascii", "replace"),
        payload=attrs.get(NFULA_PAYLOAD, b""),
        indev=be32(NFULA_IFINDEX_INDEV),
        outdev=be32(NFULA_IFINDEX_OUTDEV),
        seq=be32(NFULA_SEQ) if NFULA_SEQ in attrs else None,
        mark=be32(NFULA_MARK),
    )
