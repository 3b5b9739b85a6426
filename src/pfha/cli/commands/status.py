"""``pfha status``: what a running node says about itself over its control socket."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

NAME = "status"
HELP = "show a running node's CARP, sync, state, ruleset and pflog status"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pfha.node import control

    parser.add_argument("--json", action="store_true", help="the raw status as JSON")
    parser.add_argument("-s", "--socket", type=Path, default=control.DEFAULT_SOCKET,
                        help=f"the node's control socket (default {control.DEFAULT_SOCKET})")


def run(args: argparse.Namespace) -> int:
    from pfha.node import control

    status = control.request(args.socket, "status")
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(render(status))
    return 0


def _ago(stamp: float | None) -> str:
    return "-" if stamp is None else f"{time.strftime('%H:%M:%S', time.localtime(stamp))} ({time.time() - stamp:.0f}s ago)"


def render(status: dict) -> str:
    lines = [f"node {status['node']} (pid {status['pid']}, up {status['uptime']}s, pfha {status['version']})"]
    if status.get("without"):
        lines.append(f"  left out: {', '.join(status['without'])}")
    carp = status["carp"]
    lines.append(f"carp: {carp.get('state')}" + (f", demoted for: {', '.join(carp['demoted'])}" if carp.get("demoted") else ""))
    for vhid in carp.get("vhids", []):
        lines.append(f"  vhid {vhid.get('vhid')} on {vhid.get('interface')}: {vhid.get('state')}"
                     f" (advbase {vhid.get('advbase')}, advskew {vhid.get('advskew')}) - {vhid.get('reason', '')}")
    lines += _sync_lines(status["sync"])
    lines.append(f"states: {status['states']}")
    ruleset = status["ruleset"]
    if ruleset.get("state") == "loaded":
        lines.append(f"ruleset: {ruleset['source']} hash {ruleset['hash'][:16]} loaded {_ago(ruleset['loaded_at'])}")
    else:
        lines.append(f"ruleset: {ruleset.get('state')}")
    pflog = status["pflog"]
    lines.append(f"pflog: {pflog.get('state')} {pflog.get('file') or ''}"
                 + (f" ({pflog['written']} written, {pflog['dropped']} dropped)" if "written" in pflog else ""))
    overload = status.get("overload") or {}
    if overload.get("state") == "running":
        lines.append(f"overload flush: running ({overload.get('killed')} states killed in {overload.get('flushes')} flushes)")
    if status.get("last_reload"):
        reload = status["last_reload"]
        lines.append(f"last reload: {'ok' if reload['ok'] else 'FAILED'} {_ago(reload['at'])}: {reload['message']}")
    return "\n".join(lines)


def _sync_lines(sync: dict) -> list[str]:
    if sync.get("state") != "running":
        return [f"sync: {sync.get('state')}"]
    lines = [f"sync: running on {sync.get('device')} to {sync.get('destination')} (node {sync.get('node')}), "
             f"{sync.get('states')} states known, lag {sync.get('lag_s')} s, {sync.get('unacknowledged')} unacknowledged"]
    for peer in sync.get("peers", []):
        lines.append(f"  peer {peer.get('node')}: {'alive' if peer.get('alive') else 'SILENT'}, last heard {peer.get('last_heard_s')} s ago")
    if not sync.get("peers"):
        lines.append("  no peer heard yet")
    bulk = sync.get("bulk", {})
    lines.append(f"  bulk update: {'done' if bulk.get('done') else 'in progress' if bulk.get('in_progress') else 'not done'}"
                 f" ({bulk.get('tries')} tries); first one finished {_ago(sync.get('bulk_done_at'))}")
    counters = {**sync.get("counters", {}), **{f"kernel_{k}": v for k, v in sync.get("kernel", {}).items() if v}}
    if counters:
        lines.append("  counters: " + ", ".join(f"{k} {v}" for k, v in counters.items() if v not in (None, {}, 0)))
    return lines
