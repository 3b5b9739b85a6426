"""The real resolver: ``pfctl -nvf`` looks host names up with getaddrinfo, as pfctl does.

The command gets its own /etc/hosts (and an nsswitch.conf that asks only it) in a private mount namespace (``unshare --mount`` and a
bind mount that disappears with the command), so the test needs no DNS server and changes
nothing outside itself; that needs root.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import requires_root

pytestmark = [requires_root, pytest.mark.skipif(shutil.which("unshare") is None, reason="util-linux unshare missing")]

HOSTS = "127.0.0.1 localhost\n192.0.2.80 www.pfha.test\n2001:db8::80 www.pfha.test\n192.0.2.25 mail.pfha.test\n"
CONF = "table <mx> { mail.pfha.test }\npass in on xl0 proto tcp to www.pfha.test port 80\npass out to <mx>\n"


def pfctl_with_hosts(tmp_path, *args: str) -> subprocess.CompletedProcess[str]:
    hosts, nsswitch = tmp_path / "hosts", tmp_path / "nsswitch.conf"
    hosts.write_text(HOSTS)
    nsswitch.write_text("hosts: files\n")  # no DNS query leaves the machine, none waits
    script = 'mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/nsswitch.conf && shift 2 && exec "$@"'
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(hosts), str(nsswitch),
            sys.executable, "-m", "pfha.cli.pfctl", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_pfctl_resolves_names_with_the_system_resolver(tmp_path):
    conf = tmp_path / "pf.conf"
    conf.write_text(CONF)
    done = pfctl_with_hosts(tmp_path, "-nvf", str(conf), "--if", "xl0=203.0.113.2/24")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "table <mx> { 192.0.2.25 }",
        "pass in on xl0 inet proto tcp from any to 192.0.2.80 port = http flags S/SA keep state",
        "pass in on xl0 inet6 proto tcp from any to 2001:db8::80 port = http flags S/SA keep state",
        "pass out from any to <mx> flags S/SA keep state",
    ]


def test_an_unknown_name_fails_as_pfctl_fails(tmp_path):
    conf = tmp_path / "pf.conf"
    conf.write_text("pass in to nowhere.pfha.test\n")
    done = pfctl_with_hosts(tmp_path, "-nf", str(conf), "--if", "xl0=203.0.113.2/24")
    assert done.returncode != 0
    assert done.stderr.splitlines()[:2] == ["no IP address found for nowhere.pfha.test",
                                            f"{conf}:1: could not parse host specification"]
