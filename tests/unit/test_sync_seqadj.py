"""Sync carries conntrack's sequence adjustment (synproxied connections), and only for the
entries that have one: records without it keep their bytes, records with it round-trip through
the wire, the protocol core, the event parsers (general, learned layouts, columns) and the
installer's requests."""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.sync import conntrack, wire
from pfha.sync.peer import StateReceived
from pfha.sync.simnet import KEYRING, SimNet, make_state

SEQADJ = (0, 0x8F3A2211, 0x8F3A2211, 0, 0x70C5DDEF, 0x70C5DDEF)  # synproxy: both offsets alike


def _state(i: int = 1, seqadj=SEQADJ, family=wire.AF_INET) -> wire.State:
    if family == wire.AF_INET:
        orig = wire.Tuple(f"198.51.100.{i % 250}", "192.168.1.100", 40000 + i, 8080)
        reply = wire.Tuple("192.168.1.100", f"198.51.100.{i % 250}", 8080, 40000 + i)
    else:
        orig = wire.Tuple("2001:db8::7", "2001:db8:1::100", 40000 + i, 8080)
        reply = wire.Tuple("2001:db8:1::100", "2001:db8::7", 8080, 40000 + i)
    return wire.State(family, 6, orig, reply, status=0x4E if seqadj else 0xE, timeout=432000, mark=0x101,
                      tcp_state=3, wscale=(7, 7), tcp_flags=(3, 3), seqadj=seqadj)


# --- wire -----------------------------------------------------------------------------------
def test_a_record_without_seqadj_keeps_its_bytes():
    state = _state(seqadj=None)
    record = state.pack()
    assert len(record) == wire.STATE.size == 108
    assert record == wire.STATE.pack(
        2, 6, 0, bytes([198, 51, 100, 1]) + bytes(12), bytes([192, 168, 1, 100]) + bytes(12), 40001, 8080, 0, 0,
        bytes([192, 168, 1, 100]) + bytes(12), bytes([198, 51, 100, 1]) + bytes(12), 8080, 40001,
        0xE, 432000, 0x101, 3, 7, 7, 3, 3)
    # the section is the same as before the extension existed: INS, 27 words, the records
    assert wire.section(wire.Action.INS, [record]) == struct.pack("!BBH", 1, 27, 1) + record
    assert wire.State.unpack(record).seqadj is None


def test_a_record_with_seqadj_is_the_state_then_the_adjustment():
    plain, adjusted = _state(seqadj=None).pack(), _state().pack()
    assert len(adjusted) == wire.STATE_SEQADJ_SIZE == 132
    assert adjusted[:88] == plain[:88] and adjusted[92:108] == plain[92:108]  # status differs (0x40)
    assert adjusted[108:] == struct.pack("!6I", *SEQADJ)
    assert wire.State.unpack(adjusted) == _state()
    assert wire.seqadj_of(adjusted) == SEQADJ and wire.seqadj_of(plain) is None


def test_sections_of_adjusted_records_have_their_own_action_and_read_back_as_states():
    keys = wire.Keyring({1: bytes(range(32))})
    plain = [_state(i, seqadj=None).pack() for i in range(3)]
    adjusted = [_state(i).pack() for i in range(3, 5)]
    body = (wire.section(wire.Action.UPD, plain) + wire.section(wire.Action.UPD, adjusted)
            + wire.section(wire.Action.INS, adjusted[:1]))
    assert body[4 + 3 * 108:][:4] == struct.pack("!BBH", wire.Action.UPD_SEQADJ, 33, 2)
    datagram = wire.open_datagram(keys, wire.seal(keys, wire.Header(1, 1, 1), body))
    assert datagram.sections == ((wire.Action.UPD, tuple(plain)), (wire.Action.UPD, tuple(adjusted)),
                                 (wire.Action.INS, tuple(adjusted[:1])))


def test_a_section_mixing_record_sizes_is_refused():
    try:
        wire.section(wire.Action.UPD, [_state(1).pack(), _state(2, seqadj=None).pack()])
    except ValueError:
        return
    raise AssertionError("a mixed section was built")


