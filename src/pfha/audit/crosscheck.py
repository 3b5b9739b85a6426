"""sshd and hosts.allow against what pf lets in: can the admin actually log in?

The tutorial has sshd listen on the internal CARP address only, while pf lets ssh in from one
admin host outside to both shared addresses, and hosts.allow admits only the LAN. Each is
reasonable alone; together nobody gets in. This module compares the three, using the parsed
ruleset (:mod:`pfha.audit.match` for the example packets). Reads files only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, replace

from pfha.audit import host as host_checks
from pfha.audit.findings import Finding, Place, Severity
from pfha.audit.match import TH_SYN, Matcher, Packet
from pfha.audit.nodes import NodeSource
from pfha.conf import ast

PROTO_TCP = 6


@dataclass(frozen=True)
class SshWay:
    """One way pf lets ssh in: (interface, source, firewall address, port) and the rule."""

    packet: Packet
    rule: ast.Rule


def check(tree: host_checks.HostTree, node: NodeSource, ruleset: ast.Ruleset | None) -> list[Finding]:
    if ruleset is None:
        return []
    options = host_checks.read_sshd_config(tree)
    if options is None:
        return []
    matcher = Matcher(ruleset, node.config.interface_view())
    ports = host_checks.sshd_ports(options)
    ways = list(ssh_ways(matcher, node, ports))
    findings = list(listen_mismatch(tree, node, matcher, options, ways, ports))
    findings.extend(hosts_allow_mismatch(tree, ways))
    return [replace(f, nodes=(node.name,)) for f in findings]


def _self_addresses(node: NodeSource) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    config = node.config
    out = []
    for iface in config.interfaces:
        out.extend(a.ip for a in iface.addresses if not a.ip.is_loopback)
    for group in config.carp:
        out.extend(a.ip for a in group.addresses)
    return out


def ssh_ways(matcher: Matcher, node: NodeSource, ports: list[int]) -> Iterator[SshWay]:
    """Every (interface, firewall address, port) a pass-in rule opens for ssh, with a source."""
    targets = _self_addresses(node)
    seen = set()
    for rule in matcher.ruleset.filter:
        if not (isinstance(rule, ast.Rule) and rule.action == "pass" and rule.direction in (None, "in")):
            continue
        if rule.proto not in (None, PROTO_TCP) or rule.dst.port is None:
            continue
        interfaces = [rule.interface.name] if rule.interface and not rule.interface.negated else \
            [i.name for i in node.config.interfaces if i.device != "lo"]
        source = _source(rule)
        if source is None:
            continue
        for ifname in interfaces:
            for port in ports:
                for target in targets:
                    packet = Packet("in", ifname, PROTO_TCP, source, target, 40000, port, TH_SYN)
                    if not matcher.matches(rule, packet):
                        continue
                    action, decider, certain = matcher.filter(packet)
                    key = (ifname, target, port)
                    if action == "pass" and decider is rule and certain and key not in seen:
                        seen.add(key)
                        yield SshWay(packet, rule)


def _source(rule: ast.Rule):
    address = rule.src.host.address
    if rule.src.host.negated:
        return None
    if isinstance(address, ast.HostAddress):
        if address.prefixlen == address.address.max_prefixlen:
            return address.address
        return address.network.network_address + 1
    if isinstance(address, ast.AnyAddress):
        return ipaddress.ip_address("198.51.100.7")
    return None


def _listens(listen: list[tuple[str, int | None, Place]], address, port: int, ports: list[int]) -> bool:
    if not listen:
        return True
    for host, own_port, _ in listen:
        if own_port is not None and own_port != port:
            continue
        if own_port is None and port not in ports:
            continue
        if host in ("0.0.0.0", "::") or host == str(address):
            return True
    return False


def listen_mismatch(tree, node: NodeSource, matcher: Matcher, options, ways: list[SshWay],
                    ports: list[int]) -> Iterator[Finding]:
    listen = host_checks.sshd_listen_addresses(options)
    if not listen:
        return
    where = listen[0][2]
    listened = ", ".join(h for h, _, _ in listen)
    unheard = [w for w in ways if not _listens(listen, w.packet.dst, w.packet.dport, ports)]
    if unheard:
        way = unheard[0]
        targets = sorted({str(w.packet.dst) for w in unheard})
        yield Finding(
            "host.sshd-listen", Severity.WARNING, where,
            f"pf lets ssh in to {', '.join(targets)} port {way.packet.dport} (pf.conf line {way.rule.origin.line}), but "
            f"sshd listens only on {listened}: those connections are refused",
            f"make them agree: add 'ListenAddress {targets[0]}' (a CARP address: set net.ipv4.ip_nonlocal_bind=1 so "
            "sshd starts on the backup too), or pass ssh only to the address sshd listens on",
            example=f"{way.packet} is passed by pf.conf:{way.rule.origin.line} and refused by sshd",
            related=(Place(way.rule.origin.file or str(node.pf_conf), way.rule.origin.line),))
    # Is any listened address reachable where it lives?
    for host, own_port, place in listen:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if address.is_loopback or address.is_unspecified:
            continue
        home = _home_interface(node, address)
        if home is None:
            continue
        # A way in counts if it arrives where the address lives, or if the address is public
        # (a private address is not routed to us from the internet).
        if any(w.packet.dst == address and (w.packet.ifname == home or not address.is_private) for w in ways):
            continue
        port = own_port or ports[0]
        source = _neighbour(node, home, address)
        if source is None:
            continue
        packet = Packet("in", home, PROTO_TCP, source, address, 40000, port, TH_SYN)
        action, decider, certain = matcher.filter(packet)
        if action == "block" and certain:
            by = f"pf.conf line {decider.origin.line}" if decider is not None else "the default"
            yield Finding(
                "host.sshd-listen", Severity.WARNING, place,
                f"sshd listens on {address} port {port}, but pf passes no ssh to it on {home}, where that address lives: "
                "nobody can reach sshd",
                f"pass ssh in on {home} to {address} port {port} from your admin hosts",
                example=f"{packet} is blocked by {by}",
                related=(Place(decider.origin.file or str(node.pf_conf), decider.origin.line),) if decider else ())


def _home_interface(node: NodeSource, address) -> str | None:
    for group in node.config.carp:
        if any(a.ip == address for a in group.addresses):
            return group.parent
    for iface in node.config.interfaces:
        if any(a.ip == address for a in iface.addresses):
            return iface.name
    return None


def _neighbour(node: NodeSource, ifname: str, address):
    iface = node.config.interface(ifname)
    if iface is None or not iface.addresses:
        return None
    network = iface.addresses[0].network
    taken = {a.ip for i in node.config.interfaces for a in i.addresses} | {a.ip for g in node.config.carp for a in g.addresses}
    for offset in (50, 7, 20, 100):
        if offset < network.num_addresses - 1 and network.network_address + offset not in taken:
            return network.network_address + offset
    return None


def _client_matches(pattern: str, address) -> bool:
    """hosts_access(5) client patterns: ALL, LOCAL, n.n.n.n/m.m.m.m, n.n.n.n/len, prefixes."""
    pattern = pattern.strip()
    upper = pattern.upper()
    if upper == "ALL":
        return True
    if pattern in ("localhost",):
        return address.is_loopback
    if "/" in pattern:
        net, mask = pattern.split("/", 1)
        try:
            return address in ipaddress.ip_network(f"{net}/{mask}", strict=False)
        except ValueError:
            return False
    if pattern.endswith("."):
        return str(address).startswith(pattern)
    try:
        return ipaddress.ip_address(pattern) == address
    except ValueError:
        return False


def hosts_access_verdict(rules: list[host_checks.AccessRule], daemon: str, address) -> host_checks.AccessRule | None:
    """The first rule that decides for ``daemon`` and a client ``address`` (None: no rule)."""
    for rule in rules:
        if not any(d in ("ALL", daemon) for d in rule.daemons):
            continue
        if "EXCEPT" in [c.upper() for c in rule.clients]:
            return None  # not modelled: say nothing
        if any(_client_matches(c, address) for c in rule.clients):
            return rule
    return None


def hosts_allow_mismatch(tree, ways: list[SshWay]) -> Iterator[Finding]:
    allow = host_checks.read_hosts_access(tree, "/etc/hosts.allow", "allow") or []
    deny = host_checks.read_hosts_access(tree, "/etc/hosts.deny", "deny") or []
    rules = allow + deny
    reported = set()
    for way in ways:
        source = way.packet.src
        if source in reported:
            continue
        verdict = hosts_access_verdict(rules, "sshd", source)
        if verdict is None or verdict.action != "deny":
            continue
        reported.add(source)
        allowed = [r for r in allow if "sshd" in r.daemons and r.action == "allow"]
        extra = f"; sshd admits only {', '.join(allowed[0].clients)} ({allowed[0].place})" if allowed else ""
        yield Finding(
            "host.hosts-allow-ssh", Severity.WARNING, verdict.place,
            f"pf lets {source} ssh in (pf.conf line {way.rule.origin.line}), but hosts.allow denies it here{extra}",
            f"add {source}/255.255.255.255 to the sshd line of hosts.allow (the tutorial's own comment says to), "
            "or stop passing it in pf.conf",
            example=f"{way.packet}: pf passes it, tcp wrappers close the connection",
            related=(Place(way.rule.origin.file or "pf.conf", way.rule.origin.line),))
