"""The core behaviour on uvloop's event loop (the CLI's default) as well as stdlib asyncio's.

Tests imported here are collected again in this module, which conftest runs on uvloop.
"""

from __future__ import annotations

import asyncio

import uvloop
from test_executor import (  # noqa: F401 - collected again, on uvloop
    test_burst_of_100000_messages_arrives_complete_and_in_order,
    test_cancelling_the_caller_cancels_the_run_and_ends_the_process,
    test_exit_code_3_fails_with_exit_code_recorded,
    test_hooks_fire_in_order_for_started_progress_result_done,
    test_stop_and_resume_fire_events_and_pause_the_process,
    test_task_killed_by_sigkill_fails_with_signal_9,
    test_timeout_ends_the_task_and_its_grandchild,
)
from test_shared_socket import (  # noqa: F401 - collected again, on uvloop
    test_no_hello_within_hello_timeout_or_half_a_hello_is_dropped,
    test_tasks_that_write_1000_messages_and_exit_at_once_lose_none,
    test_two_concurrent_runs_over_the_one_socket_each_get_only_their_own_messages,
)


async def test_running_on_uvloop() -> None:
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
