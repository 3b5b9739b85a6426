"""pfha and ucarp (Debian's 1.5.2) as CARP peers, in both roles (carp.md §8 items 8-12).

ucarp reacts up to 1 s late (libpcap timeout, carp.md §6.2), so the waits here have that
slack. ucarp takes advbase 1; a advskew 0, b advskew 100, vhid 1, pass secretpass.
"""

from __future__ import annotations

import shutil
import signal
import time

import pytest

from pfha.carp.testbed import CarpBed, wait_for

pytestmark = pytest.mark.skipif(shutil.which("ucarp") is None, reason="needs ucarp (apt-get install ucarp)")

VIP = "10.99.0.100"
PFHA = ("--dev", "eth0", "--vhid", "1", "--pass", "secretpass", "--advbase", "1")


@pytest.fixture
def bed(lab):
    made = CarpBed(lab, client=False)
    yield made
    made.cleanup()


def test_ucarp_accepts_our_adverts_then_takes_over_then_we_preempt(bed):
    ours = bed.pfha("a", *PFHA, "--advskew", "0", "--preempt", VIP)
    assert wait_for(lambda: bed.group_state(ours) == "MASTER", 5), ours.log_text()
    theirs = bed.ucarp("b", advskew=100)
    # ucarp stays BACKUP well past its master-down (3.39 s + 1 s lag), and likes our digest.
    time.sleep(6)
    log = theirs.log_text()
    assert "Switching to state: BACKUP" in log and "MASTER" not in log, log
    assert "Bad digest" not in log and "Bad TTL" not in log
    assert bed.holders(VIP) == ["a"]
    stats = bed.status(ours)["node"]["groups"][0]["stats"]
    assert stats.get("hmac", 0) == 0
    # kill -9 our master: ucarp takes over.
    ours.stop(signal.SIGKILL)
    assert wait_for(lambda: "Switching to state: MASTER" in theirs.log_text(), 7), theirs.log_text()
    assert wait_for(lambda: bed.has_addr("b", VIP), 2)
    # We come back with advskew 0 and preempt: ucarp yields ("Preferred master advertised").
    again = bed.pfha("a", *PFHA, "--advskew", "0", "--preempt", VIP)
    assert wait_for(lambda: bed.group_state(again) == "MASTER", 6), again.log_text()
    assert "preempting slower master 10.99.0.2" in again.log_text()
    assert wait_for(lambda: "Preferred master advertised" in theirs.log_text(), 3), theirs.log_text()
    assert wait_for(lambda: bed.holders(VIP) == ["a"], 3)


def test_we_accept_ucarp_as_master_and_take_over_when_it_dies(bed):
    theirs = bed.ucarp("a", advskew=0)
    assert wait_for(lambda: bed.has_addr("a", VIP), 6), theirs.log_text()
    ours = bed.pfha("b", *PFHA, "--advskew", "100", VIP)
    time.sleep(5)  # more than our master-down (3.39 s): we must stay BACKUP
    assert bed.group_state(ours) == "BACKUP", ours.log_text()
    stats = bed.status(ours)["node"]["groups"][0]["stats"]
    assert stats.get("accepted", 0) >= 3 and stats.get("hmac", 0) == 0, stats
    theirs.stop(signal.SIGKILL)
    killed = time.monotonic()
    assert wait_for(lambda: bed.group_state(ours) == "MASTER", 5), ours.log_text()
    assert time.monotonic() - killed < 3 + 100 / 256 + 0.5
    assert "BACKUP -> MASTER: no advert from 10.99.0.1 for" in ours.log_text()
    assert wait_for(lambda: bed.has_addr("b", VIP), 1)


def test_wrong_password_splits_brain_and_is_counted(bed):
    theirs = bed.ucarp("a", advskew=0, password="otherpass")
    ours = bed.pfha("b", *PFHA, "--advskew", "100", VIP)
    assert wait_for(lambda: bed.group_state(ours) == "MASTER", 6), ours.log_text()
    assert wait_for(lambda: "Bad digest" in theirs.log_text(), 4), theirs.log_text()
    assert wait_for(lambda: bed.status(ours)["node"]["groups"][0]["stats"].get("hmac", 0) >= 2, 4)
    assert "Switching to state: MASTER" in theirs.log_text()
    assert sorted(bed.holders(VIP)) == ["a", "b"]  # the documented result: both MASTER
    assert ours.log_text().count("bad HMAC") == 1  # rate-limited
