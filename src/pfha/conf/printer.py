"""Print a :class:`Ruleset` exactly as ``pfctl -o none -nvf`` does.

The field order is pfctl_parser.c's print_rule(); the output order is pfctl's: while parsing,
set options, macros, tables and queues in file order (``Ruleset.definitions``); then, while
loading, ether rules, scrub, nat, rdr, binat and filter rules, anchors' inline bodies nested
under their anchor rule with two spaces per level. Ports print by service name only for ``=``
and ``!=``; uids/gids numerically; ICMP types/codes and protocols by name when known.

Pure: strings in, strings out.
"""

from __future__ import annotations

from pfha.conf import names
from pfha.conf.ast import (
    AnchorRule,
    AnyAddress,
    DynamicAddress,
    Endpoint,
    EtherRule,
    HostAddress,
    HostMatch,
    MacAddress,
    Macro,
    NoRoute,
    Pool,
    RangeAddress,
    Rule,
    RuleBase,
    Ruleset,
    ScrubRule,
    StateOption,
    Table,
    TableAddress,
    TranslationRule,
    UrpfFailed,
)
from pfha.data import icmp_code_name, icmp_type_name

#: PFTM order (pfvar.h): how pfctl orders per-rule timeouts inside ``( ... )``
TIMEOUT_ORDER = (
    "tcp.first", "tcp.opening", "tcp.established", "tcp.closing", "tcp.finwait", "tcp.closed",
    "udp.first", "udp.single", "udp.multiple", "icmp.first", "icmp.error", "other.first",
    "other.single", "other.multiple", "frag", "interval", "adaptive.start", "adaptive.end",
    "src.track", "tcp.tsdiff", "sctp.first", "sctp.opening", "sctp.established", "sctp.closing",
    "sctp.closed",
)
_TIMEOUT_RANK = {name: i for i, name in enumerate(TIMEOUT_ORDER)}

PROXY_PORT_LOW, PROXY_PORT_HIGH = 50001, 65535


# ---------------------------------------------------------------------------------- addresses
def format_address(addr, af: str | None = None) -> str:
    """print_addr(): ``any``, ``a.b.c.d[/n]``, ``<t>``, ``(if[:mod])[/n]``, ranges..."""
    kind = type(addr)
    if kind is HostAddress:
        if addr.prefixlen == 0 and not int(addr.address):
            return "any"
        text = str(addr.address)
        full = 32 if addr.address.version == 4 else 128
        return text if addr.prefixlen == full else f"{text}/{addr.prefixlen}"
    if kind is AnyAddress:
        return "any"
    if kind is TableAddress:
        return f"<{addr.name}>"
    if kind is DynamicAddress:
        mods = "".join(f":{m}" for m in addr.modifiers)
        text = f"({addr.interface}{mods})"
        if addr.prefixlen is not None:
            full = 32 if (af or addr.family) == "inet" else 128
            if addr.prefixlen != full:
                text += f"/{addr.prefixlen}"
        return text
    if kind is RangeAddress:
        return f"{addr.start} - {addr.end}"
    if kind is NoRoute:
        return "no-route"
    if kind is UrpfFailed:
        return "urpf-failed"
    raise TypeError(f"not an address: {addr!r}")


def format_port(port, proto: int | None, numeric: bool = False) -> str:
    """print_port(): `` port = name`` for = and != when the service has a name."""
    op, low, high = port.op, port.low, port.high
    if op in ("=", "!=") and not numeric:
        name = names.port_name(low, "tcp" if proto == 6 else "udp")
        if name is not None:
            return f" port {op} {name}"
    return " port" + _format_op(op, str(low), str(high))


def _format_op(op: str, a1: str, a2: str) -> str:
    if op == "><":
        return f" {a1} >< {a2}"
    if op == "<>":
        return f" {a1} <> {a2}"
    if op == ":":
        return f" {a1}:{a2}"
    return f" {op} {a1}"


