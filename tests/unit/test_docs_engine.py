"""docs/engine.md's worked conversation is real: the scenario its block shows, run through
``pfha test`` on the tutorial's corrected ruleset, prints the lines the page prints, in order
(the page shortens the output, so its lines are a subsequence of what the command prints)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from pfha.cli.main import main

DOC = Path(__file__).resolve().parents[2] / "docs" / "engine.md"


def _worked_conversation() -> tuple[list[str], list[str]]:
    """(the documented command's arguments after `pfha`, the documented output lines)."""
    section = DOC.read_text().split("### A worked conversation", 1)[1]
    blocks = re.findall(r"```\n(.*?)```", section, re.S)
    command = shlex.split(blocks[0].replace("\\\n", " "))
    assert command[0] == "pfha"
    return command[1:], blocks[1].rstrip("\n").splitlines()


def test_the_worked_conversation_prints_what_the_page_says(shared, tmp_path, capsys, monkeypatch):
    args, expected = _worked_conversation()
    packets = [line for line in expected if line and not line.startswith(" ") and line != "states:"]
    (tmp_path / "conversation.txt").write_text("\n".join(packets) + "\n")
    (tmp_path / "pf.conf").write_text((shared / "seed/configs/corrected/pf.conf").read_text())
    monkeypatch.chdir(tmp_path)
    assert main(args) == 0
    printed = iter(capsys.readouterr().out.splitlines())
    for line in expected:
        if not line.strip():
            continue
        assert any(got.rstrip() == line.rstrip() for got in printed), f"not printed (in this order): {line!r}"


def test_the_api_example_runs_on_the_tutorial_ruleset(shared, monkeypatch):
    """The page's first Python block, as written, on the tutorial's corrected pf.conf: every
    attribute it lists exists and says what the comment says."""
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    monkeypatch.chdir(shared / "seed/configs/corrected")
    names: dict = {}
    exec(compile(code, str(DOC), "exec"), names)  # noqa: S102 - the documentation's own example
    d = names["d"]
    assert (d.action, d.reason, d.rule_number, d.state) == ("block", "synproxy", 25, "created")
    assert d.translation.kind == "rdr" and d.anchor == "" and d.to_json()["action"] == "block"
