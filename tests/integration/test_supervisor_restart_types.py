"""Restart types (permanent, transient, temporary) and auto_shutdown."""

import signal
import time

import pytest

from conftest import crasher, ev, stopped

# (restart type, crasher exit code or "sigkill", restarted?, expected reason fields)
CASES = [
    ("permanent", 0, True, {"reason": "normal"}),
    ("permanent", 3, True, {"reason": "exit_code", "exit_code": 3}),
    ("permanent", "sigkill", True, {"reason": "signal", "signal": 9}),
    ("transient", 3, True, {"reason": "exit_code", "exit_code": 3}),
    ("transient", "sigkill", True, {"reason": "signal", "signal": 9}),
    ("transient", 0, False, {"reason": "normal"}),
    ("temporary", 3, False, {"reason": "exit_code", "exit_code": 3}),
    ("temporary", 0, False, {"reason": "normal"}),
    ("temporary", "sigkill", False, {"reason": "signal", "signal": 9}),
]


@pytest.mark.parametrize("restart,how,restarted,reason", CASES,
                         ids=[f"{r}-{h}" for r, h, _, _ in CASES])
def test_restart_type_decides_restart(sup, restart, how, restarted, reason):
    code = 3 if how == "sigkill" else how
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        intensity = 10

        [[root.children]]
        id = "keeper"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "w"
        restart = "{restart}"
        actors = {crasher("exit", code=code)}
    """)
    before = sup.pids()
    mark = sup.mark()
    sup.kill_child("root/w", signal.SIGKILL if how == "sigkill" else signal.SIGUSR1)
    exited = sup.wait_event(ev("exited", "root/w"), since=mark)
    for k, v in reason.items():
        assert exited[k] == v, exited
    if restarted:
        sup.wait_event(ev("ready", "root/w"), since=mark)
        assert sup.find(ev("restart_scheduled", "root/w"), since=mark)
        assert sup.pids()["root/w"] != before["root/w"]
    else:
        sup.wait_event(ev("not_restarted", "root/w", restart_type=restart), since=mark)
        time.sleep(0.3)
        assert not sup.find(ev("spawned", "root/w"), since=mark)
        assert not sup.find(ev("restart_scheduled"), since=mark)
        assert "root/w" not in sup.pids()
        assert f"root/w: decision: not restarted ({restart} child" in sup.log()
    # The sibling is untouched either way, and the tree keeps running.
    assert sup.pids()["root/keeper"] == before["root/keeper"]
    assert sup.running()
    assert sup.stop() == 0


def test_temporary_child_not_restarted_by_one_for_all_sibling_restart(sup):
    """OTP: a temporary child stopped because of a sibling's crash is not restarted."""
    sup.start(f"""
        [root]
        strategy = "one_for_all"
        intensity = 10

        [[root.children]]
        id = "tmp"
        restart = "temporary"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "p"
        actors = {crasher("segv")}
    """)
    mark = sup.mark()
    sup.kill_child("root/p", signal.SIGUSR1)
    sup.wait_event(ev("ready", "root/p"), since=mark)
    time.sleep(0.2)
    assert sup.find(stopped("root/tmp"), since=mark)
    assert not sup.find(ev("spawned", "root/tmp"), since=mark)
    assert sorted(sup.pids()) == ["root/p"]
    assert sup.stop() == 0


# --- auto_shutdown ----------------------------------------------------------


def test_any_significant_root_shuts_down_and_exits_0(sup):
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        auto_shutdown = "any_significant"

        [[root.children]]
        id = "a"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "sig"
        restart = "transient"
        significant = true
        actors = {crasher("exit", code=0)}

        [[root.children]]
        id = "c"
        actors = [{{ type = "echo" }}]
    """)
    mark = sup.mark()
    sup.kill_child("root/sig", signal.SIGUSR1)
    assert sup.wait_exit() == 0
    events = sup.events()[mark:]
    names = [(e["event"], e.get("child")) for e in events]
    assert ("exited", "root/sig") in names
    assert ("not_restarted", "root/sig") in names
    assert any(e["event"] == "auto_shutdown" and e["node"] == "root" for e in events)
    # The rest of the tree stops in reverse start order.
    assert [e["child"] for e in events if e["event"] == "stopping"] == ["root/c", "root/a"]
    assert events[-1] == {**events[-1], "event": "supervisor_exit", "exit_code": 0}
    assert not sup.find(ev("spawned"), since=mark)


def test_significant_child_abnormal_exit_is_restarted_not_shutdown(sup):
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        intensity = 5
        auto_shutdown = "any_significant"

        [[root.children]]
        id = "sig"
        restart = "transient"
        significant = true
        actors = {crasher("exit", code=3)}
    """)
    mark = sup.mark()
    sup.kill_child("root/sig", signal.SIGUSR1)
    sup.wait_event(ev("ready", "root/sig"), since=mark)
    assert not sup.find(ev("auto_shutdown"), since=mark)
    assert sup.running()
    assert sup.stop() == 0


