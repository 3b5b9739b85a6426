"""FreeBSD ``struct pfloghdr`` (sys/net/if_pflog.h): encode and decode, with pf's constants.

The header precedes every packet in a DLT_PFLOG (117) capture; tcpdump reads it to print
``rule 3/0(match): pass out on xl0: ...``. Layout (pf-semantics.md §5.1): 69 meaningful bytes
padded to 72; rule numbers and ridentifier in network order, uid/pid fields in host order
(little endian on amd64, which is what FreeBSD writes on the platforms we imitate).

Pure: never touches the OS. Interface names are given, not looked up.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

DLT_PFLOG = 117
PFLOG_REAL_HDRLEN = 69  # offsetof(struct pfloghdr, pad2)
PFLOG_HDRLEN = 72  # PFLOG_ALIGN(PFLOG_REAL_HDRLEN)
IFNAMSIZ = 16
PF_RULESET_NAME_SIZE = 16
UID_MAX = 0xFFFFFFFF
NO_PID = 100000
NO_SUBRULE = 0xFFFFFFFF  # subrulenr when the rule is not inside an anchor

# Address families as FreeBSD numbers them; tcpdump also accepts OpenBSD's 24 and Darwin's 30.
AF_INET = 2
AF_INET6 = 28
AF_INET6_ALIASES = frozenset({24, 28, 30})


class Action(IntEnum):
    """``PF_PASS`` ... (pfvar.h); the numbers are what the header carries."""

    PASS = 0
    DROP = 1
    SCRUB = 2
    NOSCRUB = 3
    NAT = 4
    NONAT = 5
    BINAT = 6
    NOBINAT = 7
    RDR = 8
    NORDR = 9
    SYNPROXY_DROP = 10
    DEFER = 11


class Reason(IntEnum):
    """``PFRES_*`` (pfvar.h)."""

    MATCH = 0
    BADOFF = 1
    FRAG = 2
    SHORT = 3
    NORM = 4
    MEMORY = 5
    TS = 6
    CONGEST = 7
    IPOPTIONS = 8
    PROTCKSUM = 9
    BADSTATE = 10
    STATEINS = 11
    MAXSTATES = 12
    SRCLIMIT = 13
    SYNPROXY = 14
    MAPFAILED = 15


class Direction(IntEnum):
    """``PF_INOUT``, ``PF_IN``, ``PF_OUT``."""

    INOUT = 0
    IN = 1
    OUT = 2


# The words tcpdump's print-pflog.c prints (pfloghdr action/reason/dir tables).
ACTION_NAMES: dict[int, str] = {
    Action.PASS: "pass",
    Action.DROP: "block",
    Action.SCRUB: "scrub",
    Action.NOSCRUB: "noscrub",
    Action.NAT: "nat",
    Action.NONAT: "nonat",
    Action.BINAT: "binat",
    Action.NOBINAT: "nobinat",
    Action.RDR: "rdr",
    Action.NORDR: "nordr",
    Action.SYNPROXY_DROP: "synproxy-drop",
    Action.DEFER: "defer",
}
REASON_NAMES: dict[int, str] = {
    Reason.MATCH: "match",
    Reason.BADOFF: "bad-offset",
    Reason.FRAG: "fragment",
    Reason.SHORT: "short",
    Reason.NORM: "normalize",
    Reason.MEMORY: "memory",
    Reason.TS: "bad-timestamp",
    Reason.CONGEST: "congestion",
    Reason.IPOPTIONS: "ip-option",
    Reason.PROTCKSUM: "proto-cksum",
    Reason.BADSTATE: "state-mismatch",
    Reason.STATEINS: "state-insert",
    Reason.MAXSTATES: "state-limit",
    Reason.SRCLIMIT: "src-limit",
    Reason.SYNPROXY: "synproxy",
    Reason.MAPFAILED: "map-failed",
}
DIRECTION_NAMES: dict[int, str] = {Direction.INOUT: "in/out", Direction.IN: "in", Direction.OUT: "out"}

_HEAD = struct.Struct("!BBBB16s16sII")  # length, af, action, reason, ifname, ruleset, rulenr, subrulenr
_IDS = struct.Struct("<IIII")  # uid, pid, rule_uid, rule_pid: host order (little endian)
_TAIL = struct.Struct("!B3xIB3x")  # dir, pad[3], ridentifier, reserve, pad2[3]
assert _HEAD.size + _IDS.size + _TAIL.size == PFLOG_HDRLEN


class PflogError(ValueError):
    """A pflog header that cannot be decoded (too short, bad length field)."""


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def _fixed(text: str, size: int, what: str) -> bytes:
    raw = text.encode("ascii")
    if len(raw) >= size:
        raise PflogError(f"{what} {text!r} longer than {size - 1} bytes")
    return raw.ljust(size, b"\0")


@dataclass(frozen=True, slots=True)
class PflogHeader:
    """One ``struct pfloghdr``: what pf decided about the packet that follows it."""

    action: int
    reason: int
    ifname: str
    direction: int
    rulenr: int
    subrulenr: int = NO_SUBRULE
    af: int = AF_INET
    ruleset: str = ""
    uid: int = UID_MAX
    pid: int = NO_PID
    rule_uid: int = 0
    rule_pid: int = 0
    ridentifier: int = 0

    def encode(self) -> bytes:
        head = _HEAD.pack(
            PFLOG_REAL_HDRLEN,
            self.af,
            self.action,
            self.reason,
            _fixed(self.ifname, IFNAMSIZ, "interface name"),
            _fixed(self.ruleset, PF_RULESET_NAME_SIZE, "ruleset name"),
            self.rulenr & 0xFFFFFFFF,
            self.subrulenr & 0xFFFFFFFF,
        )
        ids = _IDS.pack(self.uid & 0xFFFFFFFF, self.pid & 0xFFFFFFFF, self.rule_uid & 0xFFFFFFFF, self.rule_pid & 0xFFFFFFFF)
        return head + ids + _TAIL.pack(self.direction, self.ridentifier & 0xFFFFFFFF, 0)

    @classmethod
    def decode(cls, data: bytes) -> PflogHeader:
        """The header at the start of ``data`` (use :func:`split` to get the packet too)."""
        if len(data) < PFLOG_HDRLEN:
            raise PflogError(f"pflog header needs {PFLOG_HDRLEN} bytes, got {len(data)}")
        length, af, action, reason, ifname, ruleset, rulenr, subrulenr = _HEAD.unpack_from(data, 0)
        if length < 45:  # tcpdump's minimum (print-pflog.c)
            raise PflogError(f"pflog header length field {length} < 45")
        uid, pid, rule_uid, rule_pid = _IDS.unpack_from(data, _HEAD.size)
        direction, ridentifier, _reserve = _TAIL.unpack_from(data, _HEAD.size + _IDS.size)
        return cls(
            action=action,
            reason=reason,
            ifname=_cstr(ifname),
            direction=direction,
            rulenr=rulenr,
            subrulenr=subrulenr,
            af=af,
            ruleset=_cstr(ruleset),
            uid=uid,
            pid=pid,
            rule_uid=rule_uid,
            rule_pid=rule_pid,
            ridentifier=ridentifier,
        )

    @property
    def is_inet6(self) -> bool:
        return self.af in AF_INET6_ALIASES

    def describe(self) -> str:
        """The header as tcpdump -e prints it: ``rule 3/0(match): pass out on xl0``."""
        if self.subrulenr == NO_SUBRULE:
            rule = f"rule {self.rulenr}/"
        else:
            rule = f"rule {self.rulenr}.{self.ruleset}.{self.subrulenr}/"
        name = REASON_NAMES.get(self.reason)
        reason = f"{self.reason}({name})" if name else f"unkn({self.reason})"
        action = ACTION_NAMES.get(self.action, f"unkn({self.action})")
        direction = DIRECTION_NAMES.get(self.direction, f"unkn({self.direction})")
        return f"{rule}{reason}: {action} {direction} on {self.ifname}"


def split(frame: bytes) -> tuple[PflogHeader, bytes]:
    """A DLT_PFLOG frame as (header, IP packet); the packet starts at roundup(length, 4)."""
    header = PflogHeader.decode(frame)
    start = (frame[0] + 3) & ~3
    return header, frame[start:]


def frame(header: PflogHeader, packet: bytes) -> bytes:
    """The DLT_PFLOG frame for ``packet``: header then the IP packet."""
    return header.encode() + packet
