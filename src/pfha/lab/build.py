"""Bring a lab topology up in network namespaces, drive it, and take it down again.

A lab has a name (default ``tut``). Every namespace it makes is called ``pfhalab-NAME-HOST``, and
what it started is recorded in ``/run/pfha-lab/NAME/state.json`` *before* it is made, so that
``down`` removes everything, also after a crash of the process that built it (it also sweeps
any namespace with the lab's prefix that the record missed).

Each switch is a bridge in its own namespace (``sw-ext``, ``sw-lan``, ``sw-inet``) whose ports
are named after the hosts plugged into them: cutting ``fw1``'s LAN cable is setting port
``fw1`` of ``sw-lan`` down, which the firewall sees as loss of carrier, as with a real cable.

This module never touches the root namespace's interfaces, routes, rulesets or conntrack:
everything happens inside the lab's own namespaces.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pfha
from pfha.errors import PfhaError
from pfha.lab.netns import Lab, Namespace, kill_all, run
from pfha.lab.services import FetchResult, ProbeResult, Target
from pfha.lab.topology import Host, Topology, tutorial

STATE_ROOT = Path(os.environ.get("PFHA_LAB_STATE", "/run/pfha-lab"))
NS_PREFIX = "pfhalab"
FAIL_MODES = ("kill", "link", "stop")


class LabError(PfhaError):
    """A lab could not be built, found or driven."""


def ns_prefix(name: str) -> str:
    return f"{NS_PREFIX}-{name}"


def state_dir(name: str) -> Path:
    return STATE_ROOT / name


def python_env(**extra: str) -> dict[str, str]:
    """The environment for lab processes: this very pfha importable, whether installed or not,
    and its ``pfha`` and ``pfctl`` commands first on PATH (``pfha lab exec fw1 -- pfctl -ss``)."""
    env = dict(os.environ, **extra)
    src = str(Path(pfha.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in (scripts, env.get("PATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class LabState:
    """What a lab made, as persisted in ``state.json`` (the record ``down`` works from)."""

    name: str
    config: str = ""
    daemons: bool = False
    without: list[str] = field(default_factory=list)  # node parts left out (pfha node run --without)
    namespaces: list[str] = field(default_factory=list)
    processes: dict[str, int] = field(default_factory=dict)  # "host/what" -> pid
    failed: dict[str, str] = field(default_factory=dict)  # host -> how
    created: float = field(default_factory=time.time)

    @classmethod
    def load(cls, name: str) -> LabState:
        path = state_dir(name) / "state.json"
        try:
            return cls(**json.loads(path.read_text()))
        except FileNotFoundError:
            raise LabError(f"no lab named {name!r} (no {path}); start one with 'pfha lab up'") from None
        except (ValueError, TypeError) as error:
            raise LabError(f"{path}: unreadable lab state: {error}") from None

    def save(self) -> None:
        directory = state_dir(self.name)
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / "state.json.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(directory / "state.json")


@dataclass
class _RecordedLab(Lab):
    """A :class:`Lab` with a fixed prefix that records each namespace before creating it."""

    on_create: Callable[[str], None] | None = None

    def __post_init__(self) -> None:  # keep the given prefix: the lab's name is the identity
        pass

    def ns(self, role: str) -> Namespace:
        if role not in self.namespaces and self.on_create:
            self.on_create(f"{self.prefix}-{role}")
        return super().ns(role)


class RunningLab:
    """A lab that exists (just built, or found again from its state file)."""

    def __init__(self, state: LabState, topology: Topology | None = None) -> None:
        self.state = state
        self.topology = topology or tutorial()
        self.name = state.name
        self.dir = state_dir(state.name)

    # -- namespaces and commands ----------------------------------------------------------

    def ns(self, host: str) -> Namespace:
        name = f"{ns_prefix(self.name)}-{host}"
        if name not in self.state.namespaces:
            raise LabError(f"lab {self.name!r} has no host {host!r} (hosts: {', '.join(self.topology.names)})")
        return Namespace(name)

    def exec(self, host: str, argv: Sequence[str], *, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return self.ns(host).exec(*argv, check=check, timeout=timeout)

    def python(self, host: str, args: Sequence[str], *, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``python -m ...`` in ``host``'s namespace with this pfha importable."""
        argv = self.ns(host).argv([sys.executable, *args])
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=python_env())

    def host_env(self, host: str) -> dict[str, str]:
        """A host's processes keep their run-time files (ruleset metadata, status files) in the
        lab's directory for that host, so two firewalls never share /run/pfha and ``down``
        removes them too."""
        run_dir = str(self.host_dir(host))
        return python_env(PFHA_STATE_DIR=run_dir, PFHA_RUN_DIR=run_dir)

    def host_dir(self, host: str) -> Path:
        path = self.dir / host
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- processes ------------------------------------------------------------------------

    def start(self, key: str, host: str, argv: Sequence[str]) -> int:
        """Start a long-running process in ``host``; its output goes to ``HOST/WHAT.log``."""
        what = key.split("/", 1)[1]
        log = open(self.host_dir(host) / f"{what}.log", "ab")
        proc = subprocess.Popen(
            self.ns(host).argv(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=self.host_env(host), start_new_session=True,
        )
        log.close()
        self.state.processes[key] = proc.pid
        self.state.save()
        return proc.pid

    def alive(self, key: str) -> bool:
        pid = self.state.processes.get(key)
        return pid is not None and _pid_alive(pid)

    def stop(self, key: str, sig: int = signal.SIGTERM, wait: float = 10.0) -> bool:
        """Signal a recorded process and wait for it to end; True if it ended."""
        pid = self.state.processes.get(key)
        if pid is None:
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                break
            time.sleep(0.05)
        ended = not _pid_alive(pid)
        if ended:
            self.state.processes.pop(key, None)
            self.state.save()
        return ended

    # -- traffic --------------------------------------------------------------------------

    def probe(self, host: str, targets: Sequence[Target | str], timeout: float = 2.0) -> list[ProbeResult]:
        """Probe many targets at once from ``host`` (one process, concurrent sockets)."""
        if not targets:
            return []
        targets = [_target(t) for t in targets]  # a bad one is a one-line error, not the child's traceback
        args = ["-m", "pfha.lab.services", "probe", "--timeout", str(timeout), *map(str, targets)]
        proc = self.python(host, args, timeout=timeout * 3 + 30)
        if proc.returncode != 0:
            raise LabError(f"probe from {host} failed: {proc.stderr.strip()}")
        return [ProbeResult(**json.loads(line)) for line in proc.stdout.splitlines() if line.startswith("{")]

    def fetch_popen(self, host: str, target: Target | str, nbytes: int, rate: float, timeout: float = 30.0) -> subprocess.Popen:
        """Start a bulk download from ``host``; read its result with :func:`fetch_result`."""
        argv = self.ns(host).argv([sys.executable, "-m", "pfha.lab.services", "fetch", str(target),
                                   "--bytes", str(nbytes), "--rate", str(rate), "--timeout", str(timeout), "--progress"])
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())

    # -- faults ---------------------------------------------------------------------------

    def _switch_port(self, host: str, interface: str) -> tuple[str, str] | None:
        """The (switch namespace's host name, port) ``host``'s interface is plugged into."""
        for segment in self.topology.segments:
            if (host, interface) in segment.ports and segment.switch:
                return f"sw-{segment.name}", host
        return None

    def set_cable(self, host: str, interface: str, up: bool) -> None:
        """Plug or unplug a cable: the far end goes down, so ``host`` sees loss of carrier."""
        state = "up" if up else "down"
        where = self._switch_port(host, interface)
        if where:
            self.exec(where[0], ["ip", "link", "set", where[1], state])
            return
        for segment in self.topology.segments:  # a direct wire: this end goes down, the far
            if (host, interface) in segment.ports:  # end loses carrier
                self.exec(host, ["ip", "link", "set", interface, state])
                return
        raise LabError(f"{host} has no cable on {interface}")

    def fail(self, host: str, how: str, interface: str = "xl1") -> str:
        """Make a firewall fail: ``kill`` (power loss), ``link`` (a cable cut), ``stop`` (orderly)."""
        if host not in self.topology.firewalls:
            raise LabError(f"only firewalls can be failed ({', '.join(self.topology.firewalls)}), not {host!r}")
        if how not in FAIL_MODES:
            raise LabError(f"--how must be one of {', '.join(FAIL_MODES)}")
        key = f"{host}/node"
        if how == "kill":
            # The box dies at once: no bow-out, no cleanup; its cables go dark with it, as when
            # a machine loses power (its kernel state dies too, so nothing of it answers ARP).
            self.stop(key, signal.SIGKILL, wait=5)
            for interface_ in self.topology.host(host).interfaces:
                self.set_cable(host, interface_.name, up=False)
            done = f"{host}: node killed (SIGKILL) and all its cables cut"
        elif how == "link":
            self.set_cable(host, interface, up=False)
            done = f"{host}: cable on {interface} cut"
        else:
            if not self.state.daemons:
                raise LabError("--how stop needs the node daemons (the lab was brought up with --no-daemons)")
            if not self.stop(key, signal.SIGTERM, wait=15):
                raise LabError(f"{host}: node did not stop within 15 s of SIGTERM")
            done = f"{host}: node stopped (SIGTERM, bowed out)"
        self.state.failed[host] = how if how != "link" else f"link:{interface}"
        self.state.save()
        return done

    def recover(self, host: str) -> str:
        """Undo :meth:`fail`: cables back in, the node daemon started again if it is not running."""
        if host not in self.topology.firewalls:
            raise LabError(f"only firewalls can be recovered, not {host!r}")
        if self.state.failed.get(host) == "kill":
            self._as_rebooted(host)
        for interface in self.topology.host(host).interfaces:
            self.set_cable(host, interface.name, up=True)
        started = ""
        if self.state.daemons and not self.alive(f"{host}/node"):
            self.start_node(host)
            started = ", node started"
        self.state.failed.pop(host, None)
        self.state.save()
        return f"{host}: cables in{started}"

    def _as_rebooted(self, host: str) -> None:
        """A box that lost power comes back without the kernel state it died with: no shared
        addresses, an empty connection table (the ruleset is loaded again by the node)."""
        ns = self.ns(host)
        for carp in self.topology.carp:
            ns.exec("ip", "addr", "del", carp.address, "dev", carp.parent, check=False)
        ns.exec("conntrack", "-F", check=False)

    # -- node daemons ---------------------------------------------------------------------

    def node_config(self, host: str) -> Path:
        return self.host_dir(host) / "node.toml"

    def control_socket(self, host: str) -> Path:
        return self.host_dir(host) / "control.sock"

    def start_node(self, host: str) -> int:
        config = self.node_config(host)
        if not config.exists():
            raise LabError(f"{host}: no node config at {config}")
        argv = [sys.executable, "-m", "pfha.cli.main", "node", "run", "-c", str(config),
                "--control", str(self.control_socket(host)), "--log-format", "json"]
        if self.state.without:
            argv += ["--without", ",".join(self.state.without)]
        return self.start(f"{host}/node", host, argv)

    # -- status ---------------------------------------------------------------------------

    def status(self) -> dict:
        listed = set(_netns_list())
        hosts = {}
        for host in self.topology.hosts:
            name = f"{ns_prefix(self.name)}-{host.name}"
            entry: dict = {"namespace": name, "exists": name in listed, "role": host.role}
            if entry["exists"]:
                out = Namespace(name).exec("ip", "-4", "-br", "addr", "show", check=False).stdout
                entry["addresses"] = {line.split()[0].split("@")[0]: line.split()[2:] for line in out.splitlines() if len(line.split()) > 2}
            entry["processes"] = {key.split("/", 1)[1]: ("running" if self.alive(key) else "dead")
                                  for key in self.state.processes if key.startswith(f"{host.name}/")}
            if host.name in self.state.failed:
                entry["failed"] = self.state.failed[host.name]
            hosts[host.name] = entry
        return {"name": self.name, "config": self.state.config, "daemons": self.state.daemons, "hosts": hosts}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours counts as dead.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _netns_list() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


