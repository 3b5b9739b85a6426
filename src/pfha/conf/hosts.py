"""Address specifications -> addresses, as pfctl's host() resolves them.

pfctl tries, in order: an IPv4 address (``inet_net_pton`` with a mask, so ``10/8`` and
``10.1/8`` work), an IPv6 address (with ``%scope``), an interface or group name (with the
``:network``, ``:broadcast``, ``:peer``, ``:0`` modifiers and an optional ``/mask``), then DNS.
``localhost`` is always 127.0.0.1 and ::1 (as on the hosts the FreeBSD corpus came from); other
names go to the view's resolver (the system's getaddrinfo for views the command line builds,
:mod:`pfha.conf.live`); a name nobody knows is an error, worded as pfctl words it.

Pure: interface addresses and name lookups come from the injected :class:`InterfaceView`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pfha.conf.ast import Address, AnyAddress, HostAddress, fast_init
from pfha.conf.interfaces import InterfaceView

_V4_MASKS = [0] + [((1 << 32) - 1) ^ ((1 << (32 - b)) - 1) for b in range(1, 33)]

STATIC_HOSTS: dict[str, tuple[str, ...]] = {"localhost": ("127.0.0.1", "::1")}


class HostError(ValueError):
    """Why a host specification resolved to nothing (pfctl prints it before the syntax error)."""


@fast_init
@dataclass(frozen=True, slots=True)
class ResolvedHost:
    """One address of a host list, before expansion into rules."""

    address: Address
    negated: bool = False
    family: str | None = None  # "inet" / "inet6" / None
    scope: str | None = None  # interface of a link-local address (pfctl's ifindex/ifname)
    interface: str | None = None  # the interface a name resolved through


#: ``any``: one shared value (immutable); expansion recognises it by identity
ANY_HOST = ResolvedHost(AnyAddress())


def mask_address(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, bits: int):
    if addr.version == 4:
        if bits == 32:
            return addr  # nothing to mask (immutable: the same value)
        return ipaddress.IPv4Address(int(addr) & _V4_MASKS[bits])
    full = (1 << 128) - 1
    return ipaddress.IPv6Address(int(addr) & (full ^ ((1 << (128 - bits)) - 1)))


def host_address(addr, bits: int) -> HostAddress:
    return HostAddress(mask_address(addr, bits), bits)


def parse_v4_net(text: str) -> tuple[ipaddress.IPv4Address, int] | None:
    """inet_net_pton(AF_INET, "a.b/bits"): 1-4 decimal octets and an explicit bit count."""
    addr_text, _, bits_text = text.partition("/")
    if not (bits_text.isascii() and bits_text.isdigit()):
        return None
    bits = int(bits_text)
    parts = addr_text.split(".")
    if not 1 <= len(parts) <= 4 or bits > 32:
        return None
    octets = []
    for part in parts:
        if not (part.isascii() and part.isdigit()) or len(part) > 3 or int(part) > 255:
            return None
        octets.append(int(part))
    octets += [0] * (4 - len(octets))
    return ipaddress.IPv4Address(bytes(octets)), bits


def parse_v4(text: str) -> ipaddress.IPv4Address | None:
    """inet_pton(AF_INET): exactly four decimal octets."""
    parts = text.split(".")
    if len(parts) != 4:
        return None
    value = 0
    for p in parts:  # what IPv4Address(text) accepts, without parsing the text twice
        if not (p.isascii() and p.isdigit()) or len(p) > 3 or (p[0] == "0" and p != "0"):
            return None
        octet = int(p)
        if octet > 255:
            return None
        value = (value << 8) | octet
    return ipaddress.IPv4Address(value)


def parse_v6(text: str) -> tuple[ipaddress.IPv6Address, str | None] | None:
    if ":" not in text:
        return None
    addr, _, scope = text.partition("%")
    try:
        return ipaddress.IPv6Address(addr), (scope or None)
    except ValueError:
        return None


_MODIFIERS = {"network", "broadcast", "peer", "0"}


def split_modifiers(name: str) -> tuple[str, tuple[str, ...]] | None:
    """``em0:network`` -> ("em0", ("network",)); None when a suffix is not a modifier."""
    mods: list[str] = []
    while ":" in name:
        name, _, mod = name.rpartition(":")
        if mod not in _MODIFIERS:
            return None
        mods.append(mod)
    return name, tuple(reversed(mods))


_LITERALS: dict[tuple[str, int | None], ResolvedHost] = {}
#: interface lookups (``$int_if:network``...) of the last view used, which they depend on;
#: the view is held, so identity cannot be reused by another view while the cache stands
_BY_INTERFACE: dict[tuple[str, int | None], tuple[ResolvedHost, ...]] = {}
_BY_INTERFACE_VIEW: list[InterfaceView] = []


def resolve(text: str, view: InterfaceView, mask: int | None = None) -> list[ResolvedHost]:
    """host(): one written host (``mask`` from a separate ``/N``) -> its addresses."""
    cached = _LITERALS.get((text, mask))
    if cached is not None:  # numeric addresses do not depend on the view: memoised
        return [cached]
    if mask is not None and mask > 128:
        raise HostError(f"invalid netmask '/{mask}'")
    literal = _literal(text, mask)
    if literal is not None:
        if len(_LITERALS) < 65536:
            _LITERALS[(text, mask)] = literal
        return [literal]
    if _BY_INTERFACE_VIEW and _BY_INTERFACE_VIEW[0] is view:
        by_interface = _BY_INTERFACE.get((text, mask))
        if by_interface is not None:
            return list(by_interface)
    else:
        _BY_INTERFACE.clear()
        _BY_INTERFACE_VIEW[:] = [view]
    found = resolve_interface(text, view, mask)
    if found is not None:
        if found and len(_BY_INTERFACE) < 4096:
            _BY_INTERFACE[(text, mask)] = tuple(found)
        return found
    return _resolve_name(text, view, mask)


def _literal(text: str, mask: int | None) -> ResolvedHost | None:
    """An IPv4 (``10/8`` style too) or IPv6 address written out, or None."""
    if mask is not None:
        net = parse_v4_net(f"{text}/{mask}")
        if net is not None:
            return _v4(net[0], net[1])
    else:
        v4 = parse_v4(text)
        if v4 is not None:
            return _v4(v4, 32)
    v6 = parse_v6(text)
    if v6 is not None:
        addr, scope = v6
        bits = 128 if mask is None else mask
        return ResolvedHost(host_address(addr, bits), family="inet6", scope=scope)
    return None


def _resolve_name(text: str, view: InterfaceView, mask: int | None) -> list[ResolvedHost]:
    """host_dns(): a name -> every address it has, in the resolver's order, v4 and v6 alike."""
    addresses = STATIC_HOSTS.get(text)
    if addresses is None and view.resolver is not None and _is_hostname(text):
        addresses = view.resolver(text)
    if not addresses:
        raise HostError(f"no IP address found for {text if mask is None else f'{text}/{mask}'}")
    found = []
    for a in addresses:
        ip = ipaddress.ip_address(a)
        if ip.version == 4:
            found.append(_v4(ip, 32 if mask is None else min(mask, 32)))
        else:
            found.append(ResolvedHost(host_address(ip, 128 if mask is None else mask), family="inet6"))
    return found


