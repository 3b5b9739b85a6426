"""Packets written like pf rules, for ``pfha test`` and scenario files.

One packet per line::

    in on xl0 proto tcp from 198.51.100.9 port 40000 to 203.0.113.11 port 80 flags S
    out on xl1 proto udp from 192.168.1.5 port 5353 to 198.51.100.53 port 53 len 40 at 2.5
    in on xl0 proto icmp from 198.51.100.1 to 203.0.113.2 icmp-type unreach code port-unr \
        quote proto udp from 203.0.113.2 port 50001 to 198.51.100.1 port 53

Words: ``in|out``, ``on IF``, ``inet|inet6``, ``proto NAME|NUM``, ``from ADDR [port P]``,
``to ADDR [port P]``, ``flags LETTERS``, ``seq N``, ``ack N``, ``win N``, ``len N`` (payload
bytes), ``mss N``, ``wscale N``, ``ttl N``, ``icmp-type T [code C]``, ``id N`` (ICMP id),
``ip-options`` (an IPv4 NOP option), ``fragment`` (a later fragment), ``tagged NAME`` (an mbuf
tag from an earlier pass), ``at SECONDS`` (the time; otherwise 10 ms after the previous packet),
and ``quote ...`` (an ICMP error's embedded packet, written with the same words).

:class:`Conversation` fills unspecified TCP sequence and acknowledgement numbers from the
packets it has seen (including those pf itself sent), so a handshake can be written without
numbers. This module is pure: it parses text and builds :class:`~pfha.engine.packet.Packet`.
"""

from __future__ import annotations

import shlex
import struct
from dataclasses import dataclass
from typing import Optional

from pfha.engine.packet import (ICMP4_QUERY_REPLY, ICMP6_QUERY_REPLY, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
                                TH_ACK, TH_FIN, TH_SYN, Packet, PacketError, addr_to_int,
                                flags_from_text)

PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51, "icmp6": 58,
             "ipv6-icmp": 58, "ospf": 89, "pim": 103, "carp": 112, "vrrp": 112, "sctp": 132, "pfsync": 240}
SERVICES = {"ftp": 21, "ssh": 22, "telnet": 23, "smtp": 25, "domain": 53, "www": 80, "http": 80, "pop3": 110,
            "ntp": 123, "imap": 143, "https": 443, "submission": 587, "imaps": 993, "http-alt": 8080}
ICMP_TYPES = {"echorep": 0, "unreach": 3, "squench": 4, "redir": 5, "althost": 6, "echoreq": 8, "routeradv": 9,
              "routersol": 10, "timex": 11, "paramprob": 12, "timereq": 13, "timerep": 14, "inforeq": 15,
              "inforep": 16, "maskreq": 17, "maskrep": 18, "trace": 30, "dataconv": 31}
ICMP_CODES = {"net-unr": 0, "host-unr": 1, "proto-unr": 2, "port-unr": 3, "needfrag": 4, "srcfail": 5,
              "net-unk": 6, "host-unk": 7, "isolate": 8, "net-prohib": 9, "host-prohib": 10, "net-tos": 11,
              "host-tos": 12, "filter-prohib": 13, "host-preced": 14, "cutoff-preced": 15,
              "transit": 0, "reassemb": 1}
ICMP6_TYPES = {"unreach": 1, "toobig": 2, "timex": 3, "paramprob": 4, "echoreq": 128, "echorep": 129,
               "routersol": 133, "routeradv": 134, "neighbrsol": 135, "neighbradv": 136, "redir": 137}
ICMP6_CODES = {"noroute-unr": 0, "admin-unr": 1, "beyond-unr": 2, "addr-unr": 3, "port-unr": 4}


class SpecError(PacketError):
    """A packet line that does not parse; the message names the word."""


@dataclass
class PacketSpec:
    """One parsed line: the packet, where it is seen, and which numbers were left to fill."""

    packet: Packet
    ifname: str
    direction: str
    at: Optional[float]
    seq_given: bool
    ack_given: bool
    text: str


#: what each numeric word's header field can hold (a value outside it cannot be put on a wire)
LIMITS = {"seq": 0xFFFFFFFF, "ack": 0xFFFFFFFF, "win": 0xFFFF, "len": 0xFFFF, "mss": 0xFFFF,
          "wscale": 14, "ttl": 255, "id": 0xFFFF, "port": 0xFFFF, "proto": 255, "icmp type": 255,
          "icmp code": 255}


def _in_range(value: int, what: str) -> int:
    if not 0 <= value <= LIMITS[what]:
        raise SpecError(f"{what} {value} is out of range (0-{LIMITS[what]})")
    return value


def _number(words: list[str], i: int, what: str) -> int:
    if i >= len(words):
        raise SpecError(f"{what} needs a value")
    try:
        value = int(words[i], 0)
    except ValueError:
        raise SpecError(f"{what}: {words[i]!r} is not a number") from None
    return _in_range(value, what)


