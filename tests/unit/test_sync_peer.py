"""The sync protocol core on a virtual clock and a simulated link (no root, no sockets):
loss, reordering, duplication, forged and replayed datagrams, and a bulk update while updates
flow."""

from pfha.sync import wire
from pfha.sync.peer import BulkUpdateComplete, BulkUpdateStarted, StateReceived
from pfha.sync.simnet import KEYRING, Link, SimNet, make_state


def _pair(seed=0, link=None, **config):
    net = SimNet(seed=seed, link=link)
    a, b = net.add(1, **config), net.add(2, **config)
    net.run(0.1)
    return net, a, b


def _feed(net, node, states, per_tick=20, tick=0.001, new=True):
    for i, record in enumerate(states):
        node.peer.local_update(record, net.now, new=new)
        if i % per_tick == per_tick - 1:
            net.run(tick)


def _converged(a, b):
    """b's kernel holds exactly a's table (the records a would send)."""
    return b.kernel == {k: r for k, r in a.peer.states().items()}


def test_updates_reach_the_peer_batched():
    net, a, b = _pair()
    _feed(net, a, [make_state(i) for i in range(1000)])
    net.run(1)
    assert _converged(a, b)
    assert a.peer.stats.states_sent == 1000
    assert a.peer.stats.datagrams_sent < 200  # 13 states per datagram, not one each


def test_updates_of_one_state_collapse_within_the_window():
    net, a, b = _pair(collapse_window=0.05)
    for _ in range(100):
        a.peer.local_update(make_state(7), net.now)
    net.run(0.2)
    assert a.peer.stats.states_sent == 1
    assert len([e for e in b.events if isinstance(e, StateReceived)]) == 1


def test_loss_is_recovered_by_nack_and_retransmission():
    net, a, b = _pair(seed=3, link=Link(loss=0.25))
    _feed(net, a, [make_state(i) for i in range(3000)])
    net.run(5)
    assert _converged(a, b)
    assert a.peer.stats.retransmits > 0 and b.peer.stats.nacks_sent > 0


def test_tail_loss_is_found_without_further_traffic():
    net, a, b = _pair()
    a.peer.local_update(make_state(1), net.now)
    net.link.loss = 1.0
    net.run(0.05)  # the only datagram is lost
    net.link.loss = 0.0
    net.run(2)  # retransmission timer and ALIVE recover it
    assert _converged(a, b)


def test_reordering_is_delivered_in_order():
    net, a, b = _pair(seed=5, link=Link(jitter=0.02))
    records = [make_state(i) for i in range(500)]
    _feed(net, a, records, per_tick=5)
    for i in range(0, 500, 3):  # change and delete while datagrams overtake each other
        a.peer.local_update(make_state(i, tcp_state=4), net.now)
        net.run(0.0005)
    for i in range(0, 500, 7):
        a.peer.local_delete(wire.state_key(records[i]), net.now)
        net.run(0.0005)
    net.run(3)
    assert _converged(a, b)
    assert len(b.kernel) == 500 - len(range(0, 500, 7))


def test_duplicates_are_applied_once():
    net, a, b = _pair(seed=9, link=Link(duplicate=0.5))
    _feed(net, a, [make_state(i) for i in range(400)])
    net.run(2)
    assert _converged(a, b)
    received = [e for e in b.events if isinstance(e, StateReceived)]
    assert len(received) == 400
    assert b.peer.stats.duplicates + b.peer.stats.rejects.get("replay", 0) > 0


def test_forged_datagrams_are_rejected_and_counted():
    net, a, b = _pair()
    forger = wire.Keyring({1: b"not the shared key at all, no!!!"})
    body = wire.section(wire.Action.INS, [make_state(1)])
    net.inject(2, wire.seal(forger, wire.Header(node=1, epoch=a.peer.epoch, seq=10**6, rseq=1, flags=1), body))
    corrupted = bytearray(wire.seal(KEYRING, wire.Header(node=1, epoch=a.peer.epoch, seq=10**6, rseq=1,
                                                         flags=1), body))
    corrupted[60] ^= 1
    net.inject(2, bytes(corrupted))
    net.run(0.1)
    assert b.kernel == {}
    assert b.peer.stats.rejects["auth"] == 2


