"""``pfha sync run|status``: state sync in the foreground (pfsync for Linux), and its status.

    pfha sync run --dev rl0 [--peer ADDR] --key-file FILE [--mark-mask 0x3] [--collapse-ms 0]
                  [--node-id HEX] [--status-file PATH] [--liberal] [--sched rr:99|other] [--refresh 10]
    pfha sync status [--json] [--status-file PATH | --status-dir DIR]

``run`` keeps a JSON status file (default ``/run/pfha/sync/<dev>.json``, rewritten every 0.5 s
and at every bulk update); ``status`` reads it. See docs/sync.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from pfha.errors import PfhaError

NAME = "sync"
HELP = "synchronise conntrack states with the peer firewall (pfsync for Linux), or show its status"
def status_dir() -> Path:
    """``$PFHA_RUN_DIR/sync`` (default ``/run/pfha/sync``), as ``pfha carp`` does for its files."""
    return Path(os.environ.get("PFHA_RUN_DIR", "/run/pfha")) / "sync"


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sync_command", metavar="{run,status}")
    run = sub.add_parser("run", help="run the sync daemon in the foreground until SIGTERM/SIGINT")
    run.add_argument("--dev", "-i", required=True, help="sync device (pfsync's syncdev)")
    run.add_argument("--peer", help="unicast to this IPv4 address (pfsync's syncpeer); default multicast 224.0.0.240")
    run.add_argument("--key-file", required=True, type=Path,
                     help="shared key: one line of hex (>= 16 bytes), or lines 'ID:HEX' for rotation")
    run.add_argument("--mark-mask", type=_int, default=0x3,
                     help="sync entries with ct mark & MASK != 0 (default 0x3: states pf rules created; 0 = all)")
    run.add_argument("--collapse-ms", type=float, default=0.0, help="collapse window for updates, ms (default 0: coalesce within each batch of kernel events, send at once)")
    run.add_argument("--refresh", type=float, default=None, metavar="SECONDS",
                     help="send the states whose flows carried packets every SECONDS, with their current "
                          "timeouts, so the peer's copies do not expire while the flows live (default 10; 0: off)")
    run.add_argument("--read-hold-ms", type=float, default=1.0,
                     help="when kernel events trickle in, read them at most every N ms (default 1; 0: at once)")
    run.add_argument("--node-id", type=lambda t: int(t, 16), help="creator id, hex (default random)")
    run.add_argument("--no-bulk", action="store_true", help="do not ask the peer for its table at start")
    run.add_argument("--bulk-retry", type=float, default=2.0, help="seconds between bulk requests (default 2)")
    run.add_argument("--bulk-tries", type=int, default=12, help="give up the bulk update after N tries (default 12)")
    run.add_argument("--liberal", action="store_true", help="install TCP states with BE_LIBERAL (no window checks)")
    run.add_argument("--status-file", type=Path, help="JSON status (default /run/pfha/sync/<dev>.json)")
    run.add_argument("--sched", metavar="rr:PRIO|fifo:PRIO|other",
                     help="CPU scheduling class (default rr:99, as conntrackd: real-time round-robin, so the "
                          "daemon keeps up with the kernel's events on a busy machine; 'other' = ordinary)")
    status = sub.add_parser("status", help="peer, last message, states sent and received, lag, rejects")
    status.add_argument("--json", action="store_true", help="print the raw JSON status")
    status.add_argument("--status-file", type=Path, help="one status file")
    status.add_argument("--status-dir", type=Path, help="directory of status files (default $PFHA_RUN_DIR/sync or /run/pfha/sync)")


def run(args: argparse.Namespace) -> int:
    if args.sync_command == "run":
        return _run(args)
    if args.sync_command == "status":
        return _status(args)
    raise PfhaError("usage: pfha sync {run,status} ...")


def _keyring(path: Path):
    from pfha.sync import wire

    try:
        data = path.read_bytes()
    except OSError as error:
        raise PfhaError(f"{path}: {error.strerror}") from None
    if os.stat(path).st_mode & 0o077:
        print(f"pfha sync: warning: {path} is readable by others; chmod 600 it", file=sys.stderr, flush=True)
    try:
        return wire.read_key_file(data)
    except ValueError as error:
        raise PfhaError(f"{path}: {error}") from None


def _set_scheduling(text: str | None) -> None:
    """``--sched`` as given (an error if the system refuses it), or the default: conntrackd's
    SCHED_RR 99, and like conntrackd a warning only when that is not permitted."""
    from pfha.sync import sched

    setting = sched.parse(text if text is not None else sched.DEFAULT)
    try:
        sched.apply(setting)
    except sched.SchedError as error:
        if text is not None:
            raise
        print(f"pfha sync: warning: {error}; running SCHED_OTHER", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import random
    import signal

    from pfha.sync.conntrack import EventSource, KernelTable
    from pfha.sync.peer import Config, Peer
    from pfha.sync.runner import REFRESH, Runner
    from pfha.sync.transport import Transport

    if args.refresh is not None and args.refresh < 0:
        raise PfhaError("--refresh: seconds must be 0 (off) or more")
    keyring = _keyring(args.key_file)
    node_id = args.node_id if args.node_id is not None else random.SystemRandom().randrange(1, 1 << 32)
    if args.sched is not None:
        from pfha.sync import sched

        sched.parse(args.sched)  # a malformed setting fails before anything is opened
    transport = Transport(args.dev, args.peer)
    intake = EventSource(mark_mask=args.mark_mask)
    kernel = KernelTable(liberal=args.liberal)
    status_path = args.status_file or status_dir() / f"{args.dev}.json"
    _set_scheduling(args.sched)  # last: a setup error leaves the caller's scheduling alone

    async def main() -> None:
        loop = asyncio.get_running_loop()
        config = Config(node_id=node_id, keyring=keyring, collapse_window=args.collapse_ms / 1000,
                        request_bulk_on_start=not args.no_bulk, bulk_retry=args.bulk_retry,
                        bulk_max_tries=args.bulk_tries)
        peer = Peer(config, epoch=time.time_ns() // 1_000_000, now=loop.time())
        runner = Runner(peer, transport, intake, kernel, status_path, read_hold=args.read_hold_ms / 1000,
                        refresh=REFRESH if args.refresh is None else args.refresh)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runner.stop)
        await runner.run()

    try:
        asyncio.run(main())
    finally:
        transport.close()
        intake.close()
        kernel.close()
    return 0


def _status(args: argparse.Namespace) -> int:
    directory = args.status_dir or status_dir()
    paths = [args.status_file] if args.status_file else sorted(directory.glob("*.json"))
    if not paths:
        raise PfhaError(f"no sync status in {directory} (is 'pfha sync run' running?)")
    statuses = []
    for path in paths:
        try:
            status = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise PfhaError(f"{path}: {error}") from None
        if _is_sync_status(status):
            statuses.append(status)
        elif args.status_file:
            raise PfhaError(f"{path}: not a pfha sync status file")
    if not statuses:  # a node's run directory also holds carp.json and ruleset metadata
        raise PfhaError(f"no sync status in {directory} (is 'pfha sync run' running?)")
    if args.json:
        print(json.dumps(statuses if len(statuses) > 1 else statuses[0], indent=1, sort_keys=True))
        return 0
    for status in statuses:
        print(_format(status))
    return 0


def _is_sync_status(status: object) -> bool:
    """What the sync runner writes (the fields :func:`_format` needs), not another pfha file."""
    return isinstance(status, dict) and all(
        key in status for key in ("device", "destination", "counters", "peers", "bulk"))


def _format(status: dict) -> str:
    counters = status["counters"]
    age = time.time() - status.get("time", time.time())
    lines = [f"pfsync: syncdev {status['device']} -> {status['destination']} node {status['node']}"
             f"{'' if age < 5 else f' (status {age:.0f}s old: daemon stopped?)'}",
             f"  states {status['states']}  sent {counters['states_sent']}  received {counters['states_received']}"
             f"  deletes sent {counters['deletes_sent']} received {counters['deletes_received']}",
             f"  lag {status['lag_s']}s  unacknowledged {status['unacknowledged']}  queued {status['queued']}"
             f"  retransmits {counters['retransmits']}",
             f"  bulk update: {'done' if status['bulk']['done'] else 'in progress'}"
             f"{'  scheduling ' + status['sched'] if 'sched' in status else ''}",
             f"  last message: {'never' if status['last_message_s'] is None else str(status['last_message_s']) + 's ago'}",
             f"  rejects: {', '.join(f'{k} {v}' for k, v in sorted(counters['rejects'].items())) or 'none'}"]
    refresh = status.get("refresh")
    if refresh and refresh.get("interval"):
        lines.append(f"  refresh: every {max(refresh['interval'], refresh.get('spacing') or 0):g}s, "
                     f"{refresh['sweeps']} sweeps, {refresh['sent']} states sent again"
                     + (f", {refresh['without_counters']} without counters (nf_conntrack_acct off)"
                        if refresh.get("without_counters") else ""))
    elif refresh is not None:
        lines.append("  refresh: off")
    for peer in status["peers"]:
        lines.append(f"  peer {peer['node']} {'up' if peer['alive'] else 'DOWN'} last heard {peer['last_heard_s']}s ago")
    return "\n".join(lines)
