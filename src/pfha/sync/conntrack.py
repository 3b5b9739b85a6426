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
import itertools
import operator
import os
import socket
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
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
CTA_SEQ_ADJ_ORIG, CTA_SEQ_ADJ_REPLY = 15, 16  # nested, each {1 correction pos, 2 offset before, 3 after}
CTA_SEQADJ_CORRECTION_POS, CTA_SEQADJ_OFFSET_BEFORE, CTA_SEQADJ_OFFSET_AFTER = 1, 2, 3
CTA_COUNTERS_ORIG, CTA_COUNTERS_REPLY, CTA_COUNTERS_PACKETS = 9, 10, 1
CTA_TUPLE_IP, CTA_TUPLE_PROTO = 1, 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_ID, CTA_PROTO_ICMPV6_ID = 4, 7  # type, code follow each id
CTA_PROTOINFO_TCP = 1
CTA_NAT_V4_MINIP, CTA_NAT_V4_MAXIP, CTA_NAT_PROTO, CTA_NAT_V6_MINIP, CTA_NAT_V6_MAXIP = 1, 2, 3, 4, 5
CTA_PROTONAT_PORT_MIN, CTA_PROTONAT_PORT_MAX = 1, 2
# linux/netfilter/nf_conntrack_common.h
IPS_EXPECTED, IPS_CONFIRMED, IPS_SRC_NAT, IPS_DST_NAT = 0x1, 0x8, 0x10, 0x20
IPS_SEQ_ADJUST = 0x40
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
    orig = reply = info = seq_orig = seq_reply = None
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
        elif kind == CTA_SEQ_ADJ_ORIG:
            seq_orig = (at + 4, at + size)
        elif kind == CTA_SEQ_ADJ_REPLY:
            seq_reply = (at + 4, at + size)
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
    if seq_orig is not None or seq_reply is not None:
        record += _seqadj(buf, seq_orig) + _seqadj(buf, seq_reply)
    return Event(kind, pid, mark, record)


def _seqadj(buf, span: tuple[int, int] | None) -> bytes:
    """One direction's CTA_SEQ_ADJ_* nest as its third of ``wire.SEQADJ`` (zeros if absent)."""
    if span is None:
        return bytes(12)
    inner = _attrs(buf, *span)
    return b"".join(bytes(buf[inner[i][0]:inner[i][0] + 4]) if i in inner else bytes(4)
                    for i in (CTA_SEQADJ_CORRECTION_POS, CTA_SEQADJ_OFFSET_BEFORE, CTA_SEQADJ_OFFSET_AFTER))


def message_activity(buf, off: int, length: int) -> tuple[bytes, int, int | None]:
    """What the refresh sweep needs of a dumped entry before deciding to parse it: an identity
    (zone and original tuple, as the kernel wrote them), its ct mark, and the packets conntrack
    counted in both directions (None when accounting, ``nf_conntrack_acct``, is off).

    One pass over the top-level attributes, no record built: most entries of a sweep carried
    nothing since the last one and are never parsed further."""
    at, end = off + 20, off + length
    nla = _NLA.unpack_from
    orig, zone, mark, total = b"", b"", 0, None
    while at + 4 <= end:
        size, kind = nla(buf, at)
        if size < 4:
            break
        kind &= 0x3FFF
        if kind == CTA_TUPLE_ORIG:
            orig = bytes(buf[at + 4:at + size])
        elif kind == CTA_MARK:
            mark = _BE32.unpack_from(buf, at + 4)[0]
        elif kind == CTA_ZONE:
            zone = bytes(buf[at + 4:at + 6])
        elif kind == CTA_COUNTERS_ORIG or kind == CTA_COUNTERS_REPLY:
            inner, stop = at + 4, at + size
            while inner + 4 <= stop:  # {packets, bytes} as u64, maybe after a padding attribute
                isize, ikind = nla(buf, inner)
                if isize < 4:
                    break
                if ikind & 0x3FFF == CTA_COUNTERS_PACKETS:
                    total = (total or 0) + int.from_bytes(buf[inner + 4:inner + isize], "big")
                    break
                inner += (isize + 3) & ~3
        at += (size + 3) & ~3
    return zone + orig, mark, total


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


def parse_datagram(buf, size: int, mark_mask: int = 0, ignore_pid: int = -1,
                   start: int = 0) -> Iterator[Event | int]:
    """Every message of one netlink datagram (``buf[start:start+size]``); NLMSG_ERROR/DONE
    appear as their errno (DONE: -1). Messages sent on behalf of netlink port ``ignore_pid``
    (our own writes) are skipped unparsed and yielded as -2."""
    off, end = start, start + size
    while off + 16 <= end:
        length, msg_type, flags, _, pid = _NLH.unpack_from(buf, off)
        if length < 16 or off + length > end:
            break
        if pid == ignore_pid:
            yield -2
        elif msg_type == NLMSG_ERROR:
            yield -_ERRNO.unpack_from(buf, off + 16)[0]
        elif msg_type == NLMSG_DONE:
            yield -1
        else:
            event = parse_fast(buf, off, length, msg_type, flags, pid, mark_mask)
            if event is False:
                event = parse_message(buf, off, length, mark_mask)
                if (length, msg_type, flags) not in _LAYOUTS:
                    _learn(buf, off, length, msg_type, flags)
            if event:
                yield event
        off += (length + 3) & ~3


# --- the layout cache: one struct call per event ---------------------------------------------
# The kernel writes the events of one kind of entry (say, a new IPv4 TCP state with a mark)
# with the same attributes in the same order and sizes every time (ctnetlink_fill_info). So the
# first event of each (length, message type, flags) is walked attribute by attribute, and its
# layout is compiled into one struct covering the whole message; later events of that key are
# unpacked in one call, and every attribute header (length and type, nested ones included) is
# compared with the learned ones in one tuple comparison before any value is trusted. A message
# whose headers differ falls back to the general parser. The values go straight into the
# packed record (addresses, ports, status, timeout and mark are copied as the network-order
# bytes they already are), so nothing but the record and the event tuple is created.
class _Layout(NamedTuple):
    whole: struct.Struct  # the whole message
    check: Callable[[tuple], tuple]  # its attribute headers, family and protocol...
    expected: tuple  # ...must equal these
    values: Callable[[tuple], tuple]  # the record's fields, in order
    record: struct.Struct  # wire.STATE with absent fields as zero padding
    mark: int  # index of the mark's bytes in ``whole``'s values, -1: no mark
    kind: int
    columns: _Columns  # the same layout as byte offsets, for a run of events read at once


class _Columns(NamedTuple):
    """A layout as byte offsets, to decode a run of same-layout events column by column.

    recvmmsg(2) puts the events of one read into fixed-size slots, so byte ``k`` of every event
    is ``slot`` bytes from the previous one's: one strided slice (a C loop) reads or compares
    that field for the whole run, and the Python work per event disappears (see
    :meth:`EventSource.read_runs`). Every offset of a ``width``-byte field is a multiple of
    ``width``, in the message and in the record, so a field is one element of a memoryview cast
    to that width."""

    words: tuple[tuple[int, bytes], ...]  # (offset, expected 4 bytes): every attribute header, the nlmsghdr's length, type and flags
    bytes_: tuple[tuple[int, int], ...]  # (offset, expected value): family and both tuples' protocols
    copies: tuple[tuple[int, int, int], ...]  # (width, offset in the record, offset in the message)
    template: bytes  # a record with the constant fields (family, protocol) set, the rest zero
    mark: int  # offset of the mark's 4 bytes in the message, -1: no mark


