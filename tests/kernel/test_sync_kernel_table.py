"""The ctnetlink adapter against a real kernel, inside a scratch namespace: batched installs
(create, EEXIST -> update, ENOENT -> create), deletes, dumps, the event intake with its ct-mark
filter, and the in-kernel drop of our own writes' echoes."""

import json
import os
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, socket, subprocess, time
    from pfha.sync import wire
    from pfha.sync.conntrack import EventSource, KernelTable, KIND_NEW, KIND_DESTROY
    from pfha.sync.simnet import make_state

    out = {}
    table = KernelTable()
    events = EventSource(mark_mask=0x3)
    events.ignore_writer(table.pid)
    kernel_only = EventSource(mark_mask=0x3)  # the kernel filters by mark; user space does not
    kernel_only.decoder.mark_mask = 0
    records = [make_state(i) for i in range(500)]
    table.install([(r, False) for r in records])
    out["after_install"] = dict(table.counters)
    # an existing one as new (EEXIST -> update), an unknown one as known (ENOENT -> create)
    changed = wire.State.unpack(make_state(3))
    table.install([(make_state(3, tcp_state=4), False), (make_state(100000), True)])
    out["after_retry"] = dict(table.counters)
    dumped = {wire.state_key(e.record): wire.State.unpack(e.record) for e in table.dump(0x3)}
    out["dumped"] = len(dumped)
    out["state3"] = dumped[wire.state_key(make_state(3))].tcp_state
    nat = dumped[wire.state_key(make_state(7))]
    out["nat7"] = [nat.reply.dst, nat.reply.dport, nat.status & 0x30, nat.wscale, nat.mark]
    table.delete([wire.state_key(r) for r in records[:50]])
    out["after_delete"] = dict(table.counters)
    out["count"] = len(table.dump(0))
    time.sleep(0.2)
    seen, _ = events.read()
    out["own_echoes_seen"] = len(seen)
    out["own_echoes_reached_user_space"] = events.ignored  # 0: the BPF filter dropped them
    # events from someone else's writes (pid != ours): marked ones pass the filter
    for mark in (0x101, 0x100):
        subprocess.run(["conntrack", "-I", "-p", "udp", "-s", "192.0.2.1", "-d", "192.0.2.2", "--sport",
                        str(mark), "--dport", "53", "-t", "60", "-m", str(mark)], check=True,
                       capture_output=True)
    time.sleep(0.2)
    seen, overrun = events.read()
    out["foreign"] = [[e.kind, e.mark] for e in seen]
    out["foreign_past_the_kernel"] = [[e.kind, e.mark] for e in kernel_only.read()[0]
                                      if wire.State.unpack(e.record).orig.src == "192.0.2.1"]
    print(json.dumps(out))
""")


@pytest.mark.root
def test_install_update_delete_dump_and_events(lab):
    ns = lab.ns("ct")
    ns.exec("nft", "-f", "-", input="table inet t {\n chain c {\n  type filter hook prerouting priority 0;\n"
                                    "  ct state new counter\n }\n}\n")
    env_path = str(REPO / "src")
    proc = ns.exec("env", f"PYTHONPATH={env_path}", sys.executable, "-c", SCRIPT, timeout=60)
    out = json.loads(proc.stdout)
    assert out["after_install"] == {"created": 500, "updated": 0, "deleted": 0, "errors": 0}
    assert out["after_retry"]["errors"] == 0
    assert out["dumped"] == 501 and out["state3"] == 4
    assert out["nat7"] == ["10.0.2.1", 20007, 0x10, [7, 7], 0x101]  # source NAT kept
    assert out["after_delete"]["deleted"] == 50 and out["count"] == 451
    assert out["own_echoes_seen"] == 0 and out["own_echoes_reached_user_space"] == 0
    assert out["foreign"] == [[1, 0x101]]  # the unmarked entry is not ours to sync
    assert out["foreign_past_the_kernel"] == [[1, 0x101]]  # dropped by the BPF filter already


BATCH_SCRIPT = textwrap.dedent("""
    import json, time
    from pfha.sync import conntrack
    from pfha.sync.conntrack import EventSource, KernelTable
    from pfha.sync.simnet import make_state

    batched, single = EventSource(mark_mask=0x3), EventSource(mark_mask=0x3)
    single._batch = None  # the recv_into fallback
    writer = KernelTable()  # not ignored by either: its writes are "foreign" events here
    records = [make_state(i) for i in range(700)]
    writer.install([(r, False) for r in records])
    writer.delete([r[:40] for r in records[:100]])
    time.sleep(0.3)
    out = {"batched_available": batched._batch is not None}
    for name, source in (("batched", batched), ("single", single)):
        conntrack._LAYOUTS.clear()  # each learns from scratch
        if name == "batched":
            items, overrun = source.read_runs()
            out["runs"] = [item.count for item in items if isinstance(item, conntrack.Run)]
            events = []
            for item in items:  # the runs taken apart as read() does
                if isinstance(item, conntrack.Run):
                    for i, pid in enumerate(memoryview(item.pids).cast("I")):
                        record = item.records[i * 108:(i + 1) * 108]
                        events.append(conntrack.Event(item.kind, pid, int.from_bytes(record[96:100], "big"), record))
                else:
                    events.append(item)
        else:
            events, overrun = source.read()
        out[name] = [[e.kind, e.pid, e.mark, e.record.hex()] for e in events]
        out[name + "_overrun"] = overrun
    print(json.dumps(out))
""")


@pytest.mark.root
def test_batched_event_reads_equal_one_at_a_time(lab):
    """recvmmsg reads (256 per call), runs decoded in columns and learned layouts give exactly
    what recv_into one event at a time gives, for 800 events of the kernel (creates, then
    destroys)."""
    ns = lab.ns("ctb")
    proc = ns.exec("env", "-u", "PFHA_SYNC_NO_RECVMMSG", f"PYTHONPATH={REPO / 'src'}", sys.executable, "-c",
                   BATCH_SCRIPT, timeout=60)  # this test compares both read paths itself
    out = json.loads(proc.stdout)
    assert out["batched_available"]
    assert not out["batched_overrun"] and not out["single_overrun"]
    assert len(out["batched"]) == 800
    assert out["batched"] == out["single"]
    assert sum(out["runs"]) > 700  # most came as runs, decoded in columns
    kinds = [kind for kind, *_ in out["batched"]]
    assert kinds.count(1) == 700 and kinds.count(3) == 100
