"""Tree file validation: exit code 2, nothing started, every problem reported
as FILE:LINE:COL: key 'K': what, and `--check`."""

import subprocess
import textwrap

import pytest

from conftest import REPO, SUPERVISOR_BIN, line_of, run_supervisor

GOOD_CHILD = """
[[root.children]]
id = "a"
actors = [{ type = "echo" }]
"""

# name -> (tree text, text on the offending line, key named, words in the message)
CASES = {
    "unknown_key": ("""
        [root]
        strategy = "one_for_one"

        [[root.children]]
        id = "a"
        colour = "blue"
        actors = [{ type = "echo" }]
        """, 'colour = "blue"', "root.children[0].colour", "unknown key"),
    "wrong_type": ("""
        [root]
        strategy = "one_for_one"
        intensity = "five"
        """ + GOOD_CHILD, 'intensity = "five"', "root.intensity",
        "must be an integer, not a string"),
    "duplicate_id": ("""
        [root]
        [[root.children]]
        id = "a"
        actors = [{ type = "echo" }]

        [[root.children]]
        id = "a"   # the duplicate
        actors = [{ type = "echo" }]
        """, 'id = "a"   # the duplicate', "root.children[1].id", "duplicate id 'a'"),
    "unknown_strategy": ("""
        [root]
        strategy = "one_for_none"
        """ + GOOD_CHILD, 'strategy = "one_for_none"', "root.strategy",
        "unknown value 'one_for_none'"),
    "unknown_actor_type": ("""
        [root]
        [[root.children]]
        id = "a"
        actors = [{ type = "no_such_actor" }]
        """, 'type = "no_such_actor"', "root.children[0].actors[0].type",
        "unknown actor type 'no_such_actor'"),
    "missing_binary": ("""
        [root]
        [[root.children]]
        id = "a"
        binary = "/nonexistent/bulkhead-worker"
        actors = [{ type = "echo" }]
        """, 'binary = "/nonexistent', "root.children[0].binary", "not found or not executable"),
    "wrong_type_in_nested_supervisor": ("""
        [root]
        [[root.children]]
        id = "grp"
        type = "supervisor"
        period_ms = true
          [[root.children.children]]
          id = "a"
          actors = [{ type = "echo" }]
        """, "period_ms = true", "root.children[0].period_ms",
        "must be an integer, not a boolean"),
    "significant_permanent": ("""
        [root]
        auto_shutdown = "any_significant"
        [[root.children]]
        id = "a"
        significant = true
        actors = [{ type = "echo" }]
        """, "significant = true", "root.children[0].significant",
        "must be transient or temporary"),
}


def assert_nothing_started(events_path, p):
    assert not events_path.exists(), "the runtime started (events file written)"
    assert b"nothing started" in p.stderr


@pytest.mark.parametrize("case", list(CASES))
def test_config_error_exits_2_and_names_file_line_key(tmp_path, case):
    text, offending, key, words = CASES[case]
    p, tree, events = run_supervisor(tmp_path, text)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    line = line_of(textwrap.dedent(text), offending)
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    assert len(errors) == 1, err
    assert errors[0].startswith(f"error: {tree}:{line}:"), f"want line {line}: {err}"
    assert f"key '{key}'" in errors[0], err
    assert words in errors[0], err
    assert "1 problem(s)" in err
    assert_nothing_started(events, p)


def test_toml_syntax_error_exits_2_with_line(tmp_path):
    text = """
        [root]
        strategy = "one_for_one"
        intensity = = 3
    """
    p, tree, events = run_supervisor(tmp_path, text)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    line = line_of(textwrap.dedent(text), "intensity = = 3")
    assert f"error: {tree}:{line}:" in err and "TOML syntax error" in err, err
    assert_nothing_started(events, p)


def test_several_config_errors_reported_at_once(tmp_path):
    text = """
        [root]
        strategy = "one_for_none"
        intensity = "many"

        [[root.children]]
        id = "a"
        restart = "sometimes"
        actors = [{ type = "echo", colour = "red" }]

        [[root.children]]
        id = "a"
        actors = [{ type = "no_such_actor" }]
    """
    p, tree, events = run_supervisor(tmp_path, text)
    err = p.stderr.decode()
    assert p.returncode == 2, err
    t = textwrap.dedent(text)
    errors = [l for l in err.splitlines() if l.startswith("error: ")]
    wanted = [
        ('strategy = "one_for_none"', "root.strategy"),
        ('intensity = "many"', "root.intensity"),
        ('restart = "sometimes"', "root.children[0].restart"),
        ('colour = "red"', "root.children[0].actors[0].colour"),
        ('id = "a"\nactors = [{ type = "no', "root.children[1].id"),
        ('type = "no_such_actor"', "root.children[1].actors[0].type"),
    ]
    for needle, key in wanted:
        line = line_of(t, needle)
        assert any(e.startswith(f"error: {tree}:{line}:") and f"key '{key}'" in e
                   for e in errors), f"no error for {key} at line {line}:\n{err}"
    assert len(errors) == len(wanted), err
    assert f"{len(wanted)} problem(s)" in err
    assert_nothing_started(events, p)


def test_missing_tree_file_exits_2(tmp_path):
    p = subprocess.run([str(SUPERVISOR_BIN), str(tmp_path / "nope.toml")],
                       capture_output=True, timeout=10)
    assert p.returncode == 2
    assert b"nope.toml" in p.stderr


def test_bad_command_line_exits_2(tmp_path):
    p = subprocess.run([str(SUPERVISOR_BIN), "--no-such-flag"], capture_output=True, timeout=10)
    assert p.returncode == 2


def test_check_accepts_example_tree():
    example = REPO / "examples" / "tree.toml"
    p = subprocess.run([str(SUPERVISOR_BIN), str(example), "--check"], capture_output=True,
                       timeout=30)
    assert p.returncode == 0, p.stderr.decode()
    assert b"valid" in p.stdout


def test_check_rejects_bad_tree_without_starting(tmp_path):
    p, tree, events = run_supervisor(tmp_path, """
        [root]
        strategy = "one_for_none"
    """, "--check")
    assert p.returncode == 2
    assert f"{tree}:3:".encode() in p.stderr
    assert not events.exists()


def test_unwritable_events_file_is_a_usage_error(tmp_path):
    tree = tmp_path / "tree.toml"
    tree.write_text(textwrap.dedent(GOOD_CHILD).replace("[[root", "[root]\n[[root", 1))
    p = subprocess.run([str(SUPERVISOR_BIN), str(tree), "--events",
                        str(tmp_path / "no" / "such" / "dir" / "events.jsonl")],
                       capture_output=True, timeout=10)
    assert p.returncode == 2, (p.returncode, p.stderr.decode())
    assert b"events.jsonl" in p.stderr
