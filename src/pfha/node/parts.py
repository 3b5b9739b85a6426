"""The node daemon's parts, each a thin adapter from the node config to one component's API:
the ruleset (pfha.conf + pfha.nft), pflogd (pfha.pflog), the overload flusher
(pfha.nft.overload_linux), CARP (pfha.carp) and state sync (pfha.sync).

Every part has the same life: ``start(config)``, ``reconfigure(config)`` on SIGHUP (only what
changed, never a flap), ``stop()`` on SIGTERM, and ``status()`` for ``pfha status``. A part
whose component is not in this build raises :class:`PartUnavailable` with what is missing,
before the node changes anything; ``pfha node run --without PART`` leaves a part out on
purpose (and ``pfha status`` says so).

This module holds no protocol logic: that lives in the components. It must never apply a
ruleset that did not compile, and never leave CARP undemoted before the first bulk sync.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pfha.errors import PfhaError
from pfha.node.config import NodeConfig
from pfha.node.logs import fields

log = logging.getLogger("pfha.node")

PART_NAMES = ("ruleset", "pflog", "overload", "carp", "sync")


class PartUnavailable(PfhaError):
    """A part of the node needs a component that is not in this build."""


class PartError(PfhaError):
    """A part could not start or be reconfigured."""


def require(part: str, module: str, *names: str) -> Any:
    """Import ``module`` (and check it has ``names``) or say clearly which part cannot run."""
    try:
        loaded = importlib.import_module(module)
    except ImportError as error:
        raise PartUnavailable(f"{part}: needs {module}, which is not in this build ({error}); "
                              f"run with --without {part} to leave it out") from None
    missing = [n for n in names if not hasattr(loaded, n)]
    if missing:
        raise PartUnavailable(f"{part}: {module} has no {', '.join(missing)} in this build; "
                              f"run with --without {part} to leave it out")
    return loaded


class Part:
    name = "part"

    def __init__(self) -> None:
        self.enabled = True

    def check(self) -> None:
        """Raise :class:`PartUnavailable` if the component is missing (before anything changes)."""

    async def start(self, config: NodeConfig) -> None:
        raise NotImplementedError

    async def reconfigure(self, config: NodeConfig) -> None:
        await self.stop()
        await self.start(config)

    async def stop(self) -> None:
        pass

    def status(self) -> dict:
        return {}


class Disabled(Part):
    """A part left out with ``--without``: it does nothing and says so."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name, self.enabled = name, False

    async def start(self, config: NodeConfig) -> None:
        log.warning("part disabled", extra=fields(part=self.name))

    async def reconfigure(self, config: NodeConfig) -> None:
        pass

    def status(self) -> dict:
        return {"state": "disabled (--without)"}


# --- the ruleset ---------------------------------------------------------------------------


def dynamic_view(config: NodeConfig, live) -> Any:
    """What pf.conf's ``(if)`` addresses stand for now: each interface's live addresses (on its
    Linux device), with the CARP addresses where the node config puts them, whatever the CARP
    state. On BSD a CARP address stays configured on a BACKUP (only its state changes), so pf's
    ``(carp0)`` and ``($ext_if)`` do not change on failover; here CARP adds and removes the
    address on the device, which must not make the sets flap (and leave a window in which the
    new master's rules miss its VIP). ``live`` is an :class:`InterfaceView` of Linux devices."""
    from pfha.conf import InterfaceView

    shared = config.shared_addresses()
    addresses: dict[str, list] = {}
    for iface in config.interfaces:
        addresses[iface.name] = [a for a in live.addresses.get(iface.device, ()) if a.ip not in shared]
    for group in config.carp:
        addresses.setdefault(group.name or group.parent, []).extend(group.addresses)
    return InterfaceView.from_specs([f"{name}=" + ",".join(map(str, addrs)) for name, addrs in addresses.items()])


@dataclass(frozen=True)
class CompiledRuleset:
    """A ruleset ready to load: parsed, checked and compiled, not yet in the kernel."""

    source: str
    digest: str
    rules: int  # nftables rules
    payload: Any  # pfha.nft.compile.Compiled
    warnings: tuple[str, ...] = ()


