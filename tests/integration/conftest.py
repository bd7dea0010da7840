"""Harness for the kill-and-observe integration tests of bulkhead-supervisor.

The suite runs the real binaries:

    bulkhead-supervisor TREE.toml --events events.jsonl

and watches the JSON-lines event log (see supervisor/runtime.cpp, `event(...)`)
while it kills workers.  Binaries are found through the environment variable
BULKHEAD_BIN_DIR (ctest sets it to <build>/bin); without it, <repo>/build/main/bin.

Every process a test starts carries a unique token in its environment
(BULKHEAD_PYTEST_TOKEN, inherited by every worker and grandchild), so the
teardown can find any leftover process precisely, whatever its pid, without
touching processes of other test runs.  Standard library only.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import textwrap
import time
import uuid
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN_DIR = Path(os.environ.get("BULKHEAD_BIN_DIR") or REPO / "build" / "main" / "bin")
SUPERVISOR_BIN = BIN_DIR / "bulkhead-supervisor"
WORKER_BIN = BIN_DIR / "bulkhead-worker"

TOKEN_VAR = "BULKHEAD_PYTEST_TOKEN"

# Default waits: generous (a noisy, shared 2-core VM) but never unbounded.
WAIT = 10.0
POLL = 0.002


def pytest_sessionstart(session):
    missing = [str(p) for p in (SUPERVISOR_BIN, WORKER_BIN) if not os.access(p, os.X_OK)]
    if missing:
        raise pytest.UsageError(
            "bulkhead binaries not found: " + ", ".join(missing) +
            " (build them, or set BULKHEAD_BIN_DIR to the directory holding them)")


# --------------------------------------------------------------------------
# /proc helpers


def proc_stat(pid: int):
    """(state, ppid, pgrp, starttime) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm may contain spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2]), int(rest[19])


def alive(pid: int) -> bool:
    """True if pid runs (a zombie counts as dead: it only waits to be reaped)."""
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def all_pids():
    for name in os.listdir("/proc"):
        if name.isdigit():
            yield int(name)


def pids_with_token(token: str):
    """Live processes whose environment carries `token` (ours, and only ours)."""
    needle = f"{TOKEN_VAR}={token}".encode()
    me = os.getpid()
    found = []
    for pid in all_pids():
        if pid == me:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
        except OSError:
            continue
        if needle in env.split(b"\0") and alive(pid):
            found.append(pid)
    return found


def zombie_children(ppid: int):
    out = []
    for pid in all_pids():
        st = proc_stat(pid)
        if st is not None and st[1] == ppid and st[0] == "Z":
            out.append(pid)
    return out


def shm_segments(pid: int):
    prefix = f"bulkhead-{pid}-"
    try:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(prefix))
    except FileNotFoundError:
        return []


def open_fds(pid: int):
    return sorted(int(n) for n in os.listdir(f"/proc/{pid}/fd"))


