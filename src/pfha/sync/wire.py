"""pfha sync on the wire: the datagram, its sections and records, and its authentication.

Our own versioned format, laid out like OpenBSD's pfsync v6 (pfsync.md §1.2, §5.2): one header,
then sections of ``(action u8, record length in 32-bit words u8, count u16)`` followed by
``count`` fixed-size records, so a receiver skips sections it does not know. Unlike pfsync every
datagram ends in a 128-bit HMAC-SHA256 tag over header and body (pfsync.md §5.3), keyed by a
shared secret chosen through ``key_id`` (so keys can be rotated).

This module is pure: bytes in, values out. It never opens a socket, reads a clock or draws a
random number; sequence numbers, epochs and nonces come from the caller (``peer.py``).

State records are kept as their packed bytes by the protocol core (that is what is stored,
retransmitted and answered in a bulk update); :class:`State` is the decoded view the kernel
adapter builds and reads.
"""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum

IPPROTO_PFSYNC = 240  # IANA "pfsync"; pf.conf's `proto pfsync`
PFSYNC_GROUP = "224.0.0.240"  # pfsync(4)'s default multicast group
PFSYNC_TTL = 255  # sent with TTL 255 and checked on receipt, as pfsync does

MAGIC = b"PFHS"
VERSION = 1
MAC_LEN = 16  # HMAC-SHA256 truncated to 128 bits
MAX_DATAGRAM = 1500 - 20  # IP payload on a 1500-byte MTU

# magic, version, key id, flags, reserved, node (creator) id, epoch, seq, reliable seq
HEADER = struct.Struct("!4sBBBBIQQI")
SECTION = struct.Struct("!BBH")

FLAG_RELIABLE = 0x01  # carries a reliable sequence number (rseq) to acknowledge


class Action(IntEnum):
    """Section types; the numbering is ours (pfsync's names, not its numbers)."""

    INS = 1  # a new state (full record)
    UPD = 2  # a changed state (full record)
    DEL = 3  # a state is gone (key, creator, version)
    CLR = 4  # every state of one creator is gone
    BULK_REQ = 5  # "send me your whole table" (nonce)
    BUS = 6  # bulk update status: START or END, echoing the request's nonce
    ACK = 7  # cumulative acknowledgement of the peer's reliable stream
    NACK = 8  # "I am missing rseq first..last" of the peer's stream
    ALIVE = 9  # keepalive: the sender's last reliable seq (finds tail loss)
    # INS/UPD whose records carry conntrack's sequence adjustment after the STATE fields
    # (STATE_SEQADJ): only entries with IPS_SEQ_ADJUST (synproxied connections) use them, so
    # every other record keeps its size. :func:`open_datagram` reports them as INS/UPD sections
    # (a record's length tells the two kinds apart); a receiver that predates them skips them.
    INS_SEQADJ = 10
    UPD_SEQADJ = 11


class BulkStatus(IntEnum):
    START = 1
    END = 2


# --- records --------------------------------------------------------------------------------
# key: family, proto, zone, original src, dst (16 bytes each, IPv4 in the first 4), sport, dport
KEY = struct.Struct("!BBH16s16sHH")
KEY_LEN = KEY.size  # 40
# a full state: key, creator, version, reply tuple, status, timeout, mark, TCP protoinfo
STATE = struct.Struct("!BBH16s16sHH" "IQ" "16s16sHH" "III" "BBBBB3x")
STATE_CREATOR = struct.Struct("!IQ")  # at offset KEY_LEN in STATE and DEL records
# conntrack's seqadj (nf_ct_seqadj), original then reply direction: correction position, offset
# before, offset after (the offsets are s32 in the kernel: carried as their u32 bits)
SEQADJ = struct.Struct("!IIIIII")
STATE_SEQADJ_SIZE = STATE.size + SEQADJ.size  # a STATE record followed by SEQADJ
DELETE = struct.Struct("!BBH16s16sHH" "IQ")
CLEAR = struct.Struct("!I")
BULK_REQ = struct.Struct("!Q")
BUS = struct.Struct("!B3xQ")
ACK = struct.Struct("!QI")  # epoch of the acknowledged stream, highest in-order rseq
NACK = struct.Struct("!QII")  # epoch, first, last missing rseq
ALIVE = struct.Struct("!II")  # last rseq sent, flags

