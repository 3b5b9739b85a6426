"""CARP on the wire: the 36-byte advertisement, its checksum, and the HMAC-SHA1 BSD computes.

Byte-compatible with OpenBSD, FreeBSD and ucarp (design: ``carp.md`` §1-2). This module is pure:
bytes in, values out. It never opens a socket, reads a clock or draws a random number (the
counter is chosen by the state machine).

What is authenticated is fixed by the peers we interoperate with and must not be "improved":
version, type, vhid, the sorted IPv4 then IPv6 virtual addresses, and the 8 counter bytes.
advbase, advskew, the demote byte and the checksum are *not* covered (carp.md §2.2).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from pfha.checksum import internet_checksum

# ip_carp.h
CARP_VERSION = 2
CARP_ADVERTISEMENT = 1
IPPROTO_CARP = 112
CARP_GROUP_V4 = "224.0.0.18"
CARP_GROUP_V6 = "ff02::12"
CARP_TTL = 255
CARP_AUTHLEN = 7  # 32-bit words: 2 of counter + 5 of SHA-1 digest
CARP_KEY_LEN = 20  # the kernel buffer; strlcpy leaves room for 19 bytes of passphrase
CARP_TOS = 0x10  # IPTOS_LOWDELAY, as OpenBSD and ucarp send
ADVERT_LEN = 36
BOW_OUT = 255  # advbase = advskew = 255: "this master is leaving" (carp.md §3.7)
MAX_ADVSKEW = 254  # ifconfig rejects 255

_HEADER = struct.Struct("!BBBBBBH8s20s")
_IPV4 = struct.Struct("!BBHHHBBH4s4s")

IPv4 = ipaddress.IPv4Address
IPv6 = ipaddress.IPv6Address


class DropReason(str, Enum):
    """Why an advert was discarded; names follow BSD's carpstats counters."""

    SHORT = "short"
    TTL = "ttl"
    CHECKSUM = "checksum"
    VERSION = "version"
    TYPE = "type"
    VHID = "vhid"
    HMAC = "hmac"
    LOOP = "loop"


