"""Pair consistency: each check fails on a pair with the mistake and passes on the good pair."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pfha.audit.findings import Severity
from pfha.audit.pair import check_pair

from audit_helpers import GOOD_PF, make_pair


def checks(tmp_path, **kwargs):
    a, b = make_pair(tmp_path, **kwargs)
    return check_pair(a, b)


def test_good_pair_is_consistent(tmp_path):
    assert checks(tmp_path) == []


def test_equal_advskew_leaves_the_master_to_chance(tmp_path):
    findings = checks(tmp_path, skew=0)
    assert {f.check for f in findings} == {"pair.carp-advskew"}
    first = findings[0]
    assert first.severity == Severity.ERROR
    assert first.place.file.endswith("fw2.toml") and first.place.line is not None
    assert "set advskew = 100" in first.fix and "vhid = 1" in first.fix
    assert first.related[0].file.endswith("fw1.toml")


def test_split_preference_across_vhids(tmp_path):
    a, b = make_pair(tmp_path)
    # fw1 (advskew 0) is preferred on vhid 1; with advskew 200 on vhid 2, fw2 (100) wins there.
    carp = (a.config.carp[0], replace(a.config.carp[1], advskew=200))
    a = replace(a, config=replace(a.config, carp=carp))
    findings = check_pair(a, b)
    assert [f.check for f in findings] == ["pair.carp-split"]
    assert "vhid 1: fw1, vhid 2: fw2" in findings[0].message


def test_different_passwords(tmp_path):
    (finding, *_) = checks(tmp_path, password="other")
    assert finding.check == "pair.carp-password" and finding.severity == Severity.ERROR


def test_different_carp_addresses(tmp_path):
    findings = checks(tmp_path, edit_b=lambda t: t.replace('"192.0.2.10/24"', '"192.0.2.11/24"'))
    (finding,) = [f for f in findings if f.check == "pair.carp-addresses"]
    assert "fw1 only: 192.0.2.10/24" in finding.message and "fw2 only: 192.0.2.11/24" in finding.message


def test_vhid_on_one_node_only(tmp_path):
    def drop_vhid2(text):
        return text[: text.rindex("[[carp.group]]")] + text[text.index("[sync]"):]
    findings = checks(tmp_path, edit_b=drop_vhid2)
    assert [f.check for f in findings] == ["pair.carp-vhid"]
    assert findings[0].place.file.endswith("fw1.toml")


def test_vip_outside_the_parents_subnet(tmp_path):
    findings = checks(tmp_path, edit_b=lambda t: t.replace('"10.1.1.1/24"', '"10.7.7.1/24"'))
    assert "pair.carp-subnet" in {f.check for f in findings}


def test_preempt_missing_on_one_node(tmp_path):
    (finding,) = checks(tmp_path, preempt=False)
    assert finding.check == "pair.carp-preempt" and finding.nodes == ("fw2",)
    assert finding.place.line is not None and "preempt = true" in finding.fix


@pytest.mark.parametrize("edit,check", [
    (lambda t: t.replace('peer = "10.9.9.2"', 'peer = "10.9.9.9"'), "pair.sync-peer"),
    (lambda t: t.replace('key = "k3y"', 'key = "other"'), "pair.sync-key"),
    (lambda t: t.replace('key = "k3y"\n', ""), "pair.sync-key"),
    (lambda t: t[: t.index("[sync]")] + t[t.index("[host]"):], "pair.sync-missing"),
    (lambda t: t.replace('"10.9.9.3/24"', '"10.8.8.3/24"').replace('peer = "10.9.9.2"', 'peer = "10.9.9.2"'),
     "pair.sync-subnet"),
])
def test_sync_disagreements(tmp_path, edit, check):
    findings = checks(tmp_path, edit_b=edit)
    assert check in {f.check for f in findings}, findings


def test_sync_key_files_compared_by_content(tmp_path):
    (tmp_path / "k1").write_text("same")
    (tmp_path / "k2").write_text("same")
    a, b = make_pair(tmp_path, edit_b=lambda t: t.replace('key = "k3y"', 'key_file = "k2"'))
    a = replace(a, config=replace(a.config, sync=replace(a.config.sync, key=None, key_file=tmp_path / "k1")))
    assert check_pair(a, b) == []
    (tmp_path / "k2").write_text("different")
    assert [f.check for f in check_pair(a, b)] == ["pair.sync-key"]


def test_subnets_and_duplicate_addresses(tmp_path):
    findings = checks(tmp_path, edit_b=lambda t: t.replace('"10.1.1.3/24"', '"10.1.2.3/24"'))
    assert "pair.subnet" in {f.check for f in findings}
    findings = checks(tmp_path / "d", edit_b=lambda t: t.replace('"10.1.1.3/24"', '"10.1.1.2/24"'))
    assert "pair.address-duplicate" in {f.check for f in findings}


def test_different_rulesets(tmp_path):
    a, b = make_pair(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "pf.conf").write_text(GOOD_PF.replace("port 443", "port 8443"))
    b = replace(b, pf_conf=other / "pf.conf")
    (finding,) = check_pair(a, b)
    first_difference = next(i for i, line in enumerate(GOOD_PF.splitlines(), 1) if "port 443" in line)
    assert finding.check == "pair.pf-conf" and finding.place.line == first_difference


def test_same_name(tmp_path):
    findings = checks(tmp_path, edit_b=lambda t: t.replace('name = "fw2"', 'name = "fw1"'))
    assert [f.check for f in findings] == ["pair.name"]


def test_tutorial_pair(shared):
    from pfha.audit.nodes import discover

    published = discover([shared / "seed" / "configs" / "as-published"])
    findings = check_pair(*published)
    assert [(f.check, f.place.line) for f in findings] == [
        ("pair.carp-advskew", 30), ("pair.carp-advskew", 38), ("pair.carp-advskew", 44)]
    assert all(f.place.file.endswith("rc.conf.secondary") for f in findings)
    assert "add 'advskew 100' on ifconfig_carp0" in findings[0].fix
    corrected = discover([shared / "seed" / "configs" / "corrected"])
    assert check_pair(*corrected) == []


def test_toml_origins_point_at_each_part(tmp_path):
    from pfha.audit.nodes import toml_origins

    a, _ = make_pair(tmp_path)
    lines = a.path.read_text().splitlines()
    origins = toml_origins(a.path.read_text(), str(a.path))
    assert lines[origins["carp.group[1]"].line - 1] == "[[carp.group]]"
    assert lines[origins["carp.group[1].advskew"].line - 1] == "advskew = 0"
    assert lines[origins["sync"].line - 1] == "[sync]"
    assert lines[origins["interfaces.int0"].line - 1] == "[interfaces.int0]"
    assert lines[origins["node.pf_conf"].line - 1].startswith("pf_conf")
