"""The CARP state machine with an injected clock: timers, receive rules, demotion, counters."""

from __future__ import annotations

import ipaddress
import random

import pytest

from pfha.carp import wire
from pfha.carp.machine import (
    TRANSITIONS, Demotion, Dropped, Node, SendAdvert,
    State, StateChanged, Trigger, Vhid, VhidConfig, diagram,
)
from pfha.carp.wire import Advertisement, DropReason

VIP = ipaddress.IPv4Interface("10.99.0.100/24")
KEY = wire.carp_key("secretpass")
ME = ipaddress.IPv4Address("10.99.0.1")
PEER = ipaddress.IPv4Address("10.99.0.2")


def config(**kw):
    base = dict(vhid=1, interface="eth0", addresses=(VIP,), key=KEY, advbase=1, advskew=0, source=ME)
    base.update(kw)
    return VhidConfig(**base)


def group(**kw):
    return Vhid(config(**kw), rng=random.Random(1))


def peer_advert(advbase=1, advskew=100, counter=1000, demote=0, vhid=1, key=KEY, vips=(VIP.ip,)):
    digest = wire.compute_digest(key, vhid, list(vips), [], counter)
    return wire.encode(Advertisement(vhid, advbase, advskew, counter, digest, demote=demote))


def kinds(actions):
    return [type(a).__name__ for a in actions]


def test_start_goes_backup_then_master_after_master_down():
    g = group(advskew=100)
    g.start(0.0)
    acts = g.actions()
    assert kinds(acts) == ["StateChanged", "ReleaseAddresses"]
    assert g.state is State.BACKUP and g.next_deadline() == pytest.approx(3 + 100 / 256)
    g.handle_timer(3.0)
    assert g.state is State.BACKUP
    g.handle_timer(3.390625)
    acts = g.actions()
    assert kinds(acts) == ["StateChanged", "AcquireAddresses", "SendAdvert", "Announce"]
    assert acts[0].reason == "BACKUP -> MASTER: no advert heard for 3.4 s"
    assert g.next_deadline() == pytest.approx(3.390625 + 1 + 100 / 256)


def test_master_down_is_own_timers_skew_added_once_and_subsecond():
    assert group(advbase=1, advskew=100).master_down_interval == pytest.approx(3.390625)
    assert group(advbase=0, advskew=26).master_down_interval == pytest.approx(3 * 26 / 256)
    assert group(advbase=0, advskew=0).advert_interval == pytest.approx(1 / 256)
    assert group(advbase=0, advskew=26).advert_interval == pytest.approx(26 / 256)


def test_master_advertises_every_period_and_repeats_garp_two_adverts_later():
    g = group()
    g.start(0)
    g.handle_timer(3.0)
    g.actions()
    sent = []
    t = 3.0
    for _ in range(4):
        t = g.next_deadline()
        g.handle_timer(t)
        sent.append(kinds(g.actions()))
    assert sent == [["SendAdvert"], ["SendAdvert", "Announce"], ["SendAdvert"], ["SendAdvert"]]
    assert t == pytest.approx(7.0)


def test_backup_restarts_timer_on_each_advert_and_names_the_silent_master():
    g = group(advskew=100)
    g.start(0)
    g.actions()
    assert g.receive(peer_advert(advskew=0), 2.0, source=PEER) is not None
    assert g.next_deadline() == pytest.approx(2 + 3.390625)
    g.handle_timer(5.390625)
    change = g.actions()[0]
    assert isinstance(change, StateChanged)
    assert change.reason == "BACKUP -> MASTER: no advert from 10.99.0.2 for 3.4 s"


def become_master(g, t=3.0):
    g.start(0)
    g.handle_timer(g.next_deadline())
    g.actions()


