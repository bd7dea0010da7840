"""A user's own C++ program as a worker: examples/custom_worker (bulkhead-example-worker).

The example links libbulkhead-worker, registers its own actor types and calls
run(); the supervisor validates its actor types through --list-actors, starts
it, restarts it after a crash and stops it gracefully (terminate runs).
"""
import os
import signal
import subprocess

from conftest import BIN_DIR, REPO, ev, run_supervisor, stopped, wait_until

EXAMPLE_TREE = (REPO / "examples" / "custom_worker" / "tree.toml").read_text()


def test_example_worker_lists_its_own_actor_types():
    out = subprocess.run([str(BIN_DIR / "bulkhead-example-worker"), "--list-actors"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["greeter", "picky"]


def test_custom_worker_starts_restarts_and_stops_gracefully(sup):
    sup.start(EXAMPLE_TREE)
    assert "[en] ready to say 'hello'" in sup.log()
    assert "[fr] ready to say 'bonjour'" in sup.log()
    old = sup.pids()["root/greeters"]
    stock = sup.pids()["root/stock"]
    # SIGUSR1 reaches the actors as the info `usr1`: both greet.
    os.kill(old, signal.SIGUSR1)
    wait_until(lambda: "hello #1" in sup.log() and "bonjour #1" in sup.log(), what="greetings")
    # A crash of the custom worker restarts it alone (one_for_one).
    mark = sup.mark()
    sup.kill_child("root/greeters", signal.SIGKILL)
    e = sup.wait_event(ev("exited", "root/greeters"), since=mark)
    assert e["reason"] == "signal" and e["signal"] == signal.SIGKILL
    ready = sup.wait_event(ev("ready", "root/greeters"), since=mark)
    assert ready["pid"] != old and ready["incarnation"] == 2
    assert sup.pids()["root/stock"] == stock
    # A graceful stop runs the custom actors' terminate().
    mark = sup.mark()
    assert sup.stop() == 0
    sup.wait_event(stopped("root/greeters"), since=mark)
    assert "[en] goodbye after 0 greetings (shutdown)" in sup.log()


def test_custom_actor_init_failure_is_a_start_failure_with_its_reason(tmp_path):
    p, _, events = run_supervisor(tmp_path, """
        [root]
        [[root.children]]
        id = "picky"
        binary = "bulkhead-example-worker"
        actors = [{ type = "picky" }]
    """)
    assert p.returncode == 3
    err = p.stderr.decode()
    assert "args.port is required" in err
    assert "std::invalid_argument" in err


def test_unknown_type_for_custom_binary_is_a_config_error(tmp_path):
    p, tree, _ = run_supervisor(tmp_path, """
        [root]
        [[root.children]]
        id = "x"
        binary = "bulkhead-example-worker"
        actors = [{ type = "counter" }]
    """)
    assert p.returncode == 2
    err = p.stderr.decode()
    assert f"{tree}:6:" in err and "unknown actor type 'counter'" in err and "greeter, picky" in err
