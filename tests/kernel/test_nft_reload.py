"""Reloading the ruleset under traffic: one transaction, established connections survive,
nothing either ruleset blocks gets through meanwhile, and a refused load changes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import SEED_CONFIGS, is_root

pytestmark = pytest.mark.skipif(not is_root(), reason="needs root: network namespaces and nftables")

CORRECTED = SEED_CONFIGS / "corrected" / "pf.conf"


@pytest.fixture(scope="module")
def bed():
    if not CORRECTED.exists():
        pytest.skip(f"tutorial configs not found at {CORRECTED}")
    from pfha.nft import testbed

    bed = testbed.build("nftr")
    try:
        bed.specs = [f"--if={s}" for s in testbed.VIEW_SPECS]
        bed.pfctl(bed.fw, *bed.specs, "-f", str(CORRECTED))
        bed.serve(bed.ext, ["tcp:198.51.100.80:80", "tcp:198.51.100.80:8080"])
        bed.serve(bed.lan, ["tcp:192.168.1.80:25", "tcp:192.168.1.80:8082"])
        bed.serve(bed.fw, ["tcp:203.0.113.10:22"])
        yield bed
    finally:
        bed.close()


def _variant(tmp_path) -> str:
    """The same ruleset plus one more block rule: a different ruleset, same policy for our flows."""
    path = tmp_path / "pf.conf"
    path.write_text(CORRECTED.read_text() + "\nblock in quick on $ext_if proto tcp from any to any port 6666\n")
    return str(path)


def test_reload_under_traffic_drops_no_connection_and_leaks_nothing(bed, tmp_path):
    variant = _variant(tmp_path)
    streams = [
        bed.python(bed.lan, "stream", "192.168.1.100", "198.51.100.80", "80", "8", "0.02", stdout=subprocess.PIPE, text=True),
        bed.python(bed.ext, "stream", "198.51.100.7", "203.0.113.10", "25", "8", "0.02", stdout=subprocess.PIPE, text=True),
    ]
    leaks: list[str] = []
    stop = threading.Event()

    def probe_blocked() -> None:
        while not stop.is_set():
            for ns, src, dst, port in ((bed.ext, "198.51.100.7", "203.0.113.10", 22), (bed.lan, "192.168.1.100", "198.51.100.80", 8080),
                                       (bed.ext, "198.51.100.7", "203.0.113.10", 8082)):
                result = bed.probe(ns, "tcp", src, dst, port, timeout=0.5)
                if result != "TIMEOUT":
                    leaks.append(f"{src}->{dst}:{port} {result}")

    prober = threading.Thread(target=probe_blocked)
    prober.start()
    try:
        time.sleep(0.5)
        for i in range(6):
            bed.pfctl(bed.fw, *bed.specs, "-f", variant if i % 2 else str(CORRECTED))
            time.sleep(0.3)
    finally:
        stop.set()
        prober.join()
    results = [s.communicate(timeout=60)[0].strip() for s in streams]
    for result in results:
        assert result.startswith("OK "), results
        assert int(result.split()[1]) > 50
    assert leaks == []


def test_refused_load_changes_nothing(bed):
    before = bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout
    code = (
        "from pfha.nft import loader\n"
        "from pfha.nft.operate import compile_file\n"
        "from pfha.nft.testbed import tutorial_view\n"
        f"c = compile_file({str(CORRECTED)!r}, tutorial_view())\n"
        "bad = {'add': {'rule': {'family': 'inet', 'table': 'pfha', 'chain': 'filter_in', 'expr': [{'match': {'op': '==', 'left': {'payload': {'protocol': 'ip', 'field': 'saddr'}}, 'right': '@no_such_set'}}, {'accept': None}]}}}\n"
        "try:\n"
        "    loader.load(c.commands + [bad], c.metadata)\n"
        "except loader.NftError as e:\n"
        "    print('refused:', e)\n"
    )
    from pfha.nft import testbed

    out = subprocess.run(bed.fw.argv([sys.executable, "-c", code]), env={**os.environ, "PYTHONPATH": testbed.SRC},
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("refused:"), out.stderr
    assert bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout == before
    assert bed.probe(bed.ext, "tcp", "198.51.100.7", "203.0.113.10", 22) == "TIMEOUT"


def test_dry_run_never_touches_the_kernel(bed, tmp_path):
    before = bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout
    bed.pfctl(bed.fw, *bed.specs, "-n", "-f", _variant(tmp_path))
    assert bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout == before
    broken = tmp_path / "broken.conf"
    broken.write_text("pass in on xl0 proto tcp from any to any port 99999\n")
    result = bed.pfctl(bed.fw, "-f", str(broken), check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert bed.fw.exec("nft", "list", "table", "inet", "pfha").stdout == before
