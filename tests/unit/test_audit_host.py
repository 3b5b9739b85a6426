"""Host hardening on a tree of files: the tutorial's own files, then one change at a time."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from pfha.audit import host
from pfha.audit.findings import Severity

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tutorial-host"
GOOD_SYSCTL = """\
net.ipv4.conf.all.accept_redirects = 0
net.ipv4.conf.default.accept_redirects = 0
net.ipv4.conf.all.send_redirects = 0
net.ipv4.conf.all.accept_source_route = 0
net.ipv4.conf.all.rp_filter = 1
net.ipv4.tcp_syncookies = 1
"""


@pytest.fixture
def tree(tmp_path) -> host.HostTree:
    """The tutorial's host as it ends up: restrictive fstab, sysctls set, AIDE initialised."""
    root = tmp_path / "root"
    shutil.copytree(FIXTURE, root)
    shutil.copy(root / "etc" / "fstab.restrictive", root / "etc" / "fstab")
    os.chmod(root / "etc" / "crontab", 0o600)
    (root / "etc" / "sysctl.d").mkdir()
    (root / "etc" / "sysctl.d" / "90-hardening.conf").write_text(GOOD_SYSCTL)
    for name in ("usr/local/bin/aide", "var/db/aide/databases/aide.db"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return host.HostTree(root)


def checks(tree, prefix):
    return [f for f in host.check_host(tree) if f.check.startswith(prefix)]


def edit(tree, name, old, new):
    path = tree.path(name)
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def test_the_tutorials_finished_host_passes(tree):
    findings = host.check_host(tree)
    assert [(f.check, f.severity) for f in findings] == [("host.hosts-allow-ipf", Severity.INFO)]
    assert findings[0].place.line == 9


def test_the_tutorials_original_fstab_fails(tree):
    shutil.copy(FIXTURE / "etc" / "fstab", tree.path("/etc/fstab"))
    findings = checks(tree, "host.mount-options")
    assert [(f.place.line, f.message.split(" is mounted")[0]) for f in findings] == [
        (3, "/"), (4, "/tmp"), (5, "/usr"), (6, "/usr/home"), (7, "/usr/local"), (8, "/var")]
    tmp = findings[1]
    assert "nodev, noexec, nosuid" in tmp.message and "rw,nodev,noexec,nosuid" not in tmp.fix
    assert "mount /tmp with options nodev,noexec,nosuid" in tmp.fix


def test_root_nosuid_only_required_when_usr_is_separate(tree):
    tree.path("/etc/fstab").write_text("UUID=1 / ext4 defaults 0 1\nUUID=2 /tmp ext4 defaults,nosuid,nodev,noexec 0 2\n")
    assert checks(tree, "host.mount-options") == []


@pytest.mark.parametrize("old,new,check,severity", [
    ("Protocol 2", "Protocol 2,1", "host.sshd-protocol", Severity.ERROR),
    ("PermitRootLogin no", "PermitRootLogin yes", "host.sshd-root-login", Severity.ERROR),
    ("PermitRootLogin no", "#PermitRootLogin no", "host.sshd-root-login", Severity.WARNING),
    ("PasswordAuthentication no", "PasswordAuthentication yes", "host.sshd-password", Severity.WARNING),
    ("PermitEmptyPasswords no", "PermitEmptyPasswords yes", "host.sshd-empty-passwords", Severity.ERROR),
    ("AllowUsers admin", "#AllowUsers admin", "host.sshd-allowusers", Severity.WARNING),
    ("Port 8081", "Port 21", "host.sshd-port", Severity.WARNING),
    # PAM keyboard-interactive still asks for passwords (sshd uses the first value it reads)
    ("ChallengeResponseAuthentication no", "ChallengeResponseAuthentication yes\nUsePAM yes", "host.sshd-password",
     Severity.WARNING),
])
def test_sshd_config_mistakes(tree, old, new, check, severity):
    edit(tree, "/etc/ssh/sshd_config", old, new)
    (finding,) = checks(tree, "host.sshd")
    assert (finding.check, finding.severity) == (check, severity)
    assert finding.place.file.endswith("sshd_config")


def test_sshd_include_and_match(tree):
    edit(tree, "/etc/ssh/sshd_config", "Port 8081", "Include sshd_config.d/*.conf\nPort 8081")
    (tree.path("/etc/ssh/sshd_config.d")).mkdir()
    tree.path("/etc/ssh/sshd_config.d/10-bad.conf").write_text("PermitRootLogin yes\n")
    (finding,) = checks(tree, "host.sshd")
    assert finding.place.file.endswith("10-bad.conf") and finding.place.line == 1
    tree.path("/etc/ssh/sshd_config.d/10-bad.conf").write_text("Match User backup\n  PasswordAuthentication yes\n")
    assert checks(tree, "host.sshd") == []


def test_no_sshd_is_only_information(tree):
    tree.path("/etc/ssh/sshd_config").unlink()
    assert [(f.check, f.severity) for f in checks(tree, "host.sshd")] == [("host.sshd-config", Severity.INFO)]


def test_hosts_allow_without_default_deny(tree):
    edit(tree, "/etc/hosts.allow", "ALL : ALL : deny\n", "")
    (finding,) = [f for f in checks(tree, "host.hosts-allow") if f.severity == Severity.WARNING]
    assert "default deny" in finding.message
    tree.path("/etc/hosts.deny").write_text("ALL: ALL\n")
    assert [f for f in checks(tree, "host.hosts-allow") if f.severity == Severity.WARNING] == []


def test_hosts_allow_missing(tree):
    tree.path("/etc/hosts.allow").unlink()
    (finding,) = checks(tree, "host.hosts-allow")
    assert finding.severity == Severity.WARNING and "libwrap" in finding.message


def test_sysctls_unset_fall_back_to_kernel_defaults(tree):
    tree.path("/etc/sysctl.d/90-hardening.conf").unlink()
    findings = checks(tree, "host.sysctl")
    names = [f.message.split(" = ")[0] for f in findings]
    assert names == ["net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.default.accept_redirects",
                     "net.ipv4.conf.all.send_redirects", "net.ipv4.conf.all.rp_filter"]
    assert all("(kernel default)" in f.message for f in findings)
    # What pfha node sets from the node config counts in a tree of files.
    managed = {"net.ipv4.conf.all.accept_redirects": "0", "net.ipv4.conf.default.accept_redirects": "0"}
    assert len(list(host.sysctls(tree, managed))) == 2


def test_sysctl_later_file_wins(tree):
    tree.path("/etc/sysctl.conf").write_text("net.ipv4.tcp_syncookies = 0\n")
    (finding,) = checks(tree, "host.sysctl")
    assert finding.place.file.endswith("sysctl.conf") and finding.place.line == 1


def test_forwarding_required_on_a_gateway(tree):
    (finding,) = list(host.sysctls(tree, {}, forwarding=True))
    assert finding.severity == Severity.ERROR and "net.ipv4.ip_forward" in finding.message
    assert list(host.sysctls(tree, {"net.ipv4.ip_forward": "1"}, forwarding=True)) == []


def test_cron_access(tree):
    tree.path("/var/cron/allow").unlink()
    (finding,) = checks(tree, "host.cron")
    assert finding.check == "host.cron-access"
    tree.path("/etc/cron.allow").write_text("root\nadmin\n")
    assert checks(tree, "host.cron") == []
    os.chmod(tree.path("/etc/crontab"), 0o644)
    (finding,) = checks(tree, "host.cron")
    assert finding.check == "host.crontab-mode" and "644" in finding.message


def test_aide(tree):
    assert checks(tree, "host.aide") == []
    edit(tree, "/etc/crontab", "aide --check", "true")
    (finding,) = checks(tree, "host.aide")
    assert "never runs a check" in finding.message
    tree.path("/etc/cron.daily").mkdir()
    tree.path("/etc/cron.daily/dailyaidecheck").write_text("")
    assert checks(tree, "host.aide") == []
    tree.path("/var/db/aide/databases/aide.db").unlink()
    (finding,) = checks(tree, "host.aide")
    assert "no database" in finding.message
    tree.path("/usr/local/bin/aide").unlink()
    (finding,) = checks(tree, "host.aide")
    assert "not installed" in finding.message
