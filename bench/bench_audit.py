"""Benchmark of the node config import and of ``pfha audit``.

1. ``import-freebsd``: the tutorial's rc.conf.primary + sysctl.conf into a node config.
2. Loading a node TOML (examples/fw1.toml).
3. Linting the tutorial's pf.conf on one node, with the engine replaying each finding's packets.
4. The whole audit of the tutorial's pair plus its host files (what the README asks for).
5. Lint cost against ruleset size: generated rulesets of 100 to 1,000 filter rules (distinct
   ports, so nothing shadows and every rule is a forwarded flow to check).

CPU time of this process (``time.process_time``), median of several runs. Prints a Markdown
table and exits 0. ``--quick`` stops the scaling series at 400 rules.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
SHARED = Path(os.environ.get("PFHA_SHARED", REPO.parent / "shared"))
if not SHARED.is_dir():
    SHARED = Path("/work/shared")

from pfha.audit.host import HostTree  # noqa: E402
from pfha.audit.lint import lint_node  # noqa: E402
from pfha.audit.nodes import discover, load_toml  # noqa: E402
from pfha.audit.runner import audit  # noqa: E402
from pfha.node import config as node_config  # noqa: E402
from pfha.node.freebsd import import_files  # noqa: E402

PUBLISHED = SHARED / "seed" / "configs" / "as-published"
FIXTURE = REPO / "tests" / "fixtures" / "tutorial-host"


def cpu_ms(function, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.process_time()
        function()
        times.append((time.process_time() - start) * 1000)
    return statistics.median(times)


def generated(folder: Path, rules: int) -> Path:
    lines = ['ext_if = "xl0"', 'int_if = "xl1"', "set skip on lo0",
             "nat on $ext_if from $int_if:network to any -> 203.0.113.10", "block log all",
             "pass quick on rl0 proto pfsync", "pass quick proto carp"]
    for i in range(rules // 2):
        port = 1000 + i
        lines.append(f"pass in quick on $int_if inet proto tcp from $int_if:network to any port {port}")
        lines.append(f"pass out quick on $ext_if inet proto tcp from 203.0.113.10 to any port {port}")
    (folder / "pf.conf").write_text("\n".join(lines) + "\n")
    text = (REPO / "examples" / "fw1.toml").read_text().replace('"/etc/pfha/pf.conf"', '"pf.conf"')
    (folder / "fw1.toml").write_text(text)
    return folder / "fw1.toml"


def main() -> int:
    quick = "--quick" in sys.argv
    rows = []
    rows.append(("import-freebsd (rc.conf.primary + sysctl.conf)",
                 cpu_ms(lambda: import_files(PUBLISHED / "rc.conf.primary", PUBLISHED / "sysctl.conf"), 20)))
    rows.append(("load a node TOML (examples/fw1.toml)", cpu_ms(lambda: node_config.load(REPO / "examples" / "fw1.toml"), 20)))
    nodes = discover([PUBLISHED])
    rows.append(("lint the tutorial's pf.conf on one node (with engine proofs)", cpu_ms(lambda: lint_node(nodes[0], nodes[1:]))))
    rows.append(("full audit: as-published pair + tutorial host files",
                 cpu_ms(lambda: audit(discover([PUBLISHED], FIXTURE), HostTree(FIXTURE)), 3)))
    sizes = (100, 200, 400) if quick else (100, 200, 400, 1000)
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            node = load_toml(generated(Path(folder), size))
            rows.append((f"lint a generated ruleset of {size} filter rules", cpu_ms(lambda: lint_node(node), 1)))
    print("| what | CPU ms (median) |")
    print("|---|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
