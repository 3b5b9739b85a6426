"""The node TOML schema: examples load, every mistake names the file and key, output reads back."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from node_toml import node_toml
from pfha.node import config as nc
from pfha.node.toml_out import dumps

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

MINIMAL = node_toml("fw1", "pf.conf", {"xl0": ("eth0", ["203.0.113.2/24"]), "lo0": None},
                    carp=[{"vhid": 1, "parent": "xl0", "addresses": ["203.0.113.10/24"], "password": "foo"}])


def test_examples_load_as_the_tutorials_pair():
    fw1 = nc.load(EXAMPLES / "fw1.toml")
    fw2 = nc.load(EXAMPLES / "fw2.toml")
    assert (fw1.name, fw2.name) == ("fw1", "fw2")
    assert [g.vhid for g in fw1.carp] == [1, 2, 3]
    assert [g.advskew for g in fw1.carp] == [0, 0, 0]
    assert [g.advskew for g in fw2.carp] == [100, 100, 100]
    assert all(g.preempt for g in fw1.carp + fw2.carp)
    assert fw1.device_map()["lo0"] == "lo"
    assert fw1.sync.peer == ipaddress.ip_address("10.10.10.251")
    assert fw2.sync.peer == ipaddress.ip_address("10.10.10.250")
    assert fw1.sync.key_file == Path("/etc/pfha/sync.key")
    assert fw1.addresses_by_interface()["carp0"][1] == ipaddress.ip_interface("203.0.113.11/24")


def test_defaults_and_relative_paths(tmp_path):
    path = tmp_path / "node.toml"
    config = nc.loads(MINIMAL, path)
    assert config.pf_conf == tmp_path / "pf.conf"
    assert config.interface("lo0").device == "lo"
    group = config.carp[0]
    assert (group.advbase, group.advskew, group.preempt, group.name) == (1, 0, False, None)
    assert config.sync is None
    assert config.pflog == nc.Pflog(Path("/var/log/pflog"), True)
    assert config.host == nc.Host()


def test_host_settings_become_linux_sysctls():
    host = nc.Host(forwarding=True, accept_redirects=False, sysctl=(("net.ipv4.tcp_syncookies", "1"),))
    sysctls = host.sysctls()
    assert sysctls["net.ipv4.ip_forward"] == "1"
    assert sysctls["net.ipv4.conf.all.accept_redirects"] == "0"
    assert sysctls["net.ipv6.conf.all.accept_redirects"] == "0"
    assert sysctls["net.ipv4.tcp_syncookies"] == "1"
    assert nc.Host(forwarding=False).sysctls() == {"net.ipv4.ip_forward": "0", "net.ipv6.conf.all.forwarding": "0"}


BAD = [
    # (replace this, with this, expected key, expected words)
    ('name = "fw1"\n', "", "node.name", "missing"),
    ("vhid = 1", "vhid = 300", "carp.group[0].vhid", "must be 1..255, got 300"),
    ("vhid = 1", 'vhid = "one"', "carp.group[0].vhid", "must be an integer"),
    ('password = "foo"', 'pasword = "foo"', "carp.group[0].pasword", "did you mean 'password'"),
    ('password = "foo"', 'password = "' + "x" * 25 + '"', "carp.group[0].password", "longer than 19 bytes"),
    ('parent = "xl0"', 'parent = "xl9"', "carp.group[0].parent", "'xl9' is not one of [interfaces]"),
    ('addresses = ["203.0.113.10/24"]', 'addresses = ["203.0.113.10"]', "carp.group[0].addresses[0]",
     "no prefix length"),
    ('addresses = ["203.0.113.2/24"]', 'addresses = ["203.0.113.300/24"]', "interfaces.xl0.addresses[0]",
     "not an address"),
    ('device = "eth0"', 'device = "lo"', "interfaces.lo0.device", "already used by interfaces.xl0"),
    ('device = "eth0"', 'device = "a-name-far-too-long"', "interfaces.xl0.device", "not a valid interface name"),
    ('password = "foo"', 'password = "foo"\nadvskew = 255', "carp.group[0].advskew", "must be 0..254"),
    ('password = "foo"', 'password = "foo"\npassword_file = "k"', "carp.group[0].password_file", "not both"),
]


@pytest.mark.parametrize("old,new,key,words", BAD)
def test_mistakes_name_file_key_and_what_is_wrong(tmp_path, old, new, key, words):
    text = MINIMAL.replace(old, new, 1)
    assert text != MINIMAL
    path = tmp_path / "fw1.toml"
    with pytest.raises(nc.NodeConfigError) as error:
        nc.loads(text, path)
    message = str(error.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert words in message
    assert error.value.key == key


@pytest.mark.parametrize("extra,key,words", [
    ('[sync]\ndevice = "rl0"\n', "sync.device", "not one of [interfaces]"),
    ('[sync]\ndevice = "xl0"\npeer = "nope"\n', "sync.peer", "not an IP address"),
    ('[sync]\ndevice = "xl0"\nkey = "a"\nkey_file = "b"\n', "sync.key_file", "not both"),
    ('[host]\ntcp_blackhole = 3\n', "host.tcp_blackhole", "must be 0..2"),
    ('[host]\nforwarding = "yes"\n', "host.forwarding", "must be true or false"),
    ('[host.sysctl]\n"Not A Sysctl" = 1\n', "host.sysctl.\"Not A Sysctl\"", "not a sysctl name"),
    ('[host.sysctl]\n"net.ipv4.ip_forward" = [1]\n', "host.sysctl.\"net.ipv4.ip_forward\"", "string or an integer"),
    ('[pflog]\nfile = 3\n', "pflog.file", "non-empty string"),
    ('[bogus]\nx = 1\n', "bogus", "unknown key"),
])
def test_section_mistakes(tmp_path, extra, key, words):
    path = tmp_path / "n.toml"
    with pytest.raises(nc.NodeConfigError) as error:
        nc.loads(MINIMAL + extra, path)
    assert str(error.value).startswith(f"{path}: {key}: "), str(error.value)
    assert words in str(error.value)


def test_duplicate_vhid_is_refused(tmp_path):
    text = MINIMAL + '\n[[carp.group]]\nvhid = 1\nparent = "xl0"\naddresses = ["203.0.113.11/24"]\n'
    with pytest.raises(nc.NodeConfigError, match=r"carp.group\[1\].vhid: vhid 1 is already used by carp.group\[0\]"):
        nc.loads(text, tmp_path / "n.toml")


def test_toml_syntax_error_has_file_and_line(tmp_path):
    path = tmp_path / "n.toml"
    path.write_text('[node]\nname = "fw1"\npf_conf = \n')
    with pytest.raises(nc.NodeConfigError) as error:
        nc.load(path)
    assert str(error.value).startswith(f"{path}:3: not valid TOML")


def test_unreadable_file(tmp_path):
    with pytest.raises(nc.NodeConfigError, match="cannot read node config"):
        nc.load(tmp_path / "missing.toml")


@pytest.mark.parametrize("name", ["fw1.toml", "fw2.toml"])
def test_written_toml_reads_back_equal(tmp_path, name):
    config = nc.load(EXAMPLES / name)
    again = nc.loads(dumps(config), tmp_path / name)
    assert again == config


printable = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=19).filter(
    lambda s: len(s.encode()) <= 19)


@settings(max_examples=60, deadline=None)
@given(password=printable, name=st.text(min_size=1, max_size=30).filter(lambda s: "\x00" not in s),
       advskew=st.integers(0, 254), advbase=st.integers(1, 255), preempt=st.booleans())
def test_round_trip_of_any_values(password, name, advskew, advbase, preempt):
    config = nc.NodeConfig(
        name=name, pf_conf=Path("/etc/pf.conf"),
        interfaces=(nc.Interface("xl0", "eth0", (ipaddress.ip_interface("192.0.2.2/24"),)),),
        carp=(nc.CarpGroup(vhid=7, parent="xl0", addresses=(ipaddress.ip_interface("192.0.2.1/24"),),
                           password=password, advbase=advbase, advskew=advskew, preempt=preempt),),
    )
    assert nc.loads(dumps(config), "/x/n.toml") == config


def test_interface_as_a_bare_device_name(tmp_path):
    text = MINIMAL.replace('[interfaces.xl0]\ndevice = "eth0"\naddresses = ["203.0.113.2/24"]\n\n[interfaces.lo0]\n',
                           '[interfaces]\nxl0 = "eth0"\nlo0 = "lo"\n')
    config = nc.loads(text, tmp_path / "n.toml")
    assert config.device_map() == {"xl0": "eth0", "lo0": "lo"}
    assert config.interface("xl0").addresses == ()


def test_addresses_by_interface_follows_the_bsd_form():
    config = nc.load(EXAMPLES / "fw1.toml")
    view = config.addresses_by_interface()
    assert [str(a) for a in view["xl0"]] == ["203.0.113.2/24"]  # $ext_if stays the node's own address
    assert len(view["carp0"]) == 3
    unnamed = nc.NodeConfig("n", Path("/p"), (nc.Interface("em0", "em0", (ipaddress.ip_interface("192.0.2.3/24"),)),),
                            (nc.CarpGroup(1, "em0", (ipaddress.ip_interface("192.0.2.50/32"),)),))
    assert [str(a) for a in unnamed.addresses_by_interface()["em0"]] == ["192.0.2.3/24", "192.0.2.50/32"]
    assert unnamed.own_addresses() == {ipaddress.ip_address("192.0.2.3")}
    assert unnamed.shared_addresses() == {ipaddress.ip_address("192.0.2.50")}


@pytest.mark.parametrize("text,key", [
    ('node = []\ninterfaces = {}\n', "node"),
    ('interfaces = 3\n[node]\nname = "a"\npf_conf = "p"\n', "interfaces"),
    ('[node]\nname = "a"\npf_conf = "p"\n[interfaces]\nxl0 = 3\n', "interfaces.xl0"),
    ('[node]\nname = "a"\npf_conf = "p"\n[interfaces]\nxl0 = "eth0"\n[carp]\ngroup = 1\n', "carp.group"),
    ('[node]\nname = "a"\npf_conf = "p"\n[interfaces]\nxl0 = "eth0"\n[[carp.group]]\nvhid = 1\nparent = "xl0"\n'
     'addresses = "10.0.0.1/24"\n', "carp.group[0].addresses"),
    ('sync = "xl0"\n[node]\nname = "a"\npf_conf = "p"\n[interfaces]\nxl0 = "eth0"\n', "sync"),
    ('[node]\nname = "a"\npf_conf = "p"\n[interfaces]\nxl0 = "eth0"\n[host]\ndefault_router = 5\n', "host.default_router"),
])
def test_wrong_types_are_errors_not_tracebacks(tmp_path, text, key):
    with pytest.raises(nc.NodeConfigError) as error:
        nc.loads(text, tmp_path / "n.toml")
    assert error.value.key == key, str(error.value)
