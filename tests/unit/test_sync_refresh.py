"""The refresh sweep's choice (pure): which dumped states go to the peer again."""

from __future__ import annotations

from pfha.sync import wire
from pfha.sync.refresh import Refresher
from pfha.sync.simnet import make_state


def sweep(r: Refresher, entries: list) -> list[bytes]:
    """One sweep as the kernel adapter runs it: identities first, records of the moved ones."""
    r.begin()
    return r.end([record for record, packets in entries if r.moved(wire.state_key(record), packets)])


def test_first_sweep_sends_what_carried_packets_and_nothing_else():
    r = Refresher()
    active, copy = make_state(1), make_state(2)
    assert sweep(r, [(active, 5), (copy, 0)]) == [active]  # a peer's copy has carried nothing


def test_later_sweeps_send_only_moving_flows():
    r = Refresher()
    a, b, c = make_state(1), make_state(2), make_state(3)
    sweep(r, [(a, 5), (b, 7), (c, 0)])
    assert sweep(r, [(a, 5), (b, 9), (c, 0)]) == [b]  # a idle, b moved, c is a copy
    assert sweep(r, [(a, 6), (b, 9), (c, 0)]) == [a]
    assert r.status() == {"sweeps": 3, "sent": 4, "tracked": 3, "without_counters": 0, "spacing": 0.0}


def test_a_copy_that_starts_carrying_traffic_is_sent_after_a_failover():
    r = Refresher()
    copy = make_state(4)
    assert sweep(r, [(copy, 0)]) == []
    assert sweep(r, [(copy, 3)]) == [copy]  # this node now forwards the flow: its timeouts count


def test_gone_states_are_forgotten_and_a_reused_tuple_starts_over():
    r = Refresher()
    a = make_state(1)
    sweep(r, [(a, 50)])
    sweep(r, [])
    assert r.status()["tracked"] == 0
    assert sweep(r, [(a, 2)]) == [a]  # a new connection on the same tuple: counted from zero


def test_no_counters_means_no_refresh_and_is_reported():
    r = Refresher()
    assert sweep(r, [(make_state(1), None), (make_state(2), None)]) == []
    assert r.status()["without_counters"] == 2


def test_the_sync_links_own_flow_is_never_sent():
    r = Refresher()
    record = bytearray(make_state(1))
    record[1] = wire.IPPROTO_PFSYNC
    assert sweep(r, [(bytes(record), 100)]) == []
