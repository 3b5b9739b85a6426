"""What a packet does to the state it matched: TCP windows, synproxy, modulate, UDP/ICMP/other.

This follows FreeBSD's sys/netpfil/pf/pf.c: ``pf_tcp_track_full`` (sequence-window checks and
peer state machine), ``pf_tcp_track_sloppy``, ``pf_synproxy`` (the proxied three-way
handshake), the modulator generation of ``pf_create_state`` / ``pf_tcp_track_full`` and the
pseudo-state updates of ``pf_test_state_udp`` / ``_other`` / ``_icmp``. Sequence numbers are
compared modulo 2**32 as pf's SEQ_* macros do.

Every function takes the state, the packet, whether the packet comes from the state's ``src``
peer, and ``now``; it updates the state and the packet (seq/ack rewrite) and returns ``None``
to pass or a pf reason name to drop. Packets pf would send itself (synproxy) are appended to
``emit``. Randomness comes from the engine's seeded RNG; there is no clock here.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

from pfha.engine.packet import (IPPROTO_TCP, TH_ACK, TH_FIN, TH_RST, TH_SYN, Packet)
from pfha.engine.state import (PF_TCPS_PROXY_DST, PF_TCPS_PROXY_SRC, PF_WSCALE_FLAG, PF_WSCALE_MASK,
                               PFUDPS_MULTIPLE, PFUDPS_NO_TRAFFIC, PFUDPS_SINGLE, TCPS_CLOSED,
                               TCPS_CLOSING, TCPS_ESTABLISHED, TCPS_FIN_WAIT_2, TCPS_SYN_SENT,
                               TCPS_TIME_WAIT, Peer, State)

MASK32 = 0xFFFFFFFF
MAXACKWINDOW = 0xFFFF + 1500  # pf.c: largest possible window plus one MTU of slack

#: pf_send_tcp(..., tag) sets M_SKIP_FIREWALL when tag is set: such packets bypass pf.
Emit = Callable[[Packet, bool, bool], None]  # (packet, toward_src_peer, skip_firewall)


def seq_geq(a: int, b: int) -> bool:
    return ((a - b) & MASK32) < 0x80000000


def seq_gt(a: int, b: int) -> bool:
    d = (a - b) & MASK32
    return d != 0 and d < 0x80000000


def signed32(value: int) -> int:
    value &= MASK32
    return value - 0x100000000 if value & 0x80000000 else value


def nonzero_random(rng: random.Random, base: int) -> int:
    """``while ((x = arc4random() - base) == 0);``: a modulator that is never zero."""
    while True:
        value = (rng.getrandbits(32) - base) & MASK32
        if value:
            return value


# ---------------------------------------------------------------------- state creation
def init_tcp_peers(state: State, packet: Packet, modulate: bool, rng: random.Random) -> None:
    """pf_create_state for TCP: the creating peer's window, scale and (optionally) modulator."""
    src, dst = state.src, state.dst
    src.seqlo = packet.seq
    end = packet.seq + packet.l4_len + 1
    if (packet.flags & (TH_SYN | TH_ACK)) == TH_SYN and modulate:
        src.seqdiff = nonzero_random(rng, src.seqlo)
        packet.seq = (src.seqlo + src.seqdiff) & MASK32
    if packet.flags & TH_SYN:
        end += 1
        ws = packet.wscale()
        src.wscale = (ws | PF_WSCALE_FLAG) if ws is not None else 0
    src.seqhi = end & MASK32
    src.max_win = max(packet.win, 1)
    if src.wscale & PF_WSCALE_MASK:
        shift = src.wscale & PF_WSCALE_MASK
        src.max_win = max((src.max_win + (1 << shift) - 1) >> shift, 1)
    if packet.flags & TH_FIN:
        src.seqhi = (src.seqhi + 1) & MASK32
    dst.seqhi = 1
    dst.max_win = 1
    src.state = TCPS_SYN_SENT
    dst.state = TCPS_CLOSED
    state.timeout = "tcp.first"


def start_synproxy(state: State, packet: Packet, rng: random.Random, emit: Emit) -> None:
    """The client's SYN on a ``synproxy state`` rule: pf answers with its own SYN-ACK."""
    state.src.state = PF_TCPS_PROXY_SRC
    state.src.seqhi = rng.getrandbits(32)
    mss = packet.mss() or 536  # pf_get_mss: tcp_mssdflt when the SYN has none
    state.src.mss = min(mss, 1460 if packet.af == 4 else 1440)  # pf_calc_mss on a 1500 MTU
    reply = _tcp_reply(packet, state.src.seqhi, (packet.seq + 1) & MASK32, TH_SYN | TH_ACK, 0, state.src.mss)
    emit(reply, True, True)


