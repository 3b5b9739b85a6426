"""pfctl's operating commands on the kernel data plane: load, show, flush, kill, tables.

Each function does one pfctl action in the current network namespace and returns the text
pfctl would print (the CLI front ends only parse flags and print). Rule listings come from the
metadata saved at load time (the pf text of every rule) joined with the kernel's counters and
conntrack's flows, so ``pfctl -vsr`` shows the packets nftables really counted.

Touches nftables and conntrack through :mod:`pfha.nft.loader` and :mod:`pfha.nft.conntrack`.
"""

from __future__ import annotations

import ipaddress
import time
from collections import Counter
from typing import Any

from pfha.errors import PfhaError
from pfha.nft import FAMILY, TABLE, conntrack, loader
from pfha.nft.compile import BASE_CHAINS, STATUS_CHAIN, Compiled, Warning, _elements, compile_ruleset
from pfha.nft.states import format_state, involves, pf_states


class PfctlError(PfhaError):
    """A pfctl request that cannot be carried out (pf not loaded, const table, bad address)."""


# ----------------------------------------------------------------------------- load
def compile_file(path: str, interfaces: Any = None, devices: dict[str, str] | None = None,
                 level: str | None = None) -> Compiled:
    """Parse, optimize (as pfctl -f: ``level`` is ``-o``) and compile a pf.conf against the live
    interfaces (or the given view). Optimizer warnings come first in ``warnings``.

    ``devices`` maps pf.conf's interface names to Linux devices (``xl0 -> eth1``): the live
    devices are seen under their pf.conf names, the kernel rules name the devices."""
    from pfha.conf import InterfaceView, parse_file
    from pfha.nft.compile import view_as_named

    view = interfaces if interfaces is not None else view_as_named(InterfaceView.live(), devices or {})
    ruleset, warnings = optimize_for_kernel(parse_file(path, view), view, level)
    compiled = compile_ruleset(ruleset, view, devices=devices)
    compiled.warnings[:0] = warnings
    compiled.metadata["file"] = str(path)
    return compiled


def optimize_for_kernel(ruleset: Any, view: Any, level: str | None = None,
                        identifier: int | None = None) -> tuple[Any, list[Warning]]:
    """pfctl's optimizer before a load: ``level`` as ``-o`` (None: the file's ``set
    ruleset-optimization``, else basic), automatic tables named for the kernel as pfctl names
    them (``__automatic_<hex>_<n>``; ``identifier`` fixes the hex, random otherwise), ``-o
    profile`` fed with the running ruleset's counters. Returns the ruleset and the warnings."""
    import random

    from pfha.conf.optimize import default_is_group, optimize, ruleset_level

    profile = running_profile() if ruleset_level(ruleset, level) == "profile" else None
    optimized = optimize(ruleset, level, is_group=default_is_group(view),
                         identifier=random.getrandbits(32) if identifier is None else identifier,
                         reroll=lambda: random.getrandbits(32), profile=profile)
    return optimized.ruleset, [Warning(text) for text in optimized.warnings]


def running_profile() -> list | None:
    """-o profile's feedback: the loaded filter rules (as ``pfctl -vsr`` lists them, read back
    into rules) with the packets nftables counted for each; None when nothing pfha loaded is
    there to read. pfha's kernel ruleset has its anchors inlined, so superblocks after an
    anchor call do not line up with pfctl's and keep the basic order (load_feedback_profile
    stops at the first superblocks that differ)."""
    from pfha.conf import InterfaceView, parse_text
    from pfha.conf.errors import ParseError

    try:
        metadata = loader.load_metadata()
        if not metadata or loader.is_enabled(loader.Nft()) is None:
            return None
        values = counters()
    except Exception:  # noqa: BLE001 - no data plane or nothing loaded: no feedback to use
        return None
    running = []
    for entry in metadata.get("rules", []):
        try:
            parsed = parse_text(entry["rule"] + "\n", "<running>", InterfaceView.empty())
        except (ParseError, KeyError):
            break
        if len(parsed.filter) != 1:
            break
        packets = sum(values.get(f"{entry.get('counter')}_{d}", (0, 0))[0] for d in ("in", "out"))
        running.append((parsed.filter[0], packets))
    return running


