"""The kernel side of sync: conntrack events in, conntrack entries out, over raw ctnetlink.

Hand-written netlink on the hot paths, as pfsync.md §4.3/§5.1 measured: pyroute2's decoder keeps
up with 2-5k events/s and its ``entry()`` writes about 670 entries/s, while a struct walk of the
few attributes we need and batched requests reach tens of thousands per second. The parser turns
an event straight into the packed ``wire.STATE`` record the protocol core stores, without an
intermediate object.

What the kernel needs to accept mid-stream packets on the node that did not see the handshake
(pfsync.md §3.3, verified on kernel 6.18 by the prototype):

* both tuples, with the reply tuple sent *un-NATed* and the binding as ``CTA_NAT_SRC``/``DST``
  (an already translated reply tuple makes an entry that looks right and forwards untranslated);
* status including ``IPS_CONFIRMED`` (else EBUSY);
* TCP state, both window-scale values and both flag bytes *with a mask* (events report mask 0);
* mark, timeout and zone.

This module only moves bytes between the kernel and the core; it makes no protocol decisions.
It is the only part of ``pfha.sync`` that opens netlink sockets.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
import sys
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from pfha.sync import wire

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
SO_RCVBUFFORCE = 33
SO_ATTACH_FILTER = 26
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW, IPCTNL_MSG_CT_GET, IPCTNL_MSG_CT_DELETE = 0, 1, 2
NFNLGRP_CONNTRACK_MASK = 1 | 2 | 4  # NEW | UPDATE | DESTROY (legacy bind mask)
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP, NLM_F_EXCL, NLM_F_CREATE = 0x300, 0x200, 0x400
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000

# linux/netfilter/nfnetlink_conntrack.h
CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_PROTOINFO = 1, 2, 3, 4
CTA_NAT_SRC, CTA_TIMEOUT, CTA_MARK, CTA_NAT_DST, CTA_ZONE = 6, 7, 8, 13, 18
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID = 4, 7  # type, code follow each id
CTA_PROTOINFO_TCP = 1
CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP, CTA_NAT_PROTO, CTA_NAT_V6_MINIP, CTA_NAT_V6_MAXIP = 1, 2, 3, 4, 5
CTA_PROTONAT_PORT_MIN, CTA_PROTONAT_PORT_MAX = 1, 2
# linux/netfilter/nf_conntrack_common.h
IPS_EXPECTED, IPS_CONFIRMED, IPS_SRC_NAT, IPS_DST_NAT = 0x1, 0x8, 0x10, 0x20
IPS_DYING, IPS_TEMPLATE, IPS_UNTRACKED, IPS_OFFLOAD, IPS_HW_OFFLOAD = 0x200, 0x800, 0x1000, 0x4000, 0x8000
# the TCP flag bits that describe the peers; MAXACK_SET etc. refer to window data not synced
TCP_PEER_FLAGS = 0x0F  # WINDOW_SCALE | SACK_PERM | CLOSE_INIT | BE_LIBERAL

_NLH = struct.Struct("=IHHII")
_NLA = struct.Struct("=HH")
_NFGEN = struct.Struct("=BBH")
_BE16 = struct.Struct("!H")
_BE32 = struct.Struct("!I")
_ERRNO = struct.Struct("=i")
_ICMP = {socket.IPPROTO_ICMP: CTA_PROTO_ICMP_ID, socket.IPPROTO_ICMPV6: CTA_PROTO_ICMPV6_ID}
_PORTS = {socket.IPPROTO_TCP, socket.IPPROTO_UDP, 132, 33, 136}  # tcp udp sctp dccp udplite

KIND_NEW, KIND_UPDATE, KIND_DESTROY = 1, 2, 3


# --- parsing (events and dump replies have the same layout) ----------------------------------
def _attrs(buf, off: int, end: int) -> dict[int, tuple[int, int]]:
    found = {}
    while off + 4 <= end:
        length, kind = _NLA.unpack_from(buf, off)
        if length < 4:
            break
        found[kind & 0x3FFF] = (off + 4, off + length)
        off += (length + 3) & ~3
    return found


# An IPv4 tuple with ports as the kernel writes it (ctnetlink_dump_tuples): IP nest {src, dst},
# proto nest {num, sport, dport}, always in this order: 52 bytes at fixed offsets.
_TUPLE4 = struct.Struct("=HH" "HH4s" "HH4s" "HH" "HHB3x" "HHH2x" "HHH2x")
_TUPLE4_HEAD = (20, CTA_TUPLE_IP | NLA_F_NESTED, 8, CTA_IP_V4_SRC)


def _tuple(buf, family: int, span: tuple[int, int]) -> tuple[int, bytes, bytes, int, int]:
    start, end = span
    if end - start == _TUPLE4.size and family == socket.AF_INET:
        (ip_len, ip_type, s_len, s_type, src, d_len, d_type, dst, p_len, p_type, n_len, n_type, proto,
         sp_len, sp_type, sport, dp_len, dp_type, dport) = _TUPLE4.unpack_from(buf, start)
        if ((ip_len, ip_type & 0x7FFF, s_len, s_type) == (20, CTA_TUPLE_IP, 8, CTA_IP_V4_SRC)
                and d_type == CTA_IP_V4_DST and n_type == CTA_PROTO_NUM
                and sp_type == CTA_PROTO_SRC_PORT and dp_type == CTA_PROTO_DST_PORT):
            return proto, src + _PAD12, dst + _PAD12, _ntohs(sport), _ntohs(dport)
    return _tuple_generic(buf, family, span)


_PAD12 = bytes(12)
_ntohs = socket.ntohs


def _tuple_generic(buf, family: int, span: tuple[int, int]) -> tuple[int, bytes, bytes, int, int]:
    top = _attrs(buf, *span)
    ip = _attrs(buf, *top[CTA_TUPLE_IP])
    proto_attrs = _attrs(buf, *top[CTA_TUPLE_PROTO])
    if family == socket.AF_INET:
        s, d = ip[CTA_IP_V4_SRC], ip[CTA_IP_V4_DST]
    else:
        s, d = ip[CTA_IP_V6_SRC], ip[CTA_IP_V6_DST]
    src = bytes(buf[s[0]:s[1]]).ljust(16, b"\0")
    dst = bytes(buf[d[0]:d[1]]).ljust(16, b"\0")
    proto = buf[proto_attrs[CTA_PROTO_NUM][0]]
    icmp = _ICMP.get(proto)
    if icmp is None:
        sp = proto_attrs.get(CTA_PROTO_SRC_PORT)
        dp = proto_attrs.get(CTA_PROTO_DST_PORT)
        a = _BE16.unpack_from(buf, sp[0])[0] if sp else 0
        b = _BE16.unpack_from(buf, dp[0])[0] if dp else 0
    else:
        ident, kind, code = (proto_attrs.get(icmp + i) for i in range(3))
        a = _BE16.unpack_from(buf, ident[0])[0] if ident else 0
        b = ((buf[kind[0]] if kind else 0) << 8) | (buf[code[0]] if code else 0)
    return proto, src, dst, a, b


# CTA_PROTOINFO_TCP {state, wscale orig, wscale reply, flags orig, flags reply}, the kernel's order
_PROTOINFO_TCP = struct.Struct("=HH" "HHB3x" "HHB3x" "HHB3x" "HHB3x" "HHB3x")


class Event(NamedTuple):
    """One parsed ctnetlink message: ``record`` is a packed STATE (creator and version 0).
    A tuple, not a dataclass: one is made per kernel event, and tuples are cheapest."""

    kind: int
    pid: int
    mark: int
    record: bytes


def parse_message(buf, off: int, length: int, mark_mask: int = 0) -> Event | None:
    """One ctnetlink message at ``buf[off:off+length]``; None if it is not a conntrack entry or
    ``mark & mark_mask == 0`` (with a non-zero mask: the entry is not one the data plane made).

    The hot path of the intake: one pass over the top-level attributes, no dictionaries."""
    _, msg_type, flags, _, pid = _NLH.unpack_from(buf, off)
    if msg_type >> 8 != NFNL_SUBSYS_CTNETLINK:
        return None
    end = off + length
    at = off + 20
    orig = reply = info = None
    status = timeout = mark = zone = 0
    nla, be32 = _NLA.unpack_from, _BE32.unpack_from
    while at + 4 <= end:
        size, kind = nla(buf, at)
        if size < 4:
            break
        kind &= 0x3FFF
        if kind == CTA_TUPLE_ORIG:
            orig = (at + 4, at + size)
        elif kind == CTA_TUPLE_REPLY:
            reply = (at + 4, at + size)
        elif kind == CTA_STATUS:
            status = be32(buf, at + 4)[0]
        elif kind == CTA_TIMEOUT:
            timeout = be32(buf, at + 4)[0]
        elif kind == CTA_MARK:
            mark = be32(buf, at + 4)[0]
        elif kind == CTA_PROTOINFO:
            info = (at + 4, at + size)
        elif kind == CTA_ZONE:
            zone = _BE16.unpack_from(buf, at + 4)[0]
        at += (size + 3) & ~3
    if mark_mask and not mark & mark_mask or orig is None:
        return None
    family = buf[off + 16]
    proto, osrc, odst, osp, odp = _tuple(buf, family, orig)
    if reply is not None:
        _, rsrc, rdst, rsp, rdp = _tuple(buf, family, reply)
    else:
        rsrc, rdst, rsp, rdp = odst, osrc, odp, osp
    tcp_state = wso = wsr = tfo = tfr = 0
    if info is not None and proto == socket.IPPROTO_TCP:
        tcp_state, wso, wsr, tfo, tfr = _tcp_info(buf, *info)
    if msg_type & 0xFF == IPCTNL_MSG_CT_DELETE:
        kind = KIND_DESTROY
    else:
        kind = KIND_NEW if flags & NLM_F_CREATE else KIND_UPDATE
    record = wire.STATE.pack(family, proto, zone, osrc, odst, osp, odp, 0, 0, rsrc, rdst, rsp, rdp,
                             status, timeout, mark, tcp_state, wso, wsr, tfo, tfr)
    return Event(kind, pid, mark, record)


def _tcp_info(buf, start: int, end: int) -> tuple[int, int, int, int, int]:
    """TCP state, window scales and flag bytes from CTA_PROTOINFO (fixed layout first)."""
    if end - start == _PROTOINFO_TCP.size:
        fixed = _PROTOINFO_TCP.unpack_from(buf, start)
        if fixed[:4] == (44, CTA_PROTOINFO_TCP | NLA_F_NESTED, 5, 1) and fixed[5:7] == (5, 2) \
                and fixed[8:10] == (5, 3) and fixed[11:13] == (6, 4) and fixed[14:16] == (6, 5):
            return fixed[4], fixed[7], fixed[10], fixed[13], fixed[16]
    info = _attrs(buf, start, end)
    if CTA_PROTOINFO_TCP not in info:
        return 0, 0, 0, 0, 0
    tcp = _attrs(buf, *info[CTA_PROTOINFO_TCP])
    return tuple(buf[tcp[i][0]] if i in tcp else 0 for i in range(1, 6))  # type: ignore[return-value]


def parse_datagram(buf, size: int, mark_mask: int = 0, ignore_pid: int = -1) -> Iterator[Event | int]:
    """Every message of one netlink datagram; NLMSG_ERROR/DONE appear as their errno (DONE: -1).
    Messages sent on behalf of netlink port ``ignore_pid`` (our own writes) are skipped unparsed
    and yielded as -2."""
    off = 0
    while off + 16 <= size:
        length, msg_type, _, _, pid = _NLH.unpack_from(buf, off)
        if length < 16 or off + length > size:
            break
        if pid == ignore_pid:
            yield -2
        elif msg_type == NLMSG_ERROR:
            yield -_ERRNO.unpack_from(buf, off + 16)[0]
        elif msg_type == NLMSG_DONE:
            yield -1
        else:
            event = parse_message(buf, off, length, mark_mask)
            if event is not None:
                yield event
        off += (length + 3) & ~3


# --- building requests -----------------------------------------------------------------------
def _nla(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return _NLA.pack(length, kind) + payload + b"\0" * ((4 - length % 4) % 4)


def _nest(kind: int, *parts: bytes) -> bytes:
    return _nla(kind | NLA_F_NESTED, b"".join(parts))


def _addr(family: int, raw: bytes) -> bytes:
    return raw[:4] if family == socket.AF_INET else raw


def _tuple_attr(kind: int, family: int, proto: int, src: bytes, dst: bytes, a: int, b: int) -> bytes:
    v4 = family == socket.AF_INET
    ip = _nest(CTA_TUPLE_IP, _nla(CTA_IP_V4_SRC if v4 else CTA_IP_V6_SRC, _addr(family, src)),
               _nla(CTA_IP_V4_DST if v4 else CTA_IP_V6_DST, _addr(family, dst)))
    icmp = _ICMP.get(proto)
    if icmp is None:
        l4 = [_nla(CTA_PROTO_SRC_PORT, _BE16.pack(a)), _nla(CTA_PROTO_DST_PORT, _BE16.pack(b))]
    else:
        l4 = [_nla(icmp, _BE16.pack(a)), _nla(icmp + 1, bytes([b >> 8])), _nla(icmp + 2, bytes([b & 0xFF]))]
    return _nest(kind, ip, _nest(CTA_TUPLE_PROTO, _nla(CTA_PROTO_NUM, bytes([proto])), *l4))


def _nat_attr(kind: int, family: int, proto: int, addr: bytes, port: int) -> bytes:
    v4 = family == socket.AF_INET
    parts = [_nla(CTA_NAT_V4_MINIP if v4 else CTA_NAT_V6_MINIP, _addr(family, addr)),
             _nla(CTA_NAT_V4_MAXIP if v4 else CTA_NAT_V6_MAXIP, _addr(family, addr))]
    if proto in _PORTS:
        parts.append(_nest(CTA_NAT_PROTO, _nla(CTA_PROTONAT_PORT_MIN, _BE16.pack(port)),
                           _nla(CTA_PROTONAT_PORT_MAX, _BE16.pack(port))))
    return _nest(kind, *parts)


def _message(msg: int, flags: int, seq: int, family: int, payload: bytes) -> bytes:
    body = _NFGEN.pack(family, 0, 0) + payload
    return _NLH.pack(16 + len(body), NFNL_SUBSYS_CTNETLINK << 8 | msg, flags, seq, 0) + body


_REQ_TUPLE4 = struct.Struct("=HH" "HH" "HH4s" "HH4s" "HH" "HHB3x" "HHH2x" "HHH2x")
_REQ_NAT4 = struct.Struct("=HH" "HH4s" "HH4s" "HH" "HHH2x" "HHH2x")
_REQ_SCALARS = struct.Struct("=HHI" "HHI" "HHI")
_REQ_ZONE = struct.Struct("=HHH2x")
_REQ_TCP = struct.Struct("=HH" "HH" "HHB3x" "HHB3x" "HHB3x" "HHBB2x" "HHBB2x")
_htons, _htonl = socket.htons, socket.htonl
_STATUS_DROP = IPS_EXPECTED | IPS_DYING | IPS_TEMPLATE | IPS_UNTRACKED | IPS_OFFLOAD | IPS_HW_OFFLOAD
_NESTED_TUPLE_IP, _NESTED_PROTO = CTA_TUPLE_IP | NLA_F_NESTED, CTA_TUPLE_PROTO | NLA_F_NESTED


def _tuple4(kind: int, proto: int, src: bytes, dst: bytes, a: int, b: int) -> bytes:
    return _REQ_TUPLE4.pack(52, kind | NLA_F_NESTED, 20, _NESTED_TUPLE_IP, 8, CTA_IP_V4_SRC, src[:4],
                            8, CTA_IP_V4_DST, dst[:4], 28, _NESTED_PROTO, 5, CTA_PROTO_NUM, proto,
                            6, CTA_PROTO_SRC_PORT, _htons(a), 6, CTA_PROTO_DST_PORT, _htons(b))


def _nat4(kind: int, addr: bytes, port: int) -> bytes:
    return _REQ_NAT4.pack(40, kind | NLA_F_NESTED, 8, CTA_NAT_V4_MINIP, addr[:4], 8, CTA_NAT_V4_MAXIP, addr[:4],
                          20, CTA_NAT_PROTO | NLA_F_NESTED, 6, CTA_PROTONAT_PORT_MIN, _htons(port),
                          6, CTA_PROTONAT_PORT_MAX, _htons(port))


def _entry_request4(fields: tuple, seq: int, create: bool, liberal: bool) -> bytes:
    """The common case (IPv4 TCP/UDP) in a few struct packs; same bytes as the general path."""
    (family, proto, zone, osrc, odst, osp, odp, _, _, rsrc, rdst, rsp, rdp,
     status, timeout, mark, tcp_state, wso, wsr, tfo, tfr) = fields
    parts = [_tuple4(CTA_TUPLE_ORIG, proto, osrc, odst, osp, odp)]
    if create:
        u_src, u_dst, u_sp, u_dp = rsrc, rdst, rsp, rdp
        if status & IPS_SRC_NAT:
            u_dst, u_dp = osrc, osp
        if status & IPS_DST_NAT:
            u_src, u_sp = odst, odp
        parts.append(_tuple4(CTA_TUPLE_REPLY, proto, u_src, u_dst, u_sp, u_dp))
        if status & IPS_SRC_NAT:
            parts.append(_nat4(CTA_NAT_SRC, rdst, rdp))
        if status & IPS_DST_NAT:
            parts.append(_nat4(CTA_NAT_DST, rsrc, rsp))
    status = (status & ~_STATUS_DROP) | IPS_CONFIRMED
    if mark:
        parts.append(_REQ_SCALARS.pack(8, CTA_STATUS, _htonl(status), 8, CTA_TIMEOUT, _htonl(max(timeout, 1)),
                                       8, CTA_MARK, _htonl(mark)))
    else:
        parts.append(_REQ_SCALARS.pack(8, CTA_STATUS, _htonl(status), 8, CTA_TIMEOUT,
                                       _htonl(max(timeout, 1)), 0, 0, 0)[:16])
    if zone and create:
        parts.append(_REQ_ZONE.pack(6, CTA_ZONE, _htons(zone)))
    if proto == socket.IPPROTO_TCP and tcp_state:
        extra = 0x08 if liberal else 0
        parts.append(_REQ_TCP.pack(48, CTA_PROTOINFO | NLA_F_NESTED, 44, CTA_PROTOINFO_TCP | NLA_F_NESTED,
                                   5, 1, tcp_state, 5, 2, wso, 5, 3, wsr,
                                   6, 4, tfo & TCP_PEER_FLAGS | extra, 0xFF,
                                   6, 5, tfr & TCP_PEER_FLAGS | extra, 0xFF))
    flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_EXCL if create else 0)
    body = b"".join(parts)
    return _NLH.pack(20 + len(body), NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW, flags, seq, 0) \
        + _NFGEN.pack(socket.AF_INET, 0, 0) + body


def entry_request(record: bytes, seq: int, create: bool, liberal: bool = False) -> bytes:
    fields = wire.STATE.unpack(record)
    if fields[0] == socket.AF_INET and (fields[1] == socket.IPPROTO_TCP or fields[1] == socket.IPPROTO_UDP):
        return _entry_request4(fields, seq, create, liberal)
    return _entry_request_generic(fields, seq, create, liberal)


def _entry_request_generic(fields: tuple, seq: int, create: bool, liberal: bool = False) -> bytes:
    """A ctnetlink request that creates (CREATE|EXCL) or updates the entry ``record`` describes.

    On create the reply tuple goes un-NATed and the binding as CTA_NAT_SRC/DST; on update NAT is
    left out (the kernel refuses to change it, pfsync.md §3.4).
    """
    (family, proto, zone, osrc, odst, osp, odp, _, _, rsrc, rdst, rsp, rdp,
     status, timeout, mark, tcp_state, wso, wsr, tfo, tfr) = fields
    parts = [_tuple_attr(CTA_TUPLE_ORIG, family, proto, osrc, odst, osp, odp)]
    if create:
        u_src, u_dst, u_sp, u_dp = rsrc, rdst, rsp, rdp
        ports = proto in _PORTS
        if status & IPS_SRC_NAT:
            u_dst, u_dp = osrc, (osp if ports else rdp)
        if status & IPS_DST_NAT:
            u_src, u_sp = odst, (odp if ports else rsp)
        parts.append(_tuple_attr(CTA_TUPLE_REPLY, family, proto, u_src, u_dst, u_sp, u_dp))
        if status & IPS_SRC_NAT:
            parts.append(_nat_attr(CTA_NAT_SRC, family, proto, rdst, rdp))
        if status & IPS_DST_NAT:
            parts.append(_nat_attr(CTA_NAT_DST, family, proto, rsrc, rsp))
    status = (status & ~(IPS_EXPECTED | IPS_DYING | IPS_TEMPLATE | IPS_UNTRACKED | IPS_OFFLOAD
                         | IPS_HW_OFFLOAD)) | IPS_CONFIRMED
    parts.append(_nla(CTA_STATUS, _BE32.pack(status)))
    parts.append(_nla(CTA_TIMEOUT, _BE32.pack(max(timeout, 1))))
    if mark:
        parts.append(_nla(CTA_MARK, _BE32.pack(mark)))
    if zone and create:
        parts.append(_nla(CTA_ZONE, _BE16.pack(zone)))
    if proto == socket.IPPROTO_TCP and tcp_state:
        extra = 0x08 if liberal else 0
        parts.append(_nest(CTA_PROTOINFO, _nest(
            CTA_PROTOINFO_TCP, _nla(1, bytes([tcp_state])), _nla(2, bytes([wso])), _nla(3, bytes([wsr])),
            _nla(4, bytes([tfo & TCP_PEER_FLAGS | extra, 0xFF])),
            _nla(5, bytes([tfr & TCP_PEER_FLAGS | extra, 0xFF])))))
    flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_EXCL if create else 0)
    return _message(IPCTNL_MSG_CT_NEW, flags, seq, family, b"".join(parts))


def delete_request(key: bytes, seq: int) -> bytes:
    family, proto, zone, src, dst, sp, dp = wire.KEY.unpack(key)
    parts = [_tuple_attr(CTA_TUPLE_ORIG, family, proto, src, dst, sp, dp)]
    if zone:
        parts.append(_nla(CTA_ZONE, _BE16.pack(zone)))
    return _message(IPCTNL_MSG_CT_DELETE, NLM_F_REQUEST, seq, family, b"".join(parts))


def dump_request(seq: int) -> bytes:
    return _message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, socket.AF_UNSPEC, b"")


# --- sockets ---------------------------------------------------------------------------------
class EventSource:
    """A non-blocking netlink socket subscribed to conntrack NEW/UPDATE/DESTROY events."""

    def __init__(self, rcvbuf: int = 32 << 20, mark_mask: int = 0x3) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.bind((0, NFNLGRP_CONNTRACK_MASK))
        self.sock.setblocking(False)
        self.mark_mask = mark_mask
        self.ignore_pid = -1  # the writer's port id: echoes of our own installs
        self.overruns = 0
        self.ignored = 0
        self._buf = bytearray(1 << 17)

    def fileno(self) -> int:
        return self.sock.fileno()

    def ignore_writer(self, pid: int) -> None:
        """Drop the echoes of our own writes in the kernel already (conntrackd's "Filter From
        Kernelspace"): a classic BPF filter on the nlmsg_pid of each event (one per skb).
        The user-space check in :func:`parse_datagram` stays as the fallback."""
        self.ignore_pid = pid
        pid_as_loaded = int.from_bytes(pid.to_bytes(4, sys.byteorder), "big")  # BPF loads are big-endian
        program = b"".join(struct.pack("=HBBI", *insn) for insn in (
            (0x20, 0, 0, 12),  # ld [12]: nlmsg_pid
            (0x15, 0, 1, pid_as_loaded),  # jeq pid ? next : skip one
            (0x06, 0, 0, 0),  # ret 0: drop
            (0x06, 0, 0, 0xFFFFFFFF),  # ret all: accept
        ))
        self._filter = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(self._filter))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
        except OSError:
            pass  # the user-space check still drops them

    def read(self, limit: int = 4096) -> tuple[list[Event], bool]:
        """Every event waiting (up to ``limit`` datagrams); the flag says the kernel dropped
        events (ENOBUFS): the caller must resynchronise from a dump."""
        events: list[Event] = []
        buf, mask = self._buf, self.mark_mask
        for _ in range(limit):
            try:
                size = self.sock.recv_into(buf)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    self.overruns += 1
                    return events, True
                raise
            for item in parse_datagram(buf, size, mask, self.ignore_pid):
                if item.__class__ is Event:
                    events.append(item)
                elif item == -2:
                    self.ignored += 1
        return events, False

    def close(self) -> None:
        self.sock.close()


class KernelTable:
    """Writes entries into this namespace's conntrack table: batched requests, then the ACKs.

    ``pid`` is the socket's netlink port id: events our writes cause carry it, and the intake
    drops them so states received from the peer are never sent back.
    """

    def __init__(self, batch: int = 64, liberal: bool = False) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
        self.sock.bind((0, 0))
        self.pid = self.sock.getsockname()[0]
        self.batch = batch
        self.liberal = liberal
        self._seq = 0
        self._buf = bytearray(1 << 17)
        self.counters = {"created": 0, "updated": 0, "deleted": 0, "errors": 0}
        self.last_error: str | None = None

    def _next_seq(self) -> int:
        self._seq = self._seq + 1 & 0x7FFFFFFF or 1
        return self._seq

    def _transact(self, requests: list[tuple[int, bytes]]) -> dict[int, int]:
        """Send requests (seq, bytes) in batches; returns seq -> errno for those that failed.

        The requests carry no NLM_F_ACK: the kernel handles a netlink request inside our
        send() call and queues an error message only for a failure, so after each send the
        socket holds exactly the failures of that batch (half the messages of ACK-ing each)."""
        failed: dict[int, int] = {}
        for start in range(0, len(requests), self.batch):
            self.sock.send(b"".join(message for _, message in requests[start:start + self.batch]))
            while True:
                try:
                    size = self.sock.recv_into(self._buf, 0, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    break
                off = 0
                while off + 16 <= size:
                    length, msg_type, _, seq, _ = _NLH.unpack_from(self._buf, off)
                    if length < 16:
                        break
                    if msg_type == NLMSG_ERROR:
                        code = -_ERRNO.unpack_from(self._buf, off + 16)[0]
                        if code:
                            failed[seq] = code
                    off += (length + 3) & ~3
        return failed

    def install(self, records: Iterable[tuple[bytes, bool]]) -> None:
        """Create or update entries; ``known`` (the second item) says an update is likely."""
        requests, by_seq = [], {}
        for record, known in records:
            seq = self._next_seq()
            by_seq[seq] = (record, known)
            requests.append((seq, entry_request(record, seq, create=not known, liberal=self.liberal)))
        retry = []
        for seq, code in self._transact(requests).items():
            record, known = by_seq[seq]
            if not known and code == errno.EEXIST or known and code == errno.ENOENT:
                retry.append((record, known))  # created if we tried an update, and vice versa
            else:
                self._error(code, record)
        self.counters["created"] += sum(1 for _, k in by_seq.values() if not k)
        self.counters["updated"] += sum(1 for _, k in by_seq.values() if k)
        if retry:
            requests = []
            for record, create in retry:
                seq = self._next_seq()
                by_seq[seq] = (record, create)
                requests.append((seq, entry_request(record, seq, create=create, liberal=self.liberal)))
            for seq, code in self._transact(requests).items():
                self._error(code, by_seq[seq][0])

    def _error(self, code: int, record: bytes) -> None:
        self.counters["errors"] += 1
        self.last_error = f"{os.strerror(code)} ({wire.describe_key(wire.state_key(record))})"

    def delete(self, keys: Iterable[bytes]) -> None:
        requests = []
        for key in keys:
            seq = self._next_seq()
            requests.append((seq, delete_request(key, seq)))
        failed = self._transact(requests)
        self.counters["deleted"] += len(requests) - len(failed)
        for code in failed.values():
            if code != errno.ENOENT:
                self.counters["errors"] += 1
                self.last_error = os.strerror(code)

    def dump(self, mark_mask: int = 0) -> list[Event]:
        """The whole table (every family), filtered like the event intake."""
        seq = self._next_seq()
        self.sock.send(dump_request(seq))
        events: list[Event] = []
        while True:
            size = self.sock.recv_into(self._buf)
            for item in parse_datagram(self._buf, size, mark_mask):
                if isinstance(item, Event):
                    events.append(item)
                elif item == -1:
                    return events
                elif item:
                    raise OSError(item, os.strerror(item))

    def close(self) -> None:
        self.sock.close()
