"""The engine's packet model: bytes in, fields, bytes out, checksums an independent decoder accepts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pfha.engine import packet as P
from pfha.engine.packet import Packet, PacketError, inet_checksum

scapy = pytest.importorskip("scapy.all")


def _scapy_checksums_ok(data: bytes) -> bool:
    """Let scapy recompute every checksum and compare with ours (scapy is only the oracle here)."""
    if data[0] >> 4 == 4:
        pkt = scapy.IP(data)
        fresh = scapy.IP(data)
        del fresh.chksum
        layers = [pkt]
    else:
        pkt = scapy.IPv6(data)
        fresh = scapy.IPv6(data)
        layers = []
    for layer in (scapy.TCP, scapy.UDP, scapy.ICMP, scapy.ICMPv6EchoRequest, scapy.ICMPv6DestUnreach):
        if fresh.haslayer(layer) and hasattr(fresh[layer], "chksum") and fresh[layer].chksum is not None:
            del fresh[layer].chksum
            layers.append(pkt[layer])
    rebuilt = type(fresh)(bytes(fresh))
    return bytes(rebuilt) == data


def test_tcp_v4_roundtrip_and_checksums():
    p = P.tcp("198.51.100.9", 40000, "203.0.113.11", 80, "S", seq=123456, mss=1460, wscale=7, payload=b"")
    data = p.to_bytes()
    q = Packet.parse(data)
    assert (q.af, q.src_text(), q.dst_text(), q.sport, q.dport) == (4, "198.51.100.9", "203.0.113.11", 40000, 80)
    assert q.flags == P.TH_SYN and q.seq == 123456
    assert q.mss() == 1460 and q.wscale() == 7
    assert q.to_bytes() == data
    assert _scapy_checksums_ok(data)
    assert inet_checksum(data[:20]) == 0  # a correct IPv4 header sums to zero


def test_udp_v6_roundtrip_and_checksums():
    p = P.udp("2001:db8::1", 5353, "2001:db8::2", 53, b"hello")
    data = p.to_bytes()
    q = Packet.parse(data)
    assert (q.af, q.sport, q.dport, q.payload) == (6, 5353, 53, b"hello")
    assert q.to_bytes() == data
    assert _scapy_checksums_ok(data)


def test_icmp_echo_id_is_the_flow_port():
    p = P.icmp("192.0.2.1", "192.0.2.2", 8, 0, ident=777, payload=b"ping")
    q = Packet.parse(p.to_bytes())
    assert (q.icmp_type, q.icmp_id, q.sport, q.dport) == (8, 777, 777, 777)
    assert _scapy_checksums_ok(p.to_bytes())


def test_icmp_error_quotes_the_offending_packet():
    inner = P.udp("203.0.113.2", 50001, "198.51.100.1", 53, b"x" * 30)
    err = P.icmp("198.51.100.1", "203.0.113.2", 3, 3, inner=inner)
    q = Packet.parse(err.to_bytes())
    assert q.is_icmp_error
    assert q.inner is not None and (q.inner.src_text(), q.inner.sport, q.inner.dport) == ("203.0.113.2", 50001, 53)
    assert q.inner.truncated  # only 8 bytes past the IP header are quoted


def test_icmp6_and_other_protocols():
    echo = P.icmp("2001:db8::1", "2001:db8::2", 128, 0, ident=5)
    assert Packet.parse(echo.to_bytes()).proto == P.IPPROTO_ICMPV6
    carp = P.other("203.0.113.2", "224.0.0.18", 112, b"\x21" * 36, ttl=255)
    q = Packet.parse(carp.to_bytes())
    assert (q.proto, q.payload, q.ttl) == (112, b"\x21" * 36, 255)


def test_ip_options_and_fragments_are_seen():
    p = P.udp("192.0.2.1", 1, "192.0.2.2", 2, ip_options=b"\x94\x04\x00\x00")
    assert Packet.parse(p.to_bytes()).ip_options == b"\x94\x04\x00\x00"
    frag = P.udp("192.0.2.1", 1, "192.0.2.2", 2, b"z" * 16)
    frag.frag_offset = 1480
    q = Packet.parse(frag.to_bytes())
    assert q.is_fragment and q.sport == 0


def test_garbage_is_refused():
    with pytest.raises(PacketError):
        Packet.parse(b"")
    with pytest.raises(PacketError):
        Packet.parse(b"\x45\x00")
    with pytest.raises(PacketError):
        Packet.parse(b"\x15" + bytes(30))


@settings(max_examples=60, deadline=None)
@given(sport=st.integers(0, 65535), dport=st.integers(0, 65535), seq=st.integers(0, 2**32 - 1),
       flags=st.integers(0, 255), payload=st.binary(max_size=40), v6=st.booleans())
def test_tcp_roundtrip_property(sport, dport, seq, flags, payload, v6):
    src, dst = ("2001:db8::a", "2001:db8::b") if v6 else ("10.0.0.1", "10.0.0.2")
    p = P.tcp(src, sport, dst, dport, flags, seq=seq, payload=payload)
    data = p.to_bytes()
    q = Packet.parse(data)
    assert (q.sport, q.dport, q.seq, q.flags, q.payload) == (sport, dport, seq, flags, payload)
    assert q.to_bytes() == data
    assert _scapy_checksums_ok(data)
