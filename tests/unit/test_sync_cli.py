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


def test_status_shows_the_refresh_sweeps(tmp_path, capsys):
    from pfha.sync.refresh import Refresher
    from pfha.sync.simnet import make_state

    path = _status_file(tmp_path)
    refresher = Refresher()
    refresher.begin()
    refresher.end([r for r, n in ((make_state(1), 4), (make_state(2), None)) if refresher.moved(r[:40], n)])
    status = json.loads(path.read_text())
    status["refresh"] = dict(refresher.status(), interval=10.0)
    path.write_text(json.dumps(status))
    assert main(["sync", "status", "--status-file", str(path)]) == 0
    out = capsys.readouterr().out
    assert "refresh: every 10s, 1 sweeps, 1 states sent again, 1 without counters (nf_conntrack_acct off)" in out
    status["refresh"] = dict(refresher.status(), interval=0.0)
    path.write_text(json.dumps(status))
    assert main(["sync", "status", "--status-file", str(path)]) == 0
    assert "refresh: off" in capsys.readouterr().out


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


def test_sched_settings_parse_and_bad_ones_are_one_line_errors(tmp_path, capsys):
    from pfha.sync import sched

    assert sched.parse("rr:99") == ("rr", 99) and str(sched.parse("RR")) == "rr:99"
    assert sched.parse("fifo:10") == ("fifo", 10) and sched.parse("other") == ("other", 0)
    for bad in ("rr:0", "rr:100", "idle", "rr:x", "other:5"):
        try:
            sched.parse(bad)
        except sched.SchedError:
            continue
        raise AssertionError(bad)
    key = tmp_path / "key"
    key.write_text("00" * 32)
    key.chmod(0o600)
    assert main(["sync", "run", "--dev", "lo", "--key-file", str(key), "--sched", "rr:150"]) == 1
    err = capsys.readouterr().err
    assert "real-time priority must be 1-99" in err and err.count("\n") == 1


def test_sched_not_permitted_is_a_clear_error():
    """Run unprivileged (nobody, no real-time budget): SCHED_RR is refused with the way out."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = ("import os, resource\n"
            "resource.setrlimit(resource.RLIMIT_RTPRIO, (0, 0))\n"
            "if os.geteuid() == 0:\n"
            "    os.setgroups([]); os.setgid(65534); os.setuid(65534)\n"
            "from pfha.sync import sched\n"
            "try:\n"
            "    sched.apply(sched.parse('rr:99'))\n"
            "except sched.SchedError as error:\n"
            "    print(error)\n"
            "print(sched.current())\n")
    src = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                         env=dict(os.environ, PYTHONPATH=src)).stdout
    assert "cannot set scheduling rr:99: not permitted" in out and "--sched other" in out
    assert out.strip().endswith("other")


def test_node_config_sync_sched(tmp_path):
    import pytest

    from pfha.node import config as nc
    from pfha.node.toml_out import dumps

    base = '[node]\nname = "fw1"\npf_conf = "/etc/pf.conf"\n\n[interfaces]\nxl0 = "eth0"\n\n[sync]\ndevice = "xl0"\n'
    assert nc.loads(base, tmp_path / "n.toml").sync.sched is None  # the default: rr:99
    config = nc.loads(base + 'sched = "RR:50"\n', tmp_path / "n.toml")
    assert config.sync.sched == "rr:50"
    assert nc.loads(dumps(config), tmp_path / "again.toml") == config
    with pytest.raises(nc.NodeConfigError, match=r"sync.sched: .*expected rr:PRIORITY"):
        nc.loads(base + 'sched = "idle"\n', tmp_path / "n.toml")


def test_node_config_sync_refresh(tmp_path):
    import pytest

    from pfha.node import config as nc
    from pfha.node.toml_out import dumps

    base = '[node]\nname = "fw1"\npf_conf = "/etc/pf.conf"\n\n[interfaces]\nxl0 = "eth0"\n\n[sync]\ndevice = "xl0"\n'
    assert nc.loads(base, tmp_path / "n.toml").sync.refresh is None  # the default: pfha.sync.runner.REFRESH
    for text, value in (("0", 0.0), ("2.5", 2.5), ("30", 30.0)):
        config = nc.loads(base + f"refresh = {text}\n", tmp_path / "n.toml")
        assert config.sync.refresh == value
        assert nc.loads(dumps(config), tmp_path / "again.toml") == config
    for bad in ("-1", '"often"', "true"):
        with pytest.raises(nc.NodeConfigError, match=r"sync.refresh: must be a number of seconds"):
            nc.loads(base + f"refresh = {bad}\n", tmp_path / "n.toml")


def test_sync_run_refuses_a_negative_refresh(tmp_path, capsys):
    key = tmp_path / "key"
    key.write_text("00112233445566778899aabbccddeeff\n")
    key.chmod(0o600)
    assert main(["sync", "run", "--dev", "lo", "--key-file", str(key), "--refresh", "-1"]) != 0
    assert "--refresh: seconds must be 0 (off) or more" in capsys.readouterr().err


def test_status_dir_of_a_node_skips_its_other_json_files(tmp_path, capsys):
    """A node's run directory holds sync.json beside carp.json and ruleset metadata:
    `--status-dir` reads the sync one (once a KeyError traceback); `--status-file` on another
    file is a one-line error."""
    path = _status_file(tmp_path)
    path.rename(tmp_path / "sync.json")
    (tmp_path / "carp.json").write_text(json.dumps({"pid": 1, "node": {"groups": []}}))
    (tmp_path / "ruleset-4026532314.json").write_text(json.dumps({"rules": []}))
    assert main(["sync", "status", "--status-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.count("syncdev pfsync0") == 1
    assert main(["sync", "status", "--status-file", str(tmp_path / "carp.json")]) == 1
    assert capsys.readouterr().err == f"pfha: {tmp_path / 'carp.json'}: not a pfha sync status file\n"
    (tmp_path / "sync.json").unlink()
    assert main(["sync", "status", "--status-dir", str(tmp_path)]) == 1
    assert "no sync status in" in capsys.readouterr().err
