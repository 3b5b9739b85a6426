"""The tutorial as published, run as is: its flaw shows. ``pass quick on $pfs_if proto pfsync``
names dc0 while pfsync runs over rl0, so ``block log all`` drops state sync, and NAT translates
to each node's own address: a failover breaks the connections that were running."""

from __future__ import annotations

import time

import pytest

from conftest import requires_root
from lab_helpers import tutorial_lab

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def published():
    from pfha.lab import scenarios

    from pfha.lab.nodes import node_status

    with tutorial_lab("a", "as-published") as running:
        # Both nodes advertise advskew 0, so which one is master is left to chance, and each
        # stays demoted until its (blocked) bulk update gives up: wait until neither is demoted
        # and one master has held every vhid for a while, or the failover below may kill a node
        # that has just stopped carrying the traffic.
        deadline = time.monotonic() + 60
        stable_since, last = time.monotonic(), None
        while True:
            assert time.monotonic() < deadline, scenarios.roles(running)
            demoted = any(node_status(running, fw)["carp"]["demoted"] for fw in ("fw1", "fw2"))
            master = None if demoted else scenarios.master_of_all(running)
            if master is None or master != last:
                stable_since, last = time.monotonic(), master
            elif time.monotonic() - stable_since >= 2.0:
                break
            time.sleep(0.2)
        yield running


def test_state_sync_is_blocked_by_the_ruleset(published):
    from pfha.lab.nodes import node_status

    for fw in ("fw1", "fw2"):
        sync = node_status(published, fw)["sync"]
        assert sync["state"] == "running"
        assert not sync["peers"], sync  # nothing from the peer ever gets through
        # the bulk update never arrives: it is given up (which lifts the CARP demotion), not received
        assert sync["counters"]["bulk_updates_received"] == 0, sync
    # and pflog shows the drops: the blocked pfsync packets are logged by "block log all"
    pflog = node_status(published, "fw2")["pflog"]
    assert pflog["written"] > 0, pflog
    assert _pfsync_logged(pflog["file"])


def _pfsync_logged(path: str) -> bool:
    """A pflog record of a blocked IP packet with protocol 240 (pfsync) in the node's pflog file."""
    from pfha.pflog.format import split
    from pfha.pflog.pcap import PcapReader

    with open(path, "rb") as stream:
        for record in PcapReader(stream):
            header, packet = split(record.data)
            if len(packet) > 9 and packet[0] >> 4 == 4 and packet[9] == 240:
                return True
    return False


def test_nat_uses_each_nodes_own_address(published):
    from pfha.lab import scenarios

    master = scenarios.master_of_all(published)
    own = published.topology.host(master).interface("xl0").ip
    (lan,) = published.probe("client", ["tcp:198.51.100.100:80"])
    assert lan.ok and scenarios.seen_source(lan) == own, (master, lan)  # the master's xl0, not the CARP address


def test_three_rdr_rules_never_balance(published):
    from pfha.lab import scenarios

    web = published.probe("inet", [f"tcp:{scenarios.WEB}:80"] * 6)
    assert {scenarios.answered_by(r) for r in web} == {"srv80"}, web  # translation is first-match


def test_failover_breaks_running_connections(published):
    from pfha.lab import scenarios

    run = scenarios.failover_under_traffic(published, "kill", nbytes=3_000_000, rate=800_000, fail_after=1.5,
                                           stall_timeout=8)
    broken = [t for t in run.transfers if not (t.result and t.result.ok)]
    assert broken, [t.result for t in run.transfers]
    nat = run.transfers[0]
    assert not nat.result.ok, nat.result  # NATed to the dead node's own address: cannot survive
