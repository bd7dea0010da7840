"""The tree tools/run starts (examples/tree.toml): it boots, its workers call
each other, and a crash of one worker heals without touching the others."""
import signal
import subprocess

from conftest import BIN_DIR, REPO, ev

CLIENT = BIN_DIR / "bulkhead-example-client"
# The test runs the tree from its own directory: point python_path at examples/python.
EXAMPLE = (REPO / "examples" / "tree.toml").read_text().replace(
    'python_path = "python"', f'python_path = "{REPO / "examples" / "python"}"')


def ask(sup, *args):
    return subprocess.run([str(CLIENT), str(sup.dir / "s.sock"), *args], capture_output=True,
                          text=True, timeout=30)


def test_example_tree_boots_and_its_workers_call_each_other(sup):
    sup.start(EXAMPLE, extra_args=("--socket", str(sup.dir / "s.sock")))
    r = ask(sup, "--relay", "gateway", "api", "5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "api replied 5 through gateway"
    # kill the api worker: the gateway's next relayed call reaches the new incarnation
    before = sup.pids()
    mark = sup.mark()
    sup.kill_child("root/api", signal.SIGKILL)
    sup.wait_event(ev("ready", "root/api"), since=mark)
    r = ask(sup, "--relay", "gateway", "api", "6")
    assert r.returncode == 0, r.stderr
    assert "api replied 6" in r.stdout
    after = sup.pids()
    assert after["root/api"] != before["root/api"]
    assert after["root/gateway"] == before["root/gateway"]


def test_example_tree_hosts_a_python_actor_a_python_client_can_call(sup):
    sup.start(EXAMPLE, extra_args=("--socket", str(sup.dir / "s.sock")))
    r = subprocess.run(["/usr/bin/python3", str(REPO / "examples" / "python" / "client.py"),
                        str(sup.dir / "s.sock")], capture_output=True, text=True, timeout=30,
                       env={"PYTHONPATH": str(BIN_DIR.parent / "python")})
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["pycounter: 3", "pycounter: 13"]
