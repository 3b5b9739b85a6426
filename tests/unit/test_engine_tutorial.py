"""Scenarios on the tutorial's rulesets (seed/configs/{as-published,corrected}/pf.conf) with the
primary's interfaces: what the firewall pair is supposed to do, packet by packet."""

from __future__ import annotations

import pytest

from pfha.conf import InterfaceView, parse_file
from pfha.engine import Engine
from pfha.engine import packet as P

PRIMARY = ["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "rl0=10.10.10.250/24",
           "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24", "lo0=127.0.0.1/8"]
OUTSIDE = "198.51.100.9"
ADMIN = "198.51.100.200"
WEB = "203.0.113.11"
LAN_HOST = "192.168.1.5"


@pytest.fixture(params=["as-published", "corrected"])
def variant(request, shared):
    return request.param


def load(shared, variant, seed=1):
    view = InterfaceView.from_specs(PRIMARY)
    return Engine(parse_file(str(shared / "seed" / "configs" / variant / "pf.conf"), view), view, seed=seed)


def test_web_from_outside_is_redirected_to_the_lan_server_and_replies_return(shared, variant):
    e = load(shared, variant)
    now = 0.0
    # 1. the client's SYN to the public web address: rdr to the server, then synproxy answers
    d = e.process(P.tcp(OUTSIDE, 40000, WEB, 80, "S", seq=1000, mss=1460), "xl0", "in", now)
    assert d.translation is not None and d.translation.kind == "rdr"
    server = d.packet.dst_text()
    assert server in ("192.168.1.80", "192.168.1.81", "192.168.1.82")
    assert (d.action, d.reason, d.state) == ("block", "synproxy", "created")
    assert "synproxy state" in d.rule_text and "port = http" in d.rule_text
    [synack] = d.emitted
    assert (synack.packet.src_text(), synack.packet.sport, synack.packet.dst_text()) == (WEB, 80, OUTSIDE)
    # 2. the client's ACK completes the proxied handshake: pf opens toward the server
    d = e.process(P.tcp(OUTSIDE, 40000, WEB, 80, "A", seq=1001, ack=synack.packet.seq + 1), "xl0", "in", now)
    [syn] = d.emitted
    assert (syn.packet.dst_text(), syn.packet.dport, syn.packet.flags) == (server, 80, P.TH_SYN)
    out = e.process(syn.packet.copy(), "xl1", "out", now)
    assert (out.action, out.state) == ("pass", "created") and "pass out quick on xl1" in out.rule_text
    # 3. the server answers: in on xl1 by its out-state, then out on xl0 where synproxy finishes
    sa = P.tcp(server, 80, OUTSIDE, 40000, "SA", seq=50000, ack=syn.packet.seq + 1)
    assert e.process(sa.copy(), "xl1", "in", now).state == "matched"
    d = e.process(sa.copy(), "xl0", "out", now)
    assert d.reason == "synproxy" and len(d.emitted) == 2
    # 4. data both ways: the request reaches the server, the reply leaves from the public address
    req = e.process(P.tcp(OUTSIDE, 40000, WEB, 80, "PA", seq=1001, ack=synack.packet.seq + 1, payload=b"GET / HTTP/1.0\r\n\r\n"),
                    "xl0", "in", now)
    assert req.action == "pass" and req.packet.dst_text() == server
    assert e.process(req.packet.copy(), "xl1", "out", now).action == "pass"
    reply = P.tcp(server, 80, OUTSIDE, 40000, "PA", seq=50001, ack=req.packet.seq + 18, payload=b"HTTP/1.0 200 OK\r\n")
    assert e.process(reply.copy(), "xl1", "in", now).action == "pass"
    back = e.process(reply.copy(), "xl0", "out", now)
    assert back.action == "pass" and back.state == "matched"
    assert (back.packet.src_text(), back.packet.sport) == (WEB, 80)
    assert back.packet.ack == 1001 + 18 and back.packet.seq == synack.packet.seq + 1


