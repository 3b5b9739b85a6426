"""CarpRunner's public API for host programs (the node daemon): stop(), no signal handlers of
its own, reconfigure() in place without a flap, and the last transition's reason in status.

The runner runs in a Python process inside a namespace (its sockets and addresses are the
namespace's); the script prints what it saw as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from pfha.carp.testbed import SRC

pytestmark = pytest.mark.root

SCRIPT = textwrap.dedent("""
    import asyncio, ipaddress, json, signal, subprocess, sys
    from pfha.carp import wire
    from pfha.carp.machine import VhidConfig
    from pfha.carp.runner import CarpRunner

    def config(advskew):
        return VhidConfig(vhid=7, interface="eth0", addresses=(ipaddress.ip_interface("10.98.0.100/24"),),
                          key=wire.carp_key("pw"), advbase=0, advskew=advskew, preempt=True)

    async def main():
        seen = []
        runner = CarpRunner([config(10)], status_path=__import__("pathlib").Path(sys.argv[1]),
                            handle_signals=False, on_transition=lambda a: seen.append(a.new.value))
        task = asyncio.create_task(runner.run())
        await asyncio.wait_for(runner.started.wait(), 5)
        out = {"sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL}
        for _ in range(200):
            await asyncio.sleep(0.02)
            if runner.status()["node"]["groups"][0]["state"] == "MASTER":
                break
        group = runner.status()["node"]["groups"][0]
        out["master"] = group["state"], group["reason"], group["since"] is not None
        before = list(seen)
        runner.reconfigure(config(50))
        await asyncio.sleep(0.3)
        group = runner.status()["node"]["groups"][0]
        out["after_reconfigure"] = group["state"], group["advskew"], seen == before
        try:
            runner.reconfigure(VhidConfig(vhid=7, interface="eth0", addresses=(ipaddress.ip_interface("10.98.0.101/24"),),
                                          key=wire.carp_key("pw")))
        except ValueError:
            out["address_change_refused"] = True
        out["vip_held"] = "10.98.0.100/" in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        runner.stop()
        await asyncio.wait_for(task, 5)
        out["vip_released"] = "10.98.0.100/" not in subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
        out["transitions"] = seen
        print(json.dumps(out))

    asyncio.run(main())
""")


def test_runner_public_api_stop_reconfigure_status(lab, tmp_path):
    a, peer = lab.ns("a"), lab.ns("peer")
    lab.link(a, "eth0", peer, "eth0")
    a.exec("ip", "addr", "add", "10.98.0.1/24", "dev", "eth0")
    status = tmp_path / "carp.json"
    env = f"PYTHONPATH={SRC}"
    done = a.exec("env", env, sys.executable, "-c", SCRIPT, str(status), timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["sigterm_default"] is True  # handle_signals=False: the host program keeps its signals
    state, reason, since = out["master"]
    assert state == "MASTER" and "BACKUP -> MASTER" in reason and since
    assert out["after_reconfigure"] == ["MASTER", 50, True]  # new advskew, no transition
    assert out["address_change_refused"] is True
    assert out["vip_held"] and out["vip_released"]
    assert out["transitions"] == ["BACKUP", "MASTER", "INIT"]
    assert not status.exists() and not os.listdir(tmp_path)
