"""pfha.gc_pause: the collector pause that the parser and the compiler share."""

from __future__ import annotations

import gc

import pytest

from pfha.gc_pause import gc_paused


@pytest.fixture
def collector():
    """Whatever a test does to the collector is undone (pytest itself runs with it enabled)."""
    was_enabled = gc.isenabled()
    frozen = gc.get_freeze_count()
    yield
    if gc.get_freeze_count() != frozen:
        gc.unfreeze()
    (gc.enable if was_enabled else gc.disable)()


def test_off_inside_on_after_and_the_new_objects_are_in_the_oldest_generation(collector):
    gc.enable()
    with gc_paused():
        assert not gc.isenabled()
        made = [[i] for i in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0, "moved to the oldest generation, not left frozen"
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert all(id(o) in oldest for o in made)


def test_restored_when_the_body_raises(collector):
    gc.enable()
    with pytest.raises(ValueError), gc_paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled_and_nothing_moves(collector):
    gc.disable()
    with gc_paused():
        made = [[i] for i in range(100)]
    assert not gc.isenabled()
    oldest = {id(o) for o in gc.get_objects(generation=2)}
    assert not any(id(o) in oldest for o in made)


def test_nested_pauses_leave_the_decision_to_the_outer_one(collector):
    gc.enable()
    with gc_paused():
        with gc_paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_freezes_and_thaws_nothing_when_the_program_froze_objects(collector):
    gc.enable()
    kept = [[i] for i in range(100)]
    gc.freeze()
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    with gc_paused():
        made = [[i] for i in range(100)]
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen, "the program's frozen objects stay frozen, and only they"
    permanent = {id(o) for o in gc.get_objects(generation=2)}
    assert not any(id(o) in permanent for o in kept)
