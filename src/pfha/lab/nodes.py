"""The lab's firewalls as pfha nodes: find the tutorial's configs, import them, run ``pfha node``.

The configs come from the shared seed (``as-published`` or ``corrected``) or from a directory
holding ``pf.conf``, ``rc.conf.primary``, ``rc.conf.secondary`` and optionally ``sysctl.conf``.
Each firewall's rc.conf is imported with :mod:`pfha.node.freebsd` into ``HOST/node.toml`` under
the lab's state directory, then ``pfha node run -c`` starts in the firewall's namespace.

This module never copies the seed into the project: it reads it where it lies.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import pfha
from pfha.errors import PfhaError
from pfha.lab.build import LabError, RunningLab

CONFIG_FILES = {"fw1": "rc.conf.primary", "fw2": "rc.conf.secondary"}


def seed_configs() -> Path:
    """``shared/seed/configs``: $PFHA_SHARED, else the first ``shared/`` beside a parent of the code."""
    env = os.environ.get("PFHA_SHARED")
    candidates = [Path(env)] if env else []
    here = Path(pfha.__file__).resolve()
    candidates += [parent / "shared" for parent in here.parents]
    for candidate in candidates:
        if (candidate / "seed" / "configs").is_dir():
            return candidate / "seed" / "configs"
    raise LabError("cannot find shared/seed/configs (set PFHA_SHARED to the shared directory)")


def config_dir(config: str) -> Path:
    if config in ("as-published", "corrected"):
        return seed_configs() / config
    path = Path(config)
    missing = [f for f in ("pf.conf", *CONFIG_FILES.values()) if not (path / f).is_file()]
    if not path.is_dir() or missing:
        raise LabError(f"--config {config}: not as-published, corrected or a directory with {', '.join(missing or ['pf.conf'])}")
    return path


def write_node_configs(running: RunningLab, config: str) -> dict[str, Path]:
    """Import each firewall's rc.conf (+ sysctl.conf) into a node config in the lab's state.

    Interface names stay the tutorial's (the lab names its devices xl0, xl1, rl0); pf.conf is
    read where it lies; only the pflog file moves into the lab's state (two nodes, one disk).
    """
    from pfha.node.config import Pflog
    from pfha.node.freebsd import import_files
    from pfha.node.toml_out import dumps

    source = config_dir(config)
    sysctl = source / "sysctl.conf" if (source / "sysctl.conf").exists() else None
    written = {}
    for host, rc_name in CONFIG_FILES.items():
        imported = import_files(source / rc_name, sysctl, pf_conf=str(source / "pf.conf"))
        node = dataclasses.replace(imported.config, pflog=Pflog(file=running.host_dir(host) / "pflog",
                                                                enabled=imported.config.pflog.enabled))
        if node.sync is not None and node.sync.key is None and node.sync.key_file is None:
            # pfsync has no authentication, pfha's sync always has: one lab secret for both nodes
            node = dataclasses.replace(node, sync=dataclasses.replace(node.sync, key_file=sync_key(running)))
        path = running.node_config(host)
        path.write_text(dumps(node, imported.origins, imported.notes,
                              header=f"lab {running.name}: {host}, imported from {source / rc_name} by pfha lab up"))
        written[host] = path
    return written


def sync_key(running: RunningLab) -> Path:
    path = running.dir / "sync.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(os.urandom(32).hex() + "\n")
    return path


def start(running: RunningLab, config: str, log: Callable[[str], None] = lambda _m: None) -> None:
    configs = write_node_configs(running, config)
    for host, path in configs.items():
        log(f"{host}: pfha node run -c {path}" + (f" --without {','.join(running.state.without)}" if running.state.without else ""))
        running.start_node(host)
    wait_ready(running, log=log)


def node_status(running: RunningLab, host: str) -> dict:
    """The node's own ``status`` over its control socket, or why there is none."""
    if not running.state.daemons:
        return {"daemon": "off (--no-daemons)"}
    if not running.alive(f"{host}/node"):
        return {"daemon": "not running"}
    from pfha.node import control

    try:
        return {"daemon": "running", **control.request(running.control_socket(host), "status", timeout=2.0)}
    except PfhaError as error:
        return {"daemon": "running", "error": str(error)}


def wait_ready(running: RunningLab, timeout: float = 30.0, log: Callable[[str], None] = lambda _m: None) -> None:
    """Wait until both nodes answer on their control sockets and one of them is master."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = {h: node_status(running, h) for h in CONFIG_FILES}
        dead = [h for h, s in statuses.items() if s.get("daemon") == "not running"]
        if dead:
            raise LabError(f"{', '.join(dead)}: pfha node exited: {last_error(running, dead[0])}")
        carp_off = "carp" in running.state.without
        if all("error" not in s for s in statuses.values()) and (carp_off or masters(statuses)):
            return
        time.sleep(0.2)
    raise LabError(f"the nodes did not become ready within {timeout:.0f} s (see {running.dir}/fw*/node.log)")


def last_error(running: RunningLab, host: str) -> str:
    """The node's last error line (its logs go with the lab when ``up`` cleans up after itself)."""
    try:
        lines = (running.dir / host / "node.log").read_text().splitlines()
    except OSError:
        return "no log"
    for line in reversed(lines):
        if line.startswith("pfha: ") or '"level": "error"' in line:
            return line
    return lines[-1] if lines else "empty log"


def masters(statuses: dict[str, dict]) -> list[str]:
    """Firewalls that are MASTER of at least one vhid."""
    return [h for h, s in statuses.items() if any(v.get("state") == "MASTER" for v in s.get("carp", {}).get("vhids", []))]


def summary(node: dict) -> str:
    if node.get("daemon") != "running":
        return f"node {node.get('daemon')}"
    if "error" in node:
        return f"node running, control socket: {node['error']}"
    vhids = ", ".join(f"vhid {v['vhid']} {v['state']}" for v in node.get("carp", {}).get("vhids", []))
    sync = node.get("sync", {})
    return f"{vhids or 'no carp'}; sync {sync.get('state', 'off')}; states {node.get('states', '?')}; ruleset {str(node.get('ruleset', {}).get('hash', '-'))[:12]}"
