"""The ctnetlink codec without a socket: a captured kernel event decodes to the state it
describes, and the requests we build carry what the kernel needs (pfsync.md §3.3)."""

import struct

from pfha.sync import conntrack, wire

# a NEW event captured on kernel 6.18 for `conntrack -I` of an established, source-NAT'd TCP
# entry (10.0.1.100:40000 -> 10.0.2.100:9000, translated to 10.0.2.1); nlmsg_pid = the writer's
CAPTURED_NEW = bytes.fromhex(
    "e8000000000100060000000044520000020000003400018014000180080001000a000164080002000a000264"
    "1c0002800500010006000000060002009c40000006000300232800003400028014000180080001000a000264"
    "080002000a0002011c00028005000100060000000600020023280000060003009c40000008000c0076c1db9c"
    "080003000000019e080007000000012c300004802c00018005000100030000000500020000000000050003"
    "0000000000060004000a000000060005000a0000001c0018800800010000000000080002000000000008000300"
    "000000000800080000000006")


def test_captured_event_decodes_to_the_state():
    event = conntrack.parse_message(CAPTURED_NEW, 0, len(CAPTURED_NEW))
    assert event.kind == conntrack.KIND_NEW
    assert event.pid == 0x5244
    state = wire.State.unpack(event.record)
    assert state.orig == wire.Tuple("10.0.1.100", "10.0.2.100", 40000, 9000)
    assert state.reply == wire.Tuple("10.0.2.100", "10.0.2.1", 9000, 40000)
    assert state.status == 0x19E and state.tcp_state == 3 and state.timeout == 300
    assert state.tcp_flags == (0x0A, 0x0A) and state.mark == 6


def test_mark_mask_filters_entries_the_data_plane_did_not_create():
    assert conntrack.parse_message(CAPTURED_NEW, 0, len(CAPTURED_NEW), mark_mask=0x3) is not None
    assert conntrack.parse_message(CAPTURED_NEW, 0, len(CAPTURED_NEW), mark_mask=0x1) is None


def _attrs(message: bytes) -> dict[int, bytes]:
    return {k: message[a:b] for k, (a, b) in conntrack._attrs(message, 20, len(message)).items()}


def test_create_sends_unnatted_reply_and_nat_binding():
    record = conntrack.parse_message(CAPTURED_NEW, 0, len(CAPTURED_NEW)).record
    message = conntrack.entry_request(record, seq=5, create=True)
    length, msg_type, flags, seq, _ = struct.unpack_from("=IHHII", message)
    assert length == len(message) and seq == 5
    assert flags & conntrack.NLM_F_CREATE and flags & conntrack.NLM_F_EXCL
    # the reply tuple goes back un-NATed: its destination is the original source again
    reply = conntrack._tuple(message, 2, conntrack._attrs(message, 20, len(message))[conntrack.CTA_TUPLE_REPLY])
    assert reply[2][:4] == bytes([10, 0, 1, 100]) and reply[4] == 40000
    attrs = _attrs(message)
    assert conntrack.CTA_NAT_SRC in attrs and conntrack.CTA_NAT_DST not in attrs
    assert struct.unpack("!I", attrs[conntrack.CTA_STATUS])[0] & conntrack.IPS_CONFIRMED
    assert struct.unpack("!I", attrs[conntrack.CTA_MARK])[0] == 6
    # TCP flags carry a mask (events report mask 0): (flags, 0xff)
    assert b"\x0a\xff" in attrs[conntrack.CTA_PROTOINFO]


def test_update_leaves_nat_out():
    record = conntrack.parse_message(CAPTURED_NEW, 0, len(CAPTURED_NEW)).record
    attrs = _attrs(conntrack.entry_request(record, seq=1, create=False))
    assert conntrack.CTA_NAT_SRC not in attrs and conntrack.CTA_TUPLE_REPLY not in attrs


def test_plain_request_parses_back_to_the_same_state():
    state = wire.State(wire.AF_INET6, 6, wire.Tuple("2001:db8::1", "2001:db8::2", 1000, 80),
                       wire.Tuple("2001:db8::2", "2001:db8::1", 80, 1000), status=0xE | 0x8, timeout=99,
                       mark=1, zone=4, tcp_state=3, wscale=(7, 7), tcp_flags=(1, 1))
    message = conntrack.entry_request(state.pack(), seq=1, create=True)
    back = wire.State.unpack(conntrack.parse_message(message, 0, len(message)).record)
    assert back == state


def _records():
    for status in (0xE, 0x19E, 0x1AE, 0x1BE, 0x20F):  # plain, SNAT, DNAT, both, dropped bits
        for proto, tcp_state in ((6, 3), (6, 0), (17, 0)):
            for mark, zone in ((0, 0), (0x20203, 7)):
                yield wire.State(wire.AF_INET, proto, wire.Tuple("10.0.1.100", "10.0.1.1", 40000, 8080),
                                 wire.Tuple("10.0.2.100", "10.0.2.1", 9000, 20001), status=status,
                                 timeout=0 if mark else 77, mark=mark, zone=zone, tcp_state=tcp_state, wscale=(7, 5),
                                 tcp_flags=(0x23, 0x01)).pack()


