"""Which addresses each interface has, as pf sees them at load time.

pf resolves ``$if``, ``if:network``, ``if:broadcast``, ``if:0``, ``self`` and antispoof against
the machine's interfaces when pfctl loads the ruleset. The parser never asks the OS: it is
given an :class:`InterfaceView`, built from ``--if NAME=CIDR[,CIDR...]`` specs (to check a
ruleset meant for another machine), from the live host (:mod:`pfha.conf.live`), or from
FreeBSD's loopback defaults (the conformance corpus was produced on a FreeBSD host).

This module must never touch the OS.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Optional, Union

from pfha.errors import PfhaError

IPInterface = Union[ipaddress.IPv4Interface, ipaddress.IPv6Interface]

#: A host name -> its addresses as text, in the resolver's order (empty: not found). pfctl asks
#: DNS (getaddrinfo) for any host that is neither an address nor an interface.
Resolver = Callable[[str], tuple[str, ...]]

#: FreeBSD's lo0 as getifaddrs() lists it: ::1, fe80::1%lo0, 127.0.0.1.
FREEBSD_LO0: tuple[IPInterface, ...] = (
    ipaddress.IPv6Interface("::1/128"),
    ipaddress.IPv6Interface("fe80::1/64"),
    ipaddress.IPv4Interface("127.0.0.1/8"),
)


@dataclass(frozen=True)
class InterfaceView:
    """Interface name -> its addresses (in the order the system lists them).

    ``peers`` holds point-to-point destination addresses (``:peer``); ``groups`` maps an
    interface group name (``egress``, ``carp``...) to its member interfaces. ``resolver``
    answers host names (DNS, as pfctl does at load time); a view without one knows only
    ``localhost``, which keeps tests and the conformance corpus independent of the network.
    """

    addresses: Mapping[str, tuple[IPInterface, ...]] = field(default_factory=dict)
    peers: Mapping[str, tuple[IPInterface, ...]] = field(default_factory=dict)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    loopback: frozenset[str] = frozenset()
    resolver: Optional[Resolver] = field(default=None, compare=False, repr=False)

    # ---------------------------------------------------------------- construction
    @classmethod
    def empty(cls) -> "InterfaceView":
        return cls({})

    @classmethod
    def live(cls) -> "InterfaceView":
        """The running host's interfaces (the one method that reads the OS; see conf.live)."""
        from pfha.conf.live import live_view

        return live_view()

    @classmethod
    def freebsd_defaults(cls) -> "InterfaceView":
        """The view pfctl's regression outputs were produced with: lo0 only."""
        return cls({"lo0": FREEBSD_LO0}, loopback=frozenset({"lo0"}), groups={"lo": ("lo0",)})

    @classmethod
    def from_specs(cls, specs: Iterable[str], *, base: "InterfaceView | None" = None,
                   resolver: Optional[Resolver] = None) -> "InterfaceView":
        """Build from ``NAME=CIDR[,CIDR...]`` strings (``--if`` values); later specs for the same
        name add addresses. ``NAME=`` declares an interface without addresses. The resolver is
        ``resolver``, else ``base``'s."""
        addresses: dict[str, list[IPInterface]] = {}
        if base is not None:
            for name, addrs in base.addresses.items():
                addresses[name] = list(addrs)
        for spec in specs:
            name, sep, cidrs = spec.partition("=")
            name = name.strip()
            if not sep or not name or not _valid_ifname(name):
                raise PfhaError(f"bad interface spec {spec!r}: expected NAME=ADDR/LEN[,ADDR/LEN...]")
            bucket = addresses.setdefault(name, [])
            for cidr in filter(None, (c.strip() for c in cidrs.split(","))):
                try:
                    bucket.append(ipaddress.ip_interface(cidr))
                except ValueError:
                    raise PfhaError(f"bad address {cidr!r} for interface {name}") from None
        loop = set(base.loopback) if base is not None else set()
        loop.update(n for n in addresses if n.startswith("lo") and (n[2:].isascii() and n[2:].isdigit()))
        groups = _default_groups(addresses)
        if base is not None:
            for g, members in base.groups.items():
                groups.setdefault(g, members)
        peers = dict(base.peers) if base is not None else {}
        if resolver is None and base is not None:
            resolver = base.resolver
        return cls({k: tuple(v) for k, v in addresses.items()}, peers, groups, frozenset(loop), resolver)

    # ---------------------------------------------------------------- queries
    def exists(self, name: str) -> bool:
        return name in self.addresses or name in self.groups

    def members(self, name: str) -> tuple[str, ...]:
        """The interfaces a name stands for: itself, or a group's members."""
        if name in self.addresses:
            return (name,)
        return self.groups.get(name, ())

    def addrs(self, name: str) -> tuple[IPInterface, ...]:
        """All addresses of an interface or group (``self``: of every interface)."""
        if name == "self":
            return tuple(a for addrs in self.addresses.values() for a in addrs)
        result: list[IPInterface] = []
        for member in self.members(name):
            result.extend(self.addresses.get(member, ()))
        return tuple(result)

    def is_loopback(self, name: str) -> bool:
        return name in self.loopback

    def names(self) -> tuple[str, ...]:
        return tuple(self.addresses)


def _valid_ifname(name: str) -> bool:
    return len(name) < 16 and all(c.isalnum() or c in "._-" for c in name)


def _default_groups(addresses: Mapping[str, object]) -> dict[str, tuple[str, ...]]:
    """FreeBSD puts every interface in the group named by its driver (``carp0`` -> ``carp``)."""
    groups: dict[str, list[str]] = {}
    for name in addresses:
        driver = name.rstrip("0123456789")
        if driver and driver != name:
            groups.setdefault(driver, []).append(name)
    return {g: tuple(m) for g, m in groups.items() if g not in addresses}
