"""The tutorial's lab, built for a test module and always torn down (shared by the e2e tests)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def tutorial_lab(prefix: str, config: str) -> Iterator[object]:
    """``pfha.lab.build.up`` of the tutorial with the seed's ``config`` ("corrected" or
    "as-published"); skips when the seed configs are missing; ``build.down`` even on failure."""
    from pfha.lab import build, nodes

    try:
        nodes.seed_configs()
    except build.LabError as error:
        pytest.skip(str(error))
    name = f"{prefix}{os.getpid() % 100000}"
    running = build.up(name, config=config)
    try:
        yield running
    finally:
        build.down(name)
