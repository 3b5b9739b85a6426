"""pfloghdr layout (pf-semantics.md §5.1), pcap files and checksum repair, without a socket."""

from __future__ import annotations

import io
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.pflog import pcap
from pfha.pflog.checksum import fix_l4_checksum, internet_checksum
from pfha.pflog.format import (
    DLT_PFLOG,
    NO_SUBRULE,
    PFLOG_HDRLEN,
    Action,
    Direction,
    PflogError,
    PflogHeader,
    Reason,
    frame,
    split,
)


def test_header_layout_matches_freebsd_offsets():
    header = PflogHeader(
        action=Action.DROP, reason=Reason.BADSTATE, ifname="xl0", direction=Direction.OUT,
        rulenr=0x01020304, subrulenr=7, ruleset="anc", uid=1001, pid=4242, rule_uid=0, rule_pid=99,
        ridentifier=0xAABBCCDD,
    )
    raw = header.encode()
    assert len(raw) == PFLOG_HDRLEN == 72
    assert raw[0] == 69 and raw[1] == 2 and raw[2] == 1 and raw[3] == 10
    assert raw[4:20] == b"xl0".ljust(16, b"\0")
    assert raw[20:36] == b"anc".ljust(16, b"\0")
    assert raw[36:40] == b"\x01\x02\x03\x04"  # rulenr: network order
    assert raw[40:44] == b"\0\0\0\x07"
    assert struct.unpack("<I", raw[44:48])[0] == 1001  # uid: host order
    assert struct.unpack("<I", raw[48:52])[0] == 4242
    assert struct.unpack("<I", raw[56:60])[0] == 99
    assert raw[60] == 2 and raw[61:64] == b"\0\0\0"
    assert raw[64:68] == b"\xaa\xbb\xcc\xdd"
    assert raw[68:72] == b"\0\0\0\0"


def test_defaults_are_pfs_no_anchor_no_user():
    raw = PflogHeader(action=Action.PASS, reason=Reason.MATCH, ifname="em0", direction=Direction.IN, rulenr=3).encode()
    assert raw[40:44] == b"\xff\xff\xff\xff"
    assert struct.unpack("<II", raw[44:52]) == (0xFFFFFFFF, 100000)


headers = st.builds(
    PflogHeader,
    action=st.integers(0, 255),
    reason=st.integers(0, 255),
    ifname=st.text(alphabet="abcdefxyz0123456789.", max_size=15),
    direction=st.integers(0, 2),
    rulenr=st.integers(0, 2**32 - 1),
    subrulenr=st.integers(0, 2**32 - 1),
    af=st.sampled_from([2, 24, 28, 30]),
    ruleset=st.text(alphabet="abc/_", max_size=15),
    uid=st.integers(0, 2**32 - 1),
    pid=st.integers(0, 2**32 - 1),
    ridentifier=st.integers(0, 2**32 - 1),
)


@settings(max_examples=200, deadline=None)
@given(headers, st.binary(max_size=64))
def test_encode_decode_round_trip(header, packet):
    got, rest = split(frame(header, packet))
    assert got == header and rest == packet


def test_describe_is_tcpdumps_wording():
    header = PflogHeader(action=Action.DROP, reason=Reason.MATCH, ifname="xl0", direction=Direction.IN, rulenr=4)
    assert header.describe() == "rule 4/0(match): block in on xl0"
    anchored = PflogHeader(action=Action.PASS, reason=10, ifname="rl0", direction=2, rulenr=5, subrulenr=2, ruleset="ftp")
    assert anchored.describe() == "rule 5.ftp.2/10(state-mismatch): pass out on rl0"
    assert PflogHeader(action=14, reason=99, ifname="a", direction=1, rulenr=0).describe() == "rule 0/unkn(99): unkn(14) in on a"
    assert NO_SUBRULE == 0xFFFFFFFF


def test_decode_rejects_short_and_bad_length():
    with pytest.raises(PflogError):
        PflogHeader.decode(b"\0" * 10)
    with pytest.raises(PflogError):
        PflogHeader.decode(b"\x10" + b"\0" * 71)
    with pytest.raises(PflogError):
        PflogHeader(action=0, reason=0, ifname="x" * 16, direction=1, rulenr=0).encode()


