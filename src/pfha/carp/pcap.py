"""Classic pcap files (Ethernet link type): read the golden captures, write our own adverts.

Only what CARP's tests and tools need: enough to feed frames to tcpdump/tshark and to read the
captures in ``shared/testdata/carp``. Pure: works on bytes and file paths, nothing else.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LINKTYPE_ETHERNET = 1
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_MAGIC = 0xA1B2C3D4


@dataclass(frozen=True)
class Frame:
    number: int  # 1-based, as tcpdump and tshark count
    time: float
    data: bytes


def read(path: str | Path) -> Iterator[Frame]:
    raw = Path(path).read_bytes()
    magic = struct.unpack("<I", raw[:4])[0]
    endian = "<" if magic == _MAGIC else ">"
    if struct.unpack(endian + "I", raw[:4])[0] != _MAGIC:
        raise ValueError(f"{path}: not a microsecond pcap file")
    record = struct.Struct(endian + "IIII")
    offset, number = _GLOBAL.size, 0
    while offset + record.size <= len(raw):
        sec, usec, caplen, _origlen = record.unpack_from(raw, offset)
        offset += record.size
        number += 1
        yield Frame(number, sec + usec / 1e6, raw[offset:offset + caplen])
        offset += caplen


def write(path: str | Path, frames: Iterable[tuple[float, bytes]]) -> None:
    with open(path, "wb") as out:
        out.write(_GLOBAL.pack(_MAGIC, 2, 4, 0, 0, 262144, LINKTYPE_ETHERNET))
        for when, data in frames:
            sec = int(when)
            out.write(_RECORD.pack(sec, int(round((when - sec) * 1e6)), len(data), len(data)))
            out.write(data)


def ipv4_payload(frame: bytes) -> bytes | None:
    """The IPv4 datagram inside an Ethernet frame (one 802.1Q tag allowed), else None."""
    ethertype, offset = struct.unpack("!H", frame[12:14])[0], 14
    if ethertype == 0x8100:
        ethertype, offset = struct.unpack("!H", frame[16:18])[0], 18
    return frame[offset:] if ethertype == 0x0800 else None
