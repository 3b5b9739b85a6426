"""The Internet checksum (RFC 1071), the one definition every pfha package uses (CARP adverts,
pflog's TCP/UDP checksum repair, the lab's ICMP probes).

Pure: bytes in, an integer out.
"""

from __future__ import annotations


def internet_checksum(data: bytes) -> int:
    """One's-complement sum of 16-bit words, complemented; 0 over a buffer holding its own checksum.

    Summing 16-bit words in one's complement is the value modulo 0xffff (2**16 is 1 modulo
    0xffff), so one ``int.from_bytes`` and one ``%`` replace a Python loop over the words.
    """
    if len(data) & 1:
        data += b"\0"
    total = int.from_bytes(data, "big")
    folded = total % 0xFFFF
    if folded == 0 and total:
        folded = 0xFFFF  # a non-zero sum folds to one's-complement "negative zero"
    return ~folded & 0xFFFF
