"""The sync daemon's CPU scheduling class: ``rr:PRIO``, ``fifo:PRIO`` or ``other``.

conntrackd puts itself into SCHED_RR at priority 99 unless told otherwise (its ``Scheduler``
section); pfha's sync does the same by default, for the same reason: its job is to keep up with
the kernel's conntrack events while the machine is busy, and an ordinary process gets only its
fair share of a loaded CPU (docs/sync.md, "Scheduling"; benchmarks-sync.md has the figures).

This module only parses the setting and applies it to the calling process with
``os.sched_setscheduler``; it decides nothing about the protocol.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from pfha.errors import PfhaError

DEFAULT = "rr:99"  # conntrackd 1.4.7's default (SCHED_RR, priority 99)
_POLICIES = {"rr": "SCHED_RR", "fifo": "SCHED_FIFO", "other": "SCHED_OTHER"}


class SchedError(PfhaError):
    """A scheduling setting that is malformed or that the system refuses."""


class Sched(NamedTuple):
    policy: str  # "rr", "fifo" or "other"
    priority: int  # 1-99 for rr/fifo, 0 for other

    def __str__(self) -> str:
        return self.policy if self.policy == "other" else f"{self.policy}:{self.priority}"


def parse(text: str) -> Sched:
    """``rr:99``, ``fifo:50``, ``other`` (``rr`` alone means ``rr:99``)."""
    name, _, prio = text.strip().lower().partition(":")
    if name not in _POLICIES:
        raise SchedError(f"scheduling {text!r}: expected rr:PRIORITY, fifo:PRIORITY or other")
    if name == "other":
        if prio not in ("", "0"):
            raise SchedError(f"scheduling {text!r}: SCHED_OTHER takes no priority")
        return Sched("other", 0)
    try:
        priority = int(prio) if prio else 99
    except ValueError:
        raise SchedError(f"scheduling {text!r}: priority {prio!r} is not a number") from None
    if not 1 <= priority <= 99:
        raise SchedError(f"scheduling {text!r}: real-time priority must be 1-99")
    return Sched(name, priority)


def apply(sched: Sched, pid: int = 0) -> None:
    """Put ``pid`` (0: the calling thread) into ``sched``. With SCHED_RESET_ON_FORK: threads
    and processes it starts later (``nft`` runs, ``asyncio.to_thread`` workers) are ordinary
    again, so only the event loop itself runs in real time."""
    policy = getattr(os, _POLICIES[sched.policy])
    if sched.policy != "other":
        policy |= getattr(os, "SCHED_RESET_ON_FORK", 0x40000000)
    try:
        os.sched_setscheduler(pid, policy, os.sched_param(sched.priority))
    except PermissionError:
        raise SchedError(
            f"cannot set scheduling {sched}: not permitted (needs root or CAP_SYS_NICE, and, under a "
            f"cgroup with real-time group scheduling, a real-time budget: cpu.rt_runtime_us; "
            f"systemd: CPUSchedulingPolicy= in the unit); use --sched other to run without it") from None
    except OSError as error:
        raise SchedError(f"cannot set scheduling {sched}: {error.strerror}") from None


def current(pid: int = 0) -> Sched:
    """The scheduling class ``pid`` runs in now (for the status)."""
    policy = os.sched_getscheduler(pid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0x40000000)
    names = {getattr(os, v): k for k, v in _POLICIES.items()}
    return Sched(names.get(policy, "other"), os.sched_getparam(pid).sched_priority)
