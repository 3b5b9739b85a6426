"""pf's state timeouts as conntrack timeout policies (``ct timeout`` objects of our table).

pf gives every state the timeouts of the rule that created it: pf's defaults, overridden by
``set timeout`` (and ``set optimization``), overridden by the rule's ``keep state (...)``
options. On Linux a connection's timeouts come from conntrack; nftables can attach a timeout
policy object to a connection with ``ct timeout set "name"`` while conntrack has not yet
confirmed it (nft_ct_timeout_obj_eval acts on unconfirmed, non-template entries only). The
state-creating branches of pass rules run exactly then: on the connection's first packet, after
conntrack (priority -200), before confirmation (postrouting, last). So each stateful rule gets
one policy per L4 protocol it can create states for, and the kernel enforces pf's values.

What conntrack cannot express stays approximate, with a precise warning (:func:`warnings_for`):

- nft 1.0.6 creates TCP and UDP policies only (its text and JSON grammars know no other
  protocol), so ``icmp.*`` and ``other.*`` are not per rule; ``set timeout`` still sets them
  namespace-wide through conntrack's sysctls (:data:`pfha.nft.compile.CONNTRACK_TIMEOUTS`);
- conntrack's UDP machine has two states: ``unreplied`` gets ``udp.first`` and ``replied``
  gets ``udp.multiple`` (pf's ``udp.single``, one side sent more than once, has no
  conntrack state);
- ``tcp.tsdiff``, ``interval``, ``src.track``, ``frag`` and the adaptive scaling have no
  conntrack policy field.

Objects are named after their content (``pfto_<proto>_<hash>``): reloading a ruleset with the
same timeouts re-uses the same objects, so connections keep their policy across reloads (a
destroyed object detaches itself from every connection using it: nf_ct_untimeout). nft 1.0.6's
JSON parser drops a ``ct timeout`` object's policy, so :mod:`pfha.nft.loader` creates them
with :func:`text_command`; the compiled JSON still carries them as ``add`` commands (the form
a fixed nft accepts), which the loader takes out of the batch.

Pure: never touches the OS.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pfha.conf import ast
from pfha.engine.state import DEFAULT_TIMEOUTS, OPTIMIZATION_PRESETS, configured_timeouts
from pfha.nft import FAMILY, TABLE

OBJECT = "ct timeout"  # the nftables JSON key of a timeout policy object
PREFIX = "pfto_"
IPPROTO_TCP, IPPROTO_UDP = 6, 17

#: pf timeout -> the conntrack policy states it sets, per protocol nft 1.0.6 can express.
#: tcp.first covers SYN_SENT2 too (simultaneous open: both sides sent a SYN); UDP's replied
#: state is pf's steady two-way exchange, udp.multiple.
POLICY_STATES: dict[str, dict[str, tuple[str, ...]]] = {
    "tcp": {
        "tcp.first": ("syn_sent", "syn_sent2"),
        "tcp.opening": ("syn_recv",),
        "tcp.established": ("established",),
        "tcp.closing": ("fin_wait", "close_wait", "last_ack"),
        "tcp.finwait": ("time_wait",),
        "tcp.closed": ("close",),
    },
    "udp": {
        "udp.first": ("unreplied",),
        "udp.multiple": ("replied",),
    },
}
PROTOCOLS = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}

#: Every pf timeout name that belongs to state lifetime (a rule option or ``set timeout``).
TIMEOUT_NAMES = frozenset(DEFAULT_TIMEOUTS) | {"sctp.first", "sctp.opening", "sctp.established", "sctp.closing", "sctp.closed"}
MAPPED = frozenset(name for states in POLICY_STATES.values() for name in states)
#: Why each unmapped name cannot be a per-rule policy (the warning's text).
UNMAPPED = {
    "udp.single": "conntrack's UDP states are unreplied (udp.first, kept for 2 s after a first reply) and replied "
                  "(udp.multiple); pf's udp.single (one side sent more than once, or a first reply) has no conntrack state",
    "icmp.first": "nft 1.0.6 creates TCP and UDP timeout policies only; conntrack's namespace-wide ICMP timeout applies",
    "icmp.error": "nft 1.0.6 creates TCP and UDP timeout policies only, and conntrack has one ICMP timeout; "
                  "its namespace-wide ICMP timeout applies",
    "other.first": "nft 1.0.6 creates TCP and UDP timeout policies only; conntrack's namespace-wide generic timeout applies",
    "other.single": "nft 1.0.6 creates TCP and UDP timeout policies only; conntrack's namespace-wide generic timeout applies",
    "other.multiple": "nft 1.0.6 creates TCP and UDP timeout policies only; conntrack's namespace-wide generic timeout applies",
    "tcp.tsdiff": "conntrack does not check TCP timestamps",
    "frag": "Linux reassembles fragments before filtering (its own reassembly timeouts apply)",
    "interval": "conntrack expires entries itself (no purge interval)",
    "src.track": "source tracking is not enforced",
    "adaptive.start": "conntrack's timeouts do not scale with the state count",
    "adaptive.end": "conntrack's timeouts do not scale with the state count",
    **{f"sctp.{state}": "nft 1.0.6 creates TCP and UDP timeout policies only; conntrack's namespace-wide SCTP timeouts apply"
       for state in ("first", "opening", "established", "closing", "closed")},
}

#: ``set timeout`` names that neither a policy nor a conntrack sysctl carries (the others reach
#: a policy, conntrack's namespace-wide sysctls, or compile's "no such timeout" warning).
GLOBAL_UNMAPPED = ("udp.single", "icmp.error")


@dataclass(frozen=True)
class Policy:
    """One ``ct timeout`` object: a protocol and its conntrack state -> seconds."""

    protocol: str
    states: tuple[tuple[str, int], ...]

    @property
    def name(self) -> str:
        """Named after the content, so equal policies are one object, reused across loads."""
        text = self.protocol + ";" + ",".join(f"{s}={v}" for s, v in self.states)
        return f"{PREFIX}{self.protocol}_{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    def command(self) -> dict[str, Any]:
        """The JSON ``add`` command (what nft's JSON API takes once its parser keeps policies)."""
        return {"add": {OBJECT: {"family": FAMILY, "table": TABLE, "name": self.name, "protocol": self.protocol,
                                 "l3proto": "ip", "policy": dict(self.states)}}}


def is_timeout(name: str) -> bool:
    return name in TIMEOUT_NAMES


def rule_timeouts(rule: Any) -> tuple[tuple[str, int], ...]:
    """The timeout options a rule sets itself (``keep state (tcp.established 60, ...)``)."""
    state = getattr(rule, "state", None)
    if state is None:
        return ()
    return tuple((o.name, o.value) for o in state.options if is_timeout(o.name) and o.value is not None)


def effective(options: ast.Options, rule: Any = None) -> dict[str, int]:
    """A state's timeouts: the global ones overridden by its rule's own options."""
    values = configured_timeouts(options)
    if rule is not None:
        values.update(dict(rule_timeouts(rule)))
    return values


def wanted(ruleset: ast.Ruleset, rules: Iterable[Any]) -> bool:
    """Policies are attached only when the ruleset says something about timeouts; otherwise
    the kernel keeps conntrack's own timeouts and the compiled table is as it always was."""
    options = ruleset.options
    if options.timeouts or OPTIMIZATION_PRESETS.get(options.optimization):
        return True
    return any(rule_timeouts(r) for r in rules)


def policies(values: Mapping[str, int], protocols: Iterable[str] = ("tcp", "udp")) -> list[Policy]:
    """The conntrack policies (one per protocol) that carry ``values``."""
    result = []
    for protocol in protocols:
        states: dict[str, int] = {}
        for pf_name, conntrack_states in POLICY_STATES[protocol].items():
            for state in conntrack_states:
                states[state] = int(values[pf_name])
        result.append(Policy(protocol, tuple(sorted(states.items()))))
    return result


def protocols_of(rule: Any) -> tuple[str, ...]:
    """The policy protocols a rule can create states for (``proto`` unset: both)."""
    proto = getattr(rule, "proto", None)
    if proto is None:
        return ("tcp", "udp")
    return tuple(p for p, number in PROTOCOLS.items() if number == proto)


def statements(found: list[Policy]) -> list[dict[str, Any]]:
    """``ct timeout set "obj"`` for each policy: the kernel applies the one whose protocol is
    the packet's (nft_ct_timeout_obj_eval skips the others), so one rule can carry both."""
    return [{OBJECT: p.name} for p in found]


@dataclass
class TimeoutPlan:
    """Which policies a compiled ruleset needs and which statements each state-creating
    branch gets; empty (no objects, no statements) when the ruleset sets no timeouts."""

    ruleset: ast.Ruleset
    enabled: bool
    objects: dict[str, Policy] = field(default_factory=dict)
    # (protocols, the rule's own timeouts) -> statements: most rules share a few of these,
    # and hashing a policy's content into its name costs more than the rest of a rule's work
    attached: dict[tuple[Any, ...], list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    def for_ruleset(cls, ruleset: ast.Ruleset, rules: Iterable[Any]) -> TimeoutPlan:
        return cls(ruleset, wanted(ruleset, list(rules)))

    def attach(self, rule: Any = None) -> list[dict[str, Any]]:
        """The statements a state created by ``rule`` gets (``None``: the default rule, for
        states a translation forces or ``nat pass``/``rdr pass`` make)."""
        if not self.enabled:
            return []
        protocols = protocols_of(rule) if rule is not None else ("tcp", "udp")
        key = (protocols, rule_timeouts(rule))
        if key not in self.attached:
            found = policies(effective(self.ruleset.options, rule), protocols)
            for policy in found:
                self.objects.setdefault(policy.name, policy)
            self.attached[key] = statements(found)
        return self.attached[key]

    def commands(self) -> list[dict[str, Any]]:
        return [p.command() for p in self.objects.values()]


def warnings_for(ruleset: ast.Ruleset, rules: Iterable[Any]) -> list[tuple[str, Any]]:
    """(message, rule or None) for every timeout the kernel does not apply as pf would."""
    out: list[tuple[str, Any]] = []
    for name, _value in ruleset.options.timeouts:
        if name in GLOBAL_UNMAPPED:
            out.append((f"set timeout {name}: not applied: {UNMAPPED[name]}", None))
    for rule in rules:
        for name, _value in rule_timeouts(rule):
            if name in MAPPED or name in ("adaptive.start", "adaptive.end"):
                continue  # applied; the adaptive ones have their own warning in compile
            if name == "src.track" and _implied_by_rate(rule, _value):
                continue  # pfctl's own src.track for max-src-conn-rate N/S: the rate set enforces it
            reason = UNMAPPED.get(name, "no conntrack equivalent")
            out.append((f"state option {name}: not enforced per rule: {reason}", rule))
    return out


def _implied_by_rate(rule: Any, seconds: int) -> bool:
    """Whether ``src.track`` is the one pfctl adds for ``max-src-conn-rate N/S`` (S seconds),
    which the per-source rate set (a token bucket over S) already stands for."""
    for option in rule.state.options:
        if option.name == "max-src-conn-rate":
            return option.value2 == seconds
    return False


def text_command(command: Mapping[str, Any]) -> str:
    """An ``add ct timeout`` command in nft's text syntax (the one nft 1.0.6 parses fully)."""
    obj = command["add"][OBJECT]
    policy = ", ".join(f"{state} : {int(seconds)}" for state, seconds in obj["policy"].items())
    return (f"add ct timeout {obj['family']} {obj['table']} {obj['name']} "
            f"{{ protocol {obj['protocol']}; l3proto {obj.get('l3proto', 'ip')}; policy = {{ {policy} }}; }}")


def split(commands: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the ``add ct timeout`` commands, everything else), order kept."""
    objects, rest = [], []
    for command in commands:
        (objects if OBJECT in command.get("add", {}) else rest).append(command)
    return objects, rest


def referenced(commands: Iterable[dict[str, Any]]) -> set[str]:
    """The policy names a batch's rules attach (``{"ct timeout": "name"}`` statements)."""
    names: set[str] = set()
    for command in commands:
        rule = command.get("add", {}).get("rule")
        if rule:
            names.update(e[OBJECT] for e in rule.get("expr", ()) if isinstance(e, dict) and isinstance(e.get(OBJECT), str))
    return names
