"""pfha.checksum: the one Internet checksum, checked against RFC 1071's word-by-word sum."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.checksum import internet_checksum


def rfc1071(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_same_as_the_word_loop(data):
    assert internet_checksum(data) == rfc1071(data)


def test_edges_and_self_check():
    assert internet_checksum(b"") == 0xFFFF and internet_checksum(b"\0\0\0") == 0xFFFF
    assert internet_checksum(b"\xff\xff") == rfc1071(b"\xff\xff") == 0
    header = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")  # RFC 1071-style IPv4 example
    filled = header[:10] + struct.pack("!H", internet_checksum(header)) + header[12:]
    assert internet_checksum(filled) == 0 and filled[10:12] == bytes.fromhex("b861")
