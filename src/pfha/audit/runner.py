"""Runs the checks that apply to what ``pfha audit`` was given, and merges their findings."""

from __future__ import annotations

from collections.abc import Collection

from pfha.audit import host as host_checks
from pfha.audit.findings import Finding, Report, Severity
from pfha.audit.nodes import NodeSource
from pfha.audit.pair import check_pair

CHECK_FAMILIES = ("lint", "pair", "host")


def audit(nodes: list[NodeSource], tree: host_checks.HostTree | None = None,
          families: Collection[str] = CHECK_FAMILIES) -> Report:
    report = Report()
    rulesets = {}
    if "lint" in families and nodes:
        from pfha.audit import lint

        for node in nodes:
            findings, ruleset = lint.lint_node(node, peers=[n for n in nodes if n is not node])
            rulesets[id(node)] = ruleset
            report.extend(findings)
        report.checked.append("ruleset (" + ", ".join(sorted({str(n.pf_conf) for n in nodes})) + ")")
    if "pair" in families and len(nodes) >= 2:
        report.extend(check_pair(nodes[0], nodes[1]))
        report.checked.append(f"pair ({nodes[0].name}, {nodes[1].name})")
        if len(nodes) > 2:
            report.extend([Finding("pair.count", Severity.WARNING, None,
                                   f"{len(nodes)} nodes given; the pair checks compared only the first two",
                                   "give the two nodes of one pair")])
    if "host" in families and tree is not None:
        managed, forwarding = _host_settings(nodes)
        report.extend(host_checks.check_host(tree, managed, forwarding))
        report.checked.append(f"host ({'live' if tree.live else tree.root})")
        if nodes:
            from pfha.audit import crosscheck

            for node in nodes:
                report.extend(crosscheck.check(tree, node, rulesets.get(id(node))))
    return report


def _host_settings(nodes: list[NodeSource]) -> tuple[dict[str, str], bool | None]:
    """The sysctls pfha node would set on this host: only when every node agrees on them."""
    if not nodes:
        return {}, None
    settings = [n.config.host.sysctls() for n in nodes]
    if any(s != settings[0] for s in settings):
        return {}, None
    return settings[0], all(n.config.host.forwarding for n in nodes)