class BadAdvert(ValueError):
    """An advertisement BSD would drop; ``reason`` says which check failed."""

    def __init__(self, reason: DropReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Advertisement:
    """One decoded CARP header (ip_carp.h ``struct carp_header``).

    ``demote`` is OpenBSD's demotion byte (reserved and ignored by FreeBSD and ucarp).
    ``checksum`` is as read from the wire (0 means "compute it" when encoding).
    """

    vhid: int
    advbase: int
    advskew: int
    counter: int
    digest: bytes
    demote: int = 0
    version: int = CARP_VERSION
    type: int = CARP_ADVERTISEMENT
    authlen: int = CARP_AUTHLEN
    checksum: int = 0

    @property
    def ticks(self) -> int:
        """The advertised interval in 1/256 s: what masters are compared by (carp.md §3.1)."""
        return self.advbase * 256 + self.advskew

    @property
    def interval(self) -> float:
        return self.ticks / 256

    @property
    def is_bow_out(self) -> bool:
        return self.advbase == BOW_OUT and self.advskew == BOW_OUT

    def counter_bytes(self) -> bytes:
        return self.counter.to_bytes(8, "big")


def encode(advert: Advertisement) -> bytes:
    """The 36 bytes of ``advert`` with a freshly computed checksum (no pseudo-header, even on IPv6)."""
    fields = (
        (advert.version << 4) | advert.type,
        advert.vhid,
        advert.advskew,
        advert.authlen,
        advert.demote,
        advert.advbase,
        0,
        advert.counter_bytes(),
        advert.digest,
    )
    raw = _HEADER.pack(*fields)
    checksum = internet_checksum(raw)
    return raw[:6] + checksum.to_bytes(2, "big") + raw[8:]


def decode(payload: bytes) -> Advertisement:
    """Parse and sanity-check 36 CARP bytes as BSD's ``carp_input`` does, before the HMAC.

    Raises :class:`BadAdvert` for a short packet, a bad checksum, a version other than 2 or a
    type other than advertisement. Extra trailing bytes are ignored, as BSD ignores them.
    """
    if len(payload) < ADVERT_LEN:
        raise BadAdvert(DropReason.SHORT, f"{len(payload)} bytes, need {ADVERT_LEN}")
    payload = payload[:ADVERT_LEN]
    if internet_checksum(payload) != 0:
        raise BadAdvert(DropReason.CHECKSUM, f"checksum 0x{payload[6]:02x}{payload[7]:02x} does not verify")
    vt, vhid, advskew, authlen, demote, advbase, checksum, counter, digest = _HEADER.unpack(payload)
    version, kind = vt >> 4, vt & 0x0F
    if version != CARP_VERSION:
        raise BadAdvert(DropReason.VERSION, f"version {version}")
    if kind != CARP_ADVERTISEMENT:
        raise BadAdvert(DropReason.TYPE, f"type {kind}")
    return Advertisement(
        vhid=vhid, advbase=advbase, advskew=advskew, counter=int.from_bytes(counter, "big"),
        digest=digest, demote=demote, version=version, type=kind, authlen=authlen, checksum=checksum,
    )


# --- authentication (carp.md §2) ------------------------------------------------------------


def carp_key(passphrase: str | bytes) -> bytes:
    """The key BSD uses: ``strlcpy`` into 20 bytes keeps at most the first 19 (no warning)."""
    raw = passphrase.encode() if isinstance(passphrase, str) else bytes(passphrase)
    return raw[: CARP_KEY_LEN - 1]


def _is_link_local6(address: IPv6) -> bool:
    return address.is_link_local


def hmac_message(vhid: int, ipv4: Iterable[IPv4], ipv6: Iterable[IPv6], counter: int) -> bytes:
    """The bytes hashed after ipad: version, type, vhid, sorted IPv4s, sorted IPv6s, counter.

    Sorting is numeric (10.0.0.9 < 10.0.0.10), as OpenBSD and FreeBSD >= 10 do; for one IPv4
    address and no IPv6 this is exactly ucarp's input.
    """
    v4 = b"".join(a.packed for a in sorted(ipv4))
    v6 = b"".join(a.packed for a in sorted(ipv6))
    return bytes((CARP_VERSION, CARP_ADVERTISEMENT, vhid)) + v4 + v6 + counter.to_bytes(8, "big")


def compute_digest(key: bytes, vhid: int, ipv4: Iterable[IPv4], ipv6: Iterable[IPv6], counter: int) -> bytes:
    """HMAC-SHA1 as sent: IPv6 link-local addresses are left out (OpenBSD's sending digest)."""
    global_v6 = [a for a in ipv6 if not _is_link_local6(a)]
    return hmac.new(key, hmac_message(vhid, ipv4, global_v6, counter), hashlib.sha1).digest()


def digest_matches(key: bytes, vhid: int, ipv4: Iterable[IPv4], ipv6: Iterable[IPv6], counter: int, digest: bytes) -> bool:
    """Accept the digest computed with or without link-local IPv6 addresses, as OpenBSD does."""
    ipv4, ipv6 = list(ipv4), list(ipv6)
    candidates = [compute_digest(key, vhid, ipv4, ipv6, counter)]
    if any(_is_link_local6(a) for a in ipv6):
        candidates.append(hmac.new(key, hmac_message(vhid, ipv4, ipv6, counter), hashlib.sha1).digest())
    return any(hmac.compare_digest(c, digest) for c in candidates)


# --- IPv4 and Ethernet framing (raw sockets deliver the IP header; pcaps need the frame) -----


@dataclass(frozen=True)
class Ipv4Header:
    """The fields of an IPv4 header the receive checks need (TTL above all)."""

    source: IPv4
    destination: IPv4
    ttl: int
    protocol: int
    tos: int
    header_len: int
    total_len: int


def parse_ipv4(datagram: bytes) -> tuple[Ipv4Header, bytes]:
    """Split a raw-socket datagram into its IPv4 header and payload."""
    if len(datagram) < 20 or datagram[0] >> 4 != 4:
        raise BadAdvert(DropReason.SHORT, "not an IPv4 datagram")
    ihl = (datagram[0] & 0x0F) * 4
    vihl, tos, total, _ident, _frag, ttl, proto, _csum, src, dst = _IPV4.unpack(datagram[:20])
    header = Ipv4Header(IPv4(src), IPv4(dst), ttl, proto, tos, ihl, total)
    return header, datagram[ihl:]


def build_ipv4(source: IPv4, payload: bytes, *, destination: IPv4 = IPv4(CARP_GROUP_V4), ttl: int = CARP_TTL,
               ident: int = 0, tos: int = CARP_TOS) -> bytes:
    """An IPv4 header as BSD writes it for an advert: no options, DF, protocol 112."""
    header = _IPV4.pack(0x45, tos, 20 + len(payload), ident, 0x4000, ttl, IPPROTO_CARP, 0, source.packed, destination.packed)
    header = header[:10] + internet_checksum(header).to_bytes(2, "big") + header[12:]
    return header + payload


def virtual_mac(vhid: int) -> bytes:
    """BSD's CARP MAC 00:00:5e:00:01:<vhid> (the IPv4 VRRP range)."""
    return bytes((0, 0, 0x5E, 0, 1, vhid))


def multicast_mac_v4(group: IPv4) -> bytes:
    return bytes((0x01, 0x00, 0x5E)) + bytes((group.packed[1] & 0x7F,)) + group.packed[2:]


def ethernet_frame(source_mac: bytes, destination_mac: bytes, ethertype: int, payload: bytes) -> bytes:
    return destination_mac + source_mac + ethertype.to_bytes(2, "big") + payload


def gratuitous_arp(mac: bytes, address: IPv4) -> bytes:
    """An ARP request announcing ``address`` at ``mac`` (sender = target = the VIP; carp.md §3.4).

    The target hardware field carries ``mac`` as ucarp does; the frame goes to broadcast.
    """
    arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, mac, address.packed, mac, address.packed)
    return ethernet_frame(mac, b"\xff" * 6, 0x0806, arp)


def unsolicited_na(mac: bytes, address: IPv6) -> bytes:
    """ICMPv6 Neighbor Advertisement for ``address`` with the Override flag (RFC 4861 §7.2.6).

    The body only: sent from a raw ICMPv6 socket to ff02::1 with hop limit 255, the kernel
    fills in the checksum. The target link-layer address option carries ``mac``.
    """
    flags = 0x20000000  # Override; not Router, not Solicited
    return struct.pack("!BBHI16sBB6s", 136, 0, 0, flags, address.packed, 2, 1, mac)


def advert_frame(source: IPv4, payload: bytes, *, source_mac: bytes, ttl: int = CARP_TTL, ident: int = 0) -> bytes:
    """A whole Ethernet frame carrying an advert (for pcaps and AF_PACKET senders)."""
    group = IPv4(CARP_GROUP_V4)
    return ethernet_frame(source_mac, multicast_mac_v4(group), 0x0800, build_ipv4(source, payload, ttl=ttl, ident=ident))
