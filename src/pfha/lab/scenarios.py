"""What the tutorial's ruleset promises, as checks that run in the lab: the reachability matrix
and a failover in the middle of running transfers. Used by ``pfha demo`` and the e2e tests.

The matrix is written out by hand from the tutorial's pf.conf, one line per host, port and
direction, each with the rule that decides it: it is the specification the running pair is
held to, so it must not be derived from the code under test.

This module drives traffic through a running lab; it never changes the lab's configuration
(faults go through :meth:`RunningLab.fail`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from pfha.lab.build import RunningLab
from pfha.lab.nodes import node_status
from pfha.lab.services import FetchResult, ProbeResult

Log = Callable[[str], None]


@dataclass(frozen=True)
class Expectation:
    source: str  # lab host
    target: str  # proto:address:port
    allowed: bool
    why: str  # the rule(s) that decide it
    answered_by: tuple[str, ...] = ()  # hosts that may answer (rdr targets), if allowed


EXT = "203.0.113.10"  # carp0 (vhid 1) first address; int_fw's external half
WEB = "203.0.113.11"  # the address the web rdr answers on
POOL = ("srv80", "srv81", "srv82")


def matrix() -> list[Expectation]:
    """Every host pair and port the tutorial's ruleset names, both directions (corrected and
    as-published agree on reachability; they differ in NAT source, pool use and sync)."""
    e = Expectation
    inbound = [
        e("admin", f"tcp:{EXT}:8081", True, "pass in on $ext_if from 198.51.100.200 to $int_fw port 8081", ("fw1", "fw2")),
        e("inet", f"tcp:{EXT}:8081", False, "ssh to the firewall only from the admin host; block log all"),
        e("inet", f"tcp:{EXT}:25", True, "rdr $ext_carp port 25 -> .80; pass in to $int_if:network port $mail_ports", ("srv80",)),
        e("inet", f"tcp:{EXT}:110", True, "rdr $ext_carp port 110 -> .80; pass in ... port $mail_ports", ("srv80",)),
        e("inet", "tcp:203.0.113.12:25", True, "$ext_carp is all of carp0's addresses: .12 is redirected too", ("srv80",)),
        e("inet", f"tcp:{WEB}:80", True, "rdr .11 port www -> web pool; pass in to $int_if:network port $web_ports", POOL),
        e("inet", f"tcp:{WEB}:443", True, "rdr .11 port https -> web pool; pass in ... port $web_ports", POOL),
        e("inet", f"tcp:{EXT}:8080", True, "rdr $ext_carp port 8080 -> $chat_srv; pass in to $chat_srv port $chat_ports", ("chat",)),
        e("inet", f"tcp:{WEB}:8080", True, "chat's rdr is on every carp0 address", ("chat",)),
        e("inet", f"tcp:{EXT}:8084", False, "rdr to .80 for $ftp_ports, but no pass rule lets ftp in: block log all"),
        e("inet", f"tcp:{EXT}:9000", False, "ftp: redirected, then blocked (no pass rule)"),
        e("inet", f"tcp:{EXT}:8082", False, "web-ssh: redirected, then blocked (no pass rule)"),
        e("inet", f"tcp:{EXT}:2222", False, "no rule names this port: block log all"),
        e("inet", f"tcp:{EXT}:80", False, "the web rdr answers on .11 only; nothing passes www to the firewall"),
        e("dns1", f"tcp:{WEB}:443", True, "any internet host may reach the web pool", POOL),
        e("inet", f"icmp:{EXT}", True, "pass in quick inet proto icmp all icmp-type $icmp_types (echoreq)"),
        e("inet", "icmp:203.0.113.2", True, "the same rule lets ping reach each node's own address"),
    ]
    outbound = [
        e("client", "tcp:198.51.100.100:80", True, "pass in on $int_if ... port $web_ports; nat; pass out on $ext_if ... modulate state", ("inet",)),
        e("client", "tcp:198.51.100.100:443", True, "as www", ("inet",)),
        e("srv81", "tcp:198.51.100.100:80", True, "servers browse like clients", ("inet",)),
        e("client", "tcp:198.51.100.53:53", True, "pass in on $int_if ... to $dns_srv port domain; pass out ... to $dns_srv", ("dns1",)),
        e("client", "udp:198.51.100.53:53", True, "DNS over UDP to $dns_srv", ("dns1",)),
        e("client", "udp:198.51.100.54:53", True, "the second DNS server", ("dns2",)),
        e("client", "udp:198.51.100.100:123", True, "pass in on $int_if udp port 123; pass out on $ext_if udp port 123", ("inet",)),
        e("client", "tcp:198.51.100.100:53", False, "DNS only to $dns_srv"),
        e("client", "tcp:198.51.100.100:25", False, "'from $int_if:network port $mail_ports' matches replies from port 25, not clients to it"),
        e("client", "tcp:198.51.100.100:2222", False, "no rule names this port"),
        e("client", "tcp:192.168.1.1:8081", False, "ssh to the firewall is only passed in on $ext_if"),
        e("client", "icmp:198.51.100.100", True, "icmp-type $icmp_types in on $int_if; nat; pass out quick inet proto icmp all"),
        e("client", "icmp:192.168.1.1", True, "the LAN may ping its gateway (echoreq is in $icmp_types)"),
    ]
    return inbound + outbound


def check_matrix(running: RunningLab, timeout: float = 2.0) -> list[tuple[Expectation, ProbeResult, bool]]:
    """Probe every line of the matrix (concurrently per source host); (line, result, as expected)."""
    expectations = matrix()
    by_source: dict[str, list[Expectation]] = {}
    for expectation in expectations:
        by_source.setdefault(expectation.source, []).append(expectation)
    out = []
    for source, lines in by_source.items():
        results = running.probe(source, [line.target for line in lines], timeout=timeout)
        for line, result in zip(lines, results):
            out.append((line, result, _as_expected(line, result)))
    return out


def _as_expected(line: Expectation, result: ProbeResult) -> bool:
    if result.ok != line.allowed:
        return False
    if line.allowed and line.answered_by and result.answer.startswith("pfha-lab "):
        return result.answer.split()[1] in line.answered_by
    return True


def answered_by(result: ProbeResult) -> str:
    words = result.answer.split()
    return words[1] if len(words) > 1 and words[0] == "pfha-lab" else ""


def seen_source(result: ProbeResult) -> str:
    words = result.answer.split()
    return words[4] if len(words) > 4 and words[3] == "from" else ""


# --- CARP roles ----------------------------------------------------------------------------


def roles(running: RunningLab) -> dict[str, dict[int, str]]:
    """Per firewall, vhid -> state."""
    out = {}
    for fw in running.topology.firewalls:
        status = node_status(running, fw)
        out[fw] = {v["vhid"]: v["state"] for v in status.get("carp", {}).get("vhids", [])}
    return out


def master_of_all(running: RunningLab) -> str | None:
    """The firewall that is MASTER of every vhid whose link is up (a vhid on a cut cable is
    INIT on both sides: after a power loss the heartbeat wire rl0 is dead too)."""
    for fw, vhids in roles(running).items():
        states = set(vhids.values())
        if "MASTER" in states and states <= {"MASTER", "INIT"}:
            return fw
    return None


def wait_master(running: RunningLab, fw: str, timeout: float) -> float:
    """Seconds until ``fw`` is MASTER of every vhid; raises AssertionError on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if master_of_all(running) == fw:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{fw} did not become master within {timeout}s: {roles(running)}")


