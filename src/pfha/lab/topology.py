"""The tutorial's network, as data: hosts, their interfaces and addresses, segments, services.

This module only describes; :mod:`pfha.lab.build` makes namespaces from it. Keeping the picture
in one immutable value lets the builder, the status view, the reachability tests and the docs
agree on one topology. It must never touch the operating system.

Addresses are those of ``shared/seed/configs/README.md`` (one address per tutorial role)::

              198.51.100.0/24 "internet": dns1 .53, dns2 .54, admin .200, inet .100
                                    |  (sw-inet bridge)
                               isp eth1 .1
                               isp eth0 203.0.113.1
                                    |  (sw-ext bridge)
            fw1 xl0 203.0.113.2 ---------------- fw2 xl0 203.0.113.3     carp0 vhid 1: .10 .11 .12
            fw1 rl0 10.10.10.250 --- wire ---- fw2 rl0 10.10.10.251      carp2 vhid 3: 10.10.10.1
            fw1 xl1 192.168.1.250 --------------- fw2 xl1 192.168.1.251  carp1 vhid 2: 192.168.1.1
                                    |  (sw-lan bridge)     (rl0 is a /8: rc.conf gives no netmask,
                                                           so FreeBSD takes the classful one)
              192.168.1.0/24 LAN: client .10, srv80 .80, srv81 .81, srv82 .82, chat .119
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Service kinds understood by pfha.lab.services: "banner" greets with the host and port, and
# streams bytes on request (the bulk transfer the demo fails over); "dns" answers DNS queries
# over UDP and TCP; "echo" sends UDP datagrams back.
BANNER, DNS, ECHO = "banner", "dns", "echo"


@dataclass(frozen=True)
class Service:
    """One listening socket a lab host offers; ``name`` is the tutorial's word for it."""

    name: str
    proto: str  # "tcp" | "udp"
    port: int
    kind: str = BANNER


@dataclass(frozen=True)
class Interface:
    name: str
    address: str | None = None  # "A.B.C.D/len"

    @property
    def ip(self) -> str | None:
        return self.address.split("/")[0] if self.address else None


@dataclass(frozen=True)
class Host:
    """A namespace: a firewall, the ISP router, a server or a client."""

    name: str
    role: str  # "firewall" | "router" | "server" | "client"
    interfaces: tuple[Interface, ...]
    gateway: str | None = None
    services: tuple[Service, ...] = ()
    forwarding: bool = False

    def interface(self, name: str) -> Interface:
        for interface in self.interfaces:
            if interface.name == name:
                return interface
        raise KeyError(f"{self.name} has no interface {name}")

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(i.ip for i in self.interfaces if i.ip)


@dataclass(frozen=True)
class Segment:
    """A layer-2 segment: a bridge in its own switch namespace, or a direct wire (two ends)."""

    name: str
    ports: tuple[tuple[str, str], ...]  # (host, interface)
    switch: bool = True


@dataclass(frozen=True)
class CarpAddress:
    """A shared address as the tutorial's rc.conf declares it (used by the static no-daemon mode)."""

    carp_if: str
    vhid: int
    parent: str
    address: str  # "A.B.C.D/len"


@dataclass(frozen=True)
class Topology:
    hosts: tuple[Host, ...]
    segments: tuple[Segment, ...]
    firewalls: tuple[str, ...] = ("fw1", "fw2")
    carp: tuple[CarpAddress, ...] = field(default_factory=tuple)

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def address_of(self, name: str) -> str:
        """The host's first address (what a probe from elsewhere connects to)."""
        return self.host(name).addresses[0]

    def host_by_address(self, ip: str) -> Host:
        for host in self.hosts:
            if ip in host.addresses:
                return host
        raise KeyError(ip)


