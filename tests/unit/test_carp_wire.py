"""CARP wire format against real captures: ucarp's adverts and adverts ucarp accepted/rejected."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.carp import wire
from pfha.carp.testbed import capture_adverts
from pfha.carp.wire import Advertisement, BadAdvert, DropReason

VIP = ipaddress.IPv4Address("10.99.0.100")
KEY = wire.carp_key("secretpass")


adverts = capture_adverts


@pytest.fixture(scope="module")
def ucarp_adverts(shared):
    return adverts(shared / "testdata/carp/ucarp-adverts.pcap")


@pytest.fixture(scope="module")
def probe_adverts(shared):
    return adverts(shared / "testdata/carp/python-vs-ucarp.pcap")


def verifies(payload, key, vips=(VIP,)):
    advert = wire.decode(payload)
    return wire.digest_matches(key, advert.vhid, list(vips), [], advert.counter, advert.digest)


def test_worked_example_frame_52_byte_for_byte(ucarp_adverts):
    number, header, payload = ucarp_adverts[-1]
    assert number == 52
    assert payload.hex() == "2101000700018" "08b" "bdb8f6d99fdda4a4" "651d090d98cf06afe342000ec7e7801e10f21b64"
    advert = wire.decode(payload)
    assert (advert.vhid, advert.advbase, advert.advskew, advert.authlen, advert.demote) == (1, 1, 0, 7, 0)
    assert advert.counter == 13670948083433579684 and advert.checksum == 0x808B
    assert wire.hmac_message(1, [VIP], [], advert.counter).hex() == "0201010a630064bdb8f6d99fdda4a4"
    assert wire.compute_digest(KEY, 1, [VIP], [], advert.counter) == advert.digest
    # Re-encoding the decoded fields gives the very same 36 bytes (checksum included).
    assert wire.encode(advert) == payload
    assert (header.ttl, header.tos, str(header.source), str(header.destination)) == (255, 0x10, "10.99.0.1", "224.0.0.18")


def test_all_45_ucarp_adverts_verify_and_fail_with_wrong_inputs(ucarp_adverts):
    assert len(ucarp_adverts) == 45
    for _, header, payload in ucarp_adverts:
        assert header.ttl == 255 and wire.internet_checksum(payload) == 0
        advert = wire.decode(payload)
        assert (advert.version, advert.type, advert.authlen) == (2, 1, 7)
        assert verifies(payload, KEY)
        assert not verifies(payload, wire.carp_key("wrongpass"))
        assert not verifies(payload, KEY, [ipaddress.IPv4Address("10.99.0.101")])


def test_counter_carries_across_masters(ucarp_adverts):
    counters = [wire.decode(p).counter for n, _, p in ucarp_adverts if n >= 31]
    assert counters == list(range(counters[0], counters[0] + len(counters)))


def test_probe_capture_negative_vectors(probe_adverts):
    assert len(probe_adverts) == 39
    good = {n for n, _, p in probe_adverts if verifies(p, KEY)}
    assert len(good) == 36 and {25, 26, 42}.isdisjoint(good)
    assert {n for n, _, p in probe_adverts if verifies(p, wire.carp_key("wrongpass"))} == {25, 26}
    long_key = {n for n, _, p in probe_adverts if verifies(p, wire.carp_key("secretpassXXXXXXXXXYYY"))}
    assert long_key == {42}
    assert wire.carp_key("secretpassXXXXXXXXXYYY") == b"secretpassXXXXXXXXX"
    assert {n for n, h, _ in probe_adverts if h.ttl != 255} == {38, 40}


def test_key_is_cut_to_19_bytes_and_may_be_empty():
    assert wire.carp_key("a" * 25) == wire.carp_key("a" * 19) == b"a" * 19
    assert wire.carp_key("") == b""
    # An empty key is a valid HMAC key (BSD: all zeros).
    assert len(wire.compute_digest(b"", 1, [VIP], [], 1)) == 20


def test_addresses_are_sorted_numerically_v4_before_v6():
    a, b = ipaddress.IPv4Address("10.0.0.9"), ipaddress.IPv4Address("10.0.0.10")
    six = ipaddress.IPv6Address("2001:db8::1")
    msg = wire.hmac_message(3, [b, a], [six], 5)
    assert msg[3:7] == a.packed and msg[7:11] == b.packed and msg[11:27] == six.packed
    assert wire.compute_digest(KEY, 3, [b, a], [six], 5) == wire.compute_digest(KEY, 3, [a, b], [six], 5)


def test_link_local_left_out_when_sending_accepted_both_ways():
    ll, gl = ipaddress.IPv6Address("fe80::1"), ipaddress.IPv6Address("2001:db8::1")
    sent = wire.compute_digest(KEY, 1, [], [ll, gl], 9)
    assert sent == wire.compute_digest(KEY, 1, [], [gl], 9)
    import hashlib
    import hmac
    with_ll = hmac.new(KEY, wire.hmac_message(1, [], [ll, gl], 9), hashlib.sha1).digest()
    assert wire.digest_matches(KEY, 1, [], [ll, gl], 9, sent)
    assert wire.digest_matches(KEY, 1, [], [ll, gl], 9, with_ll)
    assert not wire.digest_matches(KEY, 1, [], [gl], 9, with_ll)


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda b: b[:35], DropReason.SHORT),
        (lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:], DropReason.CHECKSUM),
    ],
)
def test_decode_rejects(mutate, reason):
    good = wire.encode(Advertisement(1, 1, 0, 7, b"\0" * 20))
    with pytest.raises(BadAdvert) as caught:
        wire.decode(mutate(good))
    assert caught.value.reason is reason


@pytest.mark.parametrize("version, kind, reason", [(3, 1, DropReason.VERSION), (2, 2, DropReason.TYPE)])
def test_decode_rejects_version_and_type(version, kind, reason):
    raw = wire.encode(Advertisement(1, 1, 0, 7, b"\0" * 20, version=version, type=kind))
    with pytest.raises(BadAdvert) as caught:
        wire.decode(raw)
    assert caught.value.reason is reason


@settings(max_examples=200, deadline=None)
@given(
    vhid=st.integers(1, 255), advbase=st.integers(0, 255), advskew=st.integers(0, 255),
    demote=st.integers(0, 255), counter=st.integers(0, 2**64 - 1), digest=st.binary(min_size=20, max_size=20),
)
def test_round_trip_and_checksum_zero(vhid, advbase, advskew, demote, counter, digest):
    advert = Advertisement(vhid, advbase, advskew, counter, digest, demote=demote)
    raw = wire.encode(advert)
    assert len(raw) == 36 and wire.internet_checksum(raw) == 0
    back = wire.decode(raw)
    assert (back.vhid, back.advbase, back.advskew, back.counter, back.digest, back.demote) == (vhid, advbase, advskew, counter, digest, demote)


@settings(max_examples=50, deadline=None)
@given(advbase=st.integers(0, 255), advskew=st.integers(0, 255), demote=st.integers(0, 255))
def test_timing_and_demote_are_not_authenticated(advbase, advskew, demote):
    digest = wire.compute_digest(KEY, 1, [VIP], [], 42)
    advert = wire.decode(wire.encode(Advertisement(1, advbase, advskew, 42, digest, demote=demote)))
    assert wire.digest_matches(KEY, 1, [VIP], [], advert.counter, advert.digest)


def test_ipv4_header_and_garp_layout():
    datagram = wire.build_ipv4(ipaddress.IPv4Address("10.0.0.1"), b"x" * 36, ident=7)
    header, payload = wire.parse_ipv4(datagram)
    assert wire.internet_checksum(datagram[:20]) == 0 and payload == b"x" * 36
    assert (header.ttl, header.protocol, header.total_len, datagram[6]) == (255, 112, 56, 0x40)
    mac = bytes.fromhex("02000000000a")
    frame = wire.gratuitous_arp(mac, VIP)
    assert len(frame) == 42 and frame[:6] == b"\xff" * 6
    op, sha, spa, tha, tpa = struct.unpack("!6xH6s4s6s4s", frame[14:42])
    assert (op, sha, spa, tha, tpa) == (1, mac, VIP.packed, mac, VIP.packed)
    assert wire.multicast_mac_v4(ipaddress.IPv4Address("224.0.0.18")).hex() == "01005e000012"


def test_unsolicited_na_layout():
    mac = bytes.fromhex("02000000000b")
    target = ipaddress.IPv6Address("fd00:99::100")
    body = wire.unsolicited_na(mac, target)
    kind, code, _csum, flags, tgt, opt, optlen, lladdr = struct.unpack("!BBHI16sBB6s", body)
    assert (kind, code, flags >> 29, tgt, opt, optlen, lladdr) == (136, 0, 0b001, target.packed, 2, 1, mac)