def load_compiled(compiled: Compiled) -> list[str]:
    """One nftables transaction, then the conntrack settings the ruleset asks for (``set
    timeout``); the settings are only applied once the kernel accepted the rules. Returns what
    only the loaded state can tell (an ``overload ... flush`` that no flusher carries out)."""
    from pfha.nft.overload_linux import missing_flusher_warnings

    compiled.metadata["loaded_at"] = time.time()  # pfctl -s info: "Status: Enabled for ..."
    loader.load(compiled.commands, compiled.metadata)
    if compiled.metadata.get("sysctls"):
        conntrack.set_timeouts(compiled.metadata["sysctls"])
    return missing_flusher_warnings(compiled.metadata)


def load_file(path: str, *, check_only: bool = False, interfaces: Any = None) -> list[str]:
    """pfctl -f FILE (or -nf): one transaction; the warnings to print."""
    compiled = compile_file(path, interfaces)
    warnings = [f"warning: {w}" for w in compiled.warnings]
    if not check_only:
        warnings += [f"warning: {w}" for w in load_compiled(compiled)]
    return warnings


def _metadata() -> dict[str, Any]:
    """What the last load saved, if our table is still there (a namespace deleted and its
    inode reused must not show a stranger's rules)."""
    metadata = loader.load_metadata()
    if metadata is not None and loader.is_enabled(loader.Nft()) is None:
        metadata = None
    if metadata is None:
        return {"rules": [], "translation": [], "tables": [], "scrub": []}
    return metadata


# ----------------------------------------------------------------------------- counters
def counters(nft: loader.Nft | None = None) -> dict[str, tuple[int, int]]:
    """Every named counter of our table: name -> (packets, bytes)."""
    nft = nft or loader.Nft()
    result = {}
    for obj in nft.list(f"counters table {FAMILY} {TABLE}"):
        counter = obj.get("counter")
        if counter:
            result[counter["name"]] = (counter.get("packets", 0), counter.get("bytes", 0))
    return result


def clear_rule_counters() -> None:
    """pfctl -z: zero the filter rules' packet and byte counters (pf's PF_GET_CLR_CNTR:
    translation rules keep theirs; state counts are live, not counters). In nft's text syntax:
    nft 1.0.6 answers a JSON batch of resets with one JSON document each, which its own Python
    binding then fails to parse."""
    metadata = _metadata()
    nft = loader.Nft()
    existing = counters(nft)
    names = [f"{rule['counter']}_{way}" for rule in metadata["rules"] for way in ("in", "out")]
    commands = [f"reset counter {FAMILY} {TABLE} {name}" for name in names if name in existing]
    if commands:
        nft.run_text("\n".join(commands))


def _counter_line(packets: int, octets: int, states: int | str) -> str:
    return f"  [ Evaluations: {'0':<8}  Packets: {packets:<8}  Bytes: {octets:<10}  States: {states!s:<6}]"


def _state_counts() -> Counter:
    """Current pf states per rule id (from conntrack's marks)."""
    counts: Counter = Counter()
    try:
        flows = conntrack.list_flows()
    except Exception:  # conntrack not reachable: listings still work without the States column
        return counts
    for flow in flows:
        for state in pf_states(flow):
            counts[state.rule_id] += 1
    return counts


def show_rules(verbose: int = 0) -> str:
    """pfctl -sr / -vsr: scrub rules then filter rules, with counters mapped back."""
    metadata = _metadata()
    lines = list(metadata.get("scrub", []))
    values = counters() if verbose and metadata["rules"] else {}
    states = _state_counts() if verbose else Counter()
    for rule in metadata["rules"]:
        prefix = f"@{rule['nr']} " if verbose > 1 else ""
        lines.append(prefix + rule["rule"])
        if verbose:
            packets = sum(values.get(f"{rule['counter']}_{d}", (0, 0))[0] for d in ("in", "out"))
            octets = sum(values.get(f"{rule['counter']}_{d}", (0, 0))[1] for d in ("in", "out"))
            lines.append(_counter_line(packets, octets, states.get(rule["id"], 0)))
            lines.append("  [ Inserted: uid 0 pid 0 State Creations: 0     ]")
    return "\n".join(lines)


def show_nat(verbose: int = 0) -> str:
    metadata = _metadata()
    values = counters() if verbose and metadata["translation"] else {}
    lines = []
    for rule in metadata["translation"]:
        lines.append((f"@{rule['nr']} " if verbose > 1 else "") + rule["rule"])
        if verbose:
            packets, octets = values.get(rule["counter"], (0, 0))
            lines.append(_counter_line(packets, octets, "n/a"))
    return "\n".join(lines)