class RulesetPart(Part):
    """The ruleset, and its ``(if)`` sets kept current: on every address change of the host
    (RTM_NEWADDR/RTM_DELADDR), the sets are recomputed from :func:`dynamic_view`."""

    name = "ruleset"

    def __init__(self) -> None:
        super().__init__()
        self.loaded: CompiledRuleset | None = None
        self.loaded_at: float | None = None
        self.last_error: str | None = None
        self.config: NodeConfig | None = None
        self.monitor = None  # pfha.nft.operate.AddressMonitor while the ruleset has (if) sets
        self.refresh_task: asyncio.Task | None = None
        self.refresh_again = False
        self.refreshes = 0  # set rewrites done since start
        self.refreshed_at: float | None = None

    def check(self) -> None:
        require(self.name, "pfha.conf.parser", "parse_file")  # pfha.conf's entry point imports it lazily
        self._nft()

    def _nft(self):
        require(self.name, "pfha.nft.loader", "load")
        return require(self.name, "pfha.nft.compile", "compile_ruleset")

    def prepare(self, config: NodeConfig) -> CompiledRuleset:
        """Parse and compile ``config``'s pf.conf: pure, raises on any error, changes nothing."""
        self.check()
        from pfha.conf import parse_file

        from pfha.conf.optimize import stable_identifier
        from pfha.nft.loader import batch_text
        from pfha.nft.operate import optimize_for_kernel

        view = config.interface_view()
        ruleset = parse_file(config.pf_conf, view, include_base=config.pf_conf.parent)
        # optimized as pfctl -f does, so pflog's rule numbers are FreeBSD's; automatic tables
        # get a name fixed by the file's text, so an unchanged pf.conf compiles identically
        ruleset, warnings = optimize_for_kernel(ruleset, view, identifier=stable_identifier(config.pf_conf.read_text()))
        devices = {name: dev for name, dev in config.device_map().items() if name != dev}
        compiled = self._nft().compile_ruleset(ruleset, view, devices=devices)
        compiled.warnings[:0] = warnings
        compiled.metadata["file"] = str(config.pf_conf)
        # the batch as the loader sends it (compiles are deterministic: no key sorting needed)
        digest = hashlib.sha256(batch_text(compiled.commands).encode()).hexdigest()
        count = sum(1 for c in compiled.commands if "rule" in c.get("add", {}))
        return CompiledRuleset(str(config.pf_conf), digest, count, compiled, tuple(str(w) for w in compiled.warnings))

    def commit(self, compiled: CompiledRuleset) -> bool:
        """Load atomically; False (and nothing changed) when it is the ruleset already loaded."""
        if self.loaded is not None and self.loaded.digest == compiled.digest:
            return False
        from pfha.warning_groups import group_warnings
        from pfha.nft.operate import load_compiled

        # as pfctl -f: the rules, then the `set timeout` sysctls; the node runs its own overload
        # flusher, so the "no flusher listens" warnings load_compiled returns do not apply
        load_compiled(compiled.payload)
        self.loaded, self.loaded_at, self.last_error = compiled, time.time(), None
        log.info("ruleset loaded", extra=fields(digest=compiled.digest[:16], source=compiled.source, rules=compiled.rules))
        # one entry per distinct warning with the rules it applies to (the status lists them all)
        for group in group_warnings(compiled.warnings):
            log.warning("ruleset: the kernel cannot do this as pf does",
                        extra=fields(detail=str(group), lines=len(group.places), count=group.occurrences))
        return True

    async def start(self, config: NodeConfig) -> None:
        self.commit(self.prepare(config))
        self.follow_addresses(config)

    async def reconfigure(self, config: NodeConfig) -> None:
        self.commit(self.prepare(config))
        self.follow_addresses(config)

    # -- dynamic addresses

    def dynamic_sets(self) -> int:
        return len(self.loaded.payload.metadata.get("dynamic", ())) if self.loaded is not None else 0

    def follow_addresses(self, config: NodeConfig) -> None:
        """Keep the loaded ruleset's ``(if)`` sets current (nothing to do when it has none)."""
        self.config = config
        if not self.dynamic_sets():
            self.close_monitor()
            return
        if self.monitor is None:
            from pfha.nft.operate import AddressMonitor

            self.monitor = AddressMonitor()
            asyncio.get_running_loop().add_reader(self.monitor.fileno(), self._addresses_changed)
        self.refresh_soon()  # the host settings or CARP may have changed addresses since the compile

    def _addresses_changed(self) -> None:
        if self.monitor is not None and self.monitor.read():
            self.refresh_soon()

    def refresh_soon(self) -> None:
        """One refresh at a time; events during a refresh ask for one more after it."""
        if self.refresh_task is not None and not self.refresh_task.done():
            self.refresh_again = True
            return
        self.refresh_task = asyncio.create_task(self._refresh(), name="ruleset dynamic addresses")

    async def _refresh(self) -> None:
        from pfha.conf import InterfaceView
        from pfha.nft.operate import refresh_dynamic

        while True:
            self.refresh_again = False
            config = self.config
            try:
                # `ip` and nft are blocking calls: off the loop, so CARP keeps its timing
                changed = await asyncio.to_thread(lambda: refresh_dynamic(dynamic_view(config, InterfaceView.live())))
            except Exception as error:  # the loaded sets stay as they are; the next event tries again
                log.error("ruleset: cannot refresh dynamic addresses", extra=fields(detail=f"{type(error).__name__}: {error}"))
                changed = 0
            if changed:
                self.refreshes += changed
                self.refreshed_at = time.time()
                log.info("ruleset: dynamic addresses refreshed", extra=fields(sets=changed))
            if not self.refresh_again:
                return

    def close_monitor(self) -> None:
        if self.monitor is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.monitor.fileno())
            except (RuntimeError, ValueError, OSError):
                pass
            self.monitor.close()
            self.monitor = None

    async def stop(self) -> None:
        """The ruleset stays loaded (as pf's does when pfctl exits); only the watching stops."""
        self.close_monitor()
        if self.refresh_task is not None:
            await asyncio.gather(self.refresh_task, return_exceptions=True)
            self.refresh_task = None

    def status(self) -> dict:
        if self.loaded is None:
            return {"state": "not loaded", "error": self.last_error}
        return {"state": "loaded", "hash": self.loaded.digest, "source": self.loaded.source, "rules": self.loaded.rules,
                "loaded_at": self.loaded_at, "warnings": list(self.loaded.warnings), "last_error": self.last_error,
                "dynamic": {"sets": self.dynamic_sets(), "following": self.monitor is not None,
                            "refreshes": self.refreshes, "refreshed_at": self.refreshed_at}}


