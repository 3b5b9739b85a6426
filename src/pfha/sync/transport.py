"""The sync link: raw IPv4 sockets of protocol 240 (pfsync's), on one device.

As pfsync(4): multicast to 224.0.0.240 on the sync device by default, or unicast to a
``syncpeer``; sent with TTL 255, and a datagram received with another TTL or on another device is
dropped (the "not routed" check). Because it is IP protocol 240, pf.conf rules such as
``pass quick on $pfs_if proto pfsync`` govern it in the data plane (the kernel delivers to raw
sockets after the input hook).

This module only moves bytes; authentication and everything else is the core's (``peer.py``).
"""

from __future__ import annotations

import errno
import socket
import struct

from pfha.errors import PfhaError
from pfha.sync.wire import IPPROTO_PFSYNC, PFSYNC_GROUP, PFSYNC_TTL

SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class TransportError(PfhaError):
    """The sync device or peer cannot be used."""


class Transport:
    """A non-blocking raw socket bound to ``dev``; ``peer`` None means multicast."""

    def __init__(self, dev: str, peer: str | None = None, group: str = PFSYNC_GROUP) -> None:
        try:
            ifindex = socket.if_nametoindex(dev)
        except OSError as error:
            raise TransportError(f"sync device {dev}: {error.strerror}") from None
        self.dev, self.peer = dev, peer
        self.destination = peer or group
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_PFSYNC)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, dev.encode())
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, PFSYNC_TTL)
        if peer is None:
            mreqn = struct.pack("=4s4si", socket.inet_aton(group), b"\0" * 4, ifindex)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, mreqn)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, PFSYNC_TTL)
            self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        self.sock.setblocking(False)
        self.send_errors = 0
        self.bad_ttl = 0
        self.wrong_source = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, datagrams: list[bytes]) -> None:
        for data in datagrams:
            try:
                self.sock.sendto(data, (self.destination, 0))
            except OSError as error:  # link down, no route, buffer full: the protocol recovers
                if error.errno not in (errno.ENOBUFS, errno.EAGAIN, errno.ENETUNREACH,
                                       errno.EHOSTUNREACH, errno.ENETDOWN, errno.EPERM):
                    raise
                self.send_errors += 1

    def receive(self, limit: int = 256) -> list[tuple[bytes, bool]]:
        """Waiting datagrams as (IP payload, passes the TTL/source checks)."""
        out = []
        for _ in range(limit):
            try:
                packet, (source, _) = self.sock.recvfrom(65535)
            except BlockingIOError:
                break
            header_len = (packet[0] & 0x0F) * 4
            ok = packet[8] == PFSYNC_TTL
            if not ok:
                self.bad_ttl += 1
            if self.peer is not None and source != self.peer:
                self.wrong_source += 1
                ok = False
            out.append((packet[header_len:], ok))
        return out

    def close(self) -> None:
        self.sock.close()
