"""Sequence adjustments against a real kernel, in a scratch namespace: an entry installed with
one through KernelTable (created with it, or updated with it after it was created without one,
as when the NEW event was synced before synproxy set the offsets) reads back with it from a
dump, with IPS_SEQ_ADJUST set, so a synproxied connection's translation survives on the node
that takes over."""

import json
import subprocess
import sys
import textwrap
import time
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
    got = table.get(wire.state_key(state(2, A).pack()))
    out["get"] = [wire.seqadj_of(got), table.get(wire.state_key(state(9, A).pack()))]
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
    assert out["get"] == [A, None]  # one entry read by its key, with its adjustment; none: None


# --- end to end: a synproxied connection survives a failover ----------------------------------
SYNPROXY_RULESET = """
table inet pfha_seqadj_test {
  chain raw {
    type filter hook prerouting priority raw; policy accept;
    # the client's SYN is left to synproxy: untracked
    iifname "in0" tcp dport 9000 tcp flags & (syn|ack) == syn notrack
  }
  chain forward {
    type filter hook forward priority filter; policy drop;
    # pass in on in0 proto tcp to port 9000 synproxy state
    iifname "in0" tcp dport 9000 ct state invalid,untracked synproxy mss 1460
    ct state invalid counter drop
    ct state established,related ct mark & 0x3 != 0 accept
  }
  chain output {
    type filter hook output priority filter; policy accept;
    # synproxy's own SYN to the server opens the entry: the pf state bits (side A and B)
    tcp dport 9000 ct state new ct mark set 0x00010103
  }
  chain input {
    type filter hook input priority filter; policy drop;
    iifname "lo" accept
    iifname "sync0" ip protocol 240 accept
    ct state established,related accept
  }
}
"""

CLIENT = textwrap.dedent("""
    import os, socket, sys
    s = socket.create_connection(("10.0.2.100", 9000), timeout=10)
    def exchange(size):
        payload = os.urandom(size)
        s.sendall(payload)
        got = b""
        while len(got) < size:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            got += chunk
        assert got == payload, "echo differs"
    exchange(64 * 1024)
    print("ready", flush=True)
    sys.stdin.readline()
    try:
        exchange(256 * 1024)  # through the second firewall
        print("ECHO-OK", flush=True)
    except Exception as error:
        print(f"FAILED {type(error).__name__}: {error}", flush=True)
""")


@pytest.mark.root
def test_a_synproxied_connection_survives_a_failover(lab, tmp_path):
    """Both firewalls run real nft synproxy and strict tracking (Pair: tcp_loose 0, no
    BE_LIBERAL); the connection is proxied by a (the client's SYN answered by a's cookie, a's
    own SYN to the server), carries data, a dies, b takes the addresses, and the connection
    carries 256 KiB more. Without the adjustment on b it times out (checked by hand: b's
    entries installed without CTA_SEQ_ADJ_*)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_sync_failover import PY, Pair

    pair = Pair(lab, tmp_path)
    try:
        (tmp_path / "synproxy.nft").write_text(SYNPROXY_RULESET)
        for fw in pair.fw.values():
            fw.exec("nft", "flush", "ruleset")
            fw.exec("nft", "-f", str(tmp_path / "synproxy.nft"))
        pair.start_sync("a")
        pair.start_sync("b")
        pair.wait_status("b", lambda s: s["bulk"]["done"], 20, "b's start-up bulk update")
        pair.set_master("a")
        server = pair.server.popen(PY, str(Path(__file__).parent / "test_sync_failover.py"), "server", "9000",
                                   stdout=subprocess.PIPE, text=True)
        pair.procs.append(server)
        assert server.stdout.readline().strip() == "ready"
        client = pair.client.popen(PY, "-c", CLIENT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        pair.procs.append(client)
        assert client.stdout.readline().strip() == "ready", pair.log("a")
        # the connection was proxied on a: its entry has the adjustment, and b got it
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _seqadj_entries(pair.fw["b"]) == []:
            time.sleep(0.2)
        on_a, on_b = _seqadj_entries(pair.fw["a"]), _seqadj_entries(pair.fw["b"])
        assert len(on_a) == 1 and on_a[0][1] is not None, on_a
        assert on_b == on_a, (on_a, on_b, pair.fw["b"].exec("conntrack", "-L").stdout, pair.log("a"), pair.log("b"))
        # (on 6.18 the kernel reports it in an UPDATE event of its own, IPCT_SEQADJ, after the one
        # for ESTABLISHED; the intake's ctnetlink GET for a status bit without one stays unused)
        pair.kill("a")
        pair.set_master("b")
        time.sleep(1.0)
        client.stdin.write("go\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "ECHO-OK", (pair.log("b"), _seqadj_entries(pair.fw["b"]))
        client.wait(timeout=30)
        assert _invalid_drops(pair.fw["b"]) == 0
    finally:
        pair.close()


def _seqadj_entries(ns) -> list:
    """(original source port, seqadj) of the entries to the server's port 9000."""
    script = ("import json; from pfha.sync.conntrack import KernelTable; from pfha.sync import wire; "
              "print(json.dumps([[s.orig.sport, s.seqadj] for s in (wire.State.unpack(e.record) for e in KernelTable().dump(0)) "
              "if s.orig.dport == 9000 and s.tcp_state == 3]))")
    out = ns.exec("env", f"PYTHONPATH={REPO / 'src'}", sys.executable, "-c", script, timeout=30).stdout
    return [tuple(e) if e[1] is None else (e[0], tuple(e[1])) for e in json.loads(out)]


def _invalid_drops(ns) -> int:
    out = ns.exec("nft", "list", "chain", "inet", "pfha_seqadj_test", "forward").stdout
    return int(out.split("ct state invalid counter packets ")[1].split()[0])