# --- pflogd --------------------------------------------------------------------------------


def pf_names(config: NodeConfig, device_name: Callable[[int], str]) -> Callable[[int], str]:
    """Interface index -> the name pf.conf uses (``eth1`` -> ``xl0``), for pflog's header, as
    ``tcpdump -e -r pflog`` shows ``on xl0`` on BSD."""
    by_device = {device: name for name, device in config.device_map().items()}

    def name(index: int) -> str:
        device = device_name(index)
        return by_device.get(device, device)

    return name


class PflogPart(Part):
    """pflogd inside the daemon's loop: the NFLOG socket is read when it is readable."""

    name = "pflog"

    def __init__(self) -> None:
        super().__init__()
        self.daemon = None
        self.path: str | None = None

    def check(self) -> None:
        require(self.name, "pfha.pflog.linux", "Pflogd")

    async def start(self, config: NodeConfig) -> None:
        if not config.pflog.enabled or config.pflog.file is None:
            self.path = None
            return
        linux = require(self.name, "pfha.pflog.linux", "Pflogd")
        config.pflog.file.parent.mkdir(parents=True, exist_ok=True)
        self.daemon = linux.Pflogd(str(config.pflog.file), ifname=pf_names(config, linux.interface_name))
        self.daemon.start()
        self.path = str(config.pflog.file)
        asyncio.get_running_loop().add_reader(self.daemon.source.fileno(), self._readable)
        log.info("pflogd started", extra=fields(file=self.path))

    def _readable(self) -> None:
        try:
            for packet in self.daemon.source.receive():
                self.daemon.handle(packet)
        except (BlockingIOError, InterruptedError):
            pass
        except Exception:  # never let a bad packet take the node down
            log.exception("pflogd: packet dropped")

    async def reconfigure(self, config: NodeConfig) -> None:
        wanted = str(config.pflog.file) if config.pflog.enabled and config.pflog.file else None
        if wanted != self.path:
            await self.stop()
            await self.start(config)
        elif self.daemon is not None:
            self.daemon.open_log()  # as pflogd on SIGHUP: reopen after rotation

    async def stop(self) -> None:
        if self.daemon is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.daemon.source.fileno())
            except (ValueError, OSError):
                pass
            self.daemon.close()
            log.info("pflogd stopped", extra=fields(report=self.daemon.report()))
            self.daemon = None

    def status(self) -> dict:
        if self.daemon is None:
            return {"state": "off", "file": self.path}
        stats = self.daemon.stats
        return {"state": "running", "file": self.path, "received": stats.received, "written": stats.written,
                "dropped": stats.dropped}