def test_replayed_and_reflected_datagrams_are_rejected():
    net, a, b = _pair()
    captured = []
    net.tap = lambda sender, data: captured.append((sender, data))
    a.peer.local_update(make_state(1), net.now)
    net.run(0.5)
    a.peer.local_delete(wire.state_key(make_state(1)), net.now)
    net.run(0.5)
    assert b.kernel == {}
    events = len(b.events)
    for sender, data in captured:
        if sender == 1:
            net.inject(2, data)  # replay a's datagrams to b: the INS must not come back
        else:
            net.inject(2, data)  # b's own datagrams reflected back to it
    net.run(0.5)
    assert b.kernel == {}
    assert len(b.events) == events
    assert b.peer.stats.rejects["replay"] >= 2 and b.peer.stats.rejects["loop"] >= 1


def test_datagrams_from_an_older_epoch_are_rejected_after_a_restart():
    net, a, b = _pair()
    captured = []
    net.tap = lambda sender, data: captured.append(data) if sender == 1 else None
    a.peer.local_update(make_state(1), net.now)
    net.run(0.5)
    net.tap = None
    del net.nodes[1]
    net.add(1, epoch=a.peer.epoch + 1000)
    net.run(1)
    for data in captured:
        net.inject(2, data)
    rejects = b.peer.stats.rejects.get("replay", 0)
    net.run(0.5)
    assert b.peer.stats.rejects["replay"] == rejects + len(captured)
    assert any(e.__class__.__name__ == "PeerRestarted" for e in b.events)


def test_start_up_bulk_update_while_updates_flow():
    net = SimNet(seed=11, link=Link(loss=0.05, jitter=0.001))
    a = net.add(1)
    net.run(0.1)
    for i in range(5000):
        a.peer.local_update(make_state(i), net.now, new=True)
    net.run(0.5)
    b = net.add(2)
    # a keeps changing its table while b's bulk update runs
    for i in range(3000):
        a.peer.local_update(make_state(i % 5000 + (5000 if i % 2 else 0), tcp_state=4), net.now)
        if i % 4 == 0:
            a.peer.local_delete(wire.state_key(make_state(i)), net.now)
        if i % 30 == 0:
            net.run(0.002)
    net.run(5)
    complete = [e for e in b.events if isinstance(e, BulkUpdateComplete)]
    assert len(complete) == 1 and complete[0].succeeded and complete[0].initial
    assert any(isinstance(e, BulkUpdateStarted) for e in b.events)
    assert _converged(a, b)
    assert a.peer.stats.bulk_updates_sent == 1


def test_bulk_update_holds_every_state_when_complete():
    net, a, b = _pair()
    for i in range(2000):
        a.peer.local_update(make_state(i), net.now)
    net.run(1)
    c = net.add(3)
    while not any(isinstance(e, BulkUpdateComplete) for e in c.events):
        net.run(0.001)
    # the simulated adapter applies events as they come, so this is the table at completion
    assert set(c.kernel) >= set(a.peer.states())


def test_a_lonely_node_gives_up_the_bulk_update_after_the_last_try():
    net = SimNet()
    a = net.add(1, bulk_retry=1.0, bulk_max_tries=3)
    net.run(2.5)
    assert net.bulk_complete(1) == []
    net.run(2)
    assert net.bulk_complete(1) == [BulkUpdateComplete(False, 0, True)]
    assert a.peer.bulk_done


def test_loss_older_than_the_resend_ring_triggers_a_bulk_update():
    net, a, b = _pair(peer_timeout=0.5)
    net.nodes[2].up = False
    for i in range(300):  # b is unreachable; a forgets the datagrams once b looks dead
        a.peer.local_update(make_state(i), net.now)
        net.run(0.01)
    net.nodes[2].up = True
    net.run(5)
    assert _converged(a, b)
    assert b.peer.stats.lost_unrecoverable > 0
    assert len(net.bulk_complete(2)) == 2  # start-up, then the recovery


def test_a_backup_does_not_delete_the_masters_states():
    net, a, b = _pair()
    a.peer.local_update(make_state(1), net.now)
    net.run(0.5)
    b.peer.local_delete(wire.state_key(make_state(1)), net.now)  # b's copy timed out
    net.run(0.5)
    assert wire.state_key(make_state(1)) in a.kernel or wire.state_key(make_state(1)) in a.peer.states()
    assert b.peer.stats.deletes_sent == 0


def test_a_state_taken_over_by_the_backup_is_synced_back():
    net, a, b = _pair()
    a.peer.local_update(make_state(1), net.now)
    net.run(0.5)
    b.peer.local_update(make_state(1, tcp_state=5), net.now)  # after failover b sees it change
    net.run(0.5)
    assert wire.State.unpack(a.kernel[wire.state_key(make_state(1))]).tcp_state == 5
    b.peer.local_delete(wire.state_key(make_state(1)), net.now)
    net.run(0.5)
    assert wire.state_key(make_state(1)) not in a.kernel