def test_fast_ipv4_requests_equal_the_general_encoder():
    for record in _records():
        for create in (True, False):
            for liberal in (True, False):
                fields = wire.STATE.unpack(record)
                assert conntrack._entry_request4(record, 9, create, liberal) == \
                    conntrack._entry_request_generic(fields, 9, create, liberal)


def test_fast_tuple_parser_equals_the_general_one():
    for record in _records():
        message = conntrack.entry_request(record, 1, create=True)
        top = conntrack._attrs(message, 20, len(message))
        for kind in (conntrack.CTA_TUPLE_ORIG, conntrack.CTA_TUPLE_REPLY):
            assert conntrack._tuple(message, 2, top[kind]) == conntrack._tuple_generic(message, 2, top[kind])


def _messages():
    yield CAPTURED_NEW
    for record in _records():
        for create in (True, False):
            yield conntrack.entry_request(record, 1, create=create)
    state = wire.State(wire.AF_INET6, 6, wire.Tuple("2001:db8::1", "2001:db8::2", 1000, 80),
                       wire.Tuple("2001:db8::2", "2001:db8::1", 80, 1000), status=0xE, timeout=9, mark=1)
    yield conntrack.entry_request(state.pack(), 1, create=True)


def test_learned_layouts_parse_like_the_general_parser():
    conntrack._LAYOUTS.clear()
    for mask in (0, 0x1, 0x3):
        for message in _messages():
            general = conntrack.parse_message(message, 0, len(message), mask)
            for _ in range(3):  # the first learns the layout, the others use it
                parsed = [e for e in conntrack.parse_datagram(message, len(message), mask) if e != -2]
                assert parsed == ([general] if general else [])
    assert any(conntrack._LAYOUTS.values())  # the IPv4 ones were compiled


def test_a_message_that_differs_from_its_learned_layout_falls_back():
    conntrack._LAYOUTS.clear()
    list(conntrack.parse_datagram(CAPTURED_NEW, len(CAPTURED_NEW)))
    changed = bytearray(CAPTURED_NEW)
    # same length, type and flags, but the mark attribute (last) is now an unknown attribute type
    assert changed[-6:-4] == b"\x08\x00"
    changed[-6:-4] = b"\x09\x00"  # CTA_MARK (8) -> CTA_USE (9)
    fast = list(conntrack.parse_datagram(bytes(changed), len(changed)))
    assert fast == [conntrack.parse_message(bytes(changed), 0, len(changed))]
    assert fast[0].mark == 0


def test_datagram_with_several_messages_at_an_offset():
    conntrack._LAYOUTS.clear()
    buf = bytes(8) + CAPTURED_NEW * 3
    events = list(conntrack.parse_datagram(buf, len(CAPTURED_NEW) * 3, 0, -1, start=8))
    assert len(events) == 3 and events[0] == events[2] == conntrack.parse_message(CAPTURED_NEW, 0, len(CAPTURED_NEW))


def test_bulk_encoding_equals_one_request_at_a_time():
    v6 = wire.State(wire.AF_INET6, 6, wire.Tuple("2001:db8::1", "2001:db8::2", 1000, 80),
                    wire.Tuple("2001:db8::2", "2001:db8::1", 80, 1000), status=0xE, timeout=9, mark=1).pack()
    records = [r for r in _records()]
    # runs of one shape (several records each, different addresses), a v6 record between runs
    batch = []
    for i, record in enumerate(records):
        for n in range(conntrack._BULK_MIN + 2 if i % 2 else 3):  # bulk-encoded runs, and short ones
            batch.append((record[:4] + bytes([10, 1, n, i]) + record[8:], i % 3 == 0))
        if i % 7 == 0:
            batch.append((v6, False))
    for liberal in (False, True):
        table = object.__new__(conntrack.KernelTable)
        table.liberal = liberal
        base = 0x7FFFFFF0  # the sequence numbers wrap inside the batch
        chunks = table._encode(batch, base)
        assert sum(count for _, count, _ in chunks) == len(batch)
        assert any(count >= conntrack._BULK_MIN for _, count, _ in chunks)  # the bulk path ran
        assert all(len(blob) == count * size for blob, count, size in chunks)
        expected = b"".join(conntrack.entry_request(record, (base + i) & 0x7FFFFFFF, not known, liberal)
                            for i, (record, known) in enumerate(batch))
        assert b"".join(bytes(blob) for blob, _, _ in chunks) == expected