def _format_host(host: HostMatch, af) -> str:
    return ("! " if host.negated else "") + format_address(host.address, af)


def _is_any(addr) -> bool:
    kind = type(addr)
    return kind is AnyAddress or (kind is HostAddress and addr.prefixlen == 0 and not int(addr.address))


def format_fromto(src: Endpoint, dst: Endpoint, af, proto, numeric: bool = False) -> str:
    if (
        _is_any(src.host.address)
        and _is_any(dst.host.address)
        and not src.host.negated
        and not dst.host.negated
        and src.port is None
        and dst.port is None
        and src.os is None
    ):
        return " all"
    out = [" from ", _format_host(src.host, af)]
    if src.port is not None:
        out.append(format_port(src.port, proto, numeric))
    if src.os is not None:
        out.append(f' os "{src.os}"')
    out.append(" to ")
    out.append(_format_host(dst.host, af))
    if dst.port is not None:
        out.append(format_port(dst.port, proto, numeric))
    return "".join(out)


# ---------------------------------------------------------------------------------- pools
def format_pool(pool: Pool, af, kind: str) -> str:
    """print_pool(); ``kind`` is ``nat``, ``rdr``, ``binat`` or ``route``."""
    out: list[str] = []
    many = len(pool.addresses) > 1
    if many:
        out.append("{ ")
    for i, item in enumerate(pool.addresses):
        if kind == "route":
            if item.interface is not None and type(item.address) is AnyAddress:
                out.append(item.interface)
            elif item.interface is not None:
                out.append(f"({item.interface} {format_address(item.address, af)})")
            else:
                out.append(format_address(item.address, af))
        else:
            out.append(format_address(item.address, af))
        if i + 1 < len(pool.addresses):
            out.append(", ")
        elif many:
            out.append(" }")
    p1, p2 = pool.port_low, pool.port_high
    if kind == "nat":
        if (p1 != PROXY_PORT_LOW or p2 != PROXY_PORT_HIGH) and (p1 != 0 or p2 != 0):
            out.append(f" port {p1}" if p1 == p2 else f" port {p1}:{p2}")
    elif kind == "rdr":
        if p1:
            out.append(f" port {p1}")
            if pool.port_star:
                out.append(":*")
            elif p2 and p2 != p1:
                out.append(f":{p2}")
    if pool.method == "source-hash":
        out.append(f" source-hash 0x{pool.hash_key or '0' * 32}")
    elif pool.method:
        out.append(f" {pool.method}")
    if pool.sticky:
        out.append(" sticky-address")
    if kind == "nat" and p1 == 0 and p2 == 0:
        out.append(" static-port")
    if pool.map_e_portset is not None:
        out.append(" map-e-portset %u/%u/%u" % pool.map_e_portset)
    if pool.endpoint_independent:
        out.append(" endpoint-independent")
    if pool.prefer_ipv6_nexthop:
        out.append(" prefer-ipv6-nexthop")
    return "".join(out)


# ---------------------------------------------------------------------------------- rules
def _log(log) -> str:
    if log is None:
        return ""
    opts = []
    if log.all:
        opts.append("all")
    if log.matches:
        opts.append("matches")
    if log.user:
        opts.append("user")
    if log.to:
        opts.append(f"to {log.to}")
    return " log" + (f" ({', '.join(opts)})" if opts else "")


def _iface(rule) -> str:
    if rule.interface is None:
        return ""
    return f" on {'! ' if rule.interface.negated else ''}{rule.interface.name}"


def _block_return(rule: Rule) -> str:
    b = rule.block
    if b is None or b.kind == "drop":
        return " drop"
    if b.kind == "return":
        return " return"
    if b.kind == "return-rst":
        return " return-rst" if not b.ttl else f" return-rst(ttl {b.ttl})"
    code4 = 3 if b.icmp_code is None else b.icmp_code
    code6 = 4 if b.icmp6_code is None else b.icmp6_code
    n4 = icmp_code_name(3, code4, False) or str(code4)
    n6 = icmp_code_name(1, code6, True) or str(code6)
    if rule.af == "inet":
        return f" return-icmp({n4})"
    if rule.af == "inet6":
        return f" return-icmp6({n6})"
    return f" return-icmp({n4}, {n6})"


