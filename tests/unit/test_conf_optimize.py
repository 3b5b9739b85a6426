"""pfctl's ruleset optimizer (conf.optimize): expectations worked out by hand from
FreeBSD's sbin/pfctl/pfctl_optimize.c, and a property: the optimized ruleset decides every
packet as the original does (reference engine)."""

from __future__ import annotations

import io
import itertools
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pfha.cli import pfctl
from pfha.conf import InterfaceView, parse_text
from pfha.conf.optimize import (
    TABLE_THRESHOLD,
    default_is_group,
    format_optimized,
    optimize,
    resolve_level,
    ruleset_level,
)
from pfha.conf.printer import format_rule, format_ruleset, format_table
from pfha.engine import Engine
from pfha.engine import packet as P

VIEW = InterfaceView.from_specs(["em0=192.0.2.1/24", "em1=198.51.100.1/24", "lo0=127.0.0.1/8"])


def rules_of(text: str, level: str = "basic", **kw) -> list[str]:
    result = optimize(parse_text(text, "pf.conf", VIEW), level, is_group=default_is_group(VIEW), **kw)
    return [format_rule(r, verbose=2) for r in result.ruleset.filter]


def nv(text: str, level: str | None = "basic", **kw) -> str:
    result = optimize(parse_text(text, "pf.conf", VIEW), level, is_group=default_is_group(VIEW), **kw)
    return format_optimized(result, verbose=1)


# ------------------------------------------------------------------------------- pass 1
def test_identical_rules_are_removed_later_copy_goes():
    text = "pass in on em0 proto tcp to 10.0.0.1 port 22\n" * 3
    assert rules_of(text) == ["@0 pass in on em0 inet proto tcp from any to 10.0.0.1 port = ssh flags S/SA keep state"]


def test_a_subset_rule_is_removed_whichever_comes_first():
    # exclude_supersets: 10.1.2.0/24 is inside 10.1.0.0/16, everything else equal
    later = "block in on em0 from 10.1.0.0/16\nblock in on em0 from 10.1.2.0/24\n"
    assert rules_of(later) == ["@0 block drop in on em0 inet from 10.1.0.0/16 to any"]
    earlier = "block in on em0 from 10.1.2.0/24\nblock in on em0 from 10.1.0.0/16\n"
    assert rules_of(earlier) == ["@0 block drop in on em0 inet from 10.1.0.0/16 to any"]
    # no interface, no direction, no protocol, any address: the superset of them all
    assert rules_of("block in all\nblock in on em0 proto tcp from 10.1.0.0/16 to any port 80\n") == [
        "@0 block drop in all"]
    # flags any is a superset of flags S/SA for the same protocol
    assert rules_of("pass in proto tcp flags any\npass in proto tcp\n") == [
        "@0 pass in proto tcp all flags any keep state"]


def test_rules_differing_in_a_nomerge_field_are_both_kept():
    text = "pass in on em0 proto tcp to 10.0.0.1 port 22\npass out on em0 proto tcp to 10.0.0.1 port 22\n"
    assert len(rules_of(text)) == 2


# ------------------------------------------------------------------------------- pass 2
SIX = "".join(f"pass in on em0 proto tcp from any to 10.0.0.{i} port 22\n" for i in range(1, 7))


def test_six_rules_differing_only_in_an_address_become_one_table():
    assert nv(SIX) == (
        "table <__automatic_0> const { 10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6 }\n"
        "pass in on em0 inet proto tcp from any to <__automatic_0> port = ssh flags S/SA keep state\n"
    )
    assert TABLE_THRESHOLD == 6


def test_five_are_not_combined_but_use_up_a_temporary_table_name():
    # add_opt_table() numbers every table it starts: the 5-rule one took __automatic_0
    five = "".join(f"pass in on em0 proto tcp from any to 10.0.0.{i} port 22\n" for i in range(1, 6))
    six_src = "".join(f"block in quick proto udp from 192.168.0.{i} to any port 53\n" for i in range(1, 7))
    assert nv(five + six_src).splitlines() == [
        "table <__automatic_1> const { 192.168.0.1 192.168.0.2 192.168.0.3 192.168.0.4 192.168.0.5 192.168.0.6 }",
        *[f"pass in on em0 inet proto tcp from any to 10.0.0.{i} port = ssh flags S/SA keep state" for i in range(1, 6)],
        "block drop in quick inet proto udp from <__automatic_1> to any port = domain",
    ]


