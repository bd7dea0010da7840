"""Stopping: shutdown timeouts, brutal_kill, and SIGTERM/SIGINT to the supervisor."""

import os
import signal

import pytest

from conftest import ev, proc_stat, stopped_gracefully


def test_stubborn_worker_killed_after_shutdown_timeout_not_before(sup):
    sup.start("""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "a"
        actors = [{ type = "echo" }]

        [[root.children]]
        id = "stubborn"
        shutdown = 600
        actors = [{ type = "stubborn" }]
    """)
    mark = sup.mark()
    assert sup.stop(timeout=15) == 0
    stopping = sup.find(ev("stopping", "root/stubborn"), since=mark)
    timeout_ev = sup.find(ev("shutdown_timeout", "root/stubborn"), since=mark)
    exited = sup.find(ev("exited", "root/stubborn"), since=mark)
    assert stopping and timeout_ev and exited, sup.events()[mark:]
    waited = exited["t_ms"] - stopping["t_ms"]
    assert waited >= 600, f"killed after {waited:.1f} ms, before its 600 ms shutdown timeout"
    assert waited < 6000, f"killed only after {waited:.1f} ms"
    assert timeout_ev["t_ms"] - stopping["t_ms"] >= 600
    assert exited["reason"] == "signal" and exited["signal"] == 9, exited
    assert "shutdown timeout" in exited["reason_text"]
    # Still in reverse start order: stubborn first, then a.
    assert [e["child"] for e in sup.events()[mark:] if e["event"] == "stopping"] == \
        ["root/stubborn", "root/a"]
    assert "still running 600 ms after stop request: SIGKILL" in sup.log()


def test_brutal_kill_kills_at_once(sup):
    sup.start("""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "stubborn"
        shutdown = "brutal_kill"
        actors = [{ type = "stubborn" }]
    """)
    mark = sup.mark()
    assert sup.stop() == 0
    stopping = sup.find(ev("stopping", "root/stubborn"), since=mark)
    exited = sup.find(ev("exited", "root/stubborn"), since=mark)
    assert exited["reason"] == "signal" and exited["signal"] == 9, exited
    assert "brutal_kill" in exited["reason_text"]
    assert not sup.find(ev("shutdown_timeout"), since=mark)
    # At once: no graceful phase (the default timeout would be 5000 ms, and the
    # stubborn actor would use all of it).
    assert exited["t_ms"] - stopping["t_ms"] < 1000


def test_infinity_shutdown_waits_for_a_slow_terminate(sup):
    sup.start("""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "slowstop"
        shutdown = "infinity"
        actors = [{ type = "stubborn", args = { terminate_ms = 700 } }]
    """)
    mark = sup.mark()
    assert sup.stop(timeout=15) == 0
    stopping = sup.find(ev("stopping", "root/slowstop"), since=mark)
    exited = sup.find(ev("exited", "root/slowstop"), since=mark)
    assert exited["reason"] == "shutdown", exited
    assert exited["t_ms"] - stopping["t_ms"] >= 690
    assert not sup.find(ev("shutdown_timeout"), since=mark)


