"""The lab's pure parts: the topology is consistent, the matrix names real hosts and ports,
the probes' wire details (DNS, ICMP checksum, targets) are right. No root needed."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from pfha.lab import scenarios
from pfha.checksum import internet_checksum
from pfha.lab.services import Target, dns_answer, dns_query, dns_reply_ok
from pfha.lab.topology import CARP_LAN, tutorial


def test_every_cable_ends_on_a_declared_interface():
    topology = tutorial()
    plugged = set()
    for segment in topology.segments:
        for host, interface in segment.ports:
            topology.host(host).interface(interface)  # raises if missing
            assert (host, interface) not in plugged, f"{host}:{interface} plugged twice"
            plugged.add((host, interface))
        if not segment.switch:
            assert len(segment.ports) == 2
    every = {(h.name, i.name) for h in topology.hosts for i in h.interfaces}
    assert every == plugged


def test_addresses_are_unique_and_gateways_on_link():
    topology = tutorial()
    seen = {}
    for host in topology.hosts:
        for interface in host.interfaces:
            assert interface.ip not in seen, (host.name, seen.get(interface.ip))
            seen[interface.ip] = host.name
        if host.gateway:
            networks = [ipaddress.ip_interface(i.address).network for i in host.interfaces]
            assert any(ipaddress.ip_address(host.gateway) in n for n in networks), host.name
    lan = [h for h in topology.hosts if h.gateway == CARP_LAN]
    assert {h.name for h in lan} == {"client", "srv80", "srv81", "srv82", "chat"}


def test_matrix_targets_exist_and_answerers_offer_the_port():
    topology = tutorial()
    for line in scenarios.matrix():
        target = Target.parse(line.target)
        topology.host(line.source)
        for name in line.answered_by:
            host = topology.host(name)
            assert any(s.proto == target.proto and s.port == target.port for s in host.services), (line, name)


@pytest.mark.parametrize("text", ["tcp:192.0.2.1:25", "udp:192.0.2.1:53", "icmp:192.0.2.1"])
def test_targets_round_trip(text):
    assert str(Target.parse(text)) == text


@pytest.mark.parametrize("text", ["sctp:192.0.2.1:1", "tcp:192.0.2.1", "icmp:192.0.2.1:3"])
def test_bad_targets(text):
    with pytest.raises(ValueError):
        Target.parse(text)


def test_dns_answer_is_a_reply_to_the_query():
    query = dns_query("www.example", ident=0x4242)
    answer = dns_answer(query, "198.51.100.100")
    assert answer is not None and dns_reply_ok(answer, 0x4242) and not dns_reply_ok(answer, 0x1234)
    assert answer.endswith(socket.inet_aton("198.51.100.100"))
    assert struct.unpack("!H", answer[6:8])[0] == 1  # one answer
    assert dns_answer(answer, "198.51.100.100") is None  # never answer an answer


def test_icmp_checksum_verifies_to_zero():
    body = struct.pack("!BBHHH", 8, 0, 0, 0x1234, 1) + b"pfha-lab"
    packet = body[:2] + struct.pack("!H", internet_checksum(body)) + body[4:]
    assert internet_checksum(packet) == 0


def test_config_choices(tmp_path):
    from pfha.lab.build import LabError
    from pfha.lab.nodes import config_dir, seed_configs

    try:
        seed = seed_configs()
    except LabError:
        pytest.skip("shared seed configs not found")
    assert config_dir("corrected") == seed / "corrected"
    assert (config_dir("as-published") / "rc.conf.secondary").is_file()
    (tmp_path / "pf.conf").write_text("pass all\n")
    with pytest.raises(LabError, match="rc.conf.primary, rc.conf.secondary"):
        config_dir(str(tmp_path))
    for name in ("rc.conf.primary", "rc.conf.secondary"):
        (tmp_path / name).write_text("")
    assert config_dir(str(tmp_path)) == tmp_path
