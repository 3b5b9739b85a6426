"""The mypyc-compiled pf.conf front end prints exactly what the pure Python one prints.

setup.py may compile pfha.conf's hot modules (``pfha.conf.COMPILED_MODULES``) from the same
sources; ``PFHA_CONF_PURE=1`` forces the sources. Each mode runs in a subprocess of its own
(a process holds one or the other) over the seed configs, FreeBSD's pfctl corpus (errors
included), generated 3,000-rule rulesets and a file of broken lines, and the outputs must be
byte for byte the same. Without a compiled build (a plain ``PYTHONPATH=src`` checkout, or a
build older than the sources) the comparison is skipped, saying why.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve()


def _run(mode: str, *args: str) -> str:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO / "bench"), env.get("PYTHONPATH", "")])
    env.pop("PFHA_CONF_PURE", None)
    if mode == "pure":
        env["PFHA_CONF_PURE"] = "1"
    done = subprocess.run([sys.executable, str(HERE), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _implementation(mode: str) -> tuple[str, str]:
    first, _, path = _run(mode, "which").partition("\n")
    return first, path.strip()


def test_forcing_pure_python_imports_the_sources():
    name, path = _implementation("pure")
    assert name == "pure Python (PFHA_CONF_PURE set)"
    assert path.endswith("parser.py")


def test_pfha_version_names_the_mode():
    env = dict(os.environ, PFHA_CONF_PURE="1", PYTHONPATH=str(REPO / "src"))
    done = subprocess.run([sys.executable, "-m", "pfha.cli.main", "--version"], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip().endswith("(pf.conf front end: pure Python (PFHA_CONF_PURE set))"), done.stdout + done.stderr


def test_the_mode_reported_is_the_mode_loaded():
    name, path = _implementation("default")
    assert (name == "compiled (mypyc)") == (not path.endswith(".py")), (name, path)


@pytest.fixture(scope="module")
def compiled():
    name, _ = _implementation("default")
    if name != "compiled (mypyc)":
        pytest.skip(f"no usable compiled build of pfha.conf here: {name}; build it with "
                    "`make deps` (pip install -e .) or `python setup.py build_ext --inplace`")


def test_a_build_older_than_its_sources_is_not_used(compiled, tmp_path):
    """An edited source must win over the build made before the edit."""
    import shutil

    shutil.copytree(REPO / "src" / "pfha", tmp_path / "pfha")
    for library in (REPO / "src").glob("pfha_conf_native__mypyc*"):
        shutil.copy2(library, tmp_path / library.name)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    env.pop("PFHA_CONF_PURE", None)
    which = [sys.executable, "-c", "import pfha.conf, pfha.conf.parser as p; print(pfha.conf.implementation()); print(p.__file__)"]
    fresh = subprocess.run(which, env=env, capture_output=True, text=True, timeout=60).stdout.split("\n")
    assert fresh[0] == "compiled (mypyc)" and not fresh[1].endswith(".py"), fresh
    source = tmp_path / "pfha" / "conf" / "expand.py"
    os.utime(source, (source.stat().st_atime, source.stat().st_mtime + 3600))
    stale = subprocess.run(which, env=env, capture_output=True, text=True, timeout=60).stdout.split("\n")
    assert stale[0] == "pure Python (compiled build older than expand.py: reinstall to rebuild)", stale
    assert stale[1].endswith("parser.py")


def test_compiled_and_pure_print_the_same(compiled):
    pure = _run("pure", "dump")
    native = _run("default", "dump")
    assert pure.count("\n== ") >= 5  # the sections really ran
    if native != pure:  # pragma: no cover - shows the first difference
        for number, (a, b) in enumerate(zip(pure.splitlines(), native.splitlines()), 1):
            assert a == b, f"line {number}: pure {a!r}, compiled {b!r}"
    assert native == pure


# ---------------------------------------------------------------------------- subprocess side
def _dump() -> None:
    """Everything the front end prints for the inputs, errors included, on stdout."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import SEED_CONFIGS, SHARED

    from bench_conf import ruleset_text
    from pfha.conf import InterfaceView, ParseError, format_ruleset, parse_file, parse_text

    out = sys.stdout
    view = InterfaceView.from_specs(["xl0=203.0.113.2/24", "xl1=192.168.1.250/24", "rl0=10.10.10.250/24",
                                     "carp0=203.0.113.10/24,203.0.113.11/24", "em0=192.0.2.1/24",
                                     "em1=10.0.0.1/16", "lo0=127.0.0.1/8"])

    def show(label: str, parse) -> None:
        out.write(f"\n== {label}\n")
        try:
            out.write(format_ruleset(parse()))
        except ParseError as error:
            out.write(f"error: {error}\n" + "".join(f"{line}\n" for line in error.messages) + error.output)

    for variant in ("as-published", "corrected"):
        path = SEED_CONFIGS / variant / "pf.conf"
        if path.exists():
            show(f"seed {variant}", lambda: parse_file(str(path), view))
    for lists in (False, True):
        text = ruleset_text(3000, lists=lists)
        show(f"generated lists={lists}", lambda: parse_text(text, "gen.conf", view))
        # every fifth line broken in a different way: the error lines must match too
        lines = text.splitlines()
        for i in range(10, len(lines), 5):
            lines[i] = lines[i].replace("port", "port {", 1) if i % 3 else lines[i].replace(" to ", " too ", 1)
        show(f"broken lists={lists}", lambda: parse_text("\n".join(lines) + "\n", "bad.conf", view))
    corpus = SHARED / "conformance" / "pfctl"
    if corpus.is_dir():
        from pfha.cli import pfctl

        os.chdir(corpus)
        for case in sorted(corpus.glob("pf*.in")):
            stream = io.StringIO()
            pfctl.run(["-o", "none", "-nvf", case.name, "--freebsd-lo0"], out=stream, err=stream)
            out.write(f"\n== corpus {case.name}\n{stream.getvalue()}")


if __name__ == "__main__":
    if sys.argv[1] == "which":
        import pfha.conf
        from pfha.conf import parser

        print(pfha.conf.implementation())
        print(parser.__file__)
    else:
        _dump()
