"""FreeBSD rc.conf and sysctl.conf turned into a pfha node configuration.

The tutorial's firewalls are configured the FreeBSD way: interfaces, CARP and pfsync in
``/etc/rc.conf``, a few kernel knobs in ``/etc/sysctl.conf``. This module reads both (as text:
it is pure and never looks at the running system) and builds a :class:`NodeConfig`, mapping
each setting to its Linux equivalent. Whatever has no equivalent, or is the distribution's job
rather than pfha's (sshd, ntpdate, securelevel...), becomes a :class:`Note` with the file and
line it came from: nothing is dropped silently.

Both rc.conf forms are understood (carp.md §5):

* FreeBSD <= 9: ``cloned_interfaces="carp0"``, ``ifconfig_carp0="IP vhid 1 pass foo"`` and
  ``ifconfig_carp0_aliasN=...``; the carp interface finds its parent by subnet.
* FreeBSD 10+: ``ifconfig_em0_aliasN="inet vhid 1 pass foo alias IP/32"`` on the parent.

and pfsync as ``ifconfig_pfsync0="up syncdev rl0 syncpeer 10.0.0.2"`` (``syncif`` is the old
spelling of ``syncdev``).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pfha.errors import SourceError
from pfha.textfile import read_text
from pfha.node.config import (
    ADVBASE_RANGE, ADVSKEW_RANGE, CARP_PASS_MAX, VHID_RANGE, CarpGroup, Host, Interface, IPInterface,
    NodeConfig, Pflog, Sync,
)

ASSIGN_RE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
SYSCTL_LINE_RE = re.compile(r"^\s*([A-Za-z0-9_.%-]+)\s*=\s*(.*?)\s*$")
IFCONFIG_RE = re.compile(r"^ifconfig_([A-Za-z0-9_.]+?)(_ipv6)?(?:_alias(\d+))?$")
# ifconfig_IF_name (rename), ifconfig_DEFAULT and friends: reported, not imported.
IFCONFIG_OTHER_RE = re.compile(r"^ifconfig_([A-Za-z0-9_.]+?)_(name|descr)$|^ifconfig_DEFAULT$")
# Interfaces that are not network devices of their own on Linux.
PSEUDO_PREFIXES = ("carp", "pfsync", "pflog", "enc")
YES = {"yes", "true", "on", "1"}
NO = {"no", "false", "off", "0", ""}


@dataclass(frozen=True)
class Origin:
    """Where a setting came from: ``file:line``."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Note:
    """A setting the import could not carry over exactly, with what was done instead."""

    origin: Origin
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.setting}: {self.message}"


@dataclass(frozen=True)
class Imported:
    """The node configuration, what could not be mapped, and where each part came from.

    ``origins`` maps a config key (``carp.group[0]``, ``sync``, ``interfaces.xl0``,
    ``host.forwarding``, ``carp.preempt``, ``node.pf_conf``...) to the line that set it, so
    ``pfha audit`` can point at the rc.conf line a finding is about.
    """

    config: NodeConfig
    notes: tuple[Note, ...]
    origins: Mapping[str, Origin] = field(default_factory=dict)


@dataclass(frozen=True)
class Setting:
    """One ``name=value`` line of rc.conf or sysctl.conf."""

    name: str
    value: str
    origin: Origin


def parse_rc_conf(text: str, filename: str) -> tuple[dict[str, Setting], list[Note]]:
    """rc.conf is sh: ``name="value"`` lines; a later assignment wins, as when sh sources it.

    Lines that are not plain assignments (shell code) and assignments a later one overrides
    come back as notes, so nothing is dropped silently.
    """
    out: dict[str, Setting] = {}
    notes: list[Note] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        origin = Origin(filename, number)
        match = ASSIGN_RE.match(line)
        if not match:
            notes.append(Note(origin, line.split()[0], "not a name=\"value\" assignment (shell code?); not imported"))
            continue
        try:
            words = shlex.split(match.group(2), comments=True, posix=True)
        except ValueError as error:
            raise SourceError(f"{match.group(1)}: {error}", filename, number) from None
        name = match.group(1)
        if name in out:
            notes.append(Note(out[name].origin, name, f"overridden by line {number}, as sh would"))
        out[name] = Setting(name, " ".join(words), origin)
    return out, notes


