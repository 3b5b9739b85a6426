"""Network-namespace labs: the tutorial's pair (``pfha lab``) and the topologies tests build."""
