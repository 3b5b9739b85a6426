"""pf.conf interface names mapped to Linux devices (``xl0 -> eth1``): the kernel rules name the
devices, pf.conf and the metadata keep the BSD names, and ``pfha load --map`` sets the map."""

from __future__ import annotations

import dataclasses
import ipaddress
import json

import pytest

from conftest import SEED_CONFIGS
from pfha.cli import main as cli
from pfha.conf import InterfaceView, parse_text
from pfha.errors import PfhaError
from pfha.nft.compile import compile_ruleset, parse_device_map, view_as_named

SPECS = ["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "rl0=10.10.10.250/8",
         "carp0=203.0.113.10/24", "lo0=127.0.0.1/8"]
DEVICES = {"xl0": "eth1", "xl1": "eth2", "rl0": "eth3", "lo0": "lo"}


def interface_names(commands) -> set[str]:
    """Every name compared with iifname/oifname in the compiled rules."""
    found: set[str] = set()
    for command in commands:
        for expr in command.get("add", {}).get("rule", {}).get("expr", []):
            match = expr.get("match")
            if match and match["left"].get("meta", {}).get("key") in ("iifname", "oifname"):
                right = match["right"]
                found.update(right["set"] if isinstance(right, dict) else [right])
    return found


def tutorial() -> str:
    path = SEED_CONFIGS / "corrected" / "pf.conf"
    if not path.exists():
        pytest.skip("tutorial configs not found")
    return path.read_text()


def test_the_tutorial_ruleset_on_renamed_devices():
    view = InterfaceView.from_specs(SPECS)
    ruleset = parse_text(tutorial(), interfaces=view)
    plain = compile_ruleset(ruleset, view)
    mapped = compile_ruleset(ruleset, view, devices=DEVICES)
    assert {"xl0", "xl1"} <= interface_names(plain.commands)
    names = interface_names(mapped.commands)
    assert {"eth1", "eth2", "lo"} <= names and not names & {"xl0", "xl1", "rl0", "lo0"}
    # only the interface names differ: same rules, same addresses, same pf text in the metadata
    assert len(mapped.commands) == len(plain.commands)
    assert mapped.metadata["rules"] == plain.metadata["rules"]
    assert mapped.metadata["devices"] == DEVICES


def test_dynamic_addresses_keep_the_pf_name_and_record_the_device():
    view = InterfaceView.from_specs(SPECS)
    ruleset = parse_text("pass in on xl0 to (xl0)\npass out on xl0 from (carp0)\n", interfaces=view)
    compiled = compile_ruleset(ruleset, view, devices=DEVICES)
    dynamic = {(d["interface"], d["device"]) for d in compiled.metadata["dynamic"]}
    assert dynamic == {("xl0", "eth1"), ("carp0", "carp0")}
    assert interface_names(compiled.commands) == {"eth1"}


def test_live_devices_seen_under_pf_names():
    live = InterfaceView.from_specs(["eth1=203.0.113.2/24", "eth2=192.168.1.250/24", "lo=127.0.0.1/8", "eth9=10.9.9.9/24"])
    live = dataclasses.replace(live, loopback=frozenset({"lo"}))  # as InterfaceView.live() marks it
    named = view_as_named(live, {"xl0": "eth1", "xl1": "eth2", "rl0": "eth3", "lo0": "lo"})
    assert named.addrs("xl0") == (ipaddress.ip_interface("203.0.113.2/24"),)
    assert named.addrs("eth9") == (ipaddress.ip_interface("10.9.9.9/24"),)  # unmapped: as it is
    assert named.exists("rl0") and named.addrs("rl0") == ()  # mapped to a device that is not there
    assert not named.exists("eth1") and named.is_loopback("lo0")
    assert view_as_named(live, {}) is live


@pytest.mark.parametrize("specs, message", [
    (["xl0"], "expected NAME=DEVICE"),
    (["xl0=eth1", "xl0=eth2"], "mapped twice"),
    (["xl0=eth1", "xl1=eth1"], "two pf.conf names"),
])
def test_bad_maps_are_refused(specs, message):
    with pytest.raises(PfhaError, match=message):
        parse_device_map(specs)


def test_load_cli_map_option(tmp_path, capsys):
    conf = tmp_path / "pf.conf"
    conf.write_text("block in on xl0 all\npass out on xl1 all\n")
    args = ["load", "--json", "--if=xl0=10.0.0.1/24", "--if=xl1=10.1.0.1/24", "--map", "xl0=eth1", "--map=xl1=eth2", str(conf)]
    assert cli.main(args) == 0
    document = json.loads(capsys.readouterr().out)["nftables"]
    assert interface_names(document) == {"eth1", "eth2"}
    assert cli.main(["load", "-n", "--if=xl0=10.0.0.1/24", "--map", "xl0", str(conf)]) != 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NAME=DEVICE" in err
