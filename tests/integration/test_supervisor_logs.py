"""Logs: each worker's stdout and stderr captured line by line, prefixed with
child id, pid and stream; partial lines flushed at exit; floods rate-limited
and counted without slowing the supervisor; per-child log files rotated by
size; bad log keys reported like every config error."""

import os
import re
import signal
import subprocess
import textwrap
import time

import pytest

from conftest import BIN_DIR, WORKER_BIN, alive, ev, line_of, open_fds, run_supervisor, wait_until


def cpu_ticks(pid):
    """utime + stime of a process, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def ready_pid(sup, child, since=0):
    return sup.wait_event(ev("ready", child), since=since)["pid"]


@pytest.mark.parametrize("zygote", [True, False], ids=["zygote", "exec"])
def test_stdout_and_stderr_lines_carry_child_pid_and_stream(sup, zygote):
    sup.start(f"""
        [tree]
        zygote = {str(zygote).lower()}
        [root]
        [[root.children]]
        id = "a"
        actors = [{{ type = "printer", args = {{ out = "hello from a", err = "oops from a" }} }}]
        [[root.children]]
        id = "b"
        actors = [{{ type = "printer", args = {{ out = "hello from b", err = "oops \\u001b[31m b" }} }}]
    """, extra_args=("--log-file", "supervisor-copy.log"))
    a, b = ready_pid(sup, "root/a"), ready_pid(sup, "root/b")
    want = [f"[root/a {a} out] hello from a", f"[root/a {a} err] oops from a",
            f"[root/b {b} out] hello from b",
            f"[root/b {b} err] oops ?[31m b"]  # an escape sequence is defused
    wait_until(lambda: all(w in sup.log() for w in want), timeout=5,
               what=f"{want} in the log:\n{sup.log_tail()}")
    log = sup.log()
    # stdout lines at info, stderr lines at warning.
    assert re.search(rf"info +\[root/a {a} out\] hello from a", log), log
    assert re.search(rf"warning +\[root/a {a} err\] oops from a", log), log
    assert "\x1b[31m b" not in log
    if zygote:  # both were forked by the zygote, not started by exec after a failure
        assert "zygote for" in log and "failed" not in log, log
    assert sup.stop() == 0
    # --log-file has the same lines, with dates.
    copy = (sup.dir / "supervisor-copy.log").read_text()
    assert all(w in copy for w in want), copy
    assert "tree started" in copy


def test_partial_last_line_flushed_when_the_worker_crashes(sup):
    sup.start("""
        [root]
        intensity = 5
        [[root.children]]
        id = "w"
        actors = [{ type = "printer", args = { partial = "last words, no newline", long = 10000 } },
                  { type = "crasher", args = { mode = "segv" } }]
    """)
    pid = ready_pid(sup, "root/w")
    wait_until(lambda: f"[root/w {pid} out] after the long line" in sup.log(), timeout=5,
               what="the line after the long one")
    log = sup.log()
    # A 10000-byte line is cut at 4096 with a marker; its rest is not a line.
    cut = [l for l in log.splitlines() if f"[root/w {pid} out] xxxx" in l]
    assert len(cut) == 1, cut
    assert cut[0].endswith("[line cut at 4096 bytes]") and cut[0].count("x") == 4096
    assert "last words" not in log, "an unfinished line was logged before the worker ended"
    fds = len(open_fds(sup.pid))
    mark = sup.mark()
    sup.kill_child("root/w", signal.SIGUSR1)  # the crasher segfaults
    sup.wait_event(ev("exited", "root/w", pid=pid, reason="signal"), since=mark)
    new = ready_pid(sup, "root/w", since=mark)
    wait_until(lambda: f"[root/w {pid} out] last words, no newline" in sup.log(), timeout=2,
               what="the partial line of the dead worker")
    # The same pipes are not reused: one set per incarnation, the old one closed.
    wait_until(lambda: len(open_fds(sup.pid)) == fds, timeout=2,
               what=f"{fds} open fds again (now {open_fds(sup.pid)})")
    assert new != pid
    assert sup.stop() == 0


def test_flooding_worker_is_rate_limited_and_does_not_slow_restarts(sup):
    sup.start("""
        [root]
        intensity = 10
        [[root.children]]
        id = "flood"
        log_rate = 200
        actors = [{ type = "flooder" }]
        [[root.children]]
        id = "calm"
        actors = [{ type = "printer", args = { out = "calm and ready" } }]
        [[root.children]]
        id = "gateway"
        actors = [{ type = "relay", name = "gateway" }]
        [[root.children]]
        id = "api"
        actors = [{ type = "echo", name = "api" }]
    """, extra_args=("--socket", str(sup.dir / "s.sock")))
    flood = ready_pid(sup, "root/flood")
    t0 = time.monotonic()
    wait_until(lambda: "lines of output dropped" in sup.log(), timeout=5,
               what="a report of dropped lines")
    # The neighbour restarts promptly while the flood goes on (several times).
    for _ in range(3):
        mark = sup.mark()
        killed = time.monotonic()
        sup.kill_child("root/calm", signal.SIGKILL)
        pid = ready_pid(sup, "root/calm", since=mark)
        took = time.monotonic() - killed
        assert took < 2.0, f"restart took {took:.2f} s next to a flooding worker"
        wait_until(lambda: f"[root/calm {pid} out] calm and ready" in sup.log(), timeout=2,
                   what="the restarted neighbour's line")
    # Messaging between two other workers goes on as usual.
    for n in range(3):
        asked = time.monotonic()
        r = subprocess.run([str(BIN_DIR / "bulkhead-example-client"), str(sup.dir / "s.sock"),
                            "--relay", "gateway", "api", str(n)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and f"api replied {n}" in r.stdout, r.stderr
        assert time.monotonic() - asked < 2.0
    # Throttled, the flood costs the supervisor almost nothing (unthrottled,
    # reading and dropping everything took about a quarter of a core).
    cpu0, wall0 = cpu_ticks(sup.pid), time.monotonic()
    time.sleep(1.0)
    cpu = (cpu_ticks(sup.pid) - cpu0) / os.sysconf("SC_CLK_TCK")
    assert cpu < 0.1 * (time.monotonic() - wall0), f"supervisor used {cpu:.2f} s of CPU in 1 s"
    stop_at = time.monotonic()
    assert sup.stop() == 0
    assert time.monotonic() - stop_at < 3.0, "stopping took long next to a flooding worker"
    elapsed = time.monotonic() - t0
    exited = sup.find(ev("exited", "root/flood", pid=flood))
    assert exited["output_dropped"] > 0, exited
    log = sup.log()
    assert re.search(rf"root/flood: pid {flood} .* \({exited['output_dropped']} output lines "
                     r"dropped\)", log), log[-3000:]
    # At most the burst (5 s worth) plus the rate over the time it ran.
    logged = log.count(f"[root/flood {flood} out] flood ")
    assert 0 < logged <= 200 * 5 + 200 * (elapsed + 1), logged


def test_log_file_is_rotated_by_size(sup):
    (sup.dir / "logs").mkdir()
    sup.start("""
        [root]
        [[root.children]]
        id = "w"
        log_file = "logs/w.log"
        log_max_bytes = 16384
        log_max_files = 3
        log_rate = 0
        actors = [{ type = "printer", args = { lines = 3000, err = "done printing" } }]
    """)
    pid = ready_pid(sup, "root/w")
    logs = sup.dir / "logs"
    wait_until(lambda: (logs / "w.log").exists() and
               f"[root/w {pid} err] done printing" in (logs / "w.log").read_text(), timeout=5,
               what="the last line in logs/w.log")
    assert sup.stop() == 0
    names = sorted(p.name for p in logs.iterdir())
    assert names == ["w.1.log", "w.2.log", "w.3.log", "w.log"], names
    for p in logs.iterdir():
        assert 0 < p.stat().st_size <= 16384, (p.name, p.stat().st_size)
    # Newest last: w.log ends the story, w.3.log is the oldest kept.
    text = {n: (logs / n).read_text() for n in names}
    assert f"[root/w {pid} out] printer line 2999" in text["w.log"]
    firsts = [int(re.search(r"printer line (\d+)", text[n]).group(1))
              for n in ("w.3.log", "w.2.log", "w.1.log")]
    assert firsts == sorted(firsts) and firsts[0] > 0, firsts  # the oldest were rotated away
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \[root/w ", text["w.log"])
    # The lines went to the child's file, not to the supervisor's log.
    assert "printer line" not in sup.log()


BAD_LOG_CASES = {
    "missing_dir": ('log_file = "no/such/dir/w.log"', "root.children[0].log_file",
                    "does not exist"),
    "max_bytes_without_file": ("log_max_bytes = 100000", "root.children[0].log_max_bytes",
                               "needs log_file"),
    "max_bytes_too_small": ('log_file = "w.log"\nlog_max_bytes = 100',
                            "root.children[0].log_max_bytes", "out of range"),
    "negative_rate": ("log_rate = -1", "root.children[0].log_rate", "out of range"),
    "file_not_a_string": ("log_file = 3", "root.children[0].log_file", "must be a string"),
}


@pytest.mark.parametrize("case", list(BAD_LOG_CASES))
def test_bad_log_keys_are_config_errors_with_position(tmp_path, case):
    keys, key, words = BAD_LOG_CASES[case]
    text = "[root]\n[[root.children]]\nid = \"w\"\n" + keys + \
        "\nactors = [{ type = \"echo\" }]\n"
    p, tree, events = run_supervisor(tmp_path, text)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, err
    offending = keys.splitlines()[-1]
    assert errors[0].startswith(f"error: {tree}:{line_of(text, offending)}:"), err
    assert f"key '{key}'" in errors[0] and words in errors[0], err
    assert not events.exists()


def test_shared_and_template_log_files_are_rejected(tmp_path):
    text = textwrap.dedent("""
        [root]
        [[root.children]]
        id = "a"
        log_file = "same.log"
        actors = [{ type = "echo" }]
        [[root.children]]
        id = "b"
        log_file = "./same.log"   # the same file
        actors = [{ type = "echo" }]
        [[root.children]]
        id = "pool"
        type = "supervisor"
        strategy = "simple_one_for_one"
        template = { log_file = "pool.log", actors = [{ type = "echo" }] }
    """)
    p, tree, events = run_supervisor(tmp_path, text)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 2, err
    assert errors[0].startswith(f"error: {tree}:{line_of(text, './same.log')}:"), err
    assert "already the log file of root.children[0].log_file" in errors[0], err
    assert "must contain {id}" in errors[1], err


def test_template_log_file_gets_each_instance_id(sup):
    sup.start("""
        [root]
        [[root.children]]
        id = "pool"
        type = "supervisor"
        strategy = "simple_one_for_one"
        instances = 2
        template = { log_file = "pool-{id}.log", actors = [{ type = "printer", args = { out = "hi" } }] }
    """)
    p1, p2 = ready_pid(sup, "root/pool/1"), ready_pid(sup, "root/pool/2")
    for n, pid in ((1, p1), (2, p2)):
        f = sup.dir / f"pool-{n}.log"
        wait_until(lambda: f.exists() and f"[root/pool/{n} {pid} out] hi" in f.read_text(),
                   timeout=5, what=f"{f.name} with its line")
    assert sup.stop() == 0


ESCAPING_WRAPPER = """#!/bin/sh
# A worker whose grandchild leaves its process group and keeps its stdout and stderr.
if [ "$1" = "--bulkhead-worker" ]; then
    setsid sh -c 'echo "grandchild $$ here"; exec sleep 30' 3>&- 4>&- 5>&- &
