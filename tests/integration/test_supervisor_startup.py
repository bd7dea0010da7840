"""Restart backoff, ready timeouts and start failures."""

import os
import re
import time
import signal

from conftest import (WORKER_BIN, crasher, ev, open_fds, read_events, run_supervisor, stopped,
                      wait_until)


def test_backoff_delays_double_up_to_max(sup):
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        intensity = 10
        period_ms = 60000

        [[root.children]]
        id = "flaky"
        actors = {crasher("segv")}
        backoff = {{ initial_ms = 100, multiplier = 2, jitter = 0, max_ms = 400 }}
    """)
    expected = [100, 200, 400, 400]
    measured, scheduled = [], []
    for want in expected:
        mark = sup.mark()
        sup.kill_child("root/flaky", signal.SIGUSR1)
        exited = sup.wait_event(ev("exited", "root/flaky"), since=mark)
        assert exited["reason"] == "signal" and exited["signal"] == 11, exited
        rs = sup.wait_event(ev("restart_scheduled", "root/flaky"), since=mark)
        scheduled.append(rs["delay_ms"])
        spawned = sup.wait_event(ev("spawned", "root/flaky"), since=mark)
        measured.append(spawned["t_ms"] - exited["t_ms"])
        sup.wait_event(ev("ready", "root/flaky"), since=mark)
    assert scheduled == expected
    for want, got in zip(expected, measured):
        assert want - 5 <= got <= want + 150, f"delays {measured} ms, wanted {expected}"
    # The log says who waits, how long, and why.
    log = sup.log()
    for delay in (100, 200, 400):
        assert re.search(rf"root/flaky: waiting {delay} ms before restart "
                         r"\(last exit: killed by SIGSEGV \(11\)", log), sup.log_tail()
    assert sup.stop() == 0


def test_backoff_applies_to_one_for_all_restart(sup):
    sup.start(f"""
        [root]
        strategy = "one_for_all"
        intensity = 10

        [[root.children]]
        id = "a"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "flaky"
        actors = {crasher("segv")}
        backoff = {{ initial_ms = 300, multiplier = 2, jitter = 0, max_ms = 400 }}
    """)
    mark = sup.mark()
    sup.kill_child("root/flaky", signal.SIGUSR1)
    rs = sup.wait_event(ev("restart_scheduled", "root/flaky"), since=mark)
    assert rs["delay_ms"] == 300
    sup.wait_event(ev("ready", "root/flaky"), since=mark)
    a_stopped = sup.find(ev("exited", "root/a"), since=mark)
    a_spawned = sup.find(ev("spawned", "root/a"), since=mark)
    assert a_spawned["t_ms"] - a_stopped["t_ms"] >= 295
    assert sup.stop() == 0


def test_backoff_waiting_child_cancelled_by_shutdown(sup):
    """A child waiting for its restart is not started when the tree stops."""
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        intensity = 10

        [[root.children]]
        id = "flaky"
        actors = {crasher("segv")}
        backoff = {{ initial_ms = 3000, jitter = 0, max_ms = 3000 }}
    """)
    mark = sup.mark()
    sup.kill_child("root/flaky", signal.SIGKILL)
    sup.wait_event(ev("restart_scheduled", "root/flaky", delay_ms=3000), since=mark)
    assert sup.stop() == 0
    assert not sup.find(ev("spawned"), since=mark)
    assert sup.events()[-1]["t_ms"] - sup.find(ev("signal"), since=mark)["t_ms"] < 2000


def test_ready_timeout_at_boot_fails_the_tree(tmp_path):
    p, _, events_path = run_supervisor(tmp_path, """
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "a"
        actors = [{ type = "echo" }]

        [[root.children]]
        id = "slow"
        start_timeout_ms = 300
        actors = [{ type = "slow", args = { init_ms = 3000 } }]

        [[root.children]]
        id = "never"
        actors = [{ type = "echo" }]
    """)
    assert p.returncode == 3, p.stderr.decode()
    events = read_events(events_path)
    spawned = next(e for e in events if e["event"] == "spawned" and e["child"] == "root/slow")
    exited = next(e for e in events if e["event"] == "exited" and e["child"] == "root/slow")
    assert exited["reason"] == "ready_timeout", exited
    assert "ready timeout after 300 ms" in exited["reason_text"]
    assert exited["t_ms"] - spawned["t_ms"] >= 295
    assert exited["t_ms"] - spawned["t_ms"] < 2900, "waited for init instead of the timeout"
    # What was started is stopped again; what comes after is never started.
    assert any(stopped("root/a")(e)
               for e in events)
    assert not any(e.get("child") == "root/never" for e in events)
    assert not any(e["event"] == "tree_started" for e in events)
    assert events[-1] == {**events[-1], "event": "supervisor_exit", "exit_code": 3}
    err = p.stderr.decode()
    assert "not ready within 300 ms" in err
    assert "the tree failed to start" in err


