"""Replays the lint's example packets through the reference engine.

The lint computes each example packet from the rules with the conservative matcher in
:mod:`pfha.audit.match`. The reference engine (:mod:`pfha.engine`) is the project's one source
of truth for pf semantics, so every finding that carries :class:`Probe` values is replayed
through a fresh engine for the node's ruleset and interfaces: when the engine does what the
finding says, the finding is marked confirmed; when it does not, the finding is kept but
downgraded to ``info`` and says what the engine did instead, so a disagreement is visible
rather than silently failing the audit. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from pfha.audit.findings import Finding, Severity
from pfha.audit.match import Packet

NOW = 1000.0


@dataclass(frozen=True)
class Probe:
    """A packet at one hook and what the finding claims pf does with it there.

    ``line`` is the line of the filter rule that decides, ``not_line`` one that must not;
    ``nat_line`` the line of the translation rule that applies; ``src``/``dst`` the addresses
    after translation.
    """

    packet: Packet
    action: str | None = None
    line: int | None = None
    not_line: int | None = None
    nat_line: int | None = None
    src: str | None = None
    dst: str | None = None


def engine_available() -> bool:
    try:
        from pfha.engine.engine import Engine  # noqa: F401
    except ImportError:
        return False
    return True


def _engine_packet(packet: Packet):
    from pfha.engine import packet as ep

    src, dst = str(packet.src), str(packet.dst)
    if packet.proto == 6:
        return ep.tcp(src, packet.sport or 0, dst, packet.dport or 0, packet.flags if packet.flags is not None else "S")
    if packet.proto == 17:
        return ep.udp(src, packet.sport or 0, dst, packet.dport or 0)
    if packet.proto == 1:
        return ep.icmp(src, dst, packet.icmp_type or 0, packet.icmp_code or 0, ident=7)
    return ep.other(src, dst, packet.proto)


def _line(compiled) -> int | None:
    rule = getattr(compiled, "ast", None)
    origin = getattr(rule, "origin", None)
    return getattr(origin, "line", None)


def replay(ruleset, view, probes) -> tuple[bool, str]:
    """Run ``probes`` through one engine; (all as claimed?, what the engine did)."""
    from pfha.engine.engine import Engine
    from pfha.engine.packet import addr_to_text

    engine = Engine(ruleset, view, seed=1)
    said = []
    for probe in probes:
        decision = engine.process(_engine_packet(probe.packet), probe.packet.ifname, probe.packet.direction, NOW)
        deciding = _line(decision.rule)
        translated_by = _line(decision.translation.rule) if decision.translation is not None else None
        src = addr_to_text(decision.packet.af, decision.packet.src)
        dst = addr_to_text(decision.packet.af, decision.packet.dst)
        text = f"{probe.packet.direction} on {probe.packet.ifname}: "
        if decision.reason == "synproxy":
            text += f"answered by synproxy (line {deciding})"  # pf completes the handshake itself first
        else:
            text += decision.action + (f" by line {deciding}" if deciding is not None else " by the default rule")
        if translated_by is not None:
            text += f" after line {translated_by} made it {src} > {dst}"
        said.append(text)
        ok = ((probe.action is None or decision.action == probe.action)
              and (probe.line is None or deciding == probe.line)
              and (probe.not_line is None or deciding != probe.not_line)
              and (probe.nat_line is None or translated_by == probe.nat_line)
              and (probe.src is None or src == probe.src)
              and (probe.dst is None or dst == probe.dst))
        if not ok:
            return False, "; ".join(said)
    return True, "; ".join(said)


def prove(context, findings: list[Finding]) -> list[Finding]:
    """Each finding with probes, replayed on the reference engine (unchanged without one)."""
    if not engine_available():
        return findings
    out = []
    view = context.matcher.view
    for finding in findings:
        if not finding.probes:
            out.append(finding)
            continue
        try:
            agreed, said = replay(context.ruleset, view, finding.probes)
        except Exception as error:  # an engine limitation must not hide the finding
            out.append(replace(finding, proof=f"not replayed: the reference engine failed ({error})"))
            continue
        if agreed:
            out.append(replace(finding, proof=f"confirmed by the reference engine: {said}"))
        else:
            out.append(replace(finding, severity=Severity.INFO,
                               proof=f"NOT reproduced by the reference engine ({said}); left as information"))
    return out
