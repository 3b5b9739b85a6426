"""Compile a parsed pf ruleset into nftables JSON: pf's semantics on Linux's netfilter.

The layout (pf-semantics.md §3, verified by the prototype):

- one ``inet pfha`` table and four base chains around conntrack's NAT hooks, so each pf pass
  sees what pf sees: ``nat_pre`` (rdr, binat in; nat -100), ``filter_in`` (pf's in-pass,
  after rdr; filter -99), ``nat_post`` (nat, binat out; nat 100), ``filter_out`` (pf's
  out-pass, after nat; filter 101);
- pf states are ct-mark bits: side A = the state made by a connection's original packet on
  an in-pass (it also matches the replies' out-pass), side B = the state made on an out-pass.
  A forwarded flow therefore needs two pf states, as in pf. The mark also holds the creating
  rule of each side, so state-matched packets are charged to it (``pfctl -vsr``);
- filter rules run first-match over [quick rules in file order] + [other rules reversed],
  which equals pf's last-match/quick decision (§3.3); a forward *prelude* applies the sticky
  ``tag`` side effects of every match;
- translation rules are first-match in the NAT chains; a translation forces state;
- ``log`` sends the packet to NFLOG with a ``pf:...`` prefix that pflogd turns into a pfloghdr.

What the kernel cannot express is approximated and reported in :attr:`Compiled.warnings`
(also listed in docs/fidelity.md) - never dropped silently.

Pure: takes the Ruleset and an interface view, returns JSON and warnings. Never touches the OS.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pfha.conf import ast
from pfha.conf.interfaces import InterfaceView
from pfha.engine.state import configured_limits, configured_timeouts
from pfha.gc_pause import gc_paused
from pfha.nft import expr as x
from pfha.nft import synproxy as sp
from pfha.nft import timeouts as ct_timeouts
from pfha.nft.overload import OVERLOAD_GROUP, OverloadPrefix
from pfha.pflog.format import Action, Direction
from pfha.pflog.prefix import LogPrefix

# ---------------------------------------------------------------------------------- ct mark
SIDE_A = 0x1
SIDE_B = 0x2
RULE_BITS = 15
MAX_RULE_ID = (1 << RULE_BITS) - 1
A_SHIFT = 2
B_SHIFT = A_SHIFT + RULE_BITS
A_RULE_MASK = MAX_RULE_ID << A_SHIFT
B_RULE_MASK = MAX_RULE_ID << B_SHIFT

IN, OUT = "in", "out"
BASE_CHAINS = (
    ("nat_pre", "nat", "prerouting", -100),
    ("filter_in", "filter", "prerouting", -99),
    ("nat_post", "nat", "postrouting", 100),
    ("filter_out", "filter", "postrouting", 101),
)
FILTER_CHAIN = {IN: "filter_in", OUT: "filter_out"}
NAT_CHAIN = {IN: "nat_pre", OUT: "nat_post"}
STATUS_CHAIN = "pf_status"
# synproxy's base chains (only in rulesets with a real synproxy rule): raw prerouting, forward,
# input, output
SYNPROXY_CHAINS = ("synproxy_raw", "synproxy_fwd", "synproxy_local", "synproxy_out")
# if-bound states (pf-semantics.md §3.2): the ct mark is full, so the interface a side's state
# is bound to lives in conntrack's 128 label bits: one "bound" bit per side, then one bit per
# (side, interface). A side whose bound bit is set matches only on interfaces whose bit is set.
LABEL_BOUND = {"A": 0, "B": 1}
LABEL_IF_BASE = {"A": 2, "B": 65}
MAX_BOUND_IFS = 63
ANSWER_MARK = 0x80000000  # meta mark bit on packets pf answers with block return
PROXY_PORTS = (50001, 65535)  # pf's default NAT source ports (pf.conf(5) "nat")
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP, IPPROTO_ICMPV6 = 6, 17, 1, 58

# nft's names for the ICMP unreachable codes it can send (reject with icmp ...).
ICMP_REJECT = {0: "net-unreachable", 1: "host-unreachable", 2: "prot-unreachable", 3: "port-unreachable",
               9: "net-prohibited", 10: "host-prohibited", 13: "admin-prohibited"}
ICMP6_REJECT = {0: "no-route", 1: "admin-prohibited", 3: "addr-unreachable", 4: "port-unreachable"}

Branch = list[dict[str, Any]]  # AND of expressions; a rule is an OR of branches

# pf's timeouts -> conntrack's namespace-wide sysctls (pf-semantics.md §3.4): the closest state of
# conntrack's machines. `set timeout` also goes there, as the fallback for connections no rule's
# timeout policy reaches (pfsync's copies, connections older than the ruleset, ICMP and others);
# states made by rules carry the policies of pfha.nft.timeouts.
CONNTRACK_TIMEOUTS = {
    "tcp.first": ("nf_conntrack_tcp_timeout_syn_sent",),
    "tcp.opening": ("nf_conntrack_tcp_timeout_syn_recv",),
    "tcp.established": ("nf_conntrack_tcp_timeout_established",),
    "tcp.closing": ("nf_conntrack_tcp_timeout_fin_wait", "nf_conntrack_tcp_timeout_close_wait", "nf_conntrack_tcp_timeout_last_ack"),
    "tcp.finwait": ("nf_conntrack_tcp_timeout_time_wait",),
    "tcp.closed": ("nf_conntrack_tcp_timeout_close",),
    "udp.first": ("nf_conntrack_udp_timeout",),
    "udp.single": (),  # no conntrack state (pfha.nft.timeouts warns)
    "udp.multiple": ("nf_conntrack_udp_timeout_stream",),
    "icmp.first": ("nf_conntrack_icmp_timeout", "nf_conntrack_icmpv6_timeout"),
    "icmp.error": (),  # conntrack has one ICMP timeout: icmp.first's
    "other.first": ("nf_conntrack_generic_timeout",),
    "other.single": ("nf_conntrack_generic_timeout",),
    "other.multiple": ("nf_conntrack_generic_timeout",),
    "frag": ("nf_conntrack_frag6_timeout",),
}


@dataclass(frozen=True)
class Warning:
    """Something the kernel cannot do as pf does; ``where`` is ``file:line`` or ''."""

    message: str
    where: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


@dataclass
class Compiled:
    """nftables commands (the table's content), warnings, and what pfctl needs to read it back."""

    commands: list[dict[str, Any]]
    warnings: list[Warning]
    metadata: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return {"nftables": self.commands}


def side_of(point: str, ct_direction: str) -> str:
    """(in-pass, original) and (out-pass, reply) are side A; the others side B (§3.2)."""
    return "A" if (point == IN) == (ct_direction == "original") else "B"


def side_bits(side: str) -> tuple[int, int, int]:
    """(flag bit, rule-id shift, rule-id mask) of a side."""
    return (SIDE_A, A_SHIFT, A_RULE_MASK) if side == "A" else (SIDE_B, B_SHIFT, B_RULE_MASK)


def label_bit(side: str, index: int) -> int:
    """The ct label bit saying "side's state may be used on interface ``index``"."""
    return LABEL_IF_BASE[side] + index


def rule_id(number: int) -> int:
    """The id a rule is stored under in the ct mark (0: no rule, e.g. the default rule)."""
    return number + 1 if number + 1 <= MAX_RULE_ID else 0


def first_match_order(rules: Iterable[Any]) -> list[Any]:
    """pf's last-match + quick as first-match (pf-semantics.md §3.3)."""
    rules = list(rules)
    return [r for r in rules if r.quick] + [r for r in reversed(rules) if not r.quick]


def _where(rule: Any) -> str:
    origin = getattr(rule, "origin", None)
    return f"{origin.file}:{origin.line}" if origin else ""


def _family_of(addr: ipaddress._BaseAddress) -> str:
    return "ip" if addr.version == 4 else "ip6"


def _nfproto(family: str) -> str:
    return "ipv4" if family == "ip" else "ipv6"


def _af_family(af: str | None) -> str | None:
    return None if af is None else ("ip" if af == "inet" else "ip6")


# ---------------------------------------------------------------------------------- tables
def _table_networks(entries: Iterable[ast.TableEntry], view: InterfaceView | None) -> tuple[list[Any], list[Any]]:
    """The effective (v4, v6) networks of a table: longest prefix wins, so negated entries
    punch holes in the broader ones they sit in (pf's radix-tree semantics). Prefixes nest or
    are disjoint, so one sorted walk with a stack of enclosing prefixes resolves them
    (n log n: tables of 100,000 entries are common). The result never overlaps (nft interval
    sets refuse overlaps) and keeps each written prefix whole where nothing punches it."""
    polarity: dict[Any, bool] = {}
    for entry in entries:
        for network in _entry_networks(entry.address, view):
            polarity[network] = entry.negated  # a repeated prefix: the last one written wins
    result: dict[int, list[Any]] = {4: [], 6: []}
    for version in (4, 6):
        nodes = sorted(((n, neg) for n, neg in polarity.items() if n.version == version),
                       key=lambda t: (int(t[0].network_address), t[0].prefixlen))
        # addresses as integers (ipaddress's broadcast_address and subnet_of build objects:
        # half the time of a 100,000-entry table)
        stack: list[tuple[Any, bool, int, list[tuple[int, int]]]] = []  # (prefix, negated, last address, children)
        out = result[version]
        for network, negated in nodes:
            start, end = int(network.network_address), _last_address(network)
            # an enclosing prefix starts at or before this one: this one is inside it unless it
            # ends after it (prefixes nest or are disjoint)
            while stack and end > stack[-1][2]:
                _close(stack.pop(), out)
            if stack:
                stack[-1][3].append((start, end))
            stack.append((network, negated, end, []))
        while stack:
            _close(stack.pop(), out)
        out.sort(key=lambda n: (int(n.network_address), n.prefixlen))
    return result[4], result[6]


def _last_address(network: Any) -> int:
    return int(network.network_address) + (1 << (network.max_prefixlen - network.prefixlen)) - 1


def _close(node: tuple[Any, bool, int, list[tuple[int, int]]], out: list[Any]) -> None:
    """Emit what a positive prefix covers itself: its range minus its children's."""
    network, negated, end, children = node
    if negated:
        return
    if not children:
        out.append(network)
        return
    make = ipaddress.IPv4Address if network.version == 4 else ipaddress.IPv6Address
    cursor = int(network.network_address)
    for child_start, child_end in children:
        if child_start > cursor:
            out.extend(ipaddress.summarize_address_range(make(cursor), make(child_start - 1)))
        cursor = max(cursor, child_end + 1)
    if cursor <= end:
        out.extend(ipaddress.summarize_address_range(make(cursor), make(end)))


def _entry_networks(address: Any, view: InterfaceView | None) -> list[Any]:
    if isinstance(address, ast.HostAddress):
        return [_host_network(address)]
    if isinstance(address, ast.RangeAddress):
        return list(ipaddress.summarize_address_range(address.start, address.end))
    if isinstance(address, ast.DynamicAddress) and view is not None:
        return [_iface_net(i, address.modifiers) for i in _dynamic_addresses(address, view)]
    return []


def _host_network(address: ast.HostAddress) -> Any:
    """``address.network`` built from the address's integer: ``ip_network`` of an address
    object formats it and parses the text again (a fifth of a 100,000-host table's compile).
    A scoped IPv6 address (``fe80::1%em0``) keeps the slow way, which keeps its scope."""
    ip = address.address
    if ip.version == 6 and ip.scope_id:
        return address.network
    network = ipaddress.IPv4Network if ip.version == 4 else ipaddress.IPv6Network
    return network((int(ip), address.prefixlen), strict=False)


def _dynamic_addresses(address: ast.DynamicAddress, view: InterfaceView) -> list[Any]:
    addrs = list(view.addrs(address.interface))
    if address.family:
        addrs = [a for a in addrs if (a.version == 4) == (address.family == "inet")]
    if "0" in address.modifiers:
        firsts = []
        for version in (4, 6):
            same = [a for a in addrs if a.version == version and not a.ip.is_link_local]
            firsts += same[:1]
        addrs = firsts
    return addrs


def _iface_net(interface: Any, modifiers: tuple[str, ...]) -> Any:
    if "network" in modifiers:
        return interface.network
    if "broadcast" in modifiers and interface.version == 4:
        return ipaddress.ip_network(interface.network.broadcast_address)
    return ipaddress.ip_network(interface.ip)


def dynamic_networks(address: ast.DynamicAddress, view: InterfaceView, family: str) -> list[Any]:
    """What ``(if)``, ``(if:network)``... stand for right now, for one family (``ip``/``ip6``),
    as non-overlapping networks (nft interval sets refuse overlaps)."""
    nets = [_iface_net(i, address.modifiers) for i in _dynamic_addresses(address, view) if (i.version == 4) == (family == "ip")]
    return list(ipaddress.collapse_addresses(nets)) if nets else []


def _elements(networks: list[Any]) -> list[Any]:
    out: list[Any] = []
    for net in networks:
        full = 32 if net.version == 4 else 128
        out.append(str(net.network_address) if net.prefixlen == full else x.prefix(str(net.network_address), net.prefixlen))
    return out


# ---------------------------------------------------------------------------------- compiler
@dataclass
class _Compiler:
    ruleset: ast.Ruleset
    view: InterfaceView | None
    log_group: int = 0
    devices: Mapping[str, str] = field(default_factory=dict)  # pf.conf name -> Linux device
    warnings: list[Warning] = field(default_factory=list)  # in the order first given
    warned: set[Warning] = field(default_factory=set)  # the same, to skip repeats
    objects: list[dict[str, Any]] = field(default_factory=list)  # counters, sets, maps
    chains: list[dict[str, Any]] = field(default_factory=list)
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sets: dict[tuple[str, str], str] = field(default_factory=dict)  # (key, family) -> set name
    tags: dict[str, int] = field(default_factory=dict)
    stateful: dict[int, str] = field(default_factory=dict)  # filter rule nr -> counter name
    log_all: list[ast.Rule] = field(default_factory=list)
    meta_rules: list[dict[str, Any]] = field(default_factory=list)
    meta_translation: list[dict[str, Any]] = field(default_factory=list)
    meta_tables: list[dict[str, Any]] = field(default_factory=list)
    index: dict[int, int] = field(default_factory=dict)  # id(rule) -> position after flattening
    sysctls: dict[str, int] = field(default_factory=dict)  # conntrack settings the ruleset asks for
    meta_dynamic: list[dict[str, Any]] = field(default_factory=list)  # (if) sets to keep current
    bound_ifs: list[str] = field(default_factory=list)  # Linux devices if-bound states can name
    overload: set[str] = field(default_factory=set)  # tables that max-src-conn* may add sources to
    timeout_plan: ct_timeouts.TimeoutPlan | None = None  # pf's timeouts as ct timeout policies
    overload_flush: list[dict[str, Any]] = field(default_factory=list)  # rules whose overload flushes states
    flushing: set[tuple[Any, ...]] = field(default_factory=set)  # overload_flush's entries, to skip repeats
    synproxy: sp.Plan = field(default_factory=sp.Plan)  # synproxy rules run as real nft synproxy
    interface_tests: dict[tuple[Any, str], list[Branch]] = field(default_factory=dict)  # (match, pass) -> test

    def warn(self, message: str, rule: Any = None) -> None:
        warning = Warning(message, _where(rule) if rule is not None else "")
        if warning not in self.warned:
            self.warned.add(warning)
            self.warnings.append(warning)

    def emit(self, chain: str, exprs: list[dict[str, Any]], comment: str | None = None) -> None:
        self.rules.setdefault(chain, []).append(x.rule(chain, exprs, comment))

    def chain(self, name: str, **base: Any) -> None:
        self.chains.append(x.add("chain", name=name, **base))
        self.rules.setdefault(name, [])

    # ------------------------------------------------------------------ entry point
    def run(self) -> Compiled:
        options = self.ruleset.options
        filters = self.flatten(self.ruleset.filter)
        self.synproxy = sp.plan(filters, self.ruleset.translation, self.ruleset.scrub, self.if_members, self.is_bound)
        answers = any(isinstance(r, ast.Rule) and r.action == "block" and r.block and r.block.kind != "drop" and r.direction != OUT
                      for r in filters)
        for name, kind, hook, prio in BASE_CHAINS:
            policy = "accept"
            self.chain(name, type=kind, hook=hook, prio=prio, policy=policy)
            self.emit(name, [x.jump(STATUS_CHAIN)], "pfctl -e/-d gate")
            self.skip(name, hook, options.skip)
            if answers and name == "filter_out":
                # pf never filters its own answers (M_SKIP_FIREWALL); the RST or ICMP error of a
                # `block return` carries the rejected packet's mark (fwmark_reflect).
                self.emit(name, [x.match(x.band(x.meta("mark"), ANSWER_MARK), ANSWER_MARK), x.ACCEPT], "block return answers")
        if answers:
            self.sysctls.update({"net.ipv4.fwmark_reflect": 1, "net.ipv6.fwmark_reflect": 1})
        self.sysctls["net.netfilter.nf_conntrack_acct"] = 1  # per-state packets/bytes for pfctl -vss
        if options.state_policy == "if-bound" or any(self.is_bound(r) for r in filters if isinstance(r, ast.Rule) and r.action == "pass"):
            self.bound_ifs = self.bound_interfaces(filters)
        self.overload = {o.text for r in filters if isinstance(r, ast.Rule) for o in r.state.options if o.name == "overload" and o.text}
        self.plan_timeouts(filters)
        self.compile_tables()
        self.unsupported_options(options)
        self.compile_scrub()
        self.compile_translation()
        has_nostate = any(r.action == "pass" and (r.state.kind == "none" or r.flags == ast.TcpFlags(0, 0)) for r in filters if isinstance(r, ast.Rule))
        allow_opts_used = any(isinstance(r, ast.Rule) and r.allow_opts for r in filters)
        self.log_all = [r for r in filters if isinstance(r, ast.Rule) and r.log and r.log.all and r.action == "pass"]
        for point in (IN, OUT):
            chain = FILTER_CHAIN[point]
            if not allow_opts_used:
                self.ip_options_drop(chain, None)
            self.synproxy_early(chain, point)
            if not has_nostate:
                # pf drops packets that fail its state checks without evaluating rules
                # ("state-mismatch"); conntrack calls them invalid and strips their ct.
                self.emit(chain, [x.match(x.CT_STATE, "invalid"), x.DROP], "state mismatch (conntrack: invalid)")
        self.compile_filter(filters, allow_opts_used)
        self.compile_synproxy(filters)
        metadata = self.metadata()
        commands = self.timeout_plan.commands() + self.objects + self.chains + [r for name in self.rules for r in self.rules[name]]
        return Compiled(commands, self.warnings, metadata)

    def metadata(self) -> dict[str, Any]:
        return {
            "version": 1,
            "rules": self.meta_rules,
            "translation": self.meta_translation,
            "tables": self.meta_tables,
            "scrub": [_rule_text(r) for r in self.ruleset.scrub],
            "skip": list(self.ruleset.options.skip),
            "warnings": [str(w) for w in self.warnings],
            "tags": self.tags,
            "log_group": self.log_group,
            "sysctls": self.sysctls,
            "dynamic": self.meta_dynamic,
            "devices": dict(self.devices),
            **({"overload_flush": {"group": OVERLOAD_GROUP, "rules": self.overload_flush}} if self.overload_flush else {}),
            "synproxy_chains": list(SYNPROXY_CHAINS) if self.synproxy.real else [],
            "synproxy": [r.number for r in self.synproxy.real],
            # pf's view of its options, for pfctl -s timeouts / -s memory
            "timeouts": configured_timeouts(self.ruleset.options),
            "limits": configured_limits(self.ruleset.options),
        }

    def device(self, name: str) -> str:
        """The Linux device behind a pf.conf interface name (the name itself when not mapped)."""
        return self.devices.get(name, name)

    # ------------------------------------------------------------------ skip and options
    def skip(self, chain: str, hook: str, names: tuple[str, ...]) -> None:
        if not names:
            return
        key = "iifname" if hook == "prerouting" else "oifname"
        interfaces = sorted({self.device(name) for name in self.skip_interfaces(names)})
        right: Any = interfaces[0] if len(interfaces) == 1 else x.anon_set(interfaces)
        self.emit(chain, [x.match(x.meta(key), right), x.ACCEPT], "set skip on " + " ".join(names))

    def skip_interfaces(self, names: tuple[str, ...]) -> set[str]:
        result: set[str] = set()
        for name in names:
            members = self.view.members(name) if self.view else ()
            result.update(members or (name,))
            # FreeBSD's loopback is lo0 (and the group lo); Linux has one loopback called lo.
            if name == "lo" or (name.startswith("lo") and name[2:].isdigit()) or (self.view and self.view.is_loopback(name)):
                result.add("lo")
        return result

    def plan_timeouts(self, filters: list[Any]) -> None:
        """pf's state timeouts become ct timeout policies attached where states are made
        (pfha.nft.timeouts); nothing changes when the ruleset sets none."""
        rules = [r for r in filters if isinstance(r, ast.Rule)]
        self.timeout_plan = ct_timeouts.TimeoutPlan.for_ruleset(self.ruleset, rules)
        for message, rule in ct_timeouts.warnings_for(self.ruleset, rules):
            self.warn(message, rule)

    def timeout_statements(self, rule: Any = None) -> list[dict[str, Any]]:
        """``ct timeout set`` for a state ``rule`` creates (None: the default rule's)."""
        return self.timeout_plan.attach(rule) if self.timeout_plan is not None else []

    def emit_state(self, chain: str, head: Branch, tail: Branch, rule: Any, point: str, direction: str, comment: str) -> None:
        """A state-creating rule ``head + tail``, with the state's timeout policy in between.
        conntrack keeps one timeout per connection and takes a policy only before it confirms
        the entry (the connection's first packet, original direction): there the first pass
        to make a state decides, so the out-pass attaches its policy only when the in-pass made
        no state on this packet (ct mark side A unset). Tested before the rule's own tests, so
        e.g. ``probability`` is drawn once."""
        stmts = self.timeout_statements(rule) if direction == "original" else []
        if not stmts:
            self.emit(chain, head + tail, comment)
            return
        if point == IN:
            self.emit(chain, head + stmts + tail, comment)
            return
        self.emit(chain, [x.match(x.band(x.CT_MARK, SIDE_A), 0)] + head + stmts + tail, comment)
        self.emit(chain, [x.match(x.band(x.CT_MARK, SIDE_A), SIDE_A)] + head + tail, comment)

    def unsupported_options(self, options: ast.Options) -> None:
        for name, value in options.timeouts:
            targets = CONNTRACK_TIMEOUTS.get(name)
            if targets is None:
                self.warn(f"set timeout {name}: conntrack has no such timeout, ignored")
                continue
            for sysctl in targets:
                self.sysctls[f"net.netfilter.{sysctl}"] = value
        for name, _value in options.limits:
            if name != "states":
                self.warn(f"set limit {name}: no nftables equivalent, ignored")
        if options.optimization not in ("normal", "default") and not ct_timeouts.OPTIMIZATION_PRESETS.get(options.optimization):
            self.warn(f"set optimization {options.optimization}: conntrack timeouts are not changed")

    # ------------------------------------------------------------------ tables
    def compile_tables(self) -> None:
        for index, table in enumerate(self.ruleset.tables):
            entries = tuple(table.entries) + tuple(table.file_entries)
            v4, v6 = _table_networks(entries, self.view)
            names = {}
            for family, nets, nft_type in (("ip", v4, "ipv4_addr"), ("ip6", v6, "ipv6_addr")):
                name = f"tbl{index}_{'v4' if family == 'ip' else 'v6'}"
                fields: dict[str, Any] = {"name": name, "type": nft_type, "flags": ["interval"]}
                if table.counters:
                    fields["stmt"] = [{"counter": None}]
                if nets:
                    fields["elem"] = _elements(nets)
                self.objects.append(x.add("set", **fields))
                self.sets[(f"<{table.name}>", family)] = name
                names[family] = name
            overload = self.overload_sets(table.name, index)
            if any(isinstance(e.address, ast.DynamicAddress) for e in entries):
                self.warn(f"table <{table.name}>: interface entries are resolved once, at load time", table)
            self.meta_tables.append({
                "name": table.name, "sets": names, "const": table.const, "persist": table.persist,
                "counters": table.counters, **({"overload": overload} if overload else {}),
            })

    def overload_sets(self, name: str, index: int) -> dict[str, str]:
        """An overload table's companion sets: the packet path cannot add to interval sets, so
        sources overloading a rule go to a plain dynamic set that every lookup also checks."""
        if name not in self.overload:
            return {}
        names = {}
        for family, nft_type in (("ip", "ipv4_addr"), ("ip6", "ipv6_addr")):
            set_name = f"tbl{index}_{'v4' if family == 'ip' else 'v6'}_ovl"
            self.objects.append(x.add("set", name=set_name, type=nft_type, size=65535))
            self.sets[(f"<{name}>+", family)] = set_name
            names[family] = set_name
        return names

    def set_for(self, address: Any, family: str) -> str:
        """The named set holding a table or dynamic interface address for ``family``."""
        if isinstance(address, ast.TableAddress):
            key = f"<{address.name}>"
            if (key, family) not in self.sets:
                # pf creates an empty table for a name referenced but never defined.
                index = len(self.meta_tables)
                for fam, nft_type in (("ip", "ipv4_addr"), ("ip6", "ipv6_addr")):
                    name = f"tbl{index}_{'v4' if fam == 'ip' else 'v6'}"
                    self.objects.append(x.add("set", name=name, type=nft_type, flags=["interval"]))
                    self.sets[(key, fam)] = name
                overload = self.overload_sets(address.name, index)
                self.meta_tables.append({"name": address.name, "sets": {"ip": f"tbl{index}_v4", "ip6": f"tbl{index}_v6"},
                                         "const": False, "persist": False, "counters": False,
                                         **({"overload": overload} if overload else {})})
            return self.sets[(key, family)]
        key = f"({address.interface}{''.join(':' + m for m in address.modifiers)})"
        if (key, family) not in self.sets:
            name = f"dyn{len(self.sets)}_{'v4' if family == 'ip' else 'v6'}"
            nets = dynamic_networks(address, self.view, family) if self.view is not None else []
            fields: dict[str, Any] = {"name": name, "type": "ipv4_addr" if family == "ip" else "ipv6_addr", "flags": ["interval"]}
            if nets:
                fields["elem"] = _elements(nets)
            self.objects.append(x.add("set", **fields))
            self.sets[(key, family)] = name
            self.meta_dynamic.append({"set": name, "interface": address.interface, "device": self.device(address.interface),
                                      "modifiers": list(address.modifiers),
                                      "af": address.family, "family": family})
        return self.sets[(key, family)]

    # ------------------------------------------------------------------ matching
    def interface_match(self, match: ast.InterfaceMatch | None, point: str) -> list[Branch]:
        if (match, point) not in self.interface_tests:
            self.interface_tests[(match, point)] = self.build_interface_match(match, point)
        return self.interface_tests[(match, point)]

    def build_interface_match(self, match: ast.InterfaceMatch | None, point: str) -> list[Branch]:
        if match is None or match.name == "any":
            return [[]]
        key = "iifname" if point == IN else "oifname"
        members = (self.view.members(match.name) if self.view else ()) or (match.name,)
        if match.name in ("lo0",) and (self.view is None or not self.view.exists("lo0")):
            members = ("lo",)
        members = tuple(dict.fromkeys(self.device(m) for m in members))
        right: Any = members[0] if len(members) == 1 else x.anon_set(sorted(members))
        return [[x.match(x.meta(key), right, "!=" if match.negated else "==")]]

    def host_branches(self, host: ast.HostMatch, side: str, rule: Any) -> list[tuple[str | None, Branch]]:
        """Alternatives (family, exprs) for one address test; side is ``saddr`` or ``daddr``."""
        address, op = host.address, "!=" if host.negated else "=="
        if isinstance(address, ast.AnyAddress):
            return [(None, [])]
        if isinstance(address, ast.HostAddress):
            family = _family_of(address.address)
            full = 32 if family == "ip" else 128
            right: Any = str(address.address) if address.prefixlen == full else x.prefix(str(address.address), address.prefixlen)
            return [(family, [x.match(x.payload(family, side), right, op)])]
        if isinstance(address, ast.RangeAddress):
            family = _family_of(address.start)
            return [(family, [x.match(x.payload(family, side), x.span(str(address.start), str(address.end)), op)])]
        if isinstance(address, ast.DynamicAddress) and address.interface == "self" and not address.modifiers:
            families = [_af_family(address.family)] if address.family else ["ip", "ip6"]
            return [(f, [x.match(x.meta("nfproto"), _nfproto(f)),
                         x.match({"fib": {"result": "type", "flags": [side]}}, "local", op)]) for f in families]
        if isinstance(address, ast.TableAddress) and address.name in self.overload:
            result = []
            for f in ("ip", "ip6"):
                main = x.match(x.payload(f, side), "@" + self.set_for(address, f), op)
                extra = x.match(x.payload(f, side), "@" + self.sets[(f"<{address.name}>+", f)], op)
                result += [(f, [main, extra])] if host.negated else [(f, [main]), (f, [extra])]
            return result
        if isinstance(address, (ast.TableAddress, ast.DynamicAddress)):
            families = [_af_family(address.family)] if isinstance(address, ast.DynamicAddress) and address.family else ["ip", "ip6"]
            return [(f, [x.match(x.payload(f, side), "@" + self.set_for(address, f), op)]) for f in families]
        if isinstance(address, ast.NoRoute):
            return [(None, [x.match({"fib": {"result": "oif", "flags": [side]}}, False, "!=" if host.negated else "==")])]
        if isinstance(address, ast.UrpfFailed):
            return [(None, [x.match({"fib": {"result": "oif", "flags": ["saddr", "iif"]}}, False, "!=" if host.negated else "==")])]
        self.warn(f"address {address!r} cannot be compiled: rule never matches", rule)
        return []

    def port_match(self, port: ast.PortMatch | None, field_name: str, proto: str) -> list[Branch]:
        if port is None:
            return [[]]
        left = x.payload(proto, field_name)
        low, high = port.low, port.high
        ops = {"=": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
        if port.op in ops:
            return [[x.match(left, low, ops[port.op])]]
        if port.op == ":":
            return [[x.match(left, x.span(low, high))]]
        if port.op == "><":  # strictly between
            if high is None or high - low < 2:
                return []
            return [[x.match(left, x.span(low + 1, high - 1))]]
        if port.op == "<>":  # outside
            return [[x.match(left, x.span(low, high), "!=")]]
        raise ValueError(f"unknown port operator {port.op}")

    def rule_branches(self, rule: Any, point: str, *, with_flags: bool = True, family: str | None = None) -> list[Branch]:
        """The OR of ANDs that tests everything a pf rule tests on this pass (``family``
        narrows it, e.g. to the family of a translation's target)."""
        branches: list[tuple[str | None, Branch]] = [(None, [])]
        rule_family = _af_family(rule.af) or family
        for side, endpoint in (("saddr", rule.src), ("daddr", rule.dst)):
            alternatives = self.host_branches(endpoint.host, side, rule)
            combined = []
            for (fam_a, a), (fam_b, b) in itertools.product(branches, alternatives):
                if fam_a and fam_b and fam_a != fam_b:
                    continue
                combined.append((fam_a or fam_b, a + b))
            branches = combined
            if endpoint.os:
                self.warn(f"os \"{endpoint.os}\": passive OS fingerprints are not compiled; the test is ignored", rule)
        if rule_family:
            branches = [(f, b) for f, b in branches if f in (None, rule_family)]
        out: list[Branch] = []
        iface = self.interface_match(rule.interface, point)
        proto = {IPPROTO_TCP: "tcp", IPPROTO_UDP: "udp"}.get(rule.proto or -1, "th")
        for family, exprs in branches:
            head: Branch = []
            head += iface[0]
            fam = family or rule_family
            if fam:
                head.append(x.match(x.meta("nfproto"), _nfproto(fam)))
            if rule.proto is not None:
                head.append(x.match(x.meta("l4proto"), rule.proto))
            body = head + exprs
            ports = [p + q for p in self.port_match(rule.src.port, "sport", proto) for q in self.port_match(rule.dst.port, "dport", proto)]
            for extra in ports:
                out.append(body + extra)
        extra_tests = self.extra_tests(rule, with_flags)
        return [b + e for b in out for e in extra_tests]

    def extra_tests(self, rule: Any, with_flags: bool) -> list[Branch]:
        tests: list[Branch] = [[]]
        if isinstance(rule, ast.Rule):
            if rule.icmp is not None:
                key = "icmpv6" if rule.icmp.v6 else "icmp"
                exprs = [x.match(x.payload(key, "type"), rule.icmp.type)]
                if rule.icmp.code is not None:
                    exprs.append(x.match(x.payload(key, "code"), rule.icmp.code))
                tests = [t + exprs for t in tests]
            if rule.tos is not None:
                fam = _af_family(rule.af) or "ip"
                tests = [t + [x.match(x.payload(fam, "dscp"), rule.tos >> 2)] for t in tests]
            if rule.uid is not None or rule.gid is not None:
                self.warn("user/group: only matches packets of local sockets (meta skuid/skgid)", rule)
                for key, idm in (("skuid", rule.uid), ("skgid", rule.gid)):
                    if idm is not None:
                        tests = [t + b for t in tests for b in self.port_like(x.meta(key), idm)]
            if rule.probability is not None and rule.probability < 1:
                tests = [t + [x.match({"numgen": {"mode": "random", "mod": 10000}}, int(round(rule.probability * 10000)), "<")] for t in tests]
            if with_flags and rule.flags is not None and rule.flags.mask:
                flags = x.match(x.band(x.payload("tcp", "flags"), rule.flags.mask), rule.flags.set)
                if rule.proto == IPPROTO_TCP:
                    tests = [t + [flags] for t in tests]
                else:  # pf tests flags on TCP packets only
                    tests = [t + variant for t in tests for variant in (
                        [x.match(x.meta("l4proto"), IPPROTO_TCP), flags],
                        [x.match(x.meta("l4proto"), IPPROTO_TCP, "!=")])]
            if rule.fragment:
                self.warn("fragment: Linux reassembles before filtering, so rules never see fragments", rule)
        if rule.tagged is not None:
            value = self.tag_value(rule.tagged)
            tests = [t + [x.match(x.band(x.meta("mark"), 0xFFFF), value, "!=" if rule.tagged_negated else "==")] for t in tests]
        return tests

    def port_like(self, left: Any, idm: Any) -> list[Branch]:
        port = ast.PortMatch(idm.op, idm.low, idm.high)
        return [[x.match(left, b[0]["match"]["right"], b[0]["match"]["op"])] for b in self.port_match(port, "dport", "tcp")]

    def tag_value(self, name: str) -> int:
        if name not in self.tags:
            self.tags[name] = len(self.tags) + 1
        return self.tags[name]

    # ------------------------------------------------------------------ anchors
    def flatten(self, rules: tuple[Any, ...]) -> list[Any]:
        """Anchors are flattened in place (pf-semantics.md §3.3); unconditional only."""
        out: list[Any] = []
        for rule in rules:
            if isinstance(rule, ast.AnchorRule):
                body = rule.ruleset or self.ruleset.anchor(rule.name)
                if body is None or not body.filter:
                    self.warn(f"anchor \"{rule.name}\" is empty at load time; runtime anchors (pfctl -a) are not supported", rule)
                    continue
                if rule.quick or rule.interface or rule.direction or rule.proto or rule.src != ast.ANY_ENDPOINT or rule.dst != ast.ANY_ENDPOINT:
                    self.warn(f"anchor \"{rule.name}\": conditions and quick on the anchor call are ignored; its rules are inlined", rule)
                out.extend(self.flatten(body.filter))
            elif isinstance(rule, ast.Rule):
                out.append(rule)
        return out

    # ------------------------------------------------------------------ scrub
    def compile_scrub(self) -> None:
        scrubs = [r for r in self.ruleset.scrub if isinstance(r, ast.ScrubRule)]
        for point in (IN, OUT):
            applicable = [r for r in scrubs if r.direction in (None, point)]
            if not applicable:
                continue
            dispatch = f"scrub_{point}"
            self.chain(dispatch)
            for index, rule in enumerate(applicable):
                target = f"scrub_{point}_{index}"
                if not rule.negated:
                    self.chain(target)
                    self.scrub_body(target, rule, point)
                for branch in self.rule_branches(rule, point):
                    self.emit(dispatch, branch + [x.RETURN if rule.negated else x.goto(target)], _where(rule))
            self.emit(FILTER_CHAIN[point], [x.jump(dispatch)], "scrub (first match)")

    def scrub_body(self, chain: str, rule: ast.ScrubRule, point: str) -> None:
        """pf_normalize_tcp's flag checks and the scrub options nft can express."""
        options = rule.options
        flags = x.payload("tcp", "flags")
        tcp = x.match(x.meta("l4proto"), IPPROTO_TCP)
        syn, ack, rst, fin, psh, urg = 0x02, 0x10, 0x04, 0x01, 0x08, 0x20
        self.emit(chain, [tcp, x.match(x.band(flags, syn | rst), syn | rst), x.DROP], "scrub: SYN+RST")
        self.emit(chain, [tcp, x.match(x.band(flags, syn | ack | rst), 0), x.DROP], "scrub: no SYN, ACK or RST")
        self.emit(chain, [tcp, x.match(x.band(flags, ack), 0), x.match(x.band(flags, fin | psh | urg), 0, "!="), x.DROP], "scrub: FIN/PSH/URG without ACK")
        if options.no_df:
            self.emit(chain, [x.match(x.meta("nfproto"), "ipv4"), {"mangle": {"key": x.payload("ip", "frag-off"), "value": x.band(x.payload("ip", "frag-off"), 0xBFFF)}}], "scrub no-df")
        if options.random_id:
            self.emit(chain, [x.match(x.meta("nfproto"), "ipv4"), {"mangle": {"key": x.payload("ip", "id"), "value": {"numgen": {"mode": "random", "mod": 65536}}}}], "scrub random-id")
        if options.min_ttl:
            self.emit(chain, [x.match(x.payload("ip", "ttl"), options.min_ttl, "<"), {"mangle": {"key": x.payload("ip", "ttl"), "value": options.min_ttl}}], "scrub min-ttl")
            self.emit(chain, [x.match(x.payload("ip6", "hoplimit"), options.min_ttl, "<"), {"mangle": {"key": x.payload("ip6", "hoplimit"), "value": options.min_ttl}}], "scrub min-ttl")
        if options.max_mss:
            mss = {"tcp option": {"name": "maxseg", "field": "size"}}
            self.emit(chain, [tcp, x.match(x.band(flags, syn), syn), x.match(mss, options.max_mss, ">"), {"mangle": {"key": mss, "value": options.max_mss}}], "scrub max-mss")
        if options.set_tos is not None:
            self.emit(chain, [x.match(x.meta("nfproto"), "ipv4"), {"mangle": {"key": x.payload("ip", "dscp"), "value": options.set_tos >> 2}}], "scrub set-tos")
        if options.reassemble_tcp:
            self.warn("scrub reassemble tcp: TTL and timestamp normalisation have no nftables equivalent", rule)
        if options.fragment not in (None, "reassemble"):
            self.warn(f"scrub fragment {options.fragment}: Linux always reassembles before filtering", rule)
        self.warn_once_scrub(rule)

    def warn_once_scrub(self, rule: ast.ScrubRule) -> None:
        self.warn("scrub: SYN+FIN is dropped by conntrack/flag checks rather than rewritten; reserved TCP bits are not cleared", rule)

    # ------------------------------------------------------------------ translation
    def compile_translation(self) -> None:
        rules = [r for r in self.ruleset.translation if isinstance(r, ast.TranslationRule)]
        for rule in self.ruleset.translation:
            if isinstance(rule, ast.AnchorRule):
                self.warn(f"{rule.kind} \"{rule.name}\": translation anchors are not supported", rule)
        order = {"nat": 0, "rdr": 1, "binat": 2}
        numbered = sorted(enumerate(rules), key=lambda t: (order[t[1].kind], t[0]))
        for number, (_index, rule) in enumerate(numbered):
            counter = f"n{number}"
            self.objects.append(x.add("counter", name=counter))
            self.meta_translation.append({"nr": number, "kind": rule.kind, "counter": counter, "rule": _rule_text(rule), "where": _where(rule)})
            rule_counter = counter
            if rule.kind == "binat":
                self.binat(rule, rule_counter)
            elif rule.kind == "rdr":
                self.translate(rule, IN, rule_counter)
            else:
                self.translate(rule, OUT, rule_counter)

    def translate(self, rule: ast.TranslationRule, point: str, counter: str) -> None:
        chain = NAT_CHAIN[point]
        if rule.negated:
            for branch in self.rule_branches(rule, point):
                self.emit(chain, branch + [x.counter(counter), x.ACCEPT], _where(rule))
            return
        statements = self.nat_statements(rule, point)
        if statements is None:
            return
        family, statements = statements
        branches = self.rule_branches(rule, point, family=family)
        pass_state: list[dict[str, Any]] = []
        if rule.pass_:
            side = side_of(point, "original")
            flag, _shift, mask = side_bits(side)
            pass_state = [x.set_ct_mark(~(flag | mask), flag)] + self.nat_pass_binding(rule, side)
        for branch in branches:
            for extra, stmt in statements:
                if rule.pass_:  # a state: with the global timeouts (nat chains see first packets only)
                    self.emit_state(chain, branch + extra + [x.counter(counter)], pass_state + [stmt], None, point, "original", _where(rule))
                else:
                    self.emit(chain, branch + extra + [x.counter(counter)] + [stmt], _where(rule))

    def nat_pass_binding(self, rule: ast.TranslationRule, side: str) -> list[dict[str, Any]]:
        """``nat pass``/``rdr pass`` under ``set state-policy if-bound``: the nat statement ends
        the rule, so the interface bit is set inline; that needs the rule's one interface."""
        if not self.bound_ifs or self.ruleset.options.state_policy != "if-bound":
            return []
        match = rule.interface
        members = ((self.view.members(match.name) if self.view else ()) or (match.name,)) if match and not match.negated else ()
        devices = {self.device(m) for m in members}
        if len(devices) != 1 or next(iter(devices)) not in self.bound_ifs:
            self.warn(f"{rule.kind} pass: if-bound needs one interface on the rule; its states are floating", rule)
            return []
        return [x.set_ct_label(LABEL_BOUND[side]), x.set_ct_label(label_bit(side, self.bound_ifs.index(devices.pop())))]

    def nat_statements(self, rule: ast.TranslationRule, point: str) -> tuple[str, list[tuple[Branch, dict[str, Any]]]] | None:
        """The target's family and (extra tests, nat statement) pairs: ports only exist for
        TCP and UDP."""
        pool = rule.pool
        kind = "snat" if point == OUT else "dnat"
        if pool.sticky:
            self.warn("sticky-address: not kept (each new connection picks from the pool)", rule)
        if pool.port_star:
            self.warn("port a:* (offset-preserving rdr) is compiled as the first port of the range", rule)
        family = _af_family(rule.af)
        addresses = [p.address for p in pool.addresses]
        target = self.pool_target(rule, addresses, family, point)
        if target is None:
            return None
        fam, addr = target
        if addr == "masquerade":
            base: dict[str, Any] = {}
            stmt_kind = "masquerade"
        else:
            base = {"family": fam, "addr": addr}
            stmt_kind = kind
        ports: dict[str, Any] | None = None
        flags: list[str] = []
        if pool.port_low:
            high = pool.port_high if pool.port_high and not pool.port_star else pool.port_low
            ports = {"port": pool.port_low} if high == pool.port_low else {"port": x.span(pool.port_low, high)}
            if kind == "dnat" and high != pool.port_low and not pool.port_star:
                self.warn("rdr to a port range: the kernel picks any port of the range, pf keeps the offset", rule)
            if kind == "snat" and high != pool.port_low:
                flags = ["random"]  # pf starts its search for a free port at a random place
        elif kind == "snat" and not pool.static_port:
            ports = {"port": x.span(*PROXY_PORTS)}
            flags = ["random"]
        if ports is None:
            return fam, [([], {stmt_kind: base or None})]
        with_ports = {**base, **ports}
        if flags:
            with_ports["flags"] = flags[0] if len(flags) == 1 else flags
        l4 = [x.match(x.meta("l4proto"), x.anon_set([IPPROTO_TCP, IPPROTO_UDP]))]
        not_l4 = [x.match(x.meta("l4proto"), x.anon_set([IPPROTO_TCP, IPPROTO_UDP]), "!=")]
        if rule.proto in (IPPROTO_TCP, IPPROTO_UDP):
            return fam, [([], {stmt_kind: with_ports})]
        return fam, [(l4, {stmt_kind: with_ports}), (not_l4, {stmt_kind: base or None})]

    def pool_target(self, rule: ast.TranslationRule, addresses: list[Any], family: str | None, point: str) -> tuple[str, Any] | None:
        if not addresses:
            self.warn("translation without target address: rule ignored", rule)
            return None
        if len(addresses) == 1:
            address = addresses[0]
            if isinstance(address, ast.HostAddress):
                fam = _family_of(address.address)
                full = 32 if fam == "ip" else 128
                if address.prefixlen == full:
                    return fam, str(address.address)
                net = address.network
                if rule.pool.method not in (None, "random", "source-hash", "bitmask"):
                    pass
                self.warn(f"pool {net} ({rule.pool.method or 'default'}): the kernel picks any address of the range", rule)
                return fam, x.span(str(net.network_address), str(net.broadcast_address))
            if isinstance(address, ast.DynamicAddress):
                if point == OUT and address.interface == (rule.interface.name if rule.interface else None):
                    if len(self.view.addrs(address.interface) if self.view else ()) > 1:
                        self.warn(f"-> ({address.interface}): masquerade uses the route's source address, not round-robin over all of them", rule)
                    return (family or "ip"), "masquerade"
                addrs = _dynamic_addresses(address, self.view) if self.view else []
                addrs = [a for a in addrs if family is None or (a.version == 4) == (family == "ip")]
                if not addrs:
                    self.warn(f"({address.interface}) has no address at load time: rule ignored", rule)
                    return None
                self.warn(f"({address.interface}): resolved once at load time", rule)
                return _family_of(addrs[0].ip), str(addrs[0].ip)
            if isinstance(address, ast.RangeAddress):
                return _family_of(address.start), x.span(str(address.start), str(address.end))
            self.warn(f"translation to {address!r} is not supported: rule ignored", rule)
            return None
        hosts = [a for a in addresses if isinstance(a, ast.HostAddress)]
        if len(hosts) != len(addresses):
            self.warn("translation pools of tables or interfaces are not supported: rule ignored", rule)
            return None
        fam = _family_of(hosts[0].address)
        method = rule.pool.method or "round-robin"
        key: dict[str, Any] = {"numgen": {"mode": "random" if method == "random" else "inc", "mod": len(hosts)}}
        if method == "source-hash":
            key = {"jhash": {"expr": x.payload(fam, "saddr"), "mod": len(hosts)}}
        elif method not in ("round-robin", "random"):
            self.warn(f"pool method {method} on an address list: compiled as round-robin", rule)
        return fam, {"map": {"key": key, "data": x.anon_set([[i, str(h.address)] for i, h in enumerate(hosts)])}}

    def binat(self, rule: ast.TranslationRule, counter: str) -> None:
        """binat = nat out + rdr in between one inside host and one outside host."""
        inside = rule.src.host.address
        outside = rule.pool.addresses[0].address if rule.pool.addresses else None
        if not (isinstance(inside, ast.HostAddress) and isinstance(outside, ast.HostAddress)) or inside.prefixlen != outside.prefixlen:
            self.warn("binat between networks or non-host addresses is not supported: rule ignored", rule)
            return
        if inside.prefixlen not in (32, 128):
            self.warn("binat between networks is not supported: rule ignored", rule)
            return
        fam = _family_of(inside.address)
        iface_in = self.interface_match(rule.interface, IN)[0]
        iface_out = self.interface_match(rule.interface, OUT)[0]
        proto = [x.match(x.meta("l4proto"), rule.proto)] if rule.proto is not None else []
        if rule.negated:
            self.emit("nat_post", iface_out + proto + [x.match(x.payload(fam, "saddr"), str(inside.address)), x.counter(counter), x.ACCEPT], _where(rule))
            return
        self.emit("nat_pre", iface_in + proto + [x.match(x.payload(fam, "daddr"), str(outside.address)), x.counter(counter), {"dnat": {"family": fam, "addr": str(inside.address)}}], _where(rule))
        self.emit("nat_post", iface_out + proto + [x.match(x.payload(fam, "saddr"), str(inside.address)), x.counter(counter), {"snat": {"family": fam, "addr": str(outside.address)}}], _where(rule))

    # ------------------------------------------------------------------ filter
    def compile_filter(self, rules: list[ast.Rule], allow_opts_used: bool) -> None:
        tagging = any(r.tag for r in rules)
        self.index = {id(rule): i for i, rule in enumerate(rules)}
        for i, rule in enumerate(rules):
            counter = f"r{i}"
            for point in (IN, OUT):
                self.objects.append(x.add("counter", name=f"{counter}_{point}"))
            if rule.action == "pass" and rule.state.kind != "none":
                self.stateful[i] = counter
            self.meta_rules.append({"nr": rule.number, "id": rule_id(i), "counter": counter, "rule": _rule_text(rule),
                                    "where": _where(rule), "labels": list(rule.labels), "action": rule.action})
            self.check_unsupported(rule)
        maps = self.state_maps()
        if self.bound_ifs:
            for side, point in itertools.product(("A", "B"), (IN, OUT)):
                self.bind_chain(side, point)
        for point in (IN, OUT):
            chain = FILTER_CHAIN[point]
            self.state_check(chain, point, maps)
            if tagging:
                self.prelude(rules, point)
            for rule in first_match_order(rules):
                if rule.direction not in (None, point) or rule.action == "match":
                    continue
                self.filter_rule(chain, rule, point, allow_opts_used)
            self.forced_state(chain, point)
        if any(r.action == "match" for r in rules):
            self.warn("match rules: only their tag is applied (other match options are not compiled)")

    # ------------------------------------------------------------------ state limits
    @staticmethod
    def state_limit(rule: ast.Rule) -> int | None:
        """``keep state (max N)``: the most states the rule may hold at once."""
        return next((o.value for o in rule.state.options if o.name == "max" and o.value is not None), None)

    def limit_chain(self, rule: ast.Rule) -> str:
        """``max_rN``: one ``ct count`` shared by every branch and pass of the rule (a
        standalone ct count keeps its own list of live connections), so it counts the rule's
        connections as pf counts its states; over the limit the packet is dropped
        (pf: PFRES_MAXSTATES). Created on first use."""
        name = f"max_r{self.index[id(rule)]}"
        if name not in self.rules:
            self.chain(name)
            self.emit(name, [{"ct count": {"val": self.state_limit(rule), "inv": True}}, x.DROP], f"max {self.state_limit(rule)}")
        return name

    def source_limits(self, rule: ast.Rule, point: str) -> list[list[dict[str, Any]]]:
        """max-src-conn / max-src-conn-rate: a per-source dynamic set with a ct count or a
        limit; a source over it has its new connection dropped and, with ``overload <t>``,
        joins the table's companion set. Counted at a connection's first packet (pf counts
        completed TCP handshakes)."""
        options = {o.name: o for o in rule.state.options}
        if "max-src-conn" not in options and "max-src-conn-rate" not in options:
            return []
        nr = self.index[id(rule)]
        overload = options.get("overload")
        result = []
        for family, nft_type, tag in (("ip", "ipv4_addr", "v4"), ("ip6", "ipv6_addr", "v6")):
            key = x.payload(family, "saddr")
            tail: list[dict[str, Any]] = []
            if overload and overload.text:
                self.set_for(ast.TableAddress(overload.text), family)
                tail.append({"set": {"op": "add", "elem": key, "set": "@" + self.sets[(f"<{overload.text}>+", family)]}})
                if overload.flush:
                    tail.append(self.overload_event(rule, point, overload))
            tail.append(x.DROP)
            head = [x.match(x.meta("nfproto"), _nfproto(family))]
            if "max-src-conn" in options:
                name = self.source_set(f"r{nr}_conn_{tag}", nft_type, None)
                stmt = {"set": {"op": "add", "elem": key, "set": "@" + name, "stmt": [{"ct count": {"val": options["max-src-conn"].value, "inv": True}}]}}
                result.append(head + [stmt] + tail)
            if "max-src-conn-rate" in options:
                count, seconds = options["max-src-conn-rate"].value or 1, options["max-src-conn-rate"].value2 or 1
                rate, per = _rate(count, seconds)
                name = self.source_set(f"r{nr}_rate_{tag}", nft_type, max(seconds, 1))
                stmt = {"set": {"op": "update", "elem": key, "set": "@" + name,
                                "stmt": [{"limit": {"rate": rate, "per": per, "burst": count, "inv": True}}]}}
                result.append(head + [stmt] + tail)
        return result

    def overload_event(self, rule: ast.Rule, point: str, overload: ast.StateOption) -> dict[str, Any]:
        """``overload <t> flush [global]``: nft cannot delete conntrack entries, so the branch
        also logs the offending packet to the overload NFLOG group, where the flusher
        (:mod:`pfha.nft.overload_linux`) kills the states pf would (:mod:`pfha.nft.overload`)."""
        nr = self.index[id(rule)]
        scope = "global" if overload.flush_global else "rule"
        entry = {"rule": rule.number, "id": rule_id(nr), "scope": scope, "where": _where(rule)}
        if tuple(entry.values()) not in self.flushing:
            self.flushing.add(tuple(entry.values()))
            self.overload_flush.append(entry)
        prefix = OverloadPrefix(rule_id(nr), point, scope, rule.number)
        return x.log(prefix.encode(), OVERLOAD_GROUP)

    def source_set(self, name: str, nft_type: str, timeout: int | None) -> str:
        """A per-source dynamic set, created once per rule (both passes share it)."""
        if ("src", name) not in self.sets:
            fields: dict[str, Any] = {"name": name, "type": nft_type, "size": 65535}
            if timeout:
                fields["flags"], fields["timeout"] = ["timeout"], timeout
            self.objects.append(x.add("set", **fields))
            self.sets[("src", name)] = name
        return name

    # ------------------------------------------------------------------ if-bound states
    def is_bound(self, rule: Any) -> bool:
        """pf.conf(5): a rule's ``(if-bound)``/``(floating)`` overrides ``set state-policy``."""
        names = [o.name for o in rule.state.options] if isinstance(rule, ast.Rule) else []
        if "if-bound" in names or "floating" in names:
            return "if-bound" in names
        return self.ruleset.options.state_policy == "if-bound"

    def bound_interfaces(self, rules: list[ast.Rule]) -> list[str]:
        """The Linux devices an if-bound state can be tied to: the interface view's, the
        device map's and those named in rules. A state made on another one stays floating."""
        names: set[str] = set(self.devices.values())
        if self.view is not None:
            names.update(self.device(n) for n in self.view.names())
        for rule in rules:
            match = getattr(rule, "interface", None)
            if match is not None and match.name != "any":
                members = (self.view.members(match.name) if self.view else ()) or (match.name,)
                names.update(self.device(m) for m in members)
        ordered = sorted(names)
        if len(ordered) > MAX_BOUND_IFS:
            self.warn(f"if-bound: more than {MAX_BOUND_IFS} interfaces; states made on {', '.join(ordered[MAX_BOUND_IFS:])} are floating")
        return ordered[:MAX_BOUND_IFS]

    def bind_chain(self, side: str, point: str) -> None:
        """``bind_<side>_<pass>``: tie the side's state to the packet's interface, then accept.
        ct label bits can only be set from constants, so one rule per known interface."""
        name = f"bind_{side.lower()}_{point}"
        self.chain(name)
        key = x.meta("iifname" if point == IN else "oifname")
        for index, device in enumerate(self.bound_ifs):
            self.emit(name, [x.match(key, device), x.set_ct_label(LABEL_BOUND[side]), x.set_ct_label(label_bit(side, index)), x.ACCEPT],
                      f"if-bound to {device}")
        self.emit(name, [x.ACCEPT], "unknown interface: floating")

    def state_verdict(self, side: str, point: str, bound: bool) -> dict[str, Any]:
        """How a state-creating rule ends: accept (floating) or bind to the interface first."""
        return x.goto(f"bind_{side.lower()}_{point}") if bound and self.bound_ifs else x.ACCEPT

    def interface_check(self, chain: str, side: str, point: str, ok: str) -> None:
        """pf_find_state skips a state bound to another interface: the packet goes on to the
        rules, as if there were no state. Only positive label tests exist (``ct label != N``
        compares all 128 bits), so a usable state jumps to ``ok`` and a bound one returns."""
        key = x.meta("iifname" if point == IN else "oifname")
        bound = x.match(x.CT_LABEL, LABEL_BOUND[side], "in")
        for index, device in enumerate(self.bound_ifs):
            self.emit(chain, [bound, x.match(key, device), x.match(x.CT_LABEL, label_bit(side, index), "in"), x.goto(ok)],
                      f"side {side} bound to {device}")
        self.emit(chain, [bound, x.RETURN], f"side {side} bound to another interface: evaluate the rules")
        self.emit(chain, [x.goto(ok)], f"side {side} floating")

    def check_unsupported(self, rule: ast.Rule) -> None:
        state = rule.state
        if state.kind == "modulate":
            self.warn("modulate state: compiled as keep state (Linux randomises ISNs of local sockets; forwarded sequence numbers are not modulated)", rule)
        if state.kind == "synproxy" and not self.synproxy.is_real(rule):
            self.warn(f"synproxy state: compiled as keep state: {self.synproxy.reasons.get(id(rule), 'not a pass rule')}", rule)
        for option in state.options:
            if option.name in ("adaptive.start", "adaptive.end"):
                self.warn("adaptive timeouts (adaptive.start/end; pf derives them from max): not enforced, conntrack's timeouts do not scale", rule)
            elif option.name == "overload" and option.flush and not option.flush_global and not rule_id(self.index[id(rule)]):
                self.warn(f"overload flush: rules past number {MAX_RULE_ID - 1} do not record themselves in their states; "
                          "none of this rule's states are flushed (flush global still works)", rule)
            elif ct_timeouts.is_timeout(option.name):
                continue  # applied as a ct timeout policy, or warned about by pfha.nft.timeouts
            elif option.name == "source-track" and any(o.name in ("max-src-conn", "max-src-conn-rate") for o in state.options):
                continue  # implied by max-src-conn*, which the per-source sets enforce
            elif option.name not in ("floating", "if-bound", "no-sync", "max", "max-src-conn", "max-src-conn-rate", "overload"):
                self.warn(f"state option {option.name}: not enforced by the kernel ruleset", rule)
        for attribute, text in (("route", "route-to/reply-to/dup-to"), ("rtable", "rtable"), ("divert", "divert-to"),
                                ("queue", "queue"), ("dnpipe", "dnpipe"), ("dnqueue", "dnqueue"), ("set_prio", "set prio"),
                                ("prio", "prio"), ("max_pkt_rate", "max-pkt-rate"), ("received_on", "received-on"),
                                ("translations", "nat-to/rdr-to"), ("scrub", "scrub (...) on filter rules"), ("set_tos", "set tos")):
            if getattr(rule, attribute, None):
                self.warn(f"{text}: not compiled", rule)
        if rule.log and rule.log.user:
            self.warn("log (user): uid/pid are not known for forwarded packets; logged without them", rule)
        if rule.action == "block" and rule.block and rule.block.kind != "drop" and rule.direction != IN:
            self.warn("block return on the out-pass: nftables cannot reject in postrouting; such packets are dropped silently", rule)

    def state_maps(self) -> dict[tuple[str, str], str]:
        """ct mark rule id -> the creating rule's counter, per side and pass (pf counts
        packets per direction: ``pfctl -sl`` shows in and out)."""
        names = {}
        for side, point in itertools.product(("A", "B"), (IN, OUT)):
            _flag, shift, _mask = side_bits(side)
            name = f"state_{side.lower()}_{point}"
            elems = [[rule_id(nr) << shift, f"{counter}_{point}"] for nr, counter in sorted(self.stateful.items()) if rule_id(nr)]
            fields: dict[str, Any] = {"name": name, "type": "mark", "map": "counter"}
            if elems:
                fields["elem"] = elems
            self.objects.append(x.add("map", **fields))
            names[(side, point)] = name
        if max(self.stateful, default=0) >= MAX_RULE_ID:
            self.warn(f"more than {MAX_RULE_ID - 1} rules: state-matched packets of later rules are not counted")
        return names

    def state_check(self, head: str, point: str, maps: dict[tuple[str, str], str]) -> None:
        """A packet with a pf state on this side passes without rule evaluation, charged to the
        rule that made the state (pf_test_state_*)."""
        for direction in ("original", "reply"):
            chain = head
            side = side_of(point, direction)
            flag, _shift, mask = side_bits(side)
            test = [x.match(x.CT_DIRECTION, direction), x.match(x.band(x.CT_MARK, flag), flag)]
            if self.bound_ifs:
                # The state rules move to a chain that returns when the state is bound elsewhere.
                check, sub = f"ifcheck_{side.lower()}_{point}_{direction}", f"state_{side.lower()}_{point}_{direction}"
                self.chain(check)
                self.chain(sub)
                self.emit(chain, test + [x.jump(check)], f"state side {side}")
                self.interface_check(check, side, point, sub)
                chain, test = sub, []
            self.emit(chain, test + [{"counter": {"map": {"key": x.band(x.CT_MARK, mask), "data": "@" + maps[(side, point)]}}}], f"state side {side}: charge the rule that made it")
            for rule in self.log_all:
                rid = rule_id(self.index[id(rule)])
                if rule.direction in (None, point) and rid:
                    _f, shift, _m = side_bits(side)
                    self.emit(chain, test + [x.match(x.band(x.CT_MARK, mask), rid << shift), self.log_statement(rule, point, Action.PASS)], f"log (all) @{rule.number}")
            self.emit(chain, test + [x.ACCEPT], f"state side {side}")

    def prelude(self, rules: list[ast.Rule], point: str) -> None:
        """pf applies ``tag`` on every matching rule and stops at the first quick match: walk
        the rules forward setting the mark, then decide with the reordered list (§3.3)."""
        name = f"prelude_{point}"
        self.chain(name)
        for rule in rules:
            if rule.direction not in (None, point) or not (rule.tag or rule.quick):
                continue
            for branch in self.rule_branches(rule, point):
                stmts: list[dict[str, Any]] = []
                if rule.tag:
                    value = self.tag_value(rule.tag)
                    stmts.append({"mangle": {"key": x.meta("mark"), "value": x.bor(x.band(x.meta("mark"), 0xFFFF0000), value)}})
                if rule.quick:
                    stmts.append(x.RETURN)
                self.emit(name, branch + stmts, f"prelude @{rule.number}")
        self.emit(FILTER_CHAIN[point], [x.jump(name)], "tags of every matching rule")

    def log_statement(self, rule: ast.Rule, point: str, action: int) -> dict[str, Any]:
        group = self.log_group
        if rule.log and rule.log.to:
            digits = "".join(c for c in rule.log.to if c.isdigit())
            group = int(digits) if digits else self.log_group
        prefix = LogPrefix(rulenr=rule.number, action=action, direction=Direction.IN if point == IN else Direction.OUT,
                           ridentifier=rule.ridentifier or 0)
        return x.log(prefix.encode(), group)

    def ip_options_drop(self, chain: str, branch: Branch | None) -> None:
        """pf drops IPv4 packets with options and IPv6 packets with a type 0 routing header
        unless the deciding rule says allow-opts (pf.conf(5) "allow-opts")."""
        head = branch or []
        self.emit(chain, head + [x.match(x.meta("nfproto"), "ipv4"), x.match(x.payload("ip", "hdrlength"), 5, ">"), x.DROP], "IP options without allow-opts")
        self.emit(chain, head + [x.match(x.meta("nfproto"), "ipv6"), x.match({"exthdr": {"name": "rt", "field": "type"}}, 0), x.DROP], "IPv6 routing header type 0 without allow-opts")

    def filter_rule(self, chain: str, rule: ast.Rule, point: str, allow_opts_used: bool) -> None:
        counter = x.counter(f"r{self.index[id(rule)]}_{point}")
        comment = f"@{rule.number} {_where(rule)}"
        branches = self.rule_branches(rule, point)
        if rule.action == "block":
            for branch in branches:
                self.block(chain, branch, rule, point, counter, comment)
            return
        log = [self.log_statement(rule, point, Action.PASS)] if rule.log else []
        rid = rule_id(self.index[id(rule)])
        for branch in branches:
            if allow_opts_used and not rule.allow_opts:
                for opts in ([x.match(x.meta("nfproto"), "ipv4"), x.match(x.payload("ip", "hdrlength"), 5, ">")],
                             [x.match(x.meta("nfproto"), "ipv6"), x.match({"exthdr": {"name": "rt", "field": "type"}}, 0)]):
                    self.emit(chain, branch + opts + [x.DROP], comment + " (ip options)")
            if rule.state.kind != "none":
                if self.state_limit(rule) is not None:
                    self.emit(chain, branch + [x.jump(self.limit_chain(rule))], comment + " max")
                self.synproxy_syn_pass(chain, rule, point, branch, [counter] + log)
                for exprs in self.source_limits(rule, point):
                    self.emit(chain, branch + exprs, comment + " source limit")
                # Record the state on this pass's side (by ct direction), then accept. Two
                # exclusive rules rather than a jump: no per-rule chain to create and load.
                for direction in ("original", "reply"):
                    side = side_of(point, direction)
                    flag, shift, mask = side_bits(side)
                    self.emit_state(chain, branch + [x.match(x.CT_DIRECTION, direction), counter] + log,
                                    [x.set_ct_mark(~(flag | mask), flag | (rid << shift)), self.state_verdict(side, point, self.is_bound(rule))],
                                    rule, point, direction, comment)
            else:
                # no state: pass statelessly, unless a translation on this pass forces state.
                status = "dnat" if point == IN else "snat"
                side = side_of(point, "original")
                flag, shift, mask = side_bits(side)
                self.emit_state(chain, branch + [x.match(x.CT_DIRECTION, "original"), x.match(x.CT_STATUS, status, "in"), counter] + log,
                                [x.set_ct_mark(~(flag | mask), flag | (rid << shift)), self.state_verdict(side, point, self.is_bound(rule))],
                                rule, point, "original", comment + " (translation forces state)")
                self.emit(chain, branch + [counter] + log + [x.ACCEPT], comment)

    def block(self, chain: str, branch: Branch, rule: ast.Rule, point: str, counter: dict[str, Any], comment: str) -> None:
        log = [self.log_statement(rule, point, Action.DROP)] if rule.log else []
        how = rule.block.kind if rule.block else "drop"
        if how != "drop" and point == IN:
            mark = {"mangle": {"key": x.meta("mark"), "value": x.bor(x.meta("mark"), ANSWER_MARK)}}
            tcp = x.match(x.meta("l4proto"), IPPROTO_TCP)
            not_rst = x.match(x.band(x.payload("tcp", "flags"), 0x04), 0)
            if how in ("return", "return-rst") and rule.proto in (None, IPPROTO_TCP):
                self.emit(chain, branch + [tcp, not_rst, counter] + log + [mark, {"reject": {"type": "tcp reset"}}], comment + " return-rst")
            others = [IPPROTO_ICMP, IPPROTO_ICMPV6] + ([IPPROTO_TCP] if how == "return" else [])
            if how in ("return", "return-icmp", "return-icmp6") and rule.proto not in others:
                code4 = ICMP_REJECT.get(rule.block.icmp_code if rule.block.icmp_code is not None else 3)
                code6 = ICMP6_REJECT.get(rule.block.icmp6_code if rule.block.icmp6_code is not None else 4)
                if code4 is None or code6 is None:
                    self.warn("return-icmp code not supported by nftables reject: port-unreachable is sent", rule)
                    code4, code6 = code4 or "port-unreachable", code6 or "port-unreachable"
                test = [x.match(x.meta("l4proto"), x.anon_set(others), "!=")]
                self.emit(chain, branch + test + [x.match(x.meta("nfproto"), "ipv4"), counter] + log + [mark, {"reject": {"type": "icmp", "expr": code4}}], comment + " return-icmp")
                self.emit(chain, branch + test + [x.match(x.meta("nfproto"), "ipv6"), counter] + log + [mark, {"reject": {"type": "icmpv6", "expr": code6}}], comment + " return-icmp6")
        self.emit(chain, branch + [counter] + log + [x.DROP], comment)

    def forced_state(self, chain: str, point: str, rid: int = 0) -> None:
        """pf always creates state when a translation applied on this pass (§2.2)."""
        status = "dnat" if point == IN else "snat"
        side = side_of(point, "original")
        flag, shift, mask = side_bits(side)
        bound = self.ruleset.options.state_policy == "if-bound"
        self.emit_state(chain, [x.match(x.CT_DIRECTION, "original"), x.match(x.CT_STATUS, status, "in")],
                        [x.set_ct_mark(~(flag | mask), flag | (rid << shift)), self.state_verdict(side, point, bound)],
                        None, point, "original", "translation forces state")


    # ------------------------------------------------------------------ synproxy
    # Real nft synproxy for the rules pfha.nft.synproxy.plan accepts (docs/dataplane.md,
    # "synproxy"). The client's SYN is untracked in ``synproxy_raw`` when the raw chain's
    # first-match walk says pf would pick the synproxy rule; it passes the in-pass at the rule's
    # position (``ct state untracked``) and is answered in ``synproxy_fwd``/``synproxy_local``.
    # The client's ACK (no conntrack entry yet) goes to the cookie check there; the SYN the
    # kernel then sends to the server is tracked, gets side A of the rule in ``synproxy_out``
    # and meets the out-pass like any forwarded SYN.
    def if_members(self, name: str) -> set[str]:
        """The interfaces a pf.conf interface name or group stands for."""
        return set((self.view.members(name) if self.view else ()) or (name,))

    def synproxy_syn_pass(self, chain: str, rule: ast.Rule, point: str, branch: Branch, charge: list[dict[str, Any]]) -> None:
        """The untracked SYN of a real synproxy rule passes the in-pass where the rule sits
        (its counter and log); the raw chain untracked it only if pf would pick this rule."""
        if point == IN and self.synproxy.is_real(rule):
            self.emit(chain, branch + [x.match(x.CT_STATE, "untracked")] + charge + [x.ACCEPT], f"@{rule.number} {_where(rule)} synproxy: SYN to answer")

    def synproxy_early(self, chain: str, point: str) -> None:
        """Before the state-mismatch drop: the client's handshake ACK (no conntrack entry: pf
        finds its synproxy state) goes on to the cookie check; synproxy's own SYN-ACK (conntrack
        calls it invalid: it never saw the SYN) leaves unfiltered, as pf's own answers do."""
        if not self.synproxy.real:
            return
        tcp = x.match(x.meta("l4proto"), IPPROTO_TCP)
        flags = x.band(x.payload("tcp", "flags"), sp.TH_FIN | sp.TH_SYN | sp.TH_RST | sp.TH_ACK)
        if point == OUT:
            for rule in self.synproxy.real:
                back = dataclasses.replace(rule, interface=None, flags=None, src=rule.dst, dst=rule.src)
                for branch in self.rule_branches(back, OUT, with_flags=False):
                    self.emit(chain, branch + [x.match(x.CT_STATE, "invalid"), x.match(x.meta("iif"), 0), tcp, x.match(flags, sp.TH_SYN | sp.TH_ACK), x.ACCEPT],
                              f"@{rule.number} synproxy: the firewall's SYN-ACK to the client")
            return
        for rule in self.synproxy.real:
            for branch in self.rule_branches(rule, IN, with_flags=False):
                self.emit(chain, branch + [x.match(x.CT_STATE, ["new", "invalid"], "in"), tcp, x.match(flags, sp.TH_ACK), x.ACCEPT],
                          f"@{rule.number} {_where(rule)} synproxy: client ACK to the cookie check")

    def compile_synproxy(self, rules: list[ast.Rule]) -> None:
        if not self.synproxy.real:
            return
        raw, forward, local, out = SYNPROXY_CHAINS
        tcp = x.match(x.meta("l4proto"), IPPROTO_TCP)
        syn = [tcp, x.match(x.band(x.payload("tcp", "flags"), sp.TH_SYN | sp.TH_ACK), sp.TH_SYN)]
        ack = [tcp, x.match(x.band(x.payload("tcp", "flags"), sp.TH_FIN | sp.TH_SYN | sp.TH_RST | sp.TH_ACK), sp.TH_ACK)]
        # raw: pf's in-pass decision for SYNs, first match, before conntrack and rdr
        self.chain(raw, type="filter", hook="prerouting", prio=-300, policy="accept")
        self.emit(raw, [x.jump(STATUS_CHAIN)], "pfctl -e/-d gate")
        self.skip(raw, "prerouting", self.ruleset.options.skip)
        for rule in first_match_order(rules):
            if rule.direction not in (None, IN) or rule.action not in ("pass", "block"):
                continue
            if self.synproxy.is_real(rule):
                for branch in self.rule_branches(rule, IN):
                    self.emit(raw, branch + [e for e in syn if e not in branch] + [{"notrack": None}],
                              f"@{rule.number} {_where(rule)} synproxy: untrack the SYN")
            elif id(rule) in self.synproxy.shields:
                for branch in self.rule_branches(rule, IN):
                    self.emit(raw, branch + syn + [x.RETURN], f"@{rule.number} {_where(rule)} decides first")
        # forward / input: nft synproxy answers the SYN, checks the ACK's cookie, opens the server side
        for name, hook in ((forward, "forward"), (local, "input")):
            self.chain(name, type="filter", hook=hook, prio=0, policy="accept")
            self.emit(name, [x.jump(STATUS_CHAIN)], "pfctl -e/-d gate")
            for rule in self.synproxy.real:
                for branch in self.rule_branches(rule, IN, with_flags=False):
                    for family, test in self.branch_families(branch):
                        head = branch + test
                        stmt = {"synproxy": {"mss": sp.MSS[family]}}
                        self.emit(name, head + [x.match(x.CT_STATE, "untracked")] + syn + [stmt], f"@{rule.number} synproxy: answer the SYN")
                        self.emit(name, head + [x.match(x.CT_STATE, ["new", "invalid"], "in")] + ack + [stmt], f"@{rule.number} synproxy: cookie ACK")
        # output: the kernel's SYN to the server carries the client's source address; its
        # connection gets the in-pass state (side A) of the synproxy rule.
        self.chain(out, type="filter", hook="output", prio=0, policy="accept")
        self.emit(out, [x.jump(STATUS_CHAIN)], "pfctl -e/-d gate")
        flag, shift, mask = side_bits(side_of(IN, "original"))
        proxied = [x.match(x.CT_STATE, "new"), x.match(x.CT_DIRECTION, "original")] + syn + \
            [x.match({"fib": {"result": "type", "flags": ["saddr"]}}, "local", "!=")]
        for rule in first_match_order(self.synproxy.real):  # the interface is not known here
            rid = rule_id(self.index[id(rule)])
            for branch in self.rule_branches(dataclasses.replace(rule, interface=None), IN, with_flags=False):
                self.emit(out, branch + proxied + [x.set_ct_mark(~(flag | mask), flag | (rid << shift)), x.ACCEPT],
                          f"@{rule.number} synproxy: the server side's state")

    @staticmethod
    def branch_families(branch: Branch) -> list[tuple[str, Branch]]:
        """nft synproxy's MSS depends on the family: (family, test to add) per family the
        branch can carry."""
        for family in ("ip", "ip6"):
            if x.match(x.meta("nfproto"), _nfproto(family)) in branch or any(
                    e.get("match", {}).get("left", {}).get("payload", {}).get("protocol") == family for e in branch):
                return [(family, [])]
        return [(family, [x.match(x.meta("nfproto"), _nfproto(family))]) for family in ("ip", "ip6")]

def _rate(count: int, seconds: int) -> tuple[int, str]:
    """``count`` per ``seconds`` as nft's integer rate per unit (the finest exact one; a day
    rounds up)."""
    for per, length in (("second", 1), ("minute", 60), ("hour", 3600), ("day", 86400)):
        if (count * length) % seconds == 0:
            return count * length // seconds, per
    return -(-count * 86400 // seconds), "day"


def _rule_text(rule: Any) -> str:
    try:
        from pfha.conf import format_rule

        return format_rule(rule)
    except Exception:  # the printer is another package's; a missing case must not stop a load
        return f"@{getattr(rule, 'number', '?')} ({_where(rule)})"


def compile_ruleset(ruleset: ast.Ruleset, interfaces: InterfaceView | None = None, *, log_group: int = 0,
                    devices: Mapping[str, str] | None = None) -> Compiled:
    """Ruleset -> nftables commands for the ``inet pfha`` table, warnings, and metadata.

    ``interfaces`` is in pf.conf's names (``xl0``); ``devices`` maps those names to the Linux
    devices the kernel rules must name (``xl0 -> eth1``; unmapped names are kept as they are).
    """
    with gc_paused():
        return _Compiler(ruleset, interfaces, log_group, dict(devices or {})).run()


def parse_device_map(specs: Iterable[str]) -> dict[str, str]:
    """``NAME=DEVICE`` strings (``--map xl0=eth1``) -> {pf.conf name: Linux device}."""
    from pfha.errors import PfhaError

    devices: dict[str, str] = {}
    for spec in specs:
        name, sep, device = (part.strip() for part in spec.partition("="))
        if not sep or not name or not device:
            raise PfhaError(f"bad interface map {spec!r}: expected NAME=DEVICE (pf.conf name = Linux device)")
        if name in devices:
            raise PfhaError(f"interface {name} mapped twice ({devices[name]}, {device})")
        if device in devices.values():
            raise PfhaError(f"device {device} is mapped from two pf.conf names")
        devices[name] = device
    return devices


def view_as_named(view: InterfaceView, devices: Mapping[str, str]) -> InterfaceView:
    """A view of Linux devices (``InterfaceView.live()``) seen under pf.conf's names: each
    mapped device's addresses appear under its pf.conf name, and the device name disappears."""
    if not devices:
        return view
    by_device = {device: name for name, device in devices.items()}
    specs = [f"{by_device.get(dev, dev)}=" + ",".join(str(a) for a in addrs) for dev, addrs in view.addresses.items()]
    specs += [f"{name}=" for name, dev in devices.items() if dev not in view.addresses]
    loopback = {by_device.get(dev, dev) for dev in view.loopback}
    peers = {by_device.get(dev, dev): addrs for dev, addrs in view.peers.items()}
    return dataclasses.replace(InterfaceView.from_specs(specs, resolver=view.resolver), peers=peers,
                               loopback=frozenset(loopback))
