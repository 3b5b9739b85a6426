"""The asyncio glue behind ``pfha carp run``: sockets and timers around a :class:`machine.Node`.

It owns the event loop, the clock (``loop.time()``, monotonic), the sockets of
:mod:`pfha.carp.linux`, the log and the status file. It makes no protocol decision: every
packet and timer goes to the node, every action the node emits is performed in order.

Status file: ``<status dir>/<pid>.json`` (default directory ``/run/pfha/carp``, or
``$PFHA_RUN_DIR/carp``), rewritten atomically on every state change and once a second; removed
on exit. ``pfha carp status`` reads every such file whose process is alive. Format: see
:meth:`CarpRunner.status` (``{"pid", "updated", "node": {"demotion", "groups": [...]}}``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from pfha.carp import linux
from pfha.carp.wire import Advertisement
from pfha.carp.machine import (
    AcquireAddresses, Action, Announce, Dropped, Node, ReleaseAddresses, SendAdvert, StateChanged, VhidConfig,
)

log = logging.getLogger("pfha.carp")


def status_dir() -> Path:
    return Path(os.environ.get("PFHA_RUN_DIR", "/run/pfha")) / "carp"


@dataclass
class RateLimit:
    """At most one log line per ``interval`` seconds per key; says how many were held back."""

    interval: float = 10.0
    _last: dict[str, float] = field(default_factory=dict)
    _held: dict[str, int] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> int | None:
        """None to stay quiet; else the number of lines suppressed since the last one logged."""
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


class CarpRunner:
    """Runs one :class:`Node` on Linux until stopped.

    Stopped by :meth:`stop`, or by SIGTERM/SIGINT when ``handle_signals`` (the default for
    ``pfha carp run``; a host program such as the node daemon owns its signals and passes False).
    ``on_transition`` is called with every :class:`StateChanged` (after it is logged).
    """

    def __init__(self, configs: Iterable[VhidConfig], *, status_path: Path | None = None,
                 handle_signals: bool = True, on_transition: Callable[[StateChanged], None] | None = None) -> None:
        self.infos: dict[str, linux.InterfaceInfo] = {}
        resolved = []
        for config in configs:
            info = self.infos.get(config.interface) or linux.interface_info(config.interface)
            self.infos[config.interface] = info
            source = config.source
            if source is None and config.ipv4:
                source = linux.choose_source(info, config.ipv4)
            resolved.append(replace(config, source=source))
        self.node = Node(resolved)
        self.sockets: dict[str, linux.CarpSocket] = {}
        self.sockets6: dict[str, linux.CarpSocket6] = {}
        self.by_index = {info.index: name for name, info in self.infos.items()}
        self.status_path = status_path or status_dir() / f"{os.getpid()}.json"
        self.limiter = RateLimit()
        self.netlink: linux.Rtnetlink | None = None
        self.monitor: linux.LinkMonitor | None = None
        self._timer: asyncio.TimerHandle | None = None
        # Orderly stop: addresses are released once the new master is heard (or after a grace
        # period), so clients are answered by someone during the hand-over.
        self.handover_grace = 0.5
        self._deferred: list[ReleaseAddresses] | None = None
        self._handed_over: asyncio.Event | None = None
        self._stopping: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handle_signals = handle_signals
        self.on_transition = on_transition
        self.started = asyncio.Event()  # set once sockets are open and the groups have started
        self.stop_requested = False
        # (interface, vhid) -> (reason, wall-clock time) of the last state change
        self.transitions: dict[tuple[str, int], tuple[str, float]] = {}

    # -- life cycle

    async def run(self) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self.netlink = linux.Rtnetlink()
        self.monitor = linux.LinkMonitor()
        for name, info in self.infos.items():
            groups = [g.config for (iface, _), g in self.node.groups.items() if iface == name]
            source = next((c.source for c in groups if c.ipv4), None)
            if source is not None:
                sock = self.sockets[name] = linux.CarpSocket(info, source)
                loop.add_reader(sock.fileno(), self._on_readable, name)
            if any(c.ipv6 for c in groups):
                sock6 = self.sockets6[name] = linux.CarpSocket6(info)
                loop.add_reader(sock6.fileno(), self._on_readable6, name)
        loop.add_reader(self.monitor.fileno(), self._on_link_event)
        if self.handle_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._stopping.set)
        if self.stop_requested:
            self._stopping.set()
        self.node.demotion.subscribe(lambda: loop.call_soon(self._rearm))
        now = loop.time()
        for name, info in self.infos.items():
            up = linux.link_is_up(self.netlink.link_flags(info.index))
            if not up:
                self.node.set_link(name, False, now)
        self.node.start(now)
        self._flush()
        self.started.set()
        status_task = asyncio.create_task(self._status_loop())
        try:
            await self._stopping.wait()
            await self._bow_out()
        finally:
            status_task.cancel()
            self._close()

    def stop(self) -> None:
        """Ask :meth:`run` to bow out, release the addresses and return (safe before it starts)."""
        self.stop_requested = True
        if self._stopping is not None:
            self._stopping.set()

    def reconfigure(self, config: VhidConfig) -> None:
        """Change one running group's timing, key or preempt in place: no state change, no flap.

        The group is (interface, vhid); its addresses cannot change this way (that is a new
        group: stop and start again). The source address stays the one resolved at start.
        """
        key = (config.interface, config.vhid)
        group = self.node.groups.get(key)
        if group is None:
            raise KeyError(f"no vhid {config.vhid} on {config.interface}")
        if config.addresses != group.config.addresses:
            raise ValueError(f"vhid {config.vhid} on {config.interface}: addresses cannot change in place")
        group.config = replace(config, source=group.config.source)
        if self._loop is not None:
            self._rearm()

    async def _bow_out(self) -> None:
        """Send the bow-outs, wait for a new master's advert (at most the grace), then release."""
        assert self._loop is not None
        self._deferred, self._handed_over = [], asyncio.Event()
        self.node.shutdown(self._loop.time())
        self._flush()
        if self._deferred:
            try:
                await asyncio.wait_for(self._handed_over.wait(), self.handover_grace)
            except asyncio.TimeoutError:
                log.info("no new master heard within %.1f s of bowing out", self.handover_grace)
        deferred, self._deferred = self._deferred, None
        for action in deferred:
            self._perform(action)

    def _heard(self, name: str, advert: Advertisement | None) -> None:
        """During the hand-over: a valid advert from another node releases that group's addresses."""
        if self._deferred is None or advert is None or advert.is_bow_out:
            return
        for action in [a for a in self._deferred if (a.interface, a.vhid) == (name, advert.vhid)]:
            self._deferred.remove(action)
            self._perform(action)
        if not self._deferred and self._handed_over is not None:
            self._handed_over.set()

    def _close(self) -> None:
        loop = self._loop
        assert loop is not None
        if self._timer:
            self._timer.cancel()
        for sock in [*self.sockets.values(), *self.sockets6.values()]:
            loop.remove_reader(sock.fileno())
            sock.close()
        if self.monitor:
            loop.remove_reader(self.monitor.fileno())
            self.monitor.close()
        if self.netlink:
            self.netlink.close()
        try:
            self.status_path.unlink()
        except FileNotFoundError:
            pass

    # -- inputs

    def _on_readable(self, name: str) -> None:
        loop = self._loop
        assert loop is not None
        for header, payload in self.sockets[name].receive():
            self._heard(name, self.node.receive(name, payload, loop.time(), source=header.source, ttl=header.ttl))
        self._flush()

    def _on_readable6(self, name: str) -> None:
        loop = self._loop
        assert loop is not None
        for source, hops, payload in self.sockets6[name].receive():
            self._heard(name, self.node.receive(name, payload, loop.time(), source=source, ttl=hops))
        self._flush()

    def _on_link_event(self) -> None:
        loop = self._loop
        assert loop is not None and self.monitor is not None
        for index, up in self.monitor.read():
            name = self.by_index.get(index)
            if name is not None:
                self.node.set_link(name, up, loop.time())
        self._flush()

    def _on_timer(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = None
        self.node.handle_timer(loop.time())
        self._flush()

    # -- outputs

    def _flush(self) -> None:
        changed = False
        while (action := self.node.next_action()) is not None:
            changed |= self._perform(action)
        if changed:
            self._write_status()
        self._rearm()

    def _rearm(self) -> None:
        loop = self._loop
        assert loop is not None
        if self._timer:
            self._timer.cancel()
            self._timer = None
        deadline = self.node.next_deadline()
        if deadline is not None:
            self._timer = loop.call_at(max(deadline, loop.time()), self._on_timer)

    def _perform(self, action: Action) -> bool:
        assert self.netlink is not None
        if log.isEnabledFor(logging.DEBUG) and not isinstance(action, StateChanged | Dropped):
            log.debug("vhid %d on %s: %s", action.vhid, action.interface, _describe(action, self._deferred is not None))
        group = self.node.groups[(action.interface, action.vhid)] if (action.interface, action.vhid) in self.node.groups else None
        if isinstance(action, SendAdvert):
            # BSD sends one advert per address family the group has addresses in.
            ok = True
            if group is not None and group.config.ipv4:
                ok &= self.sockets[action.interface].send(action.payload)
            if group is not None and group.config.ipv6:
                ok &= self.sockets6[action.interface].send(action.payload)
            if group is not None:
                group.report_send(ok)
        elif isinstance(action, ReleaseAddresses) and self._deferred is not None:
            self._deferred.append(action)
        elif isinstance(action, AcquireAddresses | ReleaseAddresses):
            index = self.infos[action.interface].index
            for address in action.addresses:
                try:
                    self.netlink.set_address(index, address, isinstance(action, AcquireAddresses))
                except OSError as error:
                    log.error("vhid %d on %s: cannot %s %s: %s", action.vhid, action.interface,
                              "add" if isinstance(action, AcquireAddresses) else "remove", address, error.strerror)
        elif isinstance(action, Announce):
            for address in action.addresses:
                if address.version == 4:
                    self.sockets[action.interface].announce(address.ip)
                else:
                    self.sockets6[action.interface].announce(address.ip)
        elif isinstance(action, StateChanged):
            log.warning("vhid %d on %s: %s", action.vhid, action.interface, action.reason)
            self.transitions[(action.interface, action.vhid)] = (action.reason, time.time())
            if self.on_transition is not None:
                self.on_transition(action)
            return True
        elif isinstance(action, Dropped):
            assert self._loop is not None
            held = self.limiter.allow(f"{action.interface}/{action.vhid}/{action.reason.value}", self._loop.time())
            if held is not None:
                more = f" ({held} more since the last report)" if held else ""
                log.warning("vhid %d on %s: dropped advert from %s: %s%s", action.vhid, action.interface,
                            action.source or "?", action.detail, more)
        return False

    # -- status

    def status(self) -> dict[str, object]:
        """The node's status; each group also has ``reason`` and ``since`` (wall-clock seconds)
        of its last state change (``""``/None before the first)."""
        node = self.node.status()
        for group in node["groups"]:  # type: ignore[union-attr]
            reason, since = self.transitions.get((group["interface"], group["vhid"]), ("", None))
            group["reason"], group["since"] = reason, since
        return {"pid": os.getpid(), "updated": time.time(), "node": node}

    def _write_status(self) -> None:
        path = self.status_path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.status(), indent=1))
            tmp.replace(path)
        except OSError as error:
            log.error("cannot write status %s: %s", path, error.strerror)

    async def _status_loop(self) -> None:
        while True:
            self._write_status()
            await asyncio.sleep(1.0)