_LAYOUTS: dict[tuple[int, int, int], _Layout | None] = {}
_LAYOUTS_MAX = 256
_FAST_TUPLE = "HH" "HH" "HH4s" "HH4s" "HH" "HHB3x" "HH2s2x" "HH2s2x"  # 52 bytes, 21 fields
_FAST_TCP = "HH" "HH" "HHB3x" "HHB3x" "HHB3x" "HHB3x" "HHB3x"  # 48 bytes, 19 fields
_FAST_TCP_STATE = "HH" "HH" "HHB3x"  # 16 bytes, 7 fields: the state alone


def parse_fast(buf, off: int, length: int, msg_type: int, flags: int, pid: int,
               mark_mask: int) -> Event | None | bool:
    """An event by its learned layout: the Event, None if filtered out by the mark, False if no
    layout fits (the caller uses :func:`parse_message`)."""
    layout = _LAYOUTS.get((length, msg_type, flags))
    if layout is None:
        return False
    fields = layout.whole.unpack_from(buf, off)
    if layout.check(fields) != layout.expected:
        return False
    mark = int.from_bytes(fields[layout.mark], "big") if layout.mark >= 0 else 0
    if mark_mask and not mark & mark_mask:
        return None
    return _new_tuple(Event, (layout.kind, pid, mark, layout.record.pack(*layout.values(fields))))


_new_tuple = tuple.__new__  # an Event without the NamedTuple's Python-level __new__


def _learn(buf, off: int, length: int, msg_type: int, flags: int) -> None:
    if len(_LAYOUTS) < _LAYOUTS_MAX:
        _LAYOUTS[(length, msg_type, flags)] = _compile_layout(buf, off, length, msg_type, flags)


def _compile_layout(buf, off: int, length: int, msg_type: int, flags: int) -> _Layout | None:
    """The layout of this message if it is an IPv4 entry with ported tuples, else None."""
    if buf[off + 16] != socket.AF_INET or msg_type >> 8 != NFNL_SUBSYS_CTNETLINK:
        return None
    fmt = ["=IHHIIBBH"]  # nlmsghdr (len, type, flags, seq, pid), nfgenmsg (family, version, res)
    check = [0, 1, 2, 5]
    at, end, n = off + 20, off + length, 8
    where: dict[int, int] = {}  # attribute type -> index of its first field
    place: dict[int, int] = {}  # attribute type -> its offset in the message
    headers = [0, 4]  # offsets of the 4-byte words to compare: nlmsghdr length, type + flags...
    short_info = False  # CTA_PROTOINFO with the TCP state only
    while at < end:
        if at + 4 > end:
            return None
        size, kind = _NLA.unpack_from(buf, at)
        padded = (size + 3) & ~3
        if size < 4 or at + padded > end:
            return None
        kind &= 0x3FFF
        if kind in where:
            return None  # a repeated attribute: leave it to the general parser
        where[kind] = n
        place[kind] = at - off
        if kind in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY):
            if size != 52:
                return None
            t = struct.unpack_from("=" + _FAST_TUPLE, buf, at)
            if (t[2:6] != (20, CTA_TUPLE_IP | NLA_F_NESTED, 8, CTA_IP_V4_SRC) or t[8] != CTA_IP_V4_DST
                    or t[13] != CTA_PROTO_NUM or t[16] != CTA_PROTO_SRC_PORT or t[19] != CTA_PROTO_DST_PORT
                    or t[14] not in _PORTS):
                return None
            fmt.append(_FAST_TUPLE)
            headers += [at - off + i for i in (0, 4, 8, 16, 24, 28, 36, 44)]
            check += [n + i for i in (0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 12, 13, 14, 15, 16, 18, 19)]
            n += 21
        elif kind in (CTA_STATUS, CTA_TIMEOUT, CTA_MARK) and size == 8:
            fmt.append("HH4s")
            headers.append(at - off)
            check += [n, n + 1]
            n += 3
        elif kind == CTA_ZONE and size == 6:
            fmt.append("HH2s2x")
            headers.append(at - off)
            check += [n, n + 1]
            n += 3
        elif kind == CTA_PROTOINFO and size == 48:
            t = struct.unpack_from("=" + _FAST_TCP, buf, at)
            if t[2:6] != (44, CTA_PROTOINFO_TCP | NLA_F_NESTED, 5, 1) or t[7:9] != (5, 2) \
                    or t[10:12] != (5, 3) or t[13:15] != (6, 4) or t[16:18] != (6, 5):
                return None
            fmt.append(_FAST_TCP)
            headers += [at - off + i for i in (0, 4, 8, 16, 24, 32, 40)]
            check += [n + i for i in (0, 1, 2, 3, 4, 5, 7, 8, 10, 11, 13, 14, 16, 17)]
            n += 19
        elif kind == CTA_PROTOINFO and size == 16:  # the state alone (DESTROY events)
            t = struct.unpack_from("=" + _FAST_TCP_STATE, buf, at)
            if t[2:6] != (12, CTA_PROTOINFO_TCP | NLA_F_NESTED, 5, 1):
                return None
            fmt.append(_FAST_TCP_STATE)
            headers += [at - off + i for i in (0, 4, 8)]
            check += [n + i for i in (0, 1, 2, 3, 4, 5)]
            short_info = True
            n += 7
        else:
            if kind in (CTA_TUPLE_ORIG, CTA_TUPLE_REPLY, CTA_STATUS, CTA_TIMEOUT, CTA_MARK, CTA_ZONE,
                        CTA_PROTOINFO, CTA_SEQ_ADJ_ORIG, CTA_SEQ_ADJ_REPLY):
                # one we read, in an unusual size; or a sequence adjustment, which makes the
                # record longer: rare (synproxied connections), so the general parser has them
                return None
            fmt.append(f"HH{padded - 4}x")
            headers.append(at - off)
            check += [n, n + 1]
            n += 2
        at += padded
    orig, reply = where.get(CTA_TUPLE_ORIG), where.get(CTA_TUPLE_REPLY)
    if orig is None or reply is None:
        return None
    whole = struct.Struct("".join(fmt))
    if whole.size != length:
        return None
    values = [5, orig + 14]
    record = ["!BB"]

    def add(kind: int, present: str, absent: str, offset: int) -> None:
        if kind in where:
            record.append(present)
            values.append(where[kind] + offset)
        else:
            record.append(absent)

    add(CTA_ZONE, "2s", "2x", 2)
    record.append("4s12x4s12x2s2s" "12x" "4s12x4s12x2s2s")
    values += [orig + 6, orig + 9, orig + 17, orig + 20, reply + 6, reply + 9, reply + 17, reply + 20]
    for kind in (CTA_STATUS, CTA_TIMEOUT, CTA_MARK):
        add(kind, "4s", "4x", 2)
    info = where.get(CTA_PROTOINFO)
    if info is not None and short_info:
        record.append("B4x3x")
        values.append(info + 6)
    elif info is not None:
        record.append("BBBBB3x")
        values += [info + 6, info + 9, info + 12, info + 15, info + 18]
    else:
        record.append("5x3x")
    packer = struct.Struct("".join(record))
    if packer.size != wire.STATE.size:
        return None
    check.append(orig + 14)  # the protocol too: the record's TCP fields depend on it
    sample = whole.unpack_from(buf, off)
    getter = operator.itemgetter(*check)
    if msg_type & 0xFF == IPCTNL_MSG_CT_DELETE:
        kind = KIND_DESTROY
    else:
        kind = KIND_NEW if flags & NLM_F_CREATE else KIND_UPDATE
    if info is not None and sample[orig + 14] != socket.IPPROTO_TCP:
        return None
    return _Layout(whole, getter, getter(sample), operator.itemgetter(*values), packer,
                   where[CTA_MARK] + 2 if CTA_MARK in where else -1, kind,
                   _columns(bytes(buf[off:off + length]), place, headers, sample[orig + 14], short_info))


