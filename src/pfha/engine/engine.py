"""The reference engine: what pf does to one packet on one interface in one direction.

:meth:`Engine.process` is FreeBSD's ``pf_test`` (sys/netpfil/pf/pf.c) for one
(interface, direction), in pf's order:

1. ``set skip`` interfaces pass untouched;
2. scrub rules (first match) normalise the packet; illegal TCP flag mixes are dropped;
3. the state table is searched (wire keys for in, stack keys for out; ICMP errors by the packet
   they quote); a found state passes the packet after its checks (TCP windows, synproxy) and
   rewrites it per the state's translation, without evaluating any rule;
4. otherwise translation (binat, then rdr in / nat out, first match) rewrites the packet and the
   filter rules (last match, ``quick``, anchors, tags, default pass) see the rewritten packet;
5. a passing stateful rule, or any translation, creates a state (limits and source tracking
   apply); ``synproxy`` answers the SYN itself; ``block return`` produces RST / ICMP packets;
6. IP options are dropped unless allowed; counters are charged; ``log`` produces pflog records.

The engine is deterministic: time is passed into every call and random choices (nat ports,
ISN modulators, pools) come from an RNG seeded at construction. It never reads a clock, never
opens a socket and never touches the OS.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Iterable, Optional

from pfha.conf import ast
from pfha.conf.interfaces import InterfaceView
from pfha.engine import tracking
from pfha.engine.tracking import tcp_track_full
from pfha.engine.packet import (IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, TH_ACK,
                                TH_FIN, TH_PUSH, TH_RST, TH_SYN, TH_URG, Packet, PacketError, tcp_options)
from pfha.engine.rules import (CompiledRule, Resolver, RuleList, Table, compile_common,
                               compile_filter_rule, prefix_of)
from pfha.engine.state import (PF_TCPS_PROXY_SRC, SourceNode, State, StateTable, configured_limits,
                               configured_timeouts)
from pfha.engine.translate import (MapFailed, Translation, TranslationRuleC, Translator, apply,
                                   compile_translation)
from pfha.pflog.format import AF_INET, AF_INET6, NO_SUBRULE, Action, Direction, PflogHeader, Reason

_REASONS = {
    "match": Reason.MATCH, "normalize": Reason.NORM, "fragment": Reason.FRAG, "short": Reason.SHORT,
    "ip-option": Reason.IPOPTIONS, "state-mismatch": Reason.BADSTATE, "state-insert": Reason.STATEINS,
    "state-limit": Reason.MAXSTATES, "src-limit": Reason.SRCLIMIT, "synproxy": Reason.SYNPROXY,
    "map-failed": Reason.MAPFAILED, "skip": Reason.MATCH,
}
_LOG_ACTION = {"pass": Action.PASS, "block": Action.DROP, "synproxy": Action.SYNPROXY_DROP}


@dataclass(eq=False)
class DefaultRule:
    """pf's implicit default rule: pass, no state (net.pf.default_to_drop flips it to block)."""

    action: str = "pass"
    number: Optional[int] = None
    text: str = "pass all no state (default rule)"
    quick: bool = False
    counters: object = None
    anchor_path: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        from pfha.engine.rules import Counters

        self.counters = Counters()
        self.kind = self.action

    def state_removed(self) -> None:
        self.counters.states_cur -= 1


@dataclass
class Emitted:
    """A packet pf itself sends (RST, ICMP unreachable, synproxy handshake).

    ``toward`` is ``"sender"`` (back to where the packet came from) or ``"destination"`` (on
    toward the real destination, e.g. synproxy's SYN to the server). ``skip_firewall``
    mirrors M_SKIP_FIREWALL: pf does not filter its own answers, but does filter the
    synproxy SYN/ACK sent to the server.
    """

    packet: Packet
    toward: str
    skip_firewall: bool
    why: str


@dataclass
class LogRecord:
    """One pflog record: the header pf writes and the packet as it was at that point."""

    header: PflogHeader
    packet: bytes
    time: float

    def frame(self) -> bytes:
        return self.header.encode() + self.packet


@dataclass(slots=True)
class Decision:
    """What pf did with one packet at one (interface, direction)."""

    action: str  # "pass" | "block"
    reason: str  # pf reason: "match", "state-mismatch", "synproxy", "normalize", ...
    rule: object  # CompiledRule, DefaultRule or None (skipped interface)
    translation: Optional[Translation]
    state: Optional[str]  # "created" | "matched" | None
    state_entry: Optional[State]
    log: bool
    logs: list
    emitted: list
    packet: Packet
    ifname: str
    direction: str
    tag: Optional[str] = None

    @property
    def rule_number(self) -> Optional[int]:
        return getattr(self.rule, "number", None)

    @property
    def rule_text(self) -> str:
        return getattr(self.rule, "text", "")

    @property
    def anchor(self) -> str:
        return getattr(self.rule, "anchor_path", "")

    def to_json(self) -> dict:
        """The ``pfha test --json`` object (the fields issue 3 names, plus a few more)."""
        return {
            "action": self.action,
            "rule": self.rule_number,
            "rule_text": self.rule_text,
            "anchor": self.anchor or None,
            "translation": self.translation.describe() if self.translation is not None else None,
            "state": self.state,
            "log": self.log,
            "reason": self.reason,
            "interface": self.ifname,
            "direction": self.direction,
            "tag": self.tag,
            "packet": self.packet.summary(),
            "emitted": [{"toward": e.toward, "why": e.why, "packet": e.packet.summary()} for e in self.emitted],
        }


