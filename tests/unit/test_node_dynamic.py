"""The node's view for pf.conf's ``(if)`` addresses: live addresses of the mapped devices, CARP
addresses where the node config puts them, whether or not this node holds them right now."""

from __future__ import annotations

import ipaddress

from node_toml import node_toml
from pfha.conf import InterfaceView
from pfha.node import config as nc
from pfha.node.parts import dynamic_view

CONFIG = node_toml("fw1", "pf.conf", {"xl0": ("eth1", ["203.0.113.2/24"]), "xl1": ("eth2", ["10.1.1.2/24"]), "lo0": None},
                   carp=[{"vhid": 1, "name": "carp0", "parent": "xl0", "addresses": ["203.0.113.10/24"], "password": "p"},
                         {"vhid": 2, "parent": "xl1", "addresses": ["10.1.1.1/24"], "password": "p"}])


def ips(view, name):
    return sorted(str(a) for a in view.addrs(name))


def test_live_addresses_follow_carp_addresses_stay(tmp_path):
    config = nc.loads(CONFIG, tmp_path / "fw1.toml")
    master = InterfaceView.from_specs(["eth1=203.0.113.2/24,203.0.113.10/24,203.0.113.77/24", "eth2=10.1.1.2/24,10.1.1.1/24",
                                       "lo=127.0.0.1/8", "eth9=192.168.5.5/24"])
    backup = InterfaceView.from_specs(["eth1=203.0.113.2/24,203.0.113.77/24", "eth2=10.1.1.2/24", "lo=127.0.0.1/8"])
    for live in (master, backup):
        view = dynamic_view(config, live)
        # a named group's VIP is carp0's only; an unnamed group's is on its parent (BSD's forms)
        assert ips(view, "carp0") == ["203.0.113.10/24"]
        assert ips(view, "xl0") == ["203.0.113.2/24", "203.0.113.77/24"]  # .77 added at run time: followed
        assert ips(view, "xl1") == ["10.1.1.1/24", "10.1.1.2/24"]
        assert ips(view, "lo0") == ["127.0.0.1/8"]
        assert not view.exists("eth9") and not view.exists("eth1")
    assert dynamic_view(config, backup) == dynamic_view(config, master)  # failover changes nothing
    gone = dynamic_view(config, InterfaceView.from_specs(["eth2=10.1.1.2/24"]))
    assert gone.addrs("xl0") == () and gone.addrs("carp0") == (ipaddress.ip_interface("203.0.113.10/24"),)


def test_pflog_names_interfaces_as_pf_conf_does(tmp_path):
    from pfha.node.parts import pf_names

    config = nc.loads(CONFIG, tmp_path / "fw1.toml")
    devices = {1: "lo", 2: "eth1", 3: "eth2", 4: "eth9", 0: ""}
    name = pf_names(config, devices.__getitem__)
    assert [name(i) for i in (1, 2, 3, 4, 0)] == ["lo0", "xl0", "xl1", "eth9", ""]
