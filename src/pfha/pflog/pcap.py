"""pcap files (the classic libpcap format): a streaming writer and reader.

The one pcap implementation of pfha: pflog files (DLT_PFLOG), the captures tests and ``pfha
replay`` read (Ethernet, raw IP, Linux cooked), and CARP's golden captures and advert dumps. Records are written and flushed one at a time so a reader (tcpdump, a
rotating pflogd) never sees half a file; reading is lazy, one record at a time, so a large
capture is never held in memory.

Pure: works on any binary file object and never opens sockets or interfaces.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NamedTuple

from pfha.pflog.format import DLT_PFLOG

# Link-layer header types (the LINKTYPE_* numbers stored in files, tcpdump.org/linktypes.html).
LINKTYPE_ETHERNET = 1  # DLT_EN10MB
LINKTYPE_RAW = 101  # raw IPv4/IPv6, no link header
DLT_RAW_BSD = 12  # DLT_RAW as most BSDs number it; some files carry it instead of 101
DLT_RAW_OPENBSD = 14
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276  # what `tcpdump -i any` writes
LINKTYPE_PFLOG = DLT_PFLOG
RAW_LINKTYPES = frozenset({LINKTYPE_RAW, DLT_RAW_BSD, DLT_RAW_OPENBSD})

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
VERSION = (2, 4)
DEFAULT_SNAPLEN = 65535
READ_BLOCK = 1 << 16  # bytes read from the stream at a time (records are cut out of the block)


class PcapError(ValueError):
    """A file that is not a pcap file, or a truncated one."""


class Record(NamedTuple):
    """One captured frame: when, the bytes kept, and the original length on the wire.

    A named tuple: immutable, and several times cheaper to build than a frozen dataclass, which
    matters at hundreds of thousands of records a second (``pfha replay``).
    """

    timestamp: float
    data: bytes
    orig_len: int

    @property
    def truncated(self) -> bool:
        return self.orig_len > len(self.data)


class PcapWriter:
    """Writes a pcap header, then one record per :meth:`write`, flushed at once.

    ``write_header=False`` continues an existing capture (pflogd reopening a non-empty file
    after a restart); the caller checks the file's link type first.
    """

    def __init__(self, stream: BinaryIO, linktype: int, snaplen: int = DEFAULT_SNAPLEN, *, write_header: bool = True) -> None:
        self.stream = stream
        self.linktype = linktype
        self.snaplen = snaplen
        self.count = 0
        if write_header:
            stream.write(struct.pack("=IHHiIII", MAGIC_USEC, *VERSION, 0, 0, snaplen, linktype))
            stream.flush()

    def write(self, timestamp: float, data: bytes, orig_len: int | None = None) -> None:
        """Append one record; data beyond ``snaplen`` is cut off, as a capture would."""
        kept = data[: self.snaplen]
        seconds = int(timestamp)
        micros = int(round((timestamp - seconds) * 1e6))
        if micros >= 1_000_000:
            seconds, micros = seconds + 1, micros - 1_000_000
        length = len(data) if orig_len is None else orig_len
        self.stream.write(struct.pack("=IIII", seconds, micros, len(kept), length) + kept)
        self.stream.flush()
        self.count += 1

    def close(self) -> None:
        self.stream.close()


class PcapReader:
    """Iterates the records of a pcap stream, either byte order, micro- or nanosecond stamps."""

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        head = stream.read(24)
        if len(head) < 24:
            raise PcapError("not a pcap file: shorter than its 24-byte header")
        for order in ("<", ">"):
            magic = struct.unpack(order + "I", head[:4])[0]
            if magic in (MAGIC_USEC, MAGIC_NSEC):
                break
        else:
            raise PcapError(f"not a pcap file: magic {head[:4].hex()}")
        self._order = order
        self._divisor = 1e9 if magic == MAGIC_NSEC else 1e6
        major, minor, _zone, _sigfigs, self.snaplen, linktype = struct.unpack(order + "HHiIII", head[4:])
        self.version = (major, minor)
        self.linktype = linktype & 0x0FFFFFFF  # upper bits carry FCS information
        self._record = struct.Struct(order + "IIII")

    def __iter__(self) -> Iterator[Record]:
        make = Record._make
        for frame in self.frames():
            yield make(frame)

    def frames(self) -> Iterator[tuple[float, bytes, int]]:
        """(timestamp, data, orig_len) per record, as plain tuples: the replay loop's fast path.

        The stream is read in blocks of ``READ_BLOCK`` bytes and records are cut out of the
        block with ``unpack_from`` at an offset: one read call per block instead of two per
        record, and the frame bytes are copied once, out of the block.
        """
        unpack = self._record.unpack_from
        divisor = self._divisor
        read = self.stream.read
        block = b""
        pos = 0
        while True:
            more = read(READ_BLOCK)
            block = block[pos:] + more if pos < len(block) else more
            pos = 0
            size = len(block)
            while pos + 16 <= size:
                seconds, fraction, caplen, orig_len = unpack(block, pos)
                end = pos + 16 + caplen
                if end > size:
                    break
                yield seconds + fraction / divisor, block[pos + 16:end], orig_len
                pos = end
            if not more:
                left = size - pos
                if left == 0:
                    return
                if left < 16:
                    raise PcapError("truncated record header")
                caplen = unpack(block, pos)[2]
                raise PcapError(f"truncated record: {left - 16} of {caplen} bytes")


def read_file(path: str) -> tuple[int, list[Record]]:
    """(linktype, records) of a whole file: for tests and small captures."""
    with open(path, "rb") as stream:
        reader = PcapReader(stream)
        return reader.linktype, list(reader)


def write_file(path: str, linktype: int, frames: Iterable[tuple[float, bytes]]) -> int:
    """Write ``(timestamp, frame)`` pairs as a whole capture; the number written."""
    with open(path, "wb") as stream:
        writer = PcapWriter(stream, linktype)
        for timestamp, data in frames:
            writer.write(timestamp, data)
        return writer.count


# Where the IP packet starts in a frame of each link type, and how to tell its family.
_SLL_HEADER = 16
_SLL2_HEADER = 20
ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_IPV6 = 0x86DD
ETHERTYPE_VLAN = 0x8100
_ETHER_IP = (b"\x08\x00", b"\x86\xdd")


def ip_packet(linktype: int, frame: bytes) -> bytes | None:
    """The IP packet inside ``frame``, or None when the frame carries something else (ARP...)."""
    if linktype == LINKTYPE_ETHERNET and frame[12:14] in _ETHER_IP:
        return frame[14:]  # the common case first: untagged IPv4/IPv6 over Ethernet
    if linktype in RAW_LINKTYPES:
        return frame if frame and frame[0] >> 4 in (4, 6) else None
    if linktype == LINKTYPE_PFLOG:
        from pfha.pflog.format import split

        return split(frame)[1]
    if linktype == LINKTYPE_ETHERNET:
        offset, ethertype = 12, None
        while len(frame) >= offset + 2:
            ethertype = struct.unpack_from("!H", frame, offset)[0]
            if ethertype != ETHERTYPE_VLAN:
                break
            offset += 4
        return frame[offset + 2 :] if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else None
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < _SLL_HEADER:
            return None
        ethertype = struct.unpack_from("!H", frame, 14)[0]
        return frame[_SLL_HEADER:] if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else None
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < _SLL2_HEADER:
            return None
        ethertype = struct.unpack_from("!H", frame, 0)[0]
        return frame[_SLL2_HEADER:] if ethertype in (ETHERTYPE_IPV4, ETHERTYPE_IPV6) else None
    raise PcapError(f"unsupported link type {linktype}")


#: SLL packet types (linux/if_packet.h): PACKET_OUTGOING is a packet this host sent
_SLL_OUTGOING = 4


def frame_direction(linktype: int, frame: bytes, local_macs: frozenset[bytes] = frozenset()) -> str | None:
    """Which way a frame crossed the capture's interface: ``"out"`` when this host sent it,
    ``"in"`` when it arrived, None when the frame cannot say.

    A Linux cooked capture records it (the SLL packet type); an Ethernet frame says it only
    through its source address, so the caller names the capturing host's MACs."""
    if linktype == LINKTYPE_LINUX_SLL and len(frame) >= 2:
        return "out" if struct.unpack_from("!H", frame, 0)[0] == _SLL_OUTGOING else "in"
    if linktype == LINKTYPE_LINUX_SLL2 and len(frame) >= 11:
        return "out" if frame[10] == _SLL_OUTGOING else "in"
    if linktype == LINKTYPE_ETHERNET and local_macs and len(frame) >= 12:
        return "out" if frame[6:12] in local_macs else "in"
    return None


