"""ALTQ definitions: ``altq on IF SCHED ... queue { ... }`` and ``queue NAME ...``.

pfctl prints them while parsing (parse.y expand_altq/expand_queue, pfctl_altq.c print_altq and
print_queue). pfha parses and prints them so rulesets using them load and round-trip; the data
plane has no ALTQ (see docs/configuration.md). The token bucket size is computed as
pfctl_altq.c does from the interface bandwidth and an MTU of 1500.
"""

from __future__ import annotations

from pfha.conf.ast import Queue

DEFAULT_PRIORITY = 1
DEFAULT_QLIMIT = 50
SCHEDULERS = ("cbq", "priq", "hfsc", "fairq", "codel")
_SCHED_FLAGS = ("red", "ecn", "rio", "codel", "cleardscp", "flowvalve", "borrow", "wrr", "efficient", "root", "default")
# print order of cbq/priq/fairq flags (pfctl_altq.c print_*_opts)
_FLAG_ORDER = {
    "cbq": ("red", "ecn", "rio", "codel", "cleardscp", "flowvalve", "borrow", "wrr", "efficient", "root", "default"),
    "priq": ("red", "ecn", "rio", "codel", "cleardscp", "default"),
    "fairq": ("red", "ecn", "rio", "codel", "cleardscp", "default"),
    "hfsc": ("red", "ecn", "rio", "codel", "cleardscp", "default"),
    "codel": (),
}


def rate2str(rate: float) -> str:
    units = " KMG"
    i = 0
    while rate >= 1000 and i < 3:
        rate /= 1000
        i += 1
    if int(rate * 100) % 100:
        return "%.2f%cb" % (rate, units[i])
    return "%d%cb" % (int(rate), units[i])


def parse_bandwidth(p, text: str) -> tuple[int | None, int | None]:
    """``100Kb`` -> (100000, None); ``60%`` -> (None, 60)."""
    if text.endswith("%"):
        try:
            value = int(text[:-1])
        except ValueError:
            p._syntax()
        if not 0 < value <= 100:
            p._error("bandwidth percent out of range")
        return None, value
    scale = 1
    body = text
    for suffix, mult in (("Gb", 10**9), ("Mb", 10**6), ("Kb", 10**3), ("b", 1)):
        if text.endswith(suffix):
            body, scale = text[: -len(suffix)], mult
            break
    try:
        value = float(body)  # type: ignore[assignment]
    except ValueError:
        p._error(f"unknown unit {text}")
    return int(value * scale), None


def _sched(p) -> tuple[str, tuple[str, ...]]:
    name = p._string()
    if name not in SCHEDULERS:
        p._syntax()
    flags: list[str] = []
    if p.tok.kind == "(":
        p._advance()
        while p.tok.kind != ")":
            word = p._string()
            if word not in _SCHED_FLAGS and word not in ("linkshare", "realtime", "upperlimit", "hogs", "buckets"):
                p._syntax()
            flags.append(word)
            p._accept_kind(",")
        p._advance()
    return name, tuple(flags)


def _sched_text(name: str, flags: tuple[str, ...]) -> str:
    shown = [f for f in _FLAG_ORDER.get(name, ()) if f in flags]
    if shown:
        return f"{name}( {' '.join(shown)} ) "
    return ""


def _queue_names(p) -> tuple[str, ...]:
    if p.tok.kind == "{":
        p._advance()
        out = []
        while p.tok.kind != "}":
            out.append(p._string())
            p._accept_kind(",")
        p._advance()
        return tuple(out)
    return (p._string(),)


def _tbrsize(bandwidth: int, mtu: int = 1500) -> int:
    if bandwidth <= 1_000_000:
        size = 1
    elif bandwidth <= 10_000_000:
        size = 4
    elif bandwidth <= 200_000_000:
        size = 8
    elif bandwidth <= 2_500_000_000:
        size = 24
    else:
        size = 128
    return size * mtu