def test_a_receiver_that_predates_seqadj_skips_those_sections():
    keys = wire.Keyring({1: bytes(range(32))})
    plain = _state(1, seqadj=None).pack()
    body = wire.section(wire.Action.UPD, [_state(2).pack()]) + wire.section(wire.Action.UPD, [plain])
    data = wire.seal(keys, wire.Header(1, 1, 1), body)
    saved = dict(wire.RECORD_SIZES)
    try:  # an old receiver: it does not know the actions 10 and 11
        del wire.RECORD_SIZES[wire.Action.INS_SEQADJ], wire.RECORD_SIZES[wire.Action.UPD_SEQADJ]
        assert wire.open_datagram(keys, data).sections == ((wire.Action.UPD, (plain,)),)
    finally:
        wire.RECORD_SIZES.update(saved)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.integers(0, 0xFFFFFFFF)] * 6), st.sampled_from([wire.AF_INET, wire.AF_INET6]),
       st.integers(1, 200))
def test_round_trip_through_the_request_and_the_parser(seqadj, family, i):
    state = _state(i, seqadj, family)
    for create in (True, False):
        message = conntrack.entry_request(state.pack(), 1, create=create)
        back = wire.State.unpack(conntrack.parse_message(message, 0, len(message)).record)
        assert back.seqadj == seqadj
        if create:
            assert back == state


# --- the protocol core ----------------------------------------------------------------------
def test_the_peer_delivers_adjusted_and_plain_records_exactly():
    net = SimNet(seed=3)
    a, b = net.add(1), net.add(2)
    net.run(0.1)
    records = []
    for i in range(60):  # interleaved: the sender cuts sections by record size
        records.append(make_state(i))
        if i % 4 == 0:
            records.append(_state(i).pack())
    a.peer.local_updates([(r, True) for r in records], net.now)
    for r in records[:10]:
        a.peer.local_update(r, net.now)
    net.run(1)
    assert b.kernel == dict(a.peer.states())
    got = [e.record for e in b.events if isinstance(e, StateReceived)]
    assert sum(len(r) == wire.STATE_SEQADJ_SIZE for r in b.kernel.values()) == 15
    assert all(wire.seqadj_of(r) == SEQADJ for r in got if len(r) != wire.STATE.size)
    # and a bulk update gives them too
    c = net.add(3)
    net.run(1)
    assert c.kernel == dict(a.peer.states())


def test_plain_traffic_keeps_its_datagrams():
    """Without seqadj records the sender's output is what it was: full single-section datagrams."""
    net = SimNet(seed=1)
    a, _ = net.add(1), net.add(2)
    net.run(0.1)
    sent = []
    a.peer.local_updates([(make_state(i), True) for i in range(26)], net.now)
    for data in a.peer.datagrams_to_send(net.now):
        sent.append(wire.open_datagram(KEYRING, data))
    states = [s for d in sent for s in d.sections if s[0] == wire.Action.INS]
    assert [len(records) for _, records in states] == [13, 13]


# --- the intake -----------------------------------------------------------------------------
def _event(i: int, seqadj=SEQADJ) -> bytes:
    """An UPDATE event as ctnetlink writes it for a synproxied entry (ours: the request's layout
    with the event's message type and flags)."""
    message = bytearray(conntrack.entry_request(_state(i, seqadj).pack(), 0, create=True))
    struct.pack_into("=HH", message, 4, conntrack.NFNL_SUBSYS_CTNETLINK << 8 | conntrack.IPCTNL_MSG_CT_NEW, 0)
    return bytes(message)


def test_learned_layouts_do_not_drop_the_adjustment():
    conntrack._LAYOUTS.clear()
    message = _event(1)
    general = conntrack.parse_message(message, 0, len(message))
    assert wire.seqadj_of(general.record) == SEQADJ
    for _ in range(3):  # the first would learn a layout, the others use it
        assert list(conntrack.parse_datagram(message, len(message))) == [general]


def test_runs_of_adjusted_events_keep_the_adjustment():
    conntrack._LAYOUTS.clear()
    messages = [_event(i) for i in range(30)]
    slots = conntrack._Slots(64, 1024)
    for i, message in enumerate(messages):
        slots.put(i, message)
    items: list = []
    conntrack.EventDecoder(0).batch(slots, len(messages), items)
    assert not any(isinstance(item, conntrack.Run) for item in items)
    assert [e.record for e in items] == [conntrack.parse_message(m, 0, len(m)).record for m in messages]
    assert all(wire.seqadj_of(e.record) == SEQADJ for e in items)