def parse_sysctl_conf(text: str, filename: str) -> list[Setting]:
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = SYSCTL_LINE_RE.match(line)
        if not match:
            raise SourceError(f"not a name=value line: {line!r}", filename, number)
        out.append(Setting(match.group(1), match.group(2).strip("\"'"), Origin(filename, number)))
    return out


# ---------------------------------------------------------------------------------------------
# ifconfig arguments


@dataclass
class IfconfigArgs:
    """The parts of an ``ifconfig_*`` value this import understands, and the rest."""

    address: IPInterface | None = None
    alias: bool = False
    vhid: int | None = None
    password: str | None = None
    advskew: int | None = None
    advbase: int | None = None
    carpdev: str | None = None
    syncdev: str | None = None
    syncpeer: str | None = None
    defer: bool = False
    dhcp: bool = False
    up: bool = False
    explicit_mask: bool = False
    leftover: list[str] = field(default_factory=list)


def _classful_prefix(address: ipaddress.IPv4Address) -> int:
    """ifconfig(8) without a netmask falls back to the address class (A /8, B /16, C /24)."""
    first = int(address) >> 24
    return 8 if first < 128 else 16 if first < 192 else 24


def _netmask_prefix(mask: str) -> int:
    try:
        if mask.lower().startswith("0x"):
            mask = str(ipaddress.IPv4Address(int(mask, 16)))
        return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        raise _Fail(f"not a netmask: {mask!r}") from None


class _Fail(Exception):
    pass


def parse_ifconfig(value: str) -> tuple[IfconfigArgs, list[str]]:
    """Read ifconfig(8) words; return the arguments and notes about anything imprecise."""
    args = IfconfigArgs()
    notes: list[str] = []
    words = value.split()
    netmask: int | None = None
    i = 0

    def operand(word: str) -> str:
        nonlocal i
        if i + 1 >= len(words):
            raise _Fail(f"{word!r} needs a value")
        i += 1
        return words[i]

    while i < len(words):
        word = words[i]
        low = word.lower()
        if low in ("inet", "inet6"):
            pass
        elif low in ("up",):
            args.up = True
        elif low in ("alias", "add"):
            args.alias = True
        elif low in ("dhcp", "syncdhcp"):
            args.dhcp = True
        elif low == "netmask":
            netmask = _netmask_prefix(operand(word))
        elif low == "prefixlen":
            netmask = _int(operand(word), "prefixlen", (0, 128))
        elif low == "vhid":
            args.vhid = _int(operand(word), "vhid", VHID_RANGE)
        elif low == "pass":
            args.password = operand(word)
        elif low == "advskew":
            args.advskew = _int(operand(word), "advskew", ADVSKEW_RANGE)
        elif low == "advbase":
            args.advbase = _int(operand(word), "advbase", ADVBASE_RANGE)
        elif low == "carpdev":
            args.carpdev = operand(word)
        elif low in ("syncdev", "syncif"):
            args.syncdev = operand(word)
        elif low == "syncpeer":
            args.syncpeer = operand(word)
        elif low == "defer":
            args.defer = True
        elif low == "-defer":
            args.defer = False
        elif low == "broadcast":
            operand(word)  # Linux derives the broadcast address from the prefix, as FreeBSD does
        elif args.address is None and _looks_like_address(word):
            args.address = _address(word)
        else:
            args.leftover.append(word)
        i += 1
    if args.address is not None:
        args.explicit_mask = netmask is not None or "/" in _address_word(words)
        if netmask is not None:
            try:
                args.address = ipaddress.ip_interface(f"{args.address.ip}/{netmask}")
            except ValueError:
                raise _Fail(f"prefix length {netmask} does not fit {args.address.ip}") from None
        elif "/" not in _address_word(words) and args.address.version == 4:
            prefix = _classful_prefix(args.address.ip)
            args.address = ipaddress.ip_interface(f"{args.address.ip}/{prefix}")
            if args.vhid is None:
                notes.append(f"no netmask: FreeBSD falls back to the classful /{prefix}; so does this import")
    return args, notes


def _address_word(words: list[str]) -> str:
    return next((w for w in words if _looks_like_address(w)), "")


def _looks_like_address(word: str) -> bool:
    return bool(re.match(r"^[0-9a-fA-F:.]+(/\d+)?$", word)) and any(c in word for c in ".:")


def _address(word: str) -> IPInterface:
    try:
        return ipaddress.ip_interface(word)
    except ValueError:
        raise _Fail(f"not an address: {word!r}") from None