def _is_hostname(text: str) -> bool:
    """Only what could be a DNS name goes to the resolver (no ``$macro`` leftovers, spaces...)."""
    return 0 < len(text) <= 253 and all(c.isalnum() or c in "-._" for c in text) and text.isascii()


def _v4(addr: ipaddress.IPv4Address, bits: int) -> ResolvedHost:
    return ResolvedHost(host_address(addr, bits), family="inet")


def resolve_interface(text: str, view: InterfaceView, mask: int | None) -> list[ResolvedHost] | None:
    """host_if(): an interface/group name with modifiers; None when no such interface."""
    split = split_modifiers(text)
    if split is None:
        return None
    name, mods = split
    if len(set(mods) & {"network", "broadcast", "peer"}) > 1:
        raise HostError("illegal combination of interface modifiers")
    if ("network" in mods or "broadcast" in mods) and mask is not None:
        raise HostError("network or broadcast lookup, but extra netmask given")
    if not (view.exists(name) or name == "self"):
        return None
    return interface_addresses(name, mods, view, mask)


def interface_addresses(name: str, mods: tuple[str, ...], view: InterfaceView, mask: int | None = None) -> list[ResolvedHost]:
    """ifa_lookup(): the addresses of an interface (or group, or ``self``) under modifiers."""
    members = view.names() if name == "self" else view.members(name)
    out: list[ResolvedHost] = []
    for member in members:
        got4 = got6 = False
        peers = list(view.peers.get(member, ()))
        for index, iface in enumerate(view.addresses.get(member, ())):
            ip = iface.ip
            v6 = ip.version == 6
            scoped = v6 and ip.is_link_local
            if "broadcast" in mods and (v6 or view.is_loopback(member) or iface.network.prefixlen >= 31):
                continue
            if "peer" in mods and index >= len(peers):
                continue
            if "network" in mods and scoped:
                continue
            if "0" in mods:
                if not v6 and got4:
                    continue
                if v6 and (ip.is_link_local or got6):
                    continue
            if v6:
                got6 = True
            else:
                got4 = True
            family = "inet6" if v6 else "inet"
            if "broadcast" in mods:
                addr, bits = iface.network.broadcast_address, 32
            elif "peer" in mods:
                addr, bits = peers[index].ip, (128 if v6 else 32)
            elif "network" in mods:
                addr, bits = ip, iface.network.prefixlen
            else:
                addr, bits = ip, (128 if v6 else 32)
            if mask is not None:
                bits = mask if (v6 or mask <= 32) else 32
            out.append(ResolvedHost(host_address(addr, bits), family=family, scope=member if scoped else None, interface=member))
    return out