@pytest.mark.parametrize(
    "ours, theirs_skew, tie_source, steps_down",
    [
        (100, 0, PEER, True),  # faster master: step down
        (0, 100, PEER, False),  # slower master: reassert
        (50, 50, PEER, False),  # tie, our address is lower: keep it
        (50, 50, ipaddress.IPv4Address("10.99.0.0"), True),  # tie, theirs lower: yield
    ],
)
def test_master_receive_rules(ours, theirs_skew, tie_source, steps_down):
    g = group(advskew=ours)
    become_master(g)
    g.receive(peer_advert(advskew=theirs_skew), 10.0, source=tie_source)
    acts = g.actions()
    if steps_down:
        assert g.state is State.BACKUP and kinds(acts) == ["StateChanged", "ReleaseAddresses"]
        assert "preferred master" in acts[0].reason
    else:
        assert g.state is State.MASTER and kinds(acts) == ["SendAdvert", "Announce"]


@pytest.mark.parametrize("preempt, becomes_master", [(True, True), (False, False)])
def test_backup_preempts_slower_master_only_with_preempt(preempt, becomes_master):
    g = group(advskew=0, preempt=preempt)
    g.start(0)
    g.actions()
    g.receive(peer_advert(advskew=100), 1.0, source=PEER)
    assert (g.state is State.MASTER) is becomes_master
    if becomes_master:
        assert "preempting slower master 10.99.0.2" in g.actions()[0].reason


def test_bow_out_and_slow_master_make_backup_take_over_at_once():
    g = group(advskew=100)
    g.start(0)
    g.receive(peer_advert(advbase=255, advskew=255), 1.0, source=PEER)
    assert g.state is State.MASTER and g.actions()[2].reason.endswith("10.99.0.2 bowed out")
    h = group(advskew=100)
    h.start(0)
    h.receive(peer_advert(advbase=5, advskew=0), 1.0, source=PEER)  # 5 s > 3.39 s
    assert h.state is State.MASTER


def test_openbsd_demote_byte():
    g = group(advskew=100)  # backup, no preempt
    g.start(0)
    g.receive(peer_advert(advskew=0, demote=1), 1.0, source=PEER)
    assert g.state is State.MASTER
    d = Demotion()
    m = Vhid(config(advskew=0), d, rng=random.Random(2))
    become_master(m)
    d.demote("link down on eth1")
    m.receive(peer_advert(advskew=100, demote=0), 20.0, source=PEER)
    assert m.state is State.BACKUP and "less demoted" in m.actions()[0].reason


def test_shutdown_bows_out():
    g = group()
    become_master(g)
    g.shutdown(10.0)
    acts = g.actions()
    assert kinds(acts) == ["SendAdvert", "StateChanged", "ReleaseAddresses"]
    assert acts[0].advert.is_bow_out and wire.decode(acts[0].payload).advbase == 255
    assert g.state is State.INIT and g.next_deadline() is None


def test_counter_fresh_until_heard_then_adopted_plus_one():
    g = group(advskew=100)
    become_master(g)
    first = g.counter
    assert first is None  # never heard a master: fresh random cookies
    g.handle_timer(g.next_deadline())
    g.handle_timer(g.next_deadline())
    c1, c2 = [a.advert.counter for a in g.actions() if isinstance(a, SendAdvert)]
    assert c2 != c1 + 1
    g.receive(peer_advert(advskew=200, counter=2**64 - 1), 30.0, source=PEER)  # slower: reassert
    sent = [a.advert.counter for a in g.actions() if isinstance(a, SendAdvert)]
    assert sent == [0]  # wraps modulo 2**64


@pytest.mark.parametrize(
    "payload, ttl, reason",
    [
        (peer_advert(), 64, DropReason.TTL),
        (peer_advert()[:6] + b"\0\0" + peer_advert()[8:], 255, DropReason.CHECKSUM),
        (peer_advert(vhid=2), 255, DropReason.VHID),
        (peer_advert(key=b"wrongpass"), 255, DropReason.HMAC),
        (peer_advert(vips=(ipaddress.IPv4Address("10.99.0.101"),)), 255, DropReason.HMAC),
        (wire.encode(Advertisement(1, 1, 0, 5, b"\0" * 20, version=1)), 255, DropReason.VERSION),
    ],
)
def test_bad_adverts_dropped_counted_no_state_change(payload, ttl, reason):
    g = group(advskew=100)
    g.start(0)
    g.actions()
    deadline = g.next_deadline()
    assert g.receive(payload, 1.0, source=PEER, ttl=ttl) is None
    acts = g.actions()
    assert kinds(acts) == ["Dropped"] and acts[0].reason is reason
    assert g.stats[reason.value] == 1 and g.state is State.BACKUP and g.next_deadline() == deadline


