"""The Linux side of CARP: raw sockets, multicast membership, addresses, gratuitous ARP, link state.

The only CARP module that touches the OS, and deliberately thin: it moves bytes between the
kernel and :mod:`pfha.carp.machine` and performs the machine's actions. It decides nothing.

Choices (docs/carp.md explains them):

* Virtual addresses go **on the parent interface** as secondary addresses (what FreeBSD >= 10
  does with ``ifconfig em0 vhid 1 alias ...``, and what ucarp and keepalived do), so pf rules
  written ``on em0`` match the traffic to the VIP unchanged. Takeover is announced with a
  gratuitous ARP from the NIC's own MAC (ucarp style); the BSD virtual MAC would need a macvlan
  (a second interface pf rules would have to name).
* Adverts go out of a raw IPv4 socket (protocol 112): the kernel writes the IP header with TOS
  0x10, TTL 255 and DF, from our real address. They come in on a second raw socket bound to the
  device and joined to 224.0.0.18, which delivers the IP header so the TTL can be checked.
* Address changes and link events use rtnetlink directly (a few struct-packed messages),
  because pyroute2's synchronous API cannot run inside the runner's asyncio loop.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import struct
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pfha.carp import wire
from pfha.errors import PfhaError

# linux/netlink.h, linux/rtnetlink.h, linux/if_addr.h, linux/if_link.h, linux/in.h
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_REPLACE, NLM_F_CREATE = 0x1, 0x4, 0x100, 0x400
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR = 20, 21
RTMGRP_LINK = 0x1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFA_F_NODAD = 0x02  # a VIP taken over must be usable at once, not tentative for DAD
IFLA_IFNAME = 3
IFF_UP, IFF_RUNNING = 0x1, 0x40
IP_MULTICAST_IF, IP_MULTICAST_TTL, IP_MULTICAST_LOOP, IP_ADD_MEMBERSHIP = 32, 33, 34, 35
SO_BINDTODEVICE = 25

_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTATTR = struct.Struct("=HH")


class CarpOSError(PfhaError):
    """The kernel refused something the adapter needs (no such interface, no root...)."""


def _align(n: int) -> int:
    return (n + 3) & ~3


def _rtattr(kind: int, data: bytes) -> bytes:
    raw = _RTATTR.pack(_RTATTR.size + len(data), kind) + data
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return
        yield kind, data[offset + _RTATTR.size: offset + length]
        offset += _align(length)


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, data[offset + _NLMSGHDR.size: offset + length]
        offset += _align(length)


class Rtnetlink:
    """Just enough rtnetlink: add/remove an address (acknowledged), query a link's flags."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def _request(self, kind: int, flags: int, body: bytes) -> list[tuple[int, bytes]]:
        self.seq += 1
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, self.seq, 0) + body)
        replies: list[tuple[int, bytes]] = []
        while True:
            for rkind, payload in _messages(self.sock.recv(65536)):
                if rkind == NLMSG_ERROR:
                    code = struct.unpack_from("=i", payload)[0]
                    if code:
                        raise OSError(-code, os.strerror(-code))
                    return replies
                if rkind == NLMSG_DONE:
                    return replies
                replies.append((rkind, payload))

    def set_address(self, index: int, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface, add: bool) -> None:
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        flags = IFA_F_NODAD if address.version == 6 else 0
        body = _IFADDRMSG.pack(family, address.network.prefixlen, flags, 0, index)
        body += _rtattr(IFA_LOCAL, address.ip.packed) + _rtattr(IFA_ADDRESS, address.ip.packed)
        try:
            if add:
                self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, body)
            else:
                self._request(RTM_DELADDR, 0, body)
        except OSError as error:
            if add or error.errno not in (errno.EADDRNOTAVAIL, errno.ENODEV, errno.ESRCH):
                raise

    def link_flags(self, index: int) -> int:
        for kind, payload in self._request(RTM_GETLINK, 0, _IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, 0, 0)):
            if kind == RTM_NEWLINK:
                return _IFINFOMSG.unpack_from(payload)[3]
        raise CarpOSError(f"no link with index {index}")


def link_is_up(flags: int) -> bool:
    """Administratively up and with carrier (IFF_RUNNING), as BSD's carp checks the parent."""
    return bool(flags & IFF_UP and flags & IFF_RUNNING)


class LinkMonitor:
    """rtnetlink link notifications: yields (index, up) for each RTM_NEWLINK/DELLINK."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        self.sock.bind((0, RTMGRP_LINK))

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> list[tuple[int, bool]]:
        events = []
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return events
            for kind, payload in _messages(data):
                if kind in (RTM_NEWLINK, RTM_DELLINK) and len(payload) >= _IFINFOMSG.size:
                    _family, _type, index, flags, _change = _IFINFOMSG.unpack_from(payload)
                    events.append((index, kind == RTM_NEWLINK and link_is_up(flags)))

    def close(self) -> None:
        self.sock.close()


@dataclass
class InterfaceInfo:
    name: str
    index: int
    mac: bytes
    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]


def interface_info(name: str) -> InterfaceInfo:
    """Index, MAC and addresses of ``name`` (start-up only, so plain ``ip -j`` is fine here)."""
    proc = subprocess.run(["ip", "-j", "addr", "show", "dev", name], capture_output=True, text=True)
    if proc.returncode != 0:
        raise CarpOSError(f"interface {name}: {proc.stderr.strip() or 'not found'}")
    data = json.loads(proc.stdout)[0]
    addresses = [ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}") for a in data.get("addr_info", []) if a.get("family") in ("inet", "inet6")]
    mac = bytes.fromhex(data.get("address", "00:00:00:00:00:00").replace(":", ""))
    return InterfaceInfo(name, int(data["ifindex"]), mac, addresses)


def choose_source(info: InterfaceInfo, vips: Iterable[ipaddress.IPv4Address]) -> ipaddress.IPv4Address:
    """Our real address on the parent: the first IPv4 one that is not a virtual address."""
    excluded = set(vips)
    for address in info.addresses:
        if address.version == 4 and address.ip not in excluded:
            return address.ip
    raise CarpOSError(f"{info.name} has no IPv4 address of its own to send adverts from")


def prefix_for(vip: ipaddress.IPv4Address, info: InterfaceInfo) -> int:
    """The prefix length of the parent's subnet holding ``vip`` (FreeBSD <= 9 style), else /32."""
    for address in info.addresses:
        if address.version == 4 and vip in address.network and address.ip != vip:
            return address.network.prefixlen
    return 32


