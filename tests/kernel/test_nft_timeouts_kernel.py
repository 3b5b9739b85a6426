"""pf's state timeouts in the kernel: conntrack timeout policies attached where pf makes states.

In the tutorial testbed (lan 192.168.1.100 -> fw -> ext 198.51.100.80), connections through
rules with ``keep state (udp.first 3)`` / ``(tcp.established 5)`` show those timeouts in the
firewall's ``conntrack -L`` and expire accordingly; ``set timeout`` reaches rules without
options (conntrack's "replied" UDP timeout needs a flow active for 2 s); a ruleset without timeouts leaves conntrack's defaults; a refused load changes
nothing (policy objects included); reloads under traffic keep connections and their policies.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from conftest import is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces, nftables and conntrack")

LAN, EXT = "192.168.1.100", "198.51.100.80"
HEAD = "set skip on lo0\nblock all\npass out on xl0 keep state\n"
NO_TIMEOUTS = HEAD + (
    "pass in on xl1 proto udp from any to any port 5002 keep state\n"
    "pass in on xl1 proto tcp from any to any port 6001 flags S/SA keep state\n"
)
TIMEOUTS = "set timeout udp.first 12\n" + NO_TIMEOUTS + (
    "pass in on xl1 proto udp from any to any port 5000 keep state (udp.first 3)\n"
    "pass in on xl1 proto udp from any to any port 5001 keep state (udp.first 6, udp.multiple 20)\n"
    "pass in on xl1 proto tcp from any to any port 6000 flags S/SA keep state (tcp.established 5)\n"
)

# A client that opens a TCP connection, reads the greeting, idles, then checks the echo.
IDLE_CLIENT = (
    "import socket, sys, time\n"
    "s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3, source_address=(sys.argv[1], 0))\n"
    "s.recv(4096); print('connected', flush=True)\n"
    "time.sleep(float(sys.argv[4]))\n"
    "s.settimeout(3)\n"
    "try:\n"
    "    s.sendall(b'x\\n'); print('ECHO' if s.recv(4096) else 'CLOSED', flush=True)\n"
    "except OSError as e:\n"
    "    print('NOECHO', type(e).__name__, flush=True)\n"
)
# A UDP sink that never answers (the connection stays UNREPLIED: udp.first).
SINK = (
    "import socket, sys, time\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], int(sys.argv[2])))\n"
    "print('ready', flush=True); time.sleep(600)\n"
)


@pytest.fixture(scope="module")
def bed():
    from pfha.nft import testbed

    bed = testbed.build("nfto")
    try:
        bed.specs = [f"--if={s}" for s in testbed.VIEW_SPECS]
        bed.serve(bed.ext, [f"udp:{EXT}:5001", f"udp:{EXT}:5003", f"tcp:{EXT}:6000", f"tcp:{EXT}:6001"])
        for port in (5000, 5002):
            sink = bed.ext.popen(sys.executable, "-c", SINK, EXT, str(port), stdout=subprocess.PIPE, text=True)
            bed.processes.append(sink)
            assert sink.stdout.readline().strip() == "ready"
        yield bed
    finally:
        bed.close()


def load(bed, tmp_path, text: str, name: str = "pf.conf") -> subprocess.CompletedProcess[str]:
    path = tmp_path / name
    path.write_text(text)
    return bed.pfctl(bed.fw, *bed.specs, "-f", str(path))


def flows(bed, proto: str, dport: int) -> list[tuple[int, str]]:
    """(remaining seconds, the conntrack line) of the firewall's flows to ``dport``."""
    out = bed.fw.exec("conntrack", "-L", "-p", proto, "--orig-port-dst", str(dport), check=False).stdout
    return [(int(line.split()[2]), line) for line in out.splitlines() if line.startswith(proto)]


def send_udp(bed, dport: int, sport: int, answer: bool = False) -> None:
    result = bed.probe(bed.lan, "udp", LAN, EXT, dport, timeout=1.0 if answer else 0.3, sport=sport)
    assert result.startswith("OK") if answer else result == "TIMEOUT", result


def policies(bed) -> dict[str, str]:
    """The ct timeout objects of our table: name -> their text."""
    text = bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout
    return dict(re.findall(r"ct timeout (\S+) \{(.*?)\n\t\}", text, re.S))