def test_own_adverts_are_a_loop():
    g = group()
    become_master(g)
    g.handle_timer(g.next_deadline())
    mine = [a for a in g.actions() if isinstance(a, SendAdvert)][-1]
    g.receive(mine.payload, 5.0, source=PEER)
    g.receive(peer_advert(advskew=0), 5.0, source=ME)
    assert g.stats["loop"] == 2 and g.state is State.MASTER


def test_init_ignores_adverts():
    g = group()
    assert g.receive(peer_advert(), 1.0, source=PEER) is not None
    assert g.state is State.INIT and g.actions() == []


def test_link_down_demotes_every_group_and_recovers():
    cfgs = [config(vhid=1, interface="eth0"), config(vhid=2, interface="eth1", addresses=(ipaddress.IPv4Interface("10.98.0.100/24"),))]
    node = Node(cfgs, rng=random.Random(3))
    node.start(0)
    node.handle_timer(3.0)
    node.actions()
    eth1 = node.groups[("eth1", 2)]
    node.set_link("eth0", False, 4.0)
    assert node.groups[("eth0", 1)].state is State.INIT
    assert node.demotion.value == 1 and eth1.advskew == 240
    assert node.next_deadline() == 0.0  # every master advertises the demotion at once
    node.handle_timer(4.0)
    sent = [a for a in node.actions() if isinstance(a, SendAdvert)]
    assert [(a.vhid, a.advert.advskew, a.advert.demote) for a in sent] == [(2, 240, 1)]
    node.set_link("eth0", True, 6.0)
    assert node.demotion.value == 0 and node.groups[("eth0", 1)].state is State.BACKUP
    node.handle_timer(6.0)
    assert [a.advert.advskew for a in node.actions() if isinstance(a, SendAdvert)] == [0]


def test_demotion_reasons_are_idempotent_and_adjustable():
    d = Demotion()
    d.demote("link down on eth0")
    d.demote("link down on eth0")
    d.adjust(32, "pfsync bulk update")
    assert d.value == 33
    d.adjust(-32, "pfsync bulk update")
    d.undemote("link down on eth0")
    assert d.value == 0 and d.reasons == {}


def test_send_errors_demote_after_three_and_recover_after_three():
    d = Demotion()
    g = Vhid(config(), d)
    for _ in range(2):
        g.report_send(False)
    assert d.value == 0
    g.report_send(False)
    assert d.value == 1
    for _ in range(2):
        g.report_send(True)
    assert d.value == 1
    g.report_send(True)
    assert d.value == 0


def test_node_counts_unknown_vhid():
    node = Node([config()])
    node.start(0)
    node.actions()
    node.receive("eth0", peer_advert(vhid=9), 1.0, source=PEER)
    acts = node.actions()
    assert isinstance(acts[0], Dropped) and acts[0].reason is DropReason.VHID and node.stats["vhid"] == 1


def test_transition_table_and_diagram_agree():
    text = diagram()
    for old, edges in TRANSITIONS.items():
        for trigger, new in edges.items():
            assert f"{old.value} --> {new.value}: {trigger.value}" in text
    assert TRANSITIONS[State.MASTER][Trigger.PREFERRED_MASTER] is State.BACKUP


def test_config_validation():
    with pytest.raises(ValueError):
        config(vhid=0)
    with pytest.raises(ValueError):
        config(advskew=255)
    with pytest.raises(ValueError):
        config(key=b"x" * 20)
    with pytest.raises(ValueError):
        config(addresses=())


def test_docs_diagram_is_generated_from_the_table():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "carp.md"
    assert f"```mermaid\n{diagram()}\n```" in docs.read_text()
