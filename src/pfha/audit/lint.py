"""Ruleset lint: mistakes in a pf.conf that pfctl accepts and traffic finds later.

Each check reads the parsed, expanded ruleset (:mod:`pfha.conf`) on one node's interfaces and
says what is wrong with a concrete example packet computed from the rules
(:mod:`pfha.audit.match`), replayed through the reference engine when it is available
(:mod:`pfha.audit.proof`). The checks, in the order they run:

1. ``lint.parse``            the file does not load (pfctl would refuse it too);
2. ``lint.unused-macro``     a macro nobody expands; ``lint.unused-table`` likewise;
3. ``lint.unknown-interface`` a rule on an interface the node does not have, ``lint.skipped-interface``
   one on a ``set skip`` interface, ``lint.empty-table`` one needing a const empty table: they
   never match;
4. ``lint.rdr-shadowed`` / ``lint.nat-shadowed``: translation is first match (pf.conf(5)),
   so a translation rule covered by an earlier one is never used;
5. ``lint.filter-shadowed``: the filter is last match unless ``quick`` (pf.conf(5)); a rule
   covered by an earlier ``quick`` one, or by any later one, never decides anything;
6. ``lint.nat-hides-source``: a filter rule on the way out matches a source that ``nat`` on the
   same interface has already rewritten (the filter sees translated packets), so it never matches;
7. ``lint.ha-traffic``       CARP adverts or state sync blocked on the interface they really use;
8. ``lint.nat-own-address``  NAT to the node's own address on an HA pair: connections cannot
   survive a failover (pfsync.md §1.6: "NAT should translate to the CARP address");
9. ``lint.forward-blocked``  a flow passed in on one interface, or redirected, but blocked on
   the way out (pf needs a pass in each direction; states are per direction).

Never touches the OS; reads the pf.conf it is given.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from pfha.audit.findings import Finding, Place, Severity
from pfha.audit.match import TH_SYN, IPAddress, Matcher, Packet, RuleIndex, covers
from pfha.audit.nodes import NodeSource
from pfha.audit.proof import Probe
from pfha.conf import ast

PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_CARP, PROTO_PFSYNC = 6, 17, 1, 112, 240
CARP_GROUP = ipaddress.ip_address("224.0.0.18")
PFSYNC_GROUP = ipaddress.ip_address("224.0.0.240")
# Hosts "on the internet" for examples: documentation ranges first (RFC 5737).
INTERNET_SAMPLES = ("198.51.100.7", "192.0.2.7", "203.0.113.7", "100.64.0.7", "8.8.8.8")
EPHEMERAL_PORT = 40000


def lint_node(node: NodeSource, peers: list[NodeSource] | None = None) -> tuple[list[Finding], ast.Ruleset | None]:
    """Lint ``node``'s pf.conf; returns the findings and the parsed ruleset (None if it failed)."""
    try:
        from pfha.conf import ParseError, parse_file
    except ImportError:  # pragma: no cover - only while the pf.conf parser is not merged
        return [Finding("lint.unavailable", Severity.INFO, Place(str(node.pf_conf)),
                        "the pf.conf parser is not available in this build; the ruleset was not linted",
                        "install a pfha build with pfha.conf")], None
    if not node.pf_conf.is_file():
        return [Finding("lint.parse", Severity.ERROR, node.place("node.pf_conf"),
                        f"{node.name}'s pf.conf {node.pf_conf} does not exist; the ruleset was not linted",
                        "point pf_rules (rc.conf) or node.pf_conf (TOML) at the ruleset", nodes=(node.name,))], None
    try:
        ruleset = parse_file(node.pf_conf, node.config.interface_view(), include_base=node.pf_conf.parent)
    except ImportError:
        return [Finding("lint.unavailable", Severity.INFO, Place(str(node.pf_conf)),
                        "the pf.conf parser is not available in this build; the ruleset was not linted",
                        "install a pfha build with pfha.conf")], None
    except ParseError as error:
        return [Finding("lint.parse", Severity.ERROR,
                        Place(getattr(error, "filename", None) or str(node.pf_conf), getattr(error, "line", None)),
                        f"pf.conf does not load: {getattr(error, 'message', str(error))}",
                        "fix the line; pfctl -nf would refuse the file too", nodes=(node.name,))], None
    except OSError as error:
        return [Finding("lint.parse", Severity.ERROR, Place(str(node.pf_conf)),
                        f"cannot read pf.conf: {error.strerror}", "point the node at its pf.conf",
                        nodes=(node.name,))], None
    text = node.pf_conf.read_text(encoding="utf-8", errors="replace")
    context = Context(node, list(peers or []), ruleset, Matcher(ruleset, node.config.interface_view()), text)
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(context))
    from pfha.audit.proof import prove

    findings = prove(context, findings)
    return [_on(f, node.name) for f in findings], ruleset


def _on(finding: Finding, name: str) -> Finding:
    return replace(finding, nodes=finding.nodes or (name,))


