"""Finding the nodes to audit: node TOML files, FreeBSD rc.conf files, or folders of them.

A node is its :class:`NodeConfig` plus where each part of it was written, so that a finding
about, say, CARP skew can name the rc.conf or TOML line to change. A folder may hold one node
(``node.toml``, ``rc.conf``) or both (``fw1.toml`` and ``fw2.toml``; ``rc.conf.primary`` and
``rc.conf.secondary`` beside one shared ``pf.conf`` and ``sysctl.conf``, as the tutorial's
files are laid out in ``shared/seed/configs``).

Reads files only; never the running system.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pfha.audit.findings import Place
from pfha.errors import PfhaError
from pfha.node import config as node_config
from pfha.node.config import NodeConfig
from pfha.node.freebsd import import_files


@dataclass(frozen=True)
class NodeSource:
    """A node under audit: its configuration, where it came from, and its pf.conf on disk."""

    config: NodeConfig
    kind: Literal["toml", "freebsd"]
    path: Path
    pf_conf: Path
    origins: Mapping[str, Place] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def place(self, key: str) -> Place:
        """The line that set ``key`` (``carp.group[0]``, ``sync``...), else the file itself."""
        return self.origins.get(key) or Place(str(self.path))

    def label(self) -> str:
        return f"{self.name} ({self.path.name})"


def discover(paths: list[Path], root: Path | None = None) -> list[NodeSource]:
    """Every node named by ``paths`` (files or folders), in a stable order."""
    nodes: list[NodeSource] = []
    for path in paths:
        nodes.extend(_discover_one(Path(path), root))
    return nodes


def discover_in_root(root: Path) -> list[NodeSource]:
    """The node configured in a host tree: ``etc/pfha/*.toml``, else a FreeBSD ``etc/rc.conf``."""
    tomls = sorted((root / "etc" / "pfha").glob("*.toml")) if (root / "etc" / "pfha").is_dir() else []
    if tomls:
        return [load_toml(p, root) for p in tomls]
    rc = root / "etc" / "rc.conf"
    if rc.is_file():
        return [load_freebsd(rc, root)]
    return []


def _discover_one(path: Path, root: Path | None) -> list[NodeSource]:
    if path.is_file():
        if path.suffix == ".toml":
            return [load_toml(path, root)]
        if path.name.startswith("rc.conf"):
            return [load_freebsd(path, root)]
        raise PfhaError(f"{path}: not a node configuration (expected a .toml node file or an rc.conf)")
    if not path.is_dir():
        raise PfhaError(f"{path}: no such file or folder")
    tomls = [p for p in sorted(path.glob("*.toml")) if _is_node_toml(p)]
    if tomls:
        return [load_toml(p, root) for p in tomls]
    if (path / "rc.conf").is_file():
        return [load_freebsd(path / "rc.conf", root)]
    rcs = sorted(p for p in path.glob("rc.conf.*") if p.is_file() and not p.name.endswith((".orig", "~")))
    if rcs:
        return [load_freebsd(p, root) for p in rcs]
    if (path / "etc").is_dir():
        found = discover_in_root(path)
        if found:
            return found
    raise PfhaError(f"{path}: no node configuration here (no *.toml with [node], rc.conf or rc.conf.*)")


def _is_node_toml(path: Path) -> bool:
    try:
        return re.search(r"^\s*\[node\]\s*$", path.read_text(encoding="utf-8"), re.M) is not None
    except OSError:
        return False


def load_toml(path: Path, root: Path | None = None) -> NodeSource:
    config = node_config.load(path)
    text = path.read_text(encoding="utf-8")
    return NodeSource(config, "toml", path, _under_root(config.pf_conf, root), toml_origins(text, str(path)))


def load_freebsd(rc: Path, root: Path | None = None) -> NodeSource:
    sysctl = rc.parent / "sysctl.conf"
    imported = import_files(rc, sysctl if sysctl.is_file() else None)
    config = imported.config
    # The tutorial keeps pf.conf beside rc.conf; a FreeBSD tree keeps it at pf_rules.
    beside = rc.parent / config.pf_conf.name
    pf_conf = beside if beside.is_file() else _under_root(config.pf_conf, root)
    origins = {key: Place(o.file, o.line) for key, o in imported.origins.items()}
    return NodeSource(config, "freebsd", rc, pf_conf, origins)


def _under_root(path: Path, root: Path | None) -> Path:
    if root is not None and path.is_absolute():
        return root / path.relative_to("/")
    return path


_TABLE_RE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\"-]+)\s*=")


def toml_origins(text: str, filename: str) -> dict[str, Place]:
    """The line of each part of a node TOML, keyed as :class:`pfha.node.freebsd.Imported` does."""
    out: dict[str, Place] = {}
    table = ""
    groups = -1
    for number, line in enumerate(text.splitlines(), 1):
        match = _TABLE_RE.match(line)
        if match:
            table = match.group(1).replace(" ", "")
            if line.lstrip().startswith("[[") and table == "carp.group":
                groups += 1
                out[f"carp.group[{groups}]"] = Place(filename, number)
            elif table.startswith("interfaces."):
                out.setdefault(table, Place(filename, number))
            elif table in ("sync", "carp", "pflog", "host", "node"):
                out.setdefault(table, Place(filename, number))
            continue
        key = _KEY_RE.match(line)
        if not key:
            continue
        name = key.group(1).strip('"')
        if table == "carp.group" and groups >= 0:
            out[f"carp.group[{groups}].{name}"] = Place(filename, number)
        elif table == "interfaces" :
            out.setdefault(f"interfaces.{name}", Place(filename, number))
        elif table:
            out[f"{table}.{name}"] = Place(filename, number)
    return out
