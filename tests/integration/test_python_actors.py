"""Python actors (issue 5): GenServers in bulkhead-pyworker processes, called
from this (plain Python) process through bulkhead.connect, from C++ actors
and from each other; crashes, restarts and the zygote.

The actors are in pyactors/testactors.py.  The bulkhead package is imported
from the build (BIN_DIR/../python), as a user's program would."""
import gc
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import BIN_DIR, REPO, SUPERVISOR_BIN, ev, wait_until

sys.path.insert(0, str(BIN_DIR.parent / "python"))
import bulkhead  # noqa: E402
from bulkhead import Atom  # noqa: E402

PYACTORS = REPO / "tests" / "integration" / "pyactors"
GET, INC = Atom("get"), Atom("inc")

if not (BIN_DIR / "bulkhead-pyworker").exists():
    pytest.skip("bulkhead-pyworker not built (pybind11-dev missing)", allow_module_level=True)


def tree(children, strategy="one_for_one", zygote=True):
    return (f'[tree]\nname = "pyt"\nzygote = {str(zygote).lower()}\n'
            f'python_path = "{PYACTORS}"\n'
            f'[root]\nstrategy = "{strategy}"\nintensity = 50\nperiod_ms = 10000\n' + children)


def child(cid, actors, extra=""):
    return f'[[root.children]]\nid = "{cid}"\nactors = {actors}\n{extra}\n'


def py(cls, name, args=""):
    a = f", args = {{ {args} }}" if args else ""
    return f'[{{ python = "testactors:{cls}", name = "{name}"{a} }}]'


@pytest.fixture
def start(sup):
    """Starts a tree and connects this process to it; closes the connection after."""
    conns = []

    def go(text):
        sup.start(text, extra_args=("--socket", str(sup.dir / "s.sock")))
        c = bulkhead.connect(str(sup.dir / "s.sock"))
        conns.append(c)
        return c

    yield go
    for c in conns:
        c.close()


@pytest.mark.parametrize("zygote", [True, False])
def test_counter_call_and_cast(sup, start, zygote):
    c = start(tree(child("c", py("Counter", "counter", "start = 5")), zygote=zygote))
    assert c.call("counter", GET) == 5
    for _ in range(3):
        c.cast("counter", INC)
    assert c.call("counter", GET) == 8
    assert bulkhead.call("counter", (Atom("add"), 10)) == 18  # the default connection
    assert c.call("counter", "what?") == (Atom("unknown"), "what?")


def test_values_round_trip_between_python_and_cpp(sup, start):
    c = start(tree(child("py", py("Relay", "pyrelay")) +
                   child("pyecho", py("Echo", "pyecho")) +
                   child("cpp", '[{ type = "echo", name = "cecho" }, '
                                '{ type = "relay", name = "crelay" }]',
                         'binary = "bulkhead-worker"')))
    value = [None, True, False, -2**63, 2**63 - 1, 2.5, "text é", b"\x00bytes", [1, [2]],
             (1, "t"), {"k": (1, 2), 3: None, Atom("key"): b""}, Atom("ok"), ()]
    assert c.call("pyecho", value) == value                        # client -> Python
    assert c.call("pyrelay", ("cecho", value)) == value            # Python -> C++
    assert c.call("crelay", ("pyecho", value)) == value            # C++ -> Python
    assert c.call("pyrelay", ("pyecho", value)) == value           # Python -> Python
    assert c.call("pyrelay", ("nobody", 1)) == Atom("noproc")
    reply = c.call("pyecho", [Atom("x"), "x"])
    assert isinstance(reply[0], Atom) and reply[0] is Atom("x") and reply[1] == "x"


def test_bad_values_raise_in_the_sender_and_nothing_is_sent(sup, start):
    c = start(tree(child("e", py("Echo", "pyecho")) + child("r", py("Recorder", "rec"))))
    with pytest.raises(TypeError, match=r"cannot send a object .* at request\[1\]\['k'\]"):
        c.call("pyecho", [1, {"k": object()}])
    with pytest.raises(OverflowError, match=r"64-bit .* at request\[0\]"):
        c.cast("pyecho", [2**64])
    with pytest.raises(TypeError, match=r"bytearray .* at message"):
        c.send("rec", bytearray(b"x"))
    # inside an actor: the TypeError is raised in the sending handler, which may catch it
    text = c.call("rec", (Atom("send_bad"), "pyecho"))
    assert "cannot send a set" in text and "request['k'][1]" in text
    assert c.call("rec", GET) == []  # the bad send sent nothing
    assert c.call("pyecho", 1) == 1


def test_a_type_whose_module_name_utf8_cannot_hold_is_a_clean_type_error():
    # __module__ with a lone surrogate: naming the type must not build a
    # string from NULL.  The value is refused before any connection is used.
    Odd = type("Odd", (), {"__module__": "mod\udc80"})
    with pytest.raises(TypeError, match=r"cannot send a Odd .* at request\[0\]"):
        bulkhead.cast("anyone", [Odd()])


