"""``pfha lab up --config DIR`` end to end: a copy of the corrected configs, edited so the
change is observable from outside (the web rdr pool shrunk to one server; advskew moved from
fw2 to fw1 so fw2 is the preferred master), brought up through the CLI, and checked in effect:
the lab must really run the directory it was given, not the seed's configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import SEED_CONFIGS, requires_root

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]

ONLY_SERVER = "srv81"  # 192.168.1.81


def _edited_copy(target):
    source = SEED_CONFIGS / "corrected"
    if not source.is_dir():
        pytest.skip(f"seed configs not found at {source}")
    shutil.copytree(source, target)
    pf = target / "pf.conf"
    text = pf.read_text()
    pool = "{ 192.168.1.80, 192.168.1.81, 192.168.1.82 } round-robin"
    assert pool in text, "the corrected pf.conf no longer has the web pool this test edits"
    pf.write_text(text.replace(pool, "192.168.1.81"))
    primary, secondary = target / "rc.conf.primary", target / "rc.conf.secondary"
    assert "advskew 100" in secondary.read_text() and "advskew" not in primary.read_text()
    secondary.write_text(secondary.read_text().replace(" advskew 100", ""))
    primary.write_text(primary.read_text().replace(' pass foo"', ' pass foo advskew 100"'))
    assert primary.read_text().count("advskew 100") == 5  # carp0 + 2 aliases, carp1, carp2
    return target


def _pfha(*args: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    from pfha.lab import build

    return subprocess.run([sys.executable, "-m", "pfha.cli.main", *args], env=build.python_env(),
                          capture_output=True, text=True, timeout=timeout)


def test_lab_up_from_a_config_directory(tmp_path):
    from pfha.lab import build, scenarios

    config = _edited_copy(tmp_path / "configs")
    name = f"d{os.getpid() % 100000}"
    try:
        up = _pfha("lab", "--name", name, "up", "--config", str(config))
        assert up.returncode == 0, up.stdout + up.stderr
        running = build.attach(name)
        assert running.state.config == str(config)
        scenarios.wait_master(running, "fw2", timeout=45)  # advskew now favours fw2
        web = running.probe("inet", [f"tcp:{scenarios.WEB}:80"] * 4)
        assert {scenarios.answered_by(r) for r in web} == {ONLY_SERVER}, web
    finally:
        down = _pfha("lab", "--name", name, "down", timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert name not in build.labs()