# --- building ------------------------------------------------------------------------------


def _configure_host(ns: Namespace, host: Host) -> None:
    for interface in host.interfaces:
        if interface.address:
            ns.exec("ip", "addr", "add", interface.address, "dev", interface.name)
    if host.gateway:
        ns.exec("ip", "route", "add", "default", "via", host.gateway)
    if host.forwarding:
        ns.sysctl("net.ipv4.ip_forward", 1)


def _quiet_namespace(ns: Namespace) -> None:
    """No IPv6 in the lab (the tutorial is IPv4 only): no DAD, router solicitations or noise."""
    ns.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
    ns.sysctl("net.ipv6.conf.default.disable_ipv6", 1)


def build(state: LabState, topology: Topology) -> RunningLab:
    """Make every namespace, switch, cable and address of ``topology`` (no daemons)."""

    def record(ns_name: str) -> None:
        state.namespaces.append(ns_name)
        state.save()

    lab = _RecordedLab(prefix=ns_prefix(state.name), on_create=record)
    for host in topology.hosts:
        _quiet_namespace(lab.ns(host.name))
    for segment in topology.segments:
        if segment.switch:
            switch = lab.ns(f"sw-{segment.name}")
            _quiet_namespace(switch)
            lab.bridge(switch, "br0")
            for host, interface in segment.ports:
                lab.attach(switch, "br0", lab.ns(host), interface, port=host)
        else:
            (a, a_if), (b, b_if) = segment.ports
            lab.link(lab.ns(a), a_if, lab.ns(b), b_if)
    for host in topology.hosts:
        _configure_host(lab.ns(host.name), host)
    return RunningLab(state, topology)