def _columns(message: bytes, place: dict[int, int], headers: list[int], proto: int, short_info: bool) -> _Columns:
    """The byte offsets of a layout :func:`_compile_layout` accepted (IPv4, ported tuples)."""
    orig, reply = place[CTA_TUPLE_ORIG], place[CTA_TUPLE_REPLY]
    copies = []
    if CTA_ZONE in place:
        copies.append((2, 2, place[CTA_ZONE] + 4))
    for tup, at in ((orig, 4), (reply, 52)):  # src, dst, sport, dport: 4, 4, 2, 2 bytes
        copies += [(4, at, tup + 12), (4, at + 16, tup + 20), (2, at + 32, tup + 40), (2, at + 34, tup + 48)]
    for kind, at in ((CTA_STATUS, 88), (CTA_TIMEOUT, 92), (CTA_MARK, 96)):
        if kind in place:
            copies.append((4, at, place[kind] + 4))
    info = place.get(CTA_PROTOINFO)
    if info is not None:  # state, window scales, flag bytes
        copies += [(1, 100 + i, info + 12 + 8 * i) for i in range(1 if short_info else 5)]
    template = bytearray(wire.STATE.size)
    template[0], template[1] = socket.AF_INET, proto
    return _Columns(tuple((k, message[k:k + 4]) for k in headers),
                    ((16, socket.AF_INET), (orig + 32, proto), (reply + 32, proto)),
                    tuple(copies), bytes(template), place[CTA_MARK] + 4 if CTA_MARK in place else -1)


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


_htons, _htonl = socket.htons, socket.htonl
_STATUS_DROP = IPS_EXPECTED | IPS_DYING | IPS_TEMPLATE | IPS_UNTRACKED | IPS_OFFLOAD | IPS_HW_OFFLOAD
_NESTED_TUPLE_IP, _NESTED_PROTO = CTA_TUPLE_IP | NLA_F_NESTED, CTA_TUPLE_PROTO | NLA_F_NESTED


# The common case (IPv4 TCP/UDP) in one struct call per request. A request's layout depends on
# a handful of yes/no facts (create or update, TCP state, source / destination NAT, mark, zone,
# liberal); for each combination met, one struct for the whole message and one function that
# fills it are compiled on first use (at most 128 of them). Addresses, ports and the mark are
# copied as the network-order bytes the record holds. Unit tests pin every combination to the
# bytes of the general encoder below.
_RAW4 = struct.Struct("!BBH4s12x4s12x2s2s12x4s12x4s12x2s2sII4sBBBBB3x")  # wire.STATE, IPv4 view
_NO_MARK = bytes(4)
_BUILDERS: dict[tuple, Callable[..., bytes]] = {}


def _compile_builder(shape: tuple) -> Callable[..., bytes]:
    """The request layout of one shape as one struct: runs of constant fields (attribute
    headers, padding) become one precomputed byte string each, so a request is packed from
    about 30 values instead of 100."""
    create, tcp, snat, dnat, mark, zone, liberal = shape
    fields: list[tuple[str, int | str]] = []  # (struct code, constant or expression)

    def put(codes: str, *values: int | str) -> None:
        values_iter = iter(values)
        for code in _codes(codes):
            fields.append((code, 0 if code.endswith("x") else next(values_iter)))

    flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_EXCL if create else 0)
    put("IHHIIBBH", "SIZE", NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW, flags, "seq", 0, socket.AF_INET, 0, 0)

    def tuple_(kind: int, src: str, dst: str, sport: str, dport: str) -> None:
        put("HH" "HH" "HH4s" "HH4s" "HH" "HHB3x" "HH2s2x" "HH2s2x",
            52, kind | NLA_F_NESTED, 20, _NESTED_TUPLE_IP, 8, CTA_IP_V4_SRC, src, 8, CTA_IP_V4_DST, dst,
            28, _NESTED_PROTO, 5, CTA_PROTO_NUM, "f[1]", 6, CTA_PROTO_SRC_PORT, sport, 6, CTA_PROTO_DST_PORT, dport)

    def nat(kind: int, addr: str, port: str) -> None:
        put("HH" "HH4s" "HH4s" "HH" "HH2s2x" "HH2s2x",
            40, kind | NLA_F_NESTED, 8, CTA_NAT_V4_MINIP, addr, 8, CTA_NAT_V4_MAXIP, addr,
            20, CTA_NAT_PROTO | NLA_F_NESTED, 6, CTA_PROTONAT_PORT_MIN, port, 6, CTA_PROTONAT_PORT_MAX, port)

    # record fields (_RAW4): 1 proto, 2 zone, 3 osrc, 4 odst, 5 osp, 6 odp, 7 rsrc, 8 rdst, 9 rsp,
    # 10 rdp, 11 status, 12 timeout, 13 mark, 14 tcp state, 15-16 wscale, 17-18 tcp flags
    tuple_(CTA_TUPLE_ORIG, "f[3]", "f[4]", "f[5]", "f[6]")
    if create:  # the reply tuple un-NATed, and the binding (pfsync.md §3.3)
        src, dst, sport, dport = "f[7]", "f[8]", "f[9]", "f[10]"
        if snat:
            dst, dport = "f[3]", "f[5]"
        if dnat:
            src, sport = "f[4]", "f[6]"
        tuple_(CTA_TUPLE_REPLY, src, dst, sport, dport)
        if snat:
            nat(CTA_NAT_SRC, "f[8]", "f[10]")
        if dnat:
            nat(CTA_NAT_DST, "f[7]", "f[9]")
    put("HHI" "HHI", 8, CTA_STATUS, "status", 8, CTA_TIMEOUT, "timeout")
    if mark:
        put("HH4s", 8, CTA_MARK, "f[13]")
    if zone:
        put("HHH2x", 6, CTA_ZONE, "_htons(f[2])")
    if tcp:
        extra = " | 8" if liberal else ""
        put("HH" "HH" "HHB3x" "HHB3x" "HHB3x" "HHBB2x" "HHBB2x",
            48, CTA_PROTOINFO | NLA_F_NESTED, 44, CTA_PROTOINFO_TCP | NLA_F_NESTED,
            5, 1, "f[14]", 5, 2, "f[15]", 5, 3, "f[16]",
            6, 4, f"f[17] & {TCP_PEER_FLAGS}{extra}", 255, 6, 5, f"f[18] & {TCP_PEER_FLAGS}{extra}", 255)
    size = struct.calcsize("=" + "".join(code for code, _ in fields))
    # merge each run of constants into one byte string
    fmt, args, names, run = ["="], [], {}, []

    def flush() -> None:
        if run:
            data = struct.pack("=" + "".join(c for c, _ in run), *(v for c, v in run if not c.endswith("x")))
            name = f"c{len(names)}"
            names[name] = data
            fmt.append(f"{len(data)}s")
            args.append(name)
            run.clear()

    for code, value in fields:
        if value == "SIZE":
            value = size
        if isinstance(value, int):
            run.append((code, value))
        else:
            flush()
            fmt.append(code)
            args.append(value)
    flush()
    packer = struct.Struct("".join(fmt))
    assert packer.size == size
    source = f"lambda f, seq, status, timeout: pack({', '.join(args)})"
    build = eval(source, {"pack": packer.pack, "_htons": _htons, **names})  # noqa: S307 (built above)
    _SHAPES[shape] = _bulk_plan(fields, size, liberal)
    return build