RECORD_SIZES: dict[int, int] = {
    Action.INS: STATE.size,
    Action.UPD: STATE.size,
    Action.INS_SEQADJ: STATE_SEQADJ_SIZE,
    Action.UPD_SEQADJ: STATE_SEQADJ_SIZE,
    Action.DEL: DELETE.size,
    Action.CLR: CLEAR.size,
    Action.BULK_REQ: BULK_REQ.size,
    Action.BUS: BUS.size,
    Action.ACK: ACK.size,
    Action.NACK: NACK.size,
    Action.ALIVE: ALIVE.size,
}
for _size in RECORD_SIZES.values():
    assert _size % 4 == 0, "records are whole 32-bit words"
_WITH_SEQADJ = {int(Action.INS): int(Action.INS_SEQADJ), int(Action.UPD): int(Action.UPD_SEQADJ)}
_STATE_ACTION = {int(Action.INS_SEQADJ): int(Action.INS), int(Action.UPD_SEQADJ): int(Action.UPD)}

AF_INET, AF_INET6 = socket.AF_INET, socket.AF_INET6
IPPROTO_TCP = socket.IPPROTO_TCP


def _addr(family: int, text: str) -> bytes:
    return socket.inet_pton(family, text).ljust(16, b"\0")


def _text(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw[:4] if family == AF_INET else raw)


@dataclass(frozen=True, slots=True)
class Tuple:
    """One direction of a connection. For ICMP, ``sport`` is the id and ``dport`` type<<8|code."""

    src: str
    dst: str
    sport: int
    dport: int


@dataclass(frozen=True, slots=True)
class State:
    """One conntrack entry as synced: what the kernel needs to accept mid-stream packets.

    ``reply`` is the reply tuple as the kernel reports it, i.e. *with* NAT applied; the
    adapter derives the NAT binding from it and the status bits (pfsync.md §3.3).
    ``tcp_flags`` are the per-direction conntrack TCP flag bytes (window scale, SACK...).
    """

    family: int
    proto: int
    orig: Tuple
    reply: Tuple
    status: int = 0
    timeout: int = 0
    mark: int = 0
    zone: int = 0
    tcp_state: int = 0
    wscale: tuple[int, int] = (0, 0)
    tcp_flags: tuple[int, int] = (0, 0)
    creator: int = 0
    version: int = 0
    # (orig correction pos, orig offset before, orig offset after, the same for reply) or None
    seqadj: tuple[int, int, int, int, int, int] | None = None

    def pack(self, creator: int | None = None, version: int | None = None) -> bytes:
        f, o, r = self.family, self.orig, self.reply
        tail = b"" if self.seqadj is None else SEQADJ.pack(*(v & 0xFFFFFFFF for v in self.seqadj))
        return STATE.pack(
            f, self.proto, self.zone, _addr(f, o.src), _addr(f, o.dst), o.sport, o.dport,
            self.creator if creator is None else creator,
            self.version if version is None else version,
            _addr(f, r.src), _addr(f, r.dst), r.sport, r.dport,
            self.status, self.timeout, self.mark,
            self.tcp_state, self.wscale[0], self.wscale[1], self.tcp_flags[0], self.tcp_flags[1],
        ) + tail

    @classmethod
    def unpack(cls, record: bytes) -> State:
        if len(record) not in (STATE.size, STATE_SEQADJ_SIZE):
            raise ValueError(f"a state record of {len(record)} bytes")
        (f, proto, zone, osrc, odst, osp, odp, creator, version, rsrc, rdst, rsp, rdp,
         status, timeout, mark, tstate, wso, wsr, tfo, tfr) = STATE.unpack_from(record)
        if f not in (AF_INET, AF_INET6):
            raise ValueError(f"address family {f}")
        return cls(f, proto, Tuple(_text(f, osrc), _text(f, odst), osp, odp),
                   Tuple(_text(f, rsrc), _text(f, rdst), rsp, rdp), status, timeout, mark, zone,
                   tstate, (wso, wsr), (tfo, tfr), creator, version, seqadj_of(record))

    def key(self) -> bytes:
        return state_key(self.pack())