@dataclass
class Context:
    """What every check needs: the node, its peers, the ruleset, a matcher and the text."""

    node: NodeSource
    peers: list[NodeSource]
    ruleset: ast.Ruleset
    matcher: Matcher
    text: str

    @property
    def file(self) -> str:
        return str(self.node.pf_conf)

    def place(self, rule) -> Place:
        origin = rule.origin
        return Place(origin.file or self.file, origin.line)

    def line_text(self, line: int) -> str:
        """The whole statement starting at ``line``, continuation lines joined."""
        lines = self.text.splitlines()
        out = []
        index = line - 1
        while 0 <= index < len(lines):
            part = lines[index].rstrip()
            if part.endswith("\\"):
                out.append(part[:-1].strip())
                index += 1
                continue
            out.append(part.strip())
            break
        return " ".join(out)

    def macro_defining(self, value: str) -> tuple[str, int] | None:
        """The macro whose value is exactly ``value`` (``pfs_if = "dc0"``) and its line."""
        for number, line in enumerate(self.text.splitlines(), 1):
            match = re.match(r'^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*"?\s*([^"#]*?)\s*"?\s*(#.*)?$', line)
            if match and match.group(2) == value:
                return match.group(1), number
        return None

    # -- the node's addresses and routes -------------------------------------------------------

    def self_addresses(self) -> set[IPAddress]:
        config = self.node.config
        return set(config.own_addresses()) | set(config.shared_addresses())

    def physical(self) -> list[str]:
        return [i.name for i in self.node.config.interfaces if i.device != "lo" and i.name != "lo0"]

    def route(self, dst: IPAddress) -> str | None:
        """The interface a packet to ``dst`` leaves by (connected networks, then the default)."""
        best: tuple[int, str] | None = None
        for name, addresses in self.node.config.addresses_by_interface().items():
            iface = self.node.config.interface(name)
            if iface is None or iface.device == "lo":
                continue
            for address in addresses:
                if dst in address.network and (best is None or address.network.prefixlen > best[0]):
                    best = (address.network.prefixlen, name)
        if best:
            return best[1]
        router = self.node.config.host.default_router
        if router is not None:
            return self.route(router) if router != dst else None
        return None

    def default_interface(self) -> str | None:
        router = self.node.config.host.default_router
        return self.route(router) if router is not None else None

    def internet_host(self) -> IPAddress:
        taken = [a.network for addrs in self.node.config.addresses_by_interface().values() for a in addrs]
        for text in INTERNET_SAMPLES:
            address = ipaddress.ip_address(text)
            if not any(address in net for net in taken) and not self._private(address):
                return address
        return ipaddress.ip_address(INTERNET_SAMPLES[-1])

    @staticmethod
    def _private(address: IPAddress) -> bool:
        return any(address in ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8"))

    def host_on(self, ifname: str) -> IPAddress | None:
        """A host that is not a firewall, on the segment of ``ifname``."""
        if ifname == self.default_interface():
            return self.internet_host()
        iface = self.node.config.interface(ifname)
        if iface is None or not iface.addresses:
            return None
        return self.sample_in(iface.addresses[0].network)

    def sample_in(self, network) -> IPAddress | None:
        taken = self.self_addresses() | {a for p in self.peers for a in p.config.own_addresses()}
        if network.num_addresses == 1:
            return network.network_address
        for offset in (50, 7, 20, 100, 2, 3):
            if offset < network.num_addresses - 1:
                candidate = network.network_address + offset
                if candidate not in taken:
                    return candidate
        return None

    def sample(self, match: ast.HostMatch, side_if: str | None) -> IPAddress | None:
        """An address ``match`` accepts, preferring one on ``side_if``'s segment."""
        if match.negated:
            return None
        address = match.address
        if isinstance(address, ast.AnyAddress):
            return self.host_on(side_if) if side_if else self.internet_host()
        if isinstance(address, ast.HostAddress):
            if address.prefixlen == address.address.max_prefixlen:
                return address.address
            return self.sample_in(address.network)
        if isinstance(address, ast.DynamicAddress):
            networks = self.matcher.dynamic_networks(address)
            if networks:
                return networks[0].network_address if networks[0].num_addresses == 1 else self.sample_in(networks[0])
        return None

    @staticmethod
    def port(match: ast.PortMatch | None, default: int | None) -> int | None:
        if match is None:
            return default
        return {"=": match.low, ":": match.low, ">=": match.low, "<=": match.low, ">": match.low + 1,
                "<": max(match.low - 1, 1), "><": match.low + 1, "!=": match.low + 1,
                "<>": max(match.low - 1, 1)}.get(match.op)


# ---------------------------------------------------------------------------------------------
# 2. unused macros and tables


def _code(text: str) -> list[str]:
    return [line.split("#", 1)[0] for line in text.splitlines()]


def unused_macros(ctx: Context) -> Iterator[Finding]:
    lines = _code(ctx.text)
    for number, line in enumerate(lines, 1):
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
        if not match or line.lstrip().startswith(("set ", "table ")):
            continue
        name = match.group(1)
        used = re.compile(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])")
        if not any(used.search(other) for i, other in enumerate(lines, 1) if i != number):
            yield Finding("lint.unused-macro", Severity.INFO, Place(ctx.file, number),
                          f"macro {name} is defined but never used",
                          f"use ${name} where it was meant (or delete it so nobody thinks it is in force)")


