"""The sync datagram: records round-trip, every datagram is authenticated, and a receiver skips
sections it does not know (forward compatibility)."""

import pytest
from hypothesis import given, settings, strategies as st

from pfha.sync import wire
from pfha.sync.wire import Action, Header, Keyring, RejectReason, Rejected

KEYS = Keyring({1: b"k" * 32})


def _state(**kw):
    base = dict(family=wire.AF_INET, proto=6, orig=wire.Tuple("10.0.1.100", "10.0.2.100", 40000, 9000),
                reply=wire.Tuple("10.0.2.100", "10.0.2.1", 9000, 40000), status=0x19E, timeout=300,
                mark=0x20203, tcp_state=3, wscale=(7, 6), tcp_flags=(3, 1))
    base.update(kw)
    return wire.State(**base)


def test_state_record_round_trips_and_is_fixed_size():
    state = _state(creator=0xDEADBEEF, version=12345)
    record = state.pack()
    assert len(record) == wire.STATE.size == 108
    assert wire.State.unpack(record) == state
    assert wire.creator_version(record) == (0xDEADBEEF, 12345)
    assert wire.state_key(record) == state.key()


def test_ipv6_and_icmp_states_round_trip():
    v6 = _state(family=wire.AF_INET6, orig=wire.Tuple("2001:db8::1", "2001:db8::2", 1, 2),
                reply=wire.Tuple("2001:db8::2", "2001:db8::1", 2, 1))
    icmp = _state(proto=1, orig=wire.Tuple("10.0.0.1", "10.0.0.2", 77, 8 << 8),
                  reply=wire.Tuple("10.0.0.2", "10.0.0.1", 77, 0), tcp_state=0)
    for state in (v6, icmp):
        assert wire.State.unpack(state.pack()) == state


def test_key_ignores_everything_but_identity():
    assert _state(timeout=1, mark=9).key() == _state(timeout=5, mark=0).key()
    assert _state(zone=1).key() != _state(zone=0).key()


def _datagram(body=b"", **kw):
    header = Header(node=7, epoch=99, seq=kw.pop("seq", 1), rseq=kw.pop("rseq", 1), flags=wire.FLAG_RELIABLE)
    return wire.seal(KEYS, header, body)


def test_sealed_datagram_opens_with_its_sections():
    body = wire.section(Action.INS, [_state().pack(), _state(zone=3).pack()]) + wire.section(
        Action.ACK, [wire.ACK.pack(5, 6)])
    got = wire.open_datagram(KEYS, _datagram(body))
    assert got.header == Header(7, 99, 1, 1, wire.FLAG_RELIABLE, 1)
    assert [(a, len(r)) for a, r in got.sections] == [(Action.INS, 2), (Action.ACK, 1)]
    assert wire.State.unpack(got.sections[0][1][1]).zone == 3


@pytest.mark.parametrize("position", [0, 5, 20, 40, -1, -17])
def test_any_flipped_bit_is_rejected(position):
    data = bytearray(_datagram(wire.section(Action.INS, [_state().pack()])))
    data[position] ^= 0x10
    with pytest.raises(Rejected) as caught:
        wire.open_datagram(KEYS, bytes(data))
    assert caught.value.reason in (RejectReason.AUTH, RejectReason.MAGIC, RejectReason.KEY_ID)


def test_wrong_key_and_short_datagrams_are_rejected():
    other = Keyring({1: b"x" * 32})
    with pytest.raises(Rejected) as caught:
        wire.open_datagram(other, _datagram())
    assert caught.value.reason == RejectReason.AUTH
    with pytest.raises(Rejected) as caught:
        wire.open_datagram(KEYS, b"PFHS")
    assert caught.value.reason == RejectReason.SHORT


def test_key_rotation_old_key_still_verifies():
    old, new = Keyring({1: b"a" * 32}), Keyring({1: b"a" * 32, 2: b"b" * 32})
    assert new.current == 2
    assert wire.open_datagram(new, wire.seal(old, Header(1, 1, 1), b"")).header.key_id == 1
    with pytest.raises(Rejected) as caught:
        wire.open_datagram(old, wire.seal(new, Header(1, 1, 1), b""))
    assert caught.value.reason == RejectReason.KEY_ID


def test_unknown_sections_are_skipped():
    unknown = wire.SECTION.pack(200, 2, 3) + b"\0" * 24
    body = unknown + wire.section(Action.ALIVE, [wire.ALIVE.pack(1, 2)])
    got = wire.open_datagram(KEYS, _datagram(body))
    assert got.sections == ((Action.ALIVE, (wire.ALIVE.pack(1, 2),)),)


def test_overrunning_or_missized_section_is_malformed():
    for body in (wire.SECTION.pack(Action.INS, 27, 5) + _state().pack(),
                 wire.SECTION.pack(Action.ACK, 2, 1) + b"\0" * 8):
        with pytest.raises(Rejected) as caught:
            wire.open_datagram(KEYS, _datagram(body))
        assert caught.value.reason == RejectReason.MALFORMED


def test_key_file_formats():
    assert wire.read_key_file(b"00" * 32 + b"\n").current == 0
    ring = wire.read_key_file(b"# keys\n1:" + b"11" * 16 + b"\n2:" + b"22" * 16 + b"\n")
    assert ring.current == 2
    with pytest.raises(ValueError):
        wire.read_key_file(b"short")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_never_crashes_the_decoder(data):
    try:
        wire.open_datagram(KEYS, data)
    except Rejected:
        pass