def table_text(bed) -> str:
    """Our table as nft lists it, without counter values (stray packets of earlier tests move them)."""
    return re.sub(r"packets \d+ bytes \d+", "", bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout)


def idle_client(bed, dport: int, idle: float) -> subprocess.Popen:
    proc = bed.lan.popen(sys.executable, "-c", IDLE_CLIENT, LAN, EXT, str(dport), str(idle), stdout=subprocess.PIPE, text=True)
    bed.processes.append(proc)
    assert proc.stdout.readline().strip() == "connected"
    return proc


def test_without_timeouts_conntrack_keeps_its_defaults(bed, tmp_path):
    # first in the module: `set timeout` also sets namespace-wide sysctls that later loads keep
    load(bed, tmp_path, NO_TIMEOUTS)
    assert policies(bed) == {}
    assert "ct timeout" not in bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout
    send_udp(bed, 5002, 41000)
    (remaining, line), = flows(bed, "udp", 5002)
    assert "UNREPLIED" in line and 25 <= remaining <= 30  # nf_conntrack_udp_timeout
    client = idle_client(bed, 6001, 0.5)
    (remaining, line), = [f for f in flows(bed, "tcp", 6001) if "ESTABLISHED" in f[1]]
    assert remaining > 400000, line  # conntrack's 432000 s, not pf's 86400
    assert client.communicate(timeout=20)[0].strip() == "ECHO"


def test_rule_timeouts_show_in_conntrack_and_expire(bed, tmp_path):
    load(bed, tmp_path, TIMEOUTS)
    assert len(policies(bed)) >= 4  # tcp and udp for: udp.first 3, +udp.multiple 20, tcp.established 5, the global ones
    # udp.first 3: one datagram nobody answers
    send_udp(bed, 5000, 41001)
    (remaining, line), = flows(bed, "udp", 5000)
    assert "UNREPLIED" in line and remaining <= 3, line
    shown = bed.pfctl(bed.fw, "-vss").stdout
    assert re.search(r":41001 -> 198\.51\.100\.80:5000 .*\n\s+expires in 00:00:0[0-3],", shown), shown  # pfctl -vss shows it
    # set timeout udp.first 12 on a rule without options
    send_udp(bed, 5002, 41002)
    (remaining, line), = [f for f in flows(bed, "udp", 5002) if "sport=41002" in f[1]]
    assert 7 <= remaining <= 12, line
    # answered: conntrack keeps the unreplied timeout (6) for 2 s, then "replied" (udp.multiple 20)
    send_udp(bed, 5001, 41003, answer=True)
    (remaining, line), = flows(bed, "udp", 5001)
    assert "UNREPLIED" not in line and remaining <= 6, line
    time.sleep(2.2)
    send_udp(bed, 5001, 41003, answer=True)
    (remaining, line), = flows(bed, "udp", 5001)
    assert "packets=2" in line and 15 <= remaining <= 20, line  # the same flow, now on udp.multiple
    # tcp.established 5 on an idle connection; pf's default 86400 on the rule without options
    short = idle_client(bed, 6000, 8)
    (remaining, line), = [f for f in flows(bed, "tcp", 6000) if "ESTABLISHED" in f[1]]
    assert remaining <= 5, line
    default = idle_client(bed, 6001, 0.5)
    (remaining, line), = [f for f in flows(bed, "tcp", 6001) if "ESTABLISHED" in f[1]]
    assert 86000 <= remaining <= 86400, line
    assert default.communicate(timeout=20)[0].strip() == "ECHO"
    time.sleep(4.5)
    assert [f for f in flows(bed, "udp", 5000) if "sport=41001" in f[1]] == []  # expired after 3 s
    # the idle TCP connection expired after 5 s: its next segment is no SYN, pf blocks it
    assert short.communicate(timeout=20)[0].strip().startswith("NOECHO")
    assert [f for f in flows(bed, "tcp", 6000) if "ESTABLISHED" in f[1]] == []