# --- CARP ----------------------------------------------------------------------------------

DEMOTE_SYNC = "pfsync bulk update"
DEMOTE_SYNC_AMOUNT = 32  # OpenBSD's pfsync demotion while the bulk update is outstanding


def vhid_configs(config: NodeConfig) -> list:
    """The node config's CARP groups as pfha.carp's VhidConfig (parent -> Linux device)."""
    from pfha.carp import wire
    from pfha.carp.machine import VhidConfig

    out = []
    for group in config.carp:
        parent = config.interface(group.parent)
        password = group.password
        if password is None and group.password_file is not None:
            try:
                password = group.password_file.read_text().strip()
            except OSError as error:
                raise PartError(f"carp vhid {group.vhid}: {group.password_file}: {error.strerror}") from None
        try:
            out.append(VhidConfig(vhid=group.vhid, interface=parent.device if parent else group.parent,
                                  addresses=tuple(group.addresses), key=wire.carp_key(password or ""),
                                  advbase=group.advbase, advskew=group.advskew, preempt=group.preempt))
        except ValueError as error:
            raise PartError(f"carp vhid {group.vhid}: {error}") from None
    return out


def _runner_class():
    runner = require("carp", "pfha.carp.runner", "CarpRunner").CarpRunner
    missing = [n for n in ("stop", "reconfigure") if not hasattr(runner, n)]
    if missing:
        raise PartUnavailable(f"carp: pfha.carp's CarpRunner has no {', '.join(missing)} in this build")
    return runner


def _log_transition(action) -> None:
    log.info("carp state", extra=fields(vhid=action.vhid, interface=action.interface, old=action.old.value,
                                        new=action.new.value, reason=action.reason))