def _tcp_reply(packet: Packet, seq: int, ack: int, flags: int, win: int, mss: int = 0) -> Packet:
    options = b"" if not mss else bytes((2, 4, mss >> 8, mss & 0xFF))
    return Packet(packet.af, packet.dst, packet.src, IPPROTO_TCP, packet.dport, packet.sport,
                  flags=flags, seq=seq & MASK32, ack=ack & MASK32, win=win, tcp_options=options)


def _tcp_from_key(key: tuple, forward: bool, seq: int, ack: int, flags: int, win: int, mss: int = 0) -> Packet:
    """A segment between the two ends of a key: ``forward`` = from addr0 to addr1."""
    af, proto, a0, p0, a1, p1 = key
    options = b"" if not mss else bytes((2, 4, mss >> 8, mss & 0xFF))
    if forward:
        return Packet(af, a0, a1, IPPROTO_TCP, p0, p1, flags=flags, seq=seq & MASK32, ack=ack & MASK32,
                      win=win, tcp_options=options)
    return Packet(af, a1, a0, IPPROTO_TCP, p1, p0, flags=flags, seq=seq & MASK32, ack=ack & MASK32,
                  win=win, tcp_options=options)


# ---------------------------------------------------------------------- synproxy
def synproxy(state: State, packet: Packet, from_src: bool, emit: Emit, rng: random.Random) -> Optional[str]:
    """pf_synproxy: returns None when the handshake is done and the packet may be tracked,
    ``"synproxy"`` when pf consumed the packet (PF_SYNPROXY_DROP) and ``"synproxy-bad"`` for a
    packet that does not fit (PF_DROP, reason synproxy)."""
    src, dst = state.src, state.dst
    flags = packet.flags
    # The key the state's creating direction uses toward the real destination (pf: key[didx]).
    inner_key = state.stack if state.direction == "in" else state.wire
    outer_key = state.wire if state.direction == "in" else state.stack
    if src.state == PF_TCPS_PROXY_SRC:
        if not from_src:
            return "synproxy"
        if flags & TH_SYN:
            if packet.seq != src.seqlo:
                return "synproxy-bad"
            emit(_tcp_reply(packet, src.seqhi, packet.seq + 1, TH_SYN | TH_ACK, 0, src.mss), True, True)
            return "synproxy"
        if ((flags & (TH_ACK | TH_RST | TH_FIN)) != TH_ACK or packet.ack != (src.seqhi + 1) & MASK32
                or packet.seq != (src.seqlo + 1) & MASK32):
            return "synproxy-bad"
        src.state = PF_TCPS_PROXY_DST
    if src.state == PF_TCPS_PROXY_DST:
        if from_src:
            if ((flags & (TH_SYN | TH_ACK)) != TH_ACK or packet.ack != (src.seqhi + 1) & MASK32
                    or packet.seq != (src.seqlo + 1) & MASK32):
                return "synproxy-bad"
            src.max_win = max(packet.win, 1)
            if dst.seqhi == 1:
                dst.seqhi = rng.getrandbits(32)
            # The SYN toward the server goes through pf (pf_send_tcp without tag).
            forward = state.direction == "in"
            emit(_tcp_from_key(inner_key, forward, dst.seqhi, 0, TH_SYN, 0, src.mss), False, False)
            return "synproxy"
        if (flags & (TH_SYN | TH_ACK)) != (TH_SYN | TH_ACK) or packet.ack != (dst.seqhi + 1) & MASK32:
            return "synproxy-bad"
        dst.max_win = max(packet.win, 1)
        dst.seqlo = packet.seq
        # ACK to the server (filtered) and to the client (pf's own, skips the firewall).
        emit(_tcp_reply(packet, packet.ack, packet.seq + 1, TH_ACK, src.max_win), False, False)
        forward = state.direction == "out"
        emit(_tcp_from_key(outer_key, forward, src.seqhi + 1, src.seqlo + 1, TH_ACK, dst.max_win), True, True)
        src.seqdiff = (dst.seqhi - src.seqlo) & MASK32
        dst.seqdiff = (src.seqhi - dst.seqlo) & MASK32
        src.seqhi = (src.seqlo + dst.max_win) & MASK32
        dst.seqhi = (dst.seqlo + src.max_win) & MASK32
        src.wscale = dst.wscale = 0
        src.state = dst.state = TCPS_ESTABLISHED
        state.timeout = "tcp.established"
        return "synproxy"
    return None


