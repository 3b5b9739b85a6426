"""sshd and hosts.allow against what pf lets in, on the tutorial's own files."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pfha.audit import crosscheck
from pfha.audit.host import HostTree
from pfha.audit.lint import lint_node
from pfha.audit.nodes import discover

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tutorial-host"


@pytest.fixture
def tree(tmp_path) -> HostTree:
    shutil.copytree(FIXTURE, tmp_path / "root")
    return HostTree(tmp_path / "root")


@pytest.fixture
def primary(shared):
    node = discover([shared / "seed" / "configs" / "as-published"])[0]
    _, ruleset = lint_node(node)
    return node, ruleset


def edit(tree, name, old, new):
    path = tree.path(name)
    path.write_text(path.read_text().replace(old, new))


def findings(tree, primary, check):
    node, ruleset = primary
    return [f for f in crosscheck.check(tree, node, ruleset) if f.check == check]


def test_sshd_listens_where_pf_does_not_let_ssh_in(tree, primary):
    refused, unreachable = findings(tree, primary, "host.sshd-listen")
    assert refused.place.line == 4 and "203.0.113.10 port 8081" in refused.message
    assert refused.related[0].line == 56
    assert refused.example == ("in on xl0: tcp 198.51.100.200:40000 > 203.0.113.10:8081 [S] is passed by pf.conf:56 "
                               "and refused by sshd")
    assert "sshd listens on 192.168.1.1 port 8081, but pf passes no ssh to it on xl1" in unreachable.message
    assert unreachable.example.endswith("is blocked by pf.conf line 53")


def test_sshd_listening_everywhere_is_consistent(tree, primary):
    edit(tree, "/etc/ssh/sshd_config", "ListenAddress 192.168.1.1", "#ListenAddress 192.168.1.1")
    assert findings(tree, primary, "host.sshd-listen") == []


def test_hosts_allow_denies_the_admin_host_pf_lets_in(tree, primary):
    (finding,) = findings(tree, primary, "host.hosts-allow-ssh")
    assert finding.place.line == 4 and "198.51.100.200" in finding.message
    assert "192.168.1.0/255.255.255.0" in finding.message
    edit(tree, "/etc/hosts.allow", "sshd : 192.168.1.0/255.255.255.0 : allow",
         "sshd : 192.168.1.0/255.255.255.0 198.51.100.200/255.255.255.255 : allow")
    assert findings(tree, primary, "host.hosts-allow-ssh") == []


def test_no_sshd_no_crosscheck(tree, primary):
    tree.path("/etc/ssh/sshd_config").unlink()
    node, ruleset = primary
    assert crosscheck.check(tree, node, ruleset) == []
