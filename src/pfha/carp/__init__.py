"""CARP: the Common Address Redundancy Protocol, byte-compatible with BSD and ucarp.

``wire`` (packets, checksum, HMAC) and ``machine`` (the per-vhid state machine, the node-wide
demotion counter) are pure; ``linux`` is the only module that touches the OS, and ``runner``
is the asyncio glue behind ``pfha carp run``. See docs/carp.md.
"""
