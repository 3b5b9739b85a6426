"""Builders shared by the audit tests: a small HA pair as node TOMLs and a pf.conf beside them."""

from __future__ import annotations

from pathlib import Path

from node_toml import node_toml
from pfha.audit.nodes import NodeSource, load_toml

GOOD_PF = """\
ext_if = "ext0"
int_if = "int0"
sync_if = "sync0"
web = "10.1.1.80"

set skip on lo0
nat on $ext_if from $int_if:network to any -> 192.0.2.10
rdr on $ext_if proto tcp from any to 192.0.2.10 port 80 -> $web

block log all
pass quick on $sync_if proto pfsync
pass quick proto carp
pass in quick on $ext_if proto tcp from any to $web port 80
pass out quick on $int_if proto tcp from any to $web port 80
pass in quick on $int_if proto tcp from $int_if:network to any port 443
pass out quick on $ext_if proto tcp from 192.0.2.10 to any port 443
"""


def write_node(folder: Path, name: str, own: int, peer: int, skew: int, pf_text: str, *, preempt: bool = True,
               password: str = "secret", key: str = "k3y", edit=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = node_toml(
        name, "pf.conf",
        {"ext0": ("eth0", [f"192.0.2.{own}/24"]), "int0": ("eth1", [f"10.1.1.{own}/24"]),
         "sync0": ("eth2", [f"10.9.9.{own}/24"]), "lo0": None},
        preempt=preempt,
        carp=[{"vhid": 1, "name": "carp0", "parent": "ext0", "addresses": ["192.0.2.10/24"], "password": password, "advskew": skew},
              {"vhid": 2, "parent": "int0", "addresses": ["10.1.1.1/24"], "password": password, "advskew": skew}],
        sync={"device": "sync0", "peer": f"10.9.9.{peer}", "key": key},
        host={"default_router": "192.0.2.254"})
    if edit is not None:
        text = edit(text)
    path = folder / f"{name}.toml"
    path.write_text(text)
    (folder / "pf.conf").write_text(pf_text)
    return path


def make_pair(tmp_path: Path, pf_text: str = GOOD_PF, edit_b=None, **b_overrides) -> tuple[NodeSource, NodeSource]:
    """fw1 (advskew 0) and fw2 (advskew 100) sharing one pf.conf; ``b_overrides`` change fw2."""
    options = {"skew": 100}
    options.update(b_overrides)
    a = write_node(tmp_path, "fw1", 2, 3, 0, pf_text)
    b = write_node(tmp_path, "fw2", 3, 2, options.pop("skew"), pf_text, edit=edit_b, **options)
    return load_toml(a), load_toml(b)