def ethernet_frame(packet: bytes, src: bytes = b"\x02\0\0\0\0\x01", dst: bytes = b"\x02\0\0\0\0\x02") -> bytes:
    """``packet`` wrapped in an Ethernet II header (for writing DLT_EN10MB captures)."""
    ethertype = ETHERTYPE_IPV6 if packet and packet[0] >> 4 == 6 else ETHERTYPE_IPV4
    return dst + src + struct.pack("!H", ethertype) + packet


def sll_frame(packet: bytes, packet_type: int = 0) -> bytes:
    """``packet`` wrapped in a Linux cooked (SLL) header."""
    ethertype = ETHERTYPE_IPV6 if packet and packet[0] >> 4 == 6 else ETHERTYPE_IPV4
    return struct.pack("!HHH8sH", packet_type, 1, 6, b"\x02\0\0\0\0\x01\0\0", ethertype) + packet


def sll2_frame(packet: bytes, packet_type: int = 0, ifindex: int = 2) -> bytes:
    """``packet`` wrapped in a Linux cooked v2 (SLL2) header, as ``tcpdump -i any`` writes."""
    ethertype = ETHERTYPE_IPV6 if packet and packet[0] >> 4 == 6 else ETHERTYPE_IPV4
    return struct.pack("!HHIHBB8s", ethertype, 0, ifindex, 1, packet_type, 6, b"\x02\0\0\0\0\x01\0\0") + packet