def unused_tables(ctx: Context) -> Iterator[Finding]:
    lines = _code(ctx.text)
    for table in ctx.ruleset.tables:
        used = re.compile(r"<" + re.escape(table.name) + r">")
        uses = [i for i, line in enumerate(lines, 1) if used.search(line) and i != table.origin.line]
        if not uses:
            yield Finding("lint.unused-table", Severity.INFO, Place(table.origin.file or ctx.file, table.origin.line),
                          f"table <{table.name}> is defined but no rule uses it",
                          f"refer to <{table.name}> in the rules meant to use it, or delete it")


# ---------------------------------------------------------------------------------------------
# 3. interfaces the node does not have


def _interface_names(rule) -> list[str]:
    names = []
    if getattr(rule, "interface", None) is not None:
        names.append(rule.interface.name)
    for endpoint in (rule.src, rule.dst):
        if isinstance(endpoint.host.address, ast.DynamicAddress):
            names.append(endpoint.host.address.interface)
    return names


def unknown_interfaces(ctx: Context) -> Iterator[Finding]:
    view = ctx.matcher.view
    known = set(view.addresses) | set(view.groups) | {"any", "self"}
    reported: set[tuple[int, str]] = set()
    nodes_ifs = ", ".join(sorted(view.addresses))
    for rule in ctx.ruleset.filter + ctx.ruleset.translation:
        for name in _interface_names(rule):
            if name in known or (rule.origin.line, name) in reported:
                continue
            reported.add((rule.origin.line, name))
            macro = ctx.macro_defining(name)
            related = (Place(ctx.file, macro[1]),) if macro else ()
            fix = (f"set {macro[0]} (line {macro[1]}) to the interface meant" if macro
                   else "name one of the node's interfaces")
            yield Finding("lint.unknown-interface", Severity.WARNING, ctx.place(rule),
                          f"this rule is on {name}, which {ctx.node.name} does not have (its interfaces: {nodes_ifs}); "
                          "it never matches",
                          f"{fix}, or map the name to a device in the node config", related=related)
    skipped = {m for name in ctx.ruleset.options.skip for m in (view.members(name) or (name,))}
    for rule in ctx.ruleset.filter:
        interface = getattr(rule, "interface", None)
        if interface is None or interface.negated or (rule.origin.line, "skip") in reported:
            continue
        members = set(view.members(interface.name) or (interface.name,))
        if members and members <= skipped:
            reported.add((rule.origin.line, "skip"))
            yield Finding("lint.skipped-interface", Severity.WARNING, ctx.place(rule),
                          f"this rule is on {interface.name}, which 'set skip' takes out of filtering: it never matches",
                          f"remove {interface.name} from 'set skip', or delete the rule")
    for table in ctx.ruleset.tables:
        if table.const and not table.entries and not table.files and not table.file_entries:
            for rule in ctx.ruleset.filter + ctx.ruleset.translation:
                names = {e.host.address.name for e in (rule.src, rule.dst)
                         if isinstance(e.host.address, ast.TableAddress) and not e.host.negated}
                if table.name in names and (rule.origin.line, table.name) not in reported:
                    reported.add((rule.origin.line, table.name))
                    yield Finding("lint.empty-table", Severity.WARNING, ctx.place(rule),
                                  f"<{table.name}> is const and empty, so this rule never matches",
                                  f"give <{table.name}> its entries (or drop const so pfctl -T add can fill it)",
                                  related=(Place(table.origin.file or ctx.file, table.origin.line),))
    for name in ctx.ruleset.options.skip:
        if name not in known:
            yield Finding("lint.unknown-interface", Severity.INFO, Place(ctx.file),
                          f"set skip on {name}: {ctx.node.name} has no interface {name}", "skip an interface the node has")


# ---------------------------------------------------------------------------------------------
# 4. translation shadowing (first match)


def _targets(rule: ast.TranslationRule) -> list[str]:
    out = []
    for member in rule.pool.addresses:
        address = member.address
        if isinstance(address, ast.HostAddress):
            out.append(str(address.address) if address.prefixlen == address.address.max_prefixlen
                       else f"{address.address}/{address.prefixlen}")
        else:
            out.append(str(address))
    return out


