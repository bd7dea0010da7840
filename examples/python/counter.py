"""A Python actor for Bulkhead: a counter GenServer (see README "Python actors").

Listed in examples/tree.toml as
    actors = [{ python = "counter:Counter", name = "pycounter", args = { start = 0 } }]
"""
import bulkhead
from bulkhead import Atom

GET, INC, ADD = Atom("get"), Atom("inc"), Atom("add")


class Counter(bulkhead.GenServer):
    def init(self, start=0):
        return start  # the state

    def handle_call(self, request, from_, state):
        if request == GET:
            return state, state  # (reply, new state)
        if isinstance(request, tuple) and request[0] == ADD:
            return state + request[1], state + request[1]
        raise ValueError("unknown request %r" % (request,))

    def handle_cast(self, request, state):
        if request == INC:
            return state + 1
        return state

    def handle_info(self, msg, state):
        print("pycounter got", msg)
        return state

    def terminate(self, reason, state):
        print("pycounter stops at", state, "because", reason)