def test_refused_load_changes_nothing_policies_included(bed, tmp_path):
    load(bed, tmp_path, TIMEOUTS)
    before = table_text(bed)
    changed = tmp_path / "changed.conf"
    changed.write_text(TIMEOUTS.replace("udp.first 3", "udp.first 2").replace("tcp.established 5", "tcp.established 6"))
    code = (
        "from pfha.nft import loader\n"
        "from pfha.nft.operate import compile_file\n"
        "from pfha.nft.testbed import tutorial_view\n"
        f"c = compile_file({str(changed)!r}, tutorial_view())\n"
        "assert any('ct timeout' in cmd.get('add', {}) for cmd in c.commands)\n"
        "bad = {'add': {'rule': {'family': 'inet', 'table': 'pfha', 'chain': 'filter_in', 'expr': [{'match': {'op': '==', "
        "'left': {'payload': {'protocol': 'ip', 'field': 'saddr'}}, 'right': '@no_such_set'}}, {'accept': None}]}}}\n"
        "try:\n"
        "    loader.load(c.commands + [bad], c.metadata)\n"
        "except loader.NftError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run(bed.fw.argv([sys.executable, "-c", code]), env=bed.env, capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("refused:"), out.stderr
    assert table_text(bed) == before
    # the previous ruleset is fully in effect: its policy still reaches new connections
    send_udp(bed, 5000, 41010)
    (remaining, line), = [f for f in flows(bed, "udp", 5000) if "sport=41010" in f[1]]
    assert remaining <= 3, line


def test_reload_under_traffic_keeps_connections_and_their_policies(bed, tmp_path):
    load(bed, tmp_path, TIMEOUTS)
    names = set(policies(bed))
    variant = TIMEOUTS + "block in quick on xl0 proto tcp from any to any port 6666\n"
    # a connection on tcp.established 5 that talks every 0.3 s lives as long as it talks
    # (15 s: four loads take 1.5 s each on a busy 2-core machine, and they must all fall inside)
    stream = bed.python(bed.lan, "stream", LAN, EXT, "6000", "15", "0.3", stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    for i in range(4):
        load(bed, tmp_path, variant if i % 2 == 0 else TIMEOUTS, f"r{i}.conf")
        assert set(policies(bed)) == names  # same timeouts: the same objects, never recreated
        established = [f for f in flows(bed, "tcp", 6000) if "ESTABLISHED" in f[1]]
        assert established and all(r <= 5 for r, _ in established), (established, bed.fw.exec("conntrack", "-L", check=False).stdout, stream.poll())  # policy still attached
        time.sleep(0.5)
    result = stream.communicate(timeout=60)[0].strip()
    assert result.startswith("OK ") and int(result.split()[1]) > 10, result
    # other timeouts: new policies, and the ones no rule uses any more are gone
    load(bed, tmp_path, TIMEOUTS.replace("udp.first 3", "udp.first 2"), "other.conf")
    after = set(policies(bed))
    assert after != names and len(after) == len(names)


def test_back_to_no_timeouts_removes_policies(bed, tmp_path):
    load(bed, tmp_path, TIMEOUTS)
    load(bed, tmp_path, NO_TIMEOUTS, "plain.conf")
    assert policies(bed) == {}


def test_inplace_reload_copes_with_objects_nft_cannot_delete_in_json(bed, tmp_path):
    # nft 1.0.6 refuses a JSON `delete synproxy`: the in-place batch keeps such objects and the
    # loader deletes the ones the new ruleset does not define afterwards, in text
    load(bed, tmp_path, TIMEOUTS)
    bed.fw.exec("nft", "add synproxy inet pfha stray { mss 1460; wscale 7; }")
    load(bed, tmp_path, TIMEOUTS, "again.conf")
    assert "synproxy stray" not in bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout
    assert policies(bed)


def test_pfctl_shows_the_loaded_timeouts_and_limits(bed, tmp_path):
    load(bed, tmp_path, "set optimization aggressive\nset timeout { udp.first 12, interval 5 }\n"
                        "set limit { states 20000, frags 800 }\n" + NO_TIMEOUTS)
    timeouts = bed.pfctl(bed.fw, "-s", "timeouts").stdout.splitlines()
    assert timeouts[0] == "tcp.first                    30s"  # the preset
    assert "udp.first                    12s" in timeouts and "interval                      5s" in timeouts
    assert "adaptive.start            12000 states" in timeouts  # 60% of the states limit
    assert bed.pfctl(bed.fw, "-sm").stdout.splitlines() == [
        "states        hard limit    20000", "src-nodes     hard limit    10000",
        "frags         hard limit      800", "table-entries hard limit   200000"]
    everything = bed.pfctl(bed.fw, "-sa").stdout
    assert "TIMEOUTS:\ntcp.first" in everything and "LIMITS:\nstates" in everything