def test_any_significant_nested_supervisor_shuts_down_alone(sup):
    """The nested supervisor stops itself (reason shutdown); its transient
    entry in the parent is not restarted, and the rest of the tree lives on."""
    sup.start(f"""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "other"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "grp"
        type = "supervisor"
        restart = "transient"
        strategy = "one_for_one"
        auto_shutdown = "any_significant"

          [[root.children.children]]
          id = "x"
          actors = [{{ type = "echo" }}]

          [[root.children.children]]
          id = "sig"
          restart = "transient"
          significant = true
          actors = {crasher("exit", code=0)}

          [[root.children.children]]
          id = "y"
          actors = [{{ type = "echo" }}]
    """)
    before = sup.pids()
    mark = sup.mark()
    sup.kill_child("root/grp/sig", signal.SIGUSR1)
    node_stopped = sup.wait_event(ev("supervisor_stopped", "root/grp"), since=mark)
    assert node_stopped["reason"] == "shutdown", node_stopped
    assert "auto_shutdown any_significant" in node_stopped["reason_text"]
    time.sleep(0.3)
    events = sup.events()[mark:]
    assert any(e["event"] == "auto_shutdown" and e["node"] == "root/grp" for e in events)
    assert [e["child"] for e in events if e["event"] == "stopping"] == \
        ["root/grp/y", "root/grp/x"]
    assert not sup.find(ev("spawned"), since=mark)
    assert sup.running()
    assert sup.pids() == {"root/other": before["root/other"]}
    assert sup.stop() == 0


def test_all_significant_waits_for_every_significant_child(sup):
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        auto_shutdown = "all_significant"

        [[root.children]]
        id = "a"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "s1"
        restart = "transient"
        significant = true
        actors = {crasher("exit", code=0)}

        [[root.children]]
        id = "s2"
        restart = "temporary"
        significant = true
        actors = {crasher("exit", code=0)}
    """)
    mark = sup.mark()
    sup.kill_child("root/s1", signal.SIGUSR1)
    sup.wait_event(ev("not_restarted", "root/s1"), since=mark)
    time.sleep(0.3)
    assert sup.running(), "shut down although s2 (significant) still runs"
    assert not sup.find(ev("auto_shutdown"), since=mark)
    assert sorted(sup.pids()) == ["root/a", "root/s2"]

    sup.kill_child("root/s2", signal.SIGUSR1)
    assert sup.wait_exit() == 0
    assert sup.find(ev("auto_shutdown", node="root"), since=mark)
    assert sup.find(stopped("root/a"), since=mark)


def test_auto_shutdown_chains_through_significant_nested_supervisor(sup):
    """grp (significant, transient) shuts itself down when its significant child
    ends; root (any_significant) then shuts down too: exit 0."""
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        auto_shutdown = "any_significant"

        [[root.children]]
        id = "other"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "grp"
        type = "supervisor"
        restart = "transient"
        significant = true
        auto_shutdown = "any_significant"

          [[root.children.children]]
          id = "sig"
          restart = "transient"
          significant = true
          actors = {crasher("exit", code=0)}
    """)
    mark = sup.mark()
    sup.kill_child("root/grp/sig", signal.SIGUSR1)
    assert sup.wait_exit() == 0
    events = sup.events()[mark:]
    assert [e["node"] for e in events if e["event"] == "auto_shutdown"] == ["root/grp", "root"]
    assert [e["node"] for e in events if e["event"] == "supervisor_stopped"] == \
        ["root/grp", "root"]
    assert sup.find(stopped("root/other"), since=mark)
