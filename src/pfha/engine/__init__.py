"""The reference engine: pf's semantics in pure Python (the oracle the kernel is tested against).

Public API::

    from pfha.engine import Engine, Packet
    engine = Engine(ruleset, interfaces, seed=0)
    decision = engine.process(packet, "xl0", "in", now=0.0)

See docs/engine.md. Nothing in this package touches the OS or reads a clock.
"""

from pfha.engine.engine import Decision, Emitted, Engine, LogRecord
from pfha.engine.packet import Packet, PacketError
from pfha.engine.state import State, StateTable

__all__ = ["Decision", "Emitted", "Engine", "LogRecord", "Packet", "PacketError", "State", "StateTable"]
