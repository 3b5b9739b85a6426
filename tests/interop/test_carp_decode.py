"""tcpdump and tshark decode pfha's adverts with every field set (carp.md §6.3).

One test writes the machine's adverts into a pcap (no root); the other captures what the
running daemon really sends on a bridge in a namespace (root), so the kernel-built IP header
(TTL 255, TOS 0x10, DF) is checked too.
"""

from __future__ import annotations

import ipaddress
import random
import re
import shutil
import signal
import subprocess
import time

import pytest

from pfha.carp import wire
from pfha.carp.machine import SendAdvert, Vhid, VhidConfig
from pfha.carp.testbed import CarpBed, capture_adverts, wait_for
from pfha.pflog import pcap

pytestmark = pytest.mark.skipif(not (shutil.which("tcpdump") and shutil.which("tshark")), reason="needs tcpdump and tshark")

SRC_IP = ipaddress.IPv4Address("10.99.0.1")


def machine_adverts(vhid=7, advbase=2, advskew=33, n=3):
    cfg = VhidConfig(vhid, "eth0", (ipaddress.IPv4Interface("10.99.0.100/24"),), wire.carp_key("secretpass"), advbase, advskew, source=SRC_IP)
    group = Vhid(cfg, rng=random.Random(5))
    group.start(0)
    while len([a for a in group.actions() if isinstance(a, SendAdvert)]) == 0 and group.state.value != "MASTER":
        group.handle_timer(group.next_deadline())
    group.counter = 12345678901234567890  # as if a master had been heard: counters go +1
    sent = []
    for _ in range(n):
        group.handle_timer(group.next_deadline())
        sent += [a.advert for a in group.actions() if isinstance(a, SendAdvert)]
    return sent


def tshark_fields(path):
    out = subprocess.run(
        ["tshark", "-r", str(path), "-d", "ip.proto==112,carp", "-T", "fields", "-e", "carp.version", "-e", "carp.type",
         "-e", "carp.vhid", "-e", "carp.advskew", "-e", "carp.authlen", "-e", "carp.demotion", "-e", "carp.adver_int",
         "-e", "carp.counter", "-e", "carp.checksum.status", "-e", "carp.hmac", "-e", "ip.ttl"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    return [line.split("\t") for line in out.splitlines() if line.strip()]


def test_written_adverts_decode(tmp_path):
    adverts = machine_adverts()
    path = tmp_path / "pfha.pcap"
    frames = [(1800000000 + i, wire.advert_frame(SRC_IP, wire.encode(a), source_mac=bytes.fromhex("02000000000a"), ident=i))
              for i, a in enumerate(adverts)]
    pcap.write_file(str(path), pcap.LINKTYPE_ETHERNET, frames)
    out = subprocess.run(["tcpdump", "-n", "-T", "carp", "-r", str(path)], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert len(lines) == 3
    for line, advert in zip(lines, adverts):
        assert line.endswith(f"10.99.0.1 > 224.0.0.18: CARPv2-advertise 36: vhid=7 advbase=2 advskew=33 authlen=7 counter={advert.counter}")
    rows = tshark_fields(path)
    for row, advert in zip(rows, adverts):
        assert row == ["2", "1", "7", "33", "7", "0", "2", str(advert.counter), "1", advert.digest.hex(), "255"]
    assert [a.counter for a in adverts] == [12345678901234567891, 12345678901234567892, 12345678901234567893]


def test_live_adverts_decode(lab, tmp_path):
    bed = CarpBed(lab, nodes=("a",), client=False)
    try:
        path = tmp_path / "live.pcap"
        dump = bed.sw.popen("tcpdump", "-i", "br0", "--immediate-mode", "-U", "-w", str(path), "ip proto 112 or arp",
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        a = bed.pfha("a", "--dev", "eth0", "--vhid", "5", "--pass", "secretpass", "--advbase", "0", "--advskew", "26", "10.99.0.100/24")
        assert wait_for(lambda: bed.group_state(a, 5) == "MASTER", 5), a.log_text()
        time.sleep(0.6)
        a.stop(signal.SIGTERM)
        time.sleep(0.3)
        dump.send_signal(signal.SIGINT)
        dump.wait(5)
    finally:
        bed.cleanup()
    out = subprocess.run(["tcpdump", "-n", "-v", "-T", "carp", "-r", str(path)], capture_output=True, text=True, check=True).stdout
    adverts = re.findall(r"CARPv2-advertise 36: vhid=5 advbase=(\d+) advskew=(\d+) authlen=7 counter=(\d+)", out)
    assert len(adverts) >= 4, out
    assert adverts[0][:2] == ("0", "26") and adverts[-1][:2] == ("255", "255")  # last: the bow-out
    assert "tos 0x10, ttl 255" in out and "flags [DF]" in out and "proto VRRP (112), length 56" in out
    assert re.search(r"ARP, .*Request who-has 10\.99\.0\.100 \([0-9a-f:]+\) tell 10\.99\.0\.100", out), out
    rows = tshark_fields(path)
    assert rows and all(r[2] == "5" and r[8] == "1" and r[10] == "255" for r in rows)
    # Every captured digest verifies with the passphrase and the VIP.
    for _number, _header, payload in capture_adverts(path):
        advert = wire.decode(payload)
        assert wire.digest_matches(wire.carp_key("secretpass"), 5, [ipaddress.IPv4Address("10.99.0.100")], [], advert.counter, advert.digest)
