"""The live host as the parser sees it (the only OS access of conf): its interfaces, read into
an :class:`InterfaceView` with ``ip -j addr`` (iproute2's JSON, which every Linux host running
pfha has), and its name resolution (getaddrinfo: /etc/hosts, then DNS, as pfctl asks).
This keeps the parser's core pure and testable.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import socket
import subprocess

from pfha.conf.interfaces import InterfaceView, IPInterface
from pfha.errors import PfhaError


def system_resolver(name: str) -> tuple[str, ...]:
    """A host name's addresses as pfctl's host_dns() gets them: getaddrinfo(AF_UNSPEC), one
    entry per address (SOCK_STREAM, so each address once), in the resolver's order."""
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        return ()
    seen: dict[str, None] = {}
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            seen.setdefault(str(sockaddr[0]).partition("%")[0])
    return tuple(seen)


def live_view() -> InterfaceView:
    """The current network namespace's interfaces and addresses, and the system's resolver."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise PfhaError(f"cannot read interface addresses: {error}") from None
    return dataclasses.replace(view_from_ip_json(json.loads(out or "[]")), resolver=system_resolver)


def view_from_ip_json(links: list[dict]) -> InterfaceView:
    """Turn ``ip -j addr`` output into a view (pure; separated for tests)."""
    addresses: dict[str, tuple[IPInterface, ...]] = {}
    peers: dict[str, tuple[IPInterface, ...]] = {}
    loopback = set()
    for link in links:
        name = link.get("ifname")
        if not name:
            continue
        if "LOOPBACK" in link.get("flags", ()):
            loopback.add(name)
        addrs, peer = [], []
        for info in link.get("addr_info", ()):
            local, plen = info.get("local"), info.get("prefixlen")
            if local is None or plen is None:
                continue
            addrs.append(ipaddress.ip_interface(f"{local}/{plen}"))
            if "address" in info and info["address"] != local:
                peer.append(ipaddress.ip_interface(f"{info['address']}/{plen}"))
        addresses[name] = tuple(addrs)
        if peer:
            peers[name] = tuple(peer)
    base = InterfaceView(addresses, peers, {}, frozenset(loopback))
    return InterfaceView.from_specs([], base=base)