def test_web_pool_only_balances_in_the_corrected_ruleset(shared, variant):
    e = load(shared, variant)
    servers = {e.process(P.tcp(OUTSIDE, port, WEB, 80, "S"), "xl0", "in", 0).packet.dst_text() for port in range(1, 7)}
    if variant == "as-published":
        assert servers == {"192.168.1.80"}  # three rdr rules, first match: only the first is used
    else:
        assert servers == {"192.168.1.80", "192.168.1.81", "192.168.1.82"}


def test_lan_hosts_browse_out_through_nat(shared, variant):
    e = load(shared, variant)
    syn = P.tcp(LAN_HOST, 51000, OUTSIDE, 80, "S", seq=7000)
    d_in = e.process(syn.copy(), "xl1", "in", 0)
    assert (d_in.action, d_in.state) == ("pass", "created") and "pass in quick on xl1" in d_in.rule_text
    d_out = e.process(d_in.packet.copy(), "xl0", "out", 0)
    assert d_out.action == "pass" and d_out.state == "created" and "modulate state" in d_out.rule_text
    public = "203.0.113.2" if variant == "as-published" else "203.0.113.10"
    assert d_out.packet.src_text() == public and 50001 <= d_out.packet.sport <= 65535
    assert d_out.packet.seq != 7000  # modulated
    # the web server's reply comes back to the public address and reaches the LAN host
    sa = P.tcp(OUTSIDE, 80, public, d_out.packet.sport, "SA", seq=90000, ack=d_out.packet.seq + 1)
    back_in = e.process(sa, "xl0", "in", 0)
    assert back_in.action == "pass" and back_in.state == "matched"
    assert (back_in.packet.dst_text(), back_in.packet.dport, back_in.packet.ack) == (LAN_HOST, 51000, 7001)
    back_out = e.process(back_in.packet.copy(), "xl1", "out", 0)
    assert back_out.action == "pass" and back_out.state == "matched"
    # the LAN host's ACK completes both states
    ack = P.tcp(LAN_HOST, 51000, OUTSIDE, 80, "A", seq=7001, ack=back_in.packet.seq + 1)
    assert e.process(ack.copy(), "xl1", "in", 0).action == "pass"
    assert e.process(ack.copy(), "xl0", "out", 0).action == "pass"
    assert d_out.state_entry.src.state == d_out.state_entry.dst.state == 4  # ESTABLISHED


def test_dns_from_lan_through_nat(shared, variant):
    e = load(shared, variant)
    q = P.udp(LAN_HOST, 5353, "198.51.100.53", 53, b"\x00" * 30)
    assert e.process(q.copy(), "xl1", "in", 0).action == "pass"
    out = e.process(q.copy(), "xl0", "out", 0)
    assert out.action == "pass" and out.translation is not None
    bad = P.udp(LAN_HOST, 5353, "198.51.100.99", 53, b"\x00" * 30)
    assert e.process(bad, "xl1", "in", 0).action == "block"


def test_ssh_to_the_firewall_only_from_the_admin_host(shared, variant):
    e = load(shared, variant)
    ok = e.process(P.tcp(ADMIN, 40000, "203.0.113.10", 8081, "S"), "xl0", "in", 0)
    assert ok.action == "pass" and ok.rule_number == 3
    other = e.process(P.tcp(OUTSIDE, 40000, "203.0.113.10", 8081, "S"), "xl0", "in", 0)
    assert (other.action, other.rule_number, other.log) == ("block", 0, True)
    port22 = e.process(P.tcp(ADMIN, 40001, "203.0.113.10", 22, "S"), "xl0", "in", 0)
    assert port22.action == "block"


@pytest.mark.parametrize("source", ["10.1.2.3", "172.16.5.5", "192.168.7.7", "127.0.0.1", "192.168.1.77"])
def test_private_sources_are_blocked_on_xl0(shared, variant, source):
    e = load(shared, variant)
    d = e.process(P.tcp(source, 1234, WEB, 80, "S"), "xl0", "in", 0)
    assert d.action == "block" and d.rule_number != 0 and "quick" in d.rule_text