def test_plain_events_still_learn_a_layout_and_adjusted_ones_do_not():
    conntrack._LAYOUTS.clear()
    plain, adjusted = _event(1, seqadj=None), _event(2)
    for message in (plain, adjusted):
        list(conntrack.parse_datagram(message, len(message)))
    assert conntrack._LAYOUTS[(len(plain), *struct.unpack_from("=HH", plain, 4))] is not None
    assert conntrack._LAYOUTS[(len(adjusted), *struct.unpack_from("=HH", adjusted, 4))] is None
    assert wire.seqadj_of(list(conntrack.parse_datagram(adjusted, len(adjusted)))[0].record) == SEQADJ


# --- the installer --------------------------------------------------------------------------
def test_adjusted_records_go_through_the_general_encoder_in_a_batch():
    table = object.__new__(conntrack.KernelTable)
    table.liberal = False
    batch = [(make_state(i), False) for i in range(20)]
    batch[7] = (_state(7).pack(), False)
    chunks = table._encode(batch, 100)
    assert sum(count for _, count, _ in chunks) == len(batch)
    expected = b"".join(conntrack.entry_request(record, 100 + i, not known) for i, (record, known) in enumerate(batch))
    assert b"".join(bytes(blob) for blob, _, _ in chunks) == expected
    message = conntrack.entry_request(_state(7).pack(), 1, create=True)
    attrs = conntrack._attrs(message, 20, len(message))
    assert conntrack.CTA_SEQ_ADJ_ORIG in attrs and conntrack.CTA_SEQ_ADJ_REPLY in attrs


def test_a_later_event_without_the_adjustment_keeps_it_in_the_table():
    """The kernel reports seqadj only in the event that set it and in dumps; the state keeps it."""
    for how in ("one", "batch", "run"):
        net = SimNet(seed=2)
        a = net.add(1)
        adjusted = [_state(i).pack() for i in range(20)]
        a.peer.local_updates([(r, True) for r in adjusted], net.now)
        later = [_state(i, seqadj=None).pack() for i in range(20)]
        later = [r[:91] + bytes([r[91] | 0x40]) + r[92:] for r in later]  # status still has IPS_SEQ_ADJUST
        other = make_state(99)  # a plain state in the same run: untouched
        if how == "one":
            for r in later + [other]:
                a.peer.local_update(r, net.now)
        elif how == "batch":
            a.peer.local_updates([(r, False) for r in later + [other]], net.now)
        else:
            a.peer.local_run(b"".join(later + [other]), net.now)
        table = a.peer.states()
        assert all(wire.seqadj_of(table[wire.state_key(r)]) == SEQADJ for r in later), how
        assert len(table[wire.state_key(other)]) == wire.STATE.size
        assert wire.State.unpack(table[wire.state_key(later[0])]).status == 0x4E


def test_a_state_whose_adjustment_no_event_carried_is_asked_for():
    """synproxy sets the offsets without an IPCT_SEQADJ event: the status bit says so, and the
    core lists the key for the adapter to read the entry (once it has it, no more)."""
    net = SimNet(seed=4)
    a = net.add(1)
    record = _state(5, seqadj=None).pack()
    record = record[:91] + bytes([record[91] | 0x40]) + record[92:]
    a.peer.local_update(record, net.now)
    assert a.peer.seqadj_wanted == [wire.state_key(record)]
    a.peer.seqadj_wanted.clear()
    a.peer.local_update(_state(5).pack(), net.now)  # what the adapter read from the kernel
    a.peer.local_update(record, net.now)
    assert a.peer.seqadj_wanted == []
    assert wire.seqadj_of(a.peer.states()[wire.state_key(record)]) == SEQADJ


def test_a_partial_tcp_event_keeps_the_states_protoinfo():
    """An UPDATE without IPCT_PROTOINFO (e.g. only the mark or the adjustment changed) has no TCP
    state: the record sent on keeps the last one, or the peer would create it in SYN_SENT."""
    for how in ("one", "run"):
        net = SimNet(seed=5)
        a = net.add(1)
        full = [make_state(i) for i in range(10)]
        a.peer.local_updates([(r, True) for r in full], net.now)
        partial = [r[:100] + bytes(5) + r[105:] for r in full]
        if how == "one":
            for r in partial:
                a.peer.local_update(r, net.now)
        else:
            a.peer.local_run(b"".join(partial), net.now)
        table = a.peer.states()
        assert [table[wire.state_key(r)][100:105] for r in full] == [r[100:105] for r in full], how
