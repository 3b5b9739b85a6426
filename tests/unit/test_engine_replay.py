"""The replay loop and the fast paths it depends on: block-buffered pcap reading, the one-pass
IPv4 parser and the scrub fast case must give exactly what the general code gives."""

from __future__ import annotations

import io
import random

import pytest

from pfha.conf import InterfaceView, parse_text
from pfha.engine import Engine
from pfha.engine import packet as P
from pfha.engine.packet import Packet, _blank, _parse_transport
from pfha.engine.replay import replay
from pfha.pflog import pcap

VIEW = InterfaceView.from_specs(["xl0=203.0.113.2/24", "xl1=192.168.1.250/24"])
C, S = "198.51.100.7", "203.0.113.2"


def capture(frames: list[bytes], linktype: int = pcap.LINKTYPE_ETHERNET, start: float = 100.0) -> bytes:
    out = io.BytesIO()
    writer = pcap.PcapWriter(out, linktype)
    for i, frame in enumerate(frames):
        writer.write(start + i, frame)
    return out.getvalue()


def test_frames_cross_read_blocks_and_match_the_records(monkeypatch):
    rng = random.Random(5)
    frames = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))) for _ in range(400)]
    raw = capture(frames, pcap.LINKTYPE_RAW)
    monkeypatch.setattr(pcap, "READ_BLOCK", 97)  # records straddle every block boundary
    got = list(pcap.PcapReader(io.BytesIO(raw)))
    assert [r.data for r in got] == frames
    assert [r.timestamp for r in got] == [100.0 + i for i in range(400)]
    assert all(r.orig_len == len(r.data) and not r.truncated for r in got)
    with pytest.raises(pcap.PcapError, match="truncated record:"):
        list(pcap.PcapReader(io.BytesIO(raw[:-5])).frames())
    with pytest.raises(pcap.PcapError, match="truncated record header"):
        list(pcap.PcapReader(io.BytesIO(raw + b"\x00" * 7)).frames())
    assert list(pcap.PcapReader(io.BytesIO(raw[:24])).frames()) == []


def _general_v4(data: bytes, lenient: bool) -> Packet:
    """The general IPv4 parser's result, bypassing the one-pass fast case (for comparison)."""
    from pfha.engine.packet import _IP4

    vihl, tos, total, ip_id, frag, ttl, proto, _c, src, dst = _IP4.unpack_from(data)
    ihl = (vihl & 0x0F) * 4
    packet = _blank(4, src, dst, proto)
    packet.ttl, packet.tos, packet.ip_id = ttl, tos, ip_id
    if frag & 0x7FFF:
        packet.df = bool(frag & 0x4000)
        packet.frag_offset = (frag & 0x1FFF) * 8
        packet.more_frags = bool(frag & 0x2000)
    packet.wire_len = total or len(data)
    packet.truncated = total > len(data)
    end = total if (total and total <= len(data)) else len(data)
    _parse_transport(packet, data, ihl, end, lenient)
    return packet


@pytest.mark.parametrize("seed", range(6))
def test_one_pass_parser_equals_the_general_parser(seed):
    rng = random.Random(seed)
    for _ in range(200):
        kind = rng.randrange(3)
        kw = {"ttl": rng.randrange(1, 256), "tos": rng.randrange(256), "ip_id": rng.randrange(65536),
              "df": rng.random() < 0.5}
        if kind == 0:
            p = P.tcp(C, rng.randrange(65536), S, rng.randrange(65536), rng.randrange(256), seq=rng.getrandbits(32),
                      ack=rng.getrandbits(32), win=rng.randrange(65536), payload=b"x" * rng.randrange(50),
                      mss=rng.choice([None, 1460]), wscale=rng.choice([None, 7]), **kw)
        else:
            p = P.udp(C, rng.randrange(65536), S, rng.randrange(65536), payload=b"y" * rng.randrange(50), **kw)
        data = p.to_bytes()
        if rng.random() < 0.3:
            data += b"\x00" * rng.randrange(1, 20)  # Ethernet padding after the datagram
        fast = Packet.parse(data)
        slow = _general_v4(data, False)
        assert {n: getattr(fast, n) for n in Packet.__slots__} == {n: getattr(slow, n) for n in Packet.__slots__}


