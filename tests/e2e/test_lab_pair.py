"""The tutorial's pair end to end, corrected configs: every service the ruleset allows is
reachable from where it should be and nothing else is; NAT uses the shared address; the web
pool balances; failovers (kill, cable cut, orderly stop) in the middle of NATed and redirected
transfers lose no connection; fw1 takes MASTER back only after its bulk update."""

from __future__ import annotations

import time

import pytest

from conftest import requires_root
from lab_helpers import tutorial_lab

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def pair():
    from pfha.lab import scenarios

    with tutorial_lab("p", "corrected") as running:
        scenarios.wait_master(running, "fw1", timeout=30)
        yield running


def test_reachability_matrix(pair):
    from pfha.lab import scenarios

    results = scenarios.check_matrix(pair)
    wrong = [f"{line.source} -> {line.target}: expected {'open' if line.allowed else 'blocked'}, got "
             f"{result.answer or result.error or 'blocked'} ({line.why})"
             for line, result, ok in results if not ok]
    assert not wrong, "\n".join(wrong)
    assert len(results) == len(scenarios.matrix())


def test_nat_uses_the_shared_address_and_rdr_balances(pair):
    from pfha.lab import scenarios

    (lan,) = pair.probe("client", ["tcp:198.51.100.100:80"])
    assert scenarios.seen_source(lan) == "203.0.113.10", lan
    web = pair.probe("inet", [f"tcp:{scenarios.WEB}:80"] * 6)
    servers = {scenarios.answered_by(r) for r in web}
    assert servers <= set(scenarios.POOL) and len(servers) >= 2, web  # round-robin, not first-match only


def test_ruleset_and_sync_running_on_both(pair):
    from pfha.lab.nodes import node_status

    for fw in ("fw1", "fw2"):
        status = node_status(pair, fw)
        assert status["ruleset"]["state"] == "loaded", status["ruleset"]
        assert status["sync"]["state"] == "running" and status["sync"]["peers"], status["sync"]
        assert status["sync"]["bulk_done_at"] is not None


@pytest.mark.parametrize("how", ["kill", "link", "stop"])
def test_failover_under_traffic_loses_no_connection(pair, how):
    from pfha.lab import scenarios
    from pfha.lab.nodes import node_status

    run = scenarios.failover_under_traffic(pair, how, nbytes=4_000_000, rate=800_000, fail_after=1.5)
    problems = [f"{t.name}: {t.result}" for t in run.transfers if not (t.result and t.result.ok)]
    assert not problems, "\n".join(problems)
    assert run.failed == "fw1"
    # fw1 comes back, asks for a bulk update, and takes over again (preempt) only after it
    recovered_at = time.time()
    pair.recover("fw1")
    scenarios.wait_master(pair, "fw1", timeout=60)
    status = node_status(pair, "fw1")
    became_master = max(v["since"] for v in status["carp"]["vhids"])
    bulk_done = status["sync"]["bulk_done_at"]
    if how == "link":  # the node ran on through the cable cut: its states never went away
        assert became_master >= recovered_at
    else:  # a restarted node: master only once the bulk update from fw2 is in
        assert bulk_done is not None and recovered_at <= bulk_done <= became_master, (recovered_at, bulk_done, became_master)