def test_own_state_deleted_while_the_peer_answers_a_bulk_is_not_resurrected():
    """Regression: a master deleting its states while the peer's bulk answer (which echoes them)
    is in flight took them back as the peer's and kept them forever."""
    net, a, b = _pair()
    for i in range(200):
        a.peer.local_update(make_state(i), net.now)
    net.run(0.5)
    b.peer._start_bulk_answer(nonce=a.peer.epoch)  # b's table, echoed to a...
    a.peer._bulk_nonce = a.peer.epoch  # ...as the answer to a bulk request of a's
    for i in range(200):  # ...while a deletes them all
        a.peer.local_delete(wire.state_key(make_state(i)), net.now)
    net.run(2)
    assert a.peer.states() == {} and b.kernel == {}
    assert a.peer.stats.stale > 0


def test_clear_removes_only_the_senders_states():
    net, a, b = _pair()
    for i in range(50):
        a.peer.local_update(make_state(i), net.now)
    b.peer.local_update(make_state(1000), net.now)
    net.run(0.5)
    assert len(b.kernel) == 50 and len(a.kernel) == 1
    a.peer.local_clear(net.now)
    net.run(0.5)
    assert b.kernel == {} and set(b.peer.states()) == {wire.state_key(make_state(1000))}
    assert set(a.peer.states()) == {wire.state_key(make_state(1000))}


def test_a_repeated_destroy_keeps_the_queued_delete():
    """Regression (found by the simulation): a second DESTROY for a state already deleted
    dropped the DEL still waiting in the collapse queue, so the backup kept the state."""
    net, a, b = _pair()
    a.peer.local_update(make_state(0), net.now, new=True)
    net.run(0.001)
    a.peer.local_delete(wire.state_key(make_state(0)), net.now)
    a.peer.local_delete(wire.state_key(make_state(0)), net.now)
    net.run(0.5)
    assert b.kernel == {}


def test_batched_local_updates_equal_one_by_one():
    from pfha.sync.peer import Config, Peer

    config = Config(node_id=7, keyring=KEYRING, request_bulk_on_start=False)
    one, many = Peer(config, epoch=5, now=0.0), Peer(config, epoch=5, now=0.0)
    changes = [(make_state(i % 40), i < 40 or i % 3 == 0) for i in range(100)]  # repeats collapse
    for record, new in changes:
        one.local_update(record, 0.5, new)
    many.local_updates(changes[:30], 0.5)
    many.local_updates(changes[30:], 0.5)
    assert one.states() == many.states()
    assert one._pending == many._pending and list(one._out) == list(many._out)
    assert one._pending_since == many._pending_since == 0.5
    assert one.datagrams_to_send(1.0) == many.datagrams_to_send(1.0)


def test_a_run_of_records_equals_them_one_by_one():
    """``local_run`` (the intake's runs) fills in creator and version column by column: the same
    table and the same datagrams as ``local_updates``, for new states and for changes."""
    from pfha.sync.peer import Config, Peer

    config = Config(node_id=0x0A0B0C0D, keyring=KEYRING, request_bulk_on_start=False)
    for new in (True, False):
        one, run = Peer(config, epoch=5, now=0.0), Peer(config, epoch=5, now=0.0)
        records = [make_state(i, tcp_state=1 + i % 9) for i in range(40)]
        one.local_updates([(r, new) for r in records[:3]], 0.5)
        run.local_run(b"".join(records[:3]), 0.5, new)  # fewer than a datagram: they wait
        assert one._pending == run._pending and one._pending_since == run._pending_since == 0.5
        one.local_updates([(r, new) for r in records[3:]], 0.5)
        run.local_run(b"".join(records[3:]), 0.5, new)
        assert one.states() == run.states() and one._version == run._version
        for peer in (one, run):
            peer.handle_timer(0.5)
        assert one.datagrams_to_send(0.5) == run.datagrams_to_send(0.5)


def test_a_run_collapses_a_state_repeated_in_it():
    from pfha.sync.peer import Config, Peer

    peer = Peer(Config(node_id=7, keyring=KEYRING, request_bulk_on_start=False), epoch=5, now=0.0)
    peer.local_run(make_state(1), 0.1, True)  # pending INS
    peer.local_run(make_state(1, tcp_state=4) + make_state(2) + make_state(1, tcp_state=5), 0.1, False)
    action, record = peer._pending[wire.state_key(make_state(1))]
    assert action == wire.Action.INS and wire.State.unpack(record).tcp_state == 5  # still new, newest
    assert wire.creator_version(record) == (7, (5 << 20) + 4)
    assert peer._pending[wire.state_key(make_state(2))][0] == wire.Action.UPD


