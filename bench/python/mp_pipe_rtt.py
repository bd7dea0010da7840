"""mp_pipe_rtt baseline: a multiprocessing.Pipe round trip of a small tuple.

usage: /usr/bin/python3 mp_pipe_rtt.py N PARENT_CPU CHILD_CPU   (cpu -1: not pinned)
prints "median_ns p99_ns"
"""
import multiprocessing as mp
import os
import sys
import time


def echo(conn, cpu):
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    while True:
        m = conn.recv()
        if m is None:
            return
        conn.send(m)


def main():
    n, parent_cpu, child_cpu = (int(a) for a in sys.argv[1:4])
    if parent_cpu >= 0:
        os.sched_setaffinity(0, {parent_cpu})
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b, child_cpu))
    p.start()
    msg = ("ping", 1)
    for _ in range(max(100, n // 10)):  # warm up
        a.send(msg)
        a.recv()
    ns = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        t0 = ns()
        a.send(msg)
        a.recv()
        samples[i] = ns() - t0
    a.send(None)
    p.join()
    samples.sort()
    print(samples[n // 2], samples[min(n - 1, n * 99 // 100)])


if __name__ == "__main__":
    main()
