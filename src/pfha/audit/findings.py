"""What ``pfha audit`` reports: a finding with a severity, the place, what is wrong and the fix.

Every check in the audit package returns :class:`Finding` values; this module only shapes them
(text for people, JSON for tools) and decides the exit status. It never runs a check.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable
from dataclasses import dataclass, field


class Severity(enum.IntEnum):
    """``error``: the system will misbehave (fails the audit); ``warning``: a weakness or
    a departure from the tutorial's hardening (fails with ``--strict``); ``info``: worth
    knowing, never fails."""

    INFO = 0
    WARNING = 1
    ERROR = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Place:
    """A file and line (line None: the file as a whole, or a missing file)."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Finding:
    """One problem: ``check`` is a stable id (``pair.advskew``, ``lint.rdr-shadowed``...)."""

    check: str
    severity: Severity
    place: Place | None
    message: str
    fix: str
    example: str | None = None  # a concrete packet (or scenario) that shows it
    related: tuple[Place, ...] = ()  # the other places involved (the shadowing rule...)
    nodes: tuple[str, ...] = ()  # the node(s) it was found on
    # Packets that show the finding, for the reference engine to replay (pfha.audit.proof),
    # and what the engine said about them ("confirmed", "not reproduced", or None: not run).
    probes: tuple = field(default=(), compare=False, repr=False)
    proof: str | None = None

    def key(self) -> tuple:
        return (self.check, self.place, self.message)

    def to_dict(self) -> dict:
        return {
            "check": self.check,
            "severity": str(self.severity),
            "file": self.place.file if self.place else None,
            "line": self.place.line if self.place else None,
            "message": self.message,
            "fix": self.fix,
            "example": self.example,
            "related": [{"file": p.file, "line": p.line} for p in self.related],
            "nodes": list(self.nodes),
            "proof": self.proof,
        }


@dataclass
class Report:
    """All findings of one audit run, merged across nodes and in a stable order."""

    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)  # what was looked at, for the summary

    def extend(self, findings: Iterable[Finding]) -> None:
        index = {f.key(): i for i, f in enumerate(self.findings)}
        for finding in findings:
            at = index.get(finding.key())
            if at is None and finding.nodes:
                # The same check at the same place on another node (with its own addresses in
                # the message) is the same mistake: one finding.
                at = next((i for i, f in enumerate(self.findings)
                           if (f.check, f.place) == (finding.check, finding.place)
                           and f.nodes and not set(f.nodes) & set(finding.nodes)), None)
            if at is None:
                index[finding.key()] = len(self.findings)
                self.findings.append(finding)
                continue
            old = self.findings[at]
            new_nodes = tuple(n for n in finding.nodes if n not in old.nodes)
            message, example = old.message, old.example
            if finding.message != old.message and new_nodes:
                # The same mistake seen on another node with its own addresses: keep the first
                # wording, and the other node's example beside the first.
                if finding.example and finding.example != old.example:
                    example = f"{old.example}\n    example ({', '.join(new_nodes)}): {finding.example}" \
                        if old.example else finding.example
            self.findings[at] = Finding(old.check, max(old.severity, finding.severity), old.place, message, old.fix,
                                        example, old.related, old.nodes + new_nodes, old.probes, old.proof)

    def sorted(self) -> list[Finding]:
        return sorted(self.findings, key=lambda f: (-f.severity, f.place.file if f.place else "",
                                                    (f.place.line or 0) if f.place else 0, f.check))

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity == severity)

    def exit_status(self, strict: bool = False) -> int:
        worst = max((f.severity for f in self.findings), default=Severity.INFO)
        if worst >= Severity.ERROR or (strict and worst >= Severity.WARNING):
            return 1
        return 0

    def to_json(self) -> str:
        return json.dumps({
            "findings": [f.to_dict() for f in self.sorted()],
            "summary": {str(s): self.count(s) for s in reversed(Severity)},
            "checked": self.checked,
        }, indent=2)

    def to_text(self) -> str:
        out = []
        for finding in self.sorted():
            where = f"{finding.place}: " if finding.place else ""
            nodes = f" ({', '.join(finding.nodes)})" if finding.nodes else ""
            out.append(f"{where}{finding.severity}: {finding.message} [{finding.check}]{nodes}")
            out.append(f"    fix: {finding.fix}")
            if finding.example:
                out.append(f"    example: {finding.example}")
            if finding.proof:
                out.append(f"    proof: {finding.proof}")
            for place in finding.related:
                out.append(f"    see: {place}")
        summary = ", ".join(f"{self.count(s)} {s}{'s' if self.count(s) != 1 else ''}" for s in reversed(Severity))
        out.append(f"pfha audit: {summary}" + (f" (checked: {', '.join(self.checked)})" if self.checked else ""))
        return "\n".join(out) + "\n"