_FLAG_TEXTS: dict[int, str] = {}


def _flag_text(value: int) -> str:
    """names.format_flags(), memoised: a rule set uses a handful of flag values."""
    text = _FLAG_TEXTS.get(value)
    if text is None:
        text = names.format_flags(value)
        if value < 256:
            _FLAG_TEXTS[value] = text
    return text


def _proto(proto) -> str:
    if proto is None:
        return ""
    name = names.protocol_name(proto)
    return f" proto {name}" if name is not None else f" proto {proto}"


def _ugid(word: str, m) -> str:
    if m is None:
        return ""
    limit = names.UID_MAX
    a1 = "unknown" if (m.low == limit and m.op in ("=", "!=")) else str(m.low)
    return f" {word}" + _format_op(m.op, a1, str(m.high))


#: the order print_rule() prints state options in (timeouts after these)
_STATE_OPT_RANK = {n: i for i, n in enumerate((
    "max", "no-sync", "source-track", "max-src-states", "max-src-conn", "max-src-conn-rate",
    "max-src-nodes", "overload", "if-bound", "floating", "sloppy", "pflow", "allow-related",
))}


def _state_opts(opts: tuple[StateOption, ...]) -> str:
    if not opts:
        return ""
    rank = _STATE_OPT_RANK
    parts: list[tuple[int, str]] = []
    for o in opts:
        if o.name in _TIMEOUT_RANK:
            parts.append((100 + _TIMEOUT_RANK[o.name], f"{o.name} {o.value}"))
            continue
        if o.name == "max":
            text = f"max {o.value}"
        elif o.name == "source-track":
            text = f"source-track {o.text or 'global'}"
        elif o.name in ("max-src-states", "max-src-conn", "max-src-nodes"):
            text = f"{o.name} {o.value}"
        elif o.name == "max-src-conn-rate":
            text = f"max-src-conn-rate {o.value}/{o.value2}"
        elif o.name == "overload":
            text = f"overload <{o.text}>" + (" flush" if o.flush else "") + (" global" if o.flush_global else "")
        else:
            text = o.name
        parts.append((rank.get(o.name, 50), text))
    parts.sort(key=lambda p: p[0])
    return " (" + ", ".join(t for _, t in parts) + ")"


def _prob(rule: Rule) -> str:
    if rule.probability is None:
        return ""
    value = _prob_raw(rule.probability) * 100.0 / 4294967296.0
    text = f"{value:f}"
    text = text.rstrip("0").rstrip(".") if "." in text else text
    return f" probability {text}%"


def _prob_raw(p: float) -> int:
    import math

    raw = int(math.floor(p * 4294967295 + 0.5))
    return raw or 1