def test_kernel_table_names_carry_the_random_identifier():
    twice = SIX + "".join(f"block in quick proto udp from 192.168.0.{i} to any port 53\n" for i in range(1, 7))
    result = optimize(parse_text(twice, "pf.conf", VIEW), "basic", identifier=0xDEADBEEF)
    assert [t.name for t in result.tables] == ["__automatic_deadbeef_0", "__automatic_deadbeef_1"]
    assert [t.name for t in result.ruleset.tables] == ["__automatic_deadbeef_0", "__automatic_deadbeef_1"]
    assert all(t.const for t in result.tables)
    from pfha.conf.optimize import stable_identifier

    assert stable_identifier(twice) == stable_identifier(twice) != stable_identifier(SIX)
    # a name already used by the ruleset is not taken again
    taken = "table <__automatic_deadbeef_0> { 10.9.9.9 }\n" + SIX
    again = optimize(parse_text(taken, "pf.conf", VIEW), "basic", identifier=0xDEADBEEF, reroll=lambda: 0xABC)
    assert [t.name for t in again.tables] == ["__automatic_abc_0"]


def test_table_lines_print_before_the_filter_rules_after_nat():
    text = "nat on em0 from 10.0.0.0/8 to any -> 192.0.2.1\n" + SIX
    assert nv(text).splitlines()[:3] == [
        "nat on em0 inet from 10.0.0.0/8 to any -> 192.0.2.1",
        "table <__automatic_0> const { 10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6 }",
        "pass in on em0 inet proto tcp from any to <__automatic_0> port = ssh flags S/SA keep state",
    ]


def test_combined_rules_must_agree_on_ports_and_negation():
    # ten rules: five per port, so neither port gathers six
    mixed = "".join(f"pass in on em0 proto tcp from any to 10.0.0.{i} port {22 if i % 2 else 80}\n" for i in range(1, 11))
    assert not any("__automatic_" in line for line in rules_of(mixed))
    negated = "".join(f"block in on em0 from {'! ' if i % 2 else ''}10.0.0.{i} to any\n" for i in range(1, 11))
    assert not any("__automatic_" in line for line in rules_of(negated))
    # twelve: six per port, two tables
    twelve = "".join(f"pass in on em0 proto tcp from any to 10.0.0.{i} port {22 if i % 2 else 80}\n" for i in range(1, 13))
    assert [r.split(" to ")[1] for r in rules_of(twelve)] == [
        "<__automatic_0> port = ssh flags S/SA keep state", "<__automatic_1> port = http flags S/SA keep state"]


# ------------------------------------------------------------------------------- barriers
@pytest.mark.parametrize("option", [
    'label "x"', "probability 50%", "keep state (max 10)", "keep state (max-src-conn 5)",
    "keep state (max-src-states 5)", "keep state (max-src-nodes 5)", "keep state (source-track rule)",
])
def test_barrier_fields_keep_rules_out_of_every_pass(option):
    text = "".join(f"pass in on em0 proto tcp to 10.0.0.{i} port 22 {option}\n" for i in range(1, 7))
    text += f"pass in on em0 proto tcp to 10.0.0.1 port 22 {option}\n"  # a duplicate, kept too
    result = rules_of(text)
    assert len(result) == 7 and not any("__automatic_" in r for r in result)
    assert [r.split(" ", 1)[0] for r in result] == [f"@{i}" for i in range(7)]


def test_quick_and_non_quick_rules_are_never_merged():
    text = "pass in quick on em0 proto tcp to 10.0.0.1 port 22\npass in on em0 proto tcp to 10.0.0.1 port 22\n"
    assert len(rules_of(text)) == 2
    text = "".join(f"pass in {'quick ' if i % 2 else ''}on em0 proto tcp to 10.0.0.{i} port 22\n" for i in range(1, 13))
    assert not any("__automatic_" in line for line in rules_of(text))


def test_interface_groups_break_superblocks():
    # block on a group, pass on one interface: pfctl may not move the pass before the block
    text = "block in on egress proto tcp to port 22\nblock in on em0 proto tcp to port 22\n"
    result = optimize(parse_text(text, "pf.conf", VIEW), "basic", is_group=lambda n: n == "egress")
    assert len(result.ruleset.filter) == 2
    same = optimize(parse_text(text.replace("egress", "em1"), "pf.conf", VIEW), "basic", is_group=lambda n: False)
    assert len(same.ruleset.filter) == 2  # different interfaces: not a subset either
    assert default_is_group(VIEW)("egress") and not default_is_group(VIEW)("em0") and default_is_group(VIEW)("em")