def test_start_failure_at_boot_exits_3(tmp_path):
    p, _, events_path = run_supervisor(tmp_path, f"""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "a"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "bad"
        actors = {crasher("throw", on="init")}
    """)
    assert p.returncode == 3, p.stderr.decode()
    events = read_events(events_path)
    exited = next(e for e in events if e["event"] == "exited" and e["child"] == "root/bad")
    assert exited["reason"] == "start_failure", exited
    assert "std::runtime_error" in exited["reason_text"]
    assert "crasher: failure requested" in exited["reason_text"]
    assert not any(e["event"] == "ready" and e["child"] == "root/bad" for e in events)
    assert any(stopped("root/a")(e)
               for e in events)
    node_stopped = next(e for e in events if e["event"] == "supervisor_stopped")
    assert node_stopped["reason"] == "start_failure"
    err = p.stderr.decode()
    assert "the tree failed to start" in err and "root/bad" in err


def test_crash_in_init_by_signal_fails_the_tree(tmp_path):
    p, _, events_path = run_supervisor(tmp_path, f"""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "bad"
        actors = {crasher("segv", on="init")}
    """)
    assert p.returncode == 3, p.stderr.decode()
    events = read_events(events_path)
    exited = next(e for e in events if e["event"] == "exited" and e["child"] == "root/bad")
    assert exited["reason"] == "signal" and exited["signal"] == 11, exited


def test_start_failure_in_nested_supervisor_at_boot_exits_3(tmp_path):
    p, _, events_path = run_supervisor(tmp_path, f"""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "a"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "grp"
        type = "supervisor"

          [[root.children.children]]
          id = "bad"
          actors = {crasher("throw", on="init")}
    """)
    assert p.returncode == 3, p.stderr.decode()
    events = read_events(events_path)
    assert any(e["event"] == "supervisor_stopped" and e["node"] == "root/grp" and
               e["reason"] == "start_failure" for e in events)
    assert "the tree failed to start" in p.stderr.decode()


def test_intensity_allows_exactly_n_restarts_within_period(sup):
    """intensity = 3: three restarts are fine, the fourth crash makes the root
    give up (OTP: more than MaxR restarts within MaxT)."""
    sup.start("""
        [root]
        strategy = "one_for_one"
        intensity = 3
        period_ms = 60000

        [[root.children]]
        id = "a"
        actors = [{ type = "echo" }]
    """)
    for i in range(4):
        mark = sup.mark()
        sup.kill_child("root/a", signal.SIGKILL)
        sup.wait_event(lambda e: e["event"] in ("ready", "supervisor_exit"), since=mark)
        if i < 3:
            assert sup.running(), f"gave up after {i + 1} crashes"
    assert sup.wait_exit() == 1
    assert sum(e["event"] == "restart_scheduled" for e in sup.events()) == 3
    assert "4 restarts within 60000 ms (intensity 3)" in sup.log()


def test_backoff_resets_after_child_stayed_up(sup):
    sup.start(f"""
        [root]
        strategy = "one_for_one"
        intensity = 10
        period_ms = 60000

        [[root.children]]
        id = "flaky"
        actors = {crasher("segv")}
        backoff = {{ initial_ms = 50, multiplier = 2, jitter = 0, max_ms = 1000, reset_after_ms = 400 }}
    """)
    delays = []
    for pause in (0, 0, 0.8):
        time.sleep(pause)  # the last crash comes after the child stayed up > reset_after
        mark = sup.mark()
        sup.kill_child("root/flaky", signal.SIGKILL)
        delays.append(sup.wait_event(ev("restart_scheduled", "root/flaky"), since=mark)["delay_ms"])
        sup.wait_event(ev("ready", "root/flaky"), since=mark)
    assert delays == [50, 100, 50]
    assert sup.stop() == 0


def test_crash_while_restarting_is_retried(sup):
    """A worker that dies before ready during a restart counts as a failed
    restart and is started again (OTP's try_again_restart)."""
    sup.start("""
        [root]
        strategy = "one_for_one"
        intensity = 10

        [[root.children]]
        id = "slow"
        actors = [{ type = "slow", args = { init_ms = 300 } }]
    """)
    mark = sup.mark()
    sup.kill_child("root/slow", signal.SIGKILL)
    spawned = sup.wait_event(ev("spawned", "root/slow"), since=mark)
    os.kill(spawned["pid"], signal.SIGKILL)  # still in its 300 ms init
    ready = sup.wait_event(ev("ready", "root/slow"), since=mark)
    events = sup.events()[mark:]
    seq = [(e["event"], e.get("incarnation")) for e in events
           if e.get("child") == "root/slow" and e["event"] != "restart_scheduled"]
    inc = spawned["incarnation"]
    assert seq == [("exited", inc - 1), ("spawned", inc), ("exited", inc),
                   ("spawned", inc + 1), ("ready", inc + 1)], events
    failed = [e for e in events if e["event"] == "exited"][1]
    assert failed["reason"] == "signal" and failed["signal"] == 9
    assert ready["pid"] != spawned["pid"]
    assert sum(e["event"] == "restart_scheduled" for e in events) == 2
    assert sup.stop() == 0


