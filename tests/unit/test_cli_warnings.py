"""Warnings grouped for people: each distinct message once, with the places it applies to."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfha.cli import main as cli
from pfha.warning_groups import format_places, group_warnings, split, warning_lines
from pfha.nft.compile import Warning

REPO = Path(__file__).resolve().parents[2]
IFS = ["--if", "em0=192.0.2.1/24", "--if", "em1=10.0.0.1/16", "--if", "lo0=127.0.0.1/8"]
MODULATE = "modulate state: compiled as keep state (Linux randomises ISNs)"


def test_a_warning_given_once_prints_exactly_as_before():
    lone = [Warning(MODULATE, "r.conf:12"), Warning("no place at all"), "r.conf:9: overload flush: no flusher"]
    assert warning_lines(lone) == [str(w) for w in lone]


def test_repeats_become_one_line_with_the_first_places_and_a_count():
    warnings = [Warning(MODULATE, f"/tmp/r.conf:{n}") for n in range(10008, 10008 + 12 * 1666, 12)]
    (line,) = warning_lines(warnings)
    assert line == f"/tmp/r.conf:10008, 10020, 10032 and 1,663 more lines: {MODULATE}"


def test_one_line_per_distinct_message_in_order_of_first_occurrence():
    warnings = [Warning("b", "f:1"), Warning("a", "f:2"), Warning("b", "f:3"), Warning("a", "f:4"), Warning("c")]
    assert warning_lines(warnings) == ["f:1, 3: b", "f:2, 4: a", "c"]


def test_verbose_is_every_occurrence_unchanged():
    warnings = [Warning("b", "f:1"), Warning("b", "f:1"), "g:2: b", Warning("c")]
    assert warning_lines(warnings, verbose=True) == ["f:1: b", "f:1: b", "g:2: b", "c"]


def test_places_name_the_file_again_only_when_it_changes():
    assert format_places(["a.conf:3", "a.conf:9", "b.conf:4", "b.conf:5", "b.conf:6"]) == \
        "a.conf:3, 9, b.conf:4 and 2 more lines"
    assert format_places(["a.conf:3", "a.conf:9", "a.conf:12", "a.conf:15"]) == "a.conf:3, 9, 12, 15"  # never "1 more"


def test_the_same_place_twice_is_one_place():
    warnings = [Warning(MODULATE, "r.conf:7")] * 4  # one line of lists, expanded into four rules
    assert warning_lines(warnings) == [f"r.conf:7: {MODULATE}"]
    assert group_warnings(warnings)[0].occurrences == 4


def test_strings_are_read_as_file_line_message():
    assert split("/etc/pf.conf:42: overload flush: no flusher") == ("/etc/pf.conf:42", "overload flush: no flusher")
    assert split("-o profile needs counters: optimizing as -o basic") == ("", "-o profile needs counters: optimizing as -o basic")
    assert split(Warning("m: with colon", "x:1")) == ("x:1", "m: with colon")


_where = st.builds(lambda f, n: f"{f}:{n}", st.sampled_from(["a.conf", "/tmp/b c.conf"]), st.integers(1, 60))
_warning = st.builds(Warning, st.sampled_from(["one", "two: detail", "three (x)"]), st.one_of(st.just(""), _where))


@settings(max_examples=200, deadline=None)
@given(st.lists(_warning, max_size=40))
def test_grouping_loses_nothing(warnings):
    groups = group_warnings(warnings)
    assert [g.message for g in groups] == list(dict.fromkeys(w.message for w in warnings))
    assert sum(g.occurrences for g in groups) == len(warnings)
    for group in groups:
        placed = [w.where for w in warnings if w.message == group.message and w.where]
        assert group.places == tuple(dict.fromkeys(placed))
    lines = warning_lines(warnings)
    assert len(lines) == len(groups)
    for line, group in zip(lines, groups):
        assert line.endswith(group.message)
        if group.places:
            assert line.startswith(group.places[0])


def _generated(tmp_path: Path, rules: int) -> Path:
    spec = importlib.util.spec_from_file_location("bench_conf_for_test", REPO / "bench" / "bench_conf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = tmp_path / "r.conf"
    path.write_text(module.ruleset_text(rules, lists=True))
    return path


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    return _generated(tmp_path_factory.mktemp("warnings"), 1_500)


def test_pfha_load_n_prints_each_distinct_warning_once(generated, capsys):
    assert cli.main(["load", "-n", str(generated), *IFS]) == 0
    grouped = capsys.readouterr().err.splitlines()
    assert cli.main(["load", "-n", "-v", str(generated), *IFS]) == 0
    every = capsys.readouterr().err.splitlines()
    messages = {split(line.removeprefix("pfha: warning: "))[1] for line in every}
    assert len(every) > 200  # the generated rules do earn many repeats
    assert len(grouped) == len(messages) == 5
    assert all(line.startswith("pfha: warning: ") for line in grouped + every)
    repeated = next(line for line in grouped if "modulate state" in line)
    assert "more lines: modulate state: compiled as keep state" in repeated
    modulate = [line for line in every if "modulate state" in line]
    count = int(repeated.split(" and ")[1].split(" more")[0].replace(",", "")) + 3
    assert count == len(modulate)
    assert repeated.startswith(modulate[0].split(": modulate")[0])  # the first place, as -v prints it