def test_an_amplified_value_from_a_cpp_peer_is_dropped_and_the_actor_lives(sup, start):
    # 12 KiB in the ring, 6M words to read: it passes the receiving worker's
    # check, then converting it to Python exceeds Cap'n Proto's traversal
    # limit (a kj::Exception).  That message is dropped; the worker goes on.
    c = start(tree(child("c", py("Counter", "counter")) +
                   child("g", '[{ type = "garbler", name = "garbler" }]',
                         'binary = "bulkhead-worker"')))
    pid = sup.pids()["root/c"]
    assert c.call("garbler", (Atom("garble"), "counter", "amplify")) == 2
    # the garbler's opening cast `inc`, the amplified one (dropped), its last `inc`
    wait_until(lambda: c.call("counter", GET) == 2, what="both valid casts counted")
    assert sup.pids()["root/c"] == pid and not sup.find(ev("exited", "root/c"))
    assert "dropped a message it cannot read: invalid message" in sup.log()


def test_dropping_the_default_connection_while_a_thread_calls_through_it(sup, start):
    start(tree(child("d", py("Deferred", "deferred"))))
    c = bulkhead.connect(str(sup.dir / "s.sock"))  # the default connection, only ours
    outcome = []

    def caller():
        try:
            bulkhead.call("deferred", Atom("hold"), timeout=0.5)  # waits with the GIL released
        except bulkhead.Timeout:
            outcome.append("timeout")

    t = threading.Thread(target=caller)
    t.start()
    time.sleep(0.1)
    del c  # the last reference of ours: the default must stay valid for the caller
    gc.collect()
    t.join()
    assert outcome == ["timeout"]
    assert bulkhead.call("deferred", 0) == 1  # the held call counted; still connected


def test_handle_info_monitor_and_down_with_traceback(sup, start):
    c = start(tree(child("r", py("Recorder", "rec")) + child("c", py("Counter", "counter"))))
    c.send("rec", 42)
    c.send("rec", {"a": [1]})
    c.cast("rec", (Atom("monitor"), "counter"))
    mark = sup.mark()
    with pytest.raises(bulkhead.ActorDied, match="ValueError"):
        c.call("counter", Atom("crash"))
    sup.wait_event(ev("ready", "root/c"), since=mark)
    got = c.call("rec", GET)
    assert got[:2] == [42, {"a": [1]}]
    down, kind, etype, tb = got[2]
    assert (down, kind, etype) == (Atom("down"), "exception", "ValueError")
    assert "Traceback (most recent call last)" in tb and "boom at 0" in tb


def test_exception_ends_the_worker_with_the_traceback_and_it_restarts_clean(sup, start):
    c = start(tree(child("c", py("Counter", "counter", "start = 7"))))
    c.cast("counter", INC)
    assert c.call("counter", GET) == 8
    assert c.call("counter", Atom("inits")) == 1
    mark = sup.mark()
    with pytest.raises(bulkhead.ActorDied):
        c.call("counter", Atom("crash"))
    exited = sup.wait_event(ev("exited", "root/c"), since=mark)
    assert exited["reason"] == "exception" and exited["exception_type"] == "ValueError"
    text = exited["reason_text"]
    assert "boom at 8" in text and "Traceback (most recent call last)" in text
    assert "testactors.py" in text and 'raise ValueError("boom at %d" % state)' in text
    sup.wait_event(ev("ready", "root/c"), since=mark)
    assert "ValueError: boom at 8" in sup.log()
    # the new incarnation starts from init, with the modules as the zygote imported them
    assert c.call("counter", GET) == 7
    assert c.call("counter", Atom("inits")) == 1
    # an exception in a cast handler too
    mark = sup.mark()
    c.cast("counter", Atom("crash"))
    exited = sup.wait_event(ev("exited", "root/c"), since=mark)
    assert exited["exception_type"] == "RuntimeError" and "cast crash" in exited["reason_text"]


def test_deferred_reply(sup, start):
    c = start(tree(child("d", py("Deferred", "deferred"))))
    other = bulkhead.connect(str(sup.dir / "s.sock"))
    try:
        results = []
        t = threading.Thread(target=lambda: results.append(other.call("deferred", Atom("hold"))))
        t.start()
        deadline = time.monotonic() + 10
        while c.call("deferred", GET) != 1:
            assert time.monotonic() < deadline, "the held call never arrived"
            time.sleep(0.01)
        assert results == []  # not answered yet
        c.cast("deferred", Atom("release"))
        t.join(10)
        assert results == [Atom("released")]
    finally:
        other.close()


def test_async_handlers(sup, start):
    c = start(tree(child("a", py("AsyncActor", "async"))))
    assert c.call("async", (20, "x")) == ("x", 0)
    c.cast("async", 5)
    c.cast("async", 6)
    assert c.call("async", GET) == 11