# ------------------------------------------------------------------------------- pass 3
def test_reorder_by_skip_steps_two_by_two():
    # ifp has two lists of 2 (em1: B C, em0: A D) and wins the tie (first dimension); lists of
    # 2 stay in the superblock: B C, then A D
    text = ("pass in on em0 proto tcp to 10.0.0.1 port 80\n"
            "pass out on em1 proto udp to 10.0.0.2 port 53\n"
            "pass in on em1 proto tcp to 10.0.0.3 port 80\n"
            "pass out on em0 proto udp to 10.0.0.4 port 53\n")
    assert [r.split(" to ")[1].split(" ")[0] for r in rules_of(text)] == ["10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.4"]


def test_reorder_splits_off_a_superblock_of_three():
    # em1 holds 3 rules (> 2): split off and reordered on its own (tcp C E, then A), placed
    # before what is left (B D on em0, gathered as a list of 2)
    text = ("pass out on em1 proto udp to 1.2.3.4 port 53\n"    # A
            "pass out on em0 proto tcp to 1.2.3.4 port 80\n"    # B
            "pass out on em1 proto tcp to 1.2.3.5 port 80\n"    # C
            "pass out on em0 proto udp to 1.2.3.6 port 53\n"    # D
            "pass out on em1 proto tcp to 1.2.3.7 port 443\n")  # E
    assert rules_of(text) == [
        "@0 pass out on em1 inet proto tcp from any to 1.2.3.5 port = http flags S/SA keep state",
        "@1 pass out on em1 inet proto tcp from any to 1.2.3.7 port = https flags S/SA keep state",
        "@2 pass out on em1 inet proto udp from any to 1.2.3.4 port = domain keep state",
        "@3 pass out on em0 inet proto tcp from any to 1.2.3.4 port = http flags S/SA keep state",
        "@4 pass out on em0 inet proto udp from any to 1.2.3.6 port = domain keep state",
    ]


def test_nothing_in_common_keeps_the_order():
    text = "pass in on em0 proto tcp to 10.0.0.1 port 22\npass out on em1 proto udp to 10.0.0.2 port 53\n"
    assert [r.split(" ", 2)[2] for r in rules_of(text)] == [
        "in on em0 inet proto tcp from any to 10.0.0.1 port = ssh flags S/SA keep state",
        "out on em1 inet proto udp from any to 10.0.0.2 port = domain keep state"]


# ------------------------------------------------------------------------------- anchors
def test_anchors_are_barriers_and_their_bodies_are_optimized_on_their_own():
    three = "".join(f"block in proto tcp from 10.0.0.{i} to any port 22\n" for i in range(1, 4))
    body = "".join(f"  block in proto tcp from 10.0.1.{i} to any port 22\n" for i in range(1, 7))
    text = three + 'anchor "inner" {\n' + body + "}\n" + three.replace("10.0.0.", "10.0.2.")
    out = nv(text)
    # six rules around the anchor never make a table (the anchor splits the superblocks); the
    # body's six do, printed after its "{" line, and its rules renumber from 0
    assert out.splitlines()[3:6] == [
        'anchor "inner" all {',
        "table <__automatic_2> const { 10.0.1.1 10.0.1.2 10.0.1.3 10.0.1.4 10.0.1.5 10.0.1.6 }",
        "  block drop in inet proto tcp from <__automatic_2> to any port = ssh",
    ]
    result = optimize(parse_text(text, "pf.conf", VIEW), "basic")
    assert [r.number for r in result.ruleset.filter] == list(range(7))
    assert result.ruleset.filter[3].ruleset.filter[0].number == 0
    assert result.ruleset.table("__automatic_2") is not None  # defined where loading started


def test_translation_rules_are_never_touched():
    text = "".join(f"nat on em0 from 10.0.0.{i} to any -> 192.0.2.1\n" for i in range(1, 8))
    text += "nat on em0 from 10.0.0.1 to any -> 192.0.2.1\n"
    ruleset = parse_text(text, "pf.conf", VIEW)
    assert optimize(ruleset, "basic").ruleset.translation == ruleset.translation


