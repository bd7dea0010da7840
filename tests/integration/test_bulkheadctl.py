"""bulkheadctl against a real supervisor: every subcommand in both output
forms, its errors and exit codes, and a kill-and-observe run driven only
through bulkheadctl (faults with `kill`, observation with `events`).

Exit codes under test (tools/bulkheadctl/main.cpp, README "bulkheadctl"):
0 ok, 1 failed, 2 usage, 3 unknown child/actor, 4 not applicable now,
5 supervisor unreachable, 6 unsafe socket.
"""
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import BIN_DIR, WAIT, ev, run_supervisor, wait_until

CTL = BIN_DIR / "bulkheadctl"

TREE = """
    [tree]
    name = "ctltest"

    [root]
    strategy = "one_for_one"
    intensity = 20
    period_ms = 10000

    [[root.children]]
    id = "api"
    actors = [{ type = "echo", name = "api" }, { type = "counter", name = "requests" }]
    shutdown = 2000

    [[root.children]]
    id = "spare"
    actors = [{ type = "counter", name = "spare" }]

    [[root.children]]
    id = "fragile"
    type = "supervisor"
    strategy = "one_for_one"
    intensity = 1
    period_ms = 10000

      [[root.children.children]]
      id = "leaf"
      actors = [{ type = "echo", name = "leaf" }]

    [[root.children]]
    id = "jobs"
    type = "supervisor"
    strategy = "simple_one_for_one"
    instances = 1
    template = { actors = [{ type = "echo" }], restart = "transient", shutdown = 1000 }
"""


def start(sup, *extra):
    run = sup.dir / "run"
    run.mkdir(mode=0o700, exist_ok=True)
    os.chmod(run, 0o700)
    sup.ctl_socket = run / "c.ctl"
    sup.start(TREE, extra_args=("--socket", str(run / "a.sock"), "--control-socket",
                                str(sup.ctl_socket), *extra))
    return sup


def ctl(sup, *args, socket=None, env=None, timeout=30):
    cmd = [str(CTL)]
    if socket is not False:
        cmd += ["--socket", str(socket or sup.ctl_socket)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                          env=env)


def ctl_json(sup, *args):
    r = ctl(sup, *args, "--json")
    assert r.stdout.strip(), f"no JSON output (rc {r.returncode}): {r.stderr}"
    return r.returncode, json.loads(r.stdout)


def status(sup):
    rc, s = ctl_json(sup, "status")
    assert rc == 0
    return {c["path"]: c for c in s["children"]}


