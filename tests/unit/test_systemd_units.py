"""The systemd unit files in systemd/ are valid units that start the installed pfha."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

UNITS = sorted((REPO / "systemd").glob("*.service"))
PFHA = Path(sys.executable).with_name("pfha")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.skipif(not PFHA.exists(), reason="the pfha console script is not installed beside this Python")
@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_verifies(unit: Path, tmp_path: Path):
    # The units name /usr/local/bin/pfha (where an installation puts it); point them at this one.
    text = unit.read_text().replace("/usr/local/bin/pfha", str(PFHA))
    assert str(PFHA) in text, "the unit does not start pfha"
    name = unit.name.replace("@.service", "@fw1.service")
    copy = tmp_path / name
    copy.write_text(text)
    proc = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    problems = [line for line in proc.stderr.splitlines() if name.split("@")[0] in line or "pfha" in line]
    assert proc.returncode == 0 and not problems, proc.stderr


def test_units_exist():
    assert {u.name for u in UNITS} >= {"pfha-node.service", "pfha-node@.service"}
