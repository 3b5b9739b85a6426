"""``pfha node run``: one asyncio process that is one firewall of the pair.

Start-up order (each step only once the previous one worked; a config error changes nothing):

1. read the node config, check every part's component is there, parse and compile pf.conf;
2. apply the host settings (sysctls, addresses, default route) and load the ruleset atomically;
3. start pflogd, the overload flusher (when the ruleset has ``overload <t> flush``), then state
   sync (which asks the peer for a bulk update);
4. start CARP *demoted* while the first bulk update is outstanding (pfsync(4): the node must not
   become master with an empty state table); sync lifts the demotion when the bulk is done or
   has given up;
5. serve the control socket.

SIGTERM: CARP bows out (the backup takes over at once), sync and pflogd stop; the ruleset stays
in the kernel (fail closed). SIGHUP: everything is read and compiled again first; only if all of
it is good is it applied: the ruleset in one transaction, CARP and sync reconfigured in place
(no flap). A bad reload is logged and the running config kept.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from pathlib import Path

from pfha import __version__
from pfha.errors import PfhaError
from pfha.node import config as node_config
from pfha.node import host
from pfha.node.control import ControlServer
from pfha.node.logs import fields
from pfha.node.parts import (
    DEMOTE_SYNC,
    PART_NAMES,
    CarpPart,
    Disabled,
    OverloadPart,
    Part,
    PartError,
    PflogPart,
    RulesetPart,
    SyncPart,
)

log = logging.getLogger("pfha.node")

PREPARE_TIMEOUT = 20.0  # seconds a reload may spend parsing and compiling pf.conf


class Node:
    def __init__(self, config_path: Path, control_path: Path, without: frozenset[str] = frozenset()) -> None:
        unknown = set(without) - set(PART_NAMES)
        if unknown:
            raise PfhaError(f"--without: unknown part {', '.join(sorted(unknown))} (parts: {', '.join(PART_NAMES)})")
        self.config_path = config_path
        self.control = ControlServer(control_path, self.handle)
        self.without = without
        self.config: node_config.NodeConfig | None = None
        self.started_at = time.time()
        self.applied: host.Applied | None = None
        self.last_reload: dict | None = None
        self.stopping = asyncio.Event()
        self.bulk_done_at: float | None = None
        self.ruleset = self._part("ruleset", RulesetPart)
        self.pflog = self._part("pflog", PflogPart)
        self.overload = self._part("overload", lambda: OverloadPart(self._loaded_metadata))
        self.carp = self._part("carp", lambda: CarpPart(control_path.parent))
        self.sync = self._part("sync", lambda: SyncPart(self._bulk_done, control_path.parent))
        self._reloading = asyncio.Lock()
        self.died: str | None = None
        self._watched: set[asyncio.Task] = set()
        self._restarting = False

    def _part(self, name: str, make) -> Part:
        return Disabled(name) if name in self.without else make()

    @property
    def parts(self) -> tuple[Part, ...]:
        return (self.ruleset, self.pflog, self.overload, self.sync, self.carp)

    def _loaded_metadata(self) -> dict | None:
        loaded = getattr(self.ruleset, "loaded", None)
        return loaded.payload.metadata if loaded is not None else None

    # -- life -----------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP while starting: ignored"))
        config = node_config.load(self.config_path)
        for part in self.parts:
            if part.enabled:
                part.check()
        compiled = self.ruleset.prepare(config) if isinstance(self.ruleset, RulesetPart) else None
        log.info("node starting", extra=fields(node=config.name, version=__version__, pid=os.getpid(),
                                               config=str(self.config_path), without=sorted(self.without)))
        self.applied = host.apply(config)
        for note in self.applied.not_applied:
            log.warning("host setting not applied", extra=fields(detail=note))
        if compiled is not None:
            self.ruleset.commit(compiled)
            self.ruleset.follow_addresses(config)
        self.config = config
        try:
            await self._start_parts(config)
        except BaseException:
            await self.shutdown()  # whatever started stops again (CARP releases its addresses)
            raise
        self._install_signals(loop)
        log.info("node running", extra=fields(node=config.name, control=str(self.control.path)))
        self._watch_parts()
        await self.stopping.wait()
        await self.shutdown()
        return 1 if self.died else 0

    async def _start_parts(self, config: node_config.NodeConfig) -> None:
        await self.pflog.start(config)
        await self.overload.start(config)
        if not self.overload.enabled and (self._loaded_metadata() or {}).get("overload_flush"):
            log.warning("overload flush: the overload part is left out; offenders join their table but keep their states")
        sync_pending = isinstance(self.sync, SyncPart) and config.sync is not None
        if isinstance(self.carp, CarpPart):
            await self.carp.start(config, demoted_for=(DEMOTE_SYNC,) if sync_pending else ())
        else:
            await self.carp.start(config)
        await self.sync.start(config)
        await self.control.start()

    def _watch_parts(self) -> None:
        """A component's task that ends on its own is a crash: stop the whole node (CARP bows
        out if it still can, the ruleset stays) and exit non-zero, so systemd restarts it,
        rather than run on as a half firewall that still looks alive."""
        for part in (self.carp, self.sync):
            task = getattr(part, "task", None)
            if task is not None and task not in self._watched:
                self._watched.add(task)
                task.add_done_callback(lambda t, name=part.name: self._part_ended(name, t))

    def _part_ended(self, name: str, task: asyncio.Task) -> None:
        if self.stopping.is_set() or task.cancelled() or self._restarting:
            return
        error = task.exception()
        self.died = f"{name} stopped unexpectedly: {error!r}" if error else f"{name} stopped unexpectedly"
        log.error("part died: stopping the node", extra=fields(part=name, detail=self.died))
        self.stopping.set()

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        """The node owns SIGTERM/SIGINT/SIGHUP (components run with their own handlers off)."""
        for sig, action in ((signal.SIGTERM, self.stopping.set), (signal.SIGINT, self.stopping.set),
                            (signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))):
            loop.add_signal_handler(sig, action)

    async def shutdown(self) -> None:
        log.info("node stopping: carp bows out, sync and pflogd stop, the ruleset stays loaded")
        for part in (self.carp, self.sync, self.overload, self.pflog, self.ruleset):
            try:
                await part.stop()
            except Exception:
                log.exception("stopping a part failed", extra=fields(part=part.name))
        await self.control.close()
        log.info("node stopped")

    def _bulk_done(self, ok: bool) -> None:
        """Sync's first bulk update finished (``ok``) or gave up: CARP may now compete."""
        self.bulk_done_at = time.time()
        if not ok:
            log.warning("bulk update failed; carp undemoted anyway (pfsync gives up the same way)")
        if isinstance(self.carp, CarpPart):
            self.carp.set_demoted(DEMOTE_SYNC, False)

    # -- reload ---------------------------------------------------------------------------

    async def reload(self) -> dict:
        """Read everything again; apply only if all of it is good; else keep what runs."""
        async with self._reloading:
            started = time.time()
            try:
                config = node_config.load(self.config_path)
                compiled = await self._prepare(config)
            except PfhaError as error:
                return self._reload_result(started, False, f"kept the running config: {error}")
            try:
                self.applied = host.apply(config)
                changed = self.ruleset.commit(compiled) if compiled is not None else False
                if compiled is not None:
                    self.ruleset.follow_addresses(config)
                self._restarting = True  # a part restarted on purpose is no crash
                try:
                    await self.carp.reconfigure(config)
                    await self.sync.reconfigure(config)
                finally:
                    self._restarting = False
                    self._watch_parts()
                await self.pflog.reconfigure(config)
                await self.overload.reconfigure(config)
            except (PfhaError, OSError) as error:
                return self._reload_result(started, False, f"reload partly failed, the ruleset is unchanged "
                                           f"unless reported loaded: {error}")
            self.config = config
            return self._reload_result(started, True, "ruleset reloaded" if changed else "ruleset unchanged")

    async def _prepare(self, config: node_config.NodeConfig):
        """Parse and compile off the loop, so CARP keeps advertising while a big (or pathological)
        pf.conf is read; give up after PREPARE_TIMEOUT seconds and keep what runs."""
        if not isinstance(self.ruleset, RulesetPart):
            return None
        try:
            return await asyncio.wait_for(_in_daemon_thread(self.ruleset.prepare, config), PREPARE_TIMEOUT)
        except asyncio.TimeoutError:
            raise PartError(f"{config.pf_conf}: not parsed and compiled within {PREPARE_TIMEOUT:.0f} s") from None

    def _reload_result(self, started: float, ok: bool, message: str) -> dict:
        self.last_reload = {"at": started, "ok": ok, "message": message}
        (log.info if ok else log.error)("reload", extra=fields(ok=ok, detail=message))
        return self.last_reload

    # -- control --------------------------------------------------------------------------

    async def handle(self, command: str, request: dict) -> dict:
        if command == "status":
            return self.status()
        if command == "reload":
            return await self.reload()
        raise PartError(f"unknown command {command!r} (status, reload)")

    def status(self) -> dict:
        config = self.config
        return {
            "node": config.name if config else None,
            "pid": os.getpid(),
            "version": __version__,
            "uptime": round(time.time() - self.started_at, 1),
            "config": str(self.config_path),
            "carp": self.carp.status(),
            "sync": {**self.sync.status(), "bulk_done_at": self.bulk_done_at},
            "states": self._state_count(),
            "ruleset": self.ruleset.status(),
            "pflog": self.pflog.status(),
            "overload": self.overload.status(),
            "host": self.applied.as_dict() if self.applied else None,
            "last_reload": self.last_reload,
            "without": sorted(self.without),
        }

    @staticmethod
    def _state_count() -> int | None:
        """Connection states in this namespace's conntrack table."""
        try:
            return int(Path("/proc/sys/net/netfilter/nf_conntrack_count").read_text())
        except (OSError, ValueError):
            return None


def _in_daemon_thread(function, *args) -> asyncio.Future:
    """Run ``function`` in a daemon thread: unlike the default executor, a thread stuck in it
    can never keep the process from exiting on SIGTERM."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome, error) -> None:
        if not future.done():
            future.set_exception(error) if error is not None else future.set_result(outcome)

    def work() -> None:
        try:
            outcome, error = function(*args), None
        except BaseException as caught:  # handed to the loop as is
            outcome, error = None, caught
        loop.call_soon_threadsafe(settle, outcome, error)

    threading.Thread(target=work, name="pfha-prepare", daemon=True).start()
    return future


def run(config_path: Path, control_path: Path, without: frozenset[str] = frozenset()) -> int:
    node = Node(config_path, control_path, without)
    return asyncio.run(node.run())