# ---------------------------------------------------------------------- state options
@dataclass
class StatePolicy:
    """A stateful rule's ``keep state (...)`` options, resolved once at compile time."""

    kind: str = "keep"
    if_bound: Optional[bool] = None
    max: int = 0
    max_src_nodes: int = 0
    max_src_states: int = 0
    max_src_conn: int = 0
    max_src_conn_rate: tuple = (0, 0)
    overload: Optional[str] = None
    flush: bool = False
    flush_global: bool = False
    source_track: Optional[str] = None
    sloppy: bool = False
    no_sync: bool = False
    timeouts: dict = field(default_factory=dict)

    @property
    def tracks_sources(self) -> bool:
        return bool(self.source_track or self.max_src_nodes or self.max_src_states or self.max_src_conn
                    or self.max_src_conn_rate[0])


def _state_policy(spec: ast.StateSpec, defaults: tuple) -> StatePolicy:
    policy = StatePolicy(kind=spec.kind)
    for option in tuple(defaults) + tuple(spec.options):
        name = option.name
        if name == "max":
            policy.max = option.value or 0
        elif name == "max-src-nodes":
            policy.max_src_nodes = option.value or 0
        elif name == "max-src-states":
            policy.max_src_states = option.value or 0
        elif name == "max-src-conn":
            policy.max_src_conn = option.value or 0
        elif name == "max-src-conn-rate":
            policy.max_src_conn_rate = (option.value or 0, option.value2 or 0)
        elif name == "overload":
            policy.overload, policy.flush, policy.flush_global = option.text, option.flush, option.flush_global
        elif name == "source-track":
            policy.source_track = option.text or "rule"
        elif name == "if-bound":
            policy.if_bound = True
        elif name == "floating":
            policy.if_bound = False
        elif name == "sloppy":
            policy.sloppy = True
        elif name == "no-sync":
            policy.no_sync = True
        elif name in ("adaptive.start", "adaptive.end"):
            if option.value:
                policy.timeouts["rule." + name] = option.value
        elif "." in name and option.value is not None:
            policy.timeouts[name] = option.value
    # ("max n" implies adaptive.start/end of (n / 10) * 6 and * 12: the parser adds them, as pfctl)
    return policy