def _port(word: str) -> int:
    if word.isdigit():
        return _in_range(int(word), "port")
    from pfha.conf import names  # FreeBSD's services table, as pf.conf reads port names

    found = names.port_number(word)
    if found is not None:
        return found
    if word in SERVICES:
        return SERVICES[word]
    raise SpecError(f"unknown port {word!r}")


def _proto(word: str) -> int:
    if word.isdigit():
        return _in_range(int(word), "proto")
    if word in PROTOCOLS:
        return PROTOCOLS[word]
    raise SpecError(f"unknown protocol {word!r}")


def parse_packet(text: str, *, need_place: bool = True) -> PacketSpec:
    """Parse one packet line (see the module docstring for the words)."""
    words = shlex.split(text.replace("\\\n", " "), comments=True)
    if not words:
        raise SpecError("empty packet")
    quote_at = words.index("quote") if "quote" in words else len(words)
    inner_words = words[quote_at + 1:]
    words = words[:quote_at]
    direction = ifname = None
    family = None
    proto = None
    src = dst = None
    sport = dport = 0
    flags = None
    # numeric words (seq, ack, win, len, mss, wscale, ttl, id); seq/ack/mss/wscale absent = unset
    num: dict[str, int] = {"win": 65535, "len": 0, "ttl": 64, "id": 0}
    icmp_type = icmp_code = None
    ip_options = b""
    fragment = False
    tag = None
    at = None
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("in", "out"):
            direction = word
        elif word == "on":
            i += 1
            if i >= len(words):
                raise SpecError("'on' needs an interface")
            ifname = words[i]
        elif word in ("inet", "inet6"):
            family = 4 if word == "inet" else 6
        elif word == "proto":
            i += 1
            if i >= len(words):
                raise SpecError("'proto' needs a protocol")
            proto = _proto(words[i])
        elif word in ("from", "to"):
            i += 1
            if i >= len(words):
                raise SpecError(f"'{word}' needs an address")
            try:
                af, addr = addr_to_int(words[i])
            except PacketError:
                raise SpecError(f"'{word}': bad address {words[i]!r}") from None
            port = 0
            if i + 2 < len(words) + 1 and i + 1 < len(words) and words[i + 1] == "port":
                if i + 2 >= len(words):
                    raise SpecError("'port' needs a value")
                port = _port(words[i + 2])
                i += 2
            if word == "from":
                src, sport = (af, addr), port
            else:
                dst, dport = (af, addr), port
        elif word == "flags":
            i += 1
            if i >= len(words):
                raise SpecError("'flags' needs letters")
            flags = flags_from_text(words[i])
        elif word in ("seq", "ack", "win", "len", "mss", "wscale", "ttl", "id", "at"):
            i += 1
            if word == "at":
                try:
                    at = float(words[i])
                except (IndexError, ValueError):
                    raise SpecError("'at' needs a time in seconds") from None
            else:
                num[word] = _number(words, i, word)
        elif word in ("icmp-type", "icmp6-type"):
            i += 1
            if i >= len(words):
                raise SpecError(f"'{word}' needs a type")
            icmp_type = words[i]
            if i + 2 < len(words) + 1 and i + 1 < len(words) and words[i + 1] == "code":
                if i + 2 >= len(words):
                    raise SpecError("'code' needs a value")
                icmp_code = words[i + 2]
                i += 2
            if word == "icmp6-type":
                family = 6
        elif word == "ip-options":
            ip_options = b"\x01\x01\x01\x00"
        elif word == "fragment":
            fragment = True
        elif word == "tagged":
            i += 1
            if i >= len(words):
                raise SpecError("'tagged' needs a name")
            tag = words[i]
        else:
            raise SpecError(f"unexpected word {word!r}")
        i += 1
    if need_place and (direction is None or ifname is None):
        raise SpecError("a packet needs 'in' or 'out' and 'on IF'")
    if src is None or dst is None:
        raise SpecError("a packet needs 'from ADDR' and 'to ADDR'")
    af = src[0]
    if dst[0] != af or (family is not None and family != af):
        raise SpecError("source, destination and family disagree")
    if proto is None:
        if icmp_type is not None:
            proto = IPPROTO_ICMP if af == 4 else IPPROTO_ICMPV6
        elif flags is not None or sport or dport:
            proto = IPPROTO_TCP
        else:
            raise SpecError("say which protocol: 'proto tcp|udp|icmp|...'")
    packet = Packet(af, src[1], dst[1], proto, sport, dport, ttl=num["ttl"], ip_options=ip_options if af == 4 else b"",
                    payload=bytes(num["len"]))
    packet.tag = tag
    if fragment:
        packet.frag_offset = 1480
    if proto == IPPROTO_TCP:
        packet.flags = flags if flags is not None else TH_SYN
        packet.seq = num.get("seq", 0)
        packet.ack = num.get("ack", 0)
        packet.win = num["win"]
        options = b""
        if "mss" in num:
            options += bytes((2, 4, num["mss"] >> 8, num["mss"] & 0xFF))
        if "wscale" in num:
            options += bytes((1, 3, 3, num["wscale"]))
        packet.tcp_options = options
    elif proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        _icmp_fields(packet, icmp_type, icmp_code, num["id"], inner_words)
    elif inner_words:
        raise SpecError("'quote' is only for ICMP errors")
    _check_length(packet)
    return PacketSpec(packet, ifname or "", direction or "in", at, "seq" in num, "ack" in num, text.strip())


