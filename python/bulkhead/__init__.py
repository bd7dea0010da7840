"""bulkhead: Python actors in Bulkhead supervision trees.

Inside a worker (bulkhead-pyworker) and in plain Python programs alike:

    class Counter(bulkhead.GenServer):
        def init(self, start=0):
            return start                         # the state
        def handle_call(self, request, from_, state):
            return state, state                  # (reply, new state)
        def handle_cast(self, request, state):
            return state + 1                     # new state

    conn = bulkhead.connect("/run/user/1000/bulkhead/shop.sock")   # outside the tree
    bulkhead.call("counter", Atom("get"))

Messaging (call, cast, send, reply, whereis, monitor, link) acts for the actor
whose handler is running; outside any handler, for the last connection made
with connect().  Values: None, bool, int (signed 64-bit), float, str, bytes,
list, tuple, dict and Atom, one to one with schema/value.capnp.
"""
import sys as _sys

if "_bulkhead_native" in _sys.builtin_module_names:
    import _bulkhead_native as _native  # built into bulkhead-pyworker
else:
    from . import _native  # the extension module, for plain Python programs

from ._types import Atom, Down, Exit, ExitReason, NoReply, noreply
from ._errors import BulkheadError, Timeout, NoProc, ActorDied, CallFailed
from ._genserver import GenServer, _run_coroutine, _describe_exception

_native._register(Atom, Timeout, NoProc, ActorDied, CallFailed, NoReply, Down, Exit, ExitReason,
                  _run_coroutine, _describe_exception)

Ref = _native.Ref
From = _native.From
Connection = _native.Connection
call = _native.call
cast = _native.cast
send = _native.send
reply = _native.reply
whereis = _native.whereis
monitor = _native.monitor
demonitor = _native.demonitor
link = _native.link
unlink = _native.unlink
trap_exit = _native.trap_exit
self = _native.self_ref


def default_socket(tree_name):
    """The supervisor's default attach socket for a tree named `tree_name`."""
    import os
    run = os.environ.get("XDG_RUNTIME_DIR")
    base = run + "/bulkhead" if run else "/tmp/bulkhead-%d" % os.getuid()
    return "%s/%s.sock" % (base, tree_name)


def connect(socket, timeout=5.0):
    """Attaches this process to a running supervisor.

    `socket` is the supervisor's attach socket path (--socket), or a tree name
    (its default socket).  Returns a Connection; it also becomes the default
    for the module-level call/cast/send/whereis of this process.
    """
    if "/" not in socket:
        socket = default_socket(socket)
    return _native.connect(socket, float(timeout))


__all__ = ["GenServer", "Atom", "Down", "Exit", "ExitReason", "NoReply", "noreply", "Ref", "From",
           "Connection", "call", "cast", "send", "reply", "whereis", "monitor", "demonitor", "link",
           "unlink", "trap_exit", "self", "connect", "default_socket", "BulkheadError", "Timeout",
           "NoProc", "ActorDied", "CallFailed"]
