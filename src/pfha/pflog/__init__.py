"""pflog: FreeBSD's pf log format (``struct pfloghdr``), pcap files, and the Linux NFLOG source.

``format`` and ``pcap`` are pure (bytes in, values out); only ``linux`` touches the OS.
"""
