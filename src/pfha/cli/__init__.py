"""Command-line front ends: ``pfha`` (subcommands in ``commands/``) and the pfctl-compatible ``pfctl``."""
