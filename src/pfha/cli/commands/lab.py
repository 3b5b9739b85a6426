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
_NAME_HELP = "lab name (namespaces pfhalab-NAME-*; default: tut)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from pfha.lab.build import FAIL_MODES

    parser.add_argument("--name", default="tut", help=_NAME_HELP)
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="build the topology and start the services and node daemons")
    up.add_argument("--config", default="corrected", help="as-published, corrected (default) or a directory with pf.conf, rc.conf.primary, rc.conf.secondary [, sysctl.conf]")
    up.add_argument("--no-daemons", action="store_true", help="no pfha node: fw1 holds the shared addresses, forwarding on, no filtering")
    up.add_argument("--without", default="", help="node parts to leave out (pfha node run --without), e.g. sync")
    down = sub.add_parser("down", help="remove everything the lab made (also after a crash)")
    status = sub.add_parser("status", help="hosts, addresses, processes and the firewalls' CARP/sync state")
    status.add_argument("--json", action="store_true", help="the whole status as JSON")
    ex = sub.add_parser("exec", help="run a command inside a host's namespace: pfha lab exec HOST -- CMD...")
    ex.add_argument("host", metavar="HOST", help="the host whose namespace runs CMD (fw1, client, inet, ...)")
    ex.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD",
                    help="the command and its arguments (default: $SHELL)")
    fail = sub.add_parser("fail", help="fail a firewall: kill (power loss), link (cable cut), stop (orderly)")
    fail.add_argument("host", metavar="HOST", help="the firewall to fail (fw1 or fw2)")
    fail.add_argument("--how", choices=FAIL_MODES, default="kill",
                      help="kill: SIGKILL and every cable pulled (power loss, the default); "
                           "link: one cable pulled (--link); stop: SIGTERM, CARP bows out")
    fail.add_argument("--link", default="xl1", help="which cable --how link cuts (default xl1, the LAN)")
    recover = sub.add_parser("recover", help="plug a failed firewall's cables back in and restart its node")
    recover.add_argument("host", metavar="HOST", help="the firewall to bring back (fw1 or fw2)")
    matrix = sub.add_parser("matrix", help="check the tutorial ruleset's reachability matrix against the running lab")
    probe = sub.add_parser("probe", help="probe services from a host: pfha lab probe HOST tcp:ADDR:PORT ...")
    probe.add_argument("host", metavar="HOST", help="the host the probes start from (client, inet, admin, ...)")
    probe.add_argument("targets", nargs="+", metavar="TARGET",
                       help="tcp:ADDR:PORT, udp:ADDR:PORT or icmp:ADDR")
    probe.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer (default 2)")
    for action in (up, down, status, ex, fail, recover, matrix, probe):
        # `pfha lab up --name X` as well as `pfha lab --name X up`: SUPPRESS keeps the
        # group-level value unless the action's own --name is given
        action.add_argument("--name", default=argparse.SUPPRESS, help=_NAME_HELP)


def run(args: argparse.Namespace) -> int:
    from pfha.lab import build

    action = args.lab_command
    if action == "up":
        running = build.up(args.name, config=args.config, daemons=not args.no_daemons,
                           without=[p for p in args.without.split(",") if p], log=_say)
        lab = "pfha lab" if running.name == "tut" else f"pfha lab --name {running.name}"
        _say(f"lab {running.name!r} is up: '{lab} status', '{lab} exec client -- ping 192.168.1.1', '{lab} down'")
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
