"""pfha: the BSD high-availability firewall (pf, pflog, pfsync, CARP) on Linux.

Pure cores (``conf``, ``engine``, ``carp`` and ``sync`` protocols, ``pflog`` format) never touch
the operating system; Linux adapters live apart (``*/linux.py``, ``nft/loader.py``,
``sync/conntrack.py``, ``node``, ``lab``).
"""

__version__ = "0.1.0"
