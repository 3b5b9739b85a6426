"""FreeBSD's name tables, bundled: what pfctl resolves names against and prints names from.

Linux's /etc/services and /etc/protocols differ from FreeBSD's (112 is ``vrrp`` there, FreeBSD
calls it ``carp``; Debian has no ``pfsync``, no ``mpm-flags``...), and pfctl's printed output
depends on them, so pfha carries FreeBSD's copies (services, protocols, base users/groups) and
pfctl's ICMP type/code tables. Pure lookups; the files are read once, lazily.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources


def _lines(name: str):
    text = resources.files(__package__).joinpath(name).read_text(encoding="utf-8")
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            yield line.split()


@lru_cache(maxsize=None)
def _services() -> tuple[dict, dict]:
    """(name, proto) -> port and (port, proto) -> first name, in file order."""
    by_name: dict[tuple[str, str], int] = {}
    by_port: dict[tuple[int, str], str] = {}
    for fields in _lines("services"):
        name, portspec, aliases = fields[0], fields[1], fields[2:]
        port_text, _, which = portspec.partition("/")
        port = int(port_text)
        protos = {"t": ("tcp",), "u": ("udp",), "": ("tcp", "udp")}[which]
        for proto in protos:
            by_port.setdefault((port, proto), name)
            for alias in (name, *aliases):
                by_name.setdefault((alias, proto), port)
    return by_name, by_port


def service_port(name: str, proto: str) -> int | None:
    """getservbyname(name, proto) on FreeBSD."""
    return _services()[0].get((name, proto))


def service_name(port: int, proto: str) -> str | None:
    """getservbyport(port, proto) on FreeBSD."""
    return _services()[1].get((port, proto))


@lru_cache(maxsize=None)
def _protocols() -> tuple[dict, dict]:
    by_name: dict[str, int] = {}
    by_number: dict[int, str] = {}
    for fields in _lines("protocols"):
        number = int(fields[1])
        by_number.setdefault(number, fields[0])
        for alias in (fields[0], *fields[2:]):
            by_name.setdefault(alias, number)
    return by_name, by_number


def protocol_number(name: str) -> int | None:
    """getprotobyname(name) on FreeBSD (names are case-sensitive, as there)."""
    return _protocols()[0].get(name)


def protocol_name(number: int) -> str | None:
    """getprotobynumber(number) on FreeBSD."""
    return _protocols()[1].get(number)


@lru_cache(maxsize=None)
def _ids() -> tuple[dict, dict]:
    users: dict[str, int] = {}
    groups: dict[str, int] = {}
    for kind, name, number in _lines("passwd"):
        (users if kind == "user" else groups).setdefault(name, int(number))
    return users, groups


def user_id(name: str) -> int | None:
    return _ids()[0].get(name)


def group_id(name: str) -> int | None:
    return _ids()[1].get(name)


# pfctl_parser.c: icmp_type[], icmp6_type[], icmp_code[], icmp6_code[] (name, type[, code]).
ICMP_TYPES: tuple[tuple[str, int], ...] = (
    ("echoreq", 8), ("echorep", 0), ("unreach", 3), ("squench", 4), ("redir", 5),
    ("althost", 6), ("routeradv", 9), ("routersol", 10), ("timex", 11), ("paramprob", 12),
    ("timereq", 13), ("timerep", 14), ("inforeq", 15), ("inforep", 16), ("maskreq", 17),
    ("maskrep", 18), ("trace", 30), ("dataconv", 31), ("mobredir", 32), ("ipv6-where", 33),
    ("ipv6-here", 34), ("mobregreq", 35), ("mobregrep", 36), ("skip", 39), ("photuris", 40),
)
ICMP6_TYPES: tuple[tuple[str, int], ...] = (
    ("unreach", 1), ("toobig", 2), ("timex", 3), ("paramprob", 4), ("echoreq", 128),
    ("echorep", 129), ("groupqry", 130), ("listqry", 130), ("grouprep", 131),
    ("listenrep", 131), ("groupterm", 132), ("listendone", 132), ("routersol", 133),
    ("routeradv", 134), ("neighbrsol", 135), ("neighbradv", 136), ("redir", 137),
    ("routrrenum", 138), ("wrureq", 139), ("wrurep", 140), ("fqdnreq", 139), ("fqdnrep", 140),
    ("niqry", 139), ("nirep", 140), ("mtraceresp", 200), ("mtrace", 201),
)
ICMP_CODES: tuple[tuple[str, int, int], ...] = (
    ("net-unr", 3, 0), ("host-unr", 3, 1), ("proto-unr", 3, 2), ("port-unr", 3, 3),
    ("needfrag", 3, 4), ("srcfail", 3, 5), ("net-unk", 3, 6), ("host-unk", 3, 7),
    ("isolate", 3, 8), ("net-prohib", 3, 9), ("host-prohib", 3, 10), ("net-tos", 3, 11),
    ("host-tos", 3, 12), ("filter-prohib", 3, 13), ("host-preced", 3, 14),
    ("cutoff-preced", 3, 15), ("redir-net", 5, 0), ("redir-host", 5, 1),
    ("redir-tos-net", 5, 2), ("redir-tos-host", 5, 3), ("normal-adv", 9, 0),
    ("common-adv", 9, 16), ("transit", 11, 0), ("reassemb", 11, 1), ("badhead", 12, 0),
    ("optmiss", 12, 1), ("badlen", 12, 2), ("unknown-ind", 40, 1), ("auth-fail", 40, 2),
    ("decrypt-fail", 40, 3),
)
ICMP6_CODES: tuple[tuple[str, int, int], ...] = (
    ("admin-unr", 1, 1), ("noroute-unr", 1, 0), ("notnbr-unr", 1, 2), ("beyond-unr", 1, 2),
    ("addr-unr", 1, 3), ("port-unr", 1, 4), ("transit", 3, 0), ("reassemb", 3, 1),
    ("badhead", 4, 0), ("nxthdr", 4, 1), ("redironlink", 137, 0), ("redirrouter", 137, 1),
)


def icmp_type_number(name: str, v6: bool) -> int | None:
    for entry, number in ICMP6_TYPES if v6 else ICMP_TYPES:
        if entry == name:
            return number
    return None


def icmp_type_name(number: int, v6: bool) -> str | None:
    for entry, value in ICMP6_TYPES if v6 else ICMP_TYPES:
        if value == number:
            return entry
    return None


def icmp_code_number(icmp_type: int, name: str, v6: bool) -> int | None:
    for entry, typ, code in ICMP6_CODES if v6 else ICMP_CODES:
        if typ == icmp_type and entry == name:
            return code
    return None


def icmp_code_name(icmp_type: int, code: int, v6: bool) -> str | None:
    for entry, typ, value in ICMP6_CODES if v6 else ICMP_CODES:
        if typ == icmp_type and value == code:
            return entry
    return None