def test_private_destinations_are_blocked_out_on_xl0(shared, variant):
    e = load(shared, variant)
    d = e.process(P.tcp("203.0.113.2", 1234, "10.9.9.9", 80, "S"), "xl0", "out", 0)
    assert d.action == "block" and "to 10.0.0.0/8" in d.rule_text
    # as written, the earlier "pass out quick ... port ntp" rule wins for NTP
    assert e.process(P.udp("203.0.113.2", 123, "10.9.9.9", 123), "xl0", "out", 0).action == "pass"


def test_carp_passes_on_every_interface(shared, variant):
    e = load(shared, variant)
    for ifname, src in (("xl0", "203.0.113.3"), ("xl1", "192.168.1.251"), ("rl0", "10.10.10.251")):
        advert = P.other(src, "224.0.0.18", 112, bytes(36), ttl=255)
        d = e.process(advert, ifname, "in", 0)
        assert d.action == "pass" and "proto carp" in d.rule_text, ifname
        mine = P.other(src.rsplit(".", 1)[0] + ".250" if ifname != "xl0" else "203.0.113.2", "224.0.0.18", 112, bytes(36))
        assert e.process(mine, ifname, "out", 0).action == "pass"


def test_pfsync_on_rl0_blocked_as_published_passed_corrected(shared, variant):
    e = load(shared, variant)
    sync = P.other("10.10.10.251", "224.0.0.240", 240, bytes(64), ttl=255)
    d = e.process(sync, "rl0", "in", 0)
    if variant == "as-published":
        assert (d.action, d.rule_number, d.log) == ("block", 0, True)
        assert d.logs[0].header.describe() == "rule 0/0(match): block in on rl0"
    else:
        assert d.action == "pass" and "pass quick on rl0 proto pfsync" in d.rule_text


@pytest.mark.parametrize("itype,code,allowed", [
    (8, 0, True), (0, 0, True), (11, 0, True), (12, 0, True), (3, 4, True),
    (3, 3, False), (3, 1, False), (5, 1, False), (13, 0, False),
])
def test_icmp_types_allowed_and_blocked_as_written(shared, variant, itype, code, allowed):
    e = load(shared, variant)
    msg = P.icmp(OUTSIDE, "203.0.113.10", itype, code, ident=9 if itype in (0, 8, 13) else 0)
    if itype == 3:
        msg = P.icmp(OUTSIDE, "203.0.113.10", 3, code, inner=P.udp("203.0.113.10", 1, OUTSIDE, 2))
    d = e.process(P.Packet.parse(msg.to_bytes()), "xl0", "in", 0)
    assert (d.action == "pass") == allowed, d.rule_text
    if not allowed:
        assert d.rule_number == 0 and d.log


def test_outgoing_icmp_passes_and_replies_match_its_state(shared, variant):
    e = load(shared, variant)
    d = e.process(P.icmp("203.0.113.2", OUTSIDE, 8, 0, ident=77), "xl0", "out", 0)
    assert d.action == "pass" and d.state == "created"
    assert e.process(P.icmp(OUTSIDE, "203.0.113.2", 0, 0, ident=77), "xl0", "in", 0).state == "matched"


def test_loopback_is_skipped(shared, variant):
    e = load(shared, variant)
    d = e.process(P.tcp("127.0.0.1", 1, "127.0.0.1", 2, "S"), "lo0", "in", 0)
    assert d.reason == "skip"


def test_scrub_in_drops_illegal_flags_from_outside(shared, variant):
    e = load(shared, variant)
    d = e.process(P.tcp(OUTSIDE, 1, WEB, 80, "SR"), "xl0", "in", 0)
    assert (d.action, d.reason) == ("block", "normalize")