# ------------------------------------------------------------------------------- levels
def test_levels_command_line_first_then_the_file_first_setting():
    text = "set ruleset-optimization none\nset ruleset-optimization basic\n" + SIX
    ruleset = parse_text(text, "pf.conf", VIEW)
    assert ruleset_level(ruleset) == "none" and ruleset_level(ruleset, "basic") == "basic"
    assert optimize(ruleset).ruleset is ruleset
    assert ruleset_level(parse_text(SIX, "pf.conf", VIEW)) == "basic"
    assert [resolve_level(t) for t in ("n", "b", "p", "prof", "x", "")] == ["none", "basic", "profile", "profile", None, None]


def test_profile_without_counters_warns_and_acts_as_basic():
    result = optimize(parse_text(SIX, "pf.conf", VIEW), "profile")
    assert result.warnings and "basic" in result.warnings[0]
    assert len(result.ruleset.filter) == 1


def test_profile_orders_quick_superblocks_by_the_running_counters():
    text = ("pass in quick on em0 proto tcp to 10.0.0.1 port 22\n"
            "pass in quick on em0 proto tcp to 10.0.0.2 port 80\n"
            "pass in quick on em0 proto tcp to 10.0.0.3 port 443\n")
    ruleset = parse_text(text, "pf.conf", VIEW)
    running = list(zip(ruleset.filter, (5, 100, 20)))
    order = [r.dst.port.low for r in optimize(ruleset, "profile", profile=running).ruleset.filter]
    assert order == [80, 443, 22]
    # no running counters for a rule: it keeps its place after the counted ones (stable)
    assert [r.dst.port.low for r in optimize(ruleset, "profile", profile=[]).ruleset.filter] == [22, 80, 443]


# ------------------------------------------------------------------------------- pfctl
def run_pfctl(tmp_path, text: str, *flags: str) -> str:
    path = tmp_path / "pf.conf"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    status = pfctl.run([*flags, "-nvf", str(path), "--if", "em0=192.0.2.1/24", "--if", "em1=198.51.100.1/24"], out, err)
    assert status == 0, err.getvalue()
    return out.getvalue()


def test_pfctl_optimizes_by_default_and_o_none_does_not(tmp_path):
    assert "<__automatic_0>" in run_pfctl(tmp_path, SIX)
    assert "<__automatic_0>" in run_pfctl(tmp_path, SIX, "-o", "basic")
    plain = run_pfctl(tmp_path, SIX, "-o", "none")
    assert plain == format_ruleset(parse_text(SIX, "pf.conf", VIEW), messages=False)
    assert "automatic" not in run_pfctl(tmp_path, "set ruleset-optimization none\n" + SIX)
    assert "<__automatic_0>" in run_pfctl(tmp_path, "set ruleset-optimization none\n" + SIX, "-o", "b")


def test_pfctl_vv_numbers_are_the_optimized_ones(tmp_path):
    out = run_pfctl(tmp_path, "block in all\nblock in all\npass in on em0 proto tcp to port 22\n", "-vv")
    assert [line.split(" ")[0] for line in out.splitlines()] == ["@0", "@1"]


# ------------------------------------------------------------------------------- semantics
ADDRS = ["any", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "10.1.2.4", "192.168.0.1", "192.168.0.2", "! 10.1.0.0/16"]
HOSTS = ["10.1.2.3", "10.1.2.4", "10.9.9.9", "192.168.0.1", "192.168.0.2", "172.16.0.1"]


@st.composite
def rule_text(draw) -> str:
    action = draw(st.sampled_from(["pass", "block", "block return"]))
    parts = [action, draw(st.sampled_from(["", "in", "out"]))]
    parts.append(draw(st.sampled_from(["", "quick"])) if draw(st.integers(0, 3)) == 0 else "")
    parts.append(draw(st.sampled_from(["", "on em0", "on em1", "on ! em0"])))
    proto = draw(st.sampled_from(["", "tcp", "udp"]))
    if proto:
        parts.append(f"proto {proto}")
    src, dst = draw(st.sampled_from(ADDRS)), draw(st.sampled_from(ADDRS))
    port = draw(st.sampled_from(["", "22", "80"])) if proto else ""
    parts.append(f"from {src} to {dst}" + (f" port {port}" if port else ""))
    if action == "pass":
        parts.append(draw(st.sampled_from(["", "no state", "flags any"])))
    if draw(st.integers(0, 9)) == 0:
        parts.append('label "l"')
    return " ".join(p for p in parts if p)