class CarpPart(Part):
    """The vhids of the node config, run by pfha.carp's Linux runner in the node's loop.

    Demotion causes are pfha.carp's own (link loss, send errors); this part adds pfsync's
    "bulk update outstanding" cause, held until sync says the first bulk is done.
    """

    name = "carp"

    def __init__(self, run_dir: Path | None = None) -> None:
        super().__init__()
        self.runner = None
        self.task: asyncio.Task | None = None
        self.configs: list = []
        self.run_dir = run_dir
        self.pending: dict[str, int] = {}

    def check(self) -> None:
        _runner_class()

    async def start(self, config: NodeConfig, demoted_for: tuple[str, ...] = ()) -> None:
        if not config.carp:
            return
        self.configs = vhid_configs(config)
        status_path = self.run_dir / "carp.json" if self.run_dir else None
        self.runner = _runner_class()(self.configs, status_path=status_path, handle_signals=False,
                                      on_transition=_log_transition)
        for reason in demoted_for:
            self.runner.node.demotion.demote(reason, DEMOTE_SYNC_AMOUNT)
        self.task = asyncio.create_task(self.runner.run(), name="carp")
        # Let the runner set itself up (sockets, first transitions) before going on.
        started = asyncio.ensure_future(self.runner.started.wait())
        await asyncio.wait({started, self.task}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self.task.done():
            self.task.result()  # raises what stopped it

    def set_demoted(self, reason: str, on: bool) -> None:
        if self.runner is None:
            return
        demotion = self.runner.node.demotion
        if on:
            demotion.demote(reason, DEMOTE_SYNC_AMOUNT)
        else:
            demotion.undemote(reason)
        log.info("carp demotion", extra=fields(reason=reason, demoted=on, total=demotion.value))

    async def reconfigure(self, config: NodeConfig) -> None:
        """Same groups (interface, vhid): new timing, key or preempt in place, no flap.
        Groups added or removed: CARP restarts (the node bows out and comes back)."""
        new = vhid_configs(config)
        if self.runner is None:
            if new:
                await self.start(config)
            return
        old_keys = {(c.interface, c.vhid) for c in self.configs}
        new_keys = {(c.interface, c.vhid) for c in new}
        old_addresses = {(c.interface, c.vhid): c.addresses for c in self.configs}
        if old_keys == new_keys and all(c.addresses == old_addresses[(c.interface, c.vhid)] for c in new):
            for c in new:
                self.runner.reconfigure(c)
            self.configs = new
            return
        log.warning("carp groups changed: restarting carp (this node bows out and comes back)")
        demotions = tuple(r for r in self.runner.node.demotion.reasons if r == DEMOTE_SYNC)
        await self.stop()
        await self.start(config, demotions)

    async def stop(self) -> None:
        if self.runner is not None and self.task is not None:
            self.runner.stop()  # the runner bows out and releases the addresses
            try:
                await asyncio.wait_for(self.task, 10)
            except asyncio.TimeoutError:
                log.error("carp did not stop within 10 s")
            self.runner, self.task = None, None

    def status(self) -> dict:
        if self.runner is None:
            return {"state": "off", "vhids": []}
        node = self.runner.status()["node"]
        return {"state": "running" if self.task and not self.task.done() else "stopped",
                "demotion": node["demotion"], "demoted": sorted(node["demotion_reasons"]), "vhids": node["groups"]}


# --- state sync ----------------------------------------------------------------------------


def sync_keyring(config: NodeConfig):
    """pfsync has no authentication; pfha's sync always authenticates (pfsync.md §5.3)."""
    from pfha.sync import wire

    sync = config.sync
    if sync.key is not None:
        data = sync.key.encode()
    elif sync.key_file is not None:
        try:
            data = sync.key_file.read_bytes()
        except OSError as error:
            raise PartError(f"sync: {sync.key_file}: {error.strerror}") from None
    else:
        raise PartError("sync: no key: set sync.key_file (the same secret file on both nodes); pfha's state "
                        "sync authenticates every message, where pfsync had no authentication at all")
    try:
        return wire.read_key_file(data)
    except ValueError as error:
        raise PartError(f"sync: bad key: {error}") from None


class SyncPart(Part):
    """pfha.sync's runner: conntrack states to and from the peer; tells CARP when the first
    bulk update is done (or has given up), so that the node only becomes master with states."""

    name = "sync"

    def __init__(self, on_bulk_done: Callable[[bool], None], run_dir: Path | None = None) -> None:
        super().__init__()
        self.runner = None
        self.task: asyncio.Task | None = None
        self.on_bulk_done = on_bulk_done
        self.run_dir = run_dir
        self.config_key: object = None
        self.closers: list = []

    def check(self) -> None:
        require(self.name, "pfha.sync.runner", "Runner")
        require(self.name, "pfha.sync.peer", "Peer", "Config")
        require(self.name, "pfha.sync.conntrack", "EventSource", "KernelTable")
        require(self.name, "pfha.sync.transport", "Transport")

    async def start(self, config: NodeConfig) -> None:
        if config.sync is None:
            self.on_bulk_done(True)
            return
        import random

        from pfha.sync.conntrack import EventSource, KernelTable
        from pfha.sync.peer import Config, Peer
        from pfha.sync.runner import REFRESH, Runner
        from pfha.sync.transport import Transport

        keyring = sync_keyring(config)
        self._set_scheduling(config.sync.sched)
        device = config.interface(config.sync.device)
        dev = device.device if device else config.sync.device
        transport = Transport(dev, str(config.sync.peer) if config.sync.peer else None)
        intake, kernel = EventSource(), KernelTable()
        self.closers = [transport, intake, kernel]
        loop = asyncio.get_running_loop()
        peer = Peer(Config(node_id=random.SystemRandom().randrange(1, 1 << 32), keyring=keyring),
                    epoch=time.time_ns() // 1_000_000, now=loop.time())
        status_path = self.run_dir / "sync.json" if self.run_dir else None
        self.runner = Runner(peer, transport, intake, kernel, status_path, on_bulk_complete=self._bulk_complete,
                             log=lambda line: log.info("sync", extra=fields(detail=line)),
                             refresh=REFRESH if config.sync.refresh is None else config.sync.refresh)
        self.config_key = config.sync
        self.task = asyncio.create_task(self.runner.run(), name="sync")
        await asyncio.sleep(0)

    @staticmethod
    def _set_scheduling(text: str | None) -> None:
        """sync.sched, or conntrackd's SCHED_RR 99 (pfha.sync.sched.DEFAULT) for the daemon's
        event loop, which runs sync; threads and processes it starts stay ordinary
        (SCHED_RESET_ON_FORK). Set explicitly and refused: an error; the default refused: a
        warning, as conntrackd does."""
        from pfha.sync import sched

        try:
            sched.apply(sched.parse(text if text is not None else sched.DEFAULT))
        except sched.SchedError as error:
            if text is not None:
                raise PartError(f"sync: {error}") from None
            log.warning("sync", extra=fields(detail=f"{error}; running SCHED_OTHER"))

    def _bulk_complete(self, event) -> None:
        if getattr(event, "initial", True):
            self.on_bulk_done(bool(event.succeeded))

    async def reconfigure(self, config: NodeConfig) -> None:
        if config.sync == self.config_key:
            return  # unchanged: keep the running peer, no resync
        await self.stop()
        await self.start(config)

    async def stop(self) -> None:
        if self.runner is not None:
            self.runner.stop()
            try:
                await asyncio.wait_for(self.task, 5)
            except asyncio.TimeoutError:
                log.error("sync did not stop within 5 s")
            for closer in self.closers:
                closer.close()
            self.runner, self.task, self.closers = None, None, []

    def status(self) -> dict:
        if self.runner is None:
            return {"state": "off"}
        running = self.task is not None and not self.task.done()
        return {"state": "running" if running else "stopped", **self.runner.status()}


# --- overload flush ------------------------------------------------------------------------


class OverloadPart(Part):
    """The overload flusher, running while the loaded ruleset has ``overload <t> flush``: it
    kills the offending source's states as pf's pf_overload_task does. The NFLOG socket is read
    on the loop; the conntrack dump and deletes run in a thread, one flush at a time (events
    that arrive meanwhile are coalesced into the next), so CARP keeps its timing."""

    name = "overload"

    def __init__(self, metadata: Callable[[], dict | None]) -> None:
        super().__init__()
        self.metadata = metadata  # the loaded ruleset's metadata (None: nothing loaded)
        self.flusher = None
        self.pending: list = []
        self.task: asyncio.Task | None = None
        self.error: str | None = None

    def check(self) -> None:
        require(self.name, "pfha.nft.overload_linux", "OverloadFlusher")

    def wanted(self) -> dict | None:
        return (self.metadata() or {}).get("overload_flush") or None

    async def start(self, config: NodeConfig) -> None:
        spec = self.wanted()
        if spec is None:
            await self.stop()
            self.error = None
            return
        if self.flusher is not None:
            return
        linux = require(self.name, "pfha.nft.overload_linux", "OverloadFlusher")
        flusher = linux.OverloadFlusher(spec.get("group", linux.OVERLOAD_GROUP))
        try:
            flusher.start()
        except PfhaError as error:
            # not a reason to stop a firewall: the rules still refuse the offender's new
            # connections (another flusher may even hold the group); the next reload retries
            self.error = str(error)
            log.error("overload flusher not started: offenders keep their states", extra=fields(detail=self.error))
            return
        self.flusher, self.error = flusher, None
        asyncio.get_running_loop().add_reader(flusher.fileno(), self._readable)
        log.info("overload flusher started", extra=fields(group=flusher.group, rules=len(spec.get("rules", ()))))

    async def reconfigure(self, config: NodeConfig) -> None:
        await self.start(config)  # starts or stops with the ruleset's need; a running one stays

    def _readable(self) -> None:
        try:
            events = self.flusher.read()
        except Exception:  # never let a bad packet take the node down
            log.exception("overload flusher: packet dropped")
            return
        self.pending += events
        if self.pending and (self.task is None or self.task.done()):
            self.task = asyncio.create_task(self._flush(), name="overload flush")

    async def _flush(self) -> None:
        from pfha.nft.overload import coalesce

        while self.pending and self.flusher is not None:
            events, self.pending = coalesce(self.pending), []
            try:
                done = await asyncio.to_thread(self.flusher.flush, events)
            except Exception as error:  # conntrack unreachable: the next event tries again
                log.error("overload flush failed", extra=fields(detail=f"{type(error).__name__}: {error}"))
                continue
            log.warning("overload: states flushed", extra=fields(detail=done.describe(), killed=done.killed))

    async def stop(self) -> None:
        if self.flusher is None:
            return
        try:
            asyncio.get_running_loop().remove_reader(self.flusher.fileno())
        except (ValueError, OSError):
            pass
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)
            self.task = None
        self.flusher.close()
        log.info("overload flusher stopped", extra=fields(**self.flusher.status()))
        self.flusher = None

    def status(self) -> dict:
        if self.flusher is None:
            if self.error:
                return {"state": "not running", "error": self.error}
            return {"state": "not needed (no overload ... flush in the ruleset)"}
        return {"state": "running", **self.flusher.status()}
