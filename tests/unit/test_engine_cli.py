"""``pfha test`` and ``pfha replay`` end to end (no root: generated captures, temporary files)."""

from __future__ import annotations

import json

import pytest

from pfha.cli.main import main
from pfha.engine import packet as P
from pfha.pflog import pcap
from pfha.pflog.format import split

CONF = """
ext_if = "xl0"
int_if = "xl1"
set skip on lo0
nat on $ext_if from $int_if:network to any -> ($ext_if)
rdr on $ext_if proto tcp from any to ($ext_if) port 8080 -> 192.168.1.80 port 80
block log all
pass in on $ext_if proto tcp to 192.168.1.80 port 80
pass out on $int_if proto tcp to 192.168.1.80 port 80
pass in on $int_if from $int_if:network
pass out on $ext_if
"""
IFS = ["--if", "xl0=203.0.113.2/24", "--if", "xl1=192.168.1.250/24", "--if", "lo0=127.0.0.1/8"]


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "pf.conf"
    path.write_text(CONF)
    return str(path)


def run_json(capsys, *args):
    assert main(list(args)) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_pfha_test_json_has_the_issue_fields(conf, capsys):
    [first, second] = run_json(capsys, "test", "-f", conf, *IFS, "--json",
                               "in on xl0 proto tcp from 198.51.100.9 port 40000 to 203.0.113.2 port 8080 flags S",
                               "in on xl0 proto tcp from 198.51.100.9 port 40001 to 203.0.113.2 port 22 flags S")
    assert {"action", "rule", "rule_text", "translation", "state", "log"} <= set(first)
    # rule 3: pfctl's default optimizer (-o basic) moves the two rules on xl1 and the rule on
    # xl0 into one superblock ordered by skip steps: out on xl1, in on xl1, in on xl0 (@3)
    assert first["action"] == "pass" and first["rule"] == 3 and first["state"] == "created" and not first["log"]
    assert first["rule_text"].startswith("pass in on xl0 inet proto tcp from any to 192.168.1.80 port = http")
    t = first["translation"]
    assert (t["type"], t["rule"], t["src"], t["dst"]) == ("rdr", 0, "198.51.100.9:40000", "192.168.1.80:80")
    assert second == {**second, "action": "block", "rule": 0, "translation": None, "state": None, "log": True}


def test_pfha_test_scenario_traces_a_forwarded_conversation(conf, tmp_path, capsys):
    scenario = tmp_path / "conversation.txt"
    scenario.write_text(
        "# the web client, through rdr, to the server and back\n"
        "in on xl0 proto tcp from 198.51.100.9 port 40000 to 203.0.113.2 port 8080 flags S\n"
        "out on xl1 proto tcp from 198.51.100.9 port 40000 to 192.168.1.80 port 80 flags S\n"
        "in on xl1 proto tcp from 192.168.1.80 port 80 to 198.51.100.9 port 40000 flags SA\n"
        "out on xl0 proto tcp from 192.168.1.80 port 80 to 198.51.100.9 port 40000 flags SA\n"
        "in on xl0 proto tcp from 198.51.100.9 port 40000 to 203.0.113.2 port 8080 flags A\n")
    lines = run_json(capsys, "test", "-f", conf, *IFS, "--json", "--scenario", str(scenario))
    assert [(d["action"], d["state"]) for d in lines] == [("pass", "created"), ("pass", "created"),
                                                           ("pass", "matched"), ("pass", "matched"),
                                                           ("pass", "matched")]
    assert "203.0.113.2.8080 > 198.51.100.9.40000" in lines[3]["packet"]  # the reply leaves from the public port