def format_rule(rule, verbose: int = 1, numeric: bool = False) -> str:
    """One rule as print_rule() prints it (no newline, no inline anchor body)."""
    if isinstance(rule, EtherRule):
        return format_ether_rule(rule)
    out: list[str] = []
    if verbose >= 2:
        out.append(f"@{rule.number} ")
    anchor = isinstance(rule, AnchorRule)
    is_rule = not anchor and isinstance(rule, Rule)
    if anchor:
        out.append(rule.kind)
        if rule.name and not rule.name.startswith("_"):
            out.append(f' "{rule.name}"')
    elif is_rule:
        out.append(rule.action)
        if rule.action == "block":
            out.append(_block_return(rule))
    elif isinstance(rule, ScrubRule):
        out.append("no scrub" if rule.negated else "scrub")
    elif isinstance(rule, TranslationRule):
        out.append(("no " if rule.negated else "") + rule.kind)
        if rule.pass_:
            out.append(" pass")
    if rule.direction:
        out.append(f" {rule.direction}")
    if rule.log is not None:
        out.append(_log(rule.log))
    if rule.quick:
        out.append(" quick")
    if rule.interface is not None:
        out.append(_iface(rule))
    if is_rule and rule.route is not None:
        out.append(f" {rule.route.kind} ")
        out.append(format_pool(rule.route.pool, rule.af, "route"))
    if rule.af:
        out.append(f" {rule.af}")
    out.append(_proto(rule.proto))
    out.append(format_fromto(rule.src, rule.dst, rule.af, rule.proto, numeric))
    if rule.received_on is not None:
        ro = rule.received_on
        out.append(f" received-on {'! ' if ro.negated else ''}{ro.name}")
    if is_rule or anchor:
        if rule.uid is not None:
            out.append(_ugid("user", rule.uid))
        if rule.gid is not None:
            out.append(_ugid("group", rule.gid))
        flags = rule.flags
        if flags is not None and (flags.set or flags.mask):
            out.append(f" flags {_flag_text(flags.set)}/{_flag_text(flags.mask)}")
        elif (
            is_rule
            and rule.action == "pass"
            and rule.proto in (None, 6)
            and not rule.fragment
            and rule.state.kind != "none"
        ):
            out.append(" flags any")
        if rule.icmp is not None:
            out.append(_icmp(rule.icmp, rule.af))
    if is_rule:
        if rule.tos is not None:
            out.append(" tos 0x%2.2x" % rule.tos)
        if rule.prio is not None:
            out.append(f" prio {rule.prio}")
        if rule.max_pkt_rate is not None:
            out.append(" max-pkt-rate %u/%u" % rule.max_pkt_rate)
        if rule.max_pkt_size is not None:
            out.append(f" max-pkt-size {rule.max_pkt_size}")
        if rule.set_prio is not None:
            sp = rule.set_prio
            if sp.prio2 is None or sp.prio2 == sp.prio:
                out.append(f" set ( prio {sp.prio} )")
            else:
                out.append(f" set ( prio({sp.prio}, {sp.prio2}) )")
        kind = rule.state.kind
        if kind == "none" and rule.action == "pass":
            out.append(" no state")
        elif kind == "keep":
            out.append(" keep state")
        elif kind == "modulate":
            out.append(" modulate state")
        elif kind == "synproxy":
            out.append(" synproxy state")
        if rule.probability is not None:
            out.append(_prob(rule))
        if rule.state.options:
            out.append(_state_opts(rule.state.options))
        for lim in rule.limiters:
            out.append(f" {lim}")
        if rule.fragment:
            out.append(" fragment")
        sc = rule.scrub
        if sc is not None:
            out.append(_scrub_opts(sc, match=True))
        if rule.allow_opts:
            out.append(" allow-opts")
        if rule.once:
            out.append(" once")
    elif isinstance(rule, ScrubRule):
        out.append(_scrub_opts(rule.options, match=False))
    for label in rule.labels:
        if label:
            out.append(f' label "{label}"')
    if rule.ridentifier:
        out.append(f" ridentifier {rule.ridentifier}")
    if is_rule:
        if rule.dnpipe or rule.dnqueue:
            word, pair = ("dnpipe", rule.dnpipe) if rule.dnpipe else ("dnqueue", rule.dnqueue)
            out.append(f" {word}({pair[0]}, {pair[1]})" if len(pair) > 1 and pair[1] else f" {word} {pair[0]}")
        if len(rule.queue) == 2:
            out.append(f" queue({rule.queue[0]}, {rule.queue[1]})")
        elif rule.queue:
            out.append(f" queue {rule.queue[0]}")
    if rule.tag:
        out.append(f" tag {rule.tag}")
    if rule.tagged:
        out.append(" !" if rule.tagged_negated else "")
        out.append(f" tagged {rule.tagged}")
    if rule.rtable is not None:
        out.append(f" rtable {rule.rtable}")
    if is_rule:
        if rule.divert is not None and rule.divert.port:
            out.append(f" divert-to {rule.divert.port}")
        for tr in rule.translations:
            if tr.kind == "af-to":
                out.append(f" af-to {tr.af} from {format_pool(tr.pool, tr.af, 'nat')}")
                if tr.pool6 is not None:
                    out.append(f" to {format_pool(tr.pool6, tr.af, 'rdr')}")
            elif tr.kind == "nat-to":
                out.append(" nat-to " + format_pool(tr.pool, rule.af, "nat"))
            elif tr.kind == "rdr-to":
                out.append(" rdr-to " + format_pool(tr.pool, rule.af, "rdr"))
            else:
                out.append(" binat-to " + format_pool(tr.pool, rule.af, "binat"))
    if isinstance(rule, TranslationRule) and not rule.negated:
        out.append(" -> ")
        out.append(format_pool(rule.pool, rule.af, rule.kind))
    return "".join(out)