# ---------------------------------------------------------------------- TCP tracking
def tcp_track_full(state: State, packet: Packet, from_src: bool, now: float, rng: random.Random,
                   on_established: Optional[Callable[[State], bool]] = None) -> Optional[str]:
    """pf_tcp_track_full: None to pass (packet rewritten by the modulators), or a reason.

    The SEQ_GEQ/SEQ_GT comparisons are written inline (``(a - b) & MASK32 < 2**31``): this is
    the per-packet hot path of every TCP state match.
    """
    if from_src:
        src, dst = state.src, state.dst
    else:
        src, dst = state.dst, state.src
    flags = packet.flags
    orig_seq = seq = packet.seq
    win = packet.win
    if src.wscale and dst.wscale and not flags & TH_SYN:
        sws, dws = src.wscale & PF_WSCALE_MASK, dst.wscale & PF_WSCALE_MASK
    else:
        sws = dws = 0
    end = seq + len(packet.payload)
    if flags & TH_SYN:
        end += 1
    if flags & TH_FIN:
        end += 1
    end &= MASK32
    if src.seqlo == 0:
        # First packet from this end: set its state.
        if flags & TH_SYN and dst.wscale & PF_WSCALE_FLAG:
            ws = packet.wscale()
            if ws is not None:
                src.wscale = ws | PF_WSCALE_FLAG
                sws = ws
                win = (win + (1 << sws) - 1) >> sws
                dws = dst.wscale & PF_WSCALE_MASK
            else:
                dst.max_win <<= dst.wscale & PF_WSCALE_MASK
                dst.wscale = 0
        if dst.seqdiff and not src.seqdiff:
            # Deferred modulator for the responder (modulate state).
            src.seqdiff = nonzero_random(rng, seq)
            ack = (packet.ack - dst.seqdiff) & MASK32
            packet.seq = (seq + src.seqdiff) & MASK32
            packet.ack = ack
        else:
            ack = packet.ack
        src.seqlo = seq
        if src.state < TCPS_SYN_SENT:
            src.state = TCPS_SYN_SENT
        edge = (end + ((dst.max_win << dws) or 1)) & MASK32
        if src.seqhi == 1 or ((edge - src.seqhi) & MASK32) < 0x80000000:
            src.seqhi = edge
        if win > src.max_win:
            src.max_win = win
    else:
        ack = (packet.ack - dst.seqdiff) & MASK32
        if src.seqdiff:
            packet.seq = (seq + src.seqdiff) & MASK32
        if dst.seqdiff:
            packet.ack = ack
    if not flags & TH_ACK:
        ack = dst.seqlo  # let it pass the ack skew check
    elif ack == 0 and ((flags & (TH_ACK | TH_RST)) == (TH_ACK | TH_RST) or dst.state < TCPS_SYN_SENT):
        ack = dst.seqlo  # broken stacks send ack 0 on RST / before the handshake
    if seq == end:
        seq = end = src.seqlo  # ease sequencing restrictions on no-data packets
    ackskew = (dst.seqlo - ack) & MASK32
    if ackskew & 0x80000000:
        ackskew -= 0x100000000
    seqlo = src.seqlo
    if (((src.seqhi - end) & MASK32) < 0x80000000
            and ((seq - seqlo + (dst.max_win << dws)) & MASK32) < 0x80000000
            and -MAXACKWINDOW <= ackskew <= (MAXACKWINDOW << sws)
            and (not flags & TH_RST or orig_seq == seqlo or orig_seq == (seqlo + 1) & MASK32
                 or (orig_seq + 1) & MASK32 == seqlo)):
        if src.max_win < win:
            src.max_win = win
        diff = (end - seqlo) & MASK32
        if diff and diff < 0x80000000:
            src.seqlo = end
        edge = (ack + (win << sws)) & MASK32
        if ((edge - dst.seqhi) & MASK32) < 0x80000000:
            dst.seqhi = (ack + ((win << sws) or 1)) & MASK32
        state.expire = now
        if flags & (TH_SYN | TH_FIN | TH_RST) or dst.state != TCPS_ESTABLISHED or src.state != TCPS_ESTABLISHED:
            return _peer_transitions(state, src, dst, flags, on_established, sloppy=False)
        state.timeout = "tcp.established"
        return None
    if ((dst.state < TCPS_SYN_SENT or dst.state >= TCPS_FIN_WAIT_2 or src.state >= TCPS_FIN_WAIT_2)
            and seq_geq((src.seqhi + MAXACKWINDOW) & MASK32, end)
            and seq_geq(seq, (seqlo - MAXACKWINDOW) & MASK32)):
        # pf: "the other side hasn't seen the handshake" (e.g. a state picked up mid-stream).
        if src.max_win < win:
            src.max_win = win
        if seq_gt(end, src.seqlo):
            src.seqlo = end
        if seq_geq((ack + (win << sws)) & MASK32, dst.seqhi):
            dst.seqhi = (ack + ((win << sws) or 1)) & MASK32
        if flags & TH_FIN and src.state < TCPS_CLOSING:
            src.state = TCPS_CLOSING
        if flags & TH_RST:
            src.state = dst.state = TCPS_TIME_WAIT
        return None
    # Undo any sequence rewrite: the packet is dropped as it came.
    packet.seq = orig_seq
    return "state-mismatch"