NESTED_TREE = """
    [root]
    strategy = "one_for_one"

    [[root.children]]
    id = "a"
    actors = [{ type = "echo" }]

    [[root.children]]
    id = "grp"
    type = "supervisor"
    strategy = "rest_for_one"

      [[root.children.children]]
      id = "b1"
      actors = [{ type = "counter" }]

      [[root.children.children]]
      id = "b2"
      actors = [{ type = "echo" }]

    [[root.children]]
    id = "pool"
    type = "supervisor"
    strategy = "simple_one_for_one"
    instances = 2
    template = { actors = [{ type = "echo" }] }

    [[root.children]]
    id = "c"
    actors = [{ type = "counter" }]
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_whole_tree_in_reverse_start_order(sup, sig):
    sup.start(NESTED_TREE)
    start_order = [e["child"] for e in sup.events() if e["event"] == "ready"]
    assert start_order == ["root/a", "root/grp/b1", "root/grp/b2", "root/pool/1", "root/pool/2",
                           "root/c"]
    pids = sup.pids()
    mark = sup.mark()
    assert sup.stop(sig) == 0
    events = sup.events()[mark:]
    assert events[0]["event"] == "signal" and events[0]["signal"] == sig
    all_stops = [e["child"] for e in events if e["event"] == "stopping"]
    # A nested supervisor is asked to stop before its own children are.
    supervisors = ["root/pool", "root/grp"]
    assert [c for c in all_stops if c in supervisors] == supervisors
    assert all_stops.index("root/pool") < all_stops.index("root/pool/2")
    assert all_stops.index("root/grp") < all_stops.index("root/grp/b2")
    stop_order = [c for c in all_stops if c not in supervisors]
    assert stop_order == list(reversed(start_order))
    # Each worker is stopped (and has exited) before the next one is asked to.
    seq = [(e["event"], e.get("child")) for e in events
           if e["event"] in ("stopping", "exited") and e.get("child") not in supervisors]
    assert seq == [x for c in reversed(start_order) for x in (("stopping", c), ("exited", c))]
    for e in events:
        if e["event"] == "exited":
            assert stopped_gracefully(e) and e["pid"] == pids[e["child"]], e
    nodes = [e["node"] for e in events if e["event"] == "supervisor_stopped"]
    assert nodes == ["root/pool", "root/grp", "root"]
    assert events[-1]["event"] == "supervisor_exit" and events[-1]["exit_code"] == 0
    assert f"received {signal.Signals(sig).name}" in sup.log()
    # counter actors ran terminate(): a graceful stop, not a kill.
    assert "terminate (shutdown)" in sup.log()


def test_second_sigterm_while_stopping_is_harmless(sup):
    sup.start("""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "a"
        actors = [{ type = "echo" }]

        [[root.children]]
        id = "slowstop"
        actors = [{ type = "stubborn", args = { terminate_ms = 400 } }]
    """)
    mark = sup.mark()
    sup.send_signal(signal.SIGTERM)
    sup.wait_event(ev("stopping", "root/slowstop"), since=mark)
    sup.send_signal(signal.SIGTERM)
    assert sup.wait_exit() == 0
    events = sup.events()[mark:]
    assert [e["child"] for e in events if e["event"] == "stopping"] == ["root/slowstop", "root/a"]
    assert sum(e["event"] == "signal" for e in events) == 2
    assert "already stopping" in sup.log()


def test_crash_during_shutdown_is_not_restarted(sup):
    sup.start("""
        [root]
        strategy = "one_for_one"
        intensity = 10

        [[root.children]]
        id = "a"
        actors = [{ type = "echo" }]

        [[root.children]]
        id = "slowstop"
        actors = [{ type = "stubborn", args = { terminate_ms = 600 } }]
    """)
    mark = sup.mark()
    sup.send_signal(signal.SIGTERM)
    sup.wait_event(ev("stopping", "root/slowstop"), since=mark)
    sup.kill_child("root/a", signal.SIGKILL)  # dies while the tree is going down
    assert sup.wait_exit() == 0
    events = sup.events()[mark:]
    assert sup.find(ev("exited", "root/a", reason="signal", signal=9), since=mark)
    assert not any(e["event"] in ("spawned", "restart_scheduled") for e in events), events


def test_sigterm_during_boot_stops_without_starting_the_rest(sup):
    sup.start("""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "a"
        actors = [{ type = "echo" }]

        [[root.children]]
        id = "slow"
        actors = [{ type = "slow", args = { init_ms = 600 } }]

        [[root.children]]
        id = "never"
        actors = [{ type = "echo" }]
    """, wait_started=False)
    sup.wait_event(ev("spawned", "root/slow"))
    sup.send_signal(signal.SIGTERM)
    assert sup.wait_exit() == 0
    events = sup.events()
    assert not any(e.get("child") == "root/never" for e in events)
    assert not any(e["event"] == "tree_started" for e in events)
    assert [e["child"] for e in events if e["event"] == "stopping"] == ["root/slow", "root/a"]


def test_sigterm_during_group_restart_backoff_stops_promptly(sup):
    sup.start("""
        [root]
        strategy = "one_for_all"
        intensity = 10

        [[root.children]]
        id = "a"
        actors = [{ type = "echo" }]

        [[root.children]]
        id = "flaky"
        actors = [{ type = "crasher" }]
        backoff = { initial_ms = 2500, jitter = 0, max_ms = 2500 }
    """)
    mark = sup.mark()
    sup.kill_child("root/flaky", signal.SIGKILL)
    sup.wait_event(ev("exited", "root/a"), since=mark)  # all stopped: now in the 2.5 s wait
    sig = sup.mark()
    sup.send_signal(signal.SIGTERM)
    assert sup.wait_exit(timeout=15) == 0
    took = sup.events()[-1]["t_ms"] - sup.events()[sig]["t_ms"]
    assert not sup.find(ev("spawned"), since=mark)
    # Nothing is running: stopping should take milliseconds, not the backoff.
    assert took < 1000, f"stopping took {took:.0f} ms (the rest of the 2500 ms backoff)"


def test_nested_supervisor_shutdown_timeout_bounds_its_subtree(sup):
    sup.start("""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "grp"
        type = "supervisor"
        shutdown = 500

          [[root.children.children]]
          id = "stubborn"
          shutdown = 2500
          actors = [{ type = "stubborn" }]
    """)
    mark = sup.mark()
    assert sup.stop(timeout=15) == 0
    stopping = sup.find(ev("stopping", "root/grp/stubborn"), since=mark)
    exited = sup.find(ev("exited", "root/grp/stubborn"), since=mark)
    waited = exited["t_ms"] - stopping["t_ms"]
    assert exited["signal"] == 9
    assert 450 <= waited < 2000, \
        f"subtree of a supervisor with shutdown = 500 took {waited:.0f} ms to stop"


def _spam_sigterm(pid):
    """SIGTERM `pid` again and again until it is gone (or a zombie)."""
    while True:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        st = proc_stat(pid)
        if st is None or st[0] == "Z":
            return


def test_graceful_stop_never_ends_in_sigsegv(sup):
    sup.start("""
        [root]
        strategy = "one_for_one"
        intensity = 100000

        [[root.children]]
        id = "w"
        actors = [{ type = "echo" }]
    """)
    for trial in range(500):
        mark = sup.mark()
        _spam_sigterm(sup.pids()["root/w"])
        exited = sup.wait_event(ev("exited", "root/w"), since=mark)
        assert exited["reason"] == "shutdown", \
            f"stop #{trial + 1} of a worker by SIGTERM ended with {exited['reason_text']}"
        sup.wait_event(ev("ready", "root/w"), since=mark)
    assert sup.stop() == 0
