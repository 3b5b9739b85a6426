"""The kernel data plane: pf rulesets compiled to nftables, loaded atomically, read back.

``compile`` is pure (Ruleset -> nftables JSON + warnings); ``loader`` and ``conntrack`` talk
to the kernel of the current network namespace; ``status`` turns kernel objects back into
pfctl's views (rules with counters, states, tables).
"""

TABLE = "pfha"
FAMILY = "inet"