def tcp_timeout(src_state: int, dst_state: int) -> str:
    """The timeout a TCP state moves to after a packet (end of pf_tcp_track_full)."""
    if src_state >= TCPS_FIN_WAIT_2 and dst_state >= TCPS_FIN_WAIT_2:
        return "tcp.closed"
    if src_state >= TCPS_CLOSING and dst_state >= TCPS_CLOSING:
        return "tcp.finwait"
    if src_state < TCPS_ESTABLISHED or dst_state < TCPS_ESTABLISHED:
        return "tcp.opening"
    if src_state >= TCPS_CLOSING or dst_state >= TCPS_CLOSING:
        return "tcp.closing"
    return "tcp.established"


def tcp_track_sloppy(state: State, packet: Packet, from_src: bool, now: float,
                     on_established: Optional[Callable[[State], bool]] = None) -> Optional[str]:
    """pf_tcp_track_sloppy: the peer state machine without any sequence checks."""
    src, dst = (state.src, state.dst) if from_src else (state.dst, state.src)
    state.expire = now
    return _peer_transitions(state, src, dst, packet.flags, on_established, sloppy=True)


def _peer_transitions(state: State, src: Peer, dst: Peer, flags: int,
                      on_established: Optional[Callable[[State], bool]], sloppy: bool) -> Optional[str]:
    """The peer state machine both pf_tcp_track_full and pf_tcp_track_sloppy end with, then the
    timeout it leads to; ``sloppy`` adds the moves that make up for a handshake or a close seen
    from one side only (sloppy states see no sequence numbers to tell them otherwise)."""
    if flags & TH_SYN and src.state < TCPS_SYN_SENT:
        src.state = TCPS_SYN_SENT
    if flags & TH_FIN and src.state < TCPS_CLOSING:
        src.state = TCPS_CLOSING
    if flags & TH_ACK:
        if dst.state == TCPS_SYN_SENT:
            dst.state = TCPS_ESTABLISHED
            if src.state == TCPS_ESTABLISHED and on_established is not None and on_established(state):
                return "src-limit"
        elif dst.state == TCPS_CLOSING:
            dst.state = TCPS_FIN_WAIT_2
        elif not sloppy:
            pass
        elif src.state == TCPS_SYN_SENT and dst.state < TCPS_SYN_SENT:
            # Handshake seen from one side only.
            src.state = dst.state = TCPS_ESTABLISHED
            if on_established is not None and on_established(state):
                return "src-limit"
        elif src.state == TCPS_CLOSING and dst.state == TCPS_ESTABLISHED:
            dst.state = TCPS_FIN_WAIT_2  # only one side's FIN/ACK seen
    if flags & TH_RST:
        src.state = dst.state = TCPS_TIME_WAIT
    state.timeout = tcp_timeout(src.state, dst.state)
    return None


def closed_and_new_syn(state: State, packet: Packet, from_src: bool) -> bool:
    """pf_test_state_tcp: a fresh SYN on a fully closed state removes it (port reuse)."""
    src, dst = (state.src, state.dst) if from_src else (state.dst, state.src)
    return (dst.state >= TCPS_FIN_WAIT_2 and src.state >= TCPS_FIN_WAIT_2
            and (packet.flags & (TH_SYN | TH_ACK)) == TH_SYN)


# ---------------------------------------------------------------------- UDP / other / ICMP
def init_pseudo_peers(state: State, kind: str) -> None:
    """pf_create_state for UDP and other protocols: one side has spoken."""
    state.src.state = PFUDPS_SINGLE
    state.dst.state = PFUDPS_NO_TRAFFIC
    state.timeout = f"{kind}.first"


def pseudo_track(state: State, from_src: bool, now: float, kind: str) -> None:
    """pf_test_state_udp / _other: SINGLE until both sides spoke, then MULTIPLE."""
    src, dst = (state.src, state.dst) if from_src else (state.dst, state.src)
    if src.state < PFUDPS_SINGLE:
        src.state = PFUDPS_SINGLE
    if dst.state == PFUDPS_SINGLE:
        dst.state = PFUDPS_MULTIPLE
    state.expire = now
    if src.state == PFUDPS_MULTIPLE and dst.state == PFUDPS_MULTIPLE:
        state.timeout = f"{kind}.multiple"
    else:
        state.timeout = f"{kind}.single"


def icmp_track(state: State, from_src: bool, now: float) -> None:
    """pf_test_state_icmp (queries): any later packet sets the ``icmp.error`` timeout."""
    state.expire = now
    if not from_src:
        state.icmp_replied = True
    state.timeout = "icmp.error"


__all__ = [name for name in dir() if not name.startswith("_")]