def show_labels() -> str:
    """pfctl -sl: label evals packets bytes in-packets in-bytes out-packets out-bytes states-total."""
    metadata = _metadata()
    values = counters()
    states = _state_counts()
    totals: dict[str, list[int]] = {}
    for rule in metadata["rules"]:
        for label in rule.get("labels", []):
            row = totals.setdefault(label, [0] * 8)
            p_in, b_in = values.get(f"{rule['counter']}_in", (0, 0))
            p_out, b_out = values.get(f"{rule['counter']}_out", (0, 0))
            for i, v in enumerate((0, p_in + p_out, b_in + b_out, p_in, b_in, p_out, b_out, states.get(rule["id"], 0))):
                row[i] += v
    return "\n".join(f"{label} " + " ".join(str(v) for v in row) for label, row in totals.items())


def show_states(verbose: int = 0) -> str:
    """pfctl -ss: one line per pf state (side bit) of every conntrack flow."""
    metadata = _metadata()
    numbers = {rule["id"]: rule["nr"] for rule in metadata["rules"]}
    lines = []
    for flow in conntrack.list_flows():
        for state in pf_states(flow):
            lines.append(format_state(state, verbose, numbers))
    return "\n".join(lines)


def is_running() -> bool:
    """pfctl -s Running: is pf filtering (pfha's table loaded and enabled)?"""
    return bool(loader.is_enabled(loader.Nft()))


def show_info(verbose: int = 0) -> str:
    nft = loader.Nft()
    enabled = loader.is_enabled(nft)
    metadata = _metadata()
    flows = conntrack.list_flows()
    states = sum(len(pf_states(f)) for f in flows)
    since = metadata.get("loaded_at")
    status = "Enabled" if enabled else "Disabled"
    if since and enabled:
        seconds = int(time.time() - since)
        days, rest = divmod(seconds, 86400)
        hours, rest = divmod(rest, 3600)
        minutes, seconds = divmod(rest, 60)
        status += f" for {days} days {hours:02d}:{minutes:02d}:{seconds:02d}"
    lines = [f"Status: {status}", "", "State Table                          Total             Rate",
             f"  current entries                    {states:>8}"]
    if verbose:
        lines.append(f"  conntrack flows                    {len(flows):>8}")
    return "\n".join(lines)


#: pfctl_parser.c's pf_timeouts[], the order pfctl -s timeouts lists them in
SHOWN_TIMEOUTS = ("tcp.first", "tcp.opening", "tcp.established", "tcp.closing", "tcp.finwait", "tcp.closed",
                  "tcp.tsdiff", "udp.first", "udp.single", "udp.multiple", "icmp.first", "icmp.error",
                  "other.first", "other.single", "other.multiple", "frag", "interval", "adaptive.start",
                  "adaptive.end", "src.track")
#: pfctl.c's pf_limits[], the order pfctl -s memory lists them in
SHOWN_LIMITS = ("states", "src-nodes", "frags", "table-entries")


def show_timeouts() -> str:
    """pfctl -s timeouts: pf's global timeouts as the loaded ruleset set them (pf's defaults when
    nothing is loaded). The kernel enforces them through conntrack (docs/fidelity.md)."""
    from pfha.conf.ast import Options
    from pfha.engine.state import configured_timeouts

    values = _metadata().get("timeouts") or configured_timeouts(Options())
    return "\n".join(f"{name:<20} {values.get(name, 0):>10}{' states' if name.startswith('adaptive.') else 's'}"
                     for name in SHOWN_TIMEOUTS)


def show_limits() -> str:
    """pfctl -s memory: pf's memory limits as the loaded ruleset set them."""
    from pfha.conf.ast import Options
    from pfha.engine.state import configured_limits

    values = _metadata().get("limits") or configured_limits(Options())
    return "\n".join(f"{name:<13} hard limit {values[name]:>8}" for name in SHOWN_LIMITS)


def show_tables(verbose: int = 0) -> str:
    lines = []
    for table in _metadata()["tables"]:
        if verbose:
            flags = ("c" if table.get("const") else "-") + ("p" if table.get("persist") else "-") + "a" + "-" * 3 + ("C" if table.get("counters") else "-")
            lines.append(f"{flags}\t{table['name']}")
        else:
            lines.append(table["name"])
    return "\n".join(lines)


# ----------------------------------------------------------------------------- enable/disable/flush
def enable() -> str:
    nft = loader.Nft()
    if loader.is_enabled(nft):
        raise PfctlError("pf already enabled")
    loader.set_enabled(nft, True)
    return "pf enabled"