def test_parser_falls_back_for_truncated_and_odd_headers():
    data = P.tcp(C, 1, S, 2, "S", payload=b"z" * 30).to_bytes()
    with pytest.raises(P.PacketError):
        Packet.parse(data[:-10])  # shorter than its total length
    truncated = Packet.parse(data[:-10], lenient=True)
    assert truncated.truncated and truncated.wire_len == len(data) and truncated.sport == 1
    evil = bytearray(data)
    evil[6] |= 0x80  # the reserved ("evil") bit: still whole, DF unset
    assert Packet.parse(bytes(evil)).df is False and Packet.parse(bytes(evil)).frag_offset == 0


CONF = """scrub in
block log all
pass in on xl0 proto tcp to port 80 keep state
pass in on xl0 proto udp to port 53 keep state
pass out on xl1
"""


def test_replay_counts_forwarding_logs_and_directions():
    engine = Engine(parse_text(CONF, "r.conf", VIEW), VIEW)
    packets = [P.tcp(C, 1000, S, 80, "S", seq=1), P.tcp(C, 1000, S, 80, "A", seq=2, ack=1),
               P.tcp(C, 1001, S, 81, "S"), P.udp(C, 5, S, 53), P.tcp(C, 1002, S, 80, "SF")]
    frames = [pcap.ethernet_frame(p.to_bytes()) for p in packets] + [b"\x02" * 12 + b"\x08\x06arp"]
    seen, logs = [], []
    reader = pcap.PcapReader(io.BytesIO(capture(frames)))
    totals = replay(engine, reader.linktype, reader.frames(), "xl0", "xl1",
                    lambda i, now, ds: seen.append((i, now, [(d.ifname, d.direction, d.action) for d in ds])),
                    logs.append)
    assert totals.as_dict() == {"packets": 6, "passed": 4, "blocked": 1, "not_ip": 1, "unparsable": 0, "logged": 1}
    assert seen[0] == (1, 100.0, [("xl0", "in", "pass"), ("xl1", "out", "pass")])
    assert seen[2] == (3, 102.0, [("xl0", "in", "block")])  # not forwarded
    assert seen[4][2] == [("xl0", "in", "pass"), ("xl1", "out", "pass")]  # SYN+FIN: scrub strips the FIN
    assert [i for i, _t, _d in seen] == [1, 2, 3, 4, 5]  # the ARP frame (6) is counted, not evaluated
    assert len(logs) == 1 and logs[0].header.rulenr == 0
    # a capture of one interface in both directions: replies evaluated out on it, not forwarded
    engine = Engine(parse_text(CONF, "r.conf", VIEW), VIEW)
    reply = P.tcp(S, 80, C, 1000, "SA", seq=50, ack=2)
    frames = [pcap.ethernet_frame(p.to_bytes()) for p in (packets[0], reply)]
    reader = pcap.PcapReader(io.BytesIO(capture(frames)))
    decisions = []
    totals = replay(engine, reader.linktype, reader.frames(), "xl0", "xl1", lambda i, n, ds: decisions.append(ds),
                    None, lambda _frame, p: "out" if p.src_text() == S else "in")
    assert totals.passed == 2 and len(decisions[1]) == 1
    assert (decisions[1][0].direction, decisions[1][0].state) == ("out", "matched")


def test_scrub_fast_case_counts_like_the_general_case():
    """The plain ``scrub in`` shortcut must charge the same counters and drop the same packets."""
    conf = "scrub in\nscrub out on xl1 max-mss 1200\npass all\n"
    packets = [(P.tcp(C, 1, S, 2, flags), d, i) for flags in range(64) for d in ("in", "out") for i in ("xl0", "xl1")]
    packets += [(P.udp(C, 1, S, 2), "in", "xl0"), (P.tcp(C, 1, S, 2, "S", mss=1460), "out", "xl1")]
    ruleset = parse_text(conf, "s.conf", VIEW)
    fast, slow = Engine(ruleset, VIEW), Engine(ruleset, VIEW, indexed=False)
    for packet, direction, ifname in packets:
        a = fast.process(packet.copy(), ifname, direction, 0.0)
        b = slow.process(packet.copy(), ifname, direction, 0.0)
        assert (a.action, a.reason, a.rule_number, a.packet.to_bytes()) == (
            b.action, b.reason, b.rule_number, b.packet.to_bytes()), (packet, direction, ifname)
    assert [r.counters.packets for r in fast.scrub] == [r.counters.packets for r in slow.scrub]