def seqadj_of(record: bytes) -> tuple[int, int, int, int, int, int] | None:
    """The sequence adjustment a STATE record carries (see :data:`SEQADJ`), None if it has none."""
    return SEQADJ.unpack_from(record, STATE.size) if len(record) == STATE_SEQADJ_SIZE else None


def state_key(record: bytes) -> bytes:
    """The identity of a state (pfsync.md §5.2): zone, family, protocol and original tuple."""
    return record[:KEY_LEN]


def creator_version(record: bytes) -> tuple[int, int]:
    """Creator node id and per-creator version of a STATE or DEL record."""
    return STATE_CREATOR.unpack_from(record, KEY_LEN)


def delete_record(key: bytes, creator: int, version: int) -> bytes:
    return key + STATE_CREATOR.pack(creator, version)


def describe_key(key: bytes) -> str:
    f, proto, zone, src, dst, sp, dp = KEY.unpack(key)
    return f"proto {proto} {_text(f, src)}:{sp} -> {_text(f, dst)}:{dp} zone {zone}"


# --- datagrams ------------------------------------------------------------------------------
class RejectReason(IntEnum):
    SHORT = 1
    MAGIC = 2
    VERSION = 3
    KEY_ID = 4
    AUTH = 5
    MALFORMED = 6
    REPLAY = 7
    LOOP = 8
    TTL = 9


class Rejected(ValueError):
    """A datagram that must be dropped; ``reason`` is what the peer counts it under."""

    def __init__(self, reason: RejectReason, detail: str = "") -> None:
        super().__init__(f"{reason.name.lower()}{': ' + detail if detail else ''}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Header:
    node: int
    epoch: int
    seq: int
    rseq: int = 0
    flags: int = 0
    key_id: int = 0


@dataclass(frozen=True, slots=True)
class Datagram:
    header: Header
    sections: tuple[tuple[int, tuple[bytes, ...]], ...]


class Keyring:
    """Shared keys by id; the current one signs, every one listed verifies (for rotation)."""

    def __init__(self, keys: Mapping[int, bytes], current: int | None = None) -> None:
        if not keys:
            raise ValueError("a keyring needs at least one key")
        for key_id, key in keys.items():
            if not 0 <= key_id <= 255:
                raise ValueError(f"key id {key_id} out of range 0-255")
            if len(key) < 16:
                raise ValueError(f"key {key_id} is shorter than 16 bytes")
        # HMAC (RFC 2104) as its two keyed SHA-256 states, copied per message: the same tag as
        # hmac.new(key, body, sha256), without hmac.HMAC's Python-level copy (one per datagram)
        self._macs = {k: _hmac_states(v) for k, v in keys.items()}
        self.current = max(keys) if current is None else current
        if self.current not in self._macs:
            raise ValueError(f"current key id {self.current} not in the keyring")

    def tag(self, body: bytes, key_id: int | None = None) -> bytes:
        inner, outer = self._macs[self.current if key_id is None else key_id]
        inner = inner.copy()
        inner.update(body)
        outer = outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:MAC_LEN]

    def __contains__(self, key_id: int) -> bool:
        return key_id in self._macs

    def verify(self, body: bytes, tag: bytes, key_id: int) -> bool:
        if key_id not in self._macs:
            return False
        return hmac.compare_digest(self.tag(body, key_id), tag)


