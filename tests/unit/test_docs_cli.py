"""The command lines the docs show exist: every ``pfha`` command and option README.md and the
docs/ pages name is one the parser has, every argument says what it is in ``--help``, and the
small CLI fixes a user's pass over the docs asked for stay fixed."""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import pytest

from pfha.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]
PAGES = ["README.md"] + [f"docs/{name}.md" for name in (
    "architecture", "configuration", "engine", "dataplane", "fidelity", "carp", "sync", "node",
    "node-config", "lab", "audit")]


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(name)
    return None


def _documented_command_lines() -> list[tuple[str, str]]:
    """(page, command line) for each `pfha ...` in backquotes or at the start of a code line;
    `a | b` alternatives become separate lines (`pfha lab up | status` -> `pfha lab status`)."""
    found = []
    for page in PAGES:
        text = (REPO / page).read_text()
        lines = re.findall(r"`(pfha [^`]+)`", text)
        in_block = False
        for line in text.splitlines():
            if line.startswith("```"):
                in_block = not in_block
            elif in_block and line.strip().startswith("pfha "):
                lines.append(line.strip())
        for line in lines:
            line = re.split(r"\s+#\s", line)[0]
            pieces = re.split(r"\s\|\s", line)
            head = pieces[0].split()[:2]  # pfha COMMAND
            for piece in pieces:
                found.append((page, piece if piece.startswith("pfha ") else " ".join(head + [piece])))
    return found


def _chain(words: list[str]) -> tuple[list[argparse.ArgumentParser], list[str]]:
    """The parsers a command line goes through (pfha, the command, its action ...)."""
    parser = build_parser(complete=True)
    chain, used = [parser], ["pfha"]
    for word in words:
        if word.startswith("-"):
            continue
        nested = _subparser(chain[-1], word)
        if nested is None:
            break
        chain.append(nested)
        used.append(word)
    return chain, used


DOCUMENTED = _documented_command_lines()


def test_the_docs_show_command_lines():
    assert len(DOCUMENTED) > 40


@pytest.mark.parametrize("page,line", DOCUMENTED, ids=[f"{p}:{l[:50]}" for p, l in DOCUMENTED])
def test_documented_commands_and_options_exist(page, line):
    words = line.split()[1:]
    chain, used = _chain(words)
    assert len(used) > 1, f"{page}: {line!r}: no such command {words[0]!r}"
    known = {option for parser in chain for option in _options(parser)}
    options = re.findall(r"(?<![\w=/-])(--?[A-Za-z][\w-]*)", line)
    unknown = [o for o in options if o not in known]
    assert not unknown, f"{page}: {line!r}: {' '.join(used)} has no {unknown}"


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _arguments(parser: argparse.ArgumentParser, path: list[str]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, nested in action.choices.items():
                yield from _arguments(nested, path + [name])
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield " ".join(path), action


def test_every_argument_has_help_text():
    """`pfha lab fail --help` once showed a bare `host`: every option and operand says what it is."""
    bare = [f"{path} {action.option_strings or action.dest}"
            for path, action in _arguments(build_parser(complete=True), ["pfha"]) if not action.help]
    assert not bare


@pytest.mark.parametrize("argv,name", [
    (["lab", "status"], "tut"),
    (["lab", "--name", "x", "status"], "x"),
    (["lab", "status", "--name", "y"], "y"),
    (["lab", "up", "--name", "y", "--config", "as-published"], "y"),
    (["lab", "fail", "fw1", "--name", "z", "--how", "link"], "z"),
    (["lab", "--name", "x", "down"], "x"),
    (["lab", "down", "--name", "w"], "w"),
])
def test_lab_name_goes_before_or_after_the_action(argv, name):
    """docs/lab.md writes `pfha lab up [--name NAME]`, the help `pfha lab [--name NAME] ACTION`:
    both work."""
    assert build_parser().parse_args(argv).name == name


def test_lab_exec_keeps_name_like_words_for_the_command():
    args = build_parser().parse_args(["lab", "exec", "fw1", "--", "ip", "--name", "x"])
    assert args.name == "tut" and args.cmd[-3:] == ["ip", "--name", "x"]


def test_carp_status_skips_other_json_files_of_a_run_directory(tmp_path, capsys):
    """A node's run directory holds carp.json beside sync.json (whose "node" is an id string)
    and ruleset metadata (no pid): `pfha carp status --status-dir` reads the CARP one and never
    dies with a traceback on the others."""
    group = {"vhid": 1, "interface": "xl0", "state": "MASTER", "advbase": 1, "advskew": 0,
             "addresses": ["203.0.113.10/24"], "stats": {"hmac": 2}}
    (tmp_path / "carp.json").write_text(json.dumps(
        {"pid": os.getpid(), "updated": 0, "node": {"demotion": 0, "demotion_reasons": {}, "groups": [group]}}))
    (tmp_path / "sync.json").write_text(json.dumps({"pid": os.getpid(), "node": "ab1599f0", "state": "running"}))
    (tmp_path / "ruleset-4026532314.json").write_text(json.dumps({"rules": [], "tables": []}))
    (tmp_path / "list.json").write_text("[1, 2]")
    assert main(["carp", "status", "--status-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "xl0: carp: MASTER vhid 1 advbase 1 advskew 0", "\tinet 203.0.113.10/24 vhid 1", "\tdropped: hmac 2"]
    assert main(["carp", "status", "--status-dir", str(tmp_path), "--json"]) == 0
    assert [s["node"]["groups"][0]["vhid"] for s in json.loads(capsys.readouterr().out)] == [1]


def test_lab_probe_target_mistakes_are_one_line_errors():
    """`pfha lab probe client tcp:1.2.3` once printed the probe child's traceback."""
    from pfha.lab.build import LabError, _target

    assert str(_target("tcp:192.168.1.80:25")) == "tcp:192.168.1.80:25"
    for bad in ("tcp:1.2.3", "tcp:1.2.3.4:http", "sctp:1.2.3.4:9", "icmp:1.2.3.4:7"):
        with pytest.raises(LabError) as raised:
            _target(bad)
        assert "\n" not in str(raised.value) and bad in str(raised.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="pfha lab up refuses non-root before it reads --config")
def test_lab_up_with_a_wrong_config_fails_before_building(tmp_path, monkeypatch):
    """`pfha lab up --config DIR` with a DIR that is not a config once built 12 namespaces and
    started their services before saying so."""
    from pfha.lab import build

    def no_building(*_args, **_kwargs):
        raise AssertionError("the lab was built before --config was checked")

    monkeypatch.setattr(build, "build", no_building)
    name = f"dq{os.getpid() % 100000}"
    with pytest.raises(build.LabError, match="not as-published, corrected or a directory"):
        build.up(name, config=str(tmp_path / "missing"))
    assert not build.state_dir(name).exists()
