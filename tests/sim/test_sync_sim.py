"""Deterministic simulation of a sync pair under random faults: whatever the loss, duplication,
reordering, restarts and the order of changes, once the link is quiet the backup's kernel holds
exactly the master's table. Seeded, so every failure replays."""

from hypothesis import given, settings, strategies as st

from pfha.sync import wire
from pfha.sync.peer import BulkUpdateComplete
from pfha.sync.simnet import Link, SimNet, make_state

operations = st.lists(st.tuples(st.sampled_from(["new", "update", "delete", "tick"]),
                                st.integers(0, 300)), min_size=1, max_size=400)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), collapse=st.sampled_from([0.0, 0.005]), loss=st.sampled_from([0.0, 0.1, 0.3]),
       duplicate=st.sampled_from([0.0, 0.2]), jitter=st.sampled_from([0.0, 0.003, 0.03]),
       ops=operations, restart_at=st.one_of(st.none(), st.integers(0, 399)))
def test_backup_converges_to_the_master(seed, collapse, loss, duplicate, jitter, ops, restart_at):
    net = SimNet(seed=seed, link=Link(loss=loss, duplicate=duplicate, jitter=jitter))
    master = net.add(1, collapse_window=collapse)
    net.add(2, collapse_window=collapse)
    net.run(0.05)
    for n, (op, i) in enumerate(ops):
        if op == "new":
            master.peer.local_update(make_state(i), net.now, new=True)
        elif op == "update":
            master.peer.local_update(make_state(i, tcp_state=4 + n % 4), net.now)
        elif op == "delete":
            master.peer.local_delete(wire.state_key(make_state(i)), net.now)
        else:
            net.run(0.001 * (i % 20))
        if n == restart_at:  # the backup restarts: empty kernel, new epoch, bulk update
            net.add(2, epoch=int(net.now * 1000) + 10**6, collapse_window=collapse)
    net.link = Link()  # faults end; the protocol must now converge on its own
    net.run(15)
    backup = net.nodes[2]
    assert backup.kernel == master.peer.states()
    assert [e.succeeded for e in backup.events if isinstance(e, BulkUpdateComplete)] == [True]
