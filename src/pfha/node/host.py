"""The host settings a node applies at start (and again on reload): sysctls, interface
addresses and the default route, all from the node config's ``[host]`` and ``[interfaces]``.

FreeBSD's rc.conf does this at boot (``gateway_enable``, ``ifconfig_xl0``, ``defaultrouter``);
on Linux the node does it when it starts, in the network namespace it runs in. What it changes
is recorded (with the value it found before) so ``pfha status`` can show it.

It only ever *adds*: it never removes an address or route it did not put there, and never
touches an interface the config does not name. A device the config names but the host lacks is
an error, before anything else changes.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pfha.errors import PfhaError
from pfha.node.config import NodeConfig

PROC_SYS = Path("/proc/sys")


class HostError(PfhaError):
    """A host setting could not be applied."""


@dataclass
class Applied:
    """What the node changed on the host, and what was there before."""

    sysctls: dict[str, tuple[str | None, str]] = field(default_factory=dict)  # key -> (before, now)
    addresses: list[str] = field(default_factory=list)  # "xl0 203.0.113.2/24"
    routes: list[str] = field(default_factory=list)
    not_applied: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "sysctls": {k: {"before": b, "now": n} for k, (b, n) in self.sysctls.items()},
            "addresses_added": self.addresses,
            "routes": self.routes,
            "not_applied": self.not_applied,
        }


def _ip(*argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        raise HostError(f"ip {' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def sysctl_path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


def read_sysctl(key: str) -> str | None:
    try:
        return sysctl_path(key).read_text().strip()
    except OSError:
        return None


def write_sysctl(key: str, value: str) -> None:
    try:
        sysctl_path(key).write_text(f"{value}\n")
    except OSError as error:
        raise HostError(f"sysctl {key}={value}: {error.strerror}") from None


def device_addresses() -> dict[str, set[ipaddress.IPv4Interface | ipaddress.IPv6Interface]]:
    out = json.loads(_ip("-j", "addr", "show").stdout or "[]")
    return {link["ifname"]: {ipaddress.ip_interface(f"{a['local']}/{a['prefixlen']}") for a in link.get("addr_info", [])}
            for link in out}


def check_devices(config: NodeConfig) -> None:
    """Every device the config names must exist: fail before changing anything."""
    present = device_addresses()
    missing = [f"{i.name} (device {i.device})" for i in config.interfaces if i.device not in present]
    if missing:
        raise HostError(f"interfaces missing on this host: {', '.join(missing)}")


def apply(config: NodeConfig) -> Applied:
    """Apply ``config``'s host settings; idempotent, so reload runs it again."""
    check_devices(config)
    applied = Applied()
    for key, value in config.host.sysctls().items():
        before = read_sysctl(key)
        if before is None:
            applied.not_applied.append(f"sysctl {key}: not on this kernel/namespace")
            continue
        if before != value:
            write_sysctl(key, value)
        applied.sysctls[key] = (before, value)
    present = device_addresses()
    for interface in config.interfaces:
        for address in interface.addresses:
            if interface.device == "lo" and address.ip.is_loopback:
                continue
            if address not in present.get(interface.device, set()):
                _ip("addr", "add", str(address), "dev", interface.device)
                applied.addresses.append(f"{interface.device} {address}")
        _ip("link", "set", interface.device, "up")
    if config.host.default_router is not None:
        _ip("route", "replace", "default", "via", str(config.host.default_router))
        applied.routes.append(f"default via {config.host.default_router}")
    if config.host.tcp_blackhole:
        applied.not_applied.append(
            f"tcp_blackhole={config.host.tcp_blackhole}: Linux has no such sysctl; with the ruleset's "
            "'set block-policy drop' blocked ports send no RST, passed closed ports still do")
    if config.host.udp_blackhole:
        applied.not_applied.append(
            "udp_blackhole: Linux has no such sysctl; blocked ports stay silent under 'set block-policy drop'")
    return applied
