"""FreeBSD rc.conf + sysctl.conf -> node config, on the tutorial's own files and on the modern form."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from pfha.cli import main as cli
from pfha.errors import SourceError
from pfha.node import config as nc
from pfha.node.freebsd import import_files, import_freebsd, parse_ifconfig
from pfha.node.toml_out import dumps

ip = ipaddress.ip_interface


@pytest.fixture(params=["as-published", "corrected"])
def folder(request, shared) -> Path:
    return shared / "seed" / "configs" / request.param


@pytest.mark.parametrize("rc,address,skew_if_corrected", [
    ("rc.conf.primary", "203.0.113.2/24", 0), ("rc.conf.secondary", "203.0.113.3/24", 100)])
def test_import_tutorial_rc_conf(folder, rc, address, skew_if_corrected):
    imported = import_files(folder / rc, folder / "sysctl.conf", device_map={"xl0": "eth1"})
    config = imported.config
    assert [i.name for i in config.interfaces] == ["xl0", "xl1", "rl0", "lo0"]
    assert config.device_map() == {"xl0": "eth1", "xl1": "xl1", "rl0": "rl0", "lo0": "lo"}
    assert config.interface("xl0").addresses == (ip(address),)
    vhid1, vhid2, vhid3 = config.carp
    assert (vhid1.vhid, vhid1.name, vhid1.parent, vhid1.password) == (1, "carp0", "xl0", "foo")
    assert vhid1.addresses == (ip("203.0.113.10/24"), ip("203.0.113.11/24"), ip("203.0.113.12/24"))
    assert (vhid2.parent, vhid2.addresses) == ("xl1", (ip("192.168.1.1/24"),))
    assert (vhid3.parent, vhid3.addresses) == ("rl0", (ip("10.10.10.1/8"),))  # classful, as FreeBSD
    expected_skew = skew_if_corrected if folder.name == "corrected" else 0
    assert {g.advskew for g in config.carp} == {expected_skew}
    assert all(g.preempt for g in config.carp)
    assert config.sync == nc.Sync(device="rl0")
    assert config.pf_conf == Path("/etc/pf.conf")
    assert config.pflog == nc.Pflog(Path("/var/log/pflog"), True)
    host = config.host
    assert (host.forwarding, str(host.default_router), host.accept_redirects) == (True, "203.0.113.1", False)
    assert (host.tcp_blackhole, host.udp_blackhole) == (2, True)
    # Where things came from, for pfha audit's file:line.
    assert imported.origins["carp.group[0]"].line == 30
    assert imported.origins["sync"].line == 47
    assert imported.origins["carp.preempt"].file.endswith("sysctl.conf")


def test_nothing_is_dropped_silently(shared):
    folder = shared / "seed" / "configs" / "as-published"
    imported = import_files(folder / "rc.conf.primary", folder / "sysctl.conf")
    noted = {note.setting for note in imported.notes}
    for setting in ("ntpdate_enable", "sshd_enable", "usbd_enable", "syslogd_flags", "sshd_flags",
                    "kern_securelevel", "dhcpd_enable", "pf_flags", "pflog_flags",
                    "net.inet.tcp.sendspace", "net.inet.tcp.recvspace"):
        assert setting in noted, setting
    by_setting = {n.setting: n for n in imported.notes}
    assert by_setting["net.inet.tcp.sendspace"].origin.line == 7
    assert str(by_setting["kern_securelevel"]).startswith(f"{folder / 'rc.conf.primary'}:15: kern_securelevel: ")
    # Every line of both files is either mapped or noted.
    lines = {(str(folder / "rc.conf.primary"), n) for n, text in enumerate(
        (folder / "rc.conf.primary").read_text().splitlines(), 1) if text.strip() and not text.startswith("#")}
    lines |= {(str(folder / "sysctl.conf"), n) for n, text in enumerate(
        (folder / "sysctl.conf").read_text().splitlines(), 1) if text.strip() and not text.startswith("#")}
    covered = {(o.file, o.line) for o in imported.origins.values()} | {(n.origin.file, n.origin.line) for n in imported.notes}
    carp_aliases = {(str(folder / "rc.conf.primary"), n) for n in (31, 32)}  # folded into carp.group[0]
    handled_silently = {(str(folder / "rc.conf.primary"), n) for n in (8, 11, 20, 21)}  # pf_enable, pflog_enable, lists
    assert lines - covered - carp_aliases - handled_silently == set()


def test_imported_config_round_trips_through_toml(folder, tmp_path):
    imported = import_files(folder / "rc.conf.primary", folder / "sysctl.conf", device_map={"xl1": "eth2"})
    text = dumps(imported.config, imported.origins, imported.notes, header="test")
    assert "# from " in text and "Not carried over" in text
    loaded = nc.loads(text, tmp_path / "fw1.toml")
    assert loaded == imported.config


MODERN = """\
hostname="fw-a.example.org"
ifconfig_em0="inet 192.168.1.3 netmask 255.255.255.0"
ifconfig_em0_alias0="inet vhid 1 advskew 100 pass testpass alias 192.168.1.50/32"
ifconfig_em0_alias1="inet vhid 1 advskew 100 pass testpass alias 192.168.1.51/32"
ifconfig_em1="inet 10.0.0.1/30"
ifconfig_em1_alias0="inet 10.0.1.1/24"
ifconfig_pfsync0="up syncdev em1 syncpeer 10.0.0.2 defer"
gateway_enable="NO"
pf_enable="NO"
"""


def test_modern_form_vhid_on_the_parent():
    imported = import_freebsd(MODERN, "rc.conf", "net.inet.ip.forwarding=1\nnet.inet.tcp.syncookies=1 # on\n"
                              "net.inet.ip.redirect=0\nkern.ipc.somaxconn=1024\n", "sysctl.conf")
    config = imported.config
    assert config.name == "fw-a"
    em0, em1 = config.interfaces
    assert em0.addresses == (ip("192.168.1.3/24"),)
    assert em1.addresses == (ip("10.0.0.1/30"), ip("10.0.1.1/24"))
    (group,) = config.carp
    assert (group.vhid, group.parent, group.name, group.advskew, group.password) == (1, "em0", None, 100, "testpass")
    assert group.addresses == (ip("192.168.1.50/32"), ip("192.168.1.51/32"))
    assert config.sync == nc.Sync(device="em1", peer=ipaddress.ip_address("10.0.0.2"), defer=True)
    assert config.host.forwarding is True  # the sysctl wins over gateway_enable="NO", as at boot
    assert dict(config.host.sysctl) == {"net.ipv4.tcp_syncookies": "1", "net.ipv4.conf.all.send_redirects": "0"}
    notes = {n.setting: n.message for n in imported.notes}
    assert "always loads" in notes["pf_enable"]
    assert "no Linux equivalent" in notes["kern.ipc.somaxconn"]
    assert "syncpeer" not in " ".join(n.message for n in imported.notes if n.setting.startswith("ifconfig_pfsync"))


@pytest.mark.parametrize("text,line,words", [
    ('ifconfig_em0="10.0.0.1/24"\ncloned_interfaces="carp0"\nifconfig_carp0="192.0.2.1 vhid 1"\n', 3,
     "no interface has an address in 192.0.2.1's subnet"),
    ('ifconfig_em0="10.0.0.1/24"\ncloned_interfaces="carp0"\nifconfig_carp0="10.0.0.9 vhid 300"\n', 3,
     "vhid must be 1..255, got 300"),
    ('ifconfig_em0="10.0.0.1/24"\ncloned_interfaces="carp0"\nifconfig_carp0="10.0.0.9 vhid 1 pass a"\n'
     'ifconfig_carp0_alias0="10.0.0.8 vhid 1 pass b"\n', 4, "password 'b' differs from 'a'"),
    ('ifconfig_em0="10.0.0.1/24"\nifconfig_pfsync0="up syncdev em7"\n', 2, "syncdev 'em7' is not one of"),
    ('ifconfig_em0="10.0.0.1/24"\nifconfig_pfsync0="up"\n', 2, "needs 'syncdev IF'"),
    ('ifconfig_em0="10.0.0.1/24"\ndefaultrouter="gw.example"\n', 2, "not an IP address"),
    ('ifconfig_em0="10.0.0.1/24 vhid"\n', 1, "'vhid' needs a value"),
])
def test_errors_name_file_and_line(text, line, words):
    with pytest.raises(SourceError) as error:
        import_freebsd(text, "rc.conf")
    assert str(error.value).startswith(f"rc.conf:{line}: "), str(error.value)
    assert words in str(error.value)


def test_sysctl_value_out_of_range_is_an_error():
    with pytest.raises(SourceError, match=r"^sysctl.conf:1: net.inet.tcp.blackhole: must be 0..2, got 5"):
        import_freebsd('ifconfig_em0="10.0.0.1/24"\n', "rc.conf", "net.inet.tcp.blackhole=5\n", "sysctl.conf")


def test_map_of_an_unknown_interface_is_an_error():
    with pytest.raises(SourceError, match="rc.conf has no interface 'xl7'"):
        import_freebsd('ifconfig_em0="10.0.0.1/24"\n', "rc.conf", device_map={"xl7": "eth0"})


@pytest.mark.parametrize("words,address,vhid", [
    ("192.168.1.50/24 vhid 1 pass foo advskew 100 advbase 1", "192.168.1.50/24", 1),
    ("vhid 2 pass testpass 192.168.1.50/24", "192.168.1.50/24", 2),
    ("inet 10.1.2.3 netmask 0xffff0000", "10.1.2.3/16", None),
    ("inet 172.16.0.1", "172.16.0.1/16", None),
])
def test_ifconfig_words(words, address, vhid):
    args, _ = parse_ifconfig(words)
    assert (str(args.address), args.vhid) == (address, vhid)


def test_cli_writes_a_loadable_toml(shared, tmp_path, capsys):
    folder = shared / "seed" / "configs" / "corrected"
    out = tmp_path / "fw2.toml"
    status = cli.main(["import-freebsd", str(folder / "rc.conf.secondary"), str(folder / "sysctl.conf"),
                       "--map", "xl0=eth0", "--map", "xl1=eth1", "--pf-conf", "pf.conf", "-o", str(out)])
    assert status == 0
    config = nc.load(out)
    assert config.name == "fw2" and config.pf_conf == tmp_path / "pf.conf"
    assert config.interface("xl1").device == "eth1"
    assert "sendspace" in capsys.readouterr().err


def test_cli_error_is_one_line(tmp_path, capsys):
    rc = tmp_path / "rc.conf"
    rc.write_text('ifconfig_em0="10.0.0.1/24"\nifconfig_pfsync0="up"\n')
    assert cli.main(["import-freebsd", str(rc)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"pfha: {rc}:2: ifconfig_pfsync0: pfsync needs 'syncdev IF' (or syncif) to know its link"


def test_modern_form_round_trips(tmp_path):
    imported = import_freebsd(MODERN, "rc.conf")
    text = dumps(imported.config, imported.origins, imported.notes)
    assert "name =" not in text.split("[[carp.group]]")[1].split("\n\n")[0]
    assert nc.loads(text, tmp_path / "a.toml") == imported.config


def test_shell_code_duplicates_ipv6_and_renames_are_noted():
    text = ('ifconfig_em0="10.0.0.1/24"\n'
            'ifconfig_em0="10.0.0.2/24"\n'
            'ifconfig_em0_ipv6="inet6 2001:db8::1 prefixlen 64 accept_rtadv"\n'
            'ifconfig_em0_name="ext"\n'
            'if [ -r /etc/rc.conf.local ]; then . /etc/rc.conf.local; fi\n')
    imported = import_freebsd(text, "rc.conf")
    (em0,) = imported.config.interfaces
    assert em0.addresses == (ip("10.0.0.2/24"), ip("2001:db8::1/64"))
    notes = {(n.origin.line, n.setting): n.message for n in imported.notes}
    assert notes[(1, "ifconfig_em0")] == "overridden by line 2, as sh would"
    assert "accept_rtadv" in notes[(3, "ifconfig_em0_ipv6")]
    assert "renames" in notes[(4, "ifconfig_em0_name")]
    assert "shell code" in notes[(5, "if")]


WORDS = ["inet", "inet6", "10.0.0.1", "prefixlen", "100", "10.0.0.9/24", "192.0.2.1", "2001:db8::1", "netmask", "255.255.255.0",
         "0xffffff00", "bogus", "prefixlen", "64", "x", "vhid", "1", "300", "pass", "foo", "advskew", "advbase",
         "alias", "up", "carpdev", "em0", "syncdev", "syncpeer", "DHCP", "broadcast", "-defer", "defer"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(st.sampled_from(WORDS), max_size=8), min_size=1, max_size=4),
       st.sampled_from(["ifconfig_em0", "ifconfig_carp0", "ifconfig_em0_alias0", "ifconfig_pfsync0"]))
def test_any_ifconfig_words_import_or_fail_with_a_located_error(values, variable):
    lines = ['ifconfig_em0="inet 10.0.0.2/24"', 'cloned_interfaces="carp0"']
    lines += [f'{variable}="{" ".join(words)}"' for words in values]
    try:
        imported = import_freebsd("\n".join(lines) + "\n", "rc.conf")
    except SourceError as error:
        assert str(error).startswith("rc.conf:"), str(error)
        return
    text = dumps(imported.config, imported.origins, imported.notes)
    assert nc.loads(text, "/x/n.toml") == imported.config