def translation_shadowed(ctx: Context) -> Iterator[Finding]:
    rules = [r for r in ctx.ruleset.translation if isinstance(r, ast.TranslationRule)]
    shadowed: dict[int, tuple[ast.TranslationRule, ast.TranslationRule]] = {}
    for index, later in enumerate(rules):
        if later.origin.line in shadowed:
            continue
        for earlier in rules[:index]:
            if earlier.kind != later.kind or earlier.origin.line == later.origin.line:
                continue
            if covers(earlier, later):
                shadowed[later.origin.line] = (earlier, later)
                break
    by_first: dict[int, list[int]] = {}
    for line, (earlier, _) in shadowed.items():
        by_first.setdefault(earlier.origin.line, []).append(line)
    for line in sorted(shadowed):
        earlier, later = shadowed[line]
        same_target = _targets(earlier) == _targets(later)
        kind = later.kind
        lines = sorted(by_first[earlier.origin.line])
        targets: list[str] = []
        for group_line in [earlier.origin.line] + lines:
            for rule in rules:
                if rule.origin.line == group_line:
                    for target in _targets(rule):
                        if target not in targets:
                            targets.append(target)
        statement = ctx.line_text(earlier.origin.line)
        head = statement.split("->")[0].rstrip()
        if same_target:
            message = (f"this {kind} rule repeats line {earlier.origin.line}: translation is first match, so it is "
                       "never used")
            fix = "delete it"
            severity = Severity.WARNING
        else:
            message = (f"this {kind} rule is never used: translation is first match, and line {earlier.origin.line} "
                       f"already translates every packet it matches (to {', '.join(_targets(earlier))}), so "
                       f"{', '.join(_targets(later))} never gets {'a connection' if kind == 'rdr' else 'used'}")
            fix = (f"replace lines {', '.join(map(str, [earlier.origin.line] + lines))} with one rule and an address "
                   f"pool: {head} -> {{ {', '.join(targets)} }} round-robin")
            severity = Severity.ERROR
        packet = _translation_example(ctx, later)
        example, probes = None, ()
        if packet is not None:
            after, applied, _ = ctx.matcher.translate(packet)
            if applied is not None:
                example = (f"{packet} is translated by line {applied.origin.line} to "
                           f"{after.dst if kind == 'rdr' else after.src}; line {line} is never reached")
                probes = (Probe(packet, nat_line=applied.origin.line, src=str(after.src), dst=str(after.dst)),)
        yield Finding(f"lint.{kind}-shadowed", severity, ctx.place(later), message, fix, example=example,
                      related=(ctx.place(earlier),), probes=probes)


def _translation_example(ctx: Context, rule: ast.TranslationRule) -> Packet | None:
    ifname = rule.interface.name if rule.interface and not rule.interface.negated else None
    if ifname is None:
        ifname = ctx.default_interface()
    if ifname is None:
        return None
    inbound = rule.kind == "rdr"
    src = ctx.sample(rule.src.host, ifname if inbound else None)
    dst = ctx.sample(rule.dst.host, None if inbound else None)
    if src is None or dst is None:
        return None
    return _packet_for(ctx, rule, "in" if inbound else "out", ifname, rule.proto or PROTO_TCP, src, dst, 80)


def _packet_for(ctx: Context, rule: ast.Rule | ast.TranslationRule, direction: str, ifname: str, proto: int,
                src, dst, dport: int, flags: int = TH_SYN) -> Packet:
    """A ``proto`` packet from ``src`` to ``dst`` the rule's ports match (``dport`` where the rule
    names none), ports only for TCP and UDP, ``flags`` only for TCP."""
    ports = proto in (PROTO_TCP, PROTO_UDP)
    return Packet(direction, ifname, proto, src, dst,
                  ctx.port(rule.src.port, EPHEMERAL_PORT) if ports else None,
                  ctx.port(rule.dst.port, dport) if ports else None, flags if proto == PROTO_TCP else None)


# ---------------------------------------------------------------------------------------------
# 5. filter shadowing (last match, quick)


def filter_shadowed(ctx: Context) -> Iterator[Finding]:
    rules = [r for r in ctx.ruleset.filter if isinstance(r, ast.Rule) and r.action in ("pass", "block")]
    reported: set[int] = set()
    per_line: dict[int, list[ast.Rule]] = {}
    for rule in rules:
        per_line.setdefault(rule.origin.line, []).append(rule)
    index_of = {id(rule): i for i, rule in enumerate(rules)}
    by_fields = RuleIndex(rules, ctx.matcher.view)

    def coverers(rule: ast.Rule) -> list[ast.Rule]:
        """Rules that may cover ``rule``: same or wildcard interface, direction, proto, port."""
        interface = rule.interface.name if rule.interface and not rule.interface.negated else None
        return [r for r in by_fields.candidates(interface, rule.direction, rule.proto, _exact_dport(rule))
                if r is not rule and r.origin.line != rule.origin.line and covers(r, rule)]

    for rule in rules:
        line = rule.origin.line
        if line in reported:
            continue
        position = index_of[id(rule)]
        found = coverers(rule)
        cover = next(((r, "quick") for r in found if r.quick and index_of[id(r)] < position), None)
        if cover is None and not rule.quick:
            cover = next(((r, "later") for r in found if index_of[id(r)] > position), None)
        if cover is None:
            continue
        # Only a whole statement (every expansion) is worth a finding.
        if not all(coverers(part) for part in per_line[line]):
            continue
        reported.add(line)
        other, why = cover
        same = other.action == rule.action
        if why == "quick":
            message = (f"this rule never matches anything: line {other.origin.line} is quick and matches every packet "
                       "it would, and evaluation stops there")
        else:
            message = (f"this rule never decides anything: the filter is last match, and line {other.origin.line} "
                       f"comes later and matches every packet it would")
        packet = _rule_example(ctx, rule)
        decided = None
        if packet is not None:
            decided = ctx.matcher.filter(packet)
        probes, example = (), None
        if decided is not None and decided[2] and decided[1] is not None and decided[1].origin.line != line:
            example = f"{packet} is decided by line {decided[1].origin.line}, not by line {line}"
            probes = (Probe(packet, line=decided[1].origin.line),)
        yield Finding("lint.filter-shadowed", Severity.INFO if same else Severity.WARNING, ctx.place(rule), message,
                      "delete it, or make it quick / move it so that it is the rule that decides",
                      example=example, related=(ctx.place(other),), probes=probes)


