"""conntrack flows read back as pf states (pfctl -ss), without a kernel."""

from __future__ import annotations

import ipaddress

from pfha.nft.compile import A_SHIFT, B_SHIFT, SIDE_A, SIDE_B
from pfha.nft.states import Flow, Tuple, format_state, involves, pf_states


def nat_flow(tcp_state="ESTABLISHED") -> Flow:
    """LAN host 192.168.1.100:5555 to 198.51.100.53:53, NATed to 203.0.113.10:62001; both pf states."""
    return Flow(4, 6, Tuple("192.168.1.100", "198.51.100.53", 5555, 53), Tuple("198.51.100.53", "203.0.113.10", 53, 62001),
                mark=SIDE_A | SIDE_B | (41 << A_SHIFT) | (70 << B_SHIFT), tcp_state=tcp_state, timeout=86399,
                packets=(6, 5), bytes=(568, 456))


def test_nat_flow_prints_as_pfctl_ss():
    lines = [format_state(s) for s in pf_states(nat_flow())]
    assert lines == [
        "all tcp 198.51.100.53:53 <- 192.168.1.100:5555 ESTABLISHED:ESTABLISHED",
        "all tcp 192.168.1.100:5555 -> 203.0.113.10:62001 -> 198.51.100.53:53 ESTABLISHED:ESTABLISHED",
    ]


def test_rdr_flow_shows_the_redirect_on_the_in_state():
    flow = Flow(4, 6, Tuple("198.51.100.7", "203.0.113.10", 40000, 25), Tuple("192.168.1.80", "198.51.100.7", 25, 40000),
                mark=SIDE_A | SIDE_B, tcp_state="SYN_SENT")
    assert [format_state(s) for s in pf_states(flow)] == [
        "all tcp 192.168.1.80:25 <- 203.0.113.10:25 <- 198.51.100.7:40000 SYN_SENT:CLOSED",
        "all tcp 198.51.100.7:40000 -> 192.168.1.80:25 SYN_SENT:CLOSED",
    ]


def test_flows_without_pf_state_print_nothing_and_verbose_adds_counters():
    assert pf_states(Flow(4, 17, Tuple("10.0.0.1", "10.0.0.2", 1, 2), Tuple("10.0.0.2", "10.0.0.1", 2, 1))) == []
    out_state = pf_states(nat_flow())[1]
    text = format_state(out_state, verbose=1, rule_numbers={70: 69})
    assert text.splitlines()[1] == "   expires in 23:59:59, 6:5 pkts, 568:456 bytes, rule 69"
    udp = Flow(4, 17, Tuple("10.0.0.1", "10.0.0.2", 1, 53), Tuple("10.0.0.2", "10.0.0.1", 53, 1), mark=SIDE_B, status=0x2)
    assert format_state(pf_states(udp)[0]) == "all udp 10.0.0.1:1 -> 10.0.0.2:53 MULTIPLE:MULTIPLE"
    v6 = Flow(6, 6, Tuple("fd00::1", "fd00::2", 1000, 80), Tuple("fd00::2", "fd00::1", 80, 1000), mark=SIDE_B, tcp_state="TIME_WAIT")
    assert format_state(pf_states(v6)[0]) == "all tcp fd00::1[1000] -> fd00::2[80] TIME_WAIT:TIME_WAIT"


def test_kill_selects_by_source_network():
    flow = nat_flow()
    assert involves(flow, ipaddress.ip_network("192.168.1.0/24"))
    assert not involves(flow, ipaddress.ip_network("198.51.100.0/24"))
    assert involves(flow, ipaddress.ip_network("198.51.100.53/32"), "dst")
    assert not involves(flow, ipaddress.ip_network("fd00::/8"))
