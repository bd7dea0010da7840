"""Dynamic children (simple_one_for_one) started and terminated at run time.

A client attached to the supervisor (examples/client: bulkhead-example-client)
asks for new children from the template and for their termination, as OTP's
supervisor:start_child/2 and terminate_child/2 do for simple_one_for_one.
"""
import signal
import subprocess

from conftest import BIN_DIR, ev, stopped

CLIENT = BIN_DIR / "bulkhead-example-client"

TREE = """
    [root]
    strategy = "one_for_one"
    intensity = 10

    [[root.children]]
    id = "jobs"
    type = "supervisor"
    strategy = "simple_one_for_one"
    instances = 1
    template = { actors = [{ type = "echo" }], restart = "permanent", shutdown = 2000 }

    [[root.children]]
    id = "plain"
    actors = [{ type = "counter" }]
"""


def ask(sup, *args):
    return subprocess.run([str(CLIENT), str(sup.dir / "s.sock"), *args], capture_output=True,
                          text=True, timeout=30)


def start(sup):
    sup.start(TREE, extra_args=("--socket", str(sup.dir / "s.sock")))


def test_start_child_adds_a_ready_worker_from_the_template(sup):
    start(sup)
    mark = sup.mark()
    r = ask(sup, "--start-child", "root/jobs")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "root/jobs/2"
    ready = sup.wait_event(ev("ready", "root/jobs/2"), since=mark)
    assert ready["pid"] > 0
    r = ask(sup, "--start-child", "root/jobs")
    assert r.stdout.strip() == "root/jobs/3"
    # The new children are supervised like the boot-time one: a crash restarts it.
    mark = sup.mark()
    sup.kill_child("root/jobs/3", signal.SIGKILL)
    again = sup.wait_event(ev("ready", "root/jobs/3"), since=mark)
    assert again["incarnation"] == 2


def test_terminate_child_stops_it_for_good(sup):
    start(sup)
    assert ask(sup, "--start-child", "root/jobs").returncode == 0
    mark = sup.mark()
    r = ask(sup, "--terminate-child", "root/jobs/2")
    assert r.returncode == 0, r.stderr
    sup.wait_event(stopped("root/jobs/2"), since=mark)
    events = sup.events()[mark:]
    assert not any(e["event"] in ("spawned", "restart_scheduled") and e.get("child") == "root/jobs/2"
                   for e in events)
    # the boot-time instance is untouched
    assert not any(e.get("child") == "root/jobs/1" for e in events)


def test_start_child_errors_are_clear(sup):
    start(sup)
    r = ask(sup, "--start-child", "root")
    assert r.returncode == 1 and "is not a simple_one_for_one supervisor" in r.stderr
    r = ask(sup, "--start-child", "root/nowhere")
    assert r.returncode == 1 and "root/nowhere" in r.stderr
    r = ask(sup, "--terminate-child", "root/plain")
    assert r.returncode == 1 and "not a child of a simple_one_for_one supervisor" in r.stderr


def test_client_cannot_attach_to_a_missing_socket(tmp_path):
    r = subprocess.run([str(CLIENT), str(tmp_path / "none.sock"), "echo"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1
    assert "cannot attach" in r.stderr and "is the supervisor running?" in r.stderr