# --- bulk encoding: a run of same-shaped requests with one C-level copy per byte column -------
# A run of N records of one shape becomes N requests that differ only where record bytes (or
# the sequence number) go. So the output starts as N copies of the shape's template, and each
# variable byte is copied for all N at once with an extended-slice assignment
# (``out[j::size] = records[i::108]``), through a 256-byte translation table where the byte is
# transformed (status bits, TCP flag masks). About 40 such copies per run, whatever N is: the
# per-request work left in Python is choosing the shape.
_SHAPES: dict[tuple, tuple[bytes, list[tuple[int, int, bytes | None]], int, int]] = {}
_BULK_MIN = 8  # shorter runs are encoded one request at a time (the bulk copies cost ~40 slices)
_IDENTITY = bytes(range(256))
_RECORD_AT = {"f[1]": (1, 1), "f[2]": (2, 2), "f[3]": (4, 4), "f[4]": (20, 4), "f[5]": (36, 2),
              "f[6]": (38, 2), "f[7]": (52, 4), "f[8]": (68, 4), "f[9]": (84, 2), "f[10]": (86, 2),
              "status": (88, 4), "f[13]": (96, 4), "f[14]": (100, 1), "f[15]": (101, 1),
              "f[16]": (102, 1), "_htons(f[2])": (2, 2)}
_STATUS_BYTES = (None, None, bytes(b & ~(_STATUS_DROP >> 8 & 0xFF) for b in range(256)),
                 bytes(b & ~(_STATUS_DROP & 0xFF) | IPS_CONFIRMED for b in range(256)))


def _bulk_plan(fields: list, size: int, liberal: bool) -> tuple[bytes, list, int, int]:
    """(template, [(request offset, record offset, table or None)], seq offset, timeout offset)."""
    template = bytearray(size)
    copies: list[tuple[int, int, bytes | None]] = []
    at, seq_at, timeout_at = 0, -1, -1
    flags = bytes(b & TCP_PEER_FLAGS | (8 if liberal else 0) for b in range(256))
    for code, value in fields:
        width = struct.calcsize("=" + code)
        if value == "SIZE":
            value = size
        if isinstance(value, int):
            if not code.endswith("x"):
                struct.pack_into("=" + code, template, at, value)
        elif value == "seq":
            seq_at = at
        elif value == "timeout":
            timeout_at = at
        elif value.startswith("f[17]") or value.startswith("f[18]"):
            copies.append((at, 103 if value.startswith("f[17]") else 104, flags))
        else:
            source, length = _RECORD_AT[value]
            for i in range(length):
                table = _STATUS_BYTES[i] if value == "status" else None
                copies.append((at + i, source + i, table))
        at += width
    return bytes(template), copies, seq_at, timeout_at


def entry_requests_bulk(records: list[bytes], first_seq: int, create: bool, liberal: bool) -> bytearray:
    """The requests of ``records``, all of one shape (:func:`request_shape`), with sequence
    numbers ``first_seq``, ``first_seq + 1``... (mod 2**31), concatenated."""
    shape = request_shape(records[0], create, liberal)
    if shape not in _SHAPES:
        _compile_builder(shape)
    template, copies, seq_at, timeout_at = _SHAPES[shape]
    size, count = len(template), len(records)
    out = bytearray(template * count)
    data = b"".join(records)
    stride = wire.STATE.size
    for dst, src, table in copies:
        column = data[src::stride]
        out[dst::size] = column if table is None else column.translate(table)
    seqs = struct.pack(f"={count}I", *[(first_seq + i) & 0x7FFFFFFF for i in range(count)])
    for i in range(4):
        out[seq_at + i::size] = seqs[i::4]
    # the timeout goes as it is (big-endian) except that 0 becomes 1, as in the single encoder
    for i in range(4):
        out[timeout_at + i::size] = data[92 + i::stride]
    nonzero = (int.from_bytes(data[92::stride], "big") | int.from_bytes(data[93::stride], "big")
               | int.from_bytes(data[94::stride], "big") | int.from_bytes(data[95::stride], "big"))
    bytewise = nonzero.to_bytes(count, "big")  # byte i is 0 iff record i's timeout is 0
    if b"\0" in bytewise:
        for index, byte in enumerate(bytewise):
            if not byte:
                out[index * size + timeout_at + 3] = 1
    return out


def _one_shape(records: list[tuple[bytes, bool]]) -> bool:
    """Whether all ``(record, known)`` have one :func:`request_shape` (not None), found with a
    few column comparisons over all of them instead of a shape per record."""
    first, known = records[0]
    n = len(records)
    if request_shape(first, not known, False) is None or [k for _, k in records].count(known) != n:
        return False
    data = b"".join([r for r, _ in records])
    stride = wire.STATE.size
    if len(data) != n * stride:  # some carry a seqadj
        return False
    for at in (0, 1, 2, 3, 91):  # family, protocol, zone, the status byte with the NAT bits
        if data[at::stride].count(first[at]) != n:
            return False
    if first[1] == socket.IPPROTO_TCP and data[100::stride].translate(_NONZERO).count(first[100] != 0) != n:
        return False  # TCP state given or not
    marked = first[96:100] != _NO_MARK
    mark = 0
    for at in range(96, 100):
        mark |= int.from_bytes(data[at::stride], "big")
    return (mark.to_bytes(n, "big").count(0) == 0) if marked else not mark


_NONZERO = bytes([0] + [1] * 255)


def request_shape(record: bytes, create: bool, liberal: bool) -> tuple | None:
    """What the layout of the IPv4 TCP/UDP request for ``record`` depends on; None for any
    other record (the general encoder builds those)."""
    proto = record[1]
    if record[0] != socket.AF_INET or proto != socket.IPPROTO_TCP and proto != socket.IPPROTO_UDP \
            or len(record) != _STATE_SIZE:  # with a seqadj: the general encoder
        return None
    status = record[91]  # the low byte: SRC_NAT 0x10, DST_NAT 0x20
    return (create, proto == socket.IPPROTO_TCP and record[100] != 0,
            create and status & IPS_SRC_NAT != 0, create and status & IPS_DST_NAT != 0,
            record[96:100] != _NO_MARK, create and record[2:4] != b"\0\0", liberal)


def _codes(codes: str) -> list[str]:
    """"HH4s2x" -> ["H", "H", "4s", "2x"]: one item per packed value (or pad run)."""
    out, count = [], ""
    for char in codes:
        if char.isdigit():
            count += char
        else:
            if char in "sx" or not count:
                out.append(count + char)
            else:
                out.extend([char] * int(count))
            count = ""
    return out


