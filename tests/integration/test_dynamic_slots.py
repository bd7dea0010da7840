"""Dynamic children that are removed give their slot back, and stay removed.

A simple_one_for_one child that is terminated (or not restarted) is removed
as in OTP: its slot (doorbell, channels) is freed for the next child or
client, its peers forget it, and a restart of its supervisor does not bring
it back.  A deleted static child's slot is reused the same way, and its
names are forgotten by everyone who used them.  Driven with bulkheadctl
against a real supervisor.
"""
import sys

import pytest
from conftest import BIN_DIR, WAIT, wait_until
from test_bulkheadctl import ctl, start, status

sys.path.insert(0, str(BIN_DIR.parent / "python"))
import bulkhead  # noqa: E402


def test_a_removed_dynamic_child_stays_removed_when_its_supervisor_restarts(sup):
    start(sup)
    r = ctl(sup, "terminate", "jobs/1")
    assert r.returncode == 0, r.stderr
    r = ctl(sup, "restart", "jobs")
    assert r.returncode == 0, r.stderr
    assert sup.running(), "the supervisor died restarting a pool with a removed child"
    s = status(sup)
    assert s["root/jobs"]["state"] == "running"
    assert "root/jobs/1" not in s or s["root/jobs/1"]["state"] == "deleted"
    r = ctl(sup, "start-child", "jobs")
    assert r.returncode == 0 and r.stdout.strip() == "root/jobs/2", r.stderr
    assert status(sup)["root/jobs/2"]["state"] == "running"


def test_terminating_a_stopped_dynamic_child_frees_it(sup):
    start(sup)
    assert ctl(sup, "stop", "jobs/1").returncode == 0
    r = ctl(sup, "terminate", "jobs/1")
    assert r.returncode == 0 and "removed" in r.stdout, (r.stdout, r.stderr)
    # The next start frees removed children that hold no slot any more: a
    # child whose slot was kept would still be listed.
    r = ctl(sup, "start-child", "jobs")
    assert r.returncode == 0, r.stderr
    s = status(sup)
    assert "root/jobs/1" not in s, s.get("root/jobs/1")
    assert s[r.stdout.strip()]["state"] == "running"


def test_a_deleted_childs_name_is_forgotten_by_a_caller_that_used_it(sup):
    # A worker or client remembers the last name it resolved (a hot loop
    # calls one name over and over).  When that name's child is deleted and
    # its slot goes to someone else, the caller must get NoProc, not send to
    # the slot's new occupant (which would never answer: Timeout).
    start(sup)
    sock = str(sup.dir / "run" / "a.sock")
    caller = bulkhead.connect(sock)
    try:
        assert caller.call("spare", bulkhead.Atom("get"), timeout=5.0) == 0
        old = caller.whereis("spare")
        assert old is not None
        assert ctl(sup, "terminate", "spare").returncode == 0
        r = ctl(sup, "delete", "spare")
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: caller.whereis("spare") is None, WAIT), \
            "the caller never heard that 'spare' is gone"
        squatter = bulkhead.connect(sock)  # takes the freed slot
        try:
            with pytest.raises(bulkhead.NoProc):
                caller.call("spare", bulkhead.Atom("get"), timeout=2.0)
        finally:
            squatter.close()
    finally:
        caller.close()