def _icmp_fields(packet: Packet, icmp_type: Optional[str], icmp_code: Optional[str], icmp_id: int,
                 inner_words: list[str]) -> None:
    v6 = packet.proto == IPPROTO_ICMPV6
    types, codes = (ICMP6_TYPES, ICMP6_CODES) if v6 else (ICMP_TYPES, ICMP_CODES)
    if icmp_type is None:
        icmp_type = "echoreq"
    itype = _in_range(int(icmp_type), "icmp type") if icmp_type.isdigit() else types.get(icmp_type)
    if itype is None:
        raise SpecError(f"unknown icmp type {icmp_type!r}")
    code = 0
    if icmp_code is not None:
        code = _in_range(int(icmp_code), "icmp code") if icmp_code.isdigit() else codes.get(icmp_code, -1)
        if code < 0:
            raise SpecError(f"unknown icmp code {icmp_code!r}")
    packet.icmp_type, packet.icmp_code = itype, code
    if itype in (ICMP6_QUERY_REPLY if v6 else ICMP4_QUERY_REPLY):
        packet.icmp_id = packet.sport = packet.dport = icmp_id
    if inner_words:
        inner = parse_packet(" ".join(shlex.quote(w) for w in inner_words), need_place=False).packet
        packet.inner = inner
        packet.payload = inner.to_bytes()[: 28 if not v6 else 1232]


def _check_length(packet: Packet) -> None:
    """An IP length field holds 65535 at most: headers and payload together must fit in it."""
    try:
        packet.to_bytes()
    except struct.error:
        raise SpecError("packet too long: headers and 'len' must fit in 65535 bytes") from None


class Conversation:
    """Fills TCP sequence numbers the way the two ends of each connection would.

    Each (sender, receiver) endpoint pair remembers the next sequence number the sender will
    use and the ISN of its SYN; a SYN without ``seq`` reuses that ISN (the same SYN seen at
    another interface, or pf's synproxy SYN) or starts at 1000, an ACK without ``ack``
    acknowledges what the other end sent. Packets are recorded as written, as pf rewrote them, and as pf emitted them.
    """

    ISN = 1000

    def __init__(self) -> None:
        self.next_seq: dict[tuple, int] = {}
        self.syn_seq: dict[tuple, int] = {}  # the ISN each end used: a SYN seen again reuses it
        self.forwarded: Optional[tuple] = None  # (ends, seq, ack) of the last packet passed in
        self.now = 0.0

    @staticmethod
    def _ends(packet: Packet) -> tuple:
        return (packet.af, packet.src, packet.sport), (packet.af, packet.dst, packet.dport)

    def fill(self, spec: PacketSpec) -> None:
        if spec.at is not None:
            self.now = spec.at
        else:
            self.now = round(self.now + 0.01, 6)
        packet = spec.packet
        if packet.proto != IPPROTO_TCP:
            return
        me, peer = self._ends(packet)
        if self.forwarded is not None and spec.direction == "out" and self.forwarded[0] == (me, peer):
            # the packet that just came in, now written leaving: the same segment, same numbers
            if not spec.seq_given:
                packet.seq = self.forwarded[1]
            if not spec.ack_given and packet.flags & TH_ACK:
                packet.ack = self.forwarded[2]
            return
        if not spec.seq_given:
            if packet.flags & TH_SYN:
                packet.seq = self.syn_seq.get((me, peer), self.ISN)
            else:
                packet.seq = self.next_seq.get((me, peer), self.ISN)
        if not spec.ack_given and packet.flags & TH_ACK:
            packet.ack = self.next_seq.get((peer, me), 0)

    def passed(self, packet: Packet, direction: str, action: str) -> None:
        """Remember a packet pf let in, so the next line can be its forwarded copy."""
        self.forwarded = None
        if action == "pass" and direction == "in" and packet.proto == IPPROTO_TCP:
            self.forwarded = (self._ends(packet), packet.seq, packet.ack)

    def record(self, packet: Packet) -> None:
        if packet.proto != IPPROTO_TCP:
            return
        me, peer = self._ends(packet)
        if packet.flags & TH_SYN:
            self.syn_seq[(me, peer)] = packet.seq
        end = packet.seq + packet.l4_len + (1 if packet.flags & TH_SYN else 0) + (1 if packet.flags & TH_FIN else 0)
        self.next_seq[(me, peer)] = end & 0xFFFFFFFF


__all__ = ["Conversation", "PacketSpec", "SpecError", "parse_packet"]
