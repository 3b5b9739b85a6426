"""The pure parts of the runner and CLI: drop-log rate limiting, status formatting, VIP parsing."""

from __future__ import annotations

import ipaddress
import json
import os

import pytest

from pfha.carp.linux import InterfaceInfo, link_is_up
from pfha.carp.runner import RateLimit, format_status, parse_vip, read_status
from pfha.cli.main import main


def test_rate_limit_one_line_per_interval_and_counts_held_back():
    limit = RateLimit(interval=10)
    assert limit.allow("hmac", 0.0) == 0
    assert [limit.allow("hmac", t) for t in (1, 2, 3)] == [None, None, None]
    assert limit.allow("ttl", 3.5) == 0  # another reason has its own budget
    assert limit.allow("hmac", 10.0) == 3
    assert limit.allow("hmac", 15.0) is None


def test_parse_vip_takes_the_parent_subnet_or_32():
    info = InterfaceInfo("eth0", 2, b"\0" * 6, [ipaddress.ip_interface("10.0.0.1/24")])
    assert parse_vip("10.0.0.100", info) == ipaddress.ip_interface("10.0.0.100/24")
    assert parse_vip("192.168.9.9", info) == ipaddress.ip_interface("192.168.9.9/32")
    assert parse_vip("10.0.0.100/28", info) == ipaddress.ip_interface("10.0.0.100/28")


def test_link_is_up_needs_up_and_running():
    assert link_is_up(0x1 | 0x40) and not link_is_up(0x1) and not link_is_up(0x40)


def status_doc(pid):
    return {"pid": pid, "updated": 0, "node": {"demotion": 1, "demotion_reasons": {"link down on eth1": 1},
            "dropped_unknown": {}, "groups": [{"vhid": 3, "interface": "eth0", "state": "BACKUP", "advbase": 1,
            "advskew": 100, "advskew_effective": 240, "preempt": True, "demote": 1,
            "addresses": ["10.0.0.100/24"], "stats": {"hmac": 2, "accepted": 9}}]}}


def test_status_format_reads_like_ifconfig(tmp_path):
    (tmp_path / f"{os.getpid()}.json").write_text(json.dumps(status_doc(os.getpid())))
    (tmp_path / "999999999.json").write_text(json.dumps(status_doc(999999999)))  # dead: skipped
    statuses = read_status(tmp_path)
    assert len(statuses) == 1
    text = format_status(statuses)
    assert text.splitlines()[0] == "eth0: carp: BACKUP vhid 3 advbase 1 advskew 100"
    assert "\tinet 10.0.0.100/24 vhid 3" in text and "dropped: hmac 2" in text
    assert "demoted 1: link down on eth1 (1)" in text


def test_cli_errors_are_one_line(capsys):
    assert main(["carp", "run", "--dev", "no-such-if0", "--vhid", "1", "10.0.0.1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pfha: interface no-such-if0") and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["carp", "run", "--vhid", "1", "10.0.0.1"])  # --dev is required: argparse usage error
