"""Read the live host's interfaces into an :class:`InterfaceView` (the only OS access of conf).

Uses ``ip -j addr`` (iproute2's JSON), which every Linux host running pfha has; this keeps the
parser's core pure and testable.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess

from pfha.conf.interfaces import InterfaceView, IPInterface
from pfha.errors import PfhaError


def live_view() -> InterfaceView:
    """The current network namespace's interfaces and addresses."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise PfhaError(f"cannot read interface addresses: {error}") from None
    return view_from_ip_json(json.loads(out or "[]"))


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
