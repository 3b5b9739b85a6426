"""Shared test fixtures: where the shared material lives, and root-only network labs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# ../shared beside the checkout (CI lays a copy of shared/ beside its fresh clone).
SHARED = Path(os.environ.get("PFHA_SHARED", REPO.parent / "shared"))
SEED_CONFIGS = SHARED / "seed" / "configs"


def is_root() -> bool:
    return os.geteuid() == 0


requires_root = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces, nftables and raw sockets")


@pytest.fixture(autouse=True)
def private_run_dir(tmp_path_factory, monkeypatch):
    """Every pfha process a test starts keeps its state (ruleset metadata, CARP and sync status
    files) in a directory of the test's own, never in the host's /run/pfha; a test that sets
    PFHA_STATE_DIR / PFHA_RUN_DIR itself still wins."""
    run_dir = tmp_path_factory.mktemp("run")
    monkeypatch.setenv("PFHA_RUN_DIR", str(run_dir))
    monkeypatch.setenv("PFHA_STATE_DIR", str(run_dir))
    yield run_dir


@pytest.fixture(autouse=True)
def pfctl_dispatch_restored():
    """A test that registers the data plane's pfctl actions (as the pfctl command does) must not
    leave them to the next: with the loader registered, an in-process 'pfctl -f' loads into the
    current network namespace, which for an in-process test is the host's."""
    from pfha.cli import pfctl

    actions, loaders = dict(pfctl.ACTIONS), list(pfctl.LOADERS)
    yield
    pfctl.ACTIONS.clear()
    pfctl.ACTIONS.update(actions)
    pfctl.LOADERS[:] = loaders


@pytest.fixture
def lab():
    """A :class:`pfha.lab.netns.Lab` removed after the test, whatever happened."""
    if not is_root():
        pytest.skip("needs root: network namespaces")
    from pfha.lab.netns import Lab

    with Lab(prefix="t") as made:
        yield made


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared material not found at {SHARED}")
    return SHARED
