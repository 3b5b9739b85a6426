"""Load compiled rulesets into nftables through libnftables' JSON API, one transaction each.

pfctl -f semantics (pf-semantics.md, ARCHITECTURE.md "Atomic and fail-closed"): the whole table
is replaced in one nftables batch, so the kernel switches from the old ruleset to the new one at
once; a refused batch changes nothing; conntrack is never flushed by a load, so established
connections and their ct-mark "pf states" survive a reload. Everything happens in the network
namespace of the calling process (run it under ``ip netns exec`` for another namespace).

The binding is Debian's ``python3-nftables`` (``apt-get install python3-nftables``; a venv
needs ``--system-site-packages``): a thin ctypes wrapper over ``libnftables.so.1``.

State timeouts (``ct timeout`` policy objects, :mod:`pfha.nft.timeouts`) need two more steps,
because nft 1.0.6's JSON parser drops a policy and a destroyed object detaches itself from
every connection using it:

1. the policies the new ruleset needs and the table does not have yet are created with nft's
   text syntax, in their own transaction (named after their content: an existing one is the
   same policy, so a reload with unchanged timeouts touches none);
2. the JSON batch replaces the table's content *in place* (flush the rules, delete every other
   object by name, add the new ones), keeping the policy objects, so connections keep theirs;
3. after the kernel accepted it, the policies no rule refers to any more are deleted. If the
   batch is refused, the policies step 1 created are deleted again (best effort: anything left
   is unreferenced and goes at the next load): the previous ruleset stays fully in effect.

A ruleset without timeouts is loaded by the plain table swap (which also removes old policies).

This module must never touch tables other than ours (``inet pfha``), and never conntrack.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pfha.errors import PfhaError
from pfha.nft import FAMILY, TABLE
from pfha.nft import timeouts as ct_timeouts

STATUS_CHAIN = "pf_status"  # empty: enabled; one `accept`: disabled (pfctl -d)
STATE_DIR = Path(os.environ.get("PFHA_STATE_DIR", "/run/pfha"))


class NftError(PfhaError):
    """libnftables refused a command; the message is nft's own error text."""


def _context():
    try:
        import nftables
    except ImportError:
        raise NftError("the nftables Python binding is missing: apt-get install python3-nftables") from None
    ctx = nftables.Nftables()
    ctx.set_json_output(True)
    ctx.set_handle_output(False)
    return ctx


class Nft:
    """A libnftables context bound to the current network namespace."""

    def __init__(self) -> None:
        self.ctx = _context()

    def run(self, commands: list[dict[str, Any]]) -> None:
        """Run ``commands`` as one batch (one kernel transaction): all or nothing."""
        if not commands:
            return
        rc, _out, err = self.ctx.cmd(batch_text(commands))
        if rc != 0:
            raise NftError(_first_error(err) or f"nftables refused the batch (rc {rc})")

    def list(self, what: str) -> list[dict[str, Any]]:
        """``nft -j list WHAT`` as a list of objects; [] when it does not exist."""
        rc, out, err = self.ctx.cmd(f"list {what}")
        if rc != 0:
            if "No such file or directory" in err or "does not exist" in err:
                return []
            raise NftError(_first_error(err) or f"nft list {what} failed")
        if not out:
            return []
        return [o for o in json.loads(out).get("nftables", []) if "metainfo" not in o]

    def run_text(self, command: str) -> None:
        """One command in nft's text syntax (one transaction): for what JSON cannot say."""
        rc, _out, err = self.ctx.cmd(command)
        if rc != 0:
            raise NftError(_first_error(err) or f"nftables refused: {command}")

    def table_objects(self) -> list[dict[str, Any]]:
        """Our table's chains, sets, maps and stateful objects (terse: no set elements; ``list
        ct timeout`` itself crashes nft 1.0.6)."""
        self.ctx.set_terse_output(True)
        try:
            return [o for o in self.list(f"table {FAMILY} {TABLE}") if "rule" not in o and "table" not in o]
        finally:
            self.ctx.set_terse_output(False)

    def table_exists(self) -> bool:
        return any("table" in o for o in self.list(f"tables {FAMILY}") if o.get("table", {}).get("name") == TABLE)


