"""One builder for the node TOML files the tests write (schema, audit and ``pfha node run`` tests).

It writes only the keys it is given, in the order given, as a person would (the schema tests
edit the text with string replacements, so the layout is fixed: ``key = value`` lines, tables
separated by one blank line). Values are formatted by :mod:`pfha.node.toml_out`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from pfha.node.toml_out import toml_key, toml_value

Interface = str | tuple[str | None, Sequence[str]] | None  # device, or (device, addresses); None: defaults


def table(header: str, values: Mapping[str, object]) -> str:
    lines = [header] + [f"{toml_key(k)} = {toml_value(str(v) if isinstance(v, Path) else v)}"
                        for k, v in values.items() if v is not None]
    return "\n".join(lines) + "\n"


def node_toml(name: str, pf_conf: str | Path, interfaces: Mapping[str, Interface], *,
              preempt: bool | None = None, carp: Sequence[Mapping[str, object]] = (),
              sync: Mapping[str, object] | None = None, pflog: Mapping[str, object] | None = None,
              host: Mapping[str, object] | None = None) -> str:
    """A node TOML: ``interfaces`` maps pf.conf names to a device or (device, addresses),
    ``carp`` is the list of ``[[carp.group]]`` tables; other sections are left out unless given."""
    parts = [table("[node]", {"name": name, "pf_conf": pf_conf})]
    for ifname, spec in interfaces.items():
        device, addresses = (spec, None) if spec is None or isinstance(spec, str) else spec
        parts.append(table(f"[interfaces.{ifname}]", {"device": device, "addresses": list(addresses) if addresses else None}))
    if preempt is not None:
        parts.append(table("[carp]", {"preempt": preempt}))
    parts += [table("[[carp.group]]", group) for group in carp]
    for header, values in (("[sync]", sync), ("[pflog]", pflog), ("[host]", host)):
        if values is not None:
            parts.append(table(header, values))
    return "\n".join(parts)


def write_node_toml(path: Path, *args, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(node_toml(*args, **kwargs))
    return path
