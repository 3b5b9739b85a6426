"""A CARP test bed in network namespaces: a switch, CARP nodes, a client, and the daemons on them.

Used by the root tests and by ``bench/bench_carp.py`` to run pfha, ucarp and keepalived the
same way (carp.md §6.1, §7). Built on :class:`pfha.lab.netns.Lab`, which removes every
namespace and process it made; every daemon started here is also stopped by its own pid.
Never touches the root namespace.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pfha.carp import wire
from pfha.lab.netns import Lab, Namespace
from pfha.pflog import pcap

SRC = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def capture_adverts(path: str | Path) -> list[tuple[int, wire.Ipv4Header, bytes]]:
    """(frame number from 1, IPv4 header, 36 CARP bytes) for every IPv4 CARP frame of a capture."""
    linktype, records = pcap.read_file(str(path))
    out = []
    for number, record in enumerate(records, 1):
        datagram = pcap.ip_packet(linktype, record.data)
        if datagram is None or datagram[0] >> 4 != 4:
            continue
        header, payload = wire.parse_ipv4(datagram)
        if header.protocol == wire.IPPROTO_CARP:
            out.append((number, header, payload))
    return out


@dataclass
class Daemon:
    """One started daemon: its process, namespace and log file."""

    kind: str
    host: Namespace
    proc: subprocess.Popen
    log: Path
    extra: dict = field(default_factory=dict)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
        """Signal the daemon (and, for keepalived, its children: every pid the daemon started)."""
        pids = [self.proc.pid] + self.extra.get("children", [])
        if self.kind == "keepalived":
            pids = self.host.pids() if sig == signal.SIGKILL else [self.proc.pid]
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(2)


class CarpBed:
    """Nodes ``a``, ``b`` (and a client ``c``) on one or more bridged segments.

    Segment ``k`` (interface ``eth{k}`` on every host) is 10.99.{k}.0/24: node a is .1, b .2,
    client .10. ``port(host, k)`` is the switch-side end of a host's link, for link cuts.
    """

    def __init__(self, lab: Lab, *, segments: int = 1, nodes: Sequence[str] = ("a", "b"), client: bool = True,
                 ipv6: bool = False) -> None:
        self.lab = lab
        self.tmp = Path(tempfile.mkdtemp(prefix="pfha-carp-"))
        self.sw = lab.ns("sw")
        self.hosts = {name: lab.ns(name) for name in nodes}
        if client:
            self.hosts["c"] = lab.ns("c")
        self.ports: dict[tuple[str, int], str] = {}
        for host in self.hosts.values():
            if ipv6:  # addresses usable at once: no duplicate address detection in the lab
                host.sysctl("net.ipv6.conf.all.accept_dad", 0)
                host.sysctl("net.ipv6.conf.default.accept_dad", 0)
            else:
                host.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
                host.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        self.daemons: list[Daemon] = []
        self.started = 0  # daemons ever started here: unique log and pid file names
        for k in range(segments):
            bridge = f"br{k}"
            lab.bridge(self.sw, bridge)
            self.sw.exec("ip", "link", "set", bridge, "type", "bridge", "mcast_snooping", "0")
            for name, host in self.hosts.items():
                self.ports[(name, k)] = lab.attach(self.sw, bridge, host, f"eth{k}")
                host.exec("ip", "addr", "add", f"{self.addr(name, k)}/24", "dev", f"eth{k}")
                if ipv6:
                    host.exec("ip", "addr", "add", f"{self.addr6(name, k)}/64", "dev", f"eth{k}", "nodad")

    @staticmethod
    def addr(name: str, segment: int = 0) -> str:
        last = {"a": 1, "b": 2, "c": 10}.get(name, 3)
        return f"10.99.{segment}.{last}"

    @staticmethod
    def addr6(name: str, segment: int = 0) -> str:
        last = {"a": 1, "b": 2, "c": 10}.get(name, 3)
        return f"fd00:99:{segment}::{last}"

    def port(self, name: str, segment: int = 0) -> str:
        return self.ports[(name, segment)]

    def set_port(self, name: str, up: bool, segment: int = 0) -> None:
        self.sw.exec("ip", "link", "set", self.port(name, segment), "up" if up else "down")

    def has_addr(self, name: str, address: str, segment: int = 0) -> bool:
        out = self.hosts[name].exec("ip", "-o", "addr", "show", "dev", f"eth{segment}", check=False).stdout
        return f" {address}/" in out

    def holders(self, address: str, segment: int = 0, names: Sequence[str] = ("a", "b")) -> list[str]:
        return [n for n in names if self.has_addr(n, address, segment)]

    # -- daemons

    def _log(self, label: str) -> Path:
        self.started += 1
        return self.tmp / f"{label}-{self.started}.log"

    def pfha(self, name: str, *args: str, label: str | None = None) -> Daemon:
        """``pfha carp run ARGS`` on ``name``, status under this bed's private run directory."""
        log = self._log(label or f"pfha-{name}")
        env = dict(os.environ, PYTHONPATH=str(SRC), PFHA_RUN_DIR=str(self.tmp / f"run-{name}"))
        proc = self.hosts[name].popen(sys.executable, "-m", "pfha.cli.main", "carp", "run", *args,
                                      stdout=subprocess.DEVNULL, stderr=open(log, "w"), env=env)
        daemon = Daemon("pfha", self.hosts[name], proc, log, {"run_dir": self.tmp / f"run-{name}"})
        self.daemons.append(daemon)
        return daemon

    def status(self, daemon: Daemon) -> dict | None:
        """The daemon's status file, or None until it exists."""
        for path in (daemon.extra["run_dir"] / "carp").glob(f"{daemon.proc.pid}.json"):
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                return None
        return None

    def group_state(self, daemon: Daemon, vhid: int = 1) -> str | None:
        status = self.status(daemon)
        if status is None:
            return None
        for group in status["node"]["groups"]:
            if group["vhid"] == vhid:
                return group["state"]
        return None

    def ucarp(self, name: str, *, vhid: int = 1, password: str = "secretpass", vip: str = "10.99.0.100",
              advbase: int = 1, advskew: int = 0, preempt: bool = False, segment: int = 0) -> Daemon:
        up, down = self.tmp / "vip-up.sh", self.tmp / "vip-down.sh"
        for path, verb in ((up, "add"), (down, "del")):
            path.write_text(f'#!/bin/sh\nexec ip addr {verb} "$2"/24 dev "$1" 2>/dev/null\n')
            path.chmod(0o755)
        argv = ["ucarp", "-i", f"eth{segment}", "-s", self.addr(name, segment), "-v", str(vhid), "-p", password,
                "-a", vip, "-b", str(advbase), "-k", str(advskew), "-u", str(up), "-d", str(down), "-z", "-f", "none"]
        if preempt:
            argv.append("-P")
        log = self._log(f"ucarp-{name}")
        proc = self.hosts[name].popen(*argv, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        daemon = Daemon("ucarp", self.hosts[name], proc, log)
        self.daemons.append(daemon)
        return daemon

    def keepalived(self, name: str, *, priority: int, vrid: int = 51, vip: str = "10.99.0.100",
                   version: int = 3, advert_int: float = 0.1, segment: int = 0) -> Daemon:
        conf = self.tmp / f"ka-{name}.conf"
        conf.write_text(
            "global_defs {\n  router_id %s\n  vrrp_version %d\n  enable_script_security\n}\n"
            "vrrp_instance VI_1 {\n  state BACKUP\n  interface eth%d\n  virtual_router_id %d\n"
            "  priority %d\n  advert_int %s\n  virtual_ipaddress {\n    %s/24 dev eth%d\n  }\n}\n"
            % (name, version, segment, vrid, priority, advert_int, vip, segment)
        )
        # Fresh pid files per start: keepalived refuses to start over the files a killed one left.
        log = self._log(f"keepalived-{name}")
        run = self.started
        argv = ["keepalived", "-n", "-l", "-D", "-P", "-f", str(conf), "-p", str(self.tmp / f"ka-{name}-{run}.pid"),
                "-r", str(self.tmp / f"ka-{name}-{run}-vrrp.pid")]
        proc = self.hosts[name].popen(*argv, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        daemon = Daemon("keepalived", self.hosts[name], proc, log)
        self.daemons.append(daemon)
        return daemon

    def close(self) -> None:
        """Kill every daemon started here (the bed stays usable for another trial)."""
        for daemon in self.daemons:
            if daemon.alive():
                daemon.stop(signal.SIGKILL, timeout=2)
        self.daemons.clear()

    def cleanup(self) -> None:
        """:meth:`close`, then remove the bed's temporary files (logs, configs, status)."""
        self.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