def start_services(running: RunningLab) -> None:
    for host in running.topology.hosts:
        if not host.services or host.role == "firewall":
            continue
        specs = [f"{s.proto}:{s.port}:{s.kind}" for s in host.services]
        running.start(f"{host.name}/services", host.name, [sys.executable, "-m", "pfha.lab.services", "serve", "--host", host.name, *specs])


def start_firewall_services(running: RunningLab) -> None:
    """The firewalls' own sshd stand-in on the tutorial's port 8081."""
    for name in running.topology.firewalls:
        host = running.topology.host(name)
        specs = [f"{s.proto}:{s.port}:{s.kind}" for s in host.services]
        if specs:
            running.start(f"{name}/services", name, [sys.executable, "-m", "pfha.lab.services", "serve", "--host", name, *specs])


def static_master(running: RunningLab, master: str = "fw1") -> None:
    """Without daemons: put every shared address on ``master`` and turn forwarding on, so the
    topology can be checked (and used) with no CARP and no filtering at all."""
    ns = running.ns(master)
    for carp in running.topology.carp:
        ns.exec("ip", "addr", "add", carp.address, "dev", carp.parent)
    for name in running.topology.firewalls:
        running.ns(name).sysctl("net.ipv4.ip_forward", 1)


def wait_services(running: RunningLab, timeout: float = 15.0) -> None:
    """Wait until every service listens (checked from inside each server's own namespace)."""
    deadline = time.monotonic() + timeout
    for host in running.topology.hosts:
        tcp = [s.port for s in host.services if s.proto == "tcp"]
        while tcp:
            out = running.exec(host.name, ["ss", "-Htln"], check=False).stdout
            listening = {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if len(line.split()) > 3}
            if set(tcp) <= listening:
                break
            if time.monotonic() > deadline:
                raise LabError(f"{host.name}: services did not start (see {running.dir / host.name / 'services.log'})")
            time.sleep(0.1)