def _hmac_states(key: bytes) -> tuple:
    block = hashlib.sha256().block_size
    if len(key) > block:
        key = hashlib.sha256(key).digest()
    key = key.ljust(block, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in key)), hashlib.sha256(bytes(b ^ 0x5C for b in key)))


def section(action: int, records: Iterable[bytes]) -> bytes:
    """One section: its subheader then its records (all of ``RECORD_SIZES[action]`` bytes).
    INS/UPD records with a sequence adjustment go as INS_SEQADJ/UPD_SEQADJ: a section's records
    are all of one kind."""
    recs = list(records)
    if action in _WITH_SEQADJ and recs and len(recs[0]) == STATE_SEQADJ_SIZE:
        action = _WITH_SEQADJ[action]
    size = RECORD_SIZES[action]
    if len(recs) > 0xFFFF:
        raise ValueError("too many records for one section")
    body = b"".join(recs)
    if len(body) != size * len(recs):
        raise ValueError(f"section {action}: records of another size than {size} bytes")
    return SECTION.pack(action, size // 4, len(recs)) + body


def seal(keyring: Keyring, header: Header, body: bytes) -> bytes:
    """A complete datagram: header, body (sections), tag."""
    return seal_fields(keyring, header.flags, header.node, header.epoch, header.seq, header.rseq, body)


def seal_fields(keyring: Keyring, flags: int, node: int, epoch: int, seq: int, rseq: int, body: bytes) -> bytes:
    """:func:`seal` without a :class:`Header` (the sender's hot path: one per datagram)."""
    data = _HEAD(MAGIC, VERSION, keyring.current, flags, 0, node, epoch, seq, rseq) + body
    return data + keyring.tag(data)


_HEAD = HEADER.pack


def open_datagram(keyring: Keyring, data: bytes) -> Datagram:
    """Verify and split a datagram; raises :class:`Rejected` for anything not ours and intact."""
    if len(data) < HEADER.size + MAC_LEN:
        raise Rejected(RejectReason.SHORT, f"{len(data)} bytes")
    magic, version, key_id, flags, _, node, epoch, seq, rseq = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise Rejected(RejectReason.MAGIC)
    if version != VERSION:
        raise Rejected(RejectReason.VERSION, f"version {version}")
    body, tag = data[:-MAC_LEN], data[-MAC_LEN:]
    if not keyring.verify(body, tag, key_id):
        raise Rejected(RejectReason.AUTH if key_id in keyring else RejectReason.KEY_ID,
                       f"key id {key_id}")
    sections = []
    off, end = HEADER.size, len(body)
    while off < end:
        if off + SECTION.size > end:
            raise Rejected(RejectReason.MALFORMED, "truncated section header")
        action, words, count = SECTION.unpack_from(body, off)
        off += SECTION.size
        size = words * 4
        stop = off + size * count
        if stop > end or size == 0 and count:
            raise Rejected(RejectReason.MALFORMED, f"section {action} overruns the datagram")
        known = RECORD_SIZES.get(action)
        if known is not None:  # unknown actions are skipped: forward compatibility
            if known != size:
                raise Rejected(RejectReason.MALFORMED, f"section {action} record size {size}")
            sections.append((_STATE_ACTION.get(action, action),
                             tuple(body[i:i + size] for i in range(off, stop, size))))
        off = stop
    return Datagram(Header(node, epoch, seq, rseq, flags, key_id), tuple(sections))


def read_key_file(data: bytes) -> Keyring:
    """Parse a key file: one key per line, ``[ID:]HEX`` or raw bytes (>= 16) for a single key.

    The newest (highest) id signs; every listed key verifies, so a key is rotated by adding the
    new key with a higher id on both nodes, then removing the old one.
    """
    text = data.decode("ascii", errors="replace").strip()
    keys: dict[int, bytes] = {}
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    try:
        for line in lines:
            key_id, _, value = line.rpartition(":")
            keys[int(key_id) if key_id else 0] = bytes.fromhex(value)
    except ValueError:
        keys = {0: data.strip()}
    return Keyring(keys)
