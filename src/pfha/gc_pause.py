"""Pausing Python's cyclic garbage collector around a burst of long-lived allocations.

Parsing and compiling a large ruleset allocate hundreds of thousands of small objects that are
acyclic and all stay alive until the work is done: every collection the allocations trigger
walks all of them again for nothing (a third of the parse time and half of the compile time on
a 10,000-rule pf.conf, docs/benchmarks-conf.md and docs/benchmarks-nft.md). Reference counting
still frees everything as usual; only cycle detection waits until the end.

Never frees, collects or freezes anything the program froze itself, and never leaves the
collector in another state than it found it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the body with the collector off. Afterwards the objects it made are moved straight to
    the oldest generation (``gc.freeze()`` then ``gc.unfreeze()``, two list splices) rather than
    left in the youngest, whose next collections would walk all of them twice for nothing.

    Nested or inside a program that disabled the collector: does nothing at the end (whoever
    disabled it decides). Skips the move when the program froze objects itself: unfreeze()
    would thaw those too."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            if gc.get_freeze_count() == 0:
                gc.freeze()
                gc.unfreeze()
            gc.enable()
