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