def _exact_dport(rule) -> int | None:
    return rule.dst.port.low if rule.dst.port is not None and rule.dst.port.op == "=" else None


def _rule_example(ctx: Context, rule: ast.Rule) -> Packet | None:
    """A packet ``rule`` matches, on the interface and in the direction it names."""
    ifname = rule.interface.name if rule.interface and not rule.interface.negated else (ctx.physical() or [None])[0]
    if ifname is None:
        return None
    direction = rule.direction or "in"
    src = ctx.sample(rule.src.host, ifname if direction == "in" else None)
    dst = ctx.sample(rule.dst.host, None if direction == "in" else ifname)
    if src is None or dst is None:
        return None
    proto = rule.proto if rule.proto is not None else PROTO_TCP
    if proto == PROTO_ICMP:
        return Packet(direction, ifname, proto, src, dst, icmp_type=rule.icmp.type if rule.icmp else 8,
                      icmp_code=(rule.icmp.code if rule.icmp else None) or 0)
    flags = rule.flags.set if rule.flags is not None else TH_SYN
    return _packet_for(ctx, rule, direction, ifname, proto, src, dst, 12345, flags)


# ---------------------------------------------------------------------------------------------
# 6. filter rules on the way out that match a source nat has already rewritten


def _nat_covering(ctx: Context, rule: ast.Rule) -> ast.TranslationRule | None:
    """The nat rule that rewrites every source ``rule`` (out on an interface) could match."""
    if rule.direction != "out" or rule.interface is None or rule.interface.negated:
        return None
    src = rule.src.host
    if src.negated or not isinstance(src.address, ast.HostAddress):
        return None
    for nat in ctx.ruleset.translation:
        if not isinstance(nat, ast.TranslationRule) or nat.kind not in ("nat", "binat"):
            continue
        if nat.interface != rule.interface:
            continue
        if nat.proto is not None or nat.src.port or nat.dst.port or nat.dst.host != ast.HostMatch():
            continue
        if nat.src.host.negated or not isinstance(nat.src.host.address, (ast.HostAddress, ast.AnyAddress)):
            continue
        if isinstance(nat.src.host.address, ast.HostAddress) and not src.address.network.subnet_of(nat.src.host.address.network):
            continue
        return None if nat.negated else nat
    return None


def nat_hides_source(ctx: Context) -> Iterator[Finding]:
    per_line: dict[int, list[tuple[ast.Rule, ast.TranslationRule | None]]] = {}
    for rule in ctx.ruleset.filter:
        if isinstance(rule, ast.Rule) and rule.action in ("pass", "block"):
            per_line.setdefault(rule.origin.line, []).append((rule, _nat_covering(ctx, rule)))
    for line, parts in sorted(per_line.items()):
        dead = [(r, n) for r, n in parts if n is not None]
        if not dead:
            continue
        rule, nat = dead[0]
        target = ctx.matcher.pool_address(nat.pool)
        sources = sorted({str(r.src.host.address.network) for r, _ in dead})
        everything = len(dead) == len(parts)
        packet = None
        src = ctx.sample(rule.src.host, None)
        dst = ctx.sample(rule.dst.host, None)
        if src is not None and dst is not None:
            packet = _packet_for(ctx, rule, "out", rule.interface.name, rule.proto or PROTO_TCP, src, dst, 12345)
        example, probes = None, ()
        if packet is not None:
            after, applied, _ = ctx.matcher.translate(packet)
            if applied is not None:
                example = (f"{packet}: nat (line {applied.origin.line}) rewrites the source to {after.src} before "
                           f"the filter runs, so line {line} does not match it")
                if everything:  # a partly dead list: other expansions of the line still match
                    probes = (Probe(packet, not_line=line, nat_line=applied.origin.line, src=str(after.src)),)
        what = "this rule never matches" if everything else f"the {', '.join(sources)} part of this rule never matches"
        yield Finding("lint.nat-hides-source", Severity.WARNING if everything else Severity.INFO, ctx.place(rule),
                      f"{what}: nat on {rule.interface.name} (line {nat.origin.line}) rewrites the source "
                      f"{', '.join(sources)} to {target} first, and the filter sees translated packets",
                      f"match the translated source {target} on the way out instead{_macro_hint(ctx, target)}",
                      example=example, related=(ctx.place(nat),), probes=probes)