class EventStream:
    """A running `bulkheadctl events`, its stdout lines collected by a thread."""

    def __init__(self, sup, *args):
        self.proc = subprocess.Popen([str(CTL), "--socket", str(sup.ctl_socket), "events", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        # Subscribed once it says so on stderr.
        first = self.proc.stderr.readline()
        assert "streaming events" in first, first
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def json(self):
        return [json.loads(l) for l in list(self.lines)]

    def wait(self, pred, what, since=0):
        def found():
            for e in self.json()[since:]:
                if pred(e):
                    return e
            return None

        return wait_until(found, what=what)

    def wait_line(self, needle):
        return wait_until(lambda: next((l for l in list(self.lines) if needle in l), None),
                          what=f"an event line with {needle!r}")

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=WAIT)
        self._t.join(timeout=WAIT)
        self.proc.stdout.close()
        self.proc.stderr.close()


# --------------------------------------------------------------------------


def test_status_shows_the_tree_as_a_table_and_as_json(sup):
    start(sup)
    pids = sup.pids()
    r = ctl(sup, "status")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("tree ctltest  supervisor pid %d" % sup.pid)
    header = r.stdout.splitlines()[1].split()
    assert header[:5] == ["CHILD", "KIND", "STRATEGY", "PID", "STATE"]
    api_row = next(l for l in r.stdout.splitlines() if l.startswith("api "))
    assert str(pids["root/api"]) in api_row and "running" in api_row
    leaf_row = next(l for l in r.stdout.splitlines() if "leaf" in l)
    assert leaf_row.startswith("  leaf")  # indented under its supervisor
    rc, s = ctl_json(sup, "status")
    assert rc == 0 and s["ok"] and s["tree"] == "ctltest" and s["pid"] == sup.pid
    kids = {c["path"]: c for c in s["children"]}
    assert list(kids) == ["root/api", "root/spare", "root/fragile", "root/fragile/leaf",
                          "root/jobs", "root/jobs/1"]
    api = kids["root/api"]
    assert api["pid"] == pids["root/api"] and api["state"] == "running"
    assert api["kind"] == "worker" and api["restart"] == "permanent"
    assert api["actors"] == ["api", "requests"] and api["restarts"] == 0
    assert api["uptime_ms"] > 0 and api["mailbox_bytes"] == 0
    assert kids["root/jobs"]["kind"] == "supervisor"
    assert kids["root/jobs"]["strategy"] == "simple_one_for_one"
    assert kids["root/fragile/leaf"]["depth"] == 2


def test_kill_and_observe_through_bulkheadctl_only(sup):
    start(sup)
    stream = EventStream(sup, "--json")
    human = EventStream(sup)
    try:
        old = status(sup)["root/api"]["pid"]
        r = ctl(sup, "kill", "api")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"sent SIGKILL to api (pid {old})"
        exited = stream.wait(lambda e: e["event"] == "exited" and e.get("child") == "root/api",
                             "exited(root/api)")
        assert exited["reason"] == "signal" and exited["signal"] == 9 and exited["pid"] == old
        sched = stream.wait(lambda e: e["event"] == "restart_scheduled" and
                            e.get("child") == "root/api", "restart_scheduled(root/api)")
        assert sched["delay_ms"] == 0
        ready = stream.wait(lambda e: e["event"] == "ready" and e.get("child") == "root/api",
                            "ready(root/api)")
        assert ready["incarnation"] == 2 and ready["pid"] != old
        names = [e["event"] for e in stream.json() if e.get("child") == "root/api"]
        assert names[:5] == ["kill_requested", "exited", "restart_scheduled", "spawned", "ready"]
        after = status(sup)["root/api"]
        assert after["restarts"] == 1 and after["last_exit"] == "killed by SIGKILL (9)"
        # The readable form says the same.
        line = human.wait_line("killed by SIGKILL (9)")
        assert "exited" in line and "root/api" in line and f"pid {old}" in line

        # Two crashes of fragile/leaf exceed fragile's intensity (1): it escalates.
        rc, k = ctl_json(sup, "kill", "fragile/leaf", "--signal", "SEGV")
        assert rc == 0 and k["signal"] == 11
        stream.wait(lambda e: e["event"] == "ready" and e.get("child") == "root/fragile/leaf" and
                    e["incarnation"] == 2, "leaf restarted")
        assert ctl(sup, "kill", "root/fragile/leaf", "-s", "9").returncode == 0
        esc = stream.wait(lambda e: e["event"] == "escalate", "escalate")
        assert esc["node"] == "root/fragile" and esc["cause"] == "root/fragile/leaf"
        stream.wait(lambda e: e["event"] == "supervisor_started" and
                    e.get("child") == "root/fragile", "fragile restarted by root")
        assert status(sup)["root/fragile"]["restarts"] == 1

        # --child filters, -n stops after N events.
        only = subprocess.Popen([str(CTL), "--socket", str(sup.ctl_socket), "events", "--json",
                                 "--child", "spare", "-n", "3"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        assert "streaming events" in only.stderr.readline()
        assert ctl(sup, "kill", "api").returncode == 0
        assert ctl(sup, "kill", "spare").returncode == 0
        out, _ = only.communicate(timeout=WAIT)
        assert only.returncode == 0
        got = [json.loads(l) for l in out.splitlines()]
        assert [e["event"] for e in got] == ["kill_requested", "exited", "restart_scheduled"]
        assert all(e["child"] == "root/spare" for e in got)

        # Shut down: the stream shows the tree stopping, then ends by itself.
        r = ctl(sup, "shutdown")
        assert r.returncode == 0 and r.stdout.strip() == "the tree stopped", r.stderr
        assert stream.proc.wait(timeout=WAIT) == 0
        assert human.proc.wait(timeout=WAIT) == 0
        stream._t.join(timeout=WAIT)
        last = stream.json()
        assert any(e["event"] == "stopping" and e.get("child") == "root/api" for e in last)
        assert any(e["event"] == "supervisor_stopped" and e.get("node") == "root" for e in last)
        assert sup.wait_exit() == 0
        assert not sup.ctl_socket.exists()  # removed at exit
        r = ctl(sup, "status")
        assert r.returncode == 5 and "cannot reach the supervisor" in r.stderr
    finally:
        stream.close()
        human.close()


def test_stop_start_restart_and_their_json(sup):
    start(sup)
    r = ctl(sup, "stop", "spare")
    assert r.returncode == 0 and r.stdout.strip() == "root/spare stopped", r.stderr
    s = status(sup)["root/spare"]
    assert s["state"] == "idle" and s["pid"] == 0 and s["last_exit_kind"] == "shutdown"
    time.sleep(0.2)  # a stopped child stays stopped: not restarted
    assert status(sup)["root/spare"]["state"] == "idle"
    rc, out = ctl_json(sup, "start", "spare")
    assert rc == 0 and out["ok"] and out["code"] == "ok"
    s = status(sup)["root/spare"]
    assert s["state"] == "running" and s["incarnation"] == 2 and s["pid"] > 0
    # start of a running child: not applicable (4)
    r = ctl(sup, "start", "spare")
    assert r.returncode == 4 and "is running, not stopped" in r.stderr
    r = ctl(sup, "restart", "root/spare")
    assert r.returncode == 0 and r.stdout.startswith("root/spare running (pid "), r.stderr
    assert status(sup)["root/spare"]["incarnation"] == 3
    assert status(sup)["root/spare"]["restarts"] == 0  # operator restarts are not crashes
    rc, out = ctl_json(sup, "restart", "fragile")
    assert rc == 0 and out["message"] == "root/fragile running"
    assert sup.find(ev("supervisor_stopped", "root/fragile"))


def test_terminate_and_delete(sup):
    start(sup)
    r = ctl(sup, "delete", "spare")
    assert r.returncode == 4 and "stop or terminate it first" in r.stderr
    rc, out = ctl_json(sup, "delete", "spare")
    assert rc == 4 and out == {"ok": False, "code": "not_applicable",
                               "message": "root/spare is running: stop or terminate it first"}
    r = ctl(sup, "terminate", "spare")
    assert r.returncode == 0 and r.stdout.strip() == "root/spare stopped"
    r = ctl(sup, "delete", "spare")
    assert r.returncode == 0 and r.stdout.strip() == "root/spare deleted"
    assert "root/spare" not in status(sup)
    assert sup.find(ev("child_deleted", "root/spare"))
    r = ctl(sup, "start", "spare")
    assert r.returncode == 3 and "no child 'spare'" in r.stderr
    # A dynamic child is removed by terminate (OTP terminate_child).
    rc, out = ctl_json(sup, "terminate", "jobs/1")
    assert rc == 0 and out["message"] == "root/jobs/1 terminated (removed)"
    assert status(sup)["root/jobs/1"]["state"] == "deleted"
    r = ctl(sup, "start", "jobs/1")
    assert r.returncode == 4 and "was deleted" in r.stderr


def test_start_child_under_simple_one_for_one(sup):
    start(sup)
    r = ctl(sup, "start-child", "jobs")
    assert r.returncode == 0 and r.stdout.strip() == "root/jobs/2", r.stderr
    rc, out = ctl_json(sup, "start-child", "root/jobs")
    assert rc == 0 and out["child"] == "root/jobs/3"
    s = status(sup)
    assert s["root/jobs/3"]["state"] == "running" and s["root/jobs/3"]["pid"] > 0
    r = ctl(sup, "start-child", "fragile")
    assert r.returncode == 4 and "not simple_one_for_one" in r.stderr
    rc, out = ctl_json(sup, "start-child", "nosuch")
    assert rc == 3 and out["code"] == "unknown_child"


def test_call_and_cast_with_value_literals(sup):
    start(sup)
    lit = '{count, 3, [1, -2.5, "x\\n", #{a => true, "k": b"\\x01"}, null, \'Quoted atom\']}'
    r = ctl(sup, "call", "api", lit)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == \
        '{count, 3, [1, -2.5, "x\\n", #{a => true, "k" => b"\\x01"}, null, \'Quoted atom\']}'
    rc, out = ctl_json(sup, "call", "api", "{ok, [1, 2]}")
    assert rc == 0 and out["reply"] == "{ok, [1, 2]}"
    assert out["value"] == {"tuple": [{"atom": "ok"}, [1, 2]]}
    r = ctl(sup, "cast", "requests", "inc")
    assert r.returncode == 0 and r.stdout.strip() == "cast to requests: sent"
    rc, out = ctl_json(sup, "cast", "requests", "{add, 41}")
    assert rc == 0 and out["ok"]
    wait_until(lambda: ctl(sup, "call", "requests", "get").stdout.strip() == "42",
               what="the counter to reach 42")
    # Unknown actor: 3, both forms.
    r = ctl(sup, "call", "nosuch", "1")
    assert r.returncode == 3 and "no actor named 'nosuch'" in r.stderr
    rc, out = ctl_json(sup, "cast", "nosuch", "1")
    assert rc == 3 and out["ok"] is False
    # A bad literal: usage error (2), the caret under the column.
    r = ctl(sup, "call", "api", "[1, 2 3]")
    assert r.returncode == 2
    lines = r.stderr.splitlines()
    assert lines[0] == "bulkheadctl: bad value literal at column 7: expected ',' or ']'"
    assert lines[1] == "  [1, 2 3]" and lines[2] == "        ^"
    r = ctl(sup, "call", "api", '#{a => "unclosed}')
    assert r.returncode == 2 and "column 8: string is never closed" in r.stderr
    r = ctl(sup, "cast", "api", "Foo")
    assert r.returncode == 2 and "column 1" in r.stderr


def test_stats_prometheus_and_the_metrics_endpoint(sup):
    start(sup, "--metrics-port", "0")
    assert ctl(sup, "call", "api", "1").returncode == 0
    assert ctl(sup, "kill", "spare").returncode == 0
    sup.wait_event(ev("ready", "root/spare", incarnation=2))
    rc, out = ctl_json(sup, "stats")
    assert rc == 0
    st = {c["path"]: c for c in out["children"]}
    assert st["root/api"]["messages_in"] >= 1
    assert st["root/spare"]["restarts"] == 1 and st["root/spare"]["exits"] == {"signal": 1}
    r = ctl(sup, "stats")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0].split() == ["CHILD", "IN", "OUT", "BLOCKED", "FAILED",
                                                "DROPPED", "RING", "RESTARTS", "EXITS"]
    spare = next(l for l in r.stdout.splitlines() if l.startswith("root/spare "))
    assert spare.split()[-2:] == ["signal", "1"]
    r = ctl(sup, "stats", "--prometheus")
    assert r.returncode == 0
    text = r.stdout
    assert '# TYPE bulkhead_child_restarts_total counter' in text
    assert 'bulkhead_child_restarts_total{tree="ctltest",child="root/spare"} 1' in text
    assert 'bulkhead_child_exits_total{tree="ctltest",child="root/spare",reason="signal"} 1' in text
    m = re.search(r'bulkhead_child_messages_in_total\{tree="ctltest",child="root/api"\} (\d+)', text)
    assert m and int(m.group(1)) >= 1
    rc, out = ctl_json(sup, "stats", "--prometheus")
    assert rc == 0 and "bulkhead_child_up" in out["prometheus"]
    port = int(re.search(r"metrics at http://127\.0\.0\.1:(\d+)/metrics", sup.log()).group(1))
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        body = resp.read().decode()
    assert 'bulkhead_child_up{tree="ctltest",child="root/api"} 1' in body
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=WAIT)
    assert e.value.code == 404


def test_errors_have_clear_messages_and_exit_codes(sup, tmp_path):
    start(sup)
    r = ctl(sup, "kill", "nosuch")
    assert r.returncode == 3 and r.stderr.strip() == \
        "bulkheadctl: no child 'nosuch' in tree 'ctltest'"
    rc, out = ctl_json(sup, "stop", "nosuch")
    assert rc == 3 and out["code"] == "unknown_child"
    r = ctl(sup, "kill", "fragile")
    assert r.returncode == 4 and "is a supervisor" in r.stderr
    r = ctl(sup, "kill", "api", "--signal", "NOPE")
    assert r.returncode == 2 and "unknown signal 'NOPE'" in r.stderr
    assert ctl(sup).returncode == 2  # no subcommand
    assert ctl(sup, "frobnicate").returncode == 2
    assert ctl(sup, "stop").returncode == 2  # missing CHILD
    for args in (["--help"], ["status", "--help"], ["kill", "--help"], ["call", "--help"]):
        r = ctl(sup, *args)
        assert r.returncode == 0 and "Usage" in r.stdout, args
    # Supervisor not running: 5.
    gone = tmp_path / "gone"
    gone.mkdir(mode=0o700)
    r = ctl(sup, "status", socket=gone / "x.ctl")
    assert r.returncode == 5 and "cannot reach the supervisor" in r.stderr
    # A directory others can enter: 6.
    os.chmod(sup.ctl_socket.parent, 0o755)
    r = ctl(sup, "status")
    assert r.returncode == 6 and "mode 0755 lets others in (must be 0700)" in r.stderr
    os.chmod(sup.ctl_socket.parent, 0o700)
    # A socket others may connect to: 6.
    os.chmod(sup.ctl_socket, 0o666)
    r = ctl(sup, "status", "--json")
    assert r.returncode == 6 and "must be 0600" in r.stderr
    os.chmod(sup.ctl_socket, 0o600)
    # Another user's directory: 6.
    os.chown(sup.ctl_socket.parent, 65534, 65534)
    try:
        r = ctl(sup, "status")
        assert r.returncode == 6 and "owned by uid 65534, not by us" in r.stderr
    finally:
        os.chown(sup.ctl_socket.parent, os.getuid(), os.getgid())
    assert ctl(sup, "status").returncode == 0


def test_the_socket_is_found_by_env_and_default_directory(sup_factory, tmp_path, monkeypatch):
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    a = sup_factory("a")
    a.start(TREE)  # default sockets: $XDG_RUNTIME_DIR/bulkhead/ctltest.{sock,ctl}
    assert (xdg / "bulkhead" / "ctltest.ctl").exists()
    assert "control socket (bulkheadctl): %s" % (xdg / "bulkhead" / "ctltest.ctl") in a.log()
    assert (os.stat(xdg / "bulkhead").st_mode & 0o777) == 0o700
    assert (os.stat(xdg / "bulkhead" / "ctltest.ctl").st_mode & 0o777) == 0o600
    env = dict(os.environ)
    rc = ctl(a, "status", socket=False, env=env)
    assert rc.returncode == 0 and "tree ctltest" in rc.stdout, rc.stderr
    env_sock = dict(env, BULKHEAD_SOCKET=str(xdg / "bulkhead" / "ctltest.ctl"),
                    XDG_RUNTIME_DIR=str(tmp_path / "elsewhere"))
    assert ctl(a, "status", socket=False, env=env_sock).returncode == 0
    # Two trees: --tree picks one; without it, a usage error naming them.
    b = sup_factory("b")
    b.write_tree(TREE.replace('name = "ctltest"', 'name = "other"'))
    b.start()
    r = ctl(a, "status", socket=False, env=env)
    assert r.returncode == 2 and "several trees run" in r.stderr and "--tree" in r.stderr
    r = ctl(a, "status", "--json", "--tree", "other", socket=False, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == b.pid
    # A dead tree's socket file (its supervisor was SIGKILLed) is skipped.
    a.proc.kill()
    a.wait_exit()
    assert (xdg / "bulkhead" / "ctltest.ctl").exists()
    r = ctl(a, "status", "--json", socket=False, env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["pid"] == b.pid, r.stderr
    # Nothing running there: unreachable.
    empty = dict(env, XDG_RUNTIME_DIR=str(tmp_path / "nothing"))
    r = ctl(a, "status", socket=False, env=empty)
    assert r.returncode == 5 and "no supervisor listens on a control socket" in r.stderr


def test_supervisor_refuses_a_control_directory_others_can_enter(tmp_path):
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o755)
    p, _, _ = run_supervisor(tmp_path, TREE, "--control-socket", str(open_dir / "c.ctl"))
    assert p.returncode == 2
    assert b"refusing" in p.stderr and b"mode 0755 lets others in" in p.stderr
    assert not (open_dir / "c.ctl").exists()


def test_hostile_and_stalled_clients_never_stall_the_supervisor(sup):
    import signal
    import socket
    start(sup)
    # Garbage on the control socket: that connection is dropped, nothing else.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sup.ctl_socket))
    s.sendall(b"\xff" * 4096 + b"GET / HTTP/1.0\r\n\r\n")
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(sup.ctl_socket))  # says nothing at all
    # A subscriber that stops reading (SIGSTOP) while thousands of events flow.
    stalled = EventStream(sup, "--json")
    try:
        os.kill(stalled.proc.pid, signal.SIGSTOP)
        t0 = time.monotonic()
        for _ in range(1500):  # each SIGUSR2: one `stats` event per worker (5 here)
            sup.send_signal(signal.SIGUSR2)
            time.sleep(0.0003)
        n_stats = wait_until(lambda: len([e for e in sup.events() if e["event"] == "stats"]) >= 2000
                             and len([e for e in sup.events() if e["event"] == "stats"]),
                             what="the supervisor to write thousands of stats events")
        t = time.monotonic()
        r = ctl(sup, "status")
        assert r.returncode == 0 and time.monotonic() - t < 2.0, r.stderr
        assert ctl(sup, "kill", "spare").returncode == 0
        sup.wait_event(ev("ready", "root/spare", incarnation=2))
        assert sup.running() and time.monotonic() - t0 < 30
        # Resumed, the subscriber learns how many events it missed.
        os.kill(stalled.proc.pid, signal.SIGCONT)
        dropped = stalled.wait(lambda e: e["event"] == "dropped", "a dropped event")
        assert 0 < dropped["count"] < n_stats
    finally:
        os.kill(stalled.proc.pid, signal.SIGCONT)
        stalled.close()
        s.close()
        idle.close()


def test_the_control_endpoint_survives_running_out_of_descriptors(sup):
    import resource
    import socket
    start(sup)
    fds = [int(f) for f in os.listdir(f"/proc/{sup.pid}/fd")]
    limits = resource.prlimit(sup.pid, resource.RLIMIT_NOFILE)
    clients = []
    try:
        # No descriptor above those open now: accept() fails with EMFILE
        # once the few holes below are taken.
        resource.prlimit(sup.pid, resource.RLIMIT_NOFILE, (max(fds) + 1, limits[1]))
        for _ in range(48):  # fewer than the 64 connections it keeps
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(sup.ctl_socket))
            clients.append(s)
            if len(clients) >= 4 and "control: accept failed" in sup.log():
                break
            time.sleep(0.005)
        wait_until(lambda: "control: accept failed" in sup.log(), what="a failed accept logged")
    finally:
        resource.prlimit(sup.pid, resource.RLIMIT_NOFILE, limits)
        for s in clients:
            s.close()
    r = ctl(sup, "status", timeout=10)
    assert r.returncode == 0, r.stderr
    assert "control: accepting connections again" in sup.log()
    assert sup.running()