fi
exec "{worker}" "$@"
"""


def test_grandchild_holding_the_pipes_does_not_keep_them_open(sup):
    wrapper = sup.dir / "worker-with-escapee"
    wrapper.write_text(ESCAPING_WRAPPER.format(worker=WORKER_BIN))
    wrapper.chmod(0o755)
    sup.start(f"""
        [tree]
        zygote = false
        [root]
        intensity = 5
        [[root.children]]
        id = "w"
        binary = "{wrapper}"
        actors = [{{ type = "printer", args = {{ out = "worker up" }} }}]
    """)
    pid = ready_pid(sup, "root/w")
    found = wait_until(lambda: re.search(rf"\[root/w {pid} out\] grandchild (\d+) here", sup.log()),
                       timeout=5, what="the grandchild's line")
    escapee = int(found.group(1))
    try:
        fds = len(open_fds(sup.pid))
        mark = sup.mark()
        sup.kill_child("root/w", signal.SIGKILL)
        new = ready_pid(sup, "root/w", since=mark)
        # The escapee survives the group kill and still holds the old pipes'
        # write ends; the supervisor closed its read ends all the same.
        assert alive(escapee)
        wait_until(lambda: len(open_fds(sup.pid)) == fds, timeout=2,
                   what=f"{fds} open fds (now {open_fds(sup.pid)})")
        found = wait_until(
            lambda: re.search(rf"\[root/w {new} out\] grandchild (\d+) here", sup.log()),
            timeout=5, what="the new grandchild's line")
        second = int(found.group(1))
    finally:
        os.kill(escapee, signal.SIGKILL)
    os.kill(second, signal.SIGKILL)
    assert sup.stop() == 0


def test_unwritable_supervisor_log_file_is_a_usage_error(tmp_path):
    (tmp_path / "plain").write_text("a file, not a directory")
    text = '[root]\n[[root.children]]\nid = "w"\nactors = [{ type = "echo" }]\n'
    p, tree, events = run_supervisor(tmp_path, text, "--log-file", str(tmp_path / "plain/s.log"))
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert "cannot write log file" in err and "plain/s.log" in err, err
    assert not events.exists()
