"""A pfha node's configuration: the TOML schema, read into frozen dataclasses and validated.

One file describes one firewall of the pair: its name, the interfaces pf.conf names and the
Linux devices behind them, the pf.conf to load, the CARP groups it takes part in, state sync,
the pflog file and the host settings pfha manages (forwarding, redirects, blackholing and
any extra sysctls). ``docs/node-config.md`` documents every key; keep the two in step.

Every mistake a user can make in the file is a :class:`NodeConfigError` naming the file, the
key and what is wrong. Unknown keys are errors too: a misspelt ``advskew`` silently ignored is
exactly the kind of failure this project exists to prevent.

This module only reads the one file it is given (and never the pf.conf, key or password
files it points at); it never touches interfaces, sysctls or the network.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfha.errors import SourceError
from pfha.textfile import read_text

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

# carp(4): vhid 1..255; advskew 0..254 (240 and up are used for demotion); advbase 1..255 s.
VHID_RANGE = (1, 255)
ADVSKEW_RANGE = (0, 254)
ADVBASE_RANGE = (1, 255)
# carp(4): the passphrase is truncated to CARP_KEY_LEN (20) bytes, of which 19 are usable.
CARP_PASS_MAX = 19
# Linux IFNAMSIZ is 16 with the terminating NUL.
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")
SYSCTL_RE = re.compile(r"^[a-z0-9_]+(\.[A-Za-z0-9_.-]+)+$")


class NodeConfigError(SourceError):
    """A node configuration that cannot be used: ``FILE: KEY: what is wrong``."""

    def __init__(self, message: str, filename: str | None = None, key: str | None = None,
                 line: int | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message, filename, line)


@dataclass(frozen=True)
class Interface:
    """A network interface as pf.conf names it (``xl0``) and the Linux device behind it."""

    name: str
    device: str
    addresses: tuple[IPInterface, ...] = ()


@dataclass(frozen=True)
class CarpGroup:
    """One CARP virtual host: a vhid on a parent interface, carrying shared addresses.

    ``name`` is the BSD carp interface pf.conf may refer to (``carp0`` in FreeBSD <= 9, where
    each vhid was its own cloned interface); None in the FreeBSD 10+ form, where the vhid
    lives on the parent itself.
    """

    vhid: int
    parent: str
    addresses: tuple[IPInterface, ...]
    password: str | None = None
    password_file: Path | None = None
    advbase: int = 1
    advskew: int = 0
    preempt: bool = False
    name: str | None = None


@dataclass(frozen=True)
class Sync:
    """State synchronisation (pfsync's job): the link it runs on, the peer and the key.

    ``peer`` None means multicast on ``device``, as pfsync does without ``syncpeer``.
    pfsync itself has no authentication; pfha's sync authenticates with ``key`` or the
    contents of ``key_file`` (pfsync.md §5.3).
    """

    device: str
    peer: IPAddress | None = None
    key: str | None = None
    key_file: Path | None = None
    defer: bool = False
    sched: str | None = None  # the daemon's CPU scheduling ("rr:99", "other"); None: pfha.sync.sched.DEFAULT
    refresh: float | None = None  # seconds between refresh sweeps (0: off); None: pfha.sync.runner.REFRESH


@dataclass(frozen=True)
class Pflog:
    """Where pflog records go: a pcap file of DLT_PFLOG records, as pflogd writes."""

    file: Path | None = Path("/var/log/pflog")
    enabled: bool = True


@dataclass(frozen=True)
class Host:
    """The host settings pfha applies when the node starts, and checks in ``pfha audit``.

    ``forwarding`` is FreeBSD's ``gateway_enable``; ``accept_redirects`` False is
    ``icmp_drop_redirects``; the blackhole settings are ``net.inet.tcp.blackhole`` and
    ``net.inet.udp.blackhole``, which Linux has no sysctl for (docs/node-config.md gives the
    nftables rules that do the same). ``sysctl`` holds any further Linux sysctls, verbatim.
    """

    forwarding: bool = True
    default_router: IPAddress | None = None
    accept_redirects: bool | None = None
    tcp_blackhole: int = 0
    udp_blackhole: bool = False
    sysctl: tuple[tuple[str, str], ...] = ()

    def sysctls(self) -> dict[str, str]:
        """The Linux sysctls these settings amount to, in the order they should be written."""
        out: dict[str, str] = {}
        flag = "1" if self.forwarding else "0"
        out["net.ipv4.ip_forward"] = flag
        out["net.ipv6.conf.all.forwarding"] = flag
        if self.accept_redirects is not None:
            value = "1" if self.accept_redirects else "0"
            for key in ("net.ipv4.conf.all.accept_redirects",
                        "net.ipv4.conf.default.accept_redirects",
                        "net.ipv4.conf.all.secure_redirects",
                        "net.ipv4.conf.default.secure_redirects",
                        "net.ipv6.conf.all.accept_redirects",
                        "net.ipv6.conf.default.accept_redirects"):
                out[key] = value
        out.update(self.sysctl)
        return out


@dataclass(frozen=True)
class NodeConfig:
    """Everything one node of the pair needs; paths are absolute (resolved against the file)."""

    name: str
    pf_conf: Path
    interfaces: tuple[Interface, ...]
    carp: tuple[CarpGroup, ...] = ()
    sync: Sync | None = None
    pflog: Pflog = field(default_factory=Pflog)
    host: Host = field(default_factory=Host)
    source: Path | None = field(default=None, compare=False)

    def interface(self, name: str) -> Interface | None:
        """The interface pf.conf calls ``name`` (not the Linux device name)."""
        for iface in self.interfaces:
            if iface.name == name:
                return iface
        return None

    def device_map(self) -> dict[str, str]:
        """pf.conf interface name -> Linux device (``lo0 -> lo``)."""
        return {iface.name: iface.device for iface in self.interfaces}

    def addresses_by_interface(self) -> dict[str, tuple[IPInterface, ...]]:
        """Every address pf.conf can reach through an interface name, CARP ones included.

        A named carp group (``carp0``, FreeBSD <= 9) has its virtual addresses under its own
        name only, so ``$ext_if`` keeps meaning the node's own address as it did on FreeBSD;
        an unnamed group (FreeBSD 10+) has them on its parent, as ``ifconfig em0`` lists them.
        """
        out = {iface.name: tuple(iface.addresses) for iface in self.interfaces}
        for group in self.carp:
            key = group.name or group.parent
            out[key] = out.get(key, ()) + group.addresses
        return out

    def own_addresses(self) -> frozenset[IPAddress]:
        """The addresses that belong to this node alone (not shared through CARP)."""
        return frozenset(a.ip for iface in self.interfaces for a in iface.addresses)

    def shared_addresses(self) -> frozenset[IPAddress]:
        """The CARP addresses, which move to whichever node is MASTER."""
        return frozenset(a.ip for group in self.carp for a in group.addresses)

    def interface_view(self):
        """The :class:`pfha.conf.InterfaceView` pf.conf is parsed against on this node."""
        from pfha.conf.interfaces import InterfaceView
        from pfha.conf.live import system_resolver

        specs = [f"{name}={','.join(map(str, addrs))}" for name, addrs in self.addresses_by_interface().items()]
        return InterfaceView.from_specs(specs, resolver=system_resolver)


# ---------------------------------------------------------------------------------------------
# Reading and validation


def load(path: str | Path) -> NodeConfig:
    """Read and validate a node TOML file."""
    path = Path(path)
    return loads(read_text(path, "node config", NodeConfigError), path)


def loads(text: str, path: str | Path = "<node config>") -> NodeConfig:
    """Validate a node TOML text; relative paths in it are taken relative to ``path``'s folder."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = re.search(r"\(at line (\d+), column \d+\)$", message)
        line = int(match.group(1)) if match else None
        message = message[: match.start()].rstrip() if match else message
        raise NodeConfigError(f"not valid TOML: {message}", str(path), line=line) from None
    return _Reader(path).node(data)


class _Reader:
    """Walks the parsed TOML, checking each key; every error names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent if str(path) != "<node config>" else Path.cwd()

    def fail(self, key: str, message: str) -> NodeConfigError:
        return NodeConfigError(message, str(self.path), key)

    # -- typed getters -------------------------------------------------------------------------

    def table(self, data: Mapping[str, Any], key: str, where: str, required: bool = False) -> dict:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(_join(where, key), "missing (a table is required)")
            return {}
        if not isinstance(value, dict):
            raise self.fail(_join(where, key), f"must be a table, got {_kind(value)}")
        return value

    def only(self, data: Mapping[str, Any], where: str, allowed: set[str]) -> None:
        for key in data:
            if key not in allowed:
                key = _quote_key(key)
                hint = _closest(key, allowed)
                extra = f" (did you mean {hint!r}?)" if hint else ""
                raise self.fail(_join(where, key), f"unknown key{extra}; allowed: {', '.join(sorted(allowed))}")

    def string(self, data: Mapping[str, Any], key: str, where: str, required: bool = False,
               default: str | None = None) -> str | None:
        value = data.get(key)
        if value is None:
            if required:
                raise self.fail(_join(where, key), "missing (a string is required)")
            return default
        if not isinstance(value, str) or not value:
            raise self.fail(_join(where, key), f"must be a non-empty string, got {_kind(value)}")
        return value

    def boolean(self, data: Mapping[str, Any], key: str, where: str, default: bool | None) -> bool | None:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(_join(where, key), f"must be true or false, got {_kind(value)}")
        return value

    def integer(self, data: Mapping[str, Any], key: str, where: str, bounds: tuple[int, int],
                default: int | None = None) -> int:
        value = data.get(key)
        if value is None:
            if default is None:
                raise self.fail(_join(where, key), f"missing (an integer {bounds[0]}..{bounds[1]} is required)")
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(_join(where, key), f"must be an integer {bounds[0]}..{bounds[1]}, got {_kind(value)}")
        if not bounds[0] <= value <= bounds[1]:
            raise self.fail(_join(where, key), f"must be {bounds[0]}..{bounds[1]}, got {value}")
        return value

    def path_value(self, data: Mapping[str, Any], key: str, where: str, required: bool = False,
                   default: Path | None = None) -> Path | None:
        value = self.string(data, key, where, required)
        if value is None:
            return default
        return (self.base / value) if not Path(value).is_absolute() else Path(value)

    def address(self, value: Any, key: str) -> IPAddress:
        if not isinstance(value, str):
            raise self.fail(key, f"must be an IP address string, got {_kind(value)}")
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            raise self.fail(key, f"not an IP address: {value!r}") from None

    def addresses(self, data: Mapping[str, Any], key: str, where: str, required: bool) -> tuple[IPInterface, ...]:
        value = data.get(key)
        full = _join(where, key)
        if value is None:
            if required:
                raise self.fail(full, "missing (a list of addresses like \"192.0.2.1/24\" is required)")
            return ()
        if not isinstance(value, list):
            raise self.fail(full, f"must be a list of addresses, got {_kind(value)}")
        if required and not value:
            raise self.fail(full, "must list at least one address")
        out = []
        for index, item in enumerate(value):
            if not isinstance(item, str):
                raise self.fail(f"{full}[{index}]", f"must be a string like \"192.0.2.1/24\", got {_kind(item)}")
            if "/" not in item:
                raise self.fail(f"{full}[{index}]", f"{item!r} has no prefix length (write e.g. \"{item}/24\")")
            try:
                out.append(ipaddress.ip_interface(item))
            except ValueError:
                raise self.fail(f"{full}[{index}]", f"not an address with prefix length: {item!r}") from None
        return tuple(out)

    def ifname(self, value: str, key: str) -> str:
        if not IFNAME_RE.match(value):
            raise self.fail(key, f"{value!r} is not a valid interface name (1-15 letters, digits, '_.:-')")
        return value

    # -- sections ------------------------------------------------------------------------------

    def node(self, data: dict[str, Any]) -> NodeConfig:
        self.only(data, "", {"node", "interfaces", "carp", "sync", "pflog", "host"})
        node = self.table(data, "node", "", required=True)
        self.only(node, "node", {"name", "pf_conf"})
        name = self.string(node, "name", "node", required=True)
        pf_conf = self.path_value(node, "pf_conf", "node", required=True)
        interfaces = self.interfaces(self.table(data, "interfaces", "", required=True))
        known = {iface.name for iface in interfaces}
        carp = self.carp(self.table(data, "carp", ""), known)
        sync = self.sync(data.get("sync"), known)
        config = NodeConfig(
            name=name, pf_conf=pf_conf, interfaces=interfaces, carp=carp, sync=sync,
            pflog=self.pflog(self.table(data, "pflog", "")), host=self.host(self.table(data, "host", "")),
            source=self.path,
        )
        return config

    def interfaces(self, table: dict[str, Any]) -> tuple[Interface, ...]:
        if not table:
            raise self.fail("interfaces", "must name at least one interface")
        out = []
        devices: dict[str, str] = {}
        for name, body in table.items():
            where = f"interfaces.{name}"
            self.ifname(name, where)
            if isinstance(body, str):
                body = {"device": body}
            if not isinstance(body, dict):
                raise self.fail(where, f"must be a table (or a Linux device name string), got {_kind(body)}")
            self.only(body, where, {"device", "addresses"})
            device = self.string(body, "device", where, default=_default_device(name))
            self.ifname(device, f"{where}.device")
            if device in devices:
                raise self.fail(f"{where}.device", f"device {device!r} is already used by interfaces.{devices[device]}")
            devices[device] = name
            out.append(Interface(name, device, self.addresses(body, "addresses", where, required=False)))
        return tuple(out)

    def carp(self, table: dict[str, Any], known: set[str]) -> tuple[CarpGroup, ...]:
        self.only(table, "carp", {"preempt", "group"})
        preempt = self.boolean(table, "preempt", "carp", default=False)
        groups = table.get("group", [])
        if not isinstance(groups, list):
            raise self.fail("carp.group", "must be an array of tables ([[carp.group]])")
        out: list[CarpGroup] = []
        seen: dict[int, int] = {}
        for index, body in enumerate(groups):
            where = f"carp.group[{index}]"
            if not isinstance(body, dict):
                raise self.fail(where, f"must be a table, got {_kind(body)}")
            self.only(body, where, {"vhid", "parent", "addresses", "password", "password_file",
                                    "advbase", "advskew", "preempt", "name"})
            vhid = self.integer(body, "vhid", where, VHID_RANGE)
            if vhid in seen:
                raise self.fail(f"{where}.vhid", f"vhid {vhid} is already used by carp.group[{seen[vhid]}]")
            seen[vhid] = index
            parent = self.string(body, "parent", where, required=True)
            if parent not in known:
                raise self.fail(f"{where}.parent", f"{parent!r} is not one of [interfaces]: {', '.join(sorted(known))}")
            password = self.string(body, "password", where)
            if password is not None and len(password.encode()) > CARP_PASS_MAX:
                raise self.fail(f"{where}.password", f"longer than {CARP_PASS_MAX} bytes; carp(4) would truncate it")
            password_file = self.path_value(body, "password_file", where)
            if password is not None and password_file is not None:
                raise self.fail(f"{where}.password_file", "give either password or password_file, not both")
            name = self.string(body, "name", where)
            if name is not None:
                self.ifname(name, f"{where}.name")
                if name in known:
                    raise self.fail(f"{where}.name", f"{name!r} is also a physical interface in [interfaces]")
            out.append(CarpGroup(
                vhid=vhid, parent=parent, addresses=self.addresses(body, "addresses", where, required=True),
                password=password, password_file=password_file,
                advbase=self.integer(body, "advbase", where, ADVBASE_RANGE, default=1),
                advskew=self.integer(body, "advskew", where, ADVSKEW_RANGE, default=0),
                preempt=self.boolean(body, "preempt", where, default=preempt), name=name,
            ))
        return tuple(out)

    def sync(self, body: Any, known: set[str]) -> Sync | None:
        if body is None:
            return None
        if not isinstance(body, dict):
            raise self.fail("sync", f"must be a table, got {_kind(body)}")
        self.only(body, "sync", {"device", "peer", "key", "key_file", "defer", "sched", "refresh"})
        device = self.string(body, "device", "sync", required=True)
        if device not in known:
            raise self.fail("sync.device", f"{device!r} is not one of [interfaces]: {', '.join(sorted(known))}")
        peer = body.get("peer")
        key = self.string(body, "key", "sync")
        key_file = self.path_value(body, "key_file", "sync")
        if key is not None and key_file is not None:
            raise self.fail("sync.key_file", "give either key or key_file, not both")
        sched = self.string(body, "sched", "sync")
        if sched is not None:
            from pfha.sync import sched as sync_sched

            try:
                sched = str(sync_sched.parse(sched))
            except sync_sched.SchedError as error:
                raise self.fail("sync.sched", str(error)) from None
        refresh = body.get("refresh")
        if refresh is not None and (isinstance(refresh, bool) or not isinstance(refresh, (int, float)) or refresh < 0):
            raise self.fail("sync.refresh", f"must be a number of seconds, 0 (off) or more, got {refresh!r}")
        return Sync(device=device, peer=None if peer is None else self.address(peer, "sync.peer"),
                    key=key, key_file=key_file, defer=bool(self.boolean(body, "defer", "sync", default=False)),
                    sched=sched, refresh=None if refresh is None else float(refresh))

    def pflog(self, body: dict[str, Any]) -> Pflog:
        self.only(body, "pflog", {"file", "enabled"})
        return Pflog(file=self.path_value(body, "file", "pflog", default=Pflog.file),
                     enabled=bool(self.boolean(body, "enabled", "pflog", default=True)))

    def host(self, body: dict[str, Any]) -> Host:
        self.only(body, "host", {"forwarding", "default_router", "accept_redirects", "tcp_blackhole",
                                 "udp_blackhole", "sysctl"})
        router = body.get("default_router")
        sysctl = self.table(body, "sysctl", "host")
        pairs = []
        for key, value in sysctl.items():
            where = f"host.sysctl.{_quote_key(key)}"
            if not SYSCTL_RE.match(key):
                raise self.fail(where, "not a sysctl name (like \"net.ipv4.tcp_syncookies\")")
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise self.fail(where, f"must be a string or an integer, got {_kind(value)}")
            pairs.append((key, str(value)))
        return Host(
            forwarding=bool(self.boolean(body, "forwarding", "host", default=True)),
            default_router=None if router is None else self.address(router, "host.default_router"),
            accept_redirects=self.boolean(body, "accept_redirects", "host", default=None),
            tcp_blackhole=self.integer(body, "tcp_blackhole", "host", (0, 2), default=0),
            udp_blackhole=bool(self.boolean(body, "udp_blackhole", "host", default=False)),
            sysctl=tuple(pairs),
        )


def _default_device(name: str) -> str:
    """BSD's loopback is lo0; Linux's is lo. Every other name is kept as it is."""
    return "lo" if name == "lo0" else name


def _quote_key(key: str) -> str:
    """A key as TOML would write it: bare when it can be, else double-quoted."""
    return key if re.match(r"^[A-Za-z0-9_-]+$", key) else '"' + key.replace('"', '\\"') + '"'


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(value: Any) -> str:
    kinds: dict[type, str] = {str: "a string", bool: "a boolean", int: "an integer", float: "a float",
                              list: "an array", dict: "a table"}
    return kinds.get(type(value), type(value).__name__)


def _closest(word: str, choices: set[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.75)
    return found[0] if found else None

