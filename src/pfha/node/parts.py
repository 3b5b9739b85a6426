"""The node daemon's parts, each a thin adapter from the node config to one component's API:
the ruleset (pfha.conf + pfha.nft), pflogd (pfha.pflog), CARP (pfha.carp) and state sync
(pfha.sync).

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
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pfha.errors import PfhaError
from pfha.node.config import NodeConfig
from pfha.node.logs import fields

log = logging.getLogger("pfha.node")

PART_NAMES = ("ruleset", "pflog", "carp", "sync")


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


def interface_view(config: NodeConfig):
    """What pf.conf's interface names resolve to: the node config's addresses, CARP ones under
    their carp interface names, not the live host (whose VIPs come and go with CARP state)."""
    from pfha.conf import InterfaceView

    specs = [f"{name}=" + ",".join(str(a) for a in addrs) for name, addrs in config.addresses_by_interface().items()]
    return InterfaceView.from_specs(specs)


@dataclass(frozen=True)
class CompiledRuleset:
    """A ruleset ready to load: parsed, checked and compiled, not yet in the kernel."""

    source: str
    digest: str
    rules: int
    payload: Any  # what the loader takes


class RulesetPart(Part):
    name = "ruleset"

    def __init__(self) -> None:
        super().__init__()
        self.loaded: CompiledRuleset | None = None
        self.loaded_at: float | None = None
        self.last_error: str | None = None

    def check(self) -> None:
        require(self.name, "pfha.conf", "parse_file")
        self._nft()

    def _nft(self):
        return require(self.name, "pfha.nft", "compile_ruleset", "load")

    def prepare(self, config: NodeConfig) -> CompiledRuleset:
        """Parse and compile ``config``'s pf.conf: pure, raises on any error, changes nothing."""
        from pfha.conf import parse_file

        ruleset = parse_file(config.pf_conf, interface_view(config), include_base=config.pf_conf.parent)
        nft = self._nft()
        payload = nft.compile_ruleset(ruleset, devices=config.device_map())
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        count = len(getattr(ruleset, "rules", ())) + len(getattr(ruleset, "translations", ()) or ())
        return CompiledRuleset(str(config.pf_conf), digest, count, payload)

    def commit(self, compiled: CompiledRuleset) -> bool:
        """Load atomically; False (and nothing changed) when it is the ruleset already loaded."""
        if self.loaded is not None and self.loaded.digest == compiled.digest:
            return False
        self._nft().load(compiled.payload)
        self.loaded, self.loaded_at, self.last_error = compiled, time.time(), None
        log.info("ruleset loaded", extra=fields(digest=compiled.digest[:16], source=compiled.source))
        return True

    async def start(self, config: NodeConfig) -> None:
        self.commit(self.prepare(config))

    async def reconfigure(self, config: NodeConfig) -> None:
        self.commit(self.prepare(config))

    def status(self) -> dict:
        if self.loaded is None:
            return {"state": "not loaded", "error": self.last_error}
        return {"state": "loaded", "hash": self.loaded.digest, "source": self.loaded.source, "rules": self.loaded.rules,
                "loaded_at": self.loaded_at, "last_error": self.last_error}


# --- pflogd --------------------------------------------------------------------------------


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
        self.daemon = linux.Pflogd(str(config.pflog.file))
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


class CarpPart(Part):
    """The vhids of the node config, run by pfha.carp's Linux runner.

    Demotion reasons are kept here by name (``pfsync bulk update``...) so that the status can
    say *why* a node is demoted; the runner only sees whether the node is demoted.
    """

    name = "carp"

    def __init__(self) -> None:
        super().__init__()
        self.runner = None
        self.demotions: set[str] = set()

    def _module(self):
        return require(self.name, "pfha.carp.runner", "CarpRunner")

    def check(self) -> None:
        self._module()

    async def start(self, config: NodeConfig, demoted_for: tuple[str, ...] = ()) -> None:
        if not config.carp:
            return
        self.demotions.update(demoted_for)
        module = self._module()
        self.runner = module.CarpRunner.from_node_config(config, demoted=bool(self.demotions))
        await self.runner.start()

    def set_demoted(self, reason: str, on: bool) -> None:
        before = bool(self.demotions)
        (self.demotions.add if on else self.demotions.discard)(reason)
        if self.runner is not None and before != bool(self.demotions):
            self.runner.set_demoted(bool(self.demotions))
        log.info("carp demotion", extra=fields(reason=reason, demoted=on, reasons=sorted(self.demotions)))

    async def reconfigure(self, config: NodeConfig) -> None:
        if self.runner is None:
            await self.start(config)
        else:
            await self.runner.reconfigure(config)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()  # bows out: the backup takes over at once
            self.runner = None

    def status(self) -> dict:
        if self.runner is None:
            return {"state": "off", "vhids": []}
        return {"state": "running", "demoted": sorted(self.demotions), "vhids": self.runner.status()}


# --- state sync ----------------------------------------------------------------------------


class SyncPart(Part):
    """pfha.sync's runner: conntrack states to and from the peer; tells CARP when the first
    bulk update is done (or has given up), so that the node only becomes master with states."""

    name = "sync"

    def __init__(self, on_bulk_done: Callable[[bool], None]) -> None:
        super().__init__()
        self.runner = None
        self.on_bulk_done = on_bulk_done
        self.config_key: object = None

    def _module(self):
        return require(self.name, "pfha.sync.runner", "SyncRunner")

    def check(self) -> None:
        self._module()

    async def start(self, config: NodeConfig) -> None:
        if config.sync is None:
            self.on_bulk_done(True)
            return
        module = self._module()
        self.runner = module.SyncRunner.from_node_config(config, on_bulk_done=self.on_bulk_done)
        self.config_key = config.sync
        await self.runner.start()

    async def reconfigure(self, config: NodeConfig) -> None:
        if config.sync == self.config_key:
            return  # unchanged: keep the running peer, no resync
        await self.stop()
        await self.start(config)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
            self.runner = None

    def status(self) -> dict:
        if self.runner is None:
            return {"state": "off"}
        return self.runner.status()