def test_c_extension_segfault_is_a_signal_exit_and_isolated(sup, start):
    c = start(tree(child("a", py("Counter", "a")) + child("b", py("Counter", "b", "start = 3"))))
    before = sup.pids()
    mark = sup.mark()
    with pytest.raises(bulkhead.ActorDied, match="killed by signal 11"):
        c.call("a", Atom("segv"))
    exited = sup.wait_event(ev("exited", "root/a"), since=mark)
    assert exited["reason"] == "signal" and exited["signal"] == signal.SIGSEGV
    sup.wait_event(ev("ready", "root/a"), since=mark)
    assert c.call("a", GET) == 0
    assert c.call("b", GET) == 3  # one_for_one: b never noticed
    assert sup.pids()["root/b"] == before["root/b"]


def test_one_for_all_restarts_every_python_child(sup, start):
    c = start(tree(child("p1", py("Counter", "p1")) + child("p2", py("Counter", "p2")),
                   strategy="one_for_all"))
    c.cast("p2", INC)
    assert c.call("p2", GET) == 1
    before = sup.pids()
    mark = sup.mark()
    sup.kill_child("root/p1", signal.SIGKILL)
    sup.wait_event(ev("ready", "root/p1"), since=mark)
    sup.wait_event(ev("ready", "root/p2"), since=mark)
    after = sup.pids()
    assert after["root/p1"] != before["root/p1"] and after["root/p2"] != before["root/p2"]
    assert c.call("p2", GET) == 0  # restarted from init


def test_registry_after_restart(sup, start):
    c = start(tree(child("c", py("Counter", "counter")) + child("r", py("Relay", "relay"))))
    first = c.whereis("counter")
    assert first is not None and first.incarnation == 1
    assert c.call("relay", (Atom("whereis"), "counter")) == (first.worker, 1)
    pid = c.call("counter", Atom("pid"))
    mark = sup.mark()
    sup.kill_child("root/c", signal.SIGKILL)
    sup.wait_event(ev("ready", "root/c"), since=mark)
    assert c.call("counter", Atom("pid")) != pid
    assert c.whereis("counter").incarnation == 2
    assert c.call("relay", (Atom("whereis"), "counter")) == (first.worker, 2)
    assert c.call("relay", ("counter", GET)) == 0
    assert c.whereis("nobody") is None


def test_mailbox_kept_across_a_restart(sup, start):
    c = start(tree(child("c", py("Counter", "counter"),
                         "backoff = { initial_ms = 400, max_ms = 400, jitter = 0.0 }")))
    mark = sup.mark()
    sup.kill_child("root/c", signal.SIGKILL)
    sup.wait_event(ev("exited", "root/c"), since=mark)
    for _ in range(5):
        c.cast("counter", INC)  # queued while no worker runs
    assert sup.find(ev("ready", "root/c"), since=mark) is None, "restarted too early"
    sup.wait_event(ev("ready", "root/c"), since=mark)
    assert c.call("counter", GET) == 5


def test_call_errors(sup, start):
    c = start(tree(child("d", py("Deferred", "deferred"))))
    with pytest.raises(bulkhead.NoProc):
        c.call("nobody", 1)
    with pytest.raises(bulkhead.Timeout):
        c.call("deferred", Atom("hold"), timeout=0.2)
    with pytest.raises(TypeError, match="actor name"):
        c.call(3, 1)


def check(tmp_path, text):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    return subprocess.run([str(SUPERVISOR_BIN), str(p), "--check"], capture_output=True,
                          text=True, timeout=30), p


def test_tree_errors_name_file_line_and_column(tmp_path):
    r, p = check(tmp_path, tree(child("c", '[{ python = "testactors.Counter" }]')))
    assert r.returncode == 2
    assert re.search(rf"{p}:11:\d+: key 'root.children\[0\].actors\[0\].python': "
                     r"'testactors.Counter' is not \"module:Class\"", r.stderr), r.stderr
    r, p = check(tmp_path, tree(child("c", '[{ python = "testactors:Counter" }, '
                                            '{ type = "echo" }]')))
    assert r.returncode == 2 and "not both" in r.stderr
    r, p = check(tmp_path, tree(child("c", '[{ type = "echo" }]', 'python_path = "."')))
    assert r.returncode == 2 and "only for a worker with Python actors" in r.stderr
    r, p = check(tmp_path, tree(child("c", py("Counter", "c"))).replace(
        str(PYACTORS), "/nonexistent/dir"))
    assert r.returncode == 2 and "is not a directory" in r.stderr


@pytest.mark.parametrize("spec,needle", [("nosuchmodule:X", "ModuleNotFoundError"),
                                         ("testactors:Nope", "AttributeError"),
                                         ("badinit:Bad", "KeyError")])
def test_unknown_class_or_failing_init_is_a_start_failure(sup, spec, needle):
    sup.start(tree(child("c", f'[{{ python = "{spec}" }}]')), wait_started=False)
    assert sup.wait_exit() == 3
    exited = sup.find(ev("exited", "root/c"))
    assert exited["reason"] == "start_failure" and needle in exited["reason_text"]
