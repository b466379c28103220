"""Bad task and graph files: property tests over every key of a ``[tasks.NAME]`` and a
``[graph.NAME]`` table. Each wrong type, range or unknown key is a :class:`ConfigError` naming
the file, the table and the key, when the file is read: before any run exists."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lute_async.config import parse_config
from lute_async.config.graph import GRAPH_OPTIONS, parse_graph
from lute_async.config.parse import TASK_OPTIONS
from lute_async.errors import ConfigError


def toml(value: Any) -> str:
    """``value`` as a TOML value (inline tables and arrays for containers)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # JSON's escapes are TOML basic-string ones; TOML also wants DEL escaped.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    return "{" + ", ".join(f"{toml(k)} = {toml(v)}" for k, v in value.items()) + "}"


_ints = st.integers(min_value=-(2**40), max_value=2**40)
_floats = st.floats(allow_nan=False, allow_infinity=False, width=32)
_texts = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_scalars = st.one_of(_ints, _floats, st.booleans())
_tables = st.dictionaries(_texts, _ints, max_size=1)
_non_text = st.one_of(_scalars, st.lists(_ints, max_size=2), _tables)
_non_table = st.one_of(_scalars, _texts, st.lists(_ints, max_size=2))
_bad_seconds = st.one_of(
    _texts, st.booleans(), st.integers(max_value=0), st.floats(max_value=0, allow_nan=False),
    st.lists(_ints, min_size=1, max_size=2),
)  # fmt: skip

#: For each key of a task table, values no task can take.
TASK_WRONG: dict[str, st.SearchStrategy[Any]] = {
    "command": st.one_of(_scalars, st.just([]), st.lists(_ints, min_size=1, max_size=2)),
    "function": st.one_of(_non_text, st.sampled_from(["no_colon", "a:", ":b", "a b:c"])),
    "params": _non_table,
    "env": st.one_of(_scalars, _texts, st.lists(_texts, min_size=1, max_size=2)),
    "env_file": _non_text,
    "cwd": _non_text,
    "timeout": _bad_seconds,
    "limits": st.one_of(
        _scalars,
        _texts,
        st.fixed_dictionaries({"cpu_time": st.one_of(_texts, st.integers(max_value=0))}),
        st.fixed_dictionaries({"walltime": _ints}),
    ),
    "launcher": st.one_of(_ints, _floats, st.booleans(), st.lists(_ints, min_size=1, max_size=2)),
    "communicators": st.one_of(_scalars, st.lists(st.sampled_from(["udp", "smoke"]), min_size=1)),
    "hooks": st.one_of(_scalars, st.lists(_ints, min_size=1, max_size=2)),
    "tags": st.one_of(_scalars, st.lists(_ints, min_size=1, max_size=2)),
    "description": _non_text,
    "sandbox": st.one_of(
        _scalars,
        _texts,
        st.fixed_dictionaries({"network": st.one_of(_ints, _texts)}),
        st.fixed_dictionaries({"writable": st.lists(st.sampled_from(["rel", "a/b"]), min_size=1)}),
        st.fixed_dictionaries({"paths": _ints}),
    ),
    "retry": st.one_of(
        _scalars,
        _texts,
        st.fixed_dictionaries({"attempts": st.one_of(_texts, st.integers(max_value=0))}),
        st.fixed_dictionaries({"backoff": st.floats(max_value=-0.001, allow_nan=False)}),
        st.fixed_dictionaries({"on": st.lists(st.sampled_from(["crashed", "done"]), min_size=1)}),
        st.fixed_dictionaries({"tries": _ints}),
    ),
    **{
        phase: st.one_of(
            _ints,
            _floats,
            st.booleans(),
            st.lists(st.sampled_from(["a b", ":x", "mod:"]), min_size=1),
            st.lists(st.fixed_dictionaries({"command": _ints}), min_size=1),
            st.lists(st.fixed_dictionaries({"function": st.just("m:f"), "x": _ints}), min_size=1),
        )
        for phase in ("before", "after")
    },
}

#: For each key of a graph node, values no node can take.
GRAPH_WRONG: dict[str, st.SearchStrategy[Any]] = {
    "command": TASK_WRONG["command"],
    "function": TASK_WRONG["function"],
    "task": _non_text,
    "after": st.one_of(_scalars, st.text(min_size=1, max_size=6), st.lists(_ints, min_size=1)),
    "after_any": st.one_of(_ints, _floats, _texts, st.lists(_ints, max_size=2)),
    "params": _non_table,
    "timeout": _bad_seconds,
    "cwd": _non_text,
    "tags": TASK_WRONG["tags"],
    "sandbox": TASK_WRONG["sandbox"],
    "retry": TASK_WRONG["retry"],
}


def test_every_key_of_a_task_and_a_graph_node_has_wrong_values_tried() -> None:
    assert set(TASK_WRONG) == set(TASK_OPTIONS)
    assert set(GRAPH_WRONG) == set(GRAPH_OPTIONS)


def _refused(text: str, *, graph: bool) -> str:
    try:
        config = parse_config(text, source="bad.toml")
        if graph:
            parse_graph(config)
    except ConfigError as error:
        return str(error)
    pytest.fail(f"accepted:\n{text}")


@settings(max_examples=200, deadline=None)
@given(data=st.data(), key=st.sampled_from(sorted(TASK_WRONG)))
def test_a_wrong_value_in_a_task_table_is_a_config_error_naming_the_key(
    data: st.DataObject, key: str
) -> None:
    value = data.draw(TASK_WRONG[key], label=key)
    base = {} if key in ("command", "function") else {"command": ["true"]}
    body = "".join(f"{k} = {toml(v)}\n" for k, v in {**base, key: value}.items())
    message = _refused(f"[tasks.peaks]\n{body}", graph=False)
    assert message.startswith("bad.toml: ")
    assert "peaks" in message and (f"'{key}'" in message or f"'{key}." in message), message


@settings(max_examples=150, deadline=None)
@given(data=st.data(), key=st.sampled_from(sorted(GRAPH_WRONG)))
def test_a_wrong_value_in_a_graph_node_is_a_config_error_naming_the_key(
    data: st.DataObject, key: str
) -> None:
    value = data.draw(GRAPH_WRONG[key], label=key)
    base = {} if key in ("command", "function", "task") else {"command": ["true"]}
    body = "".join(f"{k} = {toml(v)}\n" for k, v in {**base, key: value}.items())
    message = _refused(f"[graph.calib]\ncommand = [\"true\"]\n\n[graph.peaks]\n{body}", graph=True)
    assert message.startswith("bad.toml: ")
    assert "peaks" in message and (f"'{key}'" in message or f"'{key}." in message), message


@settings(max_examples=40, deadline=None)
@given(
    key=st.from_regex(r"[a-z][a-z_]{1,10}", fullmatch=True),
    table=st.sampled_from(["tasks", "graph"]),
)
def test_an_unknown_key_is_named(key: str, table: str) -> None:
    known = TASK_OPTIONS if table == "tasks" else GRAPH_OPTIONS
    if key in known:
        return
    text = f'[{table}.peaks]\ncommand = ["true"]\n{key} = 1\n'
    message = _refused(text, graph=table == "graph")
    assert f"'{key}'" in message and "unknown key" in message


def test_toml_of_the_generated_values_round_trips() -> None:
    import tomllib

    value = {"a": [1, -2.5, True, "x\ny\u0007"], "b": {"c": math.pi}}
    assert tomllib.loads(f"v = {toml(value)}")["v"] == value