def _macro_hint(ctx: Context, address) -> str:
    """``(for example $ext_carp)`` when a macro names the carp interface carrying ``address``."""
    for group in ctx.node.config.carp:
        if group.name and any(a.ip == address for a in group.addresses):
            macro = ctx.macro_defining(group.name)
            if macro:
                return f" (for example from ${macro[0]}, the interface that carries it)"
    for iface in ctx.node.config.interfaces:
        if any(a.ip == address for a in iface.addresses):
            macro = ctx.macro_defining(iface.name)
            if macro:
                return f" (for example from ${macro[0]})"
    return ""


# ---------------------------------------------------------------------------------------------
# 7. CARP and state sync on the interfaces they use


def _blocked(ctx: Context, packet: Packet) -> tuple[ast.Rule | None, bool] | None:
    """None when the filter passes ``packet``; else (blocking rule, certain?)."""
    action, rule, certain = ctx.matcher.filter(packet)
    if action == "pass":
        return None
    return rule, certain


def _meant_rule(ctx: Context, proto: int) -> ast.Rule | None:
    for rule in ctx.ruleset.filter:
        if isinstance(rule, ast.Rule) and rule.action == "pass" and rule.proto == proto:
            return rule
    return None


def ha_traffic(ctx: Context) -> Iterator[Finding]:
    config = ctx.node.config
    if config.sync is not None:
        device = config.sync.device
        iface = config.interface(device)
        if iface is not None and iface.addresses:
            mine = iface.addresses[0].ip
            peer = config.sync.peer
            if peer is None:
                for other in ctx.peers:
                    theirs = other.config.interface(other.config.sync.device) if other.config.sync else None
                    if theirs is not None and theirs.addresses:
                        peer = theirs.addresses[0].ip
                        break
            dst = peer or PFSYNC_GROUP
            source_peer = peer or ctx.sample_in(iface.addresses[0].network)
            probes = [Packet("out", device, PROTO_PFSYNC, mine, dst)]
            if source_peer is not None:
                probes.append(Packet("in", device, PROTO_PFSYNC, source_peer, PFSYNC_GROUP if peer is None else mine))
            yield from _ha_findings(ctx, probes, "state sync (pfsync)", PROTO_PFSYNC, device)
    for index, group in enumerate(config.carp):
        parent = config.interface(group.parent)
        if parent is None or not parent.addresses:
            continue
        mine = parent.addresses[0].ip
        other = ctx.sample_in(parent.addresses[0].network)
        for peer in ctx.peers:
            theirs = peer.config.interface(group.parent)
            if theirs is not None and theirs.addresses:
                other = theirs.addresses[0].ip
        probes = [Packet("out", group.parent, PROTO_CARP, mine, CARP_GROUP)]
        if other is not None:
            probes.append(Packet("in", group.parent, PROTO_CARP, other, CARP_GROUP))
        yield from _ha_findings(ctx, probes, f"CARP adverts for vhid {group.vhid}", PROTO_CARP, group.parent)


def _ha_findings(ctx: Context, probes: list[Packet], what: str, proto: int, device: str) -> Iterator[Finding]:
    for packet in probes:
        blocked = _blocked(ctx, packet)
        if blocked is None:
            continue
        rule, certain = blocked
        if not certain:
            continue
        meant = _meant_rule(ctx, proto)
        proto_name = "pfsync" if proto == PROTO_PFSYNC else "carp"
        consequence = ("the backup never learns the master's states, so every connection breaks on failover"
                       if proto == PROTO_PFSYNC else
                       "each node stops hearing the other and both become MASTER")
        related = (ctx.place(rule),) if rule is not None else ()
        if meant is not None and meant.interface is not None and meant.interface.name != device:
            macro = ctx.macro_defining(meant.interface.name)
            place = ctx.place(meant)
            message = (f"{what} runs on {device}, but the rule meant to pass it is on {meant.interface.name}, so "
                       f"{'line ' + str(rule.origin.line) if rule is not None else 'the default'} blocks it: "
                       f"{consequence}")
            fix = (f"set {macro[0]} = \"{device}\" (line {macro[1]})" if macro
                   else f"pass proto {proto_name} on {device}")
            if macro:
                related = related + (Place(ctx.file, macro[1]),)
        else:
            place = ctx.place(rule) if rule is not None else Place(ctx.file)
            message = f"{what} on {device} is blocked by this rule: {consequence}"
            fix = f"add 'pass quick on {device} proto {proto_name}' before it"
        yield Finding("lint.ha-traffic", Severity.ERROR, place, message, fix,
                      example=f"{packet} is blocked" + (f" by line {rule.origin.line}" if rule is not None else ""),
                      related=related,
                      probes=(Probe(packet, action="block", line=rule.origin.line if rule is not None else None),))
        return  # one finding per kind of traffic


# ---------------------------------------------------------------------------------------------
# 8. NAT to the node's own address on an HA pair