def parse_altq(p, tok) -> None:
    p._expect("on")
    ifname = p._string()
    sched = "cbq"
    flags: tuple[str, ...] = ()
    bandwidth = percent = None
    qlimit = tbrsize = None
    children: tuple[str, ...] = ()
    explicit_sched = False
    while p.tok.kind == "word":
        w = p.tok.value
        if w in SCHEDULERS:
            sched, flags = _sched(p)
            explicit_sched = True
        elif w == "bandwidth":
            p._advance()
            bandwidth, percent = parse_bandwidth(p, p._string())
        elif w == "qlimit":
            p._advance()
            qlimit = p._number(0, 0xFFFF, "qlimit")
        elif w == "tbrsize":
            p._advance()
            tbrsize = p._number(0, 0xFFFFFFFF, "tbrsize")
        elif w == "queue":
            p._advance()
            children = _queue_names(p)
        else:
            p._syntax()
    p._end_of_statement()
    if bandwidth is None:
        bandwidth = 100_000_000 if percent is None else 100_000_000 * percent // 100
    if tbrsize is None:
        tbrsize = _tbrsize(bandwidth)
    text = f"altq on {ifname} "
    text += _sched_text(sched, flags) or f"{sched} "
    text += f"bandwidth {rate2str(bandwidth)} "
    if qlimit is not None and qlimit != DEFAULT_QLIMIT:
        text += f"qlimit {qlimit} "
    text += f"tbrsize {tbrsize} "
    if children:
        text += "queue { " + " ".join(children) + " }"
    p.altq[ifname] = {"sched": sched, "bandwidth": bandwidth}
    for child in children:
        p.queue_defs[child] = {"parent": None, "interface": ifname, "sched": sched}
    q = Queue(origin=p._origin(tok.line), name="", interface=ifname, scheduler=sched, bandwidth=bandwidth,
              tbrsize=tbrsize, qlimit=qlimit, children=children, options=flags, text=text.rstrip(" ") if not children else text)
    p.queues.append(q)
    p.definitions.append(q)


def parse_queue(p, tok) -> None:
    name = p._string()
    ifname = None
    bandwidth = percent = None
    priority = qlimit = None
    sched_flags: tuple[str, ...] = ()
    sched = None
    children: tuple[str, ...] = ()
    while True:
        if p.tok.kind == "{":
            children = _queue_names(p)
            continue
        if p.tok.kind != "word":
            break
        w = p.tok.value
        if w == "on":
            p._advance()
            ifname = p._string()
        elif w == "bandwidth":
            p._advance()
            bandwidth, percent = parse_bandwidth(p, p._string())
        elif w == "priority":
            p._advance()
            priority = p._number(0, 255, "priority")
        elif w == "qlimit":
            p._advance()
            qlimit = p._number(0, 0xFFFF, "qlimit")
        elif w in SCHEDULERS:
            sched, sched_flags = _sched(p)
        else:
            p._syntax()
    p._end_of_statement()
    parent = p.queue_defs.get(name, {})
    root_sched = sched or parent.get("sched") or "cbq"
    for child in children:
        p.queue_defs[child] = {"parent": name, "interface": parent.get("interface"), "sched": root_sched}
    text = f"queue {name} "
    if root_sched in ("cbq", "hfsc", "fairq"):
        if percent is not None:
            if percent < 100:
                text += f"bandwidth {percent}% "
        elif bandwidth is not None:
            text += f"bandwidth {rate2str(bandwidth)} "
    if priority is not None and priority != DEFAULT_PRIORITY:
        text += f"priority {priority} "
    if qlimit is not None and qlimit != DEFAULT_QLIMIT:
        text += f"qlimit {qlimit} "
    text += _sched_text(root_sched, sched_flags)
    if children:
        text += "{ " + " ".join(children) + " }"
    q = Queue(origin=p._origin(tok.line), name=name, interface=ifname or parent.get("interface"), scheduler=root_sched,
              bandwidth=bandwidth, bandwidth_percent=percent, qlimit=qlimit, priority=priority, children=children,
              parent=parent.get("parent"), options=sched_flags, text=text)
    p.queues.append(q)
    p.definitions.append(q)