def up(name: str = "tut", *, config: str = "corrected", daemons: bool = True, topology: Topology | None = None,
       without: Sequence[str] = (), log: Callable[[str], None] = lambda _m: None) -> RunningLab:
    """Build the lab ``name``; on any failure, remove what was made and re-raise."""
    topology = topology or tutorial()
    if os.geteuid() != 0:
        raise LabError("the lab needs root: it makes network namespaces (run it with sudo)")
    if (state_dir(name) / "state.json").exists() or any(n.startswith(ns_prefix(name) + "-") for n in _netns_list()):
        raise LabError(f"lab {name!r} exists already; 'pfha lab down --name {name}' first")
    if daemons:
        from pfha.lab import nodes  # the daemon side: needs the node config import

        nodes.config_dir(config)  # a wrong --config fails before anything is built
    state = LabState(name=name, config=config, daemons=daemons, without=list(without))
    state.save()
    try:
        log(f"building {len(topology.hosts)} hosts and {len(topology.segments)} segments in namespaces {ns_prefix(name)}-*")
        running = build(state, topology)
        log("starting the servers' services")
        start_services(running)
        start_firewall_services(running)
        wait_services(running)
        if daemons:
            from pfha.lab import nodes  # the daemon side: needs the node config import

            nodes.start(running, config, log=log)
        else:
            log("no daemons: fw1 holds every shared address, forwarding on, no filtering")
            static_master(running)
        return running
    except BaseException:
        down(name)
        raise


def _target(target: Target | str) -> Target:
    if isinstance(target, Target):
        return target
    try:
        return Target.parse(target)
    except ValueError:
        raise LabError(f"bad target {target!r}: tcp:ADDR:PORT, udp:ADDR:PORT or icmp:ADDR") from None


def attach(name: str = "tut", topology: Topology | None = None) -> RunningLab:
    return RunningLab(LabState.load(name), topology)


def down(name: str = "tut", grace: float = 10.0) -> list[str]:
    """Remove everything lab ``name`` made; works from the state file or, failing that, the
    namespace prefix. Never raises for what is already gone. Returns what it removed."""
    removed: list[str] = []
    try:
        state = LabState.load(name)
    except LabError:
        state = LabState(name=name)
    # The node daemons first, politely, so that they can bow out; then everything else.
    for key, pid in sorted(state.processes.items(), key=lambda kv: not kv[0].endswith("/node")):
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_pid_alive(p) for p in state.processes.values()):
        time.sleep(0.05)
    for pid in state.processes.values():
        if _pid_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    prefix = ns_prefix(name) + "-"
    names = list(dict.fromkeys([*state.namespaces, *(n for n in _netns_list() if n.startswith(prefix))]))
    listed = set(_netns_list())
    for ns_name in names:
        if ns_name in listed:
            kill_all(Namespace(ns_name), grace=1.0)
    for ns_name in names:
        if ns_name in listed:
            run(["ip", "netns", "del", ns_name], check=False)
            removed.append(ns_name)
    directory = state_dir(name)
    if directory.exists():
        _remove_tree(directory)
        removed.append(str(directory))
    return removed


def _remove_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            _remove_tree(child)
        else:
            child.unlink(missing_ok=True)
    path.rmdir()


def labs() -> list[str]:
    """Names of labs with a state directory."""
    if not STATE_ROOT.is_dir():
        return []
    return sorted(p.name for p in STATE_ROOT.iterdir() if (p / "state.json").exists())
