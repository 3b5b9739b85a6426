"""State synchronisation between the two firewalls ("pfsync for Linux"); see docs/sync.md.

``wire`` (format, authentication) and ``peer`` (protocol core) are pure; ``conntrack`` (kernel
events and writes), ``transport`` (IP protocol 240 sockets) and ``runner`` (asyncio) touch the OS.
"""
