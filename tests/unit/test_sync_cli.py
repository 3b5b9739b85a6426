"""``pfha sync status`` reads the status file ``pfha sync run`` writes; user errors are one line."""

import json

from pfha.cli.main import main
from pfha.sync.peer import Config, Peer
from pfha.sync.simnet import KEYRING


def _status_file(tmp_path):
    peer = Peer(Config(node_id=0xABCDEF01, keyring=KEYRING), epoch=5, now=0.0)
    status = peer.status(1.0)
    status.update({"time": 0, "device": "pfsync0", "destination": "224.0.0.240", "mark_mask": 3,
                   "intake": {}, "kernel": {}, "transport": {}})
    path = tmp_path / "pfsync0.json"
    path.write_text(json.dumps(status))
    return path


def test_status_summary_and_json(tmp_path, capsys):
    path = _status_file(tmp_path)
    assert main(["sync", "status", "--status-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "syncdev pfsync0 -> 224.0.0.240 node abcdef01" in out
    assert "bulk update: in progress" in out and "rejects: none" in out
    assert main(["sync", "status", "--json", "--status-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out)["node"] == "abcdef01"


def test_status_without_a_daemon_is_one_line_error(tmp_path, capsys):
    assert main(["sync", "status", "--status-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("pfha: no sync status in") and err.count("\n") == 1


def test_run_with_a_bad_key_file_is_one_line_error(tmp_path, capsys):
    key = tmp_path / "key"
    key.write_text("short")
    assert main(["sync", "run", "--dev", "lo", "--key-file", str(key)]) == 1
    assert "shorter than 16 bytes" in capsys.readouterr().err
    assert main(["sync", "run", "--dev", "lo", "--key-file", str(tmp_path / "missing")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_sync_without_a_subcommand_is_a_usage_error(capsys):
    assert main(["sync"]) == 1
    assert "usage: pfha sync" in capsys.readouterr().err