def test_a_joining_node_takes_a_busy_stream_at_once():
    """B starts while A streams more than a window of datagrams and B's first bulk request is
    lost: B delivers A's stream as it comes (before: it held the stream back until the BUS START
    answering its request, which could not pass A's full window until B's request gave up), and
    its bulk update still completes."""
    net = SimNet(seed=1)
    a = net.add(1)
    net.run(0.1)
    net.link.loss = 1.0  # B's first BULK_REQ and A's first datagrams to B are lost
    b = net.add(2, bulk_retry=0.5)
    net.run(0.01)
    net.link.loss = 0.0
    states = [make_state(i) for i in range(26 * 256 + 13)]  # more than a window of datagrams
    for i in range(0, len(states), 130):
        a.peer.local_updates([(r, True) for r in states[i:i + 130]], net.now)
        net.run(0.002)
    assert len(b.kernel) > 20 * 256  # delivered while the bulk request is still out
    assert b.peer.stats.lost_unrecoverable == 0
    net.run(3)
    assert _converged(a, b)
    assert [e.succeeded for e in net.bulk_complete(2)] == [True]


def test_a_bulk_that_began_before_we_joined_is_asked_for_again():
    """B joins A's stream after the datagram carrying the BUS START of its bulk (lost): the END
    alone does not complete the bulk (part of it passed B by); the retry gets a whole one."""
    net = SimNet(seed=2)
    a = net.add(1)
    for i in range(200):
        a.peer.local_update(make_state(i), net.now)
    net.run(0.1)
    b = net.add(2, bulk_retry=0.5)
    dropped = []

    def drop_the_start(sender, data):
        if sender == 1 and not dropped and wire.BUS.pack(wire.BulkStatus.START, b.peer._bulk_nonce) in data:
            dropped.append(data)
            net.link.loss = 1.0
        elif net.link.loss:
            net.link.loss = 0.0

    net.tap = drop_the_start
    net.run(0.3)
    assert dropped and not net.bulk_complete(2)  # the first answer's END came: not complete
    net.tap = None
    net.run(3)
    assert [e.succeeded for e in net.bulk_complete(2)] == [True]
    assert a.peer.stats.bulk_updates_sent == 2  # answered again, from the START this time
    assert _converged(a, b)


def test_the_runner_holds_its_intake_only_while_events_trickle_in_fast():
    """Interrupt moderation (Runner._moderate): a lone event is read at once; small reads in
    quick succession (faster than 4 per hold) pause the reader for the hold; after it, it holds
    again while enough came, and stops when they slow down; a full read never holds."""
    import asyncio
    import os

    from pfha.sync.runner import Runner

    class Intake:  # the runner only needs the event socket's fd here: a real pipe's
        def __init__(self, fd):
            self.fd = fd

        def fileno(self):
            return self.fd

    loop = asyncio.new_event_loop()
    rfd, wfd = os.pipe()
    try:
        runner = object.__new__(Runner)
        runner.read_hold, runner._last_read, runner._holding, runner._trickle = 0.001, -1e9, False, False
        runner.counters, runner._loop, runner.intake = {"holds": 0}, loop, Intake(rfd)
        loop.add_reader(rfd, lambda: None)

        def reading():
            return rfd in {key.fd for key in loop._selector.get_map().values()}

        runner._moderate(1, 10.0)  # after a quiet spell: no hold
        runner._moderate(1, 10.001)  # 1 ms later: slower than 4 per hold, no hold
        assert runner.counters["holds"] == 0 and reading()
        runner._moderate(1, 10.00105)  # 50 µs later: trickling fast
        assert runner.counters["holds"] == 1 and runner._holding and not reading()
        runner._holding = False
        runner._moderate(12, 10.0021)  # the read after the hold: 12 came, hold again
        assert runner.counters["holds"] == 2
        runner._holding = False
        runner._moderate(2, 10.0032)  # only 2 came during the hold: read as they come again
        runner._moderate(256, 10.0032)  # a burst: never held
        assert runner.counters["holds"] == 2 and not runner._trickle
    finally:
        loop.close()
        os.close(rfd)
        os.close(wfd)