def _int(word: str, name: str, bounds: tuple[int, int]) -> int:
    try:
        value = int(word)
    except ValueError:
        raise _Fail(f"{name} must be an integer, got {word!r}") from None
    if not bounds[0] <= value <= bounds[1]:
        raise _Fail(f"{name} must be {bounds[0]}..{bounds[1]}, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# What each known rc.conf / sysctl.conf setting becomes


# rc.conf settings that are the distribution's business, not pfha's: reported, with the Linux way.
RC_NOT_MANAGED: dict[str, str] = {
    "sshd_enable": "sshd is the distribution's service (systemctl enable ssh); not managed by pfha",
    "sshd_flags": "sshd's options belong in sshd_config (-4 is AddressFamily inet); not managed by pfha",
    "ntpdate_enable": "time sync is the distribution's (systemd-timesyncd or chrony); not managed by pfha",
    "ntpdate_flags": "time sync is the distribution's (systemd-timesyncd or chrony); not managed by pfha",
    "ntpd_enable": "time sync is the distribution's (systemd-timesyncd or chrony); not managed by pfha",
    "usbd_enable": "Linux has no usbd (udev handles USB); nothing to do",
    "syslogd_flags": "-ss (no network socket) is rsyslog's/journald's default on Debian; not managed by pfha",
    "syslogd_enable": "logging is the distribution's (journald/rsyslog); not managed by pfha",
    "kern_securelevel_enable": "Linux has no securelevel; the nearest is kernel lockdown (lockdown=integrity on the kernel command line); not managed by pfha",
    "kern_securelevel": "Linux has no securelevel; the nearest is kernel lockdown (lockdown=integrity on the kernel command line); not managed by pfha",
    "dhcpd_enable": "the DHCP server is the distribution's (isc-dhcp-server or dnsmasq); not managed by pfha",
    "inetd_enable": "inetd is the distribution's; not managed by pfha",
    "sendmail_enable": "mail is the distribution's; not managed by pfha",
    "pf_flags": "pfctl flags have no meaning for pfha node; ignored",
    "pflog_flags": "pflogd flags have no meaning for pfha's pflog writer; ignored",
    "pflog_enable": "",  # handled below; listed so it is not reported twice
    "pfsync_enable": "",
    "tcp_drop_synfin": "Linux has no drop_synfin sysctl; drop SYN+FIN in pf.conf (scrub, or a block rule on flags)",
    "icmp_log_redirect": "Linux logs martians with net.ipv4.conf.all.log_martians, not redirects; not imported",
    "clear_tmp_enable": "tmpfs or systemd-tmpfiles clears /tmp on Linux; not managed by pfha",
}

SYSCTL_TO_LINUX: dict[str, tuple[str, Mapping[str, str]]] = {
    # FreeBSD sysctl -> (Linux sysctl, value map; "*" copies the value)
    "net.inet.ip.redirect": ("net.ipv4.conf.all.send_redirects", {"*": "*"}),
    "net.inet.ip.sourceroute": ("net.ipv4.conf.all.accept_source_route", {"*": "*"}),
    "net.inet.ip.accept_sourceroute": ("net.ipv4.conf.all.accept_source_route", {"*": "*"}),
    "net.inet.tcp.syncookies": ("net.ipv4.tcp_syncookies", {"*": "*"}),
    "net.inet.icmp.bmcastecho": ("net.ipv4.icmp_echo_ignore_broadcasts", {"0": "1", "1": "0"}),
    "net.inet.ip.check_interface": ("net.ipv4.conf.all.rp_filter", {"1": "1", "0": "0"}),
}

SYSCTL_NONE: dict[str, str] = {
    "net.inet.tcp.sendspace": "Linux autotunes socket buffers; the default send buffer is the middle value of net.ipv4.tcp_wmem, which also holds the limits, so it is not set from this alone",
    "net.inet.tcp.recvspace": "Linux autotunes socket buffers; the default receive buffer is the middle value of net.ipv4.tcp_rmem, which also holds the limits, so it is not set from this alone",
    "net.inet.tcp.drop_synfin": "Linux has no drop_synfin sysctl; drop SYN+FIN in pf.conf",
    "kern.securelevel": "Linux has no securelevel; the nearest is kernel lockdown (lockdown=integrity)",
}


class _Importer:
    def __init__(self, rc: Mapping[str, Setting], sysctl: list[Setting], device_map: Mapping[str, str],
                 name: str | None, pf_conf: str | None) -> None:
        self.rc = rc
        self.sysctl = sysctl
        self.device_map = dict(device_map)
        self.name = name
        self.pf_conf = pf_conf
        self.notes: list[Note] = []
        self.origins: dict[str, Origin] = {}

    def note(self, setting: Setting, message: str) -> None:
        self.notes.append(Note(setting.origin, setting.name, message))

    def fail(self, setting: Setting, message: str) -> SourceError:
        return SourceError(f"{setting.name}: {message}", setting.origin.file, setting.origin.line)

    def ifconfig(self, setting: Setting) -> IfconfigArgs:
        try:
            args, notes = parse_ifconfig(setting.value)
        except _Fail as error:
            raise self.fail(setting, str(error)) from None
        for message in notes:
            self.note(setting, message)
        if args.leftover:
            self.note(setting, f"ifconfig words not imported: {' '.join(args.leftover)}")
        if args.dhcp:
            self.note(setting, "DHCP: the address comes from a DHCP client on Linux; "
                               "a firewall pair needs static addresses, so none is imported")
        return args

    def run(self) -> Imported:
        handled: set[str] = set()
        interfaces, carp_named = self.interfaces(handled)
        preempt = self.sysctls()
        carp = self.carp(interfaces, carp_named, preempt, handled)
        sync = self.sync(handled, {i.name for i in interfaces})
        config = NodeConfig(
            name=self.node_name(handled), pf_conf=self.pf_conf_path(handled), interfaces=tuple(interfaces),
            carp=carp, sync=sync, pflog=self.pflog(handled), host=self.host(handled), source=None,
        )
        self.rest(handled)
        for name in self.device_map:
            if config.interface(name) is None:
                raise SourceError(f"--map {name}={self.device_map[name]}: rc.conf has no interface {name!r}")
        self.notes.sort(key=lambda n: (n.origin.file, n.origin.line))
        return Imported(config, tuple(self.notes), dict(self.origins))

    # -- interfaces ----------------------------------------------------------------------------

    def interfaces(self, handled: set[str]) -> tuple[list[Interface], dict[str, list[Setting]]]:
        """Physical interfaces with their addresses, and the carpN settings to read later."""
        order: list[str] = []
        listed = self.rc.get("network_interfaces")
        if listed is not None:
            handled.add(listed.name)
            if listed.value.strip().lower() != "auto":
                order.extend(listed.value.split())
        addresses: dict[str, list[IPInterface]] = {}
        carp_named: dict[str, list[Setting]] = {}
        for setting in self.rc.values():
            if IFCONFIG_OTHER_RE.match(setting.name):
                handled.add(setting.name)
                self.note(setting, "interface renames, descriptions and defaults are not imported; "
                                   "use --map to name the Linux device")
                continue
            match = IFCONFIG_RE.match(setting.name)
            if not match:
                continue
            ifname = match.group(1)
            if ifname.startswith("pfsync"):
                continue
            handled.add(setting.name)
            if ifname.startswith("carp"):
                carp_named.setdefault(ifname, []).append(setting)
                continue
            if ifname.startswith(PSEUDO_PREFIXES):
                self.note(setting, f"{ifname} has no Linux counterpart; not imported")
                continue
            args = self.ifconfig(setting)
            if ifname not in order:
                order.append(ifname)
            if args.vhid is not None:
                carp_named.setdefault(f"@{ifname}", []).append(setting)  # FreeBSD 10+ form
                continue
            if args.address is not None:
                addresses.setdefault(ifname, []).append(args.address)
            self.origins.setdefault(f"interfaces.{ifname}", setting.origin)
        out = []
        for ifname in order:
            if ifname.startswith(PSEUDO_PREFIXES):
                continue
            device = self.device_map.get(ifname, "lo" if ifname == "lo0" else ifname)
            out.append(Interface(ifname, device, tuple(addresses.get(ifname, ()))))
        return out, carp_named

    # -- CARP ----------------------------------------------------------------------------------

    def carp(self, interfaces: list[Interface], named: dict[str, list[Setting]], preempt: bool,
             handled: set[str]) -> tuple[CarpGroup, ...]:
        cloned_setting = self.rc.get("cloned_interfaces")
        cloned: list[str] = []
        if cloned_setting is not None:
            handled.add(cloned_setting.name)
            cloned = cloned_setting.value.split()
            for ifname in cloned:
                if not ifname.startswith(("carp", "pfsync", "pflog")):
                    self.note(cloned_setting, f"{ifname}: cloned interface kind not imported")
        groups: dict[int, dict] = {}
        for key, settings in named.items():
            if not key.startswith("@") and key not in cloned:
                self.note(settings[0], f"{key} is configured but not in cloned_interfaces; FreeBSD would "
                                       "not create it; imported anyway")
            for setting in sorted(settings, key=lambda s: s.origin.line):
                args = self.ifconfig(setting)
                if args.vhid is None:
                    raise self.fail(setting, "a carp address needs 'vhid N'")
                if args.address is None:
                    raise self.fail(setting, "a carp setting needs an address")
                if key.startswith("@"):
                    parent, name = key[1:], None
                else:
                    name = key
                    parent = args.carpdev or self.parent_by_subnet(interfaces, args.address, setting)
                group = groups.get(args.vhid)
                if group is None:
                    group = groups[args.vhid] = {
                        "vhid": args.vhid, "parent": parent, "name": name, "addresses": [],
                        "password": args.password, "advskew": args.advskew, "advbase": args.advbase,
                        "setting": setting,
                    }
                    self.origins[f"carp.vhid{args.vhid}"] = setting.origin
                else:
                    self.agree(group, args, parent, name, setting)
                address = args.address
                if not args.explicit_mask and not key.startswith("@"):
                    # FreeBSD <= 9: the carp address lives in its parent's subnet.
                    parent_iface = next(i for i in interfaces if i.name == parent)
                    for net in parent_iface.addresses:
                        if address.ip in net.network:
                            address = ipaddress.ip_interface(f"{address.ip}/{net.network.prefixlen}")
                            break
                group["addresses"].append(address)
        out = []
        for vhid in sorted(groups, key=lambda v: groups[v]["setting"].origin.line):
            group = groups[vhid]
            password = group["password"]
            if password is not None and len(password.encode()) > CARP_PASS_MAX:
                self.note(group["setting"], f"pass is longer than {CARP_PASS_MAX} bytes; carp(4) uses only the first {CARP_PASS_MAX}")
                password = password.encode()[:CARP_PASS_MAX].decode(errors="ignore")
            if password is None:
                self.note(group["setting"], "no 'pass': adverts are authenticated with an empty key, as in carp(4)")
            out.append(CarpGroup(
                vhid=vhid, parent=group["parent"], addresses=tuple(group["addresses"]), password=password,
                advbase=group["advbase"] if group["advbase"] is not None else 1,
                advskew=group["advskew"] if group["advskew"] is not None else 0,
                preempt=preempt, name=group["name"],
            ))
            self.origins[f"carp.group[{len(out) - 1}]"] = group["setting"].origin
        return tuple(out)

    def agree(self, group: dict, args: IfconfigArgs, parent: str, name: str | None, setting: Setting) -> None:
        """Every address of one vhid must carry the same vhid parameters."""
        if name != group["name"] and group["name"] is not None and name is not None:
            raise self.fail(setting, f"vhid {args.vhid} is already used by {group['name']}")
        if parent != group["parent"]:
            raise self.fail(setting, f"vhid {args.vhid} is on {group['parent']} elsewhere, here on {parent}")
        for key in ("password", "advskew", "advbase"):
            mine = getattr(args, key)
            if mine is not None and group[key] is not None and mine != group[key]:
                raise self.fail(setting, f"vhid {args.vhid}: {key} {mine!r} differs from "
                                         f"{group[key]!r} at {group['setting'].origin}")
            if group[key] is None:
                group[key] = mine

    def parent_by_subnet(self, interfaces: list[Interface], address: IPInterface, setting: Setting) -> str:
        """FreeBSD <= 9 attaches carpN to the interface with an address in the VIP's subnet."""
        for iface in interfaces:
            if iface.name == "lo0":
                continue
            for net in iface.addresses:
                if address.ip in net.network:
                    return iface.name
        raise self.fail(setting, f"no interface has an address in {address.ip}'s subnet, so FreeBSD would "
                                 "not know the parent; add 'carpdev IF' or the parent's address")

    # -- pfsync, pflog, pf ---------------------------------------------------------------------

    def sync(self, handled: set[str], known: set[str]) -> Sync | None:
        found = [s for s in self.rc.values() if IFCONFIG_RE.match(s.name) and s.name.startswith("ifconfig_pfsync")]
        enable = self.rc.get("pfsync_enable")
        if enable is not None:
            handled.add(enable.name)
        syncdev_var = self.rc.get("pfsync_syncdev")
        peer_var = self.rc.get("pfsync_syncpeer")
        if not found and syncdev_var is None:
            return None
        device = peer = None
        defer = False
        origin = None
        for setting in found:
            handled.add(setting.name)
            args = self.ifconfig(setting)
            device = args.syncdev or device
            peer = args.syncpeer or peer
            defer = defer or args.defer
            origin = origin or setting
        for var in (syncdev_var, peer_var):
            if var is not None:
                handled.add(var.name)
                origin = origin or var
        if syncdev_var is not None:
            device = syncdev_var.value
        if peer_var is not None:
            peer = peer_var.value
        assert origin is not None
        if device is None:
            raise self.fail(origin, "pfsync needs 'syncdev IF' (or syncif) to know its link")
        if device not in known:
            raise self.fail(origin, f"syncdev {device!r} is not one of this node's interfaces")
        self.origins["sync"] = origin.origin
        if peer is None:
            self.note(origin, "no syncpeer: state sync multicasts on the sync link as pfsync does; "
                              "set sync.peer to the other node's address to send unicast")
        self.note(origin, "pfsync has no authentication; pfha's sync can authenticate: set sync.key_file "
                          "to the same secret file on both nodes")
        try:
            peer_address = ipaddress.ip_address(peer) if peer else None
        except ValueError:
            raise self.fail(origin, f"syncpeer {peer!r} is not an IP address") from None
        return Sync(device=device, peer=peer_address, defer=defer)

    def pflog(self, handled: set[str]) -> Pflog:
        enabled = self.rc.get("pflog_enable")
        logfile = self.rc.get("pflog_logfile")
        for var in (enabled, logfile):
            if var is not None:
                handled.add(var.name)
        is_on = enabled is None or enabled.value.lower() in YES
        if logfile is not None:
            self.origins["pflog.file"] = logfile.origin
        return Pflog(file=Path(logfile.value) if logfile is not None and logfile.value else Pflog.file,
                     enabled=is_on)

    def pf_conf_path(self, handled: set[str]) -> Path:
        enable = self.rc.get("pf_enable")
        rules = self.rc.get("pf_rules")
        if enable is not None:
            handled.add(enable.name)
            if enable.value.lower() not in YES:
                self.note(enable, "pf is not enabled here, but pfha node always loads its ruleset")
        if rules is not None:
            handled.add(rules.name)
            self.origins["node.pf_conf"] = rules.origin
        if self.pf_conf is not None:
            return Path(self.pf_conf)
        return Path(rules.value) if rules is not None and rules.value else Path("/etc/pf.conf")

    def node_name(self, handled: set[str]) -> str:
        hostname = self.rc.get("hostname")
        if hostname is not None:
            handled.add(hostname.name)
            self.origins["node.name"] = hostname.origin
        if self.name:
            return self.name
        if hostname is not None and hostname.value:
            return hostname.value.split(".")[0]
        return "node"

    # -- host ----------------------------------------------------------------------------------

    def host(self, handled: set[str]) -> Host:
        gateway = self.rc.get("gateway_enable")
        router = self.rc.get("defaultrouter")
        redirects = self.rc.get("icmp_drop_redirects")
        forwarding = False
        if gateway is not None:
            handled.add(gateway.name)
            forwarding = gateway.value.lower() in YES
            self.origins["host.forwarding"] = gateway.origin
        default_router = None
        if router is not None:
            handled.add(router.name)
            self.origins["host.default_router"] = router.origin
            if router.value.upper() != "NO":
                try:
                    default_router = ipaddress.ip_address(router.value)
                except ValueError:
                    raise self.fail(router, f"not an IP address: {router.value!r}") from None
        accept_redirects = None
        if redirects is not None:
            handled.add(redirects.name)
            accept_redirects = False if redirects.value.lower() in YES else None
            self.origins["host.accept_redirects"] = redirects.origin
        sysctl: dict[str, str] = {}
        tcp_blackhole, udp_blackhole = 0, False
        for setting in self.sysctl:
            name, value = setting.name, setting.value
            if name == "net.inet.tcp.blackhole":
                tcp_blackhole = _sysctl_int(setting, (0, 2))
                self.origins["host.tcp_blackhole"] = setting.origin
            elif name == "net.inet.udp.blackhole":
                udp_blackhole = _sysctl_int(setting, (0, 1)) == 1
                self.origins["host.udp_blackhole"] = setting.origin
            elif name == "net.inet.icmp.drop_redirect":
                accept_redirects = False if value == "1" else accept_redirects
                self.origins["host.accept_redirects"] = setting.origin
            elif name == "net.inet.ip.forwarding":
                forwarding = value == "1"
                self.origins["host.forwarding"] = setting.origin
            elif name in SYSCTL_TO_LINUX:
                linux, values = SYSCTL_TO_LINUX[name]
                mapped = values.get(value, value if values.get("*") == "*" else None)
                if mapped is None:
                    self.note(setting, f"value {value!r} has no {linux} equivalent; not imported")
                    continue
                sysctl[linux] = mapped
                self.origins[f"host.sysctl.{linux}"] = setting.origin
        return Host(forwarding=forwarding, default_router=default_router, accept_redirects=accept_redirects,
                    tcp_blackhole=tcp_blackhole, udp_blackhole=udp_blackhole, sysctl=tuple(sysctl.items()))

    def sysctls(self) -> bool:
        """Report sysctl.conf lines with no equivalent; return net.inet.carp.preempt."""
        preempt = False
        mapped = {"net.inet.tcp.blackhole", "net.inet.udp.blackhole", "net.inet.icmp.drop_redirect",
                  "net.inet.ip.forwarding", *SYSCTL_TO_LINUX}
        for setting in self.sysctl:
            if setting.name == "net.inet.carp.preempt":
                preempt = _sysctl_int(setting, (0, 1)) == 1
                self.origins["carp.preempt"] = setting.origin
            elif setting.name in SYSCTL_NONE:
                self.note(setting, SYSCTL_NONE[setting.name])
            elif setting.name not in mapped:
                self.note(setting, "no Linux equivalent known to pfha; not imported")
        return preempt

    def rest(self, handled: set[str]) -> None:
        for setting in self.rc.values():
            if setting.name in handled:
                continue
            reason = RC_NOT_MANAGED.get(setting.name)
            if reason == "":
                continue
            self.note(setting, reason or "not a setting pfha knows; not imported")


def _sysctl_int(setting: Setting, bounds: tuple[int, int]) -> int:
    try:
        value = int(setting.value)
    except ValueError:
        raise SourceError(f"{setting.name}: must be an integer, got {setting.value!r}",
                          setting.origin.file, setting.origin.line) from None
    if not bounds[0] <= value <= bounds[1]:
        raise SourceError(f"{setting.name}: must be {bounds[0]}..{bounds[1]}, got {value}",
                          setting.origin.file, setting.origin.line)
    return value


def import_freebsd(rc_text: str, rc_name: str, sysctl_text: str | None = None, sysctl_name: str = "sysctl.conf",
                   device_map: Mapping[str, str] | None = None, name: str | None = None,
                   pf_conf: str | None = None) -> Imported:
    """Build a node configuration from rc.conf (and sysctl.conf) text.

    ``device_map`` renames interfaces to Linux devices (``{"xl0": "eth1"}``); ``lo0`` becomes
    ``lo`` unless mapped otherwise. ``name`` and ``pf_conf`` override ``hostname`` and
    ``pf_rules``.
    """
    rc, notes = parse_rc_conf(rc_text, rc_name)
    sysctl = parse_sysctl_conf(sysctl_text, sysctl_name) if sysctl_text is not None else []
    importer = _Importer(rc, sysctl, device_map or {}, name, pf_conf)
    importer.notes.extend(notes)
    return importer.run()


def import_files(rc_conf: str | Path, sysctl_conf: str | Path | None = None, **options) -> Imported:
    """:func:`import_freebsd` on files (the only I/O here: reading the two texts)."""
    rc_text = _read(rc_conf)
    sysctl_text = _read(sysctl_conf) if sysctl_conf is not None else None
    return import_freebsd(rc_text, str(rc_conf), sysctl_text, str(sysctl_conf), **options)


def _read(path: str | Path) -> str:
    return read_text(path)