@st.composite
def ruleset_text(draw) -> str:
    lines = draw(st.lists(rule_text(), min_size=1, max_size=10))
    for line in draw(st.lists(st.sampled_from(lines), max_size=4)):  # copies, and narrower copies
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, line.replace("from any", "from 10.1.2.0/24") if draw(st.booleans()) else line)
    if draw(st.booleans()):  # enough look-alikes to make a table
        template = draw(rule_text())
        if " to any" in template and " from any" not in template:
            lines.extend(template.replace(" to any", f" to 10.7.0.{i}") for i in range(1, TABLE_THRESHOLD + 2))
    return "\n".join(lines) + "\n"


PACKET = st.tuples(st.sampled_from(["em0", "em1"]), st.sampled_from(["in", "out"]), st.sampled_from(["tcp", "udp"]),
                   st.sampled_from(HOSTS + ["10.7.0.3"]), st.sampled_from(HOSTS + ["10.7.0.5"]),
                   st.sampled_from([22, 80, 443]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ruleset_text(), st.lists(PACKET, min_size=1, max_size=12))
def test_optimized_ruleset_decides_every_packet_as_the_original(text, packets):
    ruleset = parse_text(text, "pf.conf", VIEW)
    optimized = optimize(ruleset, "basic", is_group=default_is_group(VIEW)).ruleset
    before, after = Engine(ruleset, VIEW, seed=1), Engine(optimized, VIEW, seed=1)
    for n, (ifname, direction, proto, src, dst, dport) in enumerate(packets):
        sport = 40000 + n
        make = (lambda: P.tcp(src, sport, dst, dport, "S")) if proto == "tcp" else (lambda: P.udp(src, sport, dst, dport))
        a = before.process(make(), ifname, direction, 0)
        b = after.process(make(), ifname, direction, 0)
        assert a.action == b.action, (text, ifname, direction, proto, src, dst, dport, format_rule(b.rule.ast) if hasattr(b.rule, "ast") else b.rule)


PRIMARY = ["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "rl0=10.10.10.250/24",
           "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24", "lo0=127.0.0.1/8"]


@pytest.mark.parametrize("variant", ["as-published", "corrected"])
def test_tutorial_configs_change_as_worked_out(shared, variant):
    from pfha.conf import parse_file

    view = InterfaceView.from_specs(PRIMARY)
    ruleset = parse_file(str(shared / "seed" / "configs" / variant / "pf.conf"), view)
    result = optimize(ruleset, "basic", is_group=default_is_group(view))
    rules = result.ruleset.filter
    assert [r.number for r in rules] == list(range(len(rules)))
    assert not result.tables  # no six rules differ in one address only
    # the same rules, some moved inside their superblocks (none removed)
    assert sorted(map(format_rule, rules)) == sorted(map(format_rule, ruleset.filter))


def test_every_table_name_is_unique_and_prefixed():
    many = "".join(f"block in quick proto udp from 192.168.{j}.{i} to any port {53 + j}\n"
                   for j, i in itertools.product(range(3), range(1, 8)))
    result = optimize(parse_text(many, "pf.conf", VIEW), "basic")
    names = [t.name for t in result.tables]
    assert len(names) == 3 == len(set(names)) and all(n.startswith("__automatic_") for n in names)


def test_pfha_check_and_load_json_optimize_like_pfctl(tmp_path, capsys):
    import json

    from pfha.cli.main import main

    path = tmp_path / "pf.conf"
    path.write_text(SIX)
    specs = ["--if", "em0=192.0.2.1/24"]
    assert main(["check", str(path), "-v", *specs]) == 0
    assert "table <__automatic_0> const" in capsys.readouterr().out
    assert main(["check", str(path), "-v", "-o", "none", *specs]) == 0
    assert "automatic" not in capsys.readouterr().out
    assert main(["check", str(path), *specs]) == 0
    assert "(1 rules, 1 tables)" in capsys.readouterr().out
    assert main(["load", str(path), "--json", *specs]) == 0
    text = json.dumps(json.loads(capsys.readouterr().out))
    # one rule on a set holding the six addresses, not six rules
    assert text.count("10.0.0.6") == 1 and '"tbl0_v4"' in text


def test_fields_pfctl_does_not_list_keep_rules_in_separate_superblocks():
    # rtable, prio, set prio... are not in pf_rule_desc: never zeroed, so they act as BREAK
    # fields; the two em1 rules may not be gathered across the rtable 1 rule
    text = ("pass out on em1 proto tcp to 10.0.0.1 port 80\n"
            "pass out on em0 proto tcp to 10.0.0.2 port 80 rtable 1\n"
            "pass out on em1 proto tcp to 10.0.0.3 port 80\n")
    assert [r.split(" to ")[1].split(" ")[0] for r in rules_of(text)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    without = text.replace(" rtable 1", "")
    assert [r.split(" to ")[1].split(" ")[0] for r in rules_of(without)] == ["10.0.0.1", "10.0.0.3", "10.0.0.2"]


# ------------------------------------------------------------------------------- indexes
# The passes find their candidate pairs through indexes instead of comparing every pair as
# pfctl_optimize.c does; these check them against pfctl's pairwise loops, written out plainly.
from pfha.conf import optimize as O  # noqa: E402


def _superblocks(text: str) -> tuple[list, object]:
    ruleset = parse_text(text, "pf.conf", VIEW)
    ctx = O._Context("basic", O._Namer(None, (), None), default_is_group(VIEW))
    pors = [O._Por(r, i) if isinstance(r, O.Rule) else O._AnchorPor(r, i) for i, r in enumerate(ruleset.filter)]
    return O._construct_superblocks(pors, ctx), ctx


def _pairwise_remove_identical(block) -> None:
    """remove_identical_rules() as pfctl loops: every rule against every later one."""
    removed: set[int] = set()
    for i, por1 in enumerate(block.rules):
        if id(por1) in removed:
            continue
        for por2 in block.rules[i + 1:]:
            if id(por2) in removed:
                continue
            if O._subset_of(por2, por1):
                removed.add(id(por2))
            elif O._subset_of(por1, por2):
                removed.add(id(por1))
                break
    block.rules = [p for p in block.rules if id(p) not in removed]


def _pairwise_gather_tables(rules: list, ctx) -> set[int]:
    """combine_rules()'s first loop as pfctl has it: every rule against every later one."""
    removed: set[int] = set()

    def combineable(a, b, a_neg, b_neg, a_port, b_port):  # addrs_combineable() + its caller's checks
        return a[0] == "mask" and b[0] == "mask" and a_neg == b_neg and a_port == b_port

    for i, p1 in enumerate(rules):
        if id(p1) in removed:
            continue
        for p2 in rules[i + 1:]:
            if p2.src_tbl is not None or p2.dst_tbl is not None or id(p2) in removed:
                continue
            if p1.combine_key() != p2.combine_key():
                continue
            src_eq = p1.src == p2.src and p1.src_neg == p2.src_neg
            dst_eq = p1.dst == p2.dst and p1.dst_neg == p2.dst_neg
            if src_eq and not dst_eq and p1.src_tbl is None and combineable(
                    p1.dst, p2.dst, p1.dst_neg, p2.dst_neg, p1.dport, p2.dport):
                if p1.dst_tbl is None:
                    p1.dst_tbl = O._add_opt_table(ctx, None, p1.af, p1.rule.dst.host.address)
                O._add_opt_table(ctx, p1.dst_tbl, p1.af, p2.rule.dst.host.address)
                p2.dst_tbl = p1.dst_tbl
                if p1.dst_tbl.rulecount >= TABLE_THRESHOLD:
                    removed.add(id(p2))
            elif not src_eq and dst_eq and p1.dst_tbl is None and combineable(
                    p1.src, p2.src, p1.src_neg, p2.src_neg, p1.sport, p2.sport):
                if p1.src_tbl is None:
                    p1.src_tbl = O._add_opt_table(ctx, None, p1.af, p1.rule.src.host.address)
                O._add_opt_table(ctx, p1.src_tbl, p1.af, p2.rule.src.host.address)
                p2.src_tbl = p1.src_tbl
                if p1.src_tbl.rulecount >= TABLE_THRESHOLD:
                    removed.add(id(p2))
    return removed


def _pairwise_block_feedback(block) -> None:
    """block_feedback() as pfctl loops: each running rule against our rules; insertion sort."""
    for por1 in block.profiled.rules:
        key = por1.profile_key()[1]
        for por2 in block.rules:
            if not por2.profile_count and por2.profile_key()[1] == key:
                por2.profile_count = por1.profile_count
                break
    queue, block.rules = block.rules, []
    for por1 in queue:
        for at, por2 in enumerate(block.rules):
            if por1.profile_count > por2.profile_count:
                block.rules.insert(at, por1)
                break
        else:
            block.rules.append(por1)


def _outcome(blocks: list, tables: list) -> list:
    return ([[(p.seq, format_rule(p.rule)) for p in b.rules] for b in blocks],
            [format_table(t) for t in tables])


@st.composite
def indexed_text(draw) -> str:
    """Rulesets where a wrong index would show: copies, narrower copies, and runs of rules
    that differ in their source only or their destination only, of any length, interleaved."""
    lines = draw(ruleset_text()).splitlines()
    for _ in range(draw(st.integers(0, 3))):
        template = draw(rule_text())
        for field in (" to any", " from any"):
            if field in template:
                at = draw(st.integers(0, len(lines)))
                run = [template.replace(field, f"{field[:-4]} 10.7.{draw(st.integers(0, 1))}.{i}")
                       for i in range(1, draw(st.integers(2, 8)))]
                lines[at:at] = run
    return "\n".join(lines) + "\n"


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(indexed_text())
def test_indexed_passes_find_what_pfctls_pairwise_loops_find(text):
    (indexed, ctx), (pairwise, ctx2) = _superblocks(text), _superblocks(text)
    tables, tables2 = [], []
    for block, block2 in zip(indexed, pairwise):
        O._remove_identical_rules(block)
        _pairwise_remove_identical(block2)
        assert [p.seq for p in block.rules] == [p.seq for p in block2.rules], text
        tables += O._combine_rules(block, ctx)
        tables2 += O._generate_tables(block2, ctx2, _pairwise_gather_tables(block2.rules, ctx2))
    assert _outcome(indexed, tables) == _outcome(pairwise, tables2), text


def test_combine_takes_the_side_of_the_first_rule_that_combines():
    # rule 0 meets a rule with its destination (a source table) before one with its source
    first = "pass in on em0 proto tcp from 10.0.0.1 to 10.9.0.1 port 22\n"
    same_dst = "".join(f"pass in on em0 proto tcp from 10.0.0.{i} to 10.9.0.1 port 22\n" for i in range(2, 8))
    same_src = "".join(f"pass in on em0 proto tcp from 10.0.0.1 to 10.9.0.{i} port 22\n" for i in range(2, 8))
    dst_first = nv(first + same_dst + same_src)
    assert dst_first.startswith("table <__automatic_0> const { 10.0.0.1 10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 "
                                "10.0.0.6 10.0.0.7 }\n")
    src_first = nv(first + same_src + same_dst)
    assert src_first.startswith("table <__automatic_0> const { 10.9.0.1 10.9.0.2 10.9.0.3 10.9.0.4 10.9.0.5 "
                                "10.9.0.6 10.9.0.7 }\n")


def test_rules_on_tables_never_combine_and_an_earlier_free_rule_is_no_candidate():
    # destinations that are tables are no candidates (nor their rule a p1 for them); a rule
    # left without a table is not offered again to the rules after it
    tables = "".join(f"table <t{i}> {{ 10.8.0.{i} }}\n" for i in range(3))
    on_tables = "".join(f"pass in on em0 proto tcp from any to <t{i}> port 22\n" for i in range(3))
    plain = "".join(f"pass in on em0 proto tcp from any to 10.9.0.{i} port 22\n" for i in range(1, 7))
    out = nv(tables + on_tables + plain)
    assert out.count("<__automatic_0>") == 2 and "<__automatic_1>" not in out
    assert [line.split(" to ")[1].split(" ")[0] for line in out.splitlines() if line.startswith("pass")] == [
        "<t0>", "<t1>", "<t2>", "<__automatic_0>"]


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(indexed_text(), st.lists(st.sampled_from([0, 0, 1, 5, 100]), min_size=0, max_size=40))
def test_indexed_block_feedback_is_pfctls(text, counts):
    text = re.sub(r"(?m)^(pass|block(?: return)?)((?: in| out)?)(?: quick)?", r"\1\2 quick", text)
    ruleset = parse_text(text, "pf.conf", VIEW)
    running = list(zip(ruleset.filter, counts))
    (indexed, ctx), (pairwise, _) = _superblocks(text), _superblocks(text)
    O._load_feedback(indexed, running, ctx)
    O._load_feedback(pairwise, running, ctx)
    for block, block2 in zip(indexed, pairwise):
        if block.profiled is not None:
            O._block_feedback(block)
            _pairwise_block_feedback(block2)
        assert [p.seq for p in block.rules] == [p.seq for p in block2.rules], text
