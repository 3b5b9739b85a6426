"""Writes a :class:`NodeConfig` as the node TOML that :func:`pfha.node.config.load` reads back.

The standard library reads TOML but cannot write it, and the schema is small, so this writer
is hand-made: it emits exactly the keys of ``docs/node-config.md`` in a fixed order, with
comments saying where each part came from and what an import could not carry over. Writing
and reading back give an equal configuration (tested), which is what makes the output safe to
edit by hand.

Pure: returns text, never writes a file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from pfha.node.config import NodeConfig, Pflog

BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are a subset of TOML's, but TOML also forbids DEL."""
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(key: str) -> str:
    return key if BARE_KEY.match(key) else toml_string(key)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return toml_string(str(value))


def dumps(config: NodeConfig, origins: Mapping[str, object] | None = None,
          notes: Iterable[object] = (), header: str | None = None) -> str:
    """The TOML text of ``config``; ``origins`` and ``notes`` (from an import) become comments."""
    origins = origins or {}
    out: list[str] = []

    def comment_origin(key: str) -> None:
        if key in origins:
            out.append(f"# from {origins[key]}")

    if header:
        out.extend(f"# {line}".rstrip() for line in header.splitlines())
    notes = list(notes)
    if notes:
        out.append("#")
        out.append("# Not carried over (no Linux equivalent, or not pfha's job):")
        out.extend(f"#   {note}" for note in notes)
    if out:
        out.append("")

    out.append("[node]")
    out.append(f"name = {toml_string(config.name)}")
    out.append(f"pf_conf = {toml_string(str(config.pf_conf))}")

    for iface in config.interfaces:
        out.append("")
        comment_origin(f"interfaces.{iface.name}")
        out.append(f"[interfaces.{toml_key(iface.name)}]")
        out.append(f"device = {toml_string(iface.device)}")
        if iface.addresses:
            out.append(f"addresses = {toml_value([str(a) for a in iface.addresses])}")

    if config.carp:
        preempt = all(group.preempt for group in config.carp)
        out.append("")
        comment_origin("carp.preempt")
        out.append("[carp]")
        out.append(f"preempt = {toml_value(preempt)}")
        for index, group in enumerate(config.carp):
            out.append("")
            comment_origin(f"carp.group[{index}]")
            out.append("[[carp.group]]")
            out.append(f"vhid = {group.vhid}")
            if group.name:
                out.append(f"name = {toml_string(group.name)}")
            out.append(f"parent = {toml_string(group.parent)}")
            out.append(f"addresses = {toml_value([str(a) for a in group.addresses])}")
            if group.password is not None:
                out.append(f"password = {toml_string(group.password)}")
            if group.password_file is not None:
                out.append(f"password_file = {toml_string(str(group.password_file))}")
            out.append(f"advbase = {group.advbase}")
            out.append(f"advskew = {group.advskew}")
            if group.preempt != preempt:
                out.append(f"preempt = {toml_value(group.preempt)}")

    if config.sync is not None:
        sync = config.sync
        out.append("")
        comment_origin("sync")
        out.append("[sync]")
        out.append(f"device = {toml_string(sync.device)}")
        if sync.peer is not None:
            out.append(f"peer = {toml_string(str(sync.peer))}")
        if sync.key is not None:
            out.append(f"key = {toml_string(sync.key)}")
        if sync.key_file is not None:
            out.append(f"key_file = {toml_string(str(sync.key_file))}")
        if sync.defer:
            out.append("defer = true")
        if sync.sched is not None:
            out.append(f"sched = {toml_string(sync.sched)}")
        if sync.refresh is not None:
            out.append(f"refresh = {sync.refresh:g}")

    out.append("")
    comment_origin("pflog.file")
    out.append("[pflog]")
    out.append(f"enabled = {toml_value(config.pflog.enabled)}")
    if config.pflog.file is not None and config.pflog.file != Pflog.file:
        out.append(f"file = {toml_string(str(config.pflog.file))}")
    elif config.pflog.file is not None:
        out.append(f"file = {toml_string(str(Pflog.file))}")

    host = config.host
    out.append("")
    out.append("[host]")
    out.append(f"forwarding = {toml_value(host.forwarding)}")
    if host.default_router is not None:
        out.append(f"default_router = {toml_string(str(host.default_router))}")
    if host.accept_redirects is not None:
        out.append(f"accept_redirects = {toml_value(host.accept_redirects)}")
    out.append(f"tcp_blackhole = {host.tcp_blackhole}")
    out.append(f"udp_blackhole = {toml_value(host.udp_blackhole)}")
    if host.sysctl:
        out.append("")
        out.append("[host.sysctl]")
        for key, value in host.sysctl:
            out.append(f"{toml_string(key)} = {toml_string(value)}")
    return "\n".join(out) + "\n"