def _entry_request4(record: bytes, seq: int, create: bool, liberal: bool) -> bytes | None:
    """The request for an IPv4 TCP/UDP record in one struct call; None for anything else."""
    if len(record) != _STATE_SIZE:
        return None
    f = _RAW4.unpack(record)
    proto = f[1]
    if f[0] != socket.AF_INET or proto != socket.IPPROTO_TCP and proto != socket.IPPROTO_UDP:
        return None
    status = f[11]
    shape = (create, proto == socket.IPPROTO_TCP and f[14] != 0,
             create and status & IPS_SRC_NAT != 0, create and status & IPS_DST_NAT != 0,
             f[13] != _NO_MARK, create and f[2] != 0, liberal)
    build = _BUILDERS.get(shape)
    if build is None:
        build = _compile_builder(shape)
        if len(_BUILDERS) < 128:
            _BUILDERS[shape] = build
    return build(f, seq, _htonl(status & ~_STATUS_DROP | IPS_CONFIRMED), _htonl(max(f[12], 1)))


def entry_request(record: bytes, seq: int, create: bool, liberal: bool = False) -> bytes:
    return _entry_request4(record, seq, create, liberal) \
        or _entry_request_generic(wire.STATE.unpack_from(record), seq, create, liberal, wire.seqadj_of(record))


_STATE_SIZE = wire.STATE.size


def _entry_request_generic(fields: tuple, seq: int, create: bool, liberal: bool = False,
                           seqadj: tuple[int, ...] | None = None) -> bytes:
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
    if seqadj is not None:  # on create, the kernel adds the seqadj extension for these
        for kind, values in ((CTA_SEQ_ADJ_ORIG, seqadj[:3]), (CTA_SEQ_ADJ_REPLY, seqadj[3:])):
            parts.append(_nest(kind, *(_nla(i, _BE32.pack(v)) for i, v in zip(
                (CTA_SEQADJ_CORRECTION_POS, CTA_SEQADJ_OFFSET_BEFORE, CTA_SEQADJ_OFFSET_AFTER), values))))
    flags = NLM_F_REQUEST | (NLM_F_CREATE | NLM_F_EXCL if create else 0)
    return _message(IPCTNL_MSG_CT_NEW, flags, seq, family, b"".join(parts))


def delete_request(key: bytes, seq: int, msg: int = IPCTNL_MSG_CT_DELETE) -> bytes:
    family, proto, zone, src, dst, sp, dp = wire.KEY.unpack(key)
    parts = [_tuple_attr(CTA_TUPLE_ORIG, family, proto, src, dst, sp, dp)]
    if zone:
        parts.append(_nla(CTA_ZONE, _BE16.pack(zone)))
    return _message(msg, NLM_F_REQUEST, seq, family, b"".join(parts))


def get_request(key: bytes, seq: int) -> bytes:
    """Ask for the one entry ``key`` names (its reply carries every attribute, seqadj too)."""
    return delete_request(key, seq, IPCTNL_MSG_CT_GET)


def dump_request(seq: int) -> bytes:
    return _message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, socket.AF_UNSPEC, b"")


# kernel-side dump filters (Linux 5.8): CTA_FILTER {ORIG_FLAGS|REPLY_FLAGS: which fields of
# the given tuple must match}; the flag bits are nf_conntrack_netlink.c's CTA_FILTER_F_*.
CTA_FILTER, CTA_FILTER_ORIG_FLAGS, CTA_FILTER_REPLY_FLAGS = 25, 1, 2
CTA_FILTER_F_IP_SRC, CTA_FILTER_F_IP_DST = 1 << 0, 1 << 1


def dump_request_with(seq: int, family: int, tuple_kind: int, end: str, address: bytes) -> bytes:
    """A dump of the ``family`` entries whose ``tuple_kind`` (CTA_TUPLE_ORIG or _REPLY) tuple
    has the packed ``address`` as its source (``end`` "src") or destination ("dst"), filtered
    by the kernel. A kernel without CTA_FILTER ignores it and dumps every entry."""
    v4 = family == socket.AF_INET
    kind = (CTA_IP_V4_SRC if v4 else CTA_IP_V6_SRC) if end == "src" else (CTA_IP_V4_DST if v4 else CTA_IP_V6_DST)
    flags = CTA_FILTER_F_IP_SRC if end == "src" else CTA_FILTER_F_IP_DST
    which = CTA_FILTER_ORIG_FLAGS if tuple_kind == CTA_TUPLE_ORIG else CTA_FILTER_REPLY_FLAGS
    payload = _nest(tuple_kind, _nest(CTA_TUPLE_IP, _nla(kind, _addr(family, address)))) + _nest(CTA_FILTER, _nla(which, struct.pack("=I", flags)))
    return _message(IPCTNL_MSG_CT_GET, NLM_F_REQUEST | NLM_F_DUMP, seq, family, payload)


# --- sockets ---------------------------------------------------------------------------------
MSG_DONTWAIT, MSG_TRUNC = 0x40, 0x20


class Run(NamedTuple):
    """``count`` consecutive kernel events of one kind and one layout, read at once: their
    packed ``wire.STATE`` records (creator and version 0) back to back in ``records``, and the
    netlink port ids they were sent for (native 32-bit words) in ``pids``."""

    kind: int
    records: bytes
    count: int
    pids: bytes


RUN_MIN = 8  # fewer same-layout events are decoded one at a time (the columns' fixed cost)
_REF_CACHE_MAX = 512


