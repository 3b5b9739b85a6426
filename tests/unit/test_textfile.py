"""Reading the user's text files: every failure is one line naming the file."""

from __future__ import annotations

import pytest

from pfha.errors import SourceError
from pfha.node import config as node_config
from pfha.textfile import read_text


def test_reads_utf8(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("pass all\n", encoding="utf-8")
    assert read_text(path) == "pass all\n"


def test_missing_file_names_it(tmp_path):
    with pytest.raises(SourceError) as caught:
        read_text(tmp_path / "nope", "scenario")
    assert str(caught.value) == f"{tmp_path / 'nope'}: cannot read scenario: No such file or directory"


def test_binary_file_is_not_a_traceback(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"[node]\n\x01\xff\xfe")
    with pytest.raises(SourceError, match=r"junk: cannot read: not UTF-8 text \(byte 0xff at offset 8\)"):
        read_text(path)
    with pytest.raises(node_config.NodeConfigError, match="cannot read node config: not UTF-8"):
        node_config.load(path)