class CarpSocket6:
    """Adverts over IPv6 (ff02::12, hop limit 255) and unsolicited NAs, on one parent interface.

    Used when a group on the interface has IPv6 addresses. Raw IPv6 sockets do not deliver the
    IPv6 header, so the hop limit arrives as ancillary data (IPV6_RECVHOPLIMIT).
    """

    def __init__(self, info: InterfaceInfo) -> None:
        self.info = info
        link_local = next((a.ip for a in info.addresses if a.version == 6 and a.ip.is_link_local), None)
        if link_local is None:
            raise CarpOSError(f"{info.name} has no IPv6 link-local address to send adverts from")
        self.source = link_local
        group = socket.inet_pton(socket.AF_INET6, wire.CARP_GROUP_V6)
        mreq = group + struct.pack("=I", info.index)
        self.rx = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK, wire.IPPROTO_CARP)
        self.rx.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, info.name.encode())
        self.rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        self.rx.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVHOPLIMIT, 1)
        self.tx = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK, wire.IPPROTO_CARP)
        self.na = socket.socket(socket.AF_INET6, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.IPPROTO_ICMPV6)
        for sock in (self.tx, self.na):
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, info.name.encode())
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, info.index)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, wire.CARP_TTL)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, wire.CARP_TOS)
        self.tx.bind((str(link_local), 0, 0, info.index))

    def fileno(self) -> int:
        return self.rx.fileno()

    def send(self, payload: bytes) -> bool:
        try:
            self.tx.sendto(payload, (wire.CARP_GROUP_V6, 0, 0, self.info.index))
            return True
        except OSError:
            return False

    def receive(self) -> list[tuple[ipaddress.IPv6Address, int, bytes]]:
        """Every datagram waiting, as (source, hop limit, CARP payload)."""
        out = []
        while True:
            try:
                data, ancillary, _flags, address = self.rx.recvmsg(2048, socket.CMSG_SPACE(4))
            except BlockingIOError:
                return out
            hops = 0
            for level, kind, value in ancillary:
                if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_HOPLIMIT:
                    hops = struct.unpack("=i", value[:4])[0]
            out.append((ipaddress.IPv6Address(address[0].split("%")[0]), hops, data))

    def announce(self, address: ipaddress.IPv6Address) -> None:
        try:
            self.na.sendto(wire.unsolicited_na(self.info.mac, address), ("ff02::1", 0, 0, self.info.index))
        except OSError:
            pass

    def close(self) -> None:
        for sock in (self.rx, self.tx, self.na):
            sock.close()


class CarpSocket:
    """Send and receive adverts on one parent interface (IPv4)."""

    def __init__(self, info: InterfaceInfo, source: ipaddress.IPv4Address) -> None:
        self.info, self.source = info, source
        group = socket.inet_aton(wire.CARP_GROUP_V4)
        mreqn = group + socket.inet_aton("0.0.0.0") + struct.pack("=i", info.index)
        try:
            self.rx = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, wire.IPPROTO_CARP)
            self.rx.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, info.name.encode())
            self.rx.setsockopt(socket.IPPROTO_IP, IP_ADD_MEMBERSHIP, mreqn)
            self.tx = socket.socket(socket.AF_INET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, wire.IPPROTO_CARP)
            self.tx.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, info.name.encode())
            self.tx.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_IF, mreqn)
            self.tx.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_TTL, wire.CARP_TTL)
            self.tx.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_LOOP, 0)
            self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, wire.CARP_TTL)
            self.tx.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, wire.CARP_TOS)
            self.tx.bind((str(source), 0))
            self.arp = socket.socket(socket.AF_PACKET, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
            self.arp.bind((info.name, 0))
        except PermissionError as error:
            raise CarpOSError(f"raw sockets on {info.name}: {error.strerror} (needs root or CAP_NET_RAW)") from error

    def fileno(self) -> int:
        return self.rx.fileno()

    def send(self, payload: bytes) -> bool:
        try:
            self.tx.sendto(payload, (wire.CARP_GROUP_V4, 0))
            return True
        except OSError:
            return False

    def receive(self) -> list[tuple[wire.Ipv4Header, bytes]]:
        """Every datagram waiting, split into IP header and CARP payload."""
        out = []
        while True:
            try:
                datagram = self.rx.recv(2048)
            except BlockingIOError:
                return out
            try:
                header, payload = wire.parse_ipv4(datagram)
            except wire.BadAdvert:
                continue
            if header.protocol == wire.IPPROTO_CARP:
                out.append((header, payload))

    def announce(self, address: ipaddress.IPv4Address) -> None:
        try:
            self.arp.send(wire.gratuitous_arp(self.info.mac, address))
        except OSError:
            pass

    def close(self) -> None:
        for sock in (self.rx, self.tx, self.arp):
            sock.close()