def disable() -> str:
    nft = loader.Nft()
    if loader.is_enabled(nft) is False:
        raise PfctlError("pf not enabled")
    loader.set_enabled(nft, False)
    return "pf disabled"


def _flush_chains(names: list[str]) -> None:
    nft = loader.Nft()
    if loader.is_enabled(nft) is None:
        return
    batch: list[dict[str, Any]] = []
    for name in names:
        batch.append({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}})
        batch.append({"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": name, "expr": [{"jump": {"target": STATUS_CHAIN}}]}}})
    nft.run(batch)


def flush_rules() -> str:
    """pfctl -F rules: the filter rules go (every packet passes statelessly); nat stays."""
    metadata = loader.load_metadata()
    synproxy = list((metadata or {}).get("synproxy_chains", []))  # synproxy is part of the rules
    _flush_chains([name for name, *_ in BASE_CHAINS if name.startswith("filter")] + synproxy)
    if metadata is not None:
        metadata["rules"], metadata["scrub"] = [], []
        loader.save_metadata(metadata)
    return "rules cleared"


def flush_nat() -> str:
    _flush_chains([name for name, *_ in BASE_CHAINS if name.startswith("nat")])
    metadata = loader.load_metadata()
    if metadata is not None:
        metadata["translation"] = []
        loader.save_metadata(metadata)
    return "nat cleared"


def flush_states() -> str:
    return f"{conntrack.flush()} states cleared"


def flush_tables() -> str:
    """pfctl -F Tables: every table emptied (the sets stay, rules still refer to them); const
    tables cannot change, so they are left as they are and not counted."""
    flushed = [t["name"] for t in _metadata()["tables"] if not t.get("const")]
    for name in flushed:
        table_modify(name, "flush", [])
    return f"{len(flushed)} tables flushed."


def flush_all() -> str:
    lines = [flush_rules(), flush_nat(), flush_states()]
    loader.flush()
    lines.append("tables cleared")
    return "\n".join(lines)


def kill_states(hosts: list[str]) -> str:
    """pfctl -k SRC [-k DST]: remove states from SRC (to DST)."""
    networks = [_network(h) for h in hosts[:2]]

    def matches(flow) -> bool:
        if not involves(flow, networks[0], "src"):
            return False
        return len(networks) < 2 or involves(flow, networks[1], "dst")

    flows = [f for f in conntrack.list_flows() if matches(f)]
    killed = sum(len(pf_states(f)) or 1 for f in flows)
    conntrack.delete(flows)
    return f"killed {killed} states from 1 sources and 0 destinations" if len(hosts) < 2 else f"killed {killed} states"


def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise PfctlError(f"invalid address: {text}") from None


# ----------------------------------------------------------------------------- tables
def _table(name: str) -> dict[str, Any]:
    for table in _metadata()["tables"]:
        if table["name"] == name:
            return table
    raise PfctlError(f"Table does not exist: {name}")


def _set_networks(nft: loader.Nft, set_name: str) -> list[Any]:
    nets = []
    for obj in nft.list(f"set {FAMILY} {TABLE} {set_name}"):
        for elem in obj.get("set", {}).get("elem", []):
            nets.extend(_element_networks(elem))
    return nets


def _element_networks(elem: Any) -> list[Any]:
    if isinstance(elem, dict) and "elem" in elem:
        elem = elem["elem"]["val"]
    if isinstance(elem, str):
        return [ipaddress.ip_network(elem)]
    if "prefix" in elem:
        return [ipaddress.ip_network(f"{elem['prefix']['addr']}/{elem['prefix']['len']}")]
    if "range" in elem:
        low, high = (ipaddress.ip_address(a) for a in elem["range"])
        return list(ipaddress.summarize_address_range(low, high))
    return []


def table_show(name: str) -> str:
    table = _table(name)
    nft = loader.Nft()
    nets = [n for family in ("ip", "ip6") for n in _set_networks(nft, table["sets"][family])]
    nets += [n for name in table.get("overload", {}).values() for n in _set_networks(nft, name) if n not in nets]
    return "\n".join(f"   {n.network_address if n.prefixlen == n.max_prefixlen else n}" for n in nets)