WRAPPER = """#!/bin/sh
exec "{worker}" "$@"
"""


def test_spawn_failure_during_restart_retries_and_recovers(sup):
    """The worker binary vanishes: restarts fail to spawn (reason
    start_failure), are retried with backoff and count toward intensity; once
    the binary is back the child runs again, and no fd leaked."""
    wrapper = sup.dir / "worker-wrapper"
    wrapper.write_text(WRAPPER.format(worker=WORKER_BIN))
    wrapper.chmod(0o755)
    sup.start(f"""
        [tree]
        zygote = false  # the wrapper script must run at every start
        [root]
        strategy = "one_for_one"
        intensity = 1000
        period_ms = 60000

        [[root.children]]
        id = "w"
        binary = "{wrapper}"
        actors = [{{ type = "echo" }}]
        backoff = {{ initial_ms = 40, multiplier = 1, jitter = 0, max_ms = 40 }}
    """)
    fds_before = open_fds(sup.pid)
    hidden = sup.dir / "worker-wrapper.hidden"
    wrapper.rename(hidden)
    mark = sup.mark()
    sup.kill_child("root/w", signal.SIGKILL)
    # Wait for a few failed spawns.
    deadline = time.monotonic() + 10
    while sum(e["event"] == "exited" and e["reason"] == "start_failure"
              for e in sup.events()[mark:]) < 3:
        assert time.monotonic() < deadline, sup.events()[mark:]
        time.sleep(0.01)
    hidden.rename(wrapper)
    sup.wait_event(ev("ready", "root/w"), since=mark)
    failure = sup.find(ev("exited", "root/w", reason="start_failure"), since=mark)
    assert "worker-wrapper" in failure["reason_text"], failure
    assert sup.running()
    wait_until(lambda: len(open_fds(sup.pid)) == len(fds_before), timeout=2,
               what=f"fd count back to {len(fds_before)} (now {open_fds(sup.pid)})")
    assert sup.stop() == 0


def test_spawn_failure_escalates_through_nested_supervisor(sup):
    wrapper = sup.dir / "worker-wrapper"
    wrapper.write_text(WRAPPER.format(worker=WORKER_BIN))
    wrapper.chmod(0o755)
    sup.start(f"""
        [tree]
        zygote = false  # the wrapper script must run at every start
        [root]
        strategy = "one_for_one"
        intensity = 3

        [[root.children]]
        id = "other"
        actors = [{{ type = "echo" }}]

        [[root.children]]
        id = "mid"
        type = "supervisor"
        intensity = 1

          [[root.children.children]]
          id = "w"
          binary = "{wrapper}"
          actors = [{{ type = "echo" }}]
    """)
    wrapper.unlink()
    mark = sup.mark()
    sup.kill_child("root/mid/w", signal.SIGKILL)
    assert sup.wait_exit() == 1
    events = sup.events()[mark:]
    assert [e["node"] for e in events if e["event"] == "escalate"] == ["root/mid", "root"]
    # root restarted mid 3 times (its intensity), each restart failing to start.
    mid_failed = [e for e in events if e["event"] == "supervisor_stopped" and
                  e["node"] == "root/mid" and e["reason"] == "start_failure"]
    assert len(mid_failed) == 3, events
    assert sup.find(stopped("root/other"), since=mark)
    assert "root supervisor gave up" in sup.log()


SLOW_ON_FLAG = """#!/bin/sh
# Starts slowly (longer than start_timeout_ms) while {flag} exists.
if [ "$1" = "--bulkhead-worker" ] && [ -e "{flag}" ]; then sleep 3; fi
exec "{worker}" "$@"
"""


def test_ready_timeout_during_restart_is_retried(sup):
    flag = sup.dir / "be-slow"
    wrapper = sup.dir / "slow-wrapper"
    wrapper.write_text(SLOW_ON_FLAG.format(flag=flag, worker=WORKER_BIN))
    wrapper.chmod(0o755)
    sup.start(f"""
        [tree]
        zygote = false  # the wrapper script must run at every start
        [root]
        strategy = "one_for_one"
        intensity = 10

        [[root.children]]
        id = "w"
        binary = "{wrapper}"
        start_timeout_ms = 300
        actors = [{{ type = "echo" }}]
    """)
    flag.touch()
    mark = sup.mark()
    sup.kill_child("root/w", signal.SIGKILL)
    timed_out = sup.wait_event(ev("exited", "root/w", reason="ready_timeout"), since=mark)
    spawned = sup.find(ev("spawned", "root/w", incarnation=timed_out["incarnation"]), since=mark)
    assert timed_out["t_ms"] - spawned["t_ms"] >= 295
    flag.unlink()
    sup.wait_event(ev("ready", "root/w"), since=mark)
    assert sup.running()
    assert "not ready within 300 ms: killing it" in sup.log()
    assert sup.stop() == 0
