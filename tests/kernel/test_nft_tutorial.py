"""The tutorial's corrected pf.conf in the kernel: real traffic through a firewall namespace.

Expected outcomes are pf's (pf-semantics.md §2): each forwarded packet is filtered inbound and
outbound, translation happens before filtering, last match wins unless quick, default pass.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import SEED_CONFIGS, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces and nftables")

CORRECTED = SEED_CONFIGS / "corrected" / "pf.conf"
NAT_PORT = r"203\.0\.113\.10:(\d+)"


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    if not CORRECTED.exists():
        pytest.skip(f"tutorial configs not found at {CORRECTED}")
    from pfha.nft import testbed

    bed = testbed.build("nftt")
    try:
        log = tmp_path_factory.mktemp("pflog") / "pflog"
        ready = log.with_suffix(".ready")
        bed.pflogd = bed.fw.popen(sys.executable, "-m", "pfha.cli.main", "pflogd", "-f", str(log), "-s", "0", "--ready-file", str(ready),
                                  env=bed.env, stderr=subprocess.PIPE, text=True)
        bed.processes.append(bed.pflogd)
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert bed.pflogd.poll() is None and time.monotonic() < deadline, "pflogd did not start"
            time.sleep(0.05)
        bed.log = log
        specs = [f"--if={s}" for s in testbed.VIEW_SPECS]
        bed.load = bed.pfctl(bed.fw, *specs, "-f", str(CORRECTED))
        bed.serve(bed.ext, ["udp:198.51.100.53:53", "tcp:198.51.100.53:53", "tcp:198.51.100.80:80", "tcp:198.51.100.80:443",
                            "tcp:198.51.100.80:8080", "udp:198.51.100.53:123"])
        bed.serve(bed.lan, ["tcp:192.168.1.80:25", "tcp:192.168.1.80:110", "tcp:192.168.1.80:8082", "tcp:192.168.1.80:80",
                            "tcp:192.168.1.81:80", "tcp:192.168.1.82:80", "tcp:192.168.1.119:8080", "tcp:192.168.1.80:22"])
        bed.serve(bed.fw, ["tcp:203.0.113.10:8081", "tcp:203.0.113.10:22", "tcp:192.168.1.1:8081"])
        yield bed
    finally:
        bed.close()


def test_load_reports_what_the_kernel_cannot_do(bed):
    err = bed.load.stderr
    assert "synproxy state: compiled as keep state" in err
    assert "modulate state: compiled as keep state" in err
    assert bed.pfctl(bed.fw, "-si").stdout.startswith("Status: Enabled")


# (namespace, proto, source, destination, port, expected: regex of what the server saw, or None = blocked)
CASES = [
    # the LAN goes out through NAT to the CARP address, source ports 50001-65535
    ("lan", "udp", "192.168.1.100", "198.51.100.53", 53, NAT_PORT),
    ("lan", "tcp", "192.168.1.100", "198.51.100.53", 53, NAT_PORT),
    ("lan", "tcp", "192.168.1.100", "198.51.100.80", 80, NAT_PORT),
    ("lan", "tcp", "192.168.1.100", "198.51.100.80", 443, NAT_PORT),
    ("lan", "udp", "192.168.1.100", "198.51.100.53", 123, NAT_PORT),
    ("lan", "tcp", "192.168.1.100", "198.51.100.80", 8080, None),  # no pass rule: block log all
    ("lan", "tcp", "192.168.1.100", "192.168.1.1", 8081, None),  # to the firewall from inside: blocked
    # rdr from outside to the servers; they see the real client
    ("ext", "tcp", "198.51.100.7", "203.0.113.10", 25, r"192\.168\.1\.80:25 from 198\.51\.100\.7:"),
    ("ext", "tcp", "198.51.100.7", "203.0.113.10", 110, r"192\.168\.1\.80:110 from 198\.51\.100\.7:"),
    ("ext", "tcp", "198.51.100.7", "203.0.113.10", 8080, r"192\.168\.1\.119:8080 from 198\.51\.100\.7:"),
    ("ext", "tcp", "198.51.100.7", "203.0.113.10", 8082, None),  # rdr'd, but no pass rule for port 8082
    # ssh to the firewall: only from the admin host
    ("ext", "tcp", "198.51.100.200", "203.0.113.10", 8081, r"203\.0\.113\.10:8081 from 198\.51\.100\.200:"),
    ("ext", "tcp", "198.51.100.7", "203.0.113.10", 8081, None),
    ("ext", "tcp", "198.51.100.7", "203.0.113.10", 22, None),
    # routed straight to an inside address (no translation): no rule passes it
    ("ext", "tcp", "198.51.100.7", "192.168.1.80", 22, None),
    # spoofed sources: private nets and the LAN's own network from outside
    ("ext", "tcp", "10.0.0.5", "203.0.113.10", 8081, None),
    ("ext", "tcp", "192.168.1.5", "203.0.113.10", 25, None),
]


@pytest.mark.parametrize("ns,proto,src,dst,port,expected", CASES, ids=[f"{c[1]}-{c[2]}-{c[3]}:{c[4]}" for c in CASES])
def test_traffic_passes_and_blocks_as_pf_would(bed, ns, proto, src, dst, port, expected):
    result = bed.probe(getattr(bed, ns), proto, src, dst, port)
    if expected is None:
        assert result == "TIMEOUT"
    else:
        assert result.startswith("OK "), result
        assert re.search(expected, result), result
        nat = re.search(NAT_PORT, result)
        if nat and expected == NAT_PORT:
            assert 50001 <= int(nat.group(1)) <= 65535


def test_round_robin_rdr_pool_spreads_connections(bed):
    seen = set()
    for _ in range(6):
        result = bed.probe(bed.ext, "tcp", "198.51.100.7", "203.0.113.11", 80)
        assert result.startswith("OK "), result
        seen.add(result.split()[1])
    assert seen == {"192.168.1.80:80", "192.168.1.81:80", "192.168.1.82:80"}


def test_ping_the_carp_address_from_outside(bed):
    bed.ext.exec("ping", "-c", "1", "-W", "2", "-I", "198.51.100.7", "203.0.113.10")


def test_pflog_file_prints_in_tcpdump(bed):
    assert bed.probe(bed.ext, "tcp", "198.51.100.7", "203.0.113.10", 22) == "TIMEOUT"
    deadline = time.monotonic() + 5
    out = ""
    while time.monotonic() < deadline:
        out = subprocess.run(["tcpdump", "-n", "-e", "-r", str(bed.log)], capture_output=True, text=True, timeout=30).stdout
        if ".22: Flags [S]" in out:
            break
        time.sleep(0.2)
    assert re.search(r"rule 0/0\(match\): block in on xl0: 198\.51\.100\.7\.\d+ > 203\.0\.113\.10\.22: Flags \[S\]", out), out


def test_states_listing_and_kill(bed):
    stream = bed.python(bed.lan, "stream", "192.168.1.100", "198.51.100.80", "80", "20", "0.2", stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        states = bed.pfctl(bed.fw, "-ss").stdout
        assert re.search(r"^all tcp 192\.168\.1\.100:\d+ -> 203\.0\.113\.10:\d+ -> 198\.51\.100\.80:80 ESTABLISHED:ESTABLISHED$", states, re.M), states
        assert re.search(r"^all tcp 198\.51\.100\.80:80 <- 192\.168\.1\.100:\d+ ESTABLISHED:ESTABLISHED$", states, re.M), states
        verbose = bed.pfctl(bed.fw, "-vss").stdout
        assert re.search(r"^   expires in \d+:\d\d:\d\d, [1-9]\d*:[1-9]\d* pkts, [1-9]\d*:[1-9]\d* bytes, rule \d+$", verbose, re.M), verbose
        rules = bed.pfctl(bed.fw, "-vsr").stdout.splitlines()
        web_in = rules.index("pass in quick on xl1 inet proto tcp from 192.168.1.0/24 to any port = http flags S/SA keep state")
        packets = int(re.search(r"Packets: (\d+)", rules[web_in + 1]).group(1))
        assert packets >= 3 and int(re.search(r"States: (\d+)", rules[web_in + 1]).group(1)) >= 1
        bed.pfctl(bed.fw, "-k", "192.168.1.100")
        out, _ = stream.communicate(timeout=30)
        assert out.startswith("BROKEN"), out  # pf drops the rest of a killed connection: no state, not a SYN
    finally:
        if stream.poll() is None:
            stream.kill()


def _web_in_packets(bed) -> int:
    rules = bed.pfctl(bed.fw, "-vsr").stdout.splitlines()
    web_in = rules.index("pass in quick on xl1 inet proto tcp from 192.168.1.0/24 to any port = http flags S/SA keep state")
    return int(re.search(r"Packets: (\d+)", rules[web_in + 1]).group(1))


def test_zero_rule_counters(bed):
    assert bed.probe(bed.lan, "tcp", "192.168.1.100", "198.51.100.80", 80).startswith("OK ")
    before = _web_in_packets(bed)
    assert before >= 3
    shown = bed.pfctl(bed.fw, "-vsr", "-z").stdout  # -s shows the counters, then -z clears them
    assert f"Packets: {before}" in shown
    assert _web_in_packets(bed) == 0
    assert bed.probe(bed.lan, "tcp", "192.168.1.100", "198.51.100.80", 80).startswith("OK ")
    assert _web_in_packets(bed) >= 3
    bed.pfctl(bed.fw, "-z")
    assert _web_in_packets(bed) == 0


def test_disable_and_enable(bed):
    assert bed.probe(bed.ext, "tcp", "198.51.100.7", "203.0.113.10", 22) == "TIMEOUT"
    assert bed.pfctl(bed.fw, "-sR").stdout == "Enabled\n"
    bed.pfctl(bed.fw, "-d")
    try:
        assert bed.pfctl(bed.fw, "-si").stdout.startswith("Status: Disabled")
        running = bed.pfctl(bed.fw, "-s", "Running", check=False)
        assert (running.stdout, running.returncode) == ("Disabled\n", 1)  # scripts test the exit status
        assert bed.probe(bed.ext, "tcp", "198.51.100.7", "203.0.113.10", 22).startswith("OK ")
    finally:
        bed.pfctl(bed.fw, "-e")
    assert bed.probe(bed.ext, "tcp", "198.51.100.7", "203.0.113.10", 22) == "TIMEOUT"