def _describe(action: Action, deferring: bool) -> str:
    if isinstance(action, SendAdvert):
        a = action.advert
        return f"send advert advbase {a.advbase} advskew {a.advskew} demote {a.demote} counter {a.counter}"
    if isinstance(action, AcquireAddresses | ReleaseAddresses | Announce):
        verb = {AcquireAddresses: "add", ReleaseAddresses: "remove (after hand-over)" if deferring else "remove",
                Announce: "announce"}[type(action)]
        return f"{verb} {' '.join(str(x) for x in action.addresses)}"
    return type(action).__name__


def read_status(directory: Path | None = None) -> list[dict]:
    """Every live runner's status (files of dead processes are skipped). Other JSON files in
    the directory (a node's run directory also holds sync.json and ruleset metadata) are not
    CARP status files and are skipped too, never a traceback."""
    directory = directory or status_dir()
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not _is_carp_status(data):
            continue
        pid = data["pid"]
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError, OverflowError):
            continue
        found.append(data)
    return found


def _is_carp_status(data: object) -> bool:
    """What :meth:`CarpRunner` writes: a positive pid (os.kill(0, 0) would test our own process
    group) and a node with its groups."""
    if not isinstance(data, dict):
        return False
    pid, node = data.get("pid"), data.get("node")
    return (isinstance(pid, int) and pid > 0 and isinstance(node, dict)
            and isinstance(node.get("groups"), list))