def wait_until(cond, timeout=WAIT, what="condition", interval=0.01):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first occurrence of `needle` in `text`."""
    idx = text.index(needle)
    return text.count("\n", 0, idx) + 1


def _no_core_dumps():
    # Crash tests segfault on purpose: no core files, whatever the host says.
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


# --------------------------------------------------------------------------
# Event predicates

def stopped_gracefully(e) -> bool:
    """An `exited` event of a stop the supervisor asked for, ended gracefully."""
    return e.get("reason") == "shutdown"


def stopped(child):
    """Predicate: `child` exited after a graceful stop (see stopped_gracefully)."""

    def pred(e):
        return e.get("event") == "exited" and e.get("child") == child and stopped_gracefully(e)

    pred.__name__ = f"stopped({child})"
    return pred


def ev(name, child=None, **fields):
    """Predicate: an event called `name` (of `child`, with these fields)."""

    def pred(e):
        if e.get("event") != name:
            return False
        if child is not None and e.get("child") != child:
            return False
        return all(e.get(k) == v for k, v in fields.items())

    pred.__name__ = f"{name}({child or ''}{', ' if fields else ''}" + \
        ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"
    return pred


# --------------------------------------------------------------------------
# The supervisor under test


class Supervisor:
    """One bulkhead-supervisor process running a tree written by the test."""

    def __init__(self, tmp_path: Path, token: str):
        self.dir = tmp_path
        self.token = token
        self.tree_path = tmp_path / "tree.toml"
        self.events_path = tmp_path / "events.jsonl"
        self.log_path = tmp_path / "supervisor.log"
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self._events: list[dict] = []
        self._partial = b""
        self._offset = 0
        self.seen_pids: set[int] = set()
        self._log_file = None

    # --- lifecycle ------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, "supervisor not started"
        return self.proc.pid

    def env(self):
        env = dict(os.environ)
        env[TOKEN_VAR] = self.token
        return env

    def write_tree(self, toml_text: str) -> Path:
        self.tree_path.write_text(textwrap.dedent(toml_text))
        return self.tree_path

    def start(self, toml_text: str | None = None, *, wait_started=True, extra_args=(),
              timeout=WAIT):
        """Starts the supervisor; by default waits for `tree_started`."""
        if toml_text is not None:
            self.write_tree(toml_text)
        assert self.proc is None, "one supervisor per Supervisor object"
        self._log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [str(SUPERVISOR_BIN), str(self.tree_path), "--events", str(self.events_path),
             *extra_args],
            stdin=subprocess.DEVNULL, stdout=self._log_file, stderr=subprocess.STDOUT,
            env=self.env(), cwd=self.dir, preexec_fn=_no_core_dumps)
        if wait_started:
            self.wait_event(ev("tree_started"), timeout=timeout)
        return self

    def poll(self):
        if self.proc is not None and self.returncode is None:
            self.returncode = self.proc.poll()
        return self.returncode

    def running(self) -> bool:
        return self.proc is not None and self.poll() is None

    def wait_exit(self, timeout=WAIT) -> int:
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"supervisor {self.pid} still running after {timeout:.1f} s\n--- log tail ---\n" +
                self.log_tail()) from None
        self._read_events()
        return self.returncode

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=WAIT) -> int:
        """Sends `sig` (SIGTERM) to the supervisor and returns its exit code."""
        if self.running():
            self.send_signal(sig)
        return self.wait_exit(timeout)

    def teardown(self):
        """Kills whatever is left and checks nothing of this test survives."""
        problems = []
        if self.proc is not None:
            if self.running():
                # A test that failed half-way: kill it (its workers die by
                # PDEATHSIG), then check for leftovers like after any test.
                try:
                    self.proc.kill()
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                problems.append("supervisor did not die after SIGKILL")
            self._read_events()
        if self._log_file is not None:
            self._log_file.close()
        # Workers die by PDEATHSIG or by the supervisor's own stop: give the
        # kernel a moment, then anything still alive is a leak.
        leftovers = []
        deadline = time.monotonic() + 3.0
        while True:
            leftovers = sorted(set(pids_with_token(self.token)) |
                               {p for p in self.seen_pids if alive(p) and self._is_ours(p)})
            if not leftovers or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        for p in leftovers:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if leftovers:
            problems.append(f"processes left behind: {leftovers}")
        if self.proc is not None:
            segs = shm_segments(self.pid)
            for s in segs:
                try:
                    os.unlink(f"/dev/shm/{s}")
                except OSError:
                    pass
            if segs:
                problems.append(f"shared memory segments left behind: {segs}")
        return problems

    def _is_ours(self, pid):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                return f"{TOKEN_VAR}={self.token}".encode() in f.read().split(b"\0")
        except OSError:
            return False

    # --- events -----------------------------------------------------------

    def _read_events(self):
        try:
            with open(self.events_path, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        data = self._partial + chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            e = json.loads(line)
            self._events.append(e)
            if e.get("event") in ("spawned", "ready", "exited", "stopping") and "pid" in e:
                self.seen_pids.add(e["pid"])

    def events(self) -> list[dict]:
        self._read_events()
        return list(self._events)

    def mark(self) -> int:
        """Index of the next event: pass as `since` to look only at later ones."""
        self._read_events()
        return len(self._events)

    def find(self, pred, since=0):
        for e in self.events()[since:]:
            if pred(e):
                return e
        return None

    def wait_event(self, pred, timeout=WAIT, since=0) -> dict:
        """Waits for the first event (index >= since) matching pred."""
        deadline = time.monotonic() + timeout
        i = since
        while True:
            self._read_events()
            while i < len(self._events):
                if pred(self._events[i]):
                    return self._events[i]
                i += 1
            if self.proc is not None and self.poll() is not None:
                self._read_events()
                if i == len(self._events):
                    raise AssertionError(
                        f"supervisor exited (code {self.returncode}) before event "
                        f"{getattr(pred, '__name__', pred)}\n--- log tail ---\n" +
                        self.log_tail())
                continue
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"timed out after {timeout:.1f} s waiting for event "
                    f"{getattr(pred, '__name__', pred)}; last events:\n" +
                    "\n".join(json.dumps(e) for e in self._events[-15:]) +
                    "\n--- log tail ---\n" + self.log_tail())
            time.sleep(POLL)

    def wait_index(self, pred, timeout=WAIT, since=0) -> int:
        e = self.wait_event(pred, timeout, since)
        return self._events.index(e, since)

    def pids(self) -> dict[str, int]:
        """Current pid of every worker child (None once it exited)."""
        cur: dict[str, int | None] = {}
        for e in self.events():
            if e.get("event") in ("spawned", "ready") and "child" in e:
                cur[e["child"]] = e["pid"]
            elif e.get("event") == "exited" and "child" in e:
                if cur.get(e["child"]) == e.get("pid"):
                    cur[e["child"]] = None
        return {k: v for k, v in cur.items() if v is not None}

    def kill_child(self, path: str, sig=signal.SIGKILL) -> int:
        pid = self.pids()[path]
        os.kill(pid, sig)
        return pid

    # --- log --------------------------------------------------------------

    def log(self) -> str:
        try:
            return self.log_path.read_bytes().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40) -> str:
        return "\n".join(self.log().splitlines()[-n:])


@pytest.fixture
def sup_factory(tmp_path):
    """Makes Supervisor objects (several per test if needed); tears them all down."""
    made: list[Supervisor] = []

    def make(subdir: str | None = None) -> Supervisor:
        d = tmp_path / (subdir or f"sup{len(made)}")
        d.mkdir(parents=True, exist_ok=True)
        s = Supervisor(d, uuid.uuid4().hex)
        made.append(s)
        return s

    yield make
    problems = []
    for s in made:
        problems += s.teardown()
    assert not problems, "; ".join(problems)


@pytest.fixture
def sup(sup_factory) -> Supervisor:
    return sup_factory("sup")


def run_supervisor(tmp_path: Path, toml_text: str, *args, timeout=WAIT):
    """Runs bulkhead-supervisor to completion (config checks, boot failures)."""
    tree = tmp_path / "tree.toml"
    tree.write_text(textwrap.dedent(toml_text))
    events = tmp_path / "events.jsonl"
    token = uuid.uuid4().hex
    env = dict(os.environ)
    env[TOKEN_VAR] = token
    try:
        p = subprocess.run([str(SUPERVISOR_BIN), str(tree), "--events", str(events), *args],
                           stdin=subprocess.DEVNULL, capture_output=True, env=env, cwd=tmp_path,
                           timeout=timeout, preexec_fn=_no_core_dumps)
    finally:
        left = pids_with_token(token)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
    return p, tree, events


def read_events(path: Path):
    if not path.exists():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def crasher(mode="segv", **extra):
    """TOML inline table text for a crasher actor."""
    args = {"mode": mode, **extra}
    inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in args.items())
    return f'[{{ type = "crasher", args = {{ {inner} }} }}]'
