"""Dynamic children that are removed give their slot back, and stay removed.

A simple_one_for_one child that is terminated (or not restarted) is removed
as in OTP: its slot (doorbell, channels) is freed for the next child or
client, its peers forget it, and a restart of its supervisor does not bring
it back.  Driven with bulkheadctl against a real supervisor.
"""
from test_bulkheadctl import ctl, start, status


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