def _records(linktype, items, order="<", nsec=False):
    """A pcap written by hand in either byte order, to check the reader is not just our writer."""
    magic = pcap.MAGIC_NSEC if nsec else pcap.MAGIC_USEC
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for ts, data in items:
        frac = int(round((ts - int(ts)) * (1e9 if nsec else 1e6)))
        out += struct.pack(order + "IIII", int(ts), frac, len(data), len(data)) + data
    return out


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("nsec", [False, True])
def test_reader_reads_both_byte_orders_and_resolutions(order, nsec):
    raw = _records(pcap.LINKTYPE_RAW, [(1.5, b"\x45abc"), (2.25, b"\x60xyz")], order, nsec)
    reader = pcap.PcapReader(io.BytesIO(raw))
    assert reader.linktype == pcap.LINKTYPE_RAW
    got = list(reader)
    assert [r.data for r in got] == [b"\x45abc", b"\x60xyz"]
    assert [r.timestamp for r in got] == pytest.approx([1.5, 2.25])


def test_writer_round_trip_and_snaplen():
    out = io.BytesIO()
    writer = pcap.PcapWriter(out, DLT_PFLOG, snaplen=10)
    writer.write(1700000000.123456, b"0123456789abcdef")
    writer.write(1700000001.9999999, b"short")
    out.seek(0)
    reader = pcap.PcapReader(out)
    first, second = list(reader)
    assert reader.linktype == DLT_PFLOG and reader.snaplen == 10
    assert first.data == b"0123456789" and first.orig_len == 16 and first.truncated
    assert first.timestamp == pytest.approx(1700000000.123456)
    assert second.timestamp == pytest.approx(1700000002.0)


def test_reader_rejects_garbage_and_truncation():
    with pytest.raises(pcap.PcapError):
        pcap.PcapReader(io.BytesIO(b"not a pcap file at all, no"))
    raw = _records(pcap.LINKTYPE_RAW, [(1.0, b"\x45abcdef")])
    with pytest.raises(pcap.PcapError):
        list(pcap.PcapReader(io.BytesIO(raw[:-2])))


IPV4_UDP = bytes.fromhex("45000020000040004011f7cd0a000001 0a000002".replace(" ", "")) + bytes.fromhex("3039003500000000") + b"abcd"


def test_ip_packet_for_each_link_type():
    packet = IPV4_UDP
    assert pcap.ip_packet(pcap.LINKTYPE_RAW, packet) == packet
    assert pcap.ip_packet(pcap.DLT_RAW_BSD, packet) == packet
    assert pcap.ip_packet(pcap.LINKTYPE_ETHERNET, pcap.ethernet_frame(packet)) == packet
    vlan = b"\x02" * 12 + b"\x81\x00\x00\x05\x08\x00" + packet
    assert pcap.ip_packet(pcap.LINKTYPE_ETHERNET, vlan) == packet
    assert pcap.ip_packet(pcap.LINKTYPE_ETHERNET, b"\x02" * 12 + b"\x08\x06" + b"arp") is None
    assert pcap.ip_packet(pcap.LINKTYPE_LINUX_SLL, pcap.sll_frame(packet)) == packet
    header = PflogHeader(action=0, reason=0, ifname="xl0", direction=1, rulenr=1)
    assert pcap.ip_packet(DLT_PFLOG, frame(header, packet)) == packet
    with pytest.raises(pcap.PcapError):
        pcap.ip_packet(999, packet)


def _verify_l4(packet: bytes) -> int:
    ihl = (packet[0] & 15) * 4
    seg = packet[ihl:]
    pseudo = packet[12:20] + struct.pack("!BBH", 0, packet[9], len(seg))
    return internet_checksum(pseudo + seg)


def test_fix_l4_checksum_makes_udp_and_tcp_verify():
    fixed = fix_l4_checksum(IPV4_UDP[:26] + b"\x12\x34" + IPV4_UDP[28:])
    assert _verify_l4(fixed) == 0
    tcp = bytearray(bytes.fromhex("45000028000140004006000 00a0000010a000002".replace(" ", "")))
    tcp += struct.pack("!HHIIBBHHH", 1234, 80, 1, 0, 0x50, 0x02, 64240, 0xBEEF, 0)
    fixed = fix_l4_checksum(bytes(tcp))
    assert _verify_l4(fixed) == 0 and fixed[:20] == bytes(tcp[:20])
    icmp = bytes.fromhex("450000 1c 0000 0000 4001 0000 0a000001 0a000002".replace(" ", "")) + b"\x08\0\0\0\0\0\0\0"
    assert fix_l4_checksum(icmp) == icmp
