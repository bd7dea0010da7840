"""Python actors for bulkhead-bench's py_* figures (bench/python_figures.cpp)."""
import time

import bulkhead
from bulkhead import Atom

PING, FLOOD, INC, GET = Atom("ping"), Atom("flood"), Atom("inc"), Atom("get")
MSG = ("ping", 1)  # the same small tuple mp_pipe_rtt sends


class Pinger(bulkhead.GenServer):
    """call (ping, to, n) -> n back-to-back calls to `to`, answers (median_ns, p99_ns);
    call (flood, to, n) -> n casts of `inc` to `to`, then one call; answers elapsed ns."""

    def handle_call(self, request, from_, state):
        op, to, n = request
        call, ns = bulkhead.call, time.perf_counter_ns
        if op == PING:
            samples = [0] * n
            for i in range(n):
                t0 = ns()
                call(to, MSG)
                samples[i] = ns() - t0
            samples.sort()
            return (samples[n // 2], samples[min(n - 1, n * 99 // 100)]), state
        cast = bulkhead.cast
        t0 = ns()
        for _ in range(n):
            cast(to, INC)
        call(to, GET, 120.0)
        return ns() - t0, state


class Echo(bulkhead.GenServer):
    def handle_call(self, request, from_, state):
        return request, state


class Counter(bulkhead.GenServer):
    def init(self):
        return 0

    def handle_cast(self, request, state):
        return state + 1

    def handle_call(self, request, from_, state):
        return state, state