def batch_text(commands: list[dict[str, Any]]) -> str:
    """The JSON text libnftables parses (what the binding's ``json_cmd`` sends, minus its
    cost): compact, a tenth fewer bytes for libnftables to read, and without ``json``'s cycle
    check, a dict insert and delete per object (a sixth of the serialisation of a 10,000-rule
    batch). Compiled batches are trees (a few constant leaves shared), never cyclic."""
    return json.dumps({"nftables": commands}, separators=(",", ":"), check_circular=False)


def _first_error(err: str) -> str:
    lines = [line.strip() for line in (err or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error") or "Error:" in line]
    return (errors[0] if errors else lines[0] if lines else "").removeprefix("internal:0:0-0: ")


def table_ref() -> dict[str, str]:
    return {"family": FAMILY, "name": TABLE}


def replace_batch(content: Iterable[dict[str, Any]], enabled: bool = True) -> list[dict[str, Any]]:
    """The batch that swaps our table for ``content`` (add+delete makes it work on first load)."""
    batch: list[dict[str, Any]] = [
        {"add": {"table": table_ref()}},
        {"delete": {"table": table_ref()}},
        {"add": {"table": table_ref()}},
        {"add": {"chain": {"family": FAMILY, "table": TABLE, "name": STATUS_CHAIN}}},
    ]
    if not enabled:
        batch.append(_disabled_rule())
    batch.extend(content)
    return batch


def _disabled_rule() -> dict[str, Any]:
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": STATUS_CHAIN, "expr": [{"accept": None}]}}}


def is_enabled(nft: Nft) -> bool | None:
    """True/False from the status chain; None when no ruleset is loaded."""
    objects = nft.list(f"chain {FAMILY} {TABLE} {STATUS_CHAIN}")
    if not any("chain" in o for o in objects):
        return None
    return not any("rule" in o for o in objects)


def set_enabled(nft: Nft, enabled: bool) -> None:
    """pfctl -e / -d: open or close the gate every base chain jumps through first."""
    if is_enabled(nft) is None:
        raise NftError("pf not loaded: load a ruleset first (pfctl -f)")
    chain = {"family": FAMILY, "table": TABLE, "name": STATUS_CHAIN}
    batch: list[dict[str, Any]] = [{"flush": {"chain": chain}}]
    if not enabled:
        batch.append(_disabled_rule())
    nft.run(batch)


# Deleted before the chains, in this order: maps hold counter references, rules hold the rest.
_DELETE_ORDER = ("map", "set", "counter", "quota", "limit", "ct helper", "flowtable")
# Kinds nft 1.0.6 cannot delete in JSON (the parser refuses a synproxy; ct timeout and ct
# expectation abort the process): kept through the batch (an ``add`` of the same name updates or
# keeps them) and, when the new ruleset has none of that name, deleted in text afterwards.
_KEPT = ("synproxy", "secmark", "ct expectation")


def inplace_batch(existing: Iterable[dict[str, Any]], content: Iterable[dict[str, Any]], enabled: bool = True) -> list[dict[str, Any]]:
    """The batch that replaces our table's content but keeps its timeout policies: flush the
    rules, delete every other named object of ``existing`` (``table_objects()``), add
    ``content``. One transaction, as the table swap."""
    existing = list(existing)
    batch: list[dict[str, Any]] = [{"add": {"table": table_ref()}}, {"flush": {"table": table_ref()}}]
    for kind in _DELETE_ORDER:
        batch += [{"delete": {kind: {"family": FAMILY, "table": TABLE, "name": o[kind]["name"]}}} for o in existing if kind in o]
    batch += [{"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": o["chain"]["name"]}}} for o in existing if "chain" in o]
    batch.append({"add": {"chain": {"family": FAMILY, "table": TABLE, "name": STATUS_CHAIN}}})
    if not enabled:
        batch.append(_disabled_rule())
    batch.extend(content)
    return batch


def _policy_names(objects: Iterable[dict[str, Any]]) -> set[str]:
    return {o[ct_timeouts.OBJECT]["name"] for o in objects if ct_timeouts.OBJECT in o}