def _icmp(icmp, af) -> str:
    v6 = icmp.v6
    word = " icmp6-type" if v6 else " icmp-type"
    name = icmp_type_name(icmp.type, v6)
    text = f"{word} {name if name is not None else icmp.type}"
    if icmp.code is not None:
        cname = icmp_code_name(icmp.type, icmp.code, v6)
        text += f" code {cname if cname is not None else icmp.code}"
    return text


# print_rule prints the scrub options of a match rule inside " scrub ( ... )" and those of a
# legacy scrub rule inline, each in its own order.
_MATCH_SCRUB_ORDER = ("no-df", "random-id", "min-ttl", "set-tos", "reassemble tcp", "max-mss")
_SCRUB_ORDER = ("no-df", "random-id", "min-ttl", "max-mss", "set-tos", "reassemble tcp")


def _scrub_opts(sc, match: bool) -> str:
    given = {
        "no-df": "no-df" if sc.no_df else None,
        "random-id": "random-id" if sc.random_id else None,
        "min-ttl": f"min-ttl {sc.min_ttl}" if sc.min_ttl else None,
        "max-mss": f"max-mss {sc.max_mss}" if sc.max_mss else None,
        "set-tos": "set-tos 0x%2.2x" % sc.set_tos if sc.set_tos is not None else None,
        "reassemble tcp": "reassemble tcp" if sc.reassemble_tcp else None,
    }
    if match:
        inner = [text for name in _MATCH_SCRUB_ORDER if (text := given[name])]
        return " scrub (" + " ".join(inner) + ")" if inner else ""
    out = [" " + text for name in _SCRUB_ORDER if (text := given[name])]
    out.append(" fragment no reassemble" if sc.fragment == "no-reassemble" else " fragment reassemble")
    return "".join(out)


def _mac(m: MacAddress) -> str:
    text = ("! " if m.negated else "") + ":".join(f"{b:02x}" for b in m.address)
    if m.mask is not None and m.mask != b"\xff" * 6:
        text += "&" + ":".join(f"{b:02x}" for b in m.mask)
    return text


def format_ether_rule(rule: EtherRule) -> str:
    out = ["ether ", rule.action]
    if rule.direction:
        out.append(f" {rule.direction}")
    if rule.quick:
        out.append(" quick")
    out.append(_iface(rule))
    if rule.bridge_to:
        out.append(f" bridge-to {rule.bridge_to}")
    if rule.proto is not None:
        out.append(" proto 0x%04x" % rule.proto)
    for m in rule.src:
        out.append(" from " + _mac(m))
    for m in rule.dst:
        out.append(" to " + _mac(m))
    out.append(" l3")
    af = "inet" if rule.proto == 0x0800 else "inet6"
    out.append(format_fromto(Endpoint(rule.l3_src), Endpoint(rule.l3_dst), af, None))
    if rule.queue:
        out.append(f" queue {rule.queue}")
    for label in rule.labels:
        out.append(f' label "{label}"')
    if rule.ridentifier:
        out.append(f" ridentifier {rule.ridentifier}")
    if rule.tag:
        out.append(f" tag {rule.tag}")
    if rule.tagged:
        out.append(f" tagged {rule.tagged}")
    if rule.dnpipe:
        out.append(f" dnpipe {rule.dnpipe}")
    if rule.dnqueue:
        out.append(f" dnqueue {rule.dnqueue}")
    return "".join(out)


