"""Early death notices (ipc/liveness.hpp): the supervisor finishes a worker
(exited event, DOWN, restart) when the worker's exit starts, not when the
kernel has freed its memory; exit reasons are the same as from waitid, and
the corpse is still reaped."""

import signal

import pytest

from conftest import alive, crasher, ev, wait_until, zombie_children

NOTICED = "is exiting: restarting it before the kernel reaps it"

# A worker with this much memory takes milliseconds for the kernel to tear
# down: the notice always comes first.  (A small worker is torn down in
# ~0.2 ms, and then the pidfd may win the race; either way is correct.)
BALLAST = 256

# (crasher mode, expected exited-event fields)
CASES = [
    ("exit", {"reason": "exit_code", "exit_code": 3}),
    ("segv", {"reason": "signal", "signal": 11}),
    ("abort", {"reason": "signal", "signal": 6}),
    ("throw", {"reason": "exception"}),
]


def tree(actors):
    return f"""
        [root]
        strategy = "one_for_one"
        intensity = 100
        period_ms = 1000

        [[root.children]]
        id = "w"
        actors = {actors}
    """


def assert_reaped(sup, pids):
    wait_until(lambda: not any(alive(p) for p in pids), timeout=5,
               what=f"the dead workers {pids} gone")
    wait_until(lambda: zombie_children(sup.pid) == [], timeout=5,
               what="no zombie children of the supervisor")


def test_a_sigkilled_worker_is_finished_on_its_death_notice(sup):
    sup.start(tree(crasher("segv", ballast_mb=BALLAST)), extra_args=("--log-level", "debug"))
    killed = []
    for _ in range(3):
        mark = sup.mark()
        pid = sup.kill_child("root/w")
        killed.append(pid)
        exited = sup.wait_event(ev("exited", "root/w"), since=mark)
        assert exited["pid"] == pid
        assert exited["reason"] == "signal" and exited["signal"] == 9, exited
        ready = sup.wait_event(ev("ready", "root/w"), since=mark)
        assert ready["pid"] != pid
        assert f"pid {pid} {NOTICED}" in sup.log(), sup.log_tail()
    assert_reaped(sup, killed)


@pytest.mark.parametrize("mode,reason", CASES, ids=[m for m, _ in CASES])
def test_every_exit_kind_keeps_its_reason_through_the_notice(sup, mode, reason):
    sup.start(tree(crasher(mode, ballast_mb=BALLAST)), extra_args=("--log-level", "debug"))
    mark = sup.mark()
    pid = sup.kill_child("root/w", signal.SIGUSR1)
    exited = sup.wait_event(ev("exited", "root/w"), since=mark)
    for k, v in reason.items():
        assert exited[k] == v, exited
    if mode == "throw":
        assert "crasher: failure requested" in exited["reason_text"], exited
    sup.wait_event(ev("ready", "root/w"), since=mark)
    assert f"pid {pid} {NOTICED}" in sup.log(), sup.log_tail()
    assert_reaped(sup, [pid])


def test_a_stopped_tree_reaps_every_corpse(sup):
    # Workers finished on their notice, then the supervisor exits at once:
    # it still reaps every corpse before it goes.
    sup.start(tree('[{ type = "echo", name = "w" }]'))
    mark = sup.mark()
    pid = sup.kill_child("root/w")
    sup.wait_event(ev("ready", "root/w"), since=mark)
    last = sup.pids()["root/w"]
    assert sup.stop() == 0
    assert not alive(pid) and not alive(last)


def test_notices_can_be_turned_off(sup, monkeypatch):
    monkeypatch.setenv("BULKHEAD_DEATH_NOTICE", "0")
    sup.start(tree('[{ type = "echo", name = "w" }]'), extra_args=("--log-level", "debug"))
    mark = sup.mark()
    pid = sup.kill_child("root/w")
    exited = sup.wait_event(ev("exited", "root/w"), since=mark)
    assert exited["signal"] == 9
    sup.wait_event(ev("ready", "root/w"), since=mark)
    assert NOTICED not in sup.log()
    assert_reaped(sup, [pid])