def _delete_policies(nft: Nft, names: Iterable[str]) -> list[str]:
    """Delete timeout policies one by one (a referenced one is refused: EBUSY); the names that
    stayed. (nft 1.0.6 aborts on a JSON ``delete ct timeout``: text only.)"""
    kept = []
    for name in sorted(names):
        try:
            nft.run_text(f"delete ct timeout {FAMILY} {TABLE} {name}")
        except NftError:
            kept.append(name)
    return kept


def load(content: list[dict[str, Any]], metadata: dict[str, Any] | None = None, nft: Nft | None = None) -> None:
    """Replace the kernel ruleset with ``content`` in one transaction; keep pf's enabled flag.

    ``metadata`` (rule texts, table flags...) is saved beside it for pfctl's show commands
    only after the kernel accepted the batch.
    """
    nft = nft or Nft()
    enabled = is_enabled(nft)
    policies, rest = ct_timeouts.split(content)
    if policies:
        _load_with_policies(nft, policies, rest, enabled is not False)
    else:
        nft.run(replace_batch(rest, enabled is not False))
    if metadata is not None:
        save_metadata(metadata)


def _load_with_policies(nft: Nft, policies: list[dict[str, Any]], rest: list[dict[str, Any]], enabled: bool) -> None:
    """Steps 1-3 of the module docstring."""
    existed = nft.table_exists()
    existing = nft.table_objects() if existed else []
    have = _policy_names(existing)
    new = [p for p in policies if p["add"][ct_timeouts.OBJECT]["name"] not in have]
    created: list[str] = []
    try:
        if new:
            nft.run_text("\n".join([f"add table {FAMILY} {TABLE}"] + [ct_timeouts.text_command(p) for p in new]))
            created = [p["add"][ct_timeouts.OBJECT]["name"] for p in new]
        nft.run(inplace_batch(existing, rest, enabled))
    except NftError:
        _delete_policies(nft, created)
        if not existed and nft.table_exists() and not nft.table_objects():
            nft.run([{"delete": {"table": table_ref()}}])
        raise
    wanted = {p["add"][ct_timeouts.OBJECT]["name"] for p in policies}
    _delete_policies(nft, (have | set(created)) - wanted)
    _delete_leftovers(nft, existing, rest)


def _delete_leftovers(nft: Nft, existing: list[dict[str, Any]], content: list[dict[str, Any]]) -> None:
    """Objects of the kinds the in-place batch keeps that the new ruleset does not define."""
    for kind in _KEPT:
        added = {c["add"][kind]["name"] for c in content if kind in c.get("add", {})}
        for name in sorted(o[kind]["name"] for o in existing if kind in o and o[kind]["name"] not in added):
            try:
                nft.run_text(f"delete {kind} {FAMILY} {TABLE} {name}")
            except NftError:
                pass  # unreferenced anyway; the next load tries again


def check(content: list[dict[str, Any]], nft: Nft | None = None) -> None:
    """Let the kernel validate ``content`` without committing (``nft -c``): pfctl -n for nft.
    Timeout policies are checked in text and stand in the JSON batch without their values
    (the only thing the batch needs is that they exist)."""
    nft = nft or Nft()
    policies, _rest = ct_timeouts.split(content)
    nft.ctx.set_dry_run(True)
    try:
        if policies:
            nft.run_text("\n".join([f"add table {FAMILY} {TABLE}"] + [ct_timeouts.text_command(p) for p in policies]))
        nft.run(replace_batch(content))
    finally:
        nft.ctx.set_dry_run(False)


def flush(nft: Nft | None = None) -> None:
    """Remove our table entirely (pfctl -F all): every pf rule, table and counter."""
    nft = nft or Nft()
    nft.run([{"add": {"table": table_ref()}}, {"delete": {"table": table_ref()}}])
    path = metadata_path()
    if path.exists():
        path.unlink()


# ------------------------------------------------------------------------------ metadata
def _netns_id() -> str:
    return str(os.stat("/proc/self/ns/net").st_ino)


def metadata_path() -> Path:
    """Per network namespace: tests and labs load different rulesets side by side."""
    return STATE_DIR / f"ruleset-{_netns_id()}.json"


def save_metadata(metadata: dict[str, Any]) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    path = metadata_path()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metadata))
    tmp.replace(path)


def load_metadata() -> dict[str, Any] | None:
    path = metadata_path()
    if not path.exists():
        return None
    return json.loads(path.read_text())
