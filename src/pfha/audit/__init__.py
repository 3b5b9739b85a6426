"""``pfha audit``: find a pf firewall pair's silent failures before traffic does.

Three families of checks, each returning :class:`~pfha.audit.findings.Finding` values:

- :mod:`pfha.audit.lint` - the ruleset against itself and against the node it runs on;
- :mod:`pfha.audit.pair` - the two nodes against each other;
- :mod:`pfha.audit.host` - the host against the tutorial's hardening steps, and
  :mod:`pfha.audit.crosscheck` - sshd and hosts.allow against what pf lets in.

:func:`audit` runs what applies to what it is given. The package only reads files.
"""

from __future__ import annotations

from pfha.audit.findings import Finding, Place, Report, Severity
from pfha.audit.runner import audit

__all__ = ["Finding", "Place", "Report", "Severity", "audit"]