# --- failover under traffic ----------------------------------------------------------------


@dataclass
class Transfer:
    name: str
    source: str
    target: str
    proc: object = None
    result: FetchResult | None = None


@dataclass
class FailoverRun:
    how: str
    failed: str
    transfers: list[Transfer]
    takeover_seconds: float

    @property
    def ok(self) -> bool:
        return all(t.result is not None and t.result.ok for t in self.transfers)


def transfers() -> list[Transfer]:
    """One NATed connection (LAN client to an internet web server) and one redirected one
    (internet client to the web pool), both long enough to span the failover."""
    return [
        Transfer("LAN -> internet through NAT", "client", "tcp:198.51.100.100:80"),
        Transfer("internet -> web pool through rdr", "inet", f"tcp:{WEB}:80"),
    ]


def failover_under_traffic(running: RunningLab, how: str = "kill", *, nbytes: int = 6_000_000, rate: float = 1_000_000,
                           fail_after: float = 2.0, stall_timeout: float = 30.0, log: Log = lambda _m: None) -> FailoverRun:
    """Start the transfers, fail the master ``fail_after`` seconds in, wait for them to end."""
    master = master_of_all(running)
    if master is None:
        raise AssertionError(f"no single master before the failover: {roles(running)}")
    backup = next(fw for fw in running.topology.firewalls if fw != master)
    running_transfers = transfers()
    for transfer in running_transfers:
        log(f"  start {transfer.name}: {transfer.source} fetches {nbytes // 1_000_000} MB from {transfer.target} at {rate / 1e6:.1f} MB/s")
        transfer.proc = running.fetch_popen(transfer.source, transfer.target, nbytes, rate, timeout=stall_timeout)
    time.sleep(fail_after)
    failed_at = time.monotonic()
    log(f"  {running.fail(master, how)}")
    wait_master(running, backup, timeout=15)
    takeover = time.monotonic() - failed_at
    log(f"  {backup} is master {takeover:.1f} s after the failure")
    for transfer in running_transfers:
        out, err = transfer.proc.communicate(timeout=nbytes / rate + 60)
        lines = [line for line in out.splitlines() if line.startswith("{") and '"target"' in line]
        transfer.result = FetchResult(**json.loads(lines[-1])) if lines else FetchResult(transfer.target, False, 0, nbytes, 0.0, error=err.strip()[-200:])
        r = transfer.result
        verdict = "finished" if r.ok else f"BROKEN ({r.error})"
        log(f"  {transfer.name}: {verdict}: {r.received}/{r.wanted} bytes in {r.seconds:.1f} s, served by "
            f"{r.server.split()[1] if r.server else '?'}, longest stall {r.longest_stall:.1f} s")
    return FailoverRun(how, master, running_transfers, takeover)
