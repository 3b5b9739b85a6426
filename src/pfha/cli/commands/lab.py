"""``pfha lab``: the tutorial's pair, its LAN and a small internet, in network namespaces."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pfha.lab.build import RunningLab

NAME = "lab"
HELP = "build, drive and remove the tutorial's topology in network namespaces (root)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pfha.lab.build import FAIL_MODES

    parser.add_argument("--name", default="tut", help="lab name (namespaces pfhalab-NAME-*; default: tut)")
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="build the topology and start the services and node daemons")
    up.add_argument("--config", default="corrected", help="as-published, corrected (default) or a directory with pf.conf, rc.conf.primary, rc.conf.secondary [, sysctl.conf]")
    up.add_argument("--no-daemons", action="store_true", help="no pfha node: fw1 holds the shared addresses, forwarding on, no filtering")
    up.add_argument("--without", default="", help="node parts to leave out (pfha node run --without), e.g. sync")
    sub.add_parser("down", help="remove everything the lab made (also after a crash)")
    status = sub.add_parser("status", help="hosts, addresses, processes and the firewalls' CARP/sync state")
    status.add_argument("--json", action="store_true")
    ex = sub.add_parser("exec", help="run a command inside a host's namespace: pfha lab exec HOST -- CMD...")
    ex.add_argument("host")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    fail = sub.add_parser("fail", help="fail a firewall: kill (power loss), link (cable cut), stop (orderly)")
    fail.add_argument("host")
    fail.add_argument("--how", choices=FAIL_MODES, default="kill")
    fail.add_argument("--link", default="xl1", help="which cable --how link cuts (default xl1, the LAN)")
    recover = sub.add_parser("recover", help="plug a failed firewall's cables back in and restart its node")
    recover.add_argument("host")
    sub.add_parser("matrix", help="check the tutorial ruleset's reachability matrix against the running lab")
    probe = sub.add_parser("probe", help="probe services from a host: pfha lab probe HOST tcp:ADDR:PORT ...")
    probe.add_argument("host")
    probe.add_argument("targets", nargs="+")
    probe.add_argument("--timeout", type=float, default=2.0)


def run(args: argparse.Namespace) -> int:
    from pfha.lab import build

    action = args.lab_command
    if action == "up":
        running = build.up(args.name, config=args.config, daemons=not args.no_daemons,
                           without=[p for p in args.without.split(",") if p], log=_say)
        _say(f"lab {running.name!r} is up: 'pfha lab status', 'pfha lab exec client -- ping 192.168.1.1', 'pfha lab down'")
        return 0
    if action == "down":
        removed = build.down(args.name)
        _say(f"removed {len(removed)} items" if removed else f"nothing to remove for lab {args.name!r}")
        return 0
    running = build.attach(args.name)
    if action == "status":
        return _status(running, args.json)
    if action == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            cmd = [os.environ.get("SHELL", "/bin/sh")]
        argv = running.ns(args.host).argv(cmd)
        os.execvpe(argv[0], argv, running.host_env(args.host))
    if action == "fail":
        _say(running.fail(args.host, args.how, args.link))
        return 0
    if action == "recover":
        _say(running.recover(args.host))
        return 0
    if action == "matrix":
        from pfha.lab import scenarios

        results = scenarios.check_matrix(running)
        for line, result, ok in results:
            seen = "open" if result.ok else "blocked"
            print(f"{'ok ' if ok else 'BAD'} {line.source:7} {line.target:24} {seen:8} {line.why}")
        bad = sum(not ok for _l, _r, ok in results)
        print(f"{len(results) - bad}/{len(results)} as the ruleset says")
        return 1 if bad else 0
    if action == "probe":
        results = running.probe(args.host, args.targets, args.timeout)
        for result in results:
            print(f"{result.target:28} {'open' if result.ok else 'closed':6} {result.answer or result.error}")
        return 0 if all(r.ok for r in results) else 1
    raise AssertionError(action)


def _status(running: RunningLab, as_json: bool) -> int:
    from pfha.lab import nodes
    from pfha.lab.topology import tutorial

    status = running.status()

    status["firewalls"] = {fw: nodes.node_status(running, fw) for fw in tutorial().firewalls}
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    print(f"lab {status['name']}: config {status['config']}, daemons {'on' if status['daemons'] else 'off'}")
    for host, entry in status["hosts"].items():
        addresses = " ".join(a for addrs in entry.get("addresses", {}).values() for a in addrs)
        processes = " ".join(f"{k}:{v}" for k, v in entry["processes"].items())
        failed = f" FAILED({entry['failed']})" if "failed" in entry else ""
        print(f"  {host:7} {'up' if entry['exists'] else 'MISSING':7} {addresses:58} {processes}{failed}")
    for fw, node in status["firewalls"].items():
        print(f"  {fw}: {nodes.summary(node)}")
    return 0


def _say(message: str) -> None:
    print(message, file=sys.stdout, flush=True)
