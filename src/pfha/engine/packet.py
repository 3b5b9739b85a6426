"""The packet model of the reference engine: IPv4/IPv6 datagrams parsed from and built to bytes.

pf looks at a handful of header fields (addresses, protocol, ports, TCP flags and sequence
numbers, ICMP type/code/id, IP options, fragment offset) and rewrites a few of them (NAT,
modulate, synproxy). :class:`Packet` holds exactly those fields as plain integers, so that
matching a rule or a state is integer comparisons, and rebuilds the wire bytes with correct
checksums when asked. Parsing is ``struct.unpack_from`` on the header; payloads are kept as
``bytes`` and never looked into, except the packet embedded in an ICMP error, which pf matches to
its state.

Addresses are integers (``int.from_bytes`` of the 4 or 16 bytes) tagged by ``af`` (4 or 6).
This module must never use scapy or any per-packet library: replay speed depends on it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Iterator, Optional

from pfha.checksum import internet_checksum as inet_checksum  # the project's one implementation
from pfha.errors import PfhaError

# IP protocol numbers (FreeBSD /etc/protocols names where pf.conf uses them).
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_CARP = 112
IPPROTO_PFSYNC = 240

# TCP flags, as pf.conf names them (FSRPAUEW).
TH_FIN = 0x01
TH_SYN = 0x02
TH_RST = 0x04
TH_PUSH = 0x08
TH_ACK = 0x10
TH_URG = 0x20
TH_ECE = 0x40
TH_CWR = 0x80
FLAG_LETTERS = "FSRPAUEW"

# ICMP error types whose payload carries the offending packet (RFC 792 / RFC 4443).
ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})
ICMP6_ERRORS = frozenset({1, 2, 3, 4})
# ICMP queries and their replies (pf_icmp_mapping): the id is the flow identifier.
ICMP4_QUERY_REPLY = {8: 0, 0: 8, 13: 14, 14: 13, 15: 16, 16: 15, 17: 18, 18: 17, 10: 9, 9: 10}
ICMP6_QUERY_REPLY = {128: 129, 129: 128}

# IPv6 extension headers skipped while looking for the upper-layer header.
_V6_EXT = frozenset({0, 43, 44, 60})
_IPV6_ROUTING = 43
_IPV6_FRAGMENT = 44

_IP4 = struct.Struct("!BBHHHBBHII")
# IPv4 without options + TCP or UDP in one unpack; version, checksums and urgent pointer skipped
_IP4_TCP = struct.Struct("!xBHHHBB2xIIHHIIBBH4x")
_IP4_UDP = struct.Struct("!xBHHHBB2xIIHH4x")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ICMP = struct.Struct("!BBHHH")


class PacketError(PfhaError):
    """Bytes that are not an IP packet the engine can model."""


def flags_from_text(text: str) -> int:
    """``"SA"`` -> TH_SYN|TH_ACK (pf.conf's flag letters)."""
    value = 0
    for letter in text:
        index = FLAG_LETTERS.find(letter.upper())
        if index < 0:
            raise PacketError(f"unknown TCP flag {letter!r} (use {FLAG_LETTERS})")
        value |= 1 << index
    return value


def flags_to_text(flags: int) -> str:
    return "".join(letter for bit, letter in enumerate(FLAG_LETTERS) if flags & (1 << bit))


def addr_to_int(text: str) -> tuple[int, int]:
    """``"192.0.2.1"`` -> (4, int); ``"2001:db8::1"`` -> (6, int)."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError as error:
        raise PacketError(f"bad address {text!r}") from error
    return address.version, int(address)


def addr_to_text(af: int, value: int) -> str:
    return str(ipaddress.IPv4Address(value) if af == 4 else ipaddress.IPv6Address(value))


@dataclass(slots=True)
class TcpOptions:
    """The TCP options pf reads on a SYN: MSS (synproxy) and window scale (sequence tracking)."""

    mss: Optional[int] = None
    wscale: Optional[int] = None


def tcp_options(raw: bytes) -> Iterator[tuple[int, int]]:
    """(offset, length) of each TCP option in ``raw`` up to End of Option List or the first
    malformed one (a length under 2 or past the end): where pf's option walks stop too."""
    i, n = 0, len(raw)
    while i < n:
        kind = raw[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        if i + 1 >= n:
            return
        length = raw[i + 1]
        if length < 2 or i + length > n:
            return
        yield i, length
        i += length


def parse_tcp_options(raw: bytes) -> TcpOptions:
    result = TcpOptions()
    for i, length in tcp_options(raw):
        kind = raw[i]
        if kind == 2 and length == 4:
            result.mss = (raw[i + 2] << 8) | raw[i + 3]
        elif kind == 3 and length == 3:
            result.wscale = min(raw[i + 2], 14)
    return result


class Packet:
    """One IP datagram as pf sees it; mutable so that translation rewrites it in place.

    ``sport``/``dport`` are the TCP/UDP ports; for ICMP queries both hold the ICMP id (pf's
    "virtual port", so a state key reads the same in both directions). ``inner`` is the packet
    quoted by an ICMP error, parsed leniently (it is usually truncated).
    """

    __slots__ = (
        "af", "src", "dst", "proto", "sport", "dport", "flags", "seq", "ack", "win",
        "tcp_options", "icmp_type", "icmp_code", "icmp_id", "icmp_rest", "payload",
        "ttl", "tos", "ip_id", "df", "frag_offset", "more_frags", "ip_options",
        "v6_routing", "flow", "inner", "truncated", "wire_len", "tag",
    )

    def __init__(
        self,
        af: int,
        src: int,
        dst: int,
        proto: int,
        sport: int = 0,
        dport: int = 0,
        *,
        flags: int = 0,
        seq: int = 0,
        ack: int = 0,
        win: int = 65535,
        tcp_options: bytes = b"",
        icmp_type: int = 0,
        icmp_code: int = 0,
        icmp_id: int = 0,
        icmp_rest: int = 0,
        payload: bytes = b"",
        ttl: int = 64,
        tos: int = 0,
        ip_id: int = 0,
        df: bool = False,
        frag_offset: int = 0,
        more_frags: bool = False,
        ip_options: bytes = b"",
        v6_routing: bool = False,
        flow: int = 0,
        inner: Optional["Packet"] = None,
    ) -> None:
        self.af = af
        self.src = src
        self.dst = dst
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.flags = flags
        self.seq = seq
        self.ack = ack
        self.win = win
        self.tcp_options = tcp_options
        self.icmp_type = icmp_type
        self.icmp_code = icmp_code
        self.icmp_id = icmp_id
        self.icmp_rest = icmp_rest
        self.payload = payload
        self.ttl = ttl
        self.tos = tos
        self.ip_id = ip_id
        self.df = df
        self.frag_offset = frag_offset
        self.more_frags = more_frags
        self.ip_options = ip_options
        self.v6_routing = v6_routing
        self.flow = flow
        self.inner = inner
        self.truncated = False
        self.wire_len = 0
        self.tag: Optional[str] = None  # pf's mbuf tag: set by ``tag``, read by ``tagged``

    # ------------------------------------------------------------------ properties
    @property
    def is_fragment(self) -> bool:
        """A fragment that is not the first: it carries no transport header."""
        return self.frag_offset != 0

    @property
    def is_icmp(self) -> bool:
        return self.proto == IPPROTO_ICMP or self.proto == IPPROTO_ICMPV6

    @property
    def is_icmp_error(self) -> bool:
        if self.proto == IPPROTO_ICMP:
            return self.icmp_type in ICMP4_ERRORS
        if self.proto == IPPROTO_ICMPV6:
            return self.icmp_type in ICMP6_ERRORS
        return False

    @property
    def l4_len(self) -> int:
        """Transport payload length (pf's p_len): what sequence numbers count."""
        return len(self.payload)

    def __len__(self) -> int:
        return self.wire_len or len(self.to_bytes())

    def size(self) -> int:
        """The datagram's length in bytes, computed without building it (for byte counters)."""
        options = len(self.ip_options)
        header = (20 + options + (-options % 4)) if self.af == 4 else 40
        proto = self.proto
        if self.frag_offset:
            l4 = 0
        elif proto == IPPROTO_TCP:
            l4 = 20 + len(self.tcp_options) + (-len(self.tcp_options) % 4)
        elif proto == IPPROTO_UDP or proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            l4 = 8
        else:
            l4 = 0
        return header + l4 + len(self.payload)

    def copy(self) -> "Packet":
        clone = Packet.__new__(Packet)
        for name in Packet.__slots__:
            setattr(clone, name, getattr(self, name))
        if self.inner is not None:
            clone.inner = self.inner.copy()
        return clone

    def src_text(self) -> str:
        return addr_to_text(self.af, self.src)

    def dst_text(self) -> str:
        return addr_to_text(self.af, self.dst)

    def mss(self) -> Optional[int]:
        return parse_tcp_options(self.tcp_options).mss

    def wscale(self) -> Optional[int]:
        return parse_tcp_options(self.tcp_options).wscale

    def __repr__(self) -> str:
        return f"Packet({self.summary()})"

    def summary(self) -> str:
        """One line, tcpdump-like: ``198.51.100.9.40000 > 203.0.113.11.80: tcp S``."""
        src, dst = self.src_text(), self.dst_text()
        if self.proto in (IPPROTO_TCP, IPPROTO_UDP):
            sep = "." if self.af == 4 else "."
            text = f"{src}{sep}{self.sport} > {dst}{sep}{self.dport}"
            if self.proto == IPPROTO_TCP:
                return f"{text}: tcp {flags_to_text(self.flags) or '.'} seq {self.seq} ack {self.ack} len {self.l4_len}"
            return f"{text}: udp len {self.l4_len}"
        if self.is_icmp:
            kind = "icmp" if self.proto == IPPROTO_ICMP else "icmp6"
            return f"{src} > {dst}: {kind} type {self.icmp_type} code {self.icmp_code} id {self.icmp_id}"
        return f"{src} > {dst}: proto {self.proto} len {self.l4_len}"

    # ------------------------------------------------------------------ building
    def _pseudo_header(self, l4_len: int) -> bytes:
        if self.af == 4:
            return struct.pack("!IIBBH", self.src, self.dst, 0, self.proto, l4_len)
        return self.src.to_bytes(16, "big") + self.dst.to_bytes(16, "big") + struct.pack("!IxxxB", l4_len, self.proto)

    def transport_bytes(self) -> bytes:
        """The transport header and payload, checksummed."""
        proto = self.proto
        if self.frag_offset:
            return self.payload
        if proto == IPPROTO_TCP:
            options = self.tcp_options
            if len(options) % 4:
                options += b"\x00" * (4 - len(options) % 4)
            offset = (20 + len(options)) // 4
            header = _TCP.pack(self.sport, self.dport, self.seq & 0xFFFFFFFF, self.ack & 0xFFFFFFFF,
                               offset << 4, self.flags & 0xFF, self.win & 0xFFFF, 0, 0) + options
            segment = header + self.payload
            csum = inet_checksum(self._pseudo_header(len(segment)) + segment)
            return segment[:16] + struct.pack("!H", csum) + segment[18:]
        if proto == IPPROTO_UDP:
            length = 8 + len(self.payload)
            segment = _UDP.pack(self.sport, self.dport, length, 0) + self.payload
            csum = inet_checksum(self._pseudo_header(length) + segment) or 0xFFFF
            return segment[:6] + struct.pack("!H", csum) + segment[8:]
        if proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            if self.inner is not None:
                quoted = self.inner.to_bytes()
                body = quoted[: len(self.payload)] if self.payload else quoted
            else:
                body = self.payload
            if self.icmp_type in (ICMP4_QUERY_REPLY if proto == IPPROTO_ICMP else ICMP6_QUERY_REPLY):
                rest = struct.pack("!HH", self.icmp_id, self.icmp_rest & 0xFFFF)
            else:
                rest = struct.pack("!I", self.icmp_rest & 0xFFFFFFFF)
            segment = struct.pack("!BBH", self.icmp_type, self.icmp_code, 0) + rest + body
            data = segment if proto == IPPROTO_ICMP else self._pseudo_header(len(segment)) + segment
            csum = inet_checksum(data)
            return segment[:2] + struct.pack("!H", csum) + segment[4:]
        return self.payload

    def to_bytes(self) -> bytes:
        """The whole datagram with correct IP and transport checksums."""
        l4 = self.transport_bytes()
        if self.af == 4:
            options = self.ip_options
            if len(options) % 4:
                options += b"\x00" * (4 - len(options) % 4)
            ihl = 5 + len(options) // 4
            frag = (self.frag_offset // 8) | (0x4000 if self.df else 0) | (0x2000 if self.more_frags else 0)
            total = ihl * 4 + len(l4)
            if self.truncated and self.wire_len > total:
                total = self.wire_len  # a quoted, truncated packet keeps its original length
            header = _IP4.pack(0x40 | ihl, self.tos, total, self.ip_id & 0xFFFF, frag,
                               self.ttl, self.proto, 0, self.src, self.dst) + options
            csum = inet_checksum(header)
            return header[:10] + struct.pack("!H", csum) + header[12:] + l4
        first = (6 << 28) | (self.tos << 20) | (self.flow & 0xFFFFF)
        next_header = self.proto
        ext = b""
        if self.frag_offset or self.more_frags:
            ext = struct.pack("!BBHI", self.proto, 0, self.frag_offset | (1 if self.more_frags else 0), self.ip_id)
            next_header = _IPV6_FRAGMENT
        plen = len(ext) + len(l4)
        if self.truncated and self.wire_len > plen + 40:
            plen = self.wire_len - 40
        header = _IP6.pack(first, plen, next_header, self.ttl,
                           self.src.to_bytes(16, "big"), self.dst.to_bytes(16, "big"))
        return header + ext + l4

    # ------------------------------------------------------------------ parsing
    @classmethod
    def parse(cls, data: bytes, lenient: bool = False) -> "Packet":
        """Parse one datagram starting at the IP header.

        ``lenient`` accepts a truncated packet (the quote inside an ICMP error): missing
        transport bytes read as zero and the packet is marked ``truncated``.
        """
        size = len(data)
        if size >= 40 and data[0] == 0x45 and (data[9] == IPPROTO_TCP or data[9] == IPPROTO_UDP) \
                and not data[6] & 0x3F and not data[7]:
            packet = _parse_v4_plain(data, size)  # IPv4 without options, unfragmented TCP/UDP
            if packet is not None:
                return packet
        if not data:
            raise PacketError("empty packet")
        version = data[0] >> 4
        if version == 4:
            return _parse_v4(data, lenient)
        if version == 6:
            return _parse_v6(data, lenient)
        raise PacketError(f"not an IP packet (version {version})")


def _blank(af: int, src: int, dst: int, proto: int) -> Packet:
    """A packet with default fields, without keyword binding: the parser's fast constructor."""
    p = _new(Packet)
    p.af = af
    p.src = src
    p.dst = dst
    p.proto = proto
    p.sport = p.dport = p.flags = p.seq = p.ack = p.icmp_type = p.icmp_code = p.icmp_id = 0
    p.icmp_rest = p.ip_id = p.frag_offset = p.flow = p.tos = p.wire_len = 0
    p.win = 65535
    p.ttl = 64
    p.tcp_options = p.payload = p.ip_options = b""
    p.df = p.more_frags = p.v6_routing = p.truncated = False
    p.inner = p.tag = None
    return p


_new = object.__new__


def _parse_v4(data: bytes, lenient: bool) -> Packet:
    size = len(data)
    if size < 20:
        raise PacketError("short IPv4 header")
    vihl, tos, total, ip_id, frag, ttl, proto, _csum, src, dst = _IP4.unpack_from(data)
    ihl = (vihl & 0x0F) * 4
    if ihl < 20 or size < ihl:
        raise PacketError("bad IPv4 header length")
    end = total if (total and total <= size) else size
    if not lenient and total > size:
        raise PacketError("IPv4 packet shorter than its total length")
    packet = _blank(4, src, dst, proto)
    packet.ttl = ttl
    packet.tos = tos
    packet.ip_id = ip_id
    if frag & 0x7FFF:
        packet.df = bool(frag & 0x4000)
        packet.frag_offset = (frag & 0x1FFF) * 8
        packet.more_frags = bool(frag & 0x2000)
    if ihl > 20:
        packet.ip_options = bytes(data[20:ihl])
    packet.wire_len = total or size
    packet.truncated = total > size
    _parse_transport(packet, data, ihl, end, lenient)
    return packet


def _parse_v4_plain(data: bytes, size: int) -> Optional[Packet]:
    """The common case in one function: IPv4 without options, not a fragment, a whole TCP or
    UDP header. Every field is set here (no :func:`_blank`, no second header pass): this is
    most of the parsing cost of a replay. None sends anything unusual to the general parser."""
    if data[9] == IPPROTO_TCP:
        tos, total, ip_id, frag, ttl, proto, src, dst, sport, dport, seq, ack, off, flags, win = \
            _IP4_TCP.unpack_from(data)
        hlen = (off >> 4) * 4
        if hlen < 20:
            return None
    else:
        tos, total, ip_id, frag, ttl, proto, src, dst, sport, dport = _IP4_UDP.unpack_from(data)
        seq = ack = flags = 0
        win = 65535
        hlen = 8
    if total > size or total < 20 + hlen:
        return None  # short or truncated: the general parser decides (lenient or an error)
    end = total or size
    p = _new(Packet)
    p.af = 4
    p.src = src
    p.dst = dst
    p.proto = proto
    p.sport = sport
    p.dport = dport
    p.flags = flags
    p.seq = seq
    p.ack = ack
    p.win = win
    p.tcp_options = bytes(data[40:20 + hlen]) if hlen > 20 else b""
    p.icmp_type = p.icmp_code = p.icmp_id = p.icmp_rest = p.frag_offset = p.flow = 0
    p.payload = bytes(data[20 + hlen:end])
    p.ttl = ttl
    p.tos = tos
    p.ip_id = ip_id
    p.df = frag & 0x4000 != 0
    p.more_frags = p.v6_routing = p.truncated = False
    p.ip_options = b""
    p.inner = p.tag = None
    p.wire_len = total
    return p


def _parse_v6(data: bytes, lenient: bool) -> Packet:
    if len(data) < 40:
        raise PacketError("short IPv6 header")
    first, plen, next_header, hlim, src, dst = _IP6.unpack_from(data)
    packet = _blank(6, int.from_bytes(src, "big"), int.from_bytes(dst, "big"), next_header)
    packet.ttl = hlim
    packet.tos = (first >> 20) & 0xFF
    packet.flow = first & 0xFFFFF
    end = 40 + plen if 40 + plen <= len(data) else len(data)
    if not lenient and 40 + plen > len(data):
        raise PacketError("IPv6 packet shorter than its payload length")
    packet.wire_len = 40 + plen
    packet.truncated = 40 + plen > len(data)
    offset = 40
    while next_header in _V6_EXT and offset + 8 <= end:
        if next_header == _IPV6_ROUTING:
            packet.v6_routing = True
        if next_header == _IPV6_FRAGMENT:
            nh, _res, fo, ident = struct.unpack_from("!BBHI", data, offset)
            packet.frag_offset = fo & 0xFFF8
            packet.more_frags = bool(fo & 1)
            packet.ip_id = ident
            next_header, offset = nh, offset + 8
            continue
        nh, hlen = data[offset], (data[offset + 1] + 1) * 8
        next_header, offset = nh, offset + hlen
    packet.proto = next_header
    _parse_transport(packet, data, offset, end, lenient)
    return packet


def _parse_transport(packet: Packet, data: bytes, offset: int, end: int, lenient: bool) -> None:
    proto = packet.proto
    if packet.frag_offset:
        packet.payload = bytes(data[offset:end])
        return
    avail = end - offset
    if proto == IPPROTO_TCP:
        if avail < 20:
            if not lenient or avail < 8:
                raise PacketError("short TCP header")
            packet.sport, packet.dport, packet.seq = struct.unpack_from("!HHI", data, offset)
            packet.truncated = True
            return
        sport, dport, seq, ack, off, flags, win, _c, _u = _TCP.unpack_from(data, offset)
        hlen = (off >> 4) * 4
        packet.sport, packet.dport, packet.seq, packet.ack = sport, dport, seq, ack
        packet.flags, packet.win = flags, win
        if hlen > 20:
            packet.tcp_options = bytes(data[offset + 20: min(offset + hlen, end)])
        packet.payload = bytes(data[offset + hlen:end])
    elif proto == IPPROTO_UDP:
        if avail < 8:
            if not lenient or avail < 4:
                raise PacketError("short UDP header")
            packet.sport, packet.dport = struct.unpack_from("!HH", data, offset)
            packet.truncated = True
            return
        packet.sport, packet.dport = struct.unpack_from("!HH", data, offset)
        packet.payload = bytes(data[offset + 8:end])
    elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
        if avail < 8:
            if not lenient or avail < 4:
                raise PacketError("short ICMP header")
            packet.icmp_type, packet.icmp_code = data[offset], data[offset + 1]
            packet.truncated = True
            return
        itype, code, _c, ident, rest = _ICMP.unpack_from(data, offset)
        packet.icmp_type, packet.icmp_code = itype, code
        body = bytes(data[offset + 8:end])
        packet.payload = body
        table = ICMP4_QUERY_REPLY if proto == IPPROTO_ICMP else ICMP6_QUERY_REPLY
        if itype in table:
            packet.icmp_id = ident
            packet.icmp_rest = rest
            packet.sport = packet.dport = ident
        else:
            packet.icmp_rest = (ident << 16) | rest
            if packet.is_icmp_error and body:
                try:
                    packet.inner = Packet.parse(body, lenient=True)
                except PacketError:
                    packet.inner = None
    else:
        packet.payload = bytes(data[offset:end])


# ---------------------------------------------------------------------- convenient builders
def _addr(text_or_int: "str | int", af: Optional[int] = None) -> tuple[int, int]:
    if isinstance(text_or_int, int):
        return af or 4, text_or_int
    return addr_to_int(text_or_int)


def tcp(src: str, sport: int, dst: str, dport: int, flags: "str | int" = "S", *, seq: int = 1000,
        ack: int = 0, win: int = 65535, payload: bytes = b"", mss: Optional[int] = None,
        wscale: Optional[int] = None, **kw) -> Packet:
    """A TCP segment; ``flags`` as pf.conf letters (``"SA"``)."""
    af, s = _addr(src)
    _, d = _addr(dst)
    options = b""
    if mss is not None:
        options += struct.pack("!BBH", 2, 4, mss)
    if wscale is not None:
        options += struct.pack("!BBBB", 1, 3, 3, wscale)
    value = flags_from_text(flags) if isinstance(flags, str) else flags
    return Packet(af, s, d, IPPROTO_TCP, sport, dport, flags=value, seq=seq, ack=ack, win=win,
                  tcp_options=options, payload=payload, **kw)


def udp(src: str, sport: int, dst: str, dport: int, payload: bytes = b"", **kw) -> Packet:
    af, s = _addr(src)
    _, d = _addr(dst)
    return Packet(af, s, d, IPPROTO_UDP, sport, dport, payload=payload, **kw)


def icmp(src: str, dst: str, icmp_type: int, code: int = 0, ident: int = 0, *,
         payload: bytes = b"", inner: Optional[Packet] = None, **kw) -> Packet:
    """An ICMP (or ICMPv6, by address family) message; errors quote ``inner``."""
    af, s = _addr(src)
    _, d = _addr(dst)
    proto = IPPROTO_ICMP if af == 4 else IPPROTO_ICMPV6
    packet = Packet(af, s, d, proto, icmp_type=icmp_type, icmp_code=code, icmp_id=ident,
                    payload=payload, inner=inner, **kw)
    table = ICMP4_QUERY_REPLY if af == 4 else ICMP6_QUERY_REPLY
    if icmp_type in table:
        packet.sport = packet.dport = ident
    if inner is not None and not payload:
        packet.payload = inner.to_bytes()[: (28 if af == 4 else 1232)]
    return packet


def other(src: str, dst: str, proto: int, payload: bytes = b"", **kw) -> Packet:
    af, s = _addr(src)
    _, d = _addr(dst)
    return Packet(af, s, d, proto, payload=payload, **kw)