# Ports from the tutorial's pf.conf macros.
MAIL = (Service("smtp", "tcp", 25), Service("pop3", "tcp", 110))
FTP = tuple(Service("ftp", "tcp", p) for p in (8084, 9000, 9001))
WEB = (Service("www", "tcp", 80), Service("https", "tcp", 443))
WEB_SSH = (Service("web-ssh", "tcp", 8082),)
CHAT = (Service("chat", "tcp", 8080),)
FIREWALL_SSH = (Service("ssh", "tcp", 8081),)
DNS_SERVICES = (Service("domain", "tcp", 53, DNS), Service("domain", "udp", 53, DNS))
NTP = (Service("ntp", "udp", 123, ECHO),)
# Not in the ruleset: a port nothing allows, so the matrix can check that "block log all" bites.
UNLISTED = (Service("unlisted", "tcp", 2222),)

LAN_NET, EXT_NET, INET_NET, SYNC_NET = "192.168.1.0/24", "203.0.113.0/24", "198.51.100.0/24", "10.0.0.0/8"
CARP_LAN = "192.168.1.1"
CARP_EXT = ("203.0.113.10", "203.0.113.11", "203.0.113.12")
CARP_SYNC = "10.10.10.1"
ISP_GW, INET_GW = "203.0.113.1", "198.51.100.1"


def _firewall(name: str, ext: str, lan: str, sync: str) -> Host:
    return Host(
        name,
        "firewall",
        (Interface("xl0", f"{ext}/24"), Interface("xl1", f"{lan}/24"), Interface("rl0", f"{sync}/8")),
        gateway=ISP_GW,
        services=FIREWALL_SSH,
    )


def _lan(name: str, ip: str, services: tuple[Service, ...], role: str = "server") -> Host:
    return Host(name, role, (Interface("eth0", f"{ip}/24"),), gateway=CARP_LAN, services=services + UNLISTED)


def _inet(name: str, ip: str, services: tuple[Service, ...], role: str = "server") -> Host:
    return Host(name, role, (Interface("eth0", f"{ip}/24"),), gateway=INET_GW, services=services + UNLISTED)


def tutorial() -> Topology:
    """The tutorial's pair, its LAN servers and a small internet behind the ISP's router."""
    hosts = (
        _firewall("fw1", "203.0.113.2", "192.168.1.250", "10.10.10.250"),
        _firewall("fw2", "203.0.113.3", "192.168.1.251", "10.10.10.251"),
        Host("isp", "router", (Interface("eth0", f"{ISP_GW}/24"), Interface("eth1", f"{INET_GW}/24")), forwarding=True),
        _lan("client", "192.168.1.10", (), role="client"),
        _lan("srv80", "192.168.1.80", MAIL + FTP + WEB + WEB_SSH),
        _lan("srv81", "192.168.1.81", WEB),
        _lan("srv82", "192.168.1.82", WEB),
        _lan("chat", "192.168.1.119", CHAT),
        _inet("dns1", "198.51.100.53", DNS_SERVICES),
        _inet("dns2", "198.51.100.54", DNS_SERVICES),
        _inet("admin", "198.51.100.200", (), role="client"),
        _inet("inet", "198.51.100.100", WEB + NTP + MAIL),
    )
    segments = (
        Segment("ext", (("fw1", "xl0"), ("fw2", "xl0"), ("isp", "eth0"))),
        Segment("lan", (("fw1", "xl1"), ("fw2", "xl1"), *((h, "eth0") for h in ("client", "srv80", "srv81", "srv82", "chat")))),
        Segment("inet", (("isp", "eth1"), *((h, "eth0") for h in ("dns1", "dns2", "admin", "inet")))),
        Segment("sync", (("fw1", "rl0"), ("fw2", "rl0")), switch=False),
    )
    carp = (
        *(CarpAddress("carp0", 1, "xl0", f"{ip}/24") for ip in CARP_EXT),
        CarpAddress("carp1", 2, "xl1", f"{CARP_LAN}/24"),
        CarpAddress("carp2", 3, "rl0", f"{CARP_SYNC}/8"),
    )
    return Topology(hosts, segments, carp=carp)