class _Slots:
    """Fixed-size slots for a batch of netlink datagrams, as recvmmsg(2) fills them: datagram
    ``i`` at ``data[i * slot:]``, its size and flags in ``struct mmsghdr`` ``i`` of ``headers``.

    Byte ``k`` of every datagram is ``slot`` bytes after the previous one's, so a field of a run
    of same-layout events is one strided slice (:meth:`column`): this is what makes decoding a
    run cost a fixed number of C loops instead of Python work per event."""

    HDR = 64  # sizeof(struct mmsghdr): struct msghdr (56) + msg_len + padding
    FLAGS, SIZE = 48 // 4, 56 // 4  # msg_flags and msg_len, as 32-bit word indices in a header

    def __init__(self, count: int, slot: int) -> None:
        assert slot % 8 == 0
        self.count, self.slot = count, slot
        self.data = bytearray(count * slot)
        self.headers = bytearray(count * self.HDR)
        data = memoryview(self.data)
        self.views = {1: data, 2: data.cast("H"), 4: data.cast("I")}
        self._sizes = memoryview(self.headers).cast("I")
        self._refs: dict[tuple[int, bytes], memoryview] = {}

    def put(self, i: int, message: bytes, flags: int = 0) -> None:
        """Place a datagram as the kernel would (tests; the receiver's kernel does it itself)."""
        self.data[i * self.slot:i * self.slot + len(message)] = message
        struct.pack_into("=i4xI", self.headers, i * self.HDR + 48, flags, len(message))

    def size(self, i: int) -> int:
        return self._sizes[i * 16 + self.SIZE]

    def flags_clear(self, got: int) -> bool:
        """No datagram of the batch has msg_flags set (MSG_TRUNC: larger than its slot)."""
        return self._sizes[self.FLAGS:(got - 1) * 16 + self.FLAGS + 1:16] == self._ref(4, bytes(4))[:got]

    def column(self, width: int, first: int, n: int, offset: int) -> memoryview:
        """The ``width``-byte field at ``offset`` of datagrams ``first .. first + n - 1``."""
        step = self.slot // width
        at = (first * self.slot + offset) // width
        return self.views[width][at:at + (n - 1) * step + 1:step]

    def sizes(self, first: int, n: int) -> memoryview:
        at = first * 16 + self.SIZE
        return self._sizes[at:at + (n - 1) * 16 + 1:16]

    def _ref(self, width: int, value: bytes) -> memoryview:
        """``value`` repeated ``count`` times, as a view of ``width``-byte items (compare with a
        column in one C loop)."""
        ref = self._refs.get((width, value))
        if ref is None:
            if len(self._refs) >= _REF_CACHE_MAX:
                self._refs.clear()
            view = memoryview(value * self.count)
            ref = self._refs[(width, value)] = view if width == 1 else view.cast("BHxI"[width - 1])
        return ref

    def same(self, column: memoryview, width: int, value: bytes) -> bool:
        return column == self._ref(width, value)[:len(column)]

    def decode_run(self, cols: _Columns, first: int, n: int, length: int, mark_mask: int) -> bytes | None:
        """The packed records of datagrams ``first .. first + n - 1``, each one message of the
        layout ``cols`` (of ``length`` bytes), after checking every attribute header, the family,
        the protocols and the sizes of all of them; None if any differs or any is filtered out
        by the mark (the caller then decodes them one by one), b"" if all are filtered out."""
        same, column = self.same, self.column
        if not same(self.sizes(first, n), 4, struct.pack("=I", length)):
            return None
        for offset, word in cols.words:
            if not same(column(4, first, n, offset), 4, word):
                return None
        for offset, value in cols.bytes_:
            if not same(column(1, first, n, offset), 1, bytes((value,))):
                return None
        if mark_mask:
            if cols.mark < 0:
                return b""  # no mark attribute: the mark is 0
            passed = 0
            for i, byte in enumerate(mark_mask.to_bytes(4, "big")):
                if byte:
                    hits = column(1, first, n, cols.mark + i).tobytes().translate(_BIT_TABLES[byte])
                    passed |= int.from_bytes(hits, "big")
            if passed.to_bytes(n, "big").count(0):
                return None  # some are not ours to sync: one by one
        out = bytearray(cols.template * n)
        size = len(cols.template)
        views = {1: memoryview(out), 2: None, 4: None}
        for width, at, offset in cols.copies:
            view = views[width]
            if view is None:
                view = views[width] = views[1].cast("BHxI"[width - 1])
            view[at // width::size // width] = column(width, first, n, offset)
        return bytes(out)


# byte -> 1 if it shares a bit with the mask byte, else 0 (one table per mask byte)
_BIT_TABLES = {m: bytes(1 if v & m else 0 for v in range(256)) for m in range(1, 256)}


class _MultiReceiver(_Slots):
    """recvmmsg(2) through ctypes: many netlink datagrams per system call into :class:`_Slots`.

    The kernel sends one conntrack event per datagram, so reading them one ``recv`` at a time
    costs a system call and an interpreter round trip per event; this reads up to ``count``
    (conntrackd reads its socket in a loop in C). ``struct mmsghdr`` is laid out for 64-bit
    Linux only; :meth:`open` returns None elsewhere or without ``recvmmsg``, and the caller falls
    back to ``recv_into``. A datagram larger than its slot (1 KiB: conntrack events are 150-600
    bytes) is cut short and flagged MSG_TRUNC: the caller resynchronises from a dump, as for a
    kernel overrun.
    """

    def __init__(self, fd: int, recvmmsg, count: int, slot: int) -> None:
        super().__init__(count, slot)
        self.fd = fd
        self._call = recvmmsg
        self._iovecs = bytearray(count * 16)
        self._data_c = (ctypes.c_char * len(self.data)).from_buffer(self.data)
        self._headers_c = (ctypes.c_char * len(self.headers)).from_buffer(self.headers)
        self._iovecs_c = (ctypes.c_char * len(self._iovecs)).from_buffer(self._iovecs)
        data, iovecs = ctypes.addressof(self._data_c), ctypes.addressof(self._iovecs_c)
        for i in range(count):
            struct.pack_into("=QQ", self._iovecs, 16 * i, data + i * slot, slot)
            # msg_name NULL, namelen 0, msg_iov, msg_iovlen 1, no control, flags 0
            struct.pack_into("=QI4xQQQQi4xI4x", self.headers, self.HDR * i, 0, 0, iovecs + 16 * i, 1, 0, 0, 0, 0)
        self._headers_addr = ctypes.addressof(self._headers_c)

    @classmethod
    def open(cls, fd: int, count: int = 256, slot: int = 1024) -> _MultiReceiver | None:
        if ctypes.sizeof(ctypes.c_void_p) != 8 or not sys.platform.startswith("linux") \
                or os.environ.get("PFHA_SYNC_NO_RECVMMSG"):
            return None
        try:
            recvmmsg = ctypes.CDLL(None, use_errno=True).recvmmsg
        except (OSError, AttributeError):
            return None
        recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        recvmmsg.restype = ctypes.c_int
        return cls(fd, recvmmsg, count, slot)

    def receive(self, limit: int) -> int:
        """How many datagrams were read into the slots (0 if none waits)."""
        got = self._call(self.fd, self._headers_addr, min(limit, self.count), MSG_DONTWAIT, None)
        if got < 0:
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            raise OSError(code, os.strerror(code))
        return got


def _bpf(*insns: tuple[int, int, int, int]) -> bytes:
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


_BPF_NLATTR = (-0x1000 + 12) & 0xFFFFFFFF  # SKF_AD_OFF + SKF_AD_NLATTR: A = offset of attribute X from offset A


def event_filter(ignore_pid: int, mark_mask: int) -> bytes:
    """The classic BPF program for the event socket (conntrackd's "Filter From Kernelspace"):
    drop the echoes of our own writes (``nlmsg_pid == ignore_pid``; -1: none) and, with a
    non-zero mask, every event of an entry whose ``ct mark & mark_mask`` is 0 — the kernel then
    never queues them (nor counts them against the receive buffer). Messages that are not
    conntrack entries (errors, other subsystems) have no CTA_MARK and are dropped too: this
    socket only ever reads entries."""
    insns = []
    if ignore_pid >= 0:
        pid_as_loaded = int.from_bytes(ignore_pid.to_bytes(4, sys.byteorder), "big")  # BPF loads are big-endian
        insns += [(0x20, 0, 0, 12),  # ld [12]: nlmsg_pid
                  (0x15, 0, 1, pid_as_loaded),  # jeq pid ? next : skip one
                  (0x06, 0, 0, 0)]  # ret 0: drop
    if mark_mask:
        insns += [(0x01, 0, 0, CTA_MARK),  # ldx #CTA_MARK
                  (0x00, 0, 0, 20),  # ld #20: the attributes start after nlmsghdr + nfgenmsg
                  (0x20, 0, 0, _BPF_NLATTR),  # A = offset of CTA_MARK, or 0
                  (0x15, 3, 0, 0),  # jeq 0 ? drop (no mark: it is 0)
                  (0x07, 0, 0, 0),  # tax
                  (0x40, 0, 0, 4),  # ld [x + 4]: the mark (network order)
                  (0x45, 1, 0, mark_mask),  # jset mask ? accept : drop
                  (0x06, 0, 0, 0)]  # ret 0: drop
    insns.append((0x06, 0, 0, 0xFFFFFFFF))  # ret all: accept
    return _bpf(*insns)


class EventDecoder:
    """Kernel events from datagrams into :class:`Event` and :class:`Run` items, filtered by the
    ct mark and without our own writes' echoes (``ignore_pid``). Pure: it reads buffers only."""

    def __init__(self, mark_mask: int = 0, ignore_pid: int = -1, filtered_in_kernel: bool = False) -> None:
        self.mark_mask = mark_mask
        self.ignore_pid = ignore_pid
        self.filtered_in_kernel = filtered_in_kernel  # no echo of ours can be in a batch
        self.ignored = 0  # echoes that reached user space anyway

    def batch(self, batch: _Slots, got: int, items: list) -> None:
        """Cut the batch into runs of one (length, type, flags) and decode each run in columns;
        short runs, unknown layouts and runs that fail a check one event at a time."""
        columns_ok = self.ignore_pid < 0 or self.filtered_in_kernel
        lengths = batch.column(4, 0, got, 0)
        kinds = batch.column(4, 0, got, 4)
        if batch.same(lengths, 4, lengths[0:1].tobytes()) and batch.same(kinds, 4, kinds[0:1].tobytes()):
            runs: Iterable[tuple[tuple[int, int], int]] = (((lengths[0], kinds[0]), got),)
        else:
            runs = [(key, len(list(group))) for key, group in itertools.groupby(zip(lengths.tolist(), kinds.tolist()))]
        data, slot, mask = batch.data, batch.slot, self.mark_mask
        first = 0
        for (length, kind_word), n in runs:
            i, stop = first, first + n
            first = stop
            if n >= RUN_MIN and columns_ok:
                msg_type, flags = _TYPE_FLAGS(_WORD(kind_word))
                layout = _LAYOUTS.get((length, msg_type, flags))
                if layout is None and (length, msg_type, flags) not in _LAYOUTS:
                    self.one(data, i * slot, batch.size(i), items)  # learns the layout
                    i += 1
                    layout = _LAYOUTS.get((length, msg_type, flags))
                if layout is not None:
                    self._run(batch, layout, i, stop - i, length, items)
                    continue
            for j in range(i, stop):
                self.one(data, j * slot, batch.size(j), items)

    def _run(self, batch: _Slots, layout: _Layout, first: int, n: int, length: int, items: list) -> None:
        """Datagrams ``first .. first + n - 1`` of one layout key: in columns if all of them pass
        the checks, else each half the same way (one odd event costs a few halvings, not the
        columns of its whole batch), down to one by one."""
        records = batch.decode_run(layout.columns, first, n, length, self.mark_mask)
        if records is not None:
            if records:
                items.append(Run(layout.kind, records, n, batch.column(4, first, n, 12).tobytes()))
        elif n >= 2 * RUN_MIN:
            half = n // 2
            self._run(batch, layout, first, half, length, items)
            self._run(batch, layout, first + half, n - half, length, items)
        else:
            for j in range(first, first + n):
                self.one(batch.data, j * batch.slot, batch.size(j), items)

    def one(self, buf, start: int, size: int, events: list) -> None:
        """One datagram: of a learned layout in one struct call, else by the general parser."""
        mask, ignore = self.mark_mask, self.ignore_pid
        length, msg_type, flags, _, pid = _NLH.unpack_from(buf, start)
        if 0 <= size - length < 4 and pid != ignore:
            layout = _LAYOUTS.get((length, msg_type, flags))
            if layout is not None:
                fields = layout.whole.unpack_from(buf, start)
                if layout.check(fields) == layout.expected:
                    mark = int.from_bytes(fields[layout.mark], "big") if layout.mark >= 0 else 0
                    if not mask or mark & mask:
                        events.append(_new_tuple(Event, (layout.kind, pid, mark,
                                                         layout.record.pack(*layout.values(fields)))))
                    return
        for item in parse_datagram(buf, size, mask, ignore, start):
            if item.__class__ is Event:
                events.append(item)
            elif item == -2:
                self.ignored += 1


class EventSource:
    """A non-blocking netlink socket subscribed to conntrack NEW/UPDATE/DESTROY events."""

    def __init__(self, rcvbuf: int = 32 << 20, mark_mask: int = 0x3) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setblocking(False)
        self.decoder = EventDecoder(mark_mask & 0xFFFFFFFF)
        self.overruns = 0
        self._buf = bytearray(1 << 17)
        self._batch = _MultiReceiver.open(self.sock.fileno())
        self._attach_filter()
        self.sock.bind((0, NFNLGRP_CONNTRACK_MASK))  # after the filter: nothing unfiltered queues

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def mark_mask(self) -> int:
        return self.decoder.mark_mask

    @property
    def ignored(self) -> int:
        """Echoes of our own writes that reached user space (the BPF filter drops them before)."""
        return self.decoder.ignored

    def ignore_writer(self, pid: int) -> None:
        """Drop the echoes of our own writes in the kernel already: the filter checks the
        nlmsg_pid of each event (one per skb). The user-space check in :func:`parse_datagram`
        stays as the fallback."""
        self.decoder.ignore_pid = pid
        self._attach_filter()

    def _attach_filter(self) -> None:
        program = event_filter(self.decoder.ignore_pid, self.decoder.mark_mask)
        self._filter = ctypes.create_string_buffer(program)
        fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(self._filter))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
            self.decoder.filtered_in_kernel = True
        except OSError:
            self.decoder.filtered_in_kernel = False  # the user-space checks still drop them

    def read(self, limit: int = 4096) -> tuple[list[Event], bool]:
        """Every event waiting (up to ``limit`` datagrams, i.e. events: the kernel sends one per
        datagram); the flag says the kernel dropped events (ENOBUFS): the caller must
        resynchronise from a dump. :meth:`read_runs` with its runs taken apart."""
        items, overrun = self.read_runs(limit)
        events: list[Event] = []
        for item in items:
            if item.__class__ is Run:
                size = wire.STATE.size
                for i, (pid,) in enumerate(struct.iter_unpack("=I", item.pids)):
                    record = item.records[i * size:(i + 1) * size]
                    events.append(Event(item.kind, pid, int.from_bytes(record[96:100], "big"), record))
            else:
                events.append(item)
        return events, overrun

    def read_runs(self, limit: int = 4096) -> tuple[list[Event | Run], bool]:
        """Every event waiting (up to ``limit``), in the kernel's order: runs of same-layout
        events as :class:`Run` (decoded column by column), the others as :class:`Event`.
        Reads up to 256 datagrams per system call (recvmmsg); the flag as for :meth:`read`."""
        batch = self._batch
        if batch is None:
            return self._read_one_by_one(limit)
        items: list[Event | Run] = []
        while limit > 0:
            asked = min(limit, batch.count)
            try:
                got = batch.receive(asked)
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    self.overruns += 1
                    return items, True
                raise
            if not got:
                break
            if not batch.flags_clear(got):  # a datagram larger than its slot: lost
                for i in range(got):
                    if not struct.unpack_from("=i", batch.headers, i * batch.HDR + 48)[0] & MSG_TRUNC:
                        self.decoder.one(batch.data, i * batch.slot, batch.size(i), items)
                self.overruns += 1
                return items, True
            self.decoder.batch(batch, got, items)
            if got < asked:
                break  # the socket is empty: no second system call to learn it
            limit -= got
        return items, False

    def _read_one_by_one(self, limit: int) -> tuple[list[Event | Run], bool]:
        events: list[Event | Run] = []
        while limit > 0:
            try:
                size = self.sock.recv_into(self._buf)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.ENOBUFS:
                    self.overruns += 1
                    return events, True
                raise
            self.decoder.one(self._buf, 0, size, events)
            limit -= 1
        return events, False

    def close(self) -> None:
        self.sock.close()


