"""NFLOG messages and the log prefix contract, decoded from bytes captured on kernel 6.x."""

from __future__ import annotations

import io
import struct

import pytest

from pfha.pflog import nflog
from pfha.pflog.format import NO_SUBRULE, Action, Direction, PflogHeader, split
from pfha.pflog.linux import Pflogd
from pfha.pflog.pcap import PcapReader, PcapWriter
from pfha.pflog.prefix import LogPrefix, PrefixError

# One NFULNL_MSG_PACKET datagram as the kernel sent it for `iifname "xl0" ip protocol udp
# log prefix "pf:4:-1:1:1:0:0:" group 0 drop` (UDP 10.9.0.2:4000 -> 10.9.0.1:5353, "hi").
CAPTURED = bytes.fromhex(
    "b000000000040000000000000000000002000000080001000800000015000a0070663a343a2d313a313a313a303a"
    "303a0000000008000400000000031000080000060000a61c13aa61fb000006000f000001000006001100000e0000"
    "12001000ae626ad97ab6a61c13aa61fb0800000014000300000000006b0dff3400000000000b03ad08000c000000"
    "0000220009004500001e9e154000401188a50a0900020a0900010fa014e9000a143068690000"
)


def test_decode_captured_packet():
    (message,) = list(nflog.messages(CAPTURED))
    packet = nflog.decode_packet(message)
    assert packet is not None
    assert packet.family == nflog.AF_INET
    assert packet.prefix == "pf:4:-1:1:1:0:0:"
    assert packet.indev == 3 and packet.outdev == 0
    assert packet.seq == 0
    assert packet.payload[:1] == b"\x45" and packet.payload[-2:] == b"hi"
    assert packet.payload[12:16] == bytes([10, 9, 0, 2])


def test_config_messages_layout():
    raw = nflog.mode_request(group=3, seq=7, copy_range=44)
    length, kind, flags, seq, _pid = nflog.NLMSG_HDR.unpack_from(raw)
    assert length == len(raw) and kind == (4 << 8) | 1 and flags == nflog.NLM_F_REQUEST | nflog.NLM_F_ACK and seq == 7
    assert raw[16:20] == b"\0\0\0\x03"  # nfgenmsg: AF_UNSPEC, version 0, res_id = htons(3)
    attrs = nflog.attributes(raw[20:])
    assert attrs[nflog.NFULA_CFG_MODE][:5] == struct.pack("!IB", 44, nflog.NFULNL_COPY_PACKET)
    assert attrs[nflog.NFULA_CFG_QTHRESH] == b"\0\0\0\x01"
    assert attrs[nflog.NFULA_CFG_FLAGS][:2] == b"\0\x01"
    bind = nflog.bind_request(0, 1)
    assert nflog.attributes(bind[20:])[nflog.NFULA_CFG_CMD][:1] == b"\x01"


def test_error_code_of_ack_and_refusal():
    ack = nflog.NLMSG_HDR.pack(36, nflog.NLMSG_ERROR, 0, 5, 0) + struct.pack("=i", 0) + b"\0" * 16
    busy = nflog.NLMSG_HDR.pack(36, nflog.NLMSG_ERROR, 0, 6, 0) + struct.pack("=i", -16) + b"\0" * 16
    got = list(nflog.messages(ack + busy))
    assert [nflog.error_code(m) for m in got] == [0, -16] and got[1].seq == 6
    assert nflog.decode_packet(got[0]) is None


def test_prefix_round_trip_and_limits():
    prefix = LogPrefix(rulenr=12, action=Action.PASS, direction=Direction.OUT, ridentifier=77, ruleset="")
    assert prefix.encode() == "pf:12:-1:0:2:0:77:"
    assert LogPrefix.decode(prefix.encode()) == prefix
    anchored = LogPrefix(rulenr=3, action=1, direction=1, subrulenr=2, ruleset="a:b")
    assert LogPrefix.decode(anchored.encode()) == anchored
    with pytest.raises(PrefixError):
        LogPrefix.decode("nft-trace: something")
    with pytest.raises(PrefixError):
        LogPrefix.decode("pf:x:1:1:1:1:1:")
    with pytest.raises(PrefixError):
        LogPrefix(rulenr=1, action=1, direction=1, ruleset="x" * 200).encode()
    assert prefix.header("xl0", 2) == PflogHeader(Action.PASS, 0, "xl0", Direction.OUT, 12, NO_SUBRULE, ridentifier=77)


class _Daemon(Pflogd):
    """Pflogd writing to memory: the record logic without a socket or a file."""

    def __init__(self):
        super().__init__("/nonexistent", snaplen=200, clock=lambda: 1234.5, ifname={3: "xl0"}.get)
        self.buffer = io.BytesIO()
        self._writer = PcapWriter(self.buffer, 117, 200)


def test_pflogd_records_and_counts_sequence_gaps():
    daemon = _Daemon()
    (message,) = list(nflog.messages(CAPTURED))
    packet = nflog.decode_packet(message)
    assert daemon.handle(packet)
    later = nflog.LoggedPacket(packet.family, packet.prefix, packet.payload, packet.indev, 0, seq=5)
    assert daemon.handle(later)
    assert not daemon.handle(nflog.LoggedPacket(2, "other program", b"\x45", seq=6))
    assert daemon.stats.received == 3 and daemon.stats.written == 2 and daemon.stats.dropped == 4 and daemon.stats.ignored == 1
    daemon.buffer.seek(0)
    records = list(PcapReader(daemon.buffer))
    header, ip = split(records[0].data)
    assert header.rulenr == 4 and header.action == Action.DROP and header.direction == Direction.IN
    assert header.ifname == "xl0"
    assert ip[:20] == packet.payload[:20] and ip[-2:] == b"hi" and records[0].timestamp == 1234.5