def format_status(statuses: list[dict]) -> str:
    """Per group, the line ``ifconfig`` prints on BSD: ``carp: MASTER vhid 1 advbase 1 advskew 0``."""
    lines = []
    for data in statuses:
        node = data["node"]
        for g in node["groups"]:
            lines.append(f"{g['interface']}: carp: {g['state']} vhid {g['vhid']} advbase {g['advbase']} advskew {g['advskew']}")
            for address in g["addresses"]:
                lines.append(f"\tinet {address} vhid {g['vhid']}")
            drops = {k: v for k, v in g["stats"].items() if k in {"ttl", "checksum", "version", "type", "vhid", "hmac", "short", "loop"}}
            if drops:
                lines.append("\tdropped: " + ", ".join(f"{k} {v}" for k, v in sorted(drops.items())))
        if node["demotion"]:
            reasons = ", ".join(f"{r} ({n})" for r, n in node["demotion_reasons"].items())
            lines.append(f"pid {data['pid']}: demoted {node['demotion']}: {reasons}")
    return "\n".join(lines)


def parse_vip(text: str, info: linux.InterfaceInfo | None) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """``10.0.0.1/24`` as given; a bare address takes the parent's subnet length (or /32)."""
    if "/" in text:
        return ipaddress.ip_interface(text)
    address = ipaddress.ip_address(text)
    if address.version == 4 and info is not None:
        return ipaddress.ip_interface(f"{address}/{linux.prefix_for(address, info)}")
    return ipaddress.ip_interface(f"{address}/{address.max_prefixlen}")