_WORD = struct.Struct("=I").pack
_TYPE_FLAGS = struct.Struct("=HH").unpack


class KernelTable:
    """Writes entries into this namespace's conntrack table: batched requests, then the ACKs.

    ``pid`` is the socket's netlink port id: events our writes cause carry it, and the intake
    drops them so states received from the peer are never sent back.
    """

    def __init__(self, batch: int = 256, liberal: bool = False) -> None:
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
        self._seq = self._seq + 1 & 0x7FFFFFFF
        return self._seq

    def _transact(self, chunks: list[tuple[bytes | bytearray, int, int]]) -> dict[int, int]:
        """Send requests, at most ``batch`` per sendmsg; returns seq -> errno for those that
        failed. ``chunks``: (bytes of ``count`` consecutive requests of ``size`` bytes each, count,
        size); a chunk is split between sends where needed, without copying (scatter-gather).

        The requests carry no NLM_F_ACK: the kernel handles a netlink request inside our
        send() call and queues an error message only for a failure, so after each send the
        socket holds exactly the failures of that batch (half the messages of ACK-ing each)."""
        failed: dict[int, int] = {}
        parts: list[memoryview] = []
        room = self.batch
        for blob, count, size in chunks:
            view, at = memoryview(blob), 0
            while at < count:
                take = min(count - at, room)
                parts.append(view[at * size:(at + take) * size])
                at += take
                room -= take
                if not room:
                    self._send(parts, failed)
                    parts, room = [], self.batch
        if parts:
            self._send(parts, failed)
        return failed

    def _send(self, parts: list[memoryview], failed: dict[int, int]) -> None:
        self.sock.sendmsg(parts)
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

    def _encode(self, records: list[tuple[bytes, bool]], base: int) -> list[tuple[bytes | bytearray, int, int]]:
        """The requests for ``records`` with seqs ``base``, ``base + 1``...: each run of
        consecutive records of one request shape is encoded in bulk (order is kept: a state may
        come twice in one batch)."""
        chunks: list[tuple[bytes | bytearray, int, int]] = []
        liberal, n, i = self.liberal, len(records), 0
        if n >= _BULK_MIN and _one_shape(records):  # the common case: a stream of alike states
            known = records[0][1]
            blob = entry_requests_bulk([r for r, _ in records], base, not known, liberal)
            return [(blob, n, len(blob) // n)]
        while i < n:
            record, known = records[i]
            shape = request_shape(record, not known, liberal)
            j = i + 1
            if shape is not None:
                while j < n and request_shape(records[j][0], not records[j][1], liberal) == shape:
                    j += 1
            if shape is not None and j - i >= _BULK_MIN:
                blob = entry_requests_bulk([r for r, _ in records[i:j]], base + i, not known, liberal)
                chunks.append((blob, j - i, len(blob) // (j - i)))
            else:  # one at a time: cheaper than the bulk encoder's fixed cost for a few
                for k in range(i, j):
                    message = entry_request(records[k][0], (base + k) & 0x7FFFFFFF, not records[k][1], liberal)
                    chunks.append((message, 1, len(message)))
            i = j
        return chunks

    def install(self, records: Iterable[tuple[bytes, bool]]) -> None:
        """Create or update entries; ``known`` (the second item) says an update is likely.

        A record with a sequence adjustment goes with CTA_SEQ_ADJ_ORIG/REPLY; ctnetlink gives
        every entry it creates the seqadj extension (ctnetlink_create_conntrack), so an entry
        first synced before synproxy set its adjustment takes it in a later update."""
        records = list(records)
        if not records:
            return
        base = self._seq + 1 & 0x7FFFFFFF
        self._seq = (base + len(records) - 1) & 0x7FFFFFFF
        retry = []
        for seq, code in self._transact(self._encode(records, base)).items():
            record, known = records[(seq - base) & 0x7FFFFFFF]
            if not known and code == errno.EEXIST or known and code == errno.ENOENT:
                retry.append((record, not known))  # created if we tried an update, and vice versa
            else:
                self._error(code, record)
        updated = sum(1 for _, known in records if known)
        self.counters["created"] += len(records) - updated
        self.counters["updated"] += updated
        if retry:
            base = self._seq + 1 & 0x7FFFFFFF
            self._seq = (base + len(retry) - 1) & 0x7FFFFFFF
            for seq, code in self._transact(self._encode(retry, base)).items():
                self._error(code, retry[(seq - base) & 0x7FFFFFFF][0])

    def _error(self, code: int, record: bytes) -> None:
        self.counters["errors"] += 1
        self.last_error = f"{os.strerror(code)} ({wire.describe_key(wire.state_key(record))})"

    def delete(self, keys: Iterable[bytes]) -> None:
        requests = []
        for key in keys:
            message = delete_request(key, self._next_seq())
            requests.append((message, 1, len(message)))
        failed = self._transact(requests)
        self.counters["deleted"] += len(requests) - len(failed)
        for code in failed.values():
            if code != errno.ENOENT:
                self.counters["errors"] += 1
                self.last_error = os.strerror(code)

    def dump(self, mark_mask: int = 0, request: Callable[[int], bytes] = dump_request) -> list[Event]:
        """The whole table (every family), filtered like the event intake; ``request`` (seq ->
        message) asks for another dump, e.g. one filtered by :func:`dump_request_with`."""
        seq = self._next_seq()
        self.sock.send(request(seq))
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

    def get(self, key: bytes) -> bytes | None:
        """The entry ``key`` names as a packed STATE record (with its sequence adjustment, which
        events report only when IPCT_SEQADJ is among their causes); None if there is none."""
        self.sock.send(get_request(key, self._next_seq()))
        record = None
        while True:
            size = self.sock.recv_into(self._buf)
            for item in parse_datagram(self._buf, size):
                if isinstance(item, Event):
                    record = item.record
                elif item == errno.ENOENT:
                    return None
                elif item > 0:
                    raise OSError(item, os.strerror(item))
                else:
                    return record
            if record is not None:
                return record

    def dump_activity(self, moved: Callable[[bytes, int | None], bool], mark_mask: int = 0) -> list[bytes]:
        """The refresh sweep's dump: every entry's identity and packet count go to ``moved``
        (see :class:`pfha.sync.refresh.Refresher`), and only the entries it picks are parsed
        into records. Entries whose mark misses ``mark_mask`` are skipped."""
        seq = self._next_seq()
        self.sock.send(dump_request(seq))
        records: list[bytes] = []
        buf = self._buf
        while True:
            size = self.sock.recv_into(buf)
            off = 0
            while off + 16 <= size:
                length, msg_type = _NLH.unpack_from(buf, off)[:2]
                if length < 16 or off + length > size:
                    break
                if msg_type == NLMSG_DONE:
                    return records
                if msg_type == NLMSG_ERROR:
                    code = -_ERRNO.unpack_from(buf, off + 16)[0]
                    if code:
                        raise OSError(code, os.strerror(code))
                elif msg_type >> 8 == NFNL_SUBSYS_CTNETLINK:
                    ident, mark, packets = message_activity(buf, off, length)
                    if (not mark_mask or mark & mark_mask) and moved(ident, packets):
                        event = parse_message(buf, off, length, mark_mask)
                        if event is not None:
                            records.append(event.record)
                off += (length + 3) & ~3

    def close(self) -> None:
        self.sock.close()
