"""What ``pfha demo`` runs (see :mod:`pfha.cli.commands.demo`): the lab's pair, one failover.

Apart from the command's module so that listing the commands never imports the lab.
"""

from __future__ import annotations

import argparse
import time

from pfha.errors import PfhaError
from pfha.lab import build, scenarios


def say(text: str = "") -> None:
    print(text, flush=True)


def step(text: str) -> None:
    say(f"\n== {text}")


def run(args: argparse.Namespace) -> int:
    step(f"building the tutorial's pair in network namespaces ({args.config} configs)")
    if build.state_dir(args.name).exists():
        say(f"  an old lab {args.name!r} is still there: removing it")
        build.down(args.name)
    running = build.up(args.name, config=args.config, log=lambda m: say(f"  {m}"))
    try:
        return _show(running, args)
    finally:
        if args.keep:
            step(f"leaving the lab up: 'pfha lab --name {args.name} status', 'pfha lab --name {args.name} down'")
        else:
            step("tearing down")
            removed = build.down(args.name)
            say(f"  removed {len(removed)} namespaces and files")


def _show(running: build.RunningLab, args: argparse.Namespace) -> int:
    step("who is master")
    master = _wait_any_master(running)
    for fw, vhids in scenarios.roles(running).items():
        say(f"  {fw}: " + ", ".join(f"vhid {v} {s}" for v, s in sorted(vhids.items())))
    say(f"  {master} holds 192.168.1.1 (the LAN's gateway) and 203.0.113.10-12")

    step("traffic through the master")
    lan = running.probe("client", ["tcp:198.51.100.100:80", "udp:198.51.100.53:53"])
    seen = scenarios.seen_source(lan[0]) or "?"
    how_nat = ("NAT to the shared CARP address: the backup can carry it on" if seen == scenarios.EXT else
               f"NAT to {master}'s own address: no other node can carry it on")
    say(f"  LAN client -> internet web server: {_verdict(lan[0])}, the server saw the client as {seen} ({how_nat})")
    say(f"  LAN client -> DNS server 198.51.100.53 (udp): {_verdict(lan[1])}")
    web = running.probe("inet", [f"tcp:{scenarios.WEB}:80"] * 6)
    servers = [scenarios.answered_by(r) or r.error for r in web]
    pool = ("rdr to the web pool, round-robin" if len(set(servers)) > 1 else
            "three rdr rules for one address: translation is first-match, the others never apply")
    say(f"  internet -> {scenarios.WEB}:80 six times: answered by {', '.join(servers)} ({pool})")
    blocked = running.probe("inet", [f"tcp:{scenarios.EXT}:2222", f"tcp:{scenarios.EXT}:8081"], timeout=1.0)
    say(f"  internet -> 203.0.113.10:2222 and :8081 (not the admin host): "
        + ", ".join("blocked" if not r.ok else "OPEN (unexpected)" for r in blocked))

    step(f"failing the master ({args.how}) in the middle of two transfers")
    run_ = scenarios.failover_under_traffic(running, args.how, stall_timeout=10, log=say)

    step(f"bringing {run_.failed} back")
    say(f"  {running.recover(run_.failed)}")
    try:
        took = scenarios.wait_master(running, run_.failed, timeout=30)
        say(f"  {run_.failed} is master again after {took:.1f} s (preempt, once its bulk update was in)")
    except AssertionError:
        roles = ", ".join(f"{fw}: " + " ".join(f"vhid {v} {s}" for v, s in sorted(r.items())) for fw, r in scenarios.roles(running).items())
        say(f"  {run_.failed} did not take over again within 30 s ({roles}): with equal advskew nothing makes it"
            " preferred, and without state sync its bulk update never completes")
    step("result")
    if run_.ok:
        say(f"  every transfer finished through the backup: the failover ({args.how}) lost no connection")
        return 0
    say("  some transfers broke during the failover" + (" (as the tutorial's as-published configs predict)" if args.config == "as-published" else ""))
    return 1


def _wait_any_master(running: build.RunningLab, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        master = scenarios.master_of_all(running)
        if master:
            return master
        time.sleep(0.2)
    raise PfhaError(f"no firewall became master within {timeout:.0f} s: {scenarios.roles(running)}")


def _verdict(result) -> str:
    return "ok" if result.ok else f"FAILED ({result.error})"


