"""Names pf.conf accepts for numbers: services, protocols, users, ICMP types, TOS, flags.

Resolution follows pfctl: ports go through getservbyname(name, "tcp") then "udp"; protocols
through getprotobyname; users and groups through FreeBSD's base passwd/group; ICMP types and
codes through pfctl's own tables. All tables are FreeBSD's, bundled in :mod:`pfha.data`.
"""

from __future__ import annotations

from pfha import data

TCP_FLAGS = "FSRPAUEW"

#: IPTOS names pfctl accepts for ``tos`` (parse.y: map_tos)
TOS_NAMES = {"lowdelay": 0x10, "throughput": 0x08, "reliability": 0x04}

#: pf's ``set prio``/``prio`` range
PRIO_MAX = 7

UID_MAX = 0xFFFFFFFF
GID_MAX = 0xFFFFFFFF


_SERVICE_PORTS: dict[str, int | None] = {}


def port_number(name: str) -> int | None:
    """A port name or number (pfctl getservice(): tcp first, then udp)."""
    if (name.isascii() and name.isdigit()):
        value = int(name)
        return value if value <= 65535 else None
    try:
        return _SERVICE_PORTS[name]  # names are looked up again and again: memoised
    except KeyError:
        pass
    port = _service_port(name)
    if len(_SERVICE_PORTS) < 4096:
        _SERVICE_PORTS[name] = port
    return port


def _service_port(name: str) -> int | None:
    if name.startswith("0x"):
        try:
            value = int(name, 16)
        except ValueError:
            return None
        return value if value <= 65535 else None
    port = data.service_port(name, "tcp")
    if port is None:
        port = data.service_port(name, "udp")
    return port


def port_name(port: int, proto: str) -> str | None:
    return data.service_name(port, proto)


def protocol_number(name: str) -> int | None:
    return data.protocol_number(name)


def protocol_name(number: int) -> str | None:
    return data.protocol_name(number)


def parse_flags(text: str) -> int | None:
    """pfctl parse_flags: letters from FSRPAUEW; an empty set means all flags."""
    value = 0
    for ch in text:
        i = TCP_FLAGS.find(ch)
        if i < 0:
            return None
        value |= 1 << i
    return value if value else 0xFF


def format_flags(value: int) -> str:
    return "".join(ch for i, ch in enumerate(TCP_FLAGS) if value & (1 << i))


def lookup_option(word: str, options: tuple[str, ...]) -> str | None:
    """pfctl_lookup_option(): the first of ``options`` that ``word`` begins (pfctl's lists are
    ordered so that one letter names the usual one: ``-s r`` rules, ``-o b`` basic)."""
    if not word:
        return None
    return next((option for option in options if option.startswith(word)), None)
