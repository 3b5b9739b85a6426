"""Sequence adjustments against a real kernel, in a scratch namespace: an entry installed with
one through KernelTable (created with it, or updated with it after it was created without one,
as when the NEW event was synced before synproxy set the offsets) reads back with it from a
dump, with IPS_SEQ_ADJUST set, so a synproxied connection's translation survives on the node
that takes over."""

import json
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, subprocess
    from pfha.sync import wire
    from pfha.sync.conntrack import KernelTable

    def state(i, seqadj):
        return wire.State(wire.AF_INET, 6, wire.Tuple("198.51.100.7", "192.168.1.100", 40000 + i, 8080),
                          wire.Tuple("192.168.1.100", "198.51.100.7", 8080, 40000 + i),
                          status=0xE | (0x40 if seqadj else 0), timeout=600, mark=0x101, tcp_state=3,
                          wscale=(7, 7), tcp_flags=(3, 3), seqadj=seqadj)

    A = (0, 0x8F3A2211, 0x8F3A2211, 0, 0x70C5DDEF, 0x70C5DDEF)
    B = (1000, 5, 7, 2000, 0xFFFFFFFB, 0xFFFFFFF9)
    table = KernelTable()
    out = {}
    table.install([(state(1, A).pack(), False),        # created with its adjustment
                   (state(2, None).pack(), False),     # synced before synproxy set it...
                   (state(3, None).pack(), False)])
    table.install([(state(2, A).pack(), True)])        # ...then updated with it
    table.install([(state(1, B).pack(), True),         # a changed adjustment
                   (state(4, A).pack(), True)])        # known to the core, gone from the kernel: created
    out["counters"] = dict(table.counters)
    dumped = {wire.State.unpack(e.record).orig.sport - 40000: wire.State.unpack(e.record) for e in table.dump(0)}
    out["seqadj"] = {i: s.seqadj for i, s in sorted(dumped.items())}
    out["status"] = {i: s.status & 0x4E for i, s in sorted(dumped.items())}
    listing = subprocess.run(["conntrack", "-L", "-p", "tcp", "--dport", "8080"], capture_output=True,
                             text=True).stdout
    out["listing"] = listing
    print(json.dumps(out))
""")


@pytest.mark.root
def test_entries_with_seqadj_are_installed_and_read_back(lab):
    ns = lab.ns("ct")
    # conntrack is loaded in this namespace by a rule that uses it
    ns.exec("nft", "-f", "-", input="table inet t {\n chain c {\n  type filter hook prerouting priority 0;\n"
                                    "  ct state new counter\n }\n}\n")
    proc = ns.exec("env", f"PYTHONPATH={REPO / 'src'}", sys.executable, "-c", SCRIPT, timeout=60)
    out = json.loads(proc.stdout)
    A = [0, 0x8F3A2211, 0x8F3A2211, 0, 0x70C5DDEF, 0x70C5DDEF]
    B = [1000, 5, 7, 2000, 0xFFFFFFFB, 0xFFFFFFF9]
    assert out["counters"]["errors"] == 0, out["counters"]
    assert out["seqadj"] == {"1": B, "2": A, "3": None, "4": A}
    assert out["status"] == {"1": 0x4E, "2": 0x4E, "3": 0xE, "4": 0x4E}  # IPS_SEQ_ADJUST set by the kernel
    assert out["listing"].count("dport=8080") == 4
