"""A pfha node: its configuration (TOML schema, FreeBSD import) and the daemon that runs it."""
