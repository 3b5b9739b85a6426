"""Small builders for nftables JSON expressions and statements (libnftables-json(5)).

Each function returns one JSON value exactly as ``nft -j`` spells it, so the compiler reads as
the rules it produces. Pure data; no I/O.
"""

from __future__ import annotations

from typing import Any

from pfha.nft import FAMILY, TABLE

Expr = dict[str, Any]

CT_MARK: Expr = {"ct": {"key": "mark"}}
CT_DIRECTION: Expr = {"ct": {"key": "direction"}}
CT_STATUS: Expr = {"ct": {"key": "status"}}
CT_STATE: Expr = {"ct": {"key": "state"}}
CT_LABEL: Expr = {"ct": {"key": "label"}}
ACCEPT: Expr = {"accept": None}
DROP: Expr = {"drop": None}
RETURN: Expr = {"return": None}


def match(left: Any, right: Any, op: str = "==") -> Expr:
    return {"match": {"op": op, "left": left, "right": right}}


def meta(key: str) -> Expr:
    return {"meta": {"key": key}}


def payload(protocol: str, field: str) -> Expr:
    return {"payload": {"protocol": protocol, "field": field}}


def band(left: Any, right: Any) -> Expr:
    return {"&": [left, right]}


def bor(left: Any, right: Any) -> Expr:
    return {"|": [left, right]}


def prefix(addr: str, length: int) -> Expr:
    return {"prefix": {"addr": addr, "len": length}}


def span(low: Any, high: Any) -> Expr:
    return {"range": [low, high]}


def anon_set(items: list[Any]) -> Expr:
    return {"set": items}


def counter(name: str) -> Expr:
    return {"counter": name}


def jump(chain: str) -> Expr:
    return {"jump": {"target": chain}}


def goto(chain: str) -> Expr:
    return {"goto": {"target": chain}}


def set_ct_mark(keep_mask: int, value: int) -> Expr:
    """``ct mark set ct mark & KEEP | VALUE``: constants only (nft cannot OR two registers)."""
    return {"mangle": {"key": CT_MARK, "value": bor(band(CT_MARK, keep_mask & 0xFFFFFFFF), value)}}


def set_ct_label(bit: int) -> Expr:
    """``ct label set BIT``: labels are set one constant bit at a time (never cleared)."""
    return {"mangle": {"key": CT_LABEL, "value": bit}}


def log(prefix_text: str, group: int) -> Expr:
    return {"log": {"prefix": prefix_text, "group": group}}


def add(kind: str, **fields: Any) -> dict[str, Any]:
    """An ``add`` command for an object of our table."""
    return {"add": {kind: {"family": FAMILY, "table": TABLE, **fields}}}


def rule(chain: str, exprs: list[Expr], comment: str | None = None) -> dict[str, Any]:
    fields: dict[str, Any] = {"chain": chain, "expr": exprs}
    if comment:
        fields["comment"] = comment[:127]
    return add("rule", **fields)