def _variant(i: int, mark: int = 6, message: bytes = CAPTURED_NEW) -> bytes:
    """The captured event of another connection (address and port), same layout."""
    message = message.replace(bytes.fromhex("0a000164"), bytes([10, 0, 1 + i // 250, i % 250]))
    message = message.replace(struct.pack("!H", 40000), struct.pack("!H", 1000 + i))
    return message[:-4] + struct.pack("!I", mark)


def _decode(messages: list[bytes], mask: int) -> list:
    slots = conntrack._Slots(64, 1024)
    for i, message in enumerate(messages):
        slots.put(i, message)
    items: list = []
    conntrack.EventDecoder(mask).batch(slots, len(messages), items)
    events = []
    for item in items:
        if isinstance(item, conntrack.Run):
            for i, pid in enumerate(memoryview(item.pids).cast("I")):
                record = item.records[i * 108:(i + 1) * 108]
                events.append(conntrack.Event(item.kind, pid, int.from_bytes(record[96:100], "big"), record))
        else:
            events.append(item)
    return items, events


def test_runs_decoded_in_columns_equal_the_general_parser():
    changed = bytearray(_variant(30))
    changed[-6:-4] = b"\x09\x00"  # same length, type and flags; CTA_MARK -> CTA_USE
    messages = ([_variant(i) for i in range(20)] + [bytes(changed)] + [_variant(i) for i in range(21, 40)]
                + [_variant(40, mark=0x100)] + [_variant(i) for i in range(41, 50)])
    for mask in (0, 0x3, 0x4):
        conntrack._LAYOUTS.clear()
        items, events = _decode(messages, mask)
        expected = [conntrack.parse_message(m, 0, len(m), mask) for m in messages]
        assert events == [e for e in expected if e]
        runs = [item.count for item in items if isinstance(item, conntrack.Run)]
        if mask != 0x4:  # 0x4: none is ours, all filtered out; else the odd ones cost halvings only
            assert sum(runs) >= 24, runs


def test_a_datagram_cut_short_is_seen_in_the_batch_flags():
    slots = conntrack._Slots(8, 1024)
    for i in range(8):
        slots.put(i, _variant(i), flags=conntrack.MSG_TRUNC if i == 5 else 0)
    assert slots.flags_clear(5) and not slots.flags_clear(6)


def _destroy(i: int) -> bytes:
    """A DESTROY event as the kernel writes it: CTA_PROTOINFO with the TCP state alone."""
    top = _attrs(_variant(i))
    info = conntrack._nest(conntrack.CTA_PROTOINFO, conntrack._nest(conntrack.CTA_PROTOINFO_TCP, conntrack._nla(1, b"\x07")))
    payload = b"".join(conntrack._nla(k | (conntrack.NLA_F_NESTED if k in (1, 2) else 0), top[k]) for k in (1, 2, 12, 3))
    payload += info + conntrack._nla(conntrack.CTA_MARK, top[conntrack.CTA_MARK])
    return conntrack._message(conntrack.IPCTNL_MSG_CT_DELETE, 0, 0, 2, payload)


def test_destroy_events_have_a_layout_too():
    conntrack._LAYOUTS.clear()
    message = _destroy(1)
    general = conntrack.parse_message(message, 0, len(message))
    assert general.kind == conntrack.KIND_DESTROY and wire.State.unpack(general.record).tcp_state == 7
    for _ in range(3):
        assert list(conntrack.parse_datagram(message, len(message))) == [general]
    assert conntrack._LAYOUTS[(len(message), message[4] | message[5] << 8, 0)] is not None
    messages = [_destroy(i) for i in range(30)]
    items, events = _decode(messages, 0x3)
    assert events == [conntrack.parse_message(m, 0, len(m)) for m in messages]
    assert isinstance(items[0], conntrack.Run) and items[0].count == 30


def test_a_batch_of_one_shape_is_one_bulk_run():
    """A whole batch of alike states (found with column checks, no shape per record) encodes as
    one run, byte for byte as one request at a time; a batch with one odd record is not one run."""
    records = list(_records())
    table = object.__new__(conntrack.KernelTable)
    for record in records:
        for known in (False, True):
            batch = [(record[:4] + bytes([10, 1, n, 7]) + record[8:], known) for n in range(20)]
            for liberal in (False, True):
                table.liberal = liberal
                expected = b"".join(conntrack.entry_request(r, 5 + i, not k, liberal) for i, (r, k) in enumerate(batch))
                chunks = table._encode(batch, 5)
                assert len(chunks) == 1 and bytes(chunks[0][0]) == expected
            shapes = {conntrack.request_shape(r, not known, False) for r, _ in batch}
            assert conntrack._one_shape(batch) == (None not in shapes)
            for odd in (record[:96] + bytes(4) + record[100:], record[:91] + bytes([record[91] ^ 0x30]) + record[92:],
                        record[:100] + bytes([0 if record[100] else 3]) + record[101:]):
                mixed = batch[:10] + [(odd, known)] + batch[10:]
                if conntrack.request_shape(odd, not known, False) != conntrack.request_shape(record, not known, False):
                    assert not conntrack._one_shape(mixed)
            assert not conntrack._one_shape(batch[:5] + [(batch[5][0], not known)] + batch[6:])
