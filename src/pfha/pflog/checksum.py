"""Repairing the TCP/UDP checksums of packets captured before offload.

Packets logged inside the kernel (NFLOG) on veth or offloading NICs carry only the pseudo-header
part of their L4 checksum (CHECKSUM_PARTIAL); the NIC would finish it. A pflog file should read
as the wire would (tcpdump -v: "cksum ... (correct)"), so pflogd recomputes them.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import struct

from pfha.checksum import internet_checksum

__all__ = ["fix_l4_checksum", "internet_checksum"]

IPPROTO_TCP = 6
IPPROTO_UDP = 17


def _l4_offsets(packet: bytes) -> tuple[int, int, int, bytes] | None:
    """(l4 start, l4 end, proto, pseudo-header address part) for an unfragmented TCP/UDP packet."""
    if len(packet) < 20:
        return None
    version = packet[0] >> 4
    if version == 4:
        ihl = (packet[0] & 0x0F) * 4
        total = struct.unpack_from("!H", packet, 2)[0]
        fragment = struct.unpack_from("!H", packet, 6)[0] & 0x3FFF
        if fragment or total > len(packet) or total < ihl:
            return None
        return ihl, total, packet[9], packet[12:20]
    if version == 6 and len(packet) >= 40:
        payload_len = struct.unpack_from("!H", packet, 4)[0]
        end = 40 + payload_len
        if end > len(packet):
            return None
        # Extension headers are left alone: the checksum is only repaired for plain TCP/UDP.
        return 40, end, packet[6], packet[8:40]
    return None


def fix_l4_checksum(packet: bytes) -> bytes:
    """``packet`` with its TCP or UDP checksum recomputed; anything else is returned unchanged."""
    where = _l4_offsets(packet)
    if where is None:
        return packet
    start, end, proto, addresses = where
    if proto not in (IPPROTO_TCP, IPPROTO_UDP):
        return packet
    segment = bytearray(packet[start:end])
    field = 16 if proto == IPPROTO_TCP else 6
    if len(segment) < field + 2:
        return packet
    if proto == IPPROTO_UDP and packet[0] >> 4 == 4 and segment[6:8] == b"\0\0":
        return packet  # IPv4 UDP without checksum: keep it that way
    segment[field : field + 2] = b"\0\0"
    if packet[0] >> 4 == 4:
        pseudo = addresses + struct.pack("!BBH", 0, proto, len(segment))
    else:
        pseudo = addresses + struct.pack("!I3xB", len(segment), proto)
    value = internet_checksum(pseudo + bytes(segment))
    if proto == IPPROTO_UDP and value == 0:
        value = 0xFFFF
    segment[field : field + 2] = struct.pack("!H", value)
    return packet[:start] + bytes(segment) + packet[end:]
