"""Python actors for tests/integration/test_python_actors.py."""
import asyncio
import ctypes
import os

import bulkhead
from bulkhead import Atom

INITS = 0  # module state: every incarnation must start from the zygote's copy


class Counter(bulkhead.GenServer):
    """call get -> count; (add, n) -> count after; cast inc; call inits -> INITS;
    call crash -> ValueError; call segv -> null dereference through ctypes;
    call pid -> os.getpid()."""

    def init(self, start=0):
        global INITS
        INITS += 1
        return start

    def handle_call(self, request, from_, state):
        if request == Atom("get"):
            return state, state
        if request == Atom("inits"):
            return INITS, state
        if request == Atom("pid"):
            return os.getpid(), state
        if request == Atom("crash"):
            raise ValueError("boom at %d" % state)
        if request == Atom("segv"):
            ctypes.string_at(0)  # a C-level null dereference: SIGSEGV
        if isinstance(request, tuple) and request[0] == Atom("add"):
            return state + request[1], state + request[1]
        return (Atom("unknown"), request), state

    def handle_cast(self, request, state):
        if request == Atom("inc"):
            return state + 1
        if request == Atom("crash"):
            raise RuntimeError("cast crash")
        return state


class Echo(bulkhead.GenServer):
    """call X -> X."""

    def handle_call(self, request, from_, state):
        return request, state


class Recorder(bulkhead.GenServer):
    """handle_info records every message (Down as ('down', kind, type, traceback));
    cast (monitor, name) monitors; call get -> the list; call (send_bad, to) ->
    the TypeError text of sending an unsupported object."""

    def init(self):
        return []

    def handle_info(self, msg, state):
        if isinstance(msg, bulkhead.Down):
            r = msg.reason
            return state + [(Atom("down"), r.kind, r.type, r.traceback)]
        return state + [msg]

    def handle_cast(self, request, state):
        if isinstance(request, tuple) and request[0] == Atom("monitor"):
            bulkhead.monitor(request[1])
        return state

    def handle_call(self, request, from_, state):
        if request == Atom("get"):
            return state, state
        if isinstance(request, tuple) and request[0] == Atom("send_bad"):
            try:
                bulkhead.cast(request[1], {"k": [1, {2, 3}]})
            except TypeError as e:
                return str(e), state
            return None, state
        return None, state


class Deferred(bulkhead.GenServer):
    """call hold -> no reply yet; cast release -> replies `released` to each held call."""

    def init(self):
        return []

    def handle_call(self, request, from_, state):
        if request == Atom("hold"):
            return bulkhead.noreply(state + [from_])
        return len(state), state

    def handle_cast(self, request, state):
        if request == Atom("release"):
            for f in state:
                bulkhead.reply(f, Atom("released"))
            return []
        return state


class AsyncActor(bulkhead.GenServer):
    """async handlers: call (sleep_ms, x) -> x after an asyncio.sleep; cast n adds n."""

    async def init(self):
        await asyncio.sleep(0)
        return 0

    async def handle_call(self, request, from_, state):
        if request == Atom("get"):
            return state, state
        ms, x = request
        await asyncio.sleep(ms / 1000)
        return (x, state), state

    async def handle_cast(self, request, state):
        await asyncio.sleep(0)
        return state + request


class Relay(bulkhead.GenServer):
    """call (to, X) -> calls `to` with X from inside the handler, answers its reply;
    call (whereis, name) -> the Ref's (worker, incarnation)."""

    def handle_call(self, request, from_, state):
        if request[0] == Atom("whereis"):
            r = bulkhead.whereis(request[1])
            return (None if r is None else (r.worker, r.incarnation)), state
        to, x = request
        try:
            return bulkhead.call(to, x, timeout=5.0), state
        except bulkhead.ActorDied as e:
            return (Atom("died"), str(e.reason)), state
        except bulkhead.NoProc:
            return Atom("noproc"), state
