"""Bad options never leave a run half-made: property tests over every option of a run.

Every wrong type, range or unknown key given to ``Executor.run``, ``start`` or
``run_function`` is a :class:`ConfigError` naming the key, raised before any process starts
or any record is written: never a RUNNING record, never an ExceptionGroup.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lute_async import Executor, RecordStore
from lute_async.errors import ConfigError
from lute_async.options import RUN_OPTIONS

_scalars = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans())
_texts = st.text(max_size=8)

#: For each option, values no run can take.
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "name": st.one_of(st.integers(), st.lists(_texts, max_size=2), st.floats()),
    "params": st.one_of(_scalars, _texts, st.lists(st.integers(), max_size=3)),
    "env": st.one_of(
        _scalars,
        _texts,
        st.lists(_texts, min_size=1, max_size=2),
        st.dictionaries(st.text(min_size=1, max_size=4), st.integers(), min_size=1, max_size=2),
    ),
    "cwd": st.one_of(st.integers(), st.lists(_texts, min_size=1, max_size=2)),
    "timeout": st.one_of(
        _texts,
        st.integers(max_value=0),
        st.floats(max_value=0),
        st.sampled_from([math.inf, math.nan, True]),
        st.lists(st.integers(min_value=1), min_size=1, max_size=2),
    ),
    "hooks": st.one_of(
        st.integers(), _texts, st.dictionaries(_texts, st.integers(), min_size=1, max_size=2)
    ),
    "launcher": st.one_of(st.integers(), _texts, st.lists(st.integers(), min_size=1)),
    "limits": st.one_of(
        _texts,
        st.integers(),
        st.dictionaries(
            st.sampled_from(["cpu_time", "memory", "pids", "wall_time"]),
            st.one_of(_texts, st.integers(max_value=0)),
            min_size=1,
        ),
        st.dictionaries(st.sampled_from(["cpu", "mem", "walltime"]), st.integers(), min_size=1),
    ),
    "communicators": st.one_of(
        st.integers(), st.lists(st.sampled_from(["udp", "smoke", "PIPE"]), min_size=1)
    ),
    "tags": st.one_of(st.integers(), _texts, st.lists(st.integers(), min_size=1, max_size=3)),
    "grace": st.one_of(_texts, st.floats(max_value=-0.001), st.sampled_from([math.inf, math.nan])),
    "tap": st.one_of(st.integers(), _texts),
    "inherit_env": st.one_of(st.integers(), _texts),
    "stdin": st.one_of(st.integers(), _texts),
    "stdout": st.one_of(st.integers(), _texts),
    "sandbox": st.one_of(
        st.integers(),
        _texts,
        st.fixed_dictionaries({"network": st.one_of(st.integers(), _texts)}),
        st.fixed_dictionaries({"readonly": st.one_of(st.integers(), st.lists(_texts, min_size=1))}),
        st.fixed_dictionaries({"writable": st.lists(st.integers(), min_size=1)}),
        st.dictionaries(st.sampled_from(["net", "paths", "ro"]), st.integers(), min_size=1),
    ),
    "retry": st.one_of(
        st.integers(),
        _texts,
        st.fixed_dictionaries({"attempts": st.integers(max_value=0)}),
        st.fixed_dictionaries({"backoff": st.floats(max_value=-0.001)}),
        st.fixed_dictionaries({"on": st.lists(st.sampled_from(["crashed", "done"]), min_size=1)}),
        st.dictionaries(st.sampled_from(["tries", "delay"]), st.integers(), min_size=1),
    ),
    **{
        phase: st.one_of(
            st.integers(),
            _texts,
            st.lists(
                st.sampled_from(
                    ["no_such_module_xyz:f", "os:sep", "not a target", ["no-such-program-xyz"]]
                ),
                min_size=1,
                max_size=2,
            ),
        )
        for phase in ("before", "after")
    },
}

ENTRY_POINTS = ("run", "start", "run_function")


def test_every_option_of_a_run_has_wrong_values_tried() -> None:
    assert set(WRONG) == set(RUN_OPTIONS)


async def _try(executor: Executor, entry: str, options: dict[str, Any]) -> None:
    if entry == "run":
        await executor.run(["true"], **options)
    elif entry == "run_function":
        await executor.run_function("lute_async.demo:calibrate", **options)
    else:
        async with executor.start(["true"], **options) as run:
            await run.wait()


def _refused(db: Path, entry: str, options: dict[str, Any]) -> str:
    """Try the options; return the ConfigError's message (failing on anything else)."""

    async def attempt() -> str:
        async with Executor(db=db, workdir=db.parent / "work") as executor:
            try:
                await _try(executor, entry, options)
            except ConfigError as error:
                return str(error)
        pytest.fail(f"{entry}(**{options!r}) was accepted")

    return anyio.run(attempt)


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bad-options") / "runs.db"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    key=st.sampled_from(sorted(WRONG)),
    entry=st.sampled_from(ENTRY_POINTS),
)
def test_a_wrong_option_is_a_config_error_naming_it_before_anything_starts(
    db: Path, data: st.DataObject, key: str, entry: str
) -> None:
    value = data.draw(WRONG[key], label=key)
    message = _refused(db, entry, {key: value})
    assert f"'{key}'" in message or f"'{key}." in message
    with RecordStore(db) as store:
        assert store.query() == []  # no record: nothing was started


@settings(max_examples=40, deadline=None)
@given(
    key=st.from_regex(r"[a-z][a-z_]{1,10}", fullmatch=True).filter(lambda k: k not in WRONG),
    entry=st.sampled_from(ENTRY_POINTS),
)
def test_an_unknown_option_is_named(db: Path, key: str, entry: str) -> None:
    message = _refused(db, entry, {key: 1})
    assert f"'{key}'" in message and "unknown option" in message


@pytest.mark.parametrize(
    ("command", "problem"),
    [
        (5, "an integer (5)"),
        ([], "a list ([])"),
        (b"true", "bytes"),
        (["echo", None], "arguments that are strings, paths or numbers"),
        (["echo", True], "arguments that are strings, paths or numbers"),
    ],
)
async def test_a_command_that_is_no_argv_is_a_config_error(
    tmp_path: Path, command: Any, problem: str
) -> None:
    async with Executor(db=tmp_path / "runs.db", workdir=tmp_path / "work") as executor:
        with pytest.raises(ConfigError, match="command: expected") as error:
            await executor.run(command)
        assert problem in str(error.value)
        assert (await executor.store()).query() == []
