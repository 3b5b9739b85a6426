"""Network namespaces, veth links and bridges for the lab and for root tests.

Everything made through a :class:`Lab` is recorded and removed by :meth:`Lab.close` (also when a
test fails), including the processes still running inside its namespaces. Names are unique per
lab (``prefix`` + process id + counter), so concurrent tests and labs never collide. Traffic only
ever flows between namespaces made here.

Built on iproute2's ``ip`` rather than netlink calls: these are one-shot set-up steps where the
familiar command line (and its error text) is what a reader wants to see.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pfha.errors import PfhaError

_counter = itertools.count()


class NetnsError(PfhaError):
    """A namespace command failed; the message carries the command and its stderr."""


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command, raising :class:`NetnsError` with its stderr when it fails and ``check``."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.stdout.strip() or f'exit {proc.returncode}'}")
    return proc


def unique_prefix(prefix: str) -> str:
    """A short prefix unique to this process and call (interface names allow 15 bytes)."""
    return f"{prefix}{os.getpid() % 100000}x{next(_counter)}"


@dataclass
class Namespace:
    """One network namespace; ``exec`` runs a command inside it."""

    name: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(self, *argv: str, check: bool = True, timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return run(self.argv(argv), check=check, timeout=timeout, input=input)

    def popen(self, *argv: str, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(argv), **kwargs)

    def sysctl(self, key: str, value: str | int) -> None:
        self.exec("sysctl", "-q", "-w", f"{key}={value}")

    def pids(self) -> list[int]:
        out = run(["ip", "netns", "pids", self.name], check=False).stdout
        return [int(p) for p in out.split() if p.isdigit()]


@dataclass
class Lab:
    """A set of namespaces and links that is torn down as a whole.

    Use as a context manager, or call :meth:`close` in a ``finally``.
    """

    prefix: str = "pfha"
    namespaces: dict[str, Namespace] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefix = unique_prefix(self.prefix)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ns(self, role: str) -> Namespace:
        """Create (once) and return the namespace for ``role``; loopback is brought up."""
        if role not in self.namespaces:
            name = f"{self.prefix}-{role}"
            run(["ip", "netns", "add", name])
            namespace = Namespace(name)
            self.namespaces[role] = namespace
            namespace.exec("ip", "link", "set", "lo", "up")
        return self.namespaces[role]

    def link(self, a: Namespace, a_if: str, b: Namespace, b_if: str) -> None:
        """A veth pair with one end in each namespace, both up.

        The pair is created with temporary names in ``a`` and renamed, so the final names
        (``xl0``, ``eth0``...) may repeat across namespaces.
        """
        tmp_a, tmp_b = f"v{next(_counter)}a{os.getpid() % 10000}", f"v{next(_counter)}b{os.getpid() % 10000}"
        a.exec("ip", "link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b)
        a.exec("ip", "link", "set", tmp_b, "netns", b.name)
        a.exec("ip", "link", "set", tmp_a, "name", a_if)
        b.exec("ip", "link", "set", tmp_b, "name", b_if)
        a.exec("ip", "link", "set", a_if, "up")
        b.exec("ip", "link", "set", b_if, "up")

    def bridge(self, ns: Namespace, name: str) -> None:
        """A bridge inside ``ns`` (used as a switch: segments with more than two hosts)."""
        ns.exec("ip", "link", "add", name, "type", "bridge")
        ns.exec("ip", "link", "set", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        ns.exec("ip", "link", "set", name, "up")

    def attach(self, switch: Namespace, bridge: str, ns: Namespace, ifname: str, port: str | None = None) -> str:
        """Plug ``ns``'s interface ``ifname`` into ``bridge`` of ``switch``; returns the port name."""
        port = port or f"p{next(_counter)}x{os.getpid() % 10000}"
        self.link(switch, port, ns, ifname)
        switch.exec("ip", "link", "set", port, "master", bridge)
        return port

    def close(self) -> None:
        """Kill every process in the lab's namespaces, then delete them (best effort, never raises)."""
        for namespace in self.namespaces.values():
            kill_all(namespace)
        for namespace in self.namespaces.values():
            run(["ip", "netns", "del", namespace.name], check=False)
        self.namespaces.clear()


def kill_all(namespace: Namespace, grace: float = 2.0) -> None:
    """SIGTERM every process in ``namespace``, then SIGKILL what is left after ``grace`` seconds."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = namespace.pids()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and namespace.pids():
            time.sleep(0.05)
