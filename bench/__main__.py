"""Run every benchmark script in this folder and collect their Markdown tables.

Each ``bench_<area>.py`` is a standalone script that prints a Markdown table (figures side by
side with the real peers, as ratios where the machine's noise matters) and exits 0. This runner
executes them one at a time (they compete for the same two cores otherwise), writes each output
to ``bench/results/<area>.md`` and the whole run to ``bench/results/ALL.md``.

Usage: ``python -m bench [AREA ...] [-- ARGS passed to each script]``, e.g. ``python -m bench carp -- --quick``.
"""

from __future__ import annotations

import datetime as _dt
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    scripts = sorted(HERE.glob("bench_*.py"))
    if argv:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in argv]
    RESULTS.mkdir(exist_ok=True)
    failed = []
    sections = [f"# pfha benchmarks, {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC\n"]
    for script in scripts:
        area = script.stem.removeprefix("bench_")
        print(f"== {area} ==", flush=True)
        proc = subprocess.run([sys.executable, str(script), *extra], capture_output=True, text=True)
        out = proc.stdout
        if proc.returncode != 0:
            failed.append(area)
            out += f"\n**{area} benchmark failed (exit {proc.returncode})**\n\n```\n{proc.stderr[-3000:]}\n```\n"
        print(out, flush=True)
        (RESULTS / f"{area}.md").write_text(out)
        sections.append(f"## {area}\n\n{out}\n")
    (RESULTS / "ALL.md").write_text("\n".join(sections))
    print(f"tables written to {RESULTS}/", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
