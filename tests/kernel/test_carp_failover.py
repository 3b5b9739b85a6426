"""Two pfha CARP nodes in network namespaces: election, failover, preemption, demotion, status.

Sub-second timers (advbase 0) keep each scenario to a few seconds: a advskew 20 (78 ms
adverts), b advskew 60 (b's master-down 0.70 s).
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys

import pytest

from pfha.carp import wire
from pfha.carp.testbed import SRC, CarpBed, wait_for

VIP = "10.99.0.100"
FAST = ("--advbase", "0", "--pass", "secretpass", "--preempt")


@pytest.fixture
def bed(lab):
    made = CarpBed(lab)
    yield made
    made.cleanup()


def start_pair(bed, *extra):
    a = bed.pfha("a", "--dev", "eth0", "--vhid", "1", "--advskew", "20", *FAST, *extra, VIP)
    b = bed.pfha("b", "--dev", "eth0", "--vhid", "1", "--advskew", "60", *FAST, *extra, VIP)
    assert wait_for(lambda: bed.holders(VIP) == ["a"] and bed.group_state(b) == "BACKUP", 5), (a.log_text(), b.log_text())
    return a, b


def test_kill9_fails_over_and_restart_preempts(bed):
    a, b = start_pair(bed)
    a.stop(signal.SIGKILL)
    assert wait_for(lambda: bed.has_addr("b", VIP), 3), b.log_text()
    assert "BACKUP -> MASTER: no advert from 10.99.0.1 for" in b.log_text()
    # a's VIP survived the kill -9; a restarted a releases it, then preempts b.
    a2 = bed.pfha("a", "--dev", "eth0", "--vhid", "1", "--advskew", "20", *FAST, VIP)
    assert wait_for(lambda: bed.holders(VIP) == ["a"], 5), (a2.log_text(), b.log_text())
    assert "preempting slower master 10.99.0.2" in a2.log_text()
    assert "MASTER -> BACKUP: preferred master 10.99.0.1" in b.log_text()


def test_orderly_stop_bows_out(bed):
    a, b = start_pair(bed)
    a.stop(signal.SIGTERM)
    assert a.proc.returncode == 0
    assert "MASTER -> INIT: shutdown, bowed out" in a.log_text()
    assert wait_for(lambda: bed.holders(VIP) == ["b"], 2)
    assert "BACKUP -> MASTER: 10.99.0.1 bowed out" in b.log_text()


def test_link_down_fails_over_and_back(bed):
    a, b = start_pair(bed)
    bed.set_port("a", False)
    assert wait_for(lambda: bed.has_addr("b", VIP), 3), b.log_text()
    assert wait_for(lambda: not bed.has_addr("a", VIP), 2)
    assert "MASTER -> INIT: link down on eth0" in a.log_text()
    bed.set_port("a", True)
    assert wait_for(lambda: bed.holders(VIP) == ["a"], 5), (a.log_text(), b.log_text())


def test_no_preempt_keeps_the_backup_master(bed):
    # b's period (50/256 s) must stay well under a's master-down (3 x 40/256 s), or a times it out.
    b = bed.pfha("b", "--dev", "eth0", "--vhid", "1", "--advbase", "0", "--advskew", "50", "--pass", "x", VIP)
    assert wait_for(lambda: bed.holders(VIP) == ["b"], 5)
    a = bed.pfha("a", "--dev", "eth0", "--vhid", "1", "--advbase", "0", "--advskew", "40", "--pass", "x", VIP)
    assert wait_for(lambda: bed.group_state(a) == "BACKUP", 3)
    assert not wait_for(lambda: bed.has_addr("a", VIP), 1.5)
    assert bed.holders(VIP) == ["b"]


def test_several_vhids_with_aliases_and_one_link_demotes_all(lab):
    bed = CarpBed(lab, segments=2)
    try:
        groups = ["--group", "vhid=2 dev=eth1 10.99.1.100/24 10.99.1.101/24", "--group", "vhid=3 dev=eth0 10.99.0.200"]
        vips = [("10.99.0.100", 0), ("10.99.0.101", 0), ("10.99.1.100", 1), ("10.99.1.101", 1), ("10.99.0.200", 0)]
        a = bed.pfha("a", "--dev", "eth0", "--vhid", "1", "--advskew", "20", *FAST, *groups, "10.99.0.100/24", "10.99.0.101")
        b = bed.pfha("b", "--dev", "eth0", "--vhid", "1", "--advskew", "60", *FAST, *groups, "10.99.0.100/24", "10.99.0.101")

        def all_on(name):
            return all(bed.holders(v, s) == [name] for v, s in vips)

        assert wait_for(lambda: all_on("a"), 6), (a.log_text(), b.log_text())
        # Only eth1 of node a loses its link: every group, those on eth0 too, goes to b.
        bed.set_port("a", False, segment=1)
        assert wait_for(lambda: all_on("b"), 4), (a.log_text(), b.log_text())
        status = bed.status(a)["node"]
        assert status["demotion"] == 1 and "link down on eth1" in status["demotion_reasons"]
        states = {g["vhid"]: (g["state"], g["advskew_effective"]) for g in status["groups"]}
        assert states == {1: ("BACKUP", 240), 2: ("INIT", 240), 3: ("BACKUP", 240)}
        assert "demoted (demote 1 > 0)" in b.log_text()
        bed.set_port("a", True, segment=1)
        assert wait_for(lambda: all_on("a"), 6), (a.log_text(), b.log_text())
        assert bed.status(a)["node"]["demotion"] == 0
    finally:
        bed.cleanup()


def send_raw(bed, payload: bytes, ttl: int = 255) -> None:
    """Send one advert from the client namespace with a plain raw socket."""
    code = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_INET,socket.SOCK_RAW,112)\n"
        f"s.setsockopt(socket.IPPROTO_IP,33,{ttl})\n"
        "s.setsockopt(socket.IPPROTO_IP,32,socket.inet_aton('10.99.0.10'))\n"
        f"s.sendto(bytes.fromhex('{payload.hex()}'),('224.0.0.18',0))\n"
    )
    bed.hosts["c"].exec(sys.executable, "-c", code)


def test_bad_adverts_are_dropped_and_counted_status_cli(bed):
    a, b = start_pair(bed)
    key, vip = wire.carp_key("secretpass"), [ipaddress.IPv4Address(VIP)]

    def advert(vhid=1, key=key, **kw):
        return wire.encode(wire.Advertisement(vhid, 0, 0, 7, wire.compute_digest(key, vhid, vip, [], 7), **kw))

    good = advert()
    send_raw(bed, advert(key=b"wrong"))
    send_raw(bed, good, ttl=64)
    send_raw(bed, good[:6] + b"\0\0" + good[8:])
    send_raw(bed, advert(version=3))
    for _ in range(3):
        send_raw(bed, advert(vhid=9))

    def counts():
        status = bed.status(b) or {"node": {"groups": [{"stats": {}}], "dropped_unknown": {}}}
        stats = status["node"]["groups"][0]["stats"]
        return ({k: stats.get(k, 0) for k in ("hmac", "ttl", "checksum", "version")}, status["node"]["dropped_unknown"].get("vhid", 0))

    assert wait_for(lambda: counts() == ({"hmac": 1, "ttl": 1, "checksum": 1, "version": 1}, 3), 3), counts()
    assert bed.holders(VIP) == ["a"]  # none of them changed anything
    # Logging is rate-limited: one line for the three unknown-vhid adverts.
    assert b.log_text().count("no vhid 9 on eth0") == 1
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run(["ip", "netns", "exec", bed.hosts["a"].name, sys.executable, "-m", "pfha.cli.main", "carp", "status",
                          "--status-dir", str(a.extra["run_dir"] / "carp")], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "eth0: carp: MASTER vhid 1 advbase 0 advskew 20" in out.stdout, out
    raw = subprocess.run([sys.executable, "-m", "pfha.cli.main", "carp", "status", "--json", "--status-dir",
                          str(b.extra["run_dir"] / "carp")], capture_output=True, text=True, env=env)
    assert json.loads(raw.stdout)[0]["node"]["groups"][0]["state"] == "BACKUP"


def test_status_without_nodes_is_a_one_line_error(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SRC))
    out = subprocess.run([sys.executable, "-m", "pfha.cli.main", "carp", "status", "--status-dir", str(tmp_path)],
                         capture_output=True, text=True, env=env)
    assert out.returncode != 0 and out.stderr.strip().startswith("pfha: carp: no running") and "Traceback" not in out.stderr


def test_ipv6_and_ipv4_vips_move_together_with_unsolicited_na(lab):
    bed = CarpBed(lab, ipv6=True)
    try:
        vip6 = "fd00:99:0::100"
        a = bed.pfha("a", "--dev", "eth0", "--vhid", "1", "--advskew", "20", *FAST, VIP, f"{vip6}/64")
        b = bed.pfha("b", "--dev", "eth0", "--vhid", "1", "--advskew", "60", *FAST, VIP, f"{vip6}/64")
        assert wait_for(lambda: bed.holders(VIP) == ["a"] and bed.holders("fd00:99::100") == ["a"]
                        and bed.group_state(b) == "BACKUP", 5), (a.log_text(), b.log_text())
        client = bed.hosts["c"]
        client.exec("ping", "-6", "-c", "1", "-W", "2", vip6)
        mac_b = bed.hosts["b"].exec("cat", "/sys/class/net/eth0/address").stdout.strip()
        bed.set_port("a", False)
        assert wait_for(lambda: bed.holders("fd00:99::100") == ["b"] and bed.holders(VIP) == ["b"], 3), b.log_text()
        # The client's neighbour entry moved to b's MAC on the unsolicited NA (Override flag).
        assert wait_for(lambda: mac_b in client.exec("ip", "-6", "neigh", "show", vip6).stdout, 2)
        client.exec("ping", "-6", "-c", "1", "-W", "2", vip6)
        stats = bed.status(b)["node"]["groups"][0]["stats"]
        assert stats.get("accepted", 0) > 0 and stats.get("ttl", 0) == 0 and stats.get("hmac", 0) == 0, stats
    finally:
        bed.cleanup()
