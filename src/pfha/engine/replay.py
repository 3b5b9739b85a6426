"""The replay loop: every frame of a capture through the engine, as ``pfha replay`` does it.

Kept apart from the CLI so that the command and the benchmark run the very same per-packet
path (find the IP packet in the frame, parse it, pf_test in, pf_test out when forwarded, count,
hand logged packets on), and so that the loop can be tested without files. The capture's
timestamps are the clock; states are purged once per ``set timeout interval`` of capture time,
as pf's purge thread does, not on every packet.

Pure: frames come in as (timestamp, bytes, original length) tuples, results go out through
callbacks; it never opens files and never reads a clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from pfha.engine.engine import Decision, Engine, LogRecord
from pfha.engine.packet import Packet, PacketError
from pfha.pflog.pcap import ip_packet

#: Called for each IP packet with (index, time, decisions): one decision, or two when forwarded.
OnPacket = Callable[[int, float, list], None]
#: Called for each pflog record the engine produced.
OnLog = Callable[[LogRecord], None]


@dataclass
class ReplayTotals:
    """What the summary line of ``pfha replay`` counts."""

    packets: int = 0
    passed: int = 0
    blocked: int = 0
    not_ip: int = 0
    unparsable: int = 0
    logged: int = 0

    def as_dict(self) -> dict:
        return {"packets": self.packets, "passed": self.passed, "blocked": self.blocked,
                "not_ip": self.not_ip, "unparsable": self.unparsable, "logged": self.logged}


def replay(engine: Engine, linktype: int, frames: Iterable[tuple], in_if: str, out_if: Optional[str] = None,
           on_packet: Optional[OnPacket] = None, on_log: Optional[OnLog] = None,
           direction_of: Optional[Callable[[bytes, Packet], str]] = None) -> ReplayTotals:
    """Evaluate each frame ``in on in_if`` and, when it passes and ``out_if`` is given, ``out on
    out_if`` (as forwarded). A synproxy-consumed packet is not forwarded.

    ``direction_of`` is for a capture taken on ``in_if`` that holds both directions: given the
    frame and its parsed packet it says which way the packet crossed (``"in"`` or ``"out"``); an
    outbound packet is evaluated ``out on in_if`` only. (The frame, because only the link
    header knows: a cooked capture's packet type, an Ethernet source address.)"""
    totals = ReplayTotals()
    interval = engine.timeouts.get("interval", 10)
    last = 0.0
    process = engine.process
    parse = Packet.parse
    passed = logged = 0
    index = 0
    for index, (now, frame, _orig_len) in enumerate(frames, 1):
        data = ip_packet(linktype, frame)
        if data is None:
            totals.not_ip += 1
            continue
        try:
            packet = parse(data, True)  # lenient: a truncated capture still parses
        except PacketError:
            totals.unparsable += 1
            continue
        if now - last >= interval:
            engine.purge(now)
            last = now
        direction = "in" if direction_of is None else direction_of(frame, packet)
        decision: Decision = process(packet, in_if, direction, now)
        if out_if is not None and direction == "in" and decision.action == "pass" and decision.reason != "synproxy":
            first = decision
            decision = process(first.packet, out_if, "out", now)
            if first.logs:
                logged += len(first.logs)
                if on_log is not None:
                    for log in first.logs:
                        on_log(log)
            if on_packet is not None:
                on_packet(index, now, [first, decision])
        elif on_packet is not None:
            on_packet(index, now, [decision])
        if decision.action == "pass":
            passed += 1
        if decision.logs:
            logged += len(decision.logs)
            if on_log is not None:
                for log in decision.logs:
                    on_log(log)
    totals.packets = index
    totals.passed = passed
    totals.blocked = index - totals.not_ip - totals.unparsable - passed
    totals.logged = logged
    return totals


__all__ = ["ReplayTotals", "replay"]
