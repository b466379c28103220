"""The lifecycle rules of a run, without processes: phases, the first-wins end, the terminal
event and its payload."""

from __future__ import annotations

import ast
import signal
from pathlib import Path

import anyio
import pytest

from lute_async.launchers.base import ExitStatus
from lute_async.run import lifecycle
from lute_async.run.enforcement import Deadline
from lute_async.run.lifecycle import (
    OWNER_CANCELLED,
    EndCause,
    Lifecycle,
    Phase,
    terminal_payload,
)

OK = ExitStatus(exit_code=0)
KILLED = ExitStatus(exit_code=None, signal=signal.SIGKILL)
TERMED = ExitStatus(exit_code=None, signal=signal.SIGTERM)


def test_a_clean_exit_ends_done_with_no_error() -> None:
    life = Lifecycle()
    assert life.finish(OK) == "done"
    assert life.end is not None and life.end.cause is EndCause.EXIT
    assert life.phase is Phase.ENDED
    assert life.payload("done", OK)["error"] is None


def test_a_non_zero_exit_fails_and_says_its_code() -> None:
    life = Lifecycle()
    status = ExitStatus(exit_code=3)
    assert life.finish(status) == "failed"
    assert life.payload("failed", status)["error"] == {
        "type": "NonZeroExit",
        "message": "task exited with code 3",
    }


def test_cancel_before_timeout_wins() -> None:
    life = Lifecycle(timeout=5)
    assert life.cancel() is True
    assert life.time_out() is False
    assert life.exceed("output_limit", "too much") is False
    assert life.finish(TERMED) == "cancelled"
    assert life.payload("cancelled", TERMED)["error"]["type"] == "Cancelled"


def test_timeout_before_cancel_wins_and_names_the_timeout() -> None:
    life = Lifecycle(timeout=2.5)
    assert life.time_out() is True
    assert life.cancel() is False
    assert life.finish(TERMED) == "timed_out"
    assert life.payload("timed_out", TERMED)["error"] == {
        "type": "Timeout",
        "message": "run exceeded its 2.5 s timeout",
    }


def test_a_limit_wins_over_a_later_cancel_and_the_kill_reads_as_failed() -> None:
    life = Lifecycle(timeout=5)
    assert life.exceed("output_limit", "more than 10 bytes") is True
    assert life.cancel() is False
    assert life.time_out() is False
    assert life.end is not None
    assert life.end.verdict == {"kind": "output_limit", "detail": "more than 10 bytes"}
    assert life.finish(KILLED) == "failed"
    assert life.payload("failed", KILLED)["error"] == {
        "type": "KilledBySignal",
        "message": "task was killed by SIGKILL",
    }


def test_only_the_first_limit_sets_the_verdict() -> None:
    life = Lifecycle()
    assert life.exceed("output_limit", "first")
    assert not life.exceed("memory", "second")
    assert life.end is not None and life.end.verdict == {"kind": "output_limit", "detail": "first"}


def test_an_exit_drained_first_is_not_overridden_by_a_later_cancel() -> None:
    life = Lifecycle()
    assert life.finish(OK) == "done"
    assert life.cancel() is False
    assert life.terminal_event(OK) == "done"


def test_a_cancel_during_the_drain_wins_over_the_exit() -> None:
    life = Lifecycle()
    life.advance(Phase.RUNNING)
    life.advance(Phase.DRAINING)
    assert life.cancel() is True
    assert life.finish(OK) == "cancelled"


def test_a_launch_error_fails_the_run_with_the_launch_error() -> None:
    life = Lifecycle()
    error = {"type": "LaunchError", "message": "no such file", "traceback": None}
    status = ExitStatus(exit_code=None, error=error)
    assert life.launch_failed() is True
    assert life.cancel() is False
    assert life.finish(status) == "failed"
    assert life.payload("failed", status)["error"] is error


def test_the_scheduler_terminal_event_is_kept_on_exit() -> None:
    status = ExitStatus(exit_code=None, terminal="timed_out", error={"type": "Timeout"})
    life = Lifecycle()
    assert life.finish(status) == "timed_out"
    assert life.payload("timed_out", status)["error"] == {"type": "Timeout"}


def test_phases_move_forward_only() -> None:
    life = Lifecycle()
    assert not life.running and not life.exited
    life.advance(Phase.RUNNING)
    assert life.running and not life.exited
    life.advance(Phase.DRAINING)
    assert life.exited and not life.running
    with pytest.raises(ValueError, match="cannot go back"):
        life.advance(Phase.RUNNING)


def test_payload_carries_the_status_and_an_owner_error_overrides() -> None:
    status = ExitStatus(exit_code=1, usage={"max_rss_kb": 7.0}, extra={"node_list": "n1"})
    data = terminal_payload("cancelled", status, error=OWNER_CANCELLED)
    assert data == {
        "exit_code": 1,
        "signal": None,
        "usage": {"max_rss_kb": 7.0},
        "error": OWNER_CANCELLED,
        "extra": {"node_list": "n1"},
    }
    assert terminal_payload("cancelled", None)["exit_code"] is None


async def test_a_deadline_paused_before_it_is_armed_stays_paused_until_resumed() -> None:
    # A hook on "started" may stop the task before the supervisor arms the deadline: the
    # stopped time must still be free.
    deadline = Deadline(0.01)
    deadline.pause()
    with anyio.fail_after(10):  # a bound for a broken deadline, not a timing assertion
        async with anyio.create_task_group() as tg:
            tg.start_soon(deadline.wait)
            await anyio.wait_all_tasks_blocked()
            assert deadline.left == 0.01  # armed, but its clock is stopped
            deadline.resume()
            left = deadline.left
            assert left is not None and left <= 0.01
    assert deadline.left is None  # it passed and is no longer armed


async def test_a_deadline_paused_while_armed_keeps_what_was_left() -> None:
    deadline = Deadline(3600)
    assert deadline.left is None  # not armed yet
    async with anyio.create_task_group() as tg:
        tg.start_soon(deadline.wait)
        await anyio.wait_all_tasks_blocked()
        deadline.pause()
        left = deadline.left
        await anyio.wait_all_tasks_blocked()
        assert deadline.left == left
        deadline.resume()
        resumed = deadline.left
        assert left is not None and resumed is not None and 0 < resumed <= left
        tg.cancel_scope.cancel()


def test_the_lifecycle_rules_do_no_io_and_know_no_engine() -> None:
    # Pure rules (layer L2): no event loop, no processes, no executor, workflow or config.
    tree = ast.parse(Path(lifecycle.__file__).read_text())
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {
        "__future__",
        "dataclasses",
        "enum",
        "signal",
        "typing",
        "lute_async.launchers.base",
        "lute_async.messages",
    }