def nat_own_address(ctx: Context) -> Iterator[Finding]:
    config = ctx.node.config
    if not config.carp and not ctx.peers:
        return
    own = config.own_addresses()
    reported: set[int] = set()
    for rule in ctx.ruleset.translation:
        if not isinstance(rule, ast.TranslationRule) or rule.kind not in ("nat", "binat") or rule.negated:
            continue
        target = ctx.matcher.pool_address(rule.pool)
        if target is None or target not in own or rule.origin.line in reported:
            continue
        reported.add(rule.origin.line)
        ifname = rule.interface.name if rule.interface else None
        shared = [g for g in config.carp if g.parent == ifname] or [
            g for g in config.carp if any(target in a.network for a in g.addresses)]
        carp_address = str(shared[0].addresses[0].ip) if shared else "the CARP address"
        head = ctx.line_text(rule.origin.line).split("->")[0].rstrip()
        src = ctx.sample(rule.src.host, None)
        dst = ctx.sample(rule.dst.host, None) if not isinstance(rule.dst.host.address, ast.AnyAddress) else ctx.internet_host()
        example, probes = None, ()
        peer_names = ", ".join(p.name for p in ctx.peers) or "the backup"
        if src is not None and dst is not None and ifname:
            packet = Packet("out", ifname, PROTO_TCP, src, dst, EPHEMERAL_PORT, 80, TH_SYN)
            probes = (Probe(packet, nat_line=rule.origin.line, src=str(target)),)
            example = (f"{packet} leaves as {target}:{EPHEMERAL_PORT}, {ctx.node.name}'s own address; after a failover "
                       f"{peer_names} holds the synced state but the replies still go to {target}, the failed node")
        yield Finding("lint.nat-own-address", Severity.ERROR, ctx.place(rule),
                      f"NAT translates to {target}, this node's own address: on an HA pair NATed connections cannot "
                      "survive a failover (the other node cannot receive traffic for it)",
                      f"translate to the shared CARP address: {head} -> {carp_address}, and let the filter rules that "
                      f"match the translated source accept {carp_address} ($ext_carp)",
                      example=example, probes=probes)


# ---------------------------------------------------------------------------------------------
# 9. forwarded flows passed in but blocked out


def _flow_examples(ctx: Context, rule: ast.Rule) -> Iterator[Packet]:
    interfaces = [rule.interface.name] if rule.interface and not rule.interface.negated else ctx.physical()
    proto = rule.proto
    for ifname in interfaces:
        if ctx.matcher.skipped(ifname):
            continue
        src = ctx.sample(rule.src.host, ifname)
        if src is None:
            continue
        if isinstance(rule.dst.host.address, ast.AnyAddress) and not rule.dst.host.negated:
            # "to any" means the world: the internet from inside; from outside, the segments
            # behind the firewall (never the dedicated sync link).
            outside = ctx.default_interface()
            sync = ctx.node.config.sync.device if ctx.node.config.sync else None
            if ifname != outside and outside is not None:
                candidates = [ctx.internet_host()]
            else:
                candidates = [ctx.host_on(other) for other in ctx.physical() if other not in (ifname, sync)]
        else:
            candidates = [ctx.sample(rule.dst.host, None)]
        for dst in candidates:
            if dst is None or dst in ctx.self_addresses() or dst.is_multicast:
                continue
            if proto == PROTO_ICMP:
                icmp_type = rule.icmp.type if rule.icmp else 8
                yield Packet("in", ifname, proto, src, dst, icmp_type=icmp_type,
                             icmp_code=rule.icmp.code if rule.icmp else 0)
            else:
                yield Packet("in", ifname, proto, src, dst, ctx.port(rule.src.port, EPHEMERAL_PORT),
                             ctx.port(rule.dst.port, 12345), TH_SYN if proto == PROTO_TCP else None)


def forward_blocked(ctx: Context) -> Iterator[Finding]:
    reported: set[int] = set()
    for rule in ctx.ruleset.filter:
        if not (isinstance(rule, ast.Rule) and rule.action == "pass" and rule.direction == "in"):
            continue
        if rule.proto not in (PROTO_TCP, PROTO_UDP, PROTO_ICMP) or rule.af == "inet6" or rule.origin.line in reported:
            continue
        for packet in _flow_examples(ctx, rule):
            action, decider, certain = ctx.matcher.filter(packet)
            if action != "pass" or decider is not rule or not certain:
                continue
            finding = _outbound(ctx, packet, f"line {rule.origin.line} passes it in", ctx.place(rule),
                                in_line=rule.origin.line)
            if finding is not None:
                reported.add(rule.origin.line)
                yield finding
                break
    yield from rdr_blocked(ctx)


