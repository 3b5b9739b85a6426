"""FreeBSD's pfctl regression corpus, run the way FreeBSD's harness runs it.

For every case in ``shared/conformance/pfctl``: cwd is that folder, the command is ``pfctl -o
none -nvf pfNNNN.in``, stdout and stderr are captured as one stream; an ``.ok`` case must print
the ``.ok`` text exactly and, fed the ``.ok`` itself, print it again (except the interface
cases); a ``.fail`` case's output must contain the ``.fail`` pattern (an extended regex).

The host is FreeBSD's as far as the corpus can tell: lo0 with ::1, fe80::1 and 127.0.0.1 and,
for cases 1057-1064, ``vlanNNNN`` with 203.0.113.5/30 and 2001:db8::203.0.113.5/126.

PASSING pins the cases known to pass: one of them failing is a regression. A case that passes
but is not listed fails too, so the list is kept exact.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import pytest

from pfha.cli import pfctl

# the same place tests/conftest.py's SHARED points at
_REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("PFHA_SHARED", _REPO.parent / "shared")) / "conformance" / "pfctl"

INTERFACE_CASES = range(1057, 1065)

PASSING = frozenset(
    """
    0001 0002 0004 0005 0007 0010 0011 0013 0014 0016 0019 0020 0023 0026 0028 0031 0032 0034
    0035 0038 0040 0041 0047 0049 0050 0053 0056 0061 0067 0070 0071 0077 0079 0082 0085 0088
    0089 0091 0092 0094 0097 0098 0100 0101 0104 1001 1003 1004 1006 1007 1009 1010 1012 1013
    1015 1016 1018 1019 1021 1022 1024 1025 1027 1028 1030 1031 1033 1034 1036 1037 1039 1040
    1042 1043 1045 1046 1048 1049 1051 1052 1054 1055 1057 1058 1060 1061 1063 1064 1066 1067
    1069 1070 1072 1073 1075 1076 1078 1079
    """.split()
)


def _cases() -> list[str]:
    if not CORPUS.is_dir():
        return []
    return sorted(p.stem[2:] for p in CORPUS.glob("pf*.in"))


def run_pfctl(case: int, filename: str) -> str:
    """pfctl -o none -nvf FILE in the corpus folder; stdout+stderr as one stream."""
    argv = ["-o", "none", "-nvf", filename, "--freebsd-lo0"]
    if case in INTERFACE_CASES:
        argv += ["--if", f"vlan{case}=203.0.113.5/30,2001:db8::203.0.113.5/126"]
    stream = io.StringIO()
    cwd = os.getcwd()
    os.chdir(CORPUS)
    try:
        pfctl.run(argv, out=stream, err=stream)
    finally:
        os.chdir(cwd)
    return stream.getvalue()


def case_passes(number: str) -> tuple[bool, str]:
    case = int(number)
    stem = CORPUS / f"pf{number}"
    output = run_pfctl(case, f"pf{number}.in")
    ok = stem.with_suffix(".ok")
    if ok.exists():
        expected = ok.read_text()
        if output != expected:
            return False, f"output differs:\n{output}\n--- expected:\n{expected}"
        if case not in INTERFACE_CASES:
            again = run_pfctl(case, f"pf{number}.ok")
            if again != expected:
                return False, f".ok fed back differs:\n{again}\n--- expected:\n{expected}"
        return True, ""
    pattern = stem.with_suffix(".fail").read_text()
    if re.search(pattern, output) is None:
        return False, f"pattern {pattern!r} not found in:\n{output}"
    return True, ""


@pytest.mark.parametrize("number", _cases())
def test_case(number: str) -> None:
    passed, why = case_passes(number)
    if number in PASSING:
        assert passed, why
    else:
        assert not passed, f"pf{number} now passes: add it to PASSING"


def test_corpus_present_and_pass_rate() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found at {CORPUS}")
    cases = _cases()
    assert len(cases) == 98
    assert len(PASSING & set(cases)) / len(cases) >= 0.9
