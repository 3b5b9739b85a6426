"""The Linux side of pflog: an NFLOG socket and pflogd, which writes what it receives to a pcap.

nftables rules compiled from ``log`` send packets to an NFLOG group with a ``pf:...`` prefix
(:mod:`pfha.pflog.prefix`); :class:`Pflogd` turns each into a DLT_PFLOG record with a FreeBSD
pfloghdr, so ``tcpdump -n -e -r /var/log/pflog`` reads it as on FreeBSD. Like FreeBSD's
pflogd(8) it appends to an existing valid log, moves an unreadable one aside to ``FILE.bad``,
reopens the file on SIGHUP (log rotation), and reports how many packets it received and how
many were dropped (kernel side: gaps in NFLOG's sequence numbers and socket overruns).

This module touches the OS (a netlink socket, the log file, signals); the message formats and
header layout live in the pure modules beside it. It must never change the ruleset.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from pfha.errors import PfhaError
from pfha.pflog import nflog
from pfha.pflog.checksum import fix_l4_checksum
from pfha.pflog.format import AF_INET, AF_INET6, DLT_PFLOG, PFLOG_HDRLEN, Direction
from pfha.pflog.pcap import PcapError, PcapReader, PcapWriter
from pfha.pflog.prefix import LogPrefix, PrefixError

log = logging.getLogger("pfha.pflogd")

DEFAULT_LOG = "/var/log/pflog"
DEFAULT_SNAPLEN = 116  # FreeBSD pflogd's DEF_SNAPLEN: the pflog header plus the packet's headers
RCVBUF = 4 << 20


class PflogdError(PfhaError):
    """pflogd cannot start: NFLOG refused the group, or the log file cannot be opened."""


class NflogSocket:
    """A bound NFLOG group in the current network namespace, delivering every packet at once."""

    def __init__(self, group: int = 0, copy_range: int = 0xFFFF) -> None:
        self.group = group
        self._seq = 0
        self.overruns = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, nflog.NETLINK_NETFILTER)
        try:
            self.sock.bind((0, 0))
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            self._request(nflog.bind_request(group, self._next_seq()))
            self._request(nflog.mode_request(group, self._next_seq(), copy_range))
        except OSError as error:
            self.sock.close()
            raise PflogdError(f"NFLOG group {group}: {error.strerror or error}") from None
        except PflogdError:
            self.sock.close()
            raise

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _request(self, message: bytes) -> None:
        self.sock.send(message)
        seq = struct.unpack_from("=I", message, 8)[0]
        while True:
            for reply in nflog.messages(self.sock.recv(65536)):
                if reply.type == nflog.NLMSG_ERROR and reply.seq == seq:
                    code = nflog.error_code(reply)
                    if code:
                        raise PflogdError(f"NFLOG group {self.group}: {os.strerror(-code)}")
                    return

    def fileno(self) -> int:
        return self.sock.fileno()

    def receive(self) -> list[nflog.LoggedPacket]:
        """The packets of one datagram ([] after an overrun, which is counted)."""
        try:
            data = self.sock.recv(1 << 18)
        except OSError as error:
            if error.errno == errno.ENOBUFS:
                self.overruns += 1
                return []
            raise
        return [p for m in nflog.messages(data) if (p := nflog.decode_packet(m)) is not None]

    def close(self) -> None:
        try:
            self.sock.send(nflog.unbind_request(self.group, self._next_seq()))
        except OSError:
            pass
        self.sock.close()


def interface_name(index: int) -> str:
    if index == 0:
        return ""
    try:
        return socket.if_indextoname(index)
    except OSError:
        return f"if{index}"


@dataclass
class Stats:
    received: int = 0
    written: int = 0
    dropped: int = 0  # lost by the kernel or the socket before pflogd saw them
    ignored: int = 0  # NFLOG packets whose prefix is not ours


def _ip_length(packet: bytes) -> int:
    if len(packet) >= 4 and packet[0] >> 4 == 4:
        return struct.unpack_from("!H", packet, 2)[0]
    if len(packet) >= 6 and packet[0] >> 4 == 6:
        return 40 + struct.unpack_from("!H", packet, 4)[0]
    return len(packet)


class Pflogd:
    """NFLOG group -> pflog pcap file. :meth:`run` until ``stop()`` returns true."""

    def __init__(self, path: str = DEFAULT_LOG, group: int = 0, snaplen: int = DEFAULT_SNAPLEN, *, fix_checksums: bool = True, clock: Callable[[], float] = time.time, ifname: Callable[[int], str] = interface_name) -> None:
        if snaplen <= PFLOG_HDRLEN:
            raise PflogdError(f"snaplen {snaplen} leaves no room after the {PFLOG_HDRLEN}-byte pflog header")
        self.path = path
        self.group = group
        self.snaplen = snaplen
        self.fix_checksums = fix_checksums
        self.clock = clock
        self.ifname = ifname
        self.stats = Stats()
        self._expected_seq: int | None = None
        self._writer: PcapWriter | None = None
        self._reopen = False
        self.source: NflogSocket | None = None

    # ------------------------------------------------------------------ the log file
    def open_log(self) -> None:
        """Append to a valid existing log; move an unreadable one aside; else start a new one."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        append = False
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            try:
                with open(self.path, "rb") as existing:
                    reader = PcapReader(existing)
                append = reader.linktype == DLT_PFLOG and reader.snaplen == self.snaplen
            except PcapError:
                append = False
            if not append:
                bad = self.path + ".bad"
                log.warning("%s: invalid or different log file, moved to %s", self.path, bad)
                os.replace(self.path, bad)
        try:
            stream = open(self.path, "ab")
        except OSError as error:
            raise PflogdError(f"{self.path}: {error.strerror}") from None
        self._writer = PcapWriter(stream, DLT_PFLOG, self.snaplen, write_header=not append)

    def request_reopen(self, *_args: object) -> None:
        """SIGHUP: reopen the file at the next packet or tick (after rotation)."""
        self._reopen = True

    # ------------------------------------------------------------------ packets
    def handle(self, packet: nflog.LoggedPacket) -> bool:
        """Write one logged packet; False when it is not one of pf's."""
        self._count_sequence(packet.seq)
        self.stats.received += 1
        try:
            prefix = LogPrefix.decode(packet.prefix)
        except PrefixError:
            self.stats.ignored += 1
            return False
        index = packet.outdev if prefix.direction == Direction.OUT else packet.indev
        af = AF_INET6 if packet.family == nflog.AF_INET6 else AF_INET
        payload = fix_l4_checksum(packet.payload) if self.fix_checksums else packet.payload
        header = prefix.header(self.ifname(index), af).encode()
        assert self._writer is not None
        # NFULA_TIMESTAMP is not wall-clock for forwarded/veth packets: stamp on receipt.
        self._writer.write(self.clock(), header + payload, PFLOG_HDRLEN + max(_ip_length(payload), len(payload)))
        self.stats.written += 1
        return True

    def _count_sequence(self, seq: int | None) -> None:
        if seq is None:
            return
        if self._expected_seq is not None and seq > self._expected_seq:
            self.stats.dropped += seq - self._expected_seq
        self._expected_seq = seq + 1

    def report(self) -> str:
        overruns = self.source.overruns if self.source else 0
        return f"{self.stats.received} packets received, {self.stats.dropped} dropped ({overruns} socket overruns), {self.stats.written} written to {self.path}"

    # ------------------------------------------------------------------ the loop
    def start(self) -> None:
        self.source = NflogSocket(self.group, self.snaplen - PFLOG_HDRLEN)
        try:
            self.open_log()
        except PflogdError:
            self.source.close()
            raise

    def poll(self, timeout: float = 0.5) -> int:
        """Wait up to ``timeout`` for packets, write them; the number written."""
        assert self.source is not None
        if self._reopen:
            self._reopen = False
            self.open_log()
            log.info("reopened %s", self.path)
        ready, _, _ = select.select([self.source], [], [], timeout)
        if not ready:
            return 0
        return sum(self.handle(p) for p in self.source.receive())

    def run(self, stop: Callable[[], bool]) -> None:
        self.start()
        try:
            while not stop():
                try:
                    self.poll()
                except InterruptedError:
                    continue
        finally:
            self.close()

    def close(self) -> None:
        if self.source is not None:
            self.source.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def serve_until_signalled(start: Callable[[], None], step: Callable[[], None], finish: Callable[[], None],
                          ready_file: str | None = None) -> None:
    """A foreground NFLOG daemon's life (pflogd, the overload flusher): SIGTERM/SIGINT stop it
    after the current step, the ready file tells whoever started it that it listens, and
    ``finish`` runs however the loop ends."""
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    start()
    if ready_file:
        with open(ready_file, "w"):
            pass
    try:
        while not stopping:
            try:
                step()
            except InterruptedError:
                continue
    finally:
        finish()


def run_daemon(path: str, group: int, snaplen: int, ready_file: str | None = None) -> Pflogd:
    """Run pflogd in the foreground with pflogd(8)'s signals: HUP reopens, USR1 reports, TERM/INT stop."""
    daemon = Pflogd(path, group, snaplen)
    signal.signal(signal.SIGHUP, daemon.request_reopen)
    signal.signal(signal.SIGUSR1, lambda *_: log.warning("%s", daemon.report()))

    def finish() -> None:
        daemon.close()
        log.warning("%s", daemon.report())

    serve_until_signalled(daemon.start, daemon.poll, finish, ready_file)
    return daemon