# ---------------------------------------------------------------------------------- rulesets
def _rules_in_load_order(ruleset: Ruleset):
    yield from ruleset.scrub
    trans = ruleset.translation
    for kinds in (("nat", "nat-anchor"), ("rdr", "rdr-anchor"), ("binat", "binat-anchor")):
        for rule in trans:
            if rule.kind in kinds:
                yield rule
    yield from ruleset.filter


def _emit_rules(ruleset: Ruleset, verbose: int, depth: int, out: list[str]) -> None:
    indent = "  " * depth
    for rule in _rules_in_load_order(ruleset):
        line = format_rule(rule, verbose)
        if isinstance(rule, AnchorRule) and rule.ruleset is not None and rule.inline:
            out.append(f"{indent}{line} {{\n")
            _emit_rules(rule.ruleset, verbose, depth + 1, out)
            out.append(f"{indent}}}\n")
        else:
            out.append(f"{indent}{line}\n")


def format_table(table: Table) -> str:
    """print_tabledef()."""
    out = [f"table <{table.name}>"]
    if table.const:
        out.append(" const")
    if table.persist:
        out.append(" persist")
    if table.counters:
        out.append(" counters")
    for part in table.layout:
        if isinstance(part, str):
            out.append(f' file "{part}"')
            continue
        out.append(" {")
        for entry in part:
            out.append(" !" if entry.negated else " ")
            out.append(format_address(entry.address))
        out.append(" }")
    if table.written_empty and not table.layout:
        out.append(" { }")
    return "".join(out)


def format_definition(d) -> str:
    """The line pfctl -v prints while parsing a definition ("" when it prints none)."""
    if isinstance(d, Macro):
        return f'{d.name} = "{d.value}"'
    if isinstance(d, Table):
        return format_table(d)
    return d.text


def format_ruleset(ruleset: Ruleset, verbose: int = 1, messages: bool = True, emit_rules=None) -> str:
    """Everything pfctl -o none -nv prints for a successfully parsed ruleset (warnings first,
    as pfctl's unbuffered stderr reaches a shared pipe before its buffered stdout).
    ``emit_rules(ruleset, verbose, depth, out)`` prints the rules instead of the plain order
    (the optimizer's printer puts its automatic tables among them)."""
    emit_rules = emit_rules or _emit_rules
    out: list[str] = []
    for message in ruleset.messages if messages else ():
        out.append(message.text + "\n")
    for d in ruleset.definitions:
        text = format_definition(d)
        if text:
            out.append(text + "\n")
    for rule in ruleset.ether:
        out.append(format_ether_rule(rule) + "\n")
    emit_rules(ruleset, verbose, 0, out)
    for name, path in ruleset.loaded_anchors:
        # pfctl_load_anchors(): a blank line and a header, then the anchor's own output
        out.append(f"\nLoading anchor {name} from {path}\n")
        anchor = ruleset.anchor(name)
        if anchor is not None:
            out.append(format_ruleset(anchor, verbose, messages, emit_rules))
    return "".join(out)


def format_rules(ruleset: Ruleset, verbose: int = 0) -> str:
    """Only the rules (what ``pfctl -sr``-style listings show), nested anchors included."""
    out: list[str] = []
    _emit_rules(ruleset, verbose, 0, out)
    return "".join(out)