def table_modify(name: str, op: str, addresses: list[str]) -> str:
    """-T add|delete|replace|flush: rewrite the table's two sets in one transaction."""
    table = _table(name)
    if table.get("const"):
        raise PfctlError(f"Operation not permitted: table <{name}> is const")
    nft = loader.Nft()
    current = {family: _set_networks(nft, table["sets"][family]) for family in ("ip", "ip6")}
    for family, name in table.get("overload", {}).items():  # sources added by overload join the table
        current[family] += [n for n in _set_networks(nft, name) if not any(n.subnet_of(c) for c in current[family])]
    given = [_network(a) for a in addresses]
    before = sum(len(v) for v in current.values())
    if op == "flush":
        new = {"ip": [], "ip6": []}
        message = f"{before} addresses deleted."
    elif op == "add":
        new = {f: list(v) for f, v in current.items()}
        added = 0
        for net in given:
            family = "ip" if net.version == 4 else "ip6"
            if not any(net.subnet_of(n) for n in new[family] if n.version == net.version):
                new[family] = [n for n in new[family] if not n.subnet_of(net)] + [net]
                added += 1
        message = f"{added}/{len(given)} addresses added."
    elif op == "delete":
        new = {f: [n for n in v if n not in given] for f, v in current.items()}
        message = f"{before - sum(len(v) for v in new.values())}/{len(given)} addresses deleted."
    elif op == "replace":
        new = {"ip": [n for n in given if n.version == 4], "ip6": [n for n in given if n.version == 6]}
        message = f"{len(given)} addresses added." if not before else f"{len(given)} addresses added.\n{before} addresses deleted."
    else:
        raise PfctlError(f"unknown table command: {op}")
    batch: list[dict[str, Any]] = []
    for family in ("ip", "ip6"):
        ref = {"family": FAMILY, "table": TABLE, "name": table["sets"][family]}
        batch.append({"flush": {"set": ref}})
        if family in table.get("overload", {}):
            batch.append({"flush": {"set": {**ref, "name": table["overload"][family]}}})
        nets = sorted(set(new[family]), key=lambda n: (int(n.network_address), n.prefixlen))
        if nets:
            batch.append({"add": {"element": {**ref, "elem": _elements(nets)}}})
    nft.run(batch)
    return message


# ----------------------------------------------------------------------------- dynamic addresses
def refresh_dynamic(view: Any = None) -> int:
    """Bring every ``(if)`` set up to date with the interfaces' addresses now (pf's dynamic
    addresses: CARP moving a VIP, DHCP renewing); one transaction; the number of sets rewritten.
    ``view`` is in pf.conf's names; by default the live interfaces, seen through the load's
    interface map. The node daemon calls it on address events with its own view."""
    from pfha.conf import InterfaceView, ast
    from pfha.nft.compile import dynamic_networks, view_as_named

    metadata = _metadata()
    entries = metadata.get("dynamic", [])
    if not entries:
        return 0
    view = view if view is not None else view_as_named(InterfaceView.live(), metadata.get("devices", {}))
    nft = loader.Nft()
    batch: list[dict[str, Any]] = []
    changed = 0
    for entry in entries:
        address = ast.DynamicAddress(entry["interface"], tuple(entry["modifiers"]), family=entry.get("af"))
        wanted = dynamic_networks(address, view, entry["family"])
        if sorted(map(str, _set_networks(nft, entry["set"]))) == sorted(map(str, wanted)):
            continue
        ref = {"family": FAMILY, "table": TABLE, "name": entry["set"]}
        batch.append({"flush": {"set": ref}})
        if wanted:
            batch.append({"add": {"element": {**ref, "elem": _elements(wanted)}}})
        changed += 1
    nft.run(batch)
    return changed


class AddressMonitor:
    """rtnetlink address notifications (IPv4 and IPv6) on a non-blocking socket, for an event
    loop's reader: :meth:`read` drains them and says whether any address was added or removed."""

    GROUPS = 0x10 | 0x100  # RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
    KINDS = (20, 21)  # RTM_NEWADDR, RTM_DELADDR

    def __init__(self) -> None:
        import socket

        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        self.sock.bind((0, self.GROUPS))

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> bool:
        import struct

        changed = False
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return changed
            except OSError:  # ENOBUFS: events were lost, so something may have changed
                changed = True
                continue
            offset = 0
            while offset + 16 <= len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                changed |= kind in self.KINDS
                offset += max((length + 3) & ~3, 16)

    def close(self) -> None:
        self.sock.close()


def watch_dynamic(stop: Any = lambda: False) -> None:
    """Refresh the ``(if)`` sets whenever an address is added or removed (pyroute2 monitor)."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.bind()
        refresh_dynamic()
        while not stop():
            events = ipr.get()
            if any(e.get("event") in ("RTM_NEWADDR", "RTM_DELADDR") for e in events):
                refresh_dynamic()