# ---------------------------------------------------------------------- the engine
class Engine:
    """pf for one ruleset: compiled rules, the state table, counters and the pflog stream.

    ``interfaces`` resolves ``(if)``, ``self`` and interface groups; ``seed`` fixes every random
    choice. Call :meth:`process` for each packet at each (interface, direction) it crosses.
    """

    def __init__(self, ruleset: ast.Ruleset, interfaces: Optional[InterfaceView] = None, *, seed: int = 0,
                 default_block: bool = False, indexed: bool = True) -> None:
        self.ruleset = ruleset
        self.indexed = indexed
        self.interfaces = interfaces or InterfaceView.empty()
        self.rng = random.Random(seed)
        self.resolver = Resolver(self.interfaces)
        for table in ruleset.tables:
            self.resolver.table_from_ast(table)
        options = ruleset.options
        self.skip = frozenset(m for name in options.skip for m in (self.interfaces.members(name) or (name,)))
        self.timeouts = configured_timeouts(options)
        self.states = StateTable(configured_limits(options)["states"],
                                 (self.timeouts["adaptive.start"], self.timeouts["adaptive.end"]))
        self.if_bound_default = options.state_policy == "if-bound"
        self.state_defaults = options.state_defaults
        self.default_rule = DefaultRule("block" if default_block else "pass")
        self.self_prefixes = [prefix_of(a.ip, 32 if a.version == 4 else 128) for a in self.interfaces.addrs("self")]
        self.scrub = RuleList([compile_common(r, "scrub", self.resolver, r.number) for r in ruleset.scrub],
                              indexed=indexed)
        for rule in self.scrub:
            rule.extra["trivial"] = rule.trivial
            opts = rule.ast.options
            # matches every whole packet and only checks TCP flags (``scrub in``): the fast case
            rule.extra["plain"] = (rule.trivial and not rule.ast.negated and not opts.no_df and not opts.random_id
                                   and opts.min_ttl is None and opts.set_tos is None and opts.max_mss is None)
        self.filter = self._compile_filter(ruleset.filter, ruleset, "")
        self.translator = self._compile_translation(ruleset)
        self.sticky: dict = {}
        self.fragments: dict = {}  # (af, src, dst, proto, id) -> [first seen, {offset: Packet}]
        self._on_established = self._conn_limit  # bound once: passed on every TCP state match
        self._plain_scrub: dict = {}  # (ifname, inbound, af, proto) -> the plain scrub rule or None
        self.log: list[LogRecord] = []
        self.packets_seen = 0

    # ------------------------------------------------------------------ compiling
    def _compile_filter(self, rules: Iterable, ruleset: ast.Ruleset, path: str,
                        anchor_number: Optional[int] = None) -> RuleList:
        compiled: list[CompiledRule] = []
        for rule in rules:
            if isinstance(rule, ast.AnchorRule):
                c = compile_common(rule, "anchor", self.resolver, rule.number)
                c.quick = rule.quick
                body = rule.ruleset if rule.ruleset is not None else ruleset.anchor(rule.name)
                sub_path = f"{path}/{rule.name}".strip("/") if rule.name else path
                c.anchor = self._compile_filter(body.filter if body is not None else (), body or ruleset, sub_path,
                                                rule.number if anchor_number is None else anchor_number)
                c.anchor_path = path
                if anchor_number is not None:
                    c.extra["anchor_number"] = anchor_number
                compiled.append(c)
                continue
            c = compile_filter_rule(rule, self.resolver)
            c.anchor_path = path
            c.extra["allow_opts"] = rule.allow_opts
            if anchor_number is not None:
                c.extra["anchor_number"] = anchor_number
            if rule.action == "pass":
                c.extra["state"] = _state_policy(rule.state, self.state_defaults)
            compiled.append(c)
        return RuleList(compiled, path, self.indexed)

    def _compile_translation(self, ruleset: ast.Ruleset) -> Translator:
        lists: dict[str, list] = {"binat_out": [], "binat_in": [], "rdr": [], "nat": []}
        self._add_translation(ruleset.translation, ruleset, (), "", lists)
        translator = Translator(lists["binat_out"], lists["binat_in"], lists["rdr"], lists["nat"])
        for rule_list in translator.lists.values():
            rule_list.indexed = self.indexed
        return translator

    def _add_translation(self, rules: Iterable, ruleset: ast.Ruleset, gates: tuple, path: str,
                         lists: dict) -> None:
        """File nat/rdr/binat rules in order; ``nat-anchor``/``rdr-anchor``/``binat-anchor``
        calls are flattened in place, their own tests kept as gates every inner rule must pass."""
        for rule in rules:
            if isinstance(rule, ast.AnchorRule):
                body = rule.ruleset if rule.ruleset is not None else ruleset.anchor(rule.name)
                if body is None:
                    continue
                gate = compile_common(rule, "anchor", self.resolver, rule.number)
                sub_path = f"{path}/{rule.name}".strip("/") if rule.name else path
                self._add_translation(body.translation, body, gates + (gate,), sub_path, lists)
                continue
            if not isinstance(rule, ast.TranslationRule):
                continue
            if rule.kind in ("nat", "rdr"):
                compiled = compile_translation(rule, self.resolver)
                compiled.rule.gates = gates
                compiled.rule.anchor_path = path
                lists[rule.kind].append(compiled)
                continue
            out = compile_translation(rule, self.resolver)
            inn = compile_translation(rule, self.resolver, inbound_binat=True)
            inn.rule.extra["binat_internal"] = self.resolver.prefixes(rule.src.host.address) or []
            inn.rule.counters = out.rule.counters  # one rule, one set of counters
            for half in (out, inn):
                half.rule.gates = gates
                half.rule.anchor_path = path
            lists["binat_out"].append(out)
            lists["binat_in"].append(inn)

    # ------------------------------------------------------------------ queries
    def rules(self) -> list:
        """Every compiled filter rule, anchors flattened (for counters and listings)."""
        result: list = []

        def walk(rule_list: RuleList) -> None:
            for rule in rule_list:
                result.append(rule)
                if rule.anchor is not None:
                    walk(rule.anchor)

        walk(self.filter)
        return result

    def translation_rules(self) -> list:
        t = self.translator
        return [x.rule for x in t.nat] + [x.rule for x in t.rdr] + [x.rule for x in t.binat_out]

    def is_self(self, af: int, addr: int) -> bool:
        return any(paf == af and net == addr for paf, net, _m in self.self_prefixes)

    def purge(self, now: float) -> int:
        """Expire states (pf's purge thread): call whenever time has moved on."""
        return self.states.purge(now)

    # ------------------------------------------------------------------ the packet path
    def process_bytes(self, data: bytes, ifname: str, direction: str, now: float) -> Decision:
        return self.process(Packet.parse(data), ifname, direction, now)

    def process(self, packet: Packet, ifname: str, direction: str, now: float) -> Decision:
        """pf_test for ``packet`` arriving (``"in"``) or leaving (``"out"``) on ``ifname``."""
        if direction == "in":
            inbound = True
        elif direction == "out":
            inbound = False
        else:
            raise ValueError(f"direction must be 'in' or 'out', not {direction!r}")
        self.packets_seen += 1
        if ifname in self.skip:
            return Decision("pass", "skip", None, None, None, None, False, [], [], packet, ifname, direction)
        emitted: list[Emitted] = []
        if self.scrub.rules:
            key = (ifname, inbound, packet.af, packet.proto)
            plain = self._plain_scrub.get(key, False)
            if plain is False:
                plain = self._plain_scrub[key] = self._plain_scrub_rule(packet, ifname, inbound)
            if plain is _NO_SCRUB:
                pass  # no scrub rule can apply to this (interface, direction, family, protocol)
            elif plain is not None and not packet.frag_offset and not packet.more_frags and (
                    packet.proto != IPPROTO_TCP or _FLAGS_OK[packet.flags & 0xFF]):
                # ``scrub in`` on a whole, sane packet: counted, nothing to normalise
                plain.counters.evaluations += 1
                plain.counters.packets[0 if inbound else 1] += 1
            else:
                bad = self._normalize(packet, ifname, inbound, now)
                if bad is not None:
                    if bad.reason != "reassembled":
                        return bad
                    packet = bad.packet  # the last fragment completed the datagram: go on with it
        # ---- state lookup
        if packet.frag_offset == 0:
            decision = self._test_state(packet, ifname, inbound, direction, now, emitted)
            if decision is not None:
                return decision
        return self._test_rule(packet, ifname, inbound, direction, now, emitted)

    # ------------------------------------------------------------------ scrub
    def _plain_scrub_rule(self, packet: Packet, ifname: str, inbound: bool):
        """The scrub rule every whole packet of this (interface, direction, family, protocol)
        meets first when that rule only checks TCP flags (``scrub in``); ``_NO_SCRUB`` when no
        scrub rule can match such a packet; None when :meth:`_normalize` must look."""
        if not self.scrub.indexed:
            return None
        candidates = self.scrub.candidates(packet, ifname, inbound)
        bucket = self.scrub._buckets.get((ifname, inbound, packet.af, packet.proto))
        if bucket is None or not bucket.simple:
            return None
        if not candidates:
            return _NO_SCRUB
        first = candidates[0]
        return first if first.extra["plain"] else None

    def _normalize(self, packet: Packet, ifname: str, inbound: bool, now: float) -> Optional[Decision]:
        """pf_normalize_ip / pf_normalize_tcp for the first matching scrub rule."""
        for rule in self.scrub.candidates(packet, ifname, inbound):
            rule.counters.evaluations += 1
            # a trivial rule's tests are its index bucket's key: only the index may skip them
            if not (rule.extra["trivial"] and self.scrub.indexed and not packet.frag_offset) and \
                    not rule.matches(packet, ifname, inbound, packet.tag):
                continue
            if rule.ast.negated:
                return None
            opts: ast.ScrubOptions = rule.ast.options
            if opts.no_df:
                packet.df = False
            if opts.random_id and packet.af == 4:
                packet.ip_id = self.rng.getrandbits(16)
            if opts.min_ttl is not None and packet.ttl < opts.min_ttl:
                packet.ttl = opts.min_ttl
            if opts.set_tos is not None:
                packet.tos = opts.set_tos
            if (packet.frag_offset or packet.more_frags) and opts.fragment in (None, "reassemble"):
                rule.counters.packets[0 if inbound else 1] += 1
                return self._reassemble(packet, ifname, inbound, rule, now)
            if packet.proto == IPPROTO_TCP and not packet.frag_offset:
                flags = packet.flags
                bad = False
                if flags & TH_SYN:
                    if flags & TH_RST:
                        bad = True
                    elif flags & TH_FIN:
                        packet.flags = flags = flags & ~TH_FIN  # pf: "XXX why?" - it strips it
                elif not flags & (TH_ACK | TH_RST):
                    bad = True
                if not flags & TH_ACK and flags & (TH_FIN | TH_PUSH | TH_URG):
                    bad = True
                if bad:
                    rule.counters.packets[0 if inbound else 1] += 1
                    logs = []
                    if rule.ast.log is not None:
                        logs.append(self._log_record(packet, ifname, inbound, rule, "block", "normalize", now))
                    return Decision("block", "normalize", rule, None, None, None, bool(logs), logs, [], packet,
                                    ifname, "in" if inbound else "out")
                if opts.max_mss is not None and flags & TH_SYN:
                    packet.tcp_options = _clamp_mss(packet.tcp_options, opts.max_mss)
            rule.counters.packets[0 if inbound else 1] += 1
            return None
        return None

    def _reassemble(self, packet: Packet, ifname: str, inbound: bool, rule, now: float) -> Decision:
        """pf_reassemble: hold fragments until the datagram is whole (``fragment reassemble``).

        A held fragment's decision is ``pass`` with reason ``held``: nothing leaves yet. The
        fragment that completes the datagram returns reason ``reassembled`` with the whole
        packet, which :meth:`process` then filters like any other. Fragments older than the
        ``frag`` timeout are forgotten; overlapping fragments are dropped (``fragment``).
        """
        direction = "in" if inbound else "out"
        key = (packet.af, packet.src, packet.dst, packet.proto, packet.ip_id)
        queue = self.fragments.get(key)
        if queue is None or now - queue[0] > self.timeouts.get("frag", 30):
            queue = self.fragments[key] = [now, {}]
        parts: dict = queue[1]
        if packet.frag_offset in parts:
            del self.fragments[key]
            return Decision("block", "fragment", rule, None, None, None, False, [], [], packet, ifname, direction)
        parts[packet.frag_offset] = packet
        first = parts.get(0)
        if first is None:
            return Decision("pass", "held", rule, None, None, None, False, [], [], packet, ifname, direction)
        header = (20 + len(first.ip_options) + (-len(first.ip_options) % 4)) if first.af == 4 else 40
        offset = first.size() - header
        pieces = []
        last = first
        while last.more_frags:
            nxt = parts.get(offset)
            if nxt is None:
                return Decision("pass", "held", rule, None, None, None, False, [], [], packet, ifname, direction)
            pieces.append(nxt.payload)
            offset += len(nxt.payload)
            last = nxt
        del self.fragments[key]
        whole = first.copy()
        whole.payload = first.payload + b"".join(pieces)
        whole.more_frags = False
        whole.frag_offset = 0
        whole.wire_len = 0
        whole.truncated = False
        return Decision("pass", "reassembled", rule, None, None, None, False, [], [], whole, ifname, direction)

    # ------------------------------------------------------------------ states
    def _test_state(self, packet: Packet, ifname: str, inbound: bool, direction: str, now: float,
                    emitted: list) -> Optional[Decision]:
        proto = packet.proto
        if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
            sport, dport = packet.sport, packet.dport
        elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            if packet.is_icmp_error:
                return self._test_state_icmp_error(packet, ifname, inbound, direction, now)
            sport, dport = packet.sport, packet.dport
        else:
            sport = dport = 0
        states = self.states
        if inbound:
            bucket = states.wire.get((packet.af, proto, packet.src, sport, packet.dst, dport))
        else:
            bucket = states.stack.get((packet.af, proto, packet.dst, dport, packet.src, sport))
        if not bucket:
            return None
        for state in bucket:
            if state.ifname is None or state.ifname == ifname:
                break
        else:
            return None
        # Expired but not yet purged: pf's purge thread would have removed it by now.
        if now >= state.expire + state.timeouts[state.timeout] or state.purged or (
                (state.adaptive or len(states.states) > states.adaptive_start) and states.expired(state, now)):
            states.remove(state)
            return None
        from_src = state.direction == direction
        reason = None
        if proto == IPPROTO_TCP:
            if state.src.state >= PF_TCPS_PROXY_SRC:
                outcome = tracking.synproxy(state, packet, from_src,
                                            lambda p, back, skip: emitted.append(self._emit(p, back, from_src, skip)),
                                            self.rng)
                if outcome is not None:
                    reason = "synproxy"
                    action = "block"
                    return self._state_decision(packet, state, ifname, inbound, direction, now, action,
                                                reason, emitted, charge=outcome == "synproxy")
            if packet.flags & TH_SYN and tracking.closed_and_new_syn(state, packet, from_src):
                # pf_test_state_tcp "state reuse": the closed state goes and this SYN is dropped;
                # the client's retransmission then creates a fresh state.
                self.states.remove(state)
                return self._state_decision(packet, state, ifname, inbound, direction, now, "block",
                                            "state-reuse", emitted, charge=False)
            if state.sloppy:
                reason = tracking.tcp_track_sloppy(state, packet, from_src, now, self._conn_limit)
            else:
                reason = tcp_track_full(state, packet, from_src, now, self.rng, self._on_established)
        elif proto == IPPROTO_UDP:
            tracking.pseudo_track(state, from_src, now, "udp")
        elif packet.is_icmp:
            tracking.icmp_track(state, from_src, now)
        else:
            tracking.pseudo_track(state, from_src, now, "other")
        if reason is not None:
            return self._state_decision(packet, state, ifname, inbound, direction, now, "block", reason, emitted,
                                        charge=False)
        # Rewrite per the state's other key (nothing to do without translation).
        if state.wire is not state.stack:  # translated (equal keys are stored as one object)
            if inbound:
                nk = state.stack
                packet.src, packet.dst = nk[2], nk[4]
                if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
                    packet.sport, packet.dport = nk[3], nk[5]
                elif packet.is_icmp:
                    packet.icmp_id = packet.sport = packet.dport = nk[3]
            else:
                nk = state.wire
                packet.src, packet.dst = nk[4], nk[2]
                if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
                    packet.sport, packet.dport = nk[5], nk[3]
                elif packet.is_icmp:
                    packet.icmp_id = packet.sport = packet.dport = nk[5]
        if state.tag is not None:
            packet.tag = state.tag
        rule = state.rule
        if packet.ip_options or packet.v6_routing or state.log_all:
            return self._state_decision(packet, state, ifname, inbound, direction, now, "pass", "match", emitted)
        # _state_decision's pass case, inline: this is the path of nearly every packet
        size = packet.wire_len or packet.size()
        side = 0 if inbound else 1
        counters = rule.counters
        counters.packets[side] += 1
        counters.bytes[side] += size
        if state.nat_rule is not None:
            counters = state.nat_rule.counters
            counters.packets[side] += 1
            counters.bytes[side] += size
        peer = 0 if from_src else 1
        state.packets[peer] += 1
        state.bytes[peer] += size
        return Decision("pass", "match", rule, None, "matched", state, False, [], emitted, packet, ifname,
                        direction, state.tag)

    def _emit(self, packet: Packet, toward_src_peer: bool, from_src: bool, skip: bool) -> Emitted:
        # toward the state's creating peer == back to the sender when the packet came from it
        toward = "sender" if toward_src_peer == from_src else "destination"
        return Emitted(packet, toward, skip, "synproxy")

    def _state_decision(self, packet: Packet, state: State, ifname: str, inbound: bool, direction: str, now: float,
                        action: str, reason: str, emitted: list, charge: bool = True) -> Decision:
        rule = state.rule
        if action == "pass" and (packet.ip_options or packet.v6_routing) and not rule.extra.get("allow_opts"):
            action, reason = "block", "ip-option"
        if charge or action == "pass":
            size = packet.wire_len or packet.size()
            side = 0 if inbound else 1
            rule.counters.packets[side] += 1
            rule.counters.bytes[side] += size
            if state.nat_rule is not None:
                state.nat_rule.counters.packets[side] += 1
                state.nat_rule.counters.bytes[side] += size
            peer = 0 if state.direction == direction else 1
            state.packets[peer] += 1
            state.bytes[peer] += size
        logs = []
        if state.log_all:
            logs.append(self._log_record(packet, ifname, inbound, rule, "synproxy" if reason == "synproxy" else action,
                                         reason, now))
        return Decision(action, reason, rule, None, "matched", state, bool(logs), logs, emitted, packet, ifname,
                        direction, state.tag)

    def _test_state_icmp_error(self, packet: Packet, ifname: str, inbound: bool, direction: str,
                               now: float) -> Optional[Decision]:
        """pf_test_state_icmp for errors: the state of the packet the error quotes."""
        inner = packet.inner
        if inner is None:
            return None
        iproto = inner.proto
        if iproto in (IPPROTO_TCP, IPPROTO_UDP) or inner.is_icmp:
            isport, idport = inner.sport, inner.dport
        else:
            isport = idport = 0
        if inbound:
            key = (inner.af, iproto, inner.dst, idport, inner.src, isport)
        else:
            key = (inner.af, iproto, inner.src, isport, inner.dst, idport)
        state = self.states.lookup(key, inbound, ifname)
        if state is None or self.states.expired(state, now):
            return None
        if iproto == IPPROTO_TCP and not state.sloppy and state.src.state < PF_TCPS_PROXY_SRC:
            # The quoted segment must lie in its sender's window (pf_test_state_icmp, "BAD ICMP").
            quoted_from_src = state.direction != direction
            src, dst = (state.src, state.dst) if quoted_from_src else (state.dst, state.src)
            dws = dst.wscale & 0x0F if (src.wscale and dst.wscale) else 0
            seq = (inner.seq - src.seqdiff) & 0xFFFFFFFF
            if not (tracking.seq_geq(src.seqhi, seq)
                    and tracking.seq_geq(seq, (src.seqlo - (dst.max_win << dws)) & 0xFFFFFFFF)):
                return self._state_decision(packet, state, ifname, inbound, direction, now, "block",
                                            "state-mismatch", [], charge=False)
            if src.seqdiff:
                inner.seq = seq
        if state.wire is not state.stack:
            old_src, old_dst = inner.src, inner.dst
            nk = state.stack if inbound else state.wire
            if inbound:
                inner.dst, inner.src = nk[2], nk[4]
                new_dport, new_sport = nk[3], nk[5]
            else:
                inner.src, inner.dst = nk[2], nk[4]
                new_sport, new_dport = nk[3], nk[5]
            if iproto in (IPPROTO_TCP, IPPROTO_UDP):
                inner.sport, inner.dport = new_sport, new_dport
            if inner.src != old_src and packet.dst == old_src:
                packet.dst = inner.src
            if inner.dst != old_dst and packet.src == old_dst:
                packet.src = inner.dst
        return self._state_decision(packet, state, ifname, inbound, direction, now, "pass", "match", [])

    def _conn_limit(self, state: State) -> bool:
        """pf_src_connlimit: count an established connection; True when the source overloads."""
        policy: Optional[StatePolicy] = state.rule.extra.get("state") if hasattr(state.rule, "extra") else None
        if policy is None or not state.src_nodes:
            return False
        node: SourceNode = state.src_nodes[0]
        node.conn += 1
        bad = policy.max_src_conn and node.conn > policy.max_src_conn
        limit, seconds = policy.max_src_conn_rate
        if limit:
            now = state.expire
            diff = now - node.conn_rate_last
            if diff >= seconds or node.conn_rate_last == 0 and node.conn_rate_count == 0:
                node.conn_rate_count = 0
            else:
                node.conn_rate_count -= node.conn_rate_count * diff / seconds
            node.conn_rate_count += 1000  # PF_THRESHOLD_MULT
            node.conn_rate_last = now
            if node.conn_rate_count > limit * 1000:
                bad = True
        if not bad:
            return False
        if policy.overload:
            table = self.resolver.tables.setdefault(policy.overload, Table(policy.overload))
            table.add_host(node.af, node.addr)
            if policy.flush:
                for other in self.states.by_source(node.af, node.addr):
                    if policy.flush_global or other.rule is state.rule:
                        self.states.remove(other)
        self.states.remove(state)
        return True

    # ------------------------------------------------------------------ rules
    def _evaluate(self, rule_list: RuleList, packet: Packet, ifname: str, inbound: bool,
                  found: list) -> bool:
        """The filter loop: every match becomes the candidate, ``quick`` stops (returns True)."""
        for rule in rule_list.candidates(packet, ifname, inbound):
            rule.counters.evaluations += 1
            if not rule.matches(packet, ifname, inbound, packet.tag, self.rng):
                continue
            tag = rule.ast.tag
            if tag is not None:
                packet.tag = tag
            if rule.anchor is not None:
                before = found[0]
                stop = self._evaluate(rule.anchor, packet, ifname, inbound, found)
                if stop or (rule.quick and found[0] is not before):
                    return True
                continue
            if rule.kind == "match":
                found[1].append(rule)
                continue
            found[0] = rule
            if rule.quick:
                return True
        return False

    def _test_rule(self, packet: Packet, ifname: str, inbound: bool, direction: str, now: float,
                   emitted: list) -> Decision:
        """pf_test_rule: translation, the filter rules, then state creation."""
        original = None
        translation: Optional[Translation] = None
        tr: Optional[TranslationRuleC] = None
        is_fragment = packet.frag_offset != 0
        icmp_error = packet.is_icmp_error
        if not is_fragment:
            tr = self.translator.match(packet, ifname, inbound)
            if tr is not None and tr.negated:
                tr = None
            elif tr is not None:
                original = packet.copy()
                try:
                    translation = apply(tr, packet, inbound, self.rng, self._port_free_for(original, inbound), self.sticky)
                except MapFailed:
                    return self._finish_block(original, packet, ifname, inbound, direction, now, tr.rule,
                                              "map-failed", emitted, translation=None)
        found: list = [None, []]
        if tr is not None and tr.pass_:
            rule = self.default_rule  # nat pass / rdr pass: the filter rules are skipped
        else:
            self._evaluate(self.filter, packet, ifname, inbound, found)
            rule = found[0] if found[0] is not None else self.default_rule
        for match_rule in found[1]:
            match_rule.counters.packets[0 if inbound else 1] += 1
        side = 0 if inbound else 1
        if rule.kind == "block" or (rule is self.default_rule and rule.action == "block"):
            return self._finish_block(original or packet, packet, ifname, inbound, direction, now, rule, "match",
                                      emitted, translation)
        # pass; IP options only with allow-opts (the default rule never allows them)
        if (packet.ip_options or packet.v6_routing) and not rule.extra.get("allow_opts"):
            return self._finish_block(original or packet, packet, ifname, inbound, direction, now, rule, "ip-option",
                                      emitted, translation)
        policy: Optional[StatePolicy] = rule.extra.get("state") if rule is not self.default_rule else None
        keep = policy is not None and policy.kind != "none"
        if translation is not None and not keep:
            policy = StatePolicy()  # pf: a translated packet always gets a state
            keep = True
        state_word = None
        state = None
        reason = "match"
        action = "pass"
        if keep and not is_fragment and not icmp_error:
            created = self._create_state(packet, original, ifname, inbound, direction, now, rule, tr, policy, emitted)
            if isinstance(created, str):
                return self._finish_block(original or packet, packet, ifname, inbound, direction, now, rule, created,
                                          emitted, translation)
            state = created
            state_word = "created"
            if state.src.state == PF_TCPS_PROXY_SRC:
                action, reason = "block", "synproxy"
        size = packet.wire_len or packet.size()
        rule.counters.packets[side] += 1
        rule.counters.bytes[side] += size
        if tr is not None:
            tr.rule.counters.packets[side] += 1
            tr.rule.counters.bytes[side] += size
        logs = []
        log = getattr(getattr(rule, "ast", None), "log", None)
        if log is not None:
            logs.append(self._log_record(packet, ifname, inbound, rule, "synproxy" if reason == "synproxy" else action,
                                         reason, now))
        elif tr is not None and tr.rule.ast.log is not None:
            logs.append(self._log_record(packet, ifname, inbound, tr.rule, action, reason, now))
        return Decision(action, reason, rule, translation, state_word, state, bool(logs), logs, emitted, packet,
                        ifname, direction, packet.tag)

    def _port_free_for(self, original: Packet, inbound: bool):
        """For nat: is (new source, port) free toward this destination? (pf_get_sport's probe)."""
        af, proto, dst, dport = original.af, original.proto, original.dst, original.dport
        wire = self.states.wire
        stack = self.states.stack

        def free(_af: int, addr: int, port: int) -> bool:
            key = (af, proto, dst, dport, addr, port)
            return key not in wire and key not in stack

        return free

    def _finish_block(self, original: Packet, packet: Packet, ifname: str, inbound: bool, direction: str, now: float,
                      rule, reason: str, emitted: list, translation: Optional[Translation]) -> Decision:
        side = 0 if inbound else 1
        size = packet.wire_len or packet.size()
        rule.counters.packets[side] += 1
        rule.counters.bytes[side] += size
        if reason == "match" and getattr(rule, "kind", "") == "block":
            emitted.extend(self._block_return(original, rule, ifname, inbound))
        logs = []
        log = getattr(getattr(rule, "ast", None), "log", None)
        if log is not None:
            logs.append(self._log_record(packet, ifname, inbound, rule, "block", reason, now))
        return Decision("block", reason, rule, translation, None, None, bool(logs), logs, emitted, packet, ifname,
                        direction, packet.tag)

    # ------------------------------------------------------------------ state creation
    def _create_state(self, packet: Packet, original: Optional[Packet], ifname: str, inbound: bool, direction: str,
                      now: float, rule, tr: Optional[TranslationRuleC], policy: StatePolicy, emitted: list):
        """pf_create_state: limits, keys, peers; returns the state or a pf reason to drop."""
        orig = original or packet
        af, proto = packet.af, packet.proto
        if len(self.states) >= self.states.limit:
            return "state-limit"
        if policy.max and rule.counters.states_cur >= policy.max:
            return "state-limit"
        nodes: tuple = ()
        if policy.tracks_sources:
            key = (af, orig.src, id(rule) if policy.source_track != "global" else 0)
            node = self.states.src_nodes.get(key)
            if node is None:
                rule_nodes = rule.extra.setdefault("src_nodes", set())
                if policy.max_src_nodes and len(rule_nodes) >= policy.max_src_nodes:
                    return "src-limit"
                node = SourceNode(af, key[1], key[2], registry=rule_nodes)
                self.states.src_nodes[key] = node
                rule_nodes.add(key)
            if policy.max_src_states and node.states >= policy.max_src_states:
                return "src-limit"
            node.expire = now + self.timeouts.get("src.track", 0)
            nodes = (node,)
        if proto in (IPPROTO_TCP, IPPROTO_UDP) or packet.is_icmp:
            osport, odport, nsport, ndport = orig.sport, orig.dport, packet.sport, packet.dport
        else:
            osport = odport = nsport = ndport = 0
        if inbound:
            wire = (af, proto, orig.src, osport, orig.dst, odport)
            stack = (af, proto, packet.src, nsport, packet.dst, ndport)
        else:
            stack = (af, proto, orig.dst, odport, orig.src, osport)
            wire = (af, proto, packet.dst, ndport, packet.src, nsport)
        if stack == wire:
            stack = wire
        if_bound = policy.if_bound if policy.if_bound is not None else self.if_bound_default
        timeouts = self.timeouts
        if policy.timeouts:
            timeouts = dict(self.timeouts)
            timeouts.update(policy.timeouts)
        state = State(self.states.new_id(), wire, stack, direction, ifname if if_bound else None, ifname, rule,
                      nat_rule=tr.rule if tr is not None else None, timeouts=timeouts, creation=now, expire=now,
                      tag=packet.tag, src_nodes=nodes, sloppy=policy.sloppy, no_sync=policy.no_sync)
        state.adaptive = bool(timeouts.get("rule.adaptive.start"))
        state.log_all = bool(getattr(getattr(rule, "ast", None), "log", None) and rule.ast.log.all)
        if self.states.conflicts(state):
            return "state-insert"
        if proto == IPPROTO_TCP:
            kind = policy.kind
            tracking.init_tcp_peers(state, packet, kind == "modulate", self.rng)
            if kind == "synproxy" and (packet.flags & (TH_SYN | TH_ACK)) == TH_SYN:
                tracking.start_synproxy(state, orig, self.rng,
                                        lambda p, back, skip: emitted.append(Emitted(p, "sender", skip, "synproxy")))
        elif proto == IPPROTO_UDP:
            tracking.init_pseudo_peers(state, "udp")
        elif packet.is_icmp:
            state.timeout = "icmp.first"
        else:
            tracking.init_pseudo_peers(state, "other")
        self.states.insert(state)
        for node in nodes:
            node.states += 1
        rule.counters.states_cur += 1
        rule.counters.states_tot += 1
        if tr is not None:
            tr.rule.counters.states_cur += 1
            tr.rule.counters.states_tot += 1
        return state

    # ------------------------------------------------------------------ block return
    def _block_return(self, packet: Packet, rule, ifname: str, inbound: bool) -> list:
        """pf_return: RST for TCP, ICMP unreachable for the rest (never for ICMP itself)."""
        how = rule.ast.block
        if how is None or how.kind == "drop":
            return []
        if packet.proto == IPPROTO_TCP and how.kind in ("return", "return-rst"):
            if packet.flags & TH_RST:
                return []
            ack = packet.seq + packet.l4_len + (1 if packet.flags & TH_SYN else 0) + (1 if packet.flags & TH_FIN else 0)
            rst = Packet(packet.af, packet.dst, packet.src, IPPROTO_TCP, packet.dport, packet.sport,
                         flags=TH_RST | TH_ACK, seq=packet.ack, ack=ack & 0xFFFFFFFF, win=0,
                         ttl=how.ttl or 64)
            return [Emitted(rst, "sender", True, "block return")]
        if packet.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) or how.kind == "return-rst":
            return []
        quoted = packet.to_bytes()
        if packet.af == 4:
            if how.kind == "return-icmp6":
                return []
            code = how.icmp_code if how.icmp_code is not None else 3
            body = quoted[: (len(packet.ip_options) + 20 + 8)]
            itype, proto = 3, IPPROTO_ICMP
        else:
            code = how.icmp6_code if how.icmp6_code is not None else 4  # port unreachable
            body = quoted[:1232]
            itype, proto = 1, IPPROTO_ICMPV6
        source = packet.dst if self.is_self(packet.af, packet.dst) else self._interface_address(ifname, packet.af,
                                                                                                packet.dst)
        reply = Packet(packet.af, source, packet.src, proto, icmp_type=itype, icmp_code=code, payload=body)
        try:
            reply.inner = Packet.parse(body, lenient=True)
        except PacketError:
            reply.inner = None
        return [Emitted(reply, "sender", True, "block return")]

    def _interface_address(self, ifname: str, af: int, fallback: int) -> int:
        for iface in self.interfaces.addrs(ifname):
            if iface.version == af:
                return int(iface.ip)
        return fallback

    # ------------------------------------------------------------------ pflog
    def _log_record(self, packet: Packet, ifname: str, inbound: bool, rule, action: str, reason: str,
                    now: float) -> LogRecord:
        path = getattr(rule, "anchor_path", "")
        number = rule.number if rule.number is not None else 0xFFFFFFFF
        rulenr, subrulenr = number, NO_SUBRULE
        if path:
            anchor_rule = rule.extra.get("anchor_number")
            rulenr = anchor_rule if anchor_rule is not None else number
            subrulenr = number
        ridentifier = getattr(getattr(rule, "ast", None), "ridentifier", None) or 0
        header = PflogHeader(action=int(_LOG_ACTION.get(action, Action.DROP)), reason=int(_REASONS.get(reason, 0)),
                             ifname=ifname[:15], direction=int(Direction.IN if inbound else Direction.OUT),
                             rulenr=rulenr, subrulenr=subrulenr, af=AF_INET if packet.af == 4 else AF_INET6,
                             ruleset=path[:15], ridentifier=ridentifier)
        record = LogRecord(header, packet.to_bytes(), now)
        self.log.append(record)
        return record


def _flags_ok(flags: int) -> bool:
    """pf_normalize_tcp's flag checks pass and leave the flags as they are (no SYN+FIN to strip)."""
    if flags & TH_SYN:
        return not flags & (TH_RST | TH_FIN) and (flags & TH_ACK or not flags & (TH_PUSH | TH_URG))
    return bool(flags & (TH_ACK | TH_RST)) and (flags & TH_ACK or not flags & (TH_FIN | TH_PUSH | TH_URG))


_NO_SCRUB = object()  # marker: no scrub rule for this (interface, direction, family, protocol)
_FLAGS_OK = tuple(_flags_ok(flags) for flags in range(256))


def _clamp_mss(options: bytes, limit: int) -> bytes:
    """scrub max-mss: lower the MSS option of a SYN (pf_normalize_mss)."""
    raw = bytearray(options)
    for i, length in tcp_options(options):
        if raw[i] == 2 and length == 4 and (raw[i + 2] << 8 | raw[i + 3]) > limit:
            raw[i + 2], raw[i + 3] = limit >> 8, limit & 0xFF
    return bytes(raw)


__all__ = ["Decision", "DefaultRule", "Emitted", "Engine", "LogRecord", "StatePolicy"]
