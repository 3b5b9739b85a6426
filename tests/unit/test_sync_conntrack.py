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
    for status in (0xE, 0x19E, 0x1AE, 0x1BE):  # plain, SNAT, DNAT, both
        for proto, tcp_state in ((6, 3), (17, 0)):
            for mark, zone in ((0, 0), (0x20203, 7)):
                yield wire.State(wire.AF_INET, proto, wire.Tuple("10.0.1.100", "10.0.1.1", 40000, 8080),
                                 wire.Tuple("10.0.2.100", "10.0.2.1", 9000, 20001), status=status, timeout=77,
                                 mark=mark, zone=zone, tcp_state=tcp_state, wscale=(7, 5),
                                 tcp_flags=(0x23, 0x01)).pack()


def test_fast_ipv4_requests_equal_the_general_encoder():
    for record in _records():
        for create in (True, False):
            for liberal in (True, False):
                fields = wire.STATE.unpack(record)
                assert conntrack._entry_request4(fields, 9, create, liberal) == \
                    conntrack._entry_request_generic(fields, 9, create, liberal)


def test_fast_tuple_parser_equals_the_general_one():
    for record in _records():
        message = conntrack.entry_request(record, 1, create=True)
        top = conntrack._attrs(message, 20, len(message))
        for kind in (conntrack.CTA_TUPLE_ORIG, conntrack.CTA_TUPLE_REPLY):
            assert conntrack._tuple(message, 2, top[kind]) == conntrack._tuple_generic(message, 2, top[kind])
