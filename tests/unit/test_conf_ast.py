"""The AST values keep dataclass behaviour under their faster generated ``__init__``."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from pfha.conf import ast
from pfha.conf.ast import ANY_ENDPOINT, Endpoint, HostMatch, Origin, PortMatch, Rule, StateSpec
from pfha.conf.hosts import ResolvedHost


def _frozen_slotted():
    return [
        cls for cls in vars(ast).values()
        if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == ast.__name__
        and cls.__dataclass_params__.frozen and "__slots__" in cls.__dict__
    ] + [ResolvedHost]


@pytest.mark.parametrize("cls", _frozen_slotted(), ids=lambda c: c.__name__)
def test_every_frozen_value_got_the_fast_init_with_the_dataclass_signature(cls):
    assert cls.__init__.__code__.co_filename == "<string>"
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert [p.name for p in params] == [f.name for f in fields.values() if f.init]
    for p in params:
        f = fields[p.name]
        assert (p.kind is inspect.Parameter.KEYWORD_ONLY) == f.kw_only
        expected = inspect.Parameter.empty if f.default is dataclasses.MISSING else f.default
        assert p.default is expected


def test_values_build_compare_and_stay_frozen():
    rule = Rule(origin=Origin("f", 3), action="pass", quick=True)
    assert rule == Rule(origin=Origin("f", 3), action="pass", quick=True)
    assert rule.src is ANY_ENDPOINT and rule.state == StateSpec("none") and rule.labels == ()
    assert Endpoint(HostMatch(), PortMatch("=", 22)).port.low == 22
    assert dataclasses.replace(rule, quick=False).quick is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.quick = False  # type: ignore[misc]
    with pytest.raises(TypeError):
        Rule(action="pass")  # origin is required
    with pytest.raises(TypeError):
        Rule(Origin("f", 1), action="pass")  # keyword-only
    with pytest.raises(TypeError):
        Origin("f", 1, 2)  # too many