def _outbound(ctx: Context, packet: Packet, why_in: str, place: Place, rdr: ast.TranslationRule | None = None,
              original: Packet | None = None, in_line: int | None = None) -> Finding | None:
    out_if = ctx.route(packet.dst)
    if out_if is None or out_if == packet.ifname:
        return None
    outbound = replace(packet, direction="out", ifname=out_if)
    translated, nat, sure = ctx.matcher.translate(outbound)
    if not sure:
        return None
    blocked = _blocked(ctx, translated)
    if blocked is None or not blocked[1]:
        return None
    rule = blocked[0]
    by = f"line {rule.origin.line}" if rule is not None else "the default"
    meant = None
    for candidate in ctx.ruleset.filter:
        if (isinstance(candidate, ast.Rule) and candidate.action == "pass" and candidate.direction == "out"
                and ctx.matcher.matches(candidate, outbound) and not ctx.matcher.matches(candidate, translated)):
            meant = candidate
            break
    related = tuple(p for p in ((ctx.place(rule) if rule is not None else None),
                                (ctx.place(nat) if nat is not None else None),
                                (ctx.place(meant) if meant is not None else None)) if p is not None)
    start = f"{original} is redirected to {packet.dst}" if original is not None else str(packet)
    example = (f"{start}; {why_in}; going out on {out_if}" +
               (f" nat (line {nat.origin.line}) makes it {translated.src} -> {translated.dst}" if nat is not None else "") +
               f" and {by} blocks it")
    if meant is not None:
        fix = (f"line {meant.origin.line} was meant to pass it out but matches the source before translation; make it "
               f"match the translated source {translated.src}")
    else:
        fix = f"add a 'pass out quick on {out_if}' rule for this traffic (pf needs a pass in each direction)"
    what = "traffic redirected by this rule" if rdr is not None else "traffic this rule passes in"
    first = Probe(original if original is not None else packet, line=in_line,
                  nat_line=rdr.origin.line if rdr is not None else None)
    last = Probe(outbound, action="block", line=rule.origin.line if rule is not None else None,
                 nat_line=nat.origin.line if nat is not None else None)
    return Finding("lint.forward-blocked", Severity.WARNING, place,
                   f"{what} on {packet.ifname} is blocked going out on {out_if} by {by}: the connection never completes",
                   fix, example=example, related=related, probes=(first, last))


def rdr_blocked(ctx: Context) -> Iterator[Finding]:
    reported: set[int] = set()
    for rule in ctx.ruleset.translation:
        if not isinstance(rule, ast.TranslationRule) or rule.kind != "rdr" or rule.negated:
            continue
        if rule.origin.line in reported:
            continue
        packet = _translation_example(ctx, rule)
        if packet is None:
            continue
        translated, applied, sure = ctx.matcher.translate(packet)
        if not sure or applied is not rule:
            continue
        action, decider, certain = ctx.matcher.filter(translated)
        if not certain:
            continue
        if action == "block":
            ports = sorted({r.dst.port.low for r in ctx.ruleset.translation if isinstance(r, ast.TranslationRule)
                            and r.origin.line == rule.origin.line and r.dst.port is not None})
            by = f"line {decider.origin.line}" if decider is not None else "the default"
            reported.add(rule.origin.line)
            yield Finding("lint.forward-blocked", Severity.WARNING, ctx.place(rule),
                          f"traffic this rule redirects to {translated.dst}"
                          + (f" (port {', '.join(map(str, ports))})" if ports else "")
                          + f" is blocked coming in on {packet.ifname} by {by}: the redirection is useless",
                          f"add 'pass in quick on {packet.ifname} proto {_proto(packet.proto)} to {translated.dst} port "
                          f"{{ {', '.join(map(str, ports))} }}' (the filter sees the redirected destination) and the "
                          "matching pass out", example=f"{packet} is redirected to {translated.dst}:{translated.dport} "
                                                       f"and blocked by {by}",
                          related=(ctx.place(decider),) if decider is not None else (),
                          probes=(Probe(packet, action="block", nat_line=rule.origin.line,
                                        line=decider.origin.line if decider is not None else None),))
            continue
        finding = _outbound(ctx, translated, f"line {decider.origin.line if decider else '?'} passes it in",
                            ctx.place(rule), rdr=rule, original=packet,
                            in_line=decider.origin.line if decider is not None else None)
        if finding is not None:
            reported.add(rule.origin.line)
            yield finding


def _proto(number: int) -> str:
    return {6: "tcp", 17: "udp", 1: "icmp"}.get(number, str(number))


CHECKS = (unused_macros, unused_tables, unknown_interfaces, translation_shadowed, filter_shadowed,
          nat_hides_source, ha_traffic, nat_own_address, forward_blocked)


def lint_text(text: str, node: NodeSource, peers: list[NodeSource] | None = None,
              filename: str = "pf.conf") -> list[Finding]:
    """Lint pf.conf ``text`` as if it were ``node``'s (tests and ``pfha audit`` on stdin)."""
    from pfha.conf import parse_text

    ruleset = parse_text(text, filename, node.config.interface_view())
    context = Context(replace(node, pf_conf=Path(filename)), list(peers or []), ruleset,
                      Matcher(ruleset, node.config.interface_view()), text)
    findings: list[Finding] = []
    for check in CHECKS:
        findings.extend(check(context))
    return findings
