"""Restart intensity: a nested supervisor gives up and escalates to its parent;
when the root's intensity is exceeded too, the supervisor process exits 1."""

import signal
import time

from conftest import crasher, ev, stopped

TREE = f"""
    [root]
    strategy = "one_for_one"
    intensity = 1
    period_ms = 60000

    [[root.children]]
    id = "bystander"
    actors = [{{ type = "echo" }}]

    [[root.children]]
    id = "mid"
    type = "supervisor"
    strategy = "one_for_one"
    intensity = 1
    period_ms = 60000

      [[root.children.children]]
      id = "inner_sibling"
      actors = [{{ type = "echo" }}]

      [[root.children.children]]
      id = "leaf"
      actors = {crasher("segv")}
"""


def crash_leaf(sup):
    """Crashes root/mid/leaf once and returns the index where that started."""
    mark = sup.mark()
    sup.kill_child("root/mid/leaf", signal.SIGKILL)
    sup.wait_event(ev("exited", "root/mid/leaf"), since=mark)
    return mark


def test_nested_intensity_escalates_then_root_gives_up(sup):
    sup.start(TREE)
    bystander = sup.pids()["root/bystander"]

    # 1st crash: within mid's intensity (1): leaf restarted by mid.
    m = crash_leaf(sup)
    sup.wait_event(ev("ready", "root/mid/leaf"), since=m)
    assert not sup.find(ev("escalate"), since=m)
    sibling = sup.pids()["root/mid/inner_sibling"]

    # 2nd crash: 2 restarts > intensity 1: mid gives up and escalates to root,
    # which restarts mid (and so both of mid's children).
    m = crash_leaf(sup)
    esc = sup.wait_event(ev("escalate", "root/mid"), since=m)
    assert esc["node"] == "root/mid" and esc["cause"] == "root/mid/leaf"
    node_stopped = sup.wait_event(ev("supervisor_stopped", "root/mid"), since=m)
    assert node_stopped["reason"] == "max_intensity", node_stopped
    rs = sup.wait_event(ev("restart_scheduled", "root/mid"), since=m)
    assert rs["strategy"] == "one_for_one"
    sup.wait_event(ev("supervisor_started", "root/mid"), since=m)
    pids = sup.pids()
    assert pids["root/mid/inner_sibling"] != sibling, "mid's children were not restarted"
    assert sup.find(stopped("root/mid/inner_sibling"), since=m)
    assert pids["root/bystander"] == bystander, "one_for_one root touched a sibling of mid"
    assert sup.running()
    assert "root/mid: decision: give up and escalate" in sup.log()

    # The restarted mid has a fresh intensity budget: one more crash is fine.
    m = crash_leaf(sup)
    sup.wait_event(ev("ready", "root/mid/leaf"), since=m)
    assert not sup.find(ev("escalate"), since=m)

    # ...and one after that escalates again: root's 2nd restart > intensity 1:
    # root gives up, stops everything, the process exits 1.
    m = crash_leaf(sup)
    assert sup.wait_exit() == 1
    events = sup.events()[m:]
    escalations = [e["node"] for e in events if e["event"] == "escalate"]
    assert escalations == ["root/mid", "root"], events
    root_stop = [e for e in events if e["event"] == "supervisor_stopped" and e["node"] == "root"]
    assert root_stop and root_stop[0]["reason"] == "max_intensity"
    assert events[-1]["event"] == "supervisor_exit" and events[-1]["exit_code"] == 1
    assert sup.find(stopped("root/bystander"), since=m)
    log = sup.log()
    assert "root supervisor gave up" in log, sup.log_tail()
    assert "reached max restart intensity" in log


def test_root_intensity_zero_gives_up_on_first_crash(sup):
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        intensity = 0

        [[root.children]]
        id = "w"
        actors = {crasher("throw")}
    """)
    sup.kill_child("root/w", signal.SIGUSR1)
    assert sup.wait_exit() == 1
    assert "gave up" in sup.log()
    assert not sup.find(ev("restart_scheduled"))


def test_restarts_older_than_period_are_forgotten(sup):
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        intensity = 1
        period_ms = 300

        [[root.children]]
        id = "w"
        actors = {crasher("segv")}
    """)
    for _ in range(3):
        mark = sup.mark()
        sup.kill_child("root/w", signal.SIGUSR1)
        sup.wait_event(ev("ready", "root/w"), since=mark)
        time.sleep(0.5)  # > period: the previous restart no longer counts
    assert sup.running()
    assert not sup.find(ev("escalate"))
    # Two crashes within the period: gives up.
    mark = sup.mark()
    sup.kill_child("root/w", signal.SIGUSR1)
    sup.wait_event(ev("ready", "root/w"), since=mark)
    sup.kill_child("root/w", signal.SIGUSR1)
    assert sup.wait_exit() == 1
