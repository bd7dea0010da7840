"""Restart strategies: end the middle of three children and watch who restarts.

For every strategy and every way of dying (SIGKILL from outside, SIGSEGV inside
the worker, an uncaught C++ exception inside an actor) the test checks:
  * the `exited` event's reason,
  * which children got a new pid and which kept theirs,
  * the exact order of stop and start events (OTP semantics):
      one_for_one / simple_one_for_one: restart the crashed child only;
      one_for_all: stop every other child in reverse start order, then start
                   all children in start order;
      rest_for_one: stop the children after the crashed one in reverse order,
                    then start the crashed child and those children in order.
"""

import signal
import time

import pytest

from conftest import crasher, ev, stopped_gracefully

STRATEGIES = ["one_for_one", "one_for_all", "rest_for_one", "simple_one_for_one"]

# How the middle child ends: (signal we send, crasher mode, expected reason fields)
DEATHS = {
    "sigkill": (signal.SIGKILL, "segv", {"reason": "signal", "signal": 9}),
    "sigsegv": (signal.SIGUSR1, "segv", {"reason": "signal", "signal": 11}),
    "exception": (signal.SIGUSR1, "throw",
                  {"reason": "exception", "exception_type": "std::runtime_error"}),
}


def tree_for(strategy, mode):
    if strategy == "simple_one_for_one":
        return f"""
            [root]
            strategy = "simple_one_for_one"
            intensity = 10
            instances = 3
            template = {{ actors = {crasher(mode)} }}
        """, ["root/1", "root/2", "root/3"]
    children = "".join(f"""
            [[root.children]]
            id = "{cid}"
            actors = {crasher(mode)}
        """ for cid in "abc")
    return f"""
            [root]
            strategy = "{strategy}"
            intensity = 10
        """ + children, ["root/a", "root/b", "root/c"]


def expected_sequence(strategy, kids):
    """(event, child) after the middle child died, up to the last `ready`."""
    a, b, c = kids
    if strategy in ("one_for_one", "simple_one_for_one"):
        return [("exited", b), ("restart_scheduled", b), ("spawned", b), ("ready", b)]
    if strategy == "rest_for_one":
        return [("exited", b), ("restart_scheduled", b),
                ("stopping", c), ("exited", c),
                ("spawned", b), ("ready", b), ("spawned", c), ("ready", c)]
    assert strategy == "one_for_all"
    return [("exited", b), ("restart_scheduled", b),
            ("stopping", c), ("exited", c), ("stopping", a), ("exited", a),
            ("spawned", a), ("ready", a), ("spawned", b), ("ready", b),
            ("spawned", c), ("ready", c)]


def restarted_children(strategy, kids):
    a, b, c = kids
    return {"one_for_one": {b}, "simple_one_for_one": {b}, "rest_for_one": {b, c},
            "one_for_all": {a, b, c}}[strategy]


TRACKED = {"exited", "restart_scheduled", "stopping", "spawned", "ready"}


@pytest.mark.parametrize("death", list(DEATHS))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_middle_child_death_restarts_per_strategy(sup, strategy, death):
    sig, mode, reason = DEATHS[death]
    toml, kids = tree_for(strategy, mode)
    sup.start(toml)
    before = sup.pids()
    assert sorted(before) == kids, before
    # Start order: children started one at a time, in spec order.
    ready_order = [e["child"] for e in sup.events() if e["event"] == "ready"]
    assert ready_order == kids

    mark = sup.mark()
    victim = kids[1]
    sup.kill_child(victim, sig)

    expected = expected_sequence(strategy, kids)
    last_event, last_child = expected[-1]
    sup.wait_event(ev(last_event, last_child), since=mark)
    time.sleep(0.2)  # anything extra (a second restart, a stray stop) would show up now
    after_events = sup.events()[mark:]
    seq = [(e["event"], e.get("child")) for e in after_events if e["event"] in TRACKED]
    assert seq == expected, "\n".join(map(str, after_events))

    # Exit reason of the victim.
    exited = [e for e in after_events if e["event"] == "exited"]
    victim_exit = exited[0]
    assert victim_exit["child"] == victim and victim_exit["pid"] == before[victim]
    for k, v in reason.items():
        assert victim_exit[k] == v, victim_exit
    # Siblings stopped by the strategy end with reason shutdown, from their old pids.
    for e in exited[1:]:
        assert stopped_gracefully(e), "\n".join(map(str, after_events))
        assert e["pid"] == before[e["child"]], e
    rs = next(e for e in after_events if e["event"] == "restart_scheduled")
    assert rs["strategy"] == strategy and rs["delay_ms"] == 0

    # Who got a new pid, who kept theirs.
    after = sup.pids()
    assert sorted(after) == kids
    changed = {k for k in kids if after[k] != before[k]}
    assert changed == restarted_children(strategy, kids), (before, after)
    for k in changed:
        assert not (sup.find(ev("exited", k, pid=after[k]), since=mark))
    assert sup.stop() == 0