def test_pfha_test_text_output_and_states(conf, capsys):
    assert main(["test", "-f", conf, *IFS, "--states", "--counters",
                 "in on xl1 proto udp from 192.168.1.5 port 5000 to 198.51.100.53 port 53",
                 "out on xl0 proto udp from 192.168.1.5 port 5000 to 198.51.100.53 port 53"]) == 0
    out = capsys.readouterr().out
    assert "nat (rule 0): 192.168.1.5:5000 > 198.51.100.53:53 becomes 203.0.113.2:" in out
    assert "all udp 192.168.1.5:5000 (203.0.113.2:" in out
    assert "[ Evaluations:" in out


def test_pfha_test_errors_are_one_line(conf, capsys):
    assert main(["test", "-f", conf, *IFS, "in on xl0 proto tcp from nowhere to 1.2.3.4"]) == 1
    assert capsys.readouterr().err.startswith("pfha: packet 1: 'from': bad address 'nowhere'")
    assert main(["test", "-f", conf + ".missing", *IFS, "in on xl0 from 1.1.1.1 to 2.2.2.2 proto udp"]) != 0


def test_pfha_replay_summary_states_and_pflog(conf, tmp_path, capsys):
    capture = tmp_path / "c.pcap"
    with open(capture, "wb") as stream:
        writer = pcap.PcapWriter(stream, pcap.LINKTYPE_RAW)
        writer.write(1.0, P.tcp("198.51.100.9", 40000, "203.0.113.2", 8080, "S", seq=10).to_bytes())
        writer.write(2.0, P.tcp("198.51.100.9", 40001, "203.0.113.2", 23, "S").to_bytes())
        writer.write(3.0, b"\x00garbage")
        writer.write(4.0, b"\x45\x00\x00")
    out_pflog = tmp_path / "pflog"
    assert main(["replay", "-f", conf, *IFS, str(capture), "--in", "xl0", "--out", "xl1",
                 "--pflog", str(out_pflog)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("4 packets: 1 passed, 1 blocked, 1 logged, 1 not IP, 1 unparsable")
    assert "all tcp 192.168.1.80:80 (203.0.113.2:8080) <- 198.51.100.9:40000" in text
    linktype, records = pcap.read_file(str(out_pflog))
    assert linktype == pcap.LINKTYPE_PFLOG and len(records) == 1
    header, packet = split(records[0].data)
    assert header.describe() == "rule 0/0(match): block in on xl0" and records[0].timestamp == 2.0


def _two_way(tmp_path, linktype: int, wrap) -> str:
    """The firewall's own connection out of xl0 and the answer, as one capture on xl0."""
    capture = tmp_path / "two-way.pcap"
    with open(capture, "wb") as stream:
        writer = pcap.PcapWriter(stream, linktype)
        writer.write(1.0, wrap(P.tcp("203.0.113.2", 50001, "198.51.100.9", 80, "S", seq=10).to_bytes(), True))
        writer.write(1.1, wrap(P.tcp("198.51.100.9", 80, "203.0.113.2", 50001, "SA", seq=70, ack=11).to_bytes(), False))
    return str(capture)


FIREWALL_MAC = b"\x02\x00\x00\x00\x00\xfe"


@pytest.mark.parametrize("linktype, wrap, extra", [
    (pcap.LINKTYPE_LINUX_SLL, lambda ip, sent: pcap.sll_frame(ip, 4 if sent else 0), []),
    (pcap.LINKTYPE_LINUX_SLL2, lambda ip, sent: pcap.sll2_frame(ip, 4 if sent else 0), []),
    (pcap.LINKTYPE_ETHERNET, lambda ip, sent: pcap.ethernet_frame(ip, src=FIREWALL_MAC if sent else b"\x02\0\0\0\0\x09"),
     ["--local-mac", "02:00:00:00:00:FE"]),
])
def test_pfha_replay_both_ways_evaluates_sent_packets_out(conf, tmp_path, capsys, linktype, wrap, extra):
    capture = _two_way(tmp_path, linktype, wrap)
    records = run_json(capsys, "replay", "-f", conf, *IFS, capture, "--in", "xl0", "--both-ways", *extra, "--json")
    sent, answer = records[0]["in"], records[1]["in"]
    assert (sent["action"], sent["state"]) == ("pass", "created")
    assert sent["rule_text"].startswith("pass out on xl0 all")
    assert (answer["action"], answer["state"]) == ("pass", "matched")
    # the same capture read one way only: both packets arrive on xl0 and the default block wins
    records = run_json(capsys, "replay", "-f", conf, *IFS, capture, "--in", "xl0", "--json")
    assert [r["in"]["action"] for r in records[:2]] == ["block", "block"]


@pytest.mark.parametrize("extra, message", [
    (["--both-ways"], "an Ethernet capture does not record direction: give the firewall's --local-mac"),
    (["--local-mac", "02:00:00:00:00:fe"], "--local-mac needs --both-ways"),
    (["--both-ways", "--local-mac", "02:00:00:00:fe"], "--local-mac 02:00:00:00:fe: not a MAC address"),
    (["--both-ways", "--local-mac", "02:00:00:00:00:fe", "--out", "xl1"], "--both-ways and --out exclude each other"),
])
def test_pfha_replay_both_ways_errors_are_one_line(conf, tmp_path, capsys, extra, message):
    capture = _two_way(tmp_path, pcap.LINKTYPE_ETHERNET, lambda ip, sent: pcap.ethernet_frame(ip))
    assert main(["replay", "-f", conf, *IFS, capture, "--in", "xl0", *extra]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


WEB_SCENARIO = """\
# web from outside to 203.0.113.11: rdr to the LAN server, synproxy on xl0, keep state on xl1
in on xl0 proto tcp from 198.51.100.9 port 40000 to 203.0.113.11 port 80 flags S mss 1460
in on xl0 proto tcp from 198.51.100.9 port 40000 to 203.0.113.11 port 80 flags A
out on xl1 proto tcp from 198.51.100.9 port 40000 to 192.168.1.80 port 80 flags S
in on xl1 proto tcp from 192.168.1.80 port 80 to 198.51.100.9 port 40000 flags SA
out on xl0 proto tcp from 192.168.1.80 port 80 to 198.51.100.9 port 40000 flags SA
in on xl0 proto tcp from 198.51.100.9 port 40000 to 203.0.113.11 port 80 flags PA len 100
out on xl1 proto tcp from 198.51.100.9 port 40000 to 192.168.1.80 port 80 flags PA len 100
in on xl1 proto tcp from 192.168.1.80 port 80 to 198.51.100.9 port 40000 flags PA len 300
out on xl0 proto tcp from 192.168.1.80 port 80 to 198.51.100.9 port 40000 flags PA len 300
"""


def test_pfha_test_scenario_through_the_tutorial_synproxy(shared, tmp_path, capsys):
    scenario = tmp_path / "web.txt"
    scenario.write_text(WEB_SCENARIO)
    conf = shared / "seed" / "configs" / "corrected" / "pf.conf"
    ifs = ["--if", "xl0=203.0.113.2/24", "--if", "xl1=192.168.1.250/24", "--if", "rl0=10.10.10.250/24",
           "--if", "carp0=203.0.113.10/24,203.0.113.11/24,203.0.113.12/24", "--if", "lo0=127.0.0.1/8"]
    lines = run_json(capsys, "test", "-f", str(conf), *ifs, "--json", "--scenario", str(scenario))
    assert [(d["action"], d["reason"]) for d in lines] == [
        ("block", "synproxy"), ("block", "synproxy"), ("pass", "match"), ("pass", "match"),
        ("block", "synproxy"), ("pass", "match"), ("pass", "match"), ("pass", "match"), ("pass", "match")]
    assert [len(d["emitted"]) for d in lines[:5]] == [1, 1, 0, 0, 2]
    assert lines[-1]["packet"].startswith("203.0.113.11.80 > 198.51.100.9.40000: tcp PA")
