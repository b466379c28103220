"""The typed spec of a run's options: conversions, ranges, errors naming key, value, expectation."""

# ruff: noqa: E501  (the table of expected messages reads best one case a line)

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lute_async.communicators import PipeCommunicator
from lute_async.errors import ConfigError
from lute_async.launchers import Local
from lute_async.limits import Limits
from lute_async.options import NAME, RUN_OPTIONS, check_run_options


def error_of(options: dict[str, Any], where: str = "") -> str:
    with pytest.raises(ConfigError) as info:
        check_run_options(options, where=where)
    return str(info.value)


def test_the_spec_covers_every_option_of_a_run() -> None:
    assert set(RUN_OPTIONS) == {
        "name", "params", "env", "cwd", "timeout", "hooks", "launcher", "limits",
        "communicators", "tags", "grace", "tap", "inherit_env", "stdin", "stdout",
        "sandbox",
        "retry", "before", "after",
    }  # fmt: skip


def test_valid_options_are_converted_and_live_objects_pass_as_given() -> None:
    launcher = Local()
    pipe = PipeCommunicator()
    limits = Limits(memory=10)
    checked = check_run_options(
        {
            "name": "peaks",
            "params": {"x": object},
            "env": {"A": "1"},
            "cwd": Path("/tmp"),
            "timeout": 3,
            "grace": 0,
            "tags": ("a", "b"),
            "launcher": launcher,
            "limits": limits,
            "communicators": ["pipe", pipe],
            "hooks": {"*": [print], "done": print},
            "tap": True,
        }
    )
    assert checked["timeout"] == 3.0 and isinstance(checked["timeout"], float)
    assert checked["grace"] == 0.0 and checked["tags"] == ["a", "b"]
    assert checked["launcher"] is launcher and checked["limits"] is limits
    assert checked["communicators"] == ["pipe", pipe] and checked["cwd"] == Path("/tmp")


def test_none_means_the_default_and_is_kept() -> None:
    assert check_run_options({"timeout": None, "launcher": None}) == {
        "timeout": None,
        "launcher": None,
    }


def test_a_limits_table_becomes_limits() -> None:
    checked = check_run_options({"limits": {"wall_time": 2, "memory": 100}})
    assert checked["limits"] == Limits(wall_time=2.0, memory=100)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": "1"}, "key 'timeout': expected a positive number of seconds, got a string ('1')"),
        ({"timeout": 0}, "key 'timeout': expected a positive number of seconds, got an integer (0)"),
        ({"timeout": math.inf}, "key 'timeout': expected a positive number of seconds, got a number (inf)"),
        ({"timeout": math.nan}, "key 'timeout': expected a positive number of seconds, got a number (nan)"),
        ({"timeout": True}, "key 'timeout': expected a positive number of seconds, got a boolean (True)"),
        ({"grace": -1}, "key 'grace': expected a number of seconds >= 0, got an integer (-1)"),
        ({"tags": "nightly"}, "key 'tags': expected a list of strings, got a string ('nightly')"),
        ({"tags": [1]}, "key 'tags': expected a list of strings, got a list ([1])"),
        ({"env": {"A": 1}}, "key 'env': expected a table of environment variables, names to strings, got a table ({'A': 1})"),
        ({"name": 3}, "key 'name': expected a run name (a string), got an integer (3)"),
        ({"launcher": "mpi"}, "key 'launcher': expected a Launcher, got a string ('mpi')"),
        ({"communicators": ["pipe", "smoke"]}, "key 'communicators': expected a list of 'pipe', 'socket', 'tcp', got a list (['pipe', 'smoke'])"),
        ({"hooks": {"done": "notify"}}, "key 'hooks': expected a table {event: hook or [hooks]} of callables, got a table ({'done': 'notify'})"),
        ({"limits": {"memory": 1.5}}, "key 'limits.memory': expected a positive integer, got a number (1.5)"),
        ({"limits": {"wall_time": -1}}, "key 'limits.wall_time': expected a positive number of seconds, got an integer (-1)"),
        ({"stdin": "file.txt"}, "key 'stdin': expected a Channel, got a string ('file.txt')"),
        ({"tap": "yes"}, "key 'tap': expected true or false, got a string ('yes')"),
    ],
)  # fmt: skip
def test_a_bad_value_names_the_key_the_value_and_what_was_expected(
    options: dict[str, Any], message: str
) -> None:
    assert error_of(options) == message


def test_an_unknown_limit_is_named() -> None:
    assert error_of({"limits": {"mem": 1}}).startswith(
        "key 'limits.mem': unknown key; expected one of wall_time, cpu_time, memory"
    )


def test_unknown_options_are_all_named() -> None:
    message = error_of({"timout": 1, "tag": ["x"], "name": "a"})
    assert message.startswith("keys 'timout', 'tag': unknown option; expected one of name, ")


def test_where_prefixes_the_message() -> None:
    assert error_of({"timeout": "soon"}, where="graph.toml: graph node 'x'") == (
        "graph.toml: graph node 'x': key 'timeout': expected a positive number of seconds, "
        "got a string ('soon')"
    )


def test_a_long_value_is_shortened_in_the_message() -> None:
    message = error_of({"tags": "x" * 500})
    assert message.endswith("...)") and len(message) < 150


@given(st.text(max_size=12) | st.sampled_from(["", "a\n", "\x7f", "\x9f", "\xa0", "ok name"]))
def test_a_name_let_through_at_once_is_one_msgspec_accepts_and_only_those(name: str) -> None:
    try:
        expected: str | None = msgspec.convert(name, NAME.type)
    except msgspec.ValidationError:
        expected = None
    if expected is None:
        with pytest.raises(ConfigError, match="key 'name'"):
            NAME.check("name", name)
    else:
        assert NAME.check("name", name) == expected
