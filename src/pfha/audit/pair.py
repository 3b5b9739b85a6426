"""Pair consistency: do the two nodes of an HA pair agree where they must and differ where
they must?

Two firewalls are one system only if they run the same ruleset, speak CARP with the same
vhids, passwords and addresses, disagree on advskew (so the master is chosen, not left to
chance: carp.md §3.3, a tie keeps whoever got there first), both preempt, sync states to each
other with the same key over a shared subnet, and sit in the same subnets. Each check here
compares two :class:`NodeSource` values; none reads anything but the pf.conf files they name.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from pfha.audit.findings import Finding, Place, Severity
from pfha.audit.nodes import NodeSource
from pfha.node.config import CarpGroup


def check_pair(a: NodeSource, b: NodeSource) -> list[Finding]:
    """All pair checks; ``a`` is taken as the intended master, ``b`` as the backup."""
    findings: list[Finding] = []
    for check in (same_name, same_pf_conf, carp_groups, carp_preference, preempt, sync, subnets):
        findings.extend(check(a, b))
    return [_with_nodes(f, a, b) for f in findings]


def _with_nodes(finding: Finding, a: NodeSource, b: NodeSource) -> Finding:
    return finding if finding.nodes else replace(finding, nodes=(a.name, b.name))


def same_name(a: NodeSource, b: NodeSource) -> Iterator[Finding]:
    if a.name == b.name:
        yield Finding("pair.name", Severity.WARNING, b.place("node.name"),
                      f"both nodes are called {a.name!r}; logs and status cannot tell them apart",
                      "give each node its own name (hostname= in rc.conf, node.name in the TOML)")


def same_pf_conf(a: NodeSource, b: NodeSource) -> Iterator[Finding]:
    texts = []
    for node in (a, b):
        try:
            texts.append(node.pf_conf.read_text(encoding="utf-8", errors="replace"))
        except OSError as error:
            yield Finding("pair.pf-conf", Severity.ERROR, node.place("node.pf_conf"),
                          f"{node.name}: cannot read its pf.conf {node.pf_conf}: {error.strerror}",
                          "point pf_rules / node.pf_conf at the ruleset file")
            return
    if texts[0] == texts[1]:
        return
    lines_a, lines_b = texts[0].splitlines(), texts[1].splitlines()
    line = next((i for i, (x, y) in enumerate(zip(lines_a, lines_b), 1) if x != y), min(len(lines_a), len(lines_b)) + 1)
    yield Finding("pair.pf-conf", Severity.ERROR, Place(str(b.pf_conf), line),
                  f"the nodes load different rulesets ({a.pf_conf} and {b.pf_conf} first differ at line {line}); "
                  "after a failover the backup enforces other rules, and synced states link to other rule numbers",
                  "use the same pf.conf on both nodes (copy it, or keep it in one place and deploy it to both)",
                  related=(Place(str(a.pf_conf), line),))


def _groups(node: NodeSource) -> dict[int, tuple[int, CarpGroup]]:
    return {g.vhid: (i, g) for i, g in enumerate(node.config.carp)}


def _fix_carp(node: NodeSource, group: CarpGroup, what: str) -> str:
    if node.kind == "freebsd":
        where = f"ifconfig_{group.name}" if group.name else f"the ifconfig_{group.parent}_alias lines with vhid {group.vhid}"
        return f"in {node.path.name}, {what} on {where} (every alias of vhid {group.vhid})"
    return f"in {node.path.name}, {what} in the [[carp.group]] with vhid = {group.vhid}"


def carp_groups(a: NodeSource, b: NodeSource) -> Iterator[Finding]:
    ga, gb = _groups(a), _groups(b)
    for vhid in sorted(set(ga) | set(gb)):
        if vhid not in gb or vhid not in ga:
            have, lack = (a, b) if vhid in ga else (b, a)
            index, group = _groups(have)[vhid]
            yield Finding("pair.carp-vhid", Severity.ERROR, have.place(f"carp.group[{index}]"),
                          f"vhid {vhid} ({', '.join(str(x.ip) for x in group.addresses)}) is configured on "
                          f"{have.name} only; nobody takes over its addresses when {have.name} fails",
                          f"configure vhid {vhid} with the same addresses and password on {lack.name}")
            continue
        (ia, x), (ib, y) = ga[vhid], gb[vhid]
        place = b.place(f"carp.group[{ib}]")
        related = (a.place(f"carp.group[{ia}]"),)
        if (x.password, x.password_file) != (y.password, y.password_file):
            yield Finding("pair.carp-password", Severity.ERROR, place,
                          f"vhid {vhid}: the nodes use different CARP passwords, so each rejects the other's "
                          "adverts (HMAC mismatch) and both become MASTER",
                          _fix_carp(b, y, "use the same 'pass' as the other node"), related=related)
        if set(map(str, x.addresses)) != set(map(str, y.addresses)):
            only_a = sorted(set(map(str, x.addresses)) - set(map(str, y.addresses)))
            only_b = sorted(set(map(str, y.addresses)) - set(map(str, x.addresses)))
            yield Finding("pair.carp-addresses", Severity.ERROR, place,
                          f"vhid {vhid}: the nodes carry different addresses ({a.name} only: {', '.join(only_a) or '-'}; "
                          f"{b.name} only: {', '.join(only_b) or '-'}); those move or vanish on failover",
                          _fix_carp(b, y, "list the same addresses as the other node"), related=related)
        if x.parent != y.parent:
            yield Finding("pair.carp-parent", Severity.WARNING, place,
                          f"vhid {vhid} runs on {x.parent} on {a.name} but on {y.parent} on {b.name}",
                          "run each vhid on the same segment on both nodes", related=related)
        for node, group, index in ((a, x, ia), (b, y, ib)):
            parent = node.config.interface(group.parent)
            networks = [n.network for n in parent.addresses] if parent else []
            for address in group.addresses:
                if networks and not any(address.ip in net for net in networks):
                    yield Finding("pair.carp-subnet", Severity.ERROR, node.place(f"carp.group[{index}]"),
                                  f"{node.name}: vhid {vhid} address {address.ip} is not in any subnet of its parent "
                                  f"{group.parent} ({', '.join(map(str, networks))}); FreeBSD <= 9 cannot even attach it",
                                  f"give {group.parent} an address in {address.ip}'s subnet, or move the vhid",
                                  nodes=(node.name,))


def carp_preference(a: NodeSource, b: NodeSource) -> Iterator[Finding]:
    """carp.md §3.1/3.3: the node with the smaller advbase + advskew/256 is master; a tie is
    broken by nothing but timing, so which node is master is left to chance."""
    ga, gb = _groups(a), _groups(b)
    prefers: dict[int, str] = {}
    for vhid in sorted(set(ga) & set(gb)):
        (ia, x), (ib, y) = ga[vhid], gb[vhid]
        ta, tb = x.advbase * 256 + x.advskew, y.advbase * 256 + y.advskew
        if ta == tb:
            yield Finding(
                "pair.carp-advskew", Severity.ERROR, b.place(f"carp.group[{ib}]"),
                f"vhid {vhid}: both nodes advertise advbase {x.advbase} advskew {x.advskew}, so which one is MASTER "
                "is left to chance: neither is preferred, and preempt only takes over from a slower master "
                "(carp.md §3.3)",
                _fix_carp(b, y, f"add 'advskew {min(x.advskew + 100, 254)}'" if b.kind == "freebsd"
                          else f"set advskew = {min(x.advskew + 100, 254)}"),
                example=f"start {b.name} first, then {a.name}: {a.name} hears adverts as good as its own and stays "
                        f"BACKUP, so {b.name} stays MASTER of vhid {vhid} until it fails",
                related=(a.place(f"carp.group[{ia}]"),))
            continue
        prefers[vhid] = a.name if ta < tb else b.name
    if len(set(prefers.values())) > 1:
        split = ", ".join(f"vhid {v}: {n}" for v, n in sorted(prefers.items()))
        yield Finding("pair.carp-split", Severity.WARNING, b.place("carp.group[0]"),
                      f"the nodes prefer different masters per vhid ({split}); traffic enters through one node and "
                      "leaves through the other, which only works while every state is synced in time",
                      "give one node the smaller advskew on every vhid")


def preempt(a: NodeSource, b: NodeSource) -> Iterator[Finding]:
    for node in (a, b):
        lacking = [g.vhid for g in node.config.carp if not g.preempt]
        if not lacking:
            continue
        fix = ("add net.inet.carp.preempt=1 to sysctl.conf" if node.kind == "freebsd"
               else "set preempt = true under [carp]")
        yield Finding("pair.carp-preempt", Severity.WARNING, node.place("carp.preempt"),
                      f"{node.name}: preempt is off for vhid {', '.join(map(str, lacking))}; the preferred master never "
                      "takes MASTER back after a failover, and one failed interface does not move the others",
                      f"on {node.name}, {fix}", nodes=(node.name,))


def _key_material(node: NodeSource) -> tuple[str, str | bytes | None]:
    sync = node.config.sync
    if sync is None or (sync.key is None and sync.key_file is None):
        return ("none", None)
    if sync.key is not None:
        return ("key", sync.key)
    try:
        return ("file", Path(sync.key_file).read_bytes())
    except OSError:
        return ("file-unreadable", str(sync.key_file))


def sync(a: NodeSource, b: NodeSource) -> Iterator[Finding]:
    sa, sb = a.config.sync, b.config.sync
    if sa is None and sb is None:
        yield Finding("pair.sync-missing", Severity.WARNING, b.place("sync"),
                      "neither node syncs its states; every connection through the firewall breaks on failover",
                      "configure state sync on a dedicated link (ifconfig_pfsync0=\"up syncdev IF\" / [sync])")
        return
    if sa is None or sb is None:
        have, lack = (a, b) if sa is not None else (b, a)
        yield Finding("pair.sync-missing", Severity.ERROR, have.place("sync"),
                      f"only {have.name} syncs states; {lack.name} neither sends nor receives them",
                      f"configure the same sync link on {lack.name}")
        return
    for me, other, mine in ((a, b, sa), (b, a, sb)):
        if mine.peer is None:
            continue
        theirs = other.config.interface(other.config.sync.device)
        addresses = {x.ip for x in theirs.addresses} if theirs else set()
        if mine.peer not in addresses:
            yield Finding("pair.sync-peer", Severity.ERROR, me.place("sync"),
                          f"{me.name} sends its states to {mine.peer}, which is not {other.name}'s address on its sync "
                          f"link {other.config.sync.device} ({', '.join(map(str, sorted(addresses))) or 'none'})",
                          f"set the sync peer to {other.name}'s address on {other.config.sync.device}",
                          nodes=(me.name,))
    ia, ib = a.config.interface(sa.device), b.config.interface(sb.device)
    na = {x.network for x in ia.addresses} if ia else set()
    nb = {x.network for x in ib.addresses} if ib else set()
    if na and nb and not na & nb:
        yield Finding("pair.sync-subnet", Severity.ERROR, b.place("sync"),
                      f"the sync links are in different subnets ({sa.device}: {', '.join(map(str, na))} on {a.name}, "
                      f"{sb.device}: {', '.join(map(str, nb))} on {b.name}); sync messages are not routed",
                      "put both sync interfaces in one subnet on a dedicated link")
    ka, kb = _key_material(a), _key_material(b)
    if (ka[0] == "none") != (kb[0] == "none"):
        yield Finding("pair.sync-key", Severity.ERROR, b.place("sync"),
                      "one node authenticates its sync messages and the other does not; they reject each other",
                      "give both nodes the same sync key (sync.key_file pointing at the same secret)")
    elif ka[0] != "none" and "file-unreadable" not in (ka[0], kb[0]) and ka[1] != kb[1]:
        yield Finding("pair.sync-key", Severity.ERROR, b.place("sync"),
                      "the nodes use different sync keys; every sync message is rejected",
                      "give both nodes the same sync key")


def subnets(a: NodeSource, b: NodeSource) -> Iterator[Finding]:
    for iface in a.config.interfaces:
        if iface.name == "lo0" or iface.device == "lo":
            continue
        other = b.config.interface(iface.name)
        if other is None:
            yield Finding("pair.interfaces", Severity.WARNING, a.place(f"interfaces.{iface.name}"),
                          f"{iface.name} exists on {a.name} only; a failover loses whatever it connects",
                          f"give {b.name} the same interface, or remove it from {a.name}")
            continue
        for mine in iface.addresses:
            if mine.ip.is_loopback:
                continue
            same = [x for x in other.addresses if x.ip == mine.ip]
            if same:
                yield Finding("pair.address-duplicate", Severity.ERROR, b.place(f"interfaces.{iface.name}"),
                              f"{iface.name} has the address {mine.ip} on both nodes; each answers ARP for it",
                              f"give {b.name} its own address on {iface.name} (shared addresses belong to CARP)",
                              related=(a.place(f"interfaces.{iface.name}"),))
            elif not any(x.network == mine.network for x in other.addresses):
                theirs = ", ".join(str(x) for x in other.addresses) or "no address"
                yield Finding("pair.subnet", Severity.ERROR, b.place(f"interfaces.{iface.name}"),
                              f"{iface.name} is in {mine.network} on {a.name} but has {theirs} on {b.name}; "
                              "the nodes are not on the same segment",
                              f"give {b.name}'s {iface.name} an address in {mine.network}",
                              related=(a.place(f"interfaces.{iface.name}"),))
    for iface in b.config.interfaces:
        if iface.name != "lo0" and iface.device != "lo" and a.config.interface(iface.name) is None:
            yield Finding("pair.interfaces", Severity.WARNING, b.place(f"interfaces.{iface.name}"),
                          f"{iface.name} exists on {b.name} only; a failover loses whatever it connects",
                          f"give {a.name} the same interface, or remove it from {b.name}")
