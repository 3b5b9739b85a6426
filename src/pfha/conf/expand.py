"""List expansion and pfctl's defaults: a rule as written -> the rules pfctl loads.

parse.y's expand_rule() takes the Cartesian product of a rule's lists in this nesting order
(outermost first): interface, protocol, icmp-type, source host, destination host, source
port, destination port, os, user, group. Combinations whose address families conflict are
dropped silently; the rule's family becomes the one its addresses imply. Then, per rule:
non-TCP rules lose their flags and modulate/synproxy become keep state; ``$if $srcaddr
$dstaddr $srcport $dstport $proto $nr`` in labels and tags are replaced; the rule gets the
next number of its ruleset.

Defaults applied before expansion (parse.y): ``pass`` rules keep state, stateful ``pass``
rules without ``flags`` or ``fragment`` get ``flags S/SA``, a ``block`` without a return
option takes ``set block-policy``, ``max-src-*`` imply ``source-track rule``, ``max N``
implies ``adaptive.start``/``adaptive.end`` at 60%/120% of N.

Pure.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pfha.conf import names
from pfha.conf.ast import (
    ANY_ENDPOINT,
    AnchorRule,
    AnyAddress,
    BlockReturn,
    DynamicAddress,
    Endpoint,
    HostMatch,
    IcmpMatch,
    InterfaceMatch,
    Message,
    Pool,
    PoolAddress,
    Route,
    Rule,
    Ruleset,
    ScrubRule,
    StateOption,
    StateSpec,
    TableAddress,
    TcpFlags,
    Translation,
    TranslationRule,
)
from pfha.conf.hosts import ANY_HOST as _ANY_HOST, ResolvedHost, interface_addresses
from pfha.conf.printer import format_address

if TYPE_CHECKING:  # annotations only (parser imports this module)
    from pfha.conf.parser import Parser, _Builder, _Spec

_NONE = (None,)
_FLAGS_S_SA = TcpFlags(0x02, 0x12)
#: shared immutable values for what most rules hold
_POLICY_BLOCKS = {"drop": BlockReturn("drop"), "return": BlockReturn("return")}
_PLAIN_STATES = {kind: StateSpec(kind) for kind in ("none", "keep", "modulate", "synproxy")}
#: filter options stored in the rule as parsed, under the rule field of the same name
_RULE_OPTIONS = frozenset((
    "rtable", "ridentifier", "received_on", "tos", "prio", "set_prio", "set_tos", "scrub",
    "dnpipe", "dnqueue", "divert", "max_pkt_rate", "max_pkt_size",
))
PROXY_PORTS = (50001, 65535)


# ================================================================================ helpers
def _label_port(port) -> str:
    if port is None:
        return ""
    op = port.op
    if op == "=":
        return str(port.low)
    if op in ("><", "<>"):
        return f"{port.low}{op}{port.high}"
    if op == ":":
        return ""
    return f"{op}{port.low}"


def _label_addr(host: HostMatch, af) -> str:
    text = format_address(host.address, af)
    return ("! " + text) if host.negated else text


def expand_label(text: str, rule_fields: dict, number: int) -> str:
    """parse.y expand_label(): the ``$`` variables of labels and tags, per expanded rule."""
    if "$" not in text:
        return text
    out = text
    for key in _LABEL_MACROS:  # pfctl's order; each value computed only when used
        if key in out:
            out = out.replace(key, _label_value(key, rule_fields, number))
    return out


_LABEL_MACROS = ("$srcaddr", "$dstaddr", "$srcport", "$dstport", "$proto", "$if", "$nr")


def _label_value(key: str, rule_fields: dict, number: int) -> str:
    if key == "$nr":
        return str(number)
    if key == "$if":
        iface = rule_fields.get("interface")
        return iface.name if iface is not None else "any"
    if key == "$proto":
        proto = rule_fields.get("proto")
        return (names.protocol_name(proto) or str(proto)) if proto is not None else "ip"
    end = rule_fields.get("src" if key.startswith("$src") else "dst", ANY_ENDPOINT)
    if key.endswith("addr"):
        return _label_addr(end.host, rule_fields.get("af"))
    return _label_port(end.port)


def _family_ok(af, src: ResolvedHost, dst: ResolvedHost) -> str | None | bool:
    """The family of the combination, or False when the families conflict."""
    sf, df = src.family, dst.family
    if sf and df and sf != df:
        return False
    if sf and af and sf != af:
        return False
    if df and af and df != af:
        return False
    return af or sf or df


def _combinations(spec: _Spec, per_proto=None) -> Iterator[tuple]:
    """(interface, proto, af, src endpoint, dst endpoint) for every combination of a rule's lists,
    in pfctl's expansion order, without the host pairs whose address families conflict.
    ``per_proto(proto)`` runs each protocol's consistency check at its place in that order (an
    error must come before any rule of a later combination is numbered)."""
    for iface in spec.interfaces or _NONE:
        for proto in spec.protos or _NONE:
            if per_proto is not None:
                per_proto(proto)
            for src in spec.src_hosts or (_ANY_HOST,):
                for dst in spec.dst_hosts or (_ANY_HOST,):
                    af = _family_ok(spec.af, src, dst)
                    if af is False:
                        continue
                    for sport in spec.src_ports or _NONE:
                        for dport in spec.dst_ports or _NONE:
                            yield (iface, proto, af, Endpoint(HostMatch(src.address, src.negated), sport),
                                   Endpoint(HostMatch(dst.address, dst.negated), dport))


def _state_options(p: Parser, spec: _Spec, opts: tuple[StateOption, ...]) -> tuple[StateOption, ...]:
    """Normalise ``keep state ( ... )`` the way parse.y fills pf_rule."""
    if not opts:
        return ()
    out = list(opts)
    names_seen = {o.name for o in out}
    src_limits = names_seen & {"max-src-nodes", "max-src-states", "max-src-conn", "max-src-conn-rate"}
    if src_limits and "source-track" not in names_seen:
        out.append(StateOption("source-track", text="rule"))
    for o in opts:
        if o.name == "source-track" and o.text == "global" and src_limits & {"max-src-nodes", "max-src-conn", "max-src-conn-rate"}:
            bad = sorted(src_limits - {"max-src-states"})[0]
            p._error(f"{bad} is incompatible with source-track global", spec.end_line)
    rate = next((o for o in out if o.name == "max-src-conn-rate"), None)
    if rate is not None and ("source-track" in names_seen or src_limits):
        current = next((o for o in out if o.name == "src.track"), None)
        if current is None:
            out.append(StateOption("src.track", rate.value2))
        elif (current.value or 0) < rate.value2:  # type: ignore[operator] # set for a rate
            out = [o if o is not current else StateOption("src.track", rate.value2) for o in out]
    mx = next((o for o in out if o.name == "max"), None)
    if mx is not None and mx.value and "adaptive.start" not in names_seen and "adaptive.end" not in names_seen:
        out.append(StateOption("adaptive.start", (mx.value // 10) * 6))
        out.append(StateOption("adaptive.end", (mx.value // 10) * 12))
    return tuple(out)


def _pool(p: Parser, spec: _Spec, hosts: list[ResolvedHost], af, ports, opts: dict, kind: str, line: int) -> Pool | None:
    """A translation pool for one expanded rule (addresses of the rule's family only)."""
    items = []
    for h in hosts:
        if af and h.family and h.family != af:
            continue
        items.append(PoolAddress(h.address))
    if not items:
        return None
    method = opts.get("method")
    many = len(items) > 1
    tableish = any(type(i.address) in (TableAddress, DynamicAddress) for i in items)
    if method is None and (many or tableish):
        method = "round-robin"
    elif method is not None and method != "round-robin":
        if many:
            p._error("only round-robin valid for multiple redirection addresses", line)
        if tableish and method != "source-hash" or (method == "bitmask" and tableish):
            p._error("tables are not supported by pool type", line)
    key = opts.get("key")
    if method == "source-hash" and key is None:
        key = secrets.token_hex(16)
    low = high = 0
    star = False
    if kind == "nat":
        if opts.get("static_port"):
            low = high = 0
        elif ports is not None:
            low, high = ports[0], ports[1]
        else:
            low, high = PROXY_PORTS
    elif ports is not None:
        low, high, star = ports
    return Pool(
        addresses=tuple(items),
        port_low=low,
        port_high=high,
        port_star=star,
        method=method,
        hash_key=key,
        sticky=bool(opts.get("sticky")),
        static_port=bool(opts.get("static_port")),
        map_e_portset=opts.get("map_e"),
        prefer_ipv6_nexthop=bool(opts.get("prefer_ipv6_nexthop")),
        endpoint_independent=bool(opts.get("endpoint_independent")),
    )


def _check_pool_opts(p: Parser, kind: str, ports, opts: dict, line: int) -> None:
    """The pool option checks of parse.y's nat/rdr rules (one message each)."""
    if kind != "nat":
        if opts.get("static_port"):
            p._error("the 'static-port' option is only valid with nat rules", line)
        if opts.get("map_e"):
            p._error("the 'map-e-portset' option is only valid with nat rules", line)
        return
    if opts.get("static_port") and ports is not None:
        p._error("the 'static-port' option can't be used when specifying a port range", line)
    if opts.get("map_e"):
        if opts.get("static_port"):
            p._error("the 'map-e-portset' option can't be used 'static-port'", line)
        if ports is not None:
            p._error("the 'map-e-portset' option can't be used when specifying a port range", line)


def _next_number(b: _Builder, kind: str) -> int:
    n = b.counters[kind]
    b.counters[kind] = n + 1
    return n


# ================================================================================ filter
def expand_filter(p: Parser, b: _Builder, spec: _Spec) -> None:  # noqa: C901 - mirrors expand_rule
    o = spec.opts
    action = spec.action
    line = spec.end_line or spec.line
    origin = p._origin(spec.line)

    # ---- defaults and per-rule checks (before expansion, as parse.y does)
    block = None
    if action == "block":
        block = spec.block if spec.block is not None else _POLICY_BLOCKS[p.blockpolicy]
        if spec.route is not None:
            p._error("route-to, reply-to and dup-to are not supported on block rules", line)
    state = o.get("state")
    if state is None:
        if action == "pass":
            state_kind, state_opts = "keep", p.state_defaults
        else:
            state_kind, state_opts = "none", ()
    else:
        state_kind, state_opts = state
        if state_kind != "none" and not state_opts:
            state_opts = p.state_defaults
    state_opts = _state_options(p, spec, state_opts)
    flags = o.get("flags")
    fragment = bool(o.get("fragment"))
    if action == "block" and state_kind != "none" and state is not None:
        p._error("keep state on block rules doesn't make sense", line)
    if o.get("allow_opts") and action != "pass":
        p._error("allow-opts can only be specified for pass rules", line)
    if block is not None and block.kind == "return-rst" and (spec.protos is None or any(x != 6 for x in spec.protos)):
        p._error("return-rst can only be applied to TCP rules", line)
    if fragment and (spec.src_ports or spec.dst_ports or flags is not None or spec.icmps):
        p._error("fragments can be filtered only on IP header fields", line)
    if flags is None and action == "pass" and not fragment and state_kind != "none":
        flags = _FLAGS_S_SA

    tagged = o.get("tagged")
    # only what differs from Rule's defaults: building a rule from few keywords is cheaper
    common = {"origin": origin, "action": action}
    if spec.direction is not None:
        common["direction"] = spec.direction
    if spec.log is not None:
        common["log"] = spec.log
    if spec.quick:
        common["quick"] = True
    if block is not None:
        common["block"] = block
    if fragment:
        common["fragment"] = True
    for key, value in o.items():
        if key in _RULE_OPTIONS:
            common[key] = value
    if o.get("allow_opts"):
        common["allow_opts"] = True
    if o.get("once"):
        common["once"] = True
    if "queue" in o:
        common["queue"] = tuple(q for q in o["queue"] if q)
    if "limiters" in o:
        common["limiters"] = tuple(o["limiters"])
    if tagged is not None:
        common["tagged_negated"] = tagged[1]
    probability = o.get("probability")
    if probability is not None:
        common["probability"] = probability
    labels = o.get("labels", ())
    tag = o.get("tag")
    tagged_name = tagged[0] if tagged is not None else None
    dynamic_text = bool(labels) or (tag is not None and "$" in tag) or (tagged_name is not None and "$" in tagged_name)
    keep_tcp = _PLAIN_STATES[state_kind] if not state_opts else StateSpec(state_kind, state_opts)  # type: ignore[arg-type]
    if state_kind not in ("modulate", "synproxy"):
        keep_other = keep_tcp
    else:
        keep_other = _PLAIN_STATES["keep"] if not state_opts else StateSpec("keep", state_opts)

    interfaces = spec.interfaces or _NONE
    protos = spec.protos or _NONE
    icmps = spec.icmps or _NONE
    src_hosts = spec.src_hosts or (_ANY_HOST,)
    dst_hosts = spec.dst_hosts or (_ANY_HOST,)
    src_ports = spec.src_ports or _NONE
    dst_ports = spec.dst_ports or _NONE
    oses = spec.src_os or _NONE
    uids = spec.uids or _NONE
    gids = spec.gids or _NONE
    af0 = spec.af
    out = b.filter
    for iface in interfaces:
        for proto in protos:
            # pfctl rule_consistent()/filter_consistent(), checked per expanded rule
            if (spec.src_ports or spec.dst_ports) and proto not in (6, 17, 132):
                p._error("port only applies to tcp/udp/sctp", line)
            if spec.icmps and proto not in (1, 58):
                p._error("icmp-type/code only applies to icmp", line)
            for icmp in icmps:
                if icmp is not None:
                    want = 58 if icmp[2] else 1
                    if proto != want:
                        p._error("icmp-type mismatch", line)
                for src in src_hosts:
                    for dst in dst_hosts:
                        af = _family_ok(af0, src, dst)
                        if af is False:
                            continue
                        if icmp is not None and af is None:
                            p._error("must indicate address family with icmp-type/code", line)
                        if (proto == 1 and af == "inet6") or (proto == 58 and af == "inet"):
                            p._error("icmp version does not match address family", line)
                        rule_iface = iface
                        scope = src.scope or dst.scope
                        if scope is not None:
                            if rule_iface is None:
                                rule_iface = InterfaceMatch(scope)
                            elif rule_iface.name != scope and not rule_iface.negated:
                                continue
                        for sport in src_ports:
                            for dport in dst_ports:
                                for os_name in oses:
                                    for uid in uids:
                                        for gid in gids:
                                            fields = _filter_fields(
                                                p, spec, common, rule_iface, af, proto, icmp, src, dst, sport, dport,
                                                os_name, uid, gid, flags, keep_tcp, keep_other, line,
                                            )
                                            if fields is None:
                                                continue
                                            number = _next_number(b, "filter")
                                            fields["number"] = number
                                            if dynamic_text:
                                                fields["labels"] = tuple(expand_label(t, fields, number) for t in labels)
                                                if tag is not None:
                                                    fields["tag"] = expand_label(tag, fields, number)
                                                if tagged_name is not None:
                                                    fields["tagged"] = expand_label(tagged_name, fields, number)
                                            else:
                                                fields["labels"] = tuple(labels)
                                                fields["tag"] = tag
                                                fields["tagged"] = tagged_name
                                            binat = fields.pop("_binat", None)
                                            out.append(Rule(**fields))
                                            if binat is not None:
                                                out.extend(_binat_reverse(p, b, spec, fields, binat))
    return None


def _filter_fields(p: Parser, spec: _Spec, common, iface, af, proto, icmp, src, dst, sport, dport, os_name, uid, gid, flags, keep_tcp, keep_other, line):
    tcp = proto is None or proto == 6
    fields = dict(common)
    fields["interface"] = iface
    fields["proto"] = proto
    fields["src"] = Endpoint(HostMatch(src.address, src.negated), sport, os_name) if (src is not _ANY_HOST or sport is not None or os_name is not None) else ANY_ENDPOINT
    fields["dst"] = Endpoint(HostMatch(dst.address, dst.negated), dport) if (dst is not _ANY_HOST or dport is not None) else ANY_ENDPOINT
    if uid is not None:
        fields["uid"] = uid
    if gid is not None:
        fields["gid"] = gid
    if icmp is not None:
        fields["icmp"] = IcmpMatch(icmp[0], icmp[1], icmp[2])
    if tcp:
        fields["flags"] = flags
        fields["state"] = keep_tcp
    else:
        fields["flags"] = None
        fields["state"] = keep_other
    route = spec.route
    if route is not None:
        kind, items, ropts = route
        pool_items = []
        for ifname, host in items:
            if host is None:
                pool_items.append(PoolAddress(AnyAddress(), ifname))
            else:
                if af is None and host.family and not ropts.get("prefer_ipv6_nexthop"):
                    af = host.family
                pool_items.append(PoolAddress(host.address, ifname))
        method = ropts.get("method")
        if method is None and len(pool_items) > 1:
            method = "round-robin"
        fields["route"] = Route(kind, Pool(
            addresses=tuple(pool_items),
            method=method,
            sticky=bool(ropts.get("sticky")),
            prefer_ipv6_nexthop=bool(ropts.get("prefer_ipv6_nexthop")),
            hash_key=ropts.get("key"),
        ))
    if not spec.translations:
        fields["af"] = af
        return fields
    translations = []
    fields["_binat"] = None
    for tr in spec.translations:
        kind, hosts, ports, opts, tline = tr[0], tr[1], tr[2], tr[3], tr[4]
        if kind == "af-to":
            new_af, to_hosts = tr[5], tr[6]
            pool = _pool(p, spec, hosts, new_af, None, opts, "nat", tline)
            if pool is None:
                p._error("af-to: no address of the target family", tline)
            pool6 = _pool(p, spec, to_hosts, new_af, None, {}, "rdr", tline) if to_hosts else None
            translations.append(Translation("af-to", pool, af=new_af, pool6=pool6))
            continue
        if af is None:
            fams = {h.family for h in hosts if h.family}
            if len(fams) == 1:
                af = fams.pop()
        if kind == "binat-to":
            pool = _pool(p, spec, hosts, af, None, {**opts, "static_port": True}, "nat", tline)
            if pool is None:
                return None
            translations.append(Translation("nat-to", pool))
            fields["_binat"] = (hosts, opts)
            continue
        pool_kind = "nat" if kind == "nat-to" else "rdr"
        if kind == "nat-to" and ports is not None:
            ports = (ports[0], ports[1])
        pool = _pool(p, spec, hosts, af, ports, opts, pool_kind, tline)
        if pool is None:
            return None
        translations.append(Translation(kind, pool))
    # nat-to before rdr-to, as print_rule shows them
    translations.sort(key=lambda t: {"af-to": 0, "nat-to": 1, "rdr-to": 2, "binat-to": 3}[t.kind])
    fields["translations"] = tuple(translations)
    if fields["_binat"] is not None:
        fields["direction"] = "out"
    fields["af"] = af
    return fields


def _binat_reverse(p: Parser, b: _Builder, spec: _Spec, fields, binat):
    """``binat-to`` is loaded as nat-to outbound plus the reverse rdr-to inbound."""
    hosts, opts = binat
    nat = fields["translations"][0].pool
    src = fields["src"].host
    if isinstance(src.address, AnyAddress):
        p._error("binat-to requires a source address", spec.end_line or spec.line)
    rdr_pool = Pool(addresses=(PoolAddress(src.address),))
    rev = dict(fields)
    rev["direction"] = "in"
    rev["src"] = Endpoint(HostMatch(AnyAddress()), fields["dst"].port)
    rev["dst"] = Endpoint(HostMatch(nat.addresses[0].address), fields["src"].port)
    rev["translations"] = (Translation("rdr-to", rdr_pool),)
    rev["number"] = _next_number(b, "filter")
    return (Rule(**rev),)


# ================================================================================ scrub
def expand_scrub(p: Parser, b: _Builder, spec: _Spec) -> None:
    o = spec.opts
    origin = p._origin(spec.line)
    for iface, proto, af, src, dst in _combinations(spec):
        number = _next_number(b, "scrub")
        fields = dict(
            origin=origin, number=number, direction=spec.direction, log=spec.log,
            quick=spec.quick, interface=iface, af=af, proto=proto, src=src, dst=dst,
            negated=spec.negated, options=o["scrub"],
        )
        fields["labels"] = tuple(expand_label(t, fields, number) for t in o.get("labels", ()))
        b.scrub.append(ScrubRule(**fields))


# ================================================================================ nat/rdr/binat
def expand_translation(p: Parser, b: _Builder, spec: _Spec) -> None:
    kind = spec.kind
    line = spec.end_line or spec.line
    origin = p._origin(spec.line)
    o = spec.opts
    ports = spec.redirect_ports
    if not spec.negated:
        if spec.redirect is None:
            p._error("syntax error", line)  # parse.y: nat/rdr/binat need "-> target"
        _check_pool_opts(p, kind, ports, spec.pool_opts, line)
        if kind == "nat" and ports is not None and ports[2]:
            p._error("invalid port range", line)
        if kind == "binat" and ports is not None:
            p._error("binat rules cannot use port translation", line)
    tagged = o.get("tagged")

    def rdr_consistent(proto) -> None:  # destination and redirect ports need tcp or udp (nat has no check)
        if kind == "rdr" and (spec.dst_ports or ports) and proto not in (6, 17):
            p._error("port only applies to tcp/udp", line)

    for iface, proto, af, src, dst in _combinations(spec, rdr_consistent):
        rule_af = af
        pool: Pool | None = Pool()
        if not spec.negated:
            hosts = spec.redirect
            assert hosts is not None  # the grammar requires a redirection unless negated
            if rule_af is None:
                fams = [h.family for h in hosts if h.family]
                if fams:
                    rule_af = fams[0]
            pports = None
            if ports is not None:
                pports = (ports[0], ports[1]) if kind == "nat" else ports
            pool = _pool(p, spec, hosts, rule_af, pports, spec.pool_opts, kind, line)
            if pool is None:
                continue
            if kind == "binat" and (len(pool.addresses) > 1 or pool.method not in (None,)):
                if type(pool.addresses[0].address) is not DynamicAddress:
                    p._error("binat requires a single address", line)
        number = _next_number(b, kind)
        fields = dict(
            origin=origin, number=number, direction=None, log=spec.log, quick=False,
            interface=iface, af=rule_af, proto=proto,
            src=src, dst=dst,
            tag=o.get("tag"), tagged=tagged[0] if tagged else None,
            tagged_negated=bool(tagged and tagged[1]), rtable=o.get("rtable"),
            kind=kind, negated=spec.negated, pass_=spec.pass_, pool=pool,
        )
        b.translation.append(TranslationRule(**fields))


# ================================================================================ antispoof
def expand_antispoof(p: Parser, b: _Builder, spec: _Spec, ifs) -> None:
    """parse.y antispoof: per interface, block traffic from its networks arriving elsewhere,
    and (non-loopback) traffic from its own addresses arriving on any interface."""
    from pfha.conf.parser import _Spec

    def block_in_from(name: str, dynamic: bool, modifiers: tuple[str, ...], interfaces) -> None:
        rule = _Spec(line=spec.line, kind="filter", action="block")
        rule.end_line = spec.end_line
        rule.block = BlockReturn("drop")
        rule.direction = "in"
        rule.log, rule.quick, rule.af = spec.log, spec.quick, spec.af
        rule.opts = {k: v for k, v in spec.opts.items()}
        rule.opts["state"] = ("none", ())
        rule.interfaces = interfaces
        if dynamic:
            rule.src_hosts = [ResolvedHost(DynamicAddress(name, modifiers))]  # type: ignore[arg-type]
        else:
            rule.src_hosts = interface_addresses(name, modifiers, p.view)
        if rule.src_hosts:
            expand_filter(p, b, rule)

    for name, dynamic in ifs:
        block_in_from(name, dynamic, ("network",), [InterfaceMatch(name, True)])
        if not p.view.is_loopback(name):
            block_in_from(name, dynamic, (), None)


# ================================================================================ anchors
def expand_anchor(p: Parser, b: _Builder, spec: _Spec) -> None:
    kind = spec.action
    line = spec.end_line or spec.line
    origin = p._origin(spec.line)
    body = build_ruleset(p, spec.body) if spec.body is not None else None
    if body is not None and spec.name:
        b.anchors.append((spec.name, spec.body))
    counter = {"anchor": "filter", "nat-anchor": "nat", "rdr-anchor": "rdr", "binat-anchor": "binat"}[kind]
    target = b.filter if kind == "anchor" else b.translation
    o = spec.opts
    tagged = o.get("tagged")
    name = spec.name
    if not name and spec.body is not None:
        name = "_" + str(b.inline_count)
    for iface, proto, af, src, dst in _combinations(spec):
        if af is None and spec.icmps:  # the first icmp-type gives the family of the whole expansion
            af = "inet6" if spec.icmps[0][2] else "inet"
        for uid in spec.uids or _NONE:
            for gid in spec.gids or _NONE:
                for icmp in spec.icmps or _NONE:
                    number = _next_number(b, counter)
                    fields = dict(
                        origin=origin, number=number, direction=spec.direction,
                        log=spec.log, quick=spec.quick, interface=iface, af=af,
                        proto=proto,
                        src=src, dst=dst,
                        tag=o.get("tag"), tagged=tagged[0] if tagged else None,
                        tagged_negated=bool(tagged and tagged[1]),
                        rtable=o.get("rtable"), ridentifier=o.get("ridentifier"),
                        kind=kind, name=name, uid=uid, gid=gid,
                        flags=o.get("flags"),
                        icmp=IcmpMatch(*icmp) if icmp is not None else None,
                        ruleset=body, inline=body is not None,
                    )
                    fields["labels"] = tuple(expand_label(t, fields, number) for t in o.get("labels", ()))
                    target.append(AnchorRule(**fields))


# ================================================================================ result
def build_ruleset(p: Parser, b: _Builder) -> Ruleset:
    anchors = tuple((name, build_ruleset(p, child)) for name, child in b.anchors)
    top = b is p.main
    if top:
        anchors += tuple((name, ruleset) for name, _, ruleset in p.loaded)
    return Ruleset(
        options=p.build_options() if top else Ruleset().options,
        macros=tuple(d for d in p.definitions if type(d).__name__ == "Macro") if top else (),
        tables=tuple(p.tables[n] for n in p.table_order) if top else (),
        scrub=tuple(b.scrub),
        translation=tuple(b.translation),
        filter=tuple(b.filter),
        ether=tuple(b.ether),
        queues=tuple(p.queues) if top else (),
        anchors=anchors,
        definitions=tuple(p.definitions) if top else (),
        messages=tuple(Message(m) for m in p.messages) if top else (),
        path=b.path,
        loaded_anchors=tuple((name, path) for name, path, _ in p.loaded) if top else (),
    )
