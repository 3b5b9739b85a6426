"""The optimized ruleset in the kernel: pfctl -f loads pfctl's automatic tables and the
reordered rules, and the kernel still decides as the reference engine does on the ruleset as
written (the differential test bed of test_nft_differential)."""

from __future__ import annotations

import pytest

from conftest import is_root
from test_nft_differential import attempts_for, bed, compare  # noqa: F401 - bed is a fixture

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces and nftables")

# six sources differing only in address: one rule on <__automatic_...> once optimized
BLOCKED = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4", "198.51.100.5", "198.51.100.7"]
TEXT = f"""
pass all
block in quick on xl0 proto tcp from {{ {' '.join(BLOCKED)} }} to any port 25
pass in on xl0 proto tcp to any port 8000
pass in on xl0 proto tcp to any port 8081
block in on xl0 proto tcp to any port 8000
"""


def test_automatic_table_and_reordered_rules_in_the_kernel(bed):  # noqa: F811
    import io
    import os

    from pfha.cli import pfctl

    path = os.path.join(bed.state_dir, "check.conf")
    with open(path, "w") as out:
        out.write(TEXT)
    shown = io.StringIO()
    assert pfctl.run(["-nvf", path, *bed.specs], shown, io.StringIO()) == 0
    assert "table <__automatic_0> const { " + " ".join(BLOCKED) + " }" in shown.getvalue()
    cases = [("tcp", "198.51.100.7", "203.0.113.10", 25), ("tcp", "198.51.100.200", "203.0.113.10", 25),
             ("tcp", "198.51.100.7", "203.0.113.10", 8000), ("tcp", "198.51.100.7", "203.0.113.10", 8081)]
    assert compare(bed, TEXT, attempts_for(cases)) == []
    rules = bed.pfctl(bed.fw, "-sr").stdout
    assert "block drop in quick on xl0 inet proto tcp from <__automatic_" in rules  # the kernel's name: random hex
    assert "__automatic_0>" not in rules


PROFILED = """
pass in quick on xl0 proto tcp to any port 25
pass in quick on xl0 proto tcp to any port 8000
pass in quick on xl0 proto tcp to any port 8081
pass all
"""


def test_profile_orders_quick_rules_by_the_loaded_rules_counters(bed):  # noqa: F811
    import os

    from pfha.nft.differential import kernel_outcomes

    path = os.path.join(bed.state_dir, "profiled.conf")
    with open(path, "w") as out:
        out.write(PROFILED)
    bed.pfctl(bed.fw, *bed.specs, "-o", "none", "-f", path)
    bed.pfctl(bed.fw, "-F", "states")
    cases = [("tcp", "198.51.100.7", "203.0.113.10", 8081)] * 3 + [("tcp", "198.51.100.7", "203.0.113.10", 8000)]
    assert all(o.delivered for o in kernel_outcomes(bed, attempts_for(cases)))
    basic = bed.pfctl(bed.fw, *bed.specs, "-o", "basic", "-nvf", path).stdout.splitlines()
    profiled = bed.pfctl(bed.fw, *bed.specs, "-o", "profile", "-nvf", path)
    assert "warning" not in profiled.stderr
    ports = [line.rsplit("port = ", 1)[1].split(" ")[0] for line in profiled.stdout.splitlines() if "quick" in line]
    assert ports == ["8081", "8000", "smtp"]  # most packets first
    assert [line for line in basic if "quick" in line][0].endswith("port = smtp flags S/SA keep state")
