"""The nftables log prefix that carries pf's log metadata from a rule to pflogd.

The compiler writes ``log prefix "pf:<rulenr>:<subrulenr>:<action>:<dir>:<reason>:<rid>:<ruleset>"
group N`` on every logging rule; pflogd parses it back into a pfloghdr (pf-semantics.md §5.2).
This module is the single definition of that contract, used by both sides.

Pure: strings in, values out.
"""

from __future__ import annotations

from dataclasses import dataclass

from pfha.pflog.format import NO_SUBRULE, PflogHeader

MAGIC = "pf"
MAX_PREFIX = 127  # NF_LOG_PREFIXLEN (128) minus the NUL; nft refuses longer prefixes


class PrefixError(ValueError):
    """Not one of our prefixes (another program's log rule), or malformed."""


@dataclass(frozen=True, slots=True)
class LogPrefix:
    """What a logging rule knows at compile time about the packets it will log."""

    rulenr: int
    action: int
    direction: int
    reason: int = 0
    subrulenr: int = NO_SUBRULE
    ridentifier: int = 0
    ruleset: str = ""

    def encode(self) -> str:
        sub = -1 if self.subrulenr == NO_SUBRULE else self.subrulenr
        text = f"{MAGIC}:{self.rulenr}:{sub}:{self.action}:{self.direction}:{self.reason}:{self.ridentifier}:{self.ruleset}"
        if len(text.encode()) > MAX_PREFIX:
            raise PrefixError(f"log prefix longer than {MAX_PREFIX} bytes: {text!r}")
        return text

    @classmethod
    def decode(cls, text: str) -> LogPrefix:
        fields = text.split(":", 7)
        if len(fields) < 7 or fields[0] != MAGIC:
            raise PrefixError(f"not a pf log prefix: {text!r}")
        try:
            rulenr, sub, action, direction, reason, rid = (int(f) for f in fields[1:7])
        except ValueError:
            raise PrefixError(f"malformed pf log prefix: {text!r}") from None
        return cls(
            rulenr=rulenr,
            action=action,
            direction=direction,
            reason=reason,
            subrulenr=NO_SUBRULE if sub < 0 else sub,
            ridentifier=rid,
            ruleset=fields[7] if len(fields) > 7 else "",
        )

    def header(self, ifname: str, af: int) -> PflogHeader:
        """The pfloghdr for a packet logged by this rule on ``ifname``."""
        return PflogHeader(
            action=self.action,
            reason=self.reason,
            ifname=ifname,
            direction=self.direction,
            rulenr=self.rulenr,
            subrulenr=self.subrulenr,
            af=af,
            ruleset=self.ruleset,
            ridentifier=self.ridentifier,
        )
