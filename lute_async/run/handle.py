"""Run: the live handle on one run (its id, status and record, its messages, and control).

A run is driven by the task of the call that owns it: the supervisor
(:mod:`lute_async.run.supervise`) launches, waits for the exit and the drain, and ends the run
with the terminal event; the communicators' readers (loop callbacks on the pipes, a task per
socket connection) push batches of messages into a bounded stream; the same task dispatches
them as they come (:mod:`lute_async.run.dispatch`): in order, into the record, awaiting each
event's hooks before the next, so a slow hook back-pressures the task instead of dropping
anything. The exit is noted by the loop's callback on the pidfd, so a hook that cancels its
run sees it at once. How the run ends is decided by its
:class:`~lute_async.run.lifecycle.Lifecycle`: the first cause wins.
"""

from __future__ import annotations

import asyncio
import base64
import os
import signal as signal_module
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from lute_async.communicators import CommunicatorSpec
from lute_async.communicators.stream import BatchStream
from lute_async.error_budget import ErrorBudget
from lute_async.errors import ConfigError, LuteAsyncError
from lute_async.hooks.events import BatchHook, Hook
from lute_async.hooks.registry import HookRegistry
from lute_async.hostname import environment
from lute_async.launchers.base import Launcher, TaskProcess
from lute_async.launchers.local import Local
from lute_async.limits import Limits
from lute_async.messages import TERMINAL_EVENTS, EventName, Message, TaskStatus
from lute_async.records.keeper import RecordKeeper
from lute_async.records.model import AnalysisRecord, new_run_id
from lute_async.redaction import Redactor
from lute_async.retry import Retry
from lute_async.run import enforcement
from lute_async.run.attempts import Attempts
from lute_async.run.context import RunContext
from lute_async.run.dispatch import Dispatcher
from lute_async.run.enforcement import Deadline
from lute_async.run.lifecycle import Lifecycle
from lute_async.run.tasklets import TaskletSteps
from lute_async.sandbox import Sandbox
from lute_async.tasklets import LoadedTasklet

if TYPE_CHECKING:
    from lute_async.channel import Channel

#: Batches buffered between a run's readers and its dispatcher (each decoded from at most
#: BATCH_BYTES of frames). This bounds a run's decoded backlog: tiny messages grow ~10x when
#: decoded. The full load (1,000 runs, 200 at once, 10,000 messages each) peaked at 3.9 GiB in
#: 120 s with 32, 553 MiB in 168 s with 8 and 450 MiB in 188 s with 4; one run's throughput
#: is the same with any of them.
STREAM_BUFFER = 8

#: A run's own hooks: ``{event: fn or [fns]}``, or a registry.
HooksArg = Mapping[str, Hook | Iterable[Hook]] | HookRegistry | None

#: A run's special events (see Run.__init__) for each set of events its keeper handles (two
#: sets: with and without the log), made once rather than for every run.
_SPECIAL_EVENTS: dict[frozenset[str], frozenset[str]] = {}


class Run(Attempts, TaskletSteps, Dispatcher):
    """A live handle on one run: its id, status and record, its messages, and control."""

    def __init__(
        self,
        context: RunContext,
        argv: list[str],
        *,
        name: str,
        params: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        hooks: HooksArg = None,
        launcher: Launcher | None = None,
        limits: Limits | None = None,
        communicators: Sequence[CommunicatorSpec] | None = None,
        tags: Iterable[str] | None = None,
        grace: float | None = None,
        tap: bool = False,
        stdin: Channel | None = None,
        stdout: Channel | None = None,
        sandbox: Sandbox | None = None,
        retry: Retry | None = None,
        before: Sequence[LoadedTasklet] | None = None,
        after: Sequence[LoadedTasklet] | None = None,
        inherit_env: bool | None = None,
    ) -> None:
        if retry is not None and (stdin is not None or stdout is not None):
            raise ConfigError(
                "key 'retry': a run whose stdin or stdout is a Channel cannot be retried "
                "(a channel's bytes are read once)"
            )
        self.id = new_run_id()
        self.name = name
        self.hooks = hooks if isinstance(hooks, HookRegistry) else HookRegistry(hooks)
        self._context = context
        self._argv = argv
        self._params = dict(params or {})
        self._params_file = None
        self._env_overrides = dict(env or {})
        self._cwd = os.fspath(cwd) if cwd is not None else None
        self._limits = limits
        self._sandbox = sandbox
        self.timeout = timeout if timeout is not None else (limits.wall_time if limits else None)
        self.grace = context.grace if grace is None else grace
        self.launcher = launcher if launcher is not None else Local()
        self._communicator_specs = tuple(
            communicators if communicators is not None else context.communicators
        )
        # secrets.token_urlsafe(24) without its three calls in Python: 24 random bytes.
        self._secret = base64.urlsafe_b64encode(os.urandom(24)).decode()
        # What the record and the logs may keep: the secret values the task can see (its
        # environment and its TCP secret) and secret-looking keys and flags masked.
        # The environment the task inherits, taken once, when the run is made: its launch
        # builds on this copy (decoding os.environ costs ~20 us a time).
        # inherit_env: the run's own choice, else the executor's (False: only ``env``).
        self._inherit_env = context.inherit_env if inherit_env is None else inherit_env
        self._inherited_env = environment() if self._inherit_env else {}
        known = {**self._inherited_env, **self._env_overrides}
        self.redactor = Redactor(known, (self._secret,))
        self.record = AnalysisRecord(
            id=self.id,
            name=name,
            command=self.redactor.argv(argv),
            params=self.redactor.mapping(self._params),
            cwd=self._cwd,
            launcher=self.launcher.describe(),
            tags=list(tags or ()),
            status=TaskStatus.PENDING.value,
            submitted_at=time.time(),
        )
        if limits is not None:
            self.record.extra["limits"] = limits.to_dict()
        if sandbox is not None:
            self.record.extra["sandbox"] = sandbox.to_dict()
        self._retry, self._attempt_number = retry, 0
        if retry is not None:
            self.record.extra["retry"] = retry.to_dict()
        self._before, self._after = tuple(before or ()), tuple(after or ())
        self._keeper = RecordKeeper(
            self.record,
            limits=self.record.extra.get("limits"),
            timeout=self.timeout,
            redactor=self.redactor,
        )
        self._hook_budget = ErrorBudget("hook_errors", self.id)
        self._lifecycle = Lifecycle(self.timeout)
        # The wall-time deadline, armed while the process runs; stop() parks it.
        self._deadline = Deadline(self.timeout) if self.timeout is not None else None
        # Events _handle does more for than calling hooks; the others take _dispatch_batch's
        # fast path when all their hooks are sync (cached per event until a registry changes).
        handled = self._keeper.handled
        special = _SPECIAL_EVENTS.get(handled)
        if special is None:
            special = _SPECIAL_EVENTS[handled] = (
                handled | TERMINAL_EVENTS | {EventName.STARTED, EventName.PROGRESS}
            )
        self._special_events = special
        self._routes = {}
        self._batch_names = frozenset()
        self._routes_version = -1
        # Not BatchStream[Batch](...): calling a subscripted generic costs ~2 us a run.
        self._send = self._receive = BatchStream(STREAM_BUFFER)
        self._process = None
        self._exit = None
        self._exited = asyncio.Event()
        self._finished = asyncio.Event()  # the run engine's own: no backend lookup
        # Draining after exit: readers still serving, and when the stream last moved.
        self._drained = asyncio.Event()
        self._exit_error = None
        self._started_fired = False
        self._terminal_fired = False
        self.progress = None
        self._tap = anyio.create_memory_object_stream[Message](1024) if tap else None
        self._tap_taken = False
        self._queued = None
        # Channel ends this run's stdin/stdout are connected to (they act as communicators).
        self._channel_ends = [
            channel.attach(self, side)
            for channel, side in ((stdin, "stdin"), (stdout, "stdout"))
            if channel is not None
        ]

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def done(self) -> bool:
        """True once the terminal event has been handled and the record is final."""
        return self._finished.is_set()

    @property
    def time_left(self) -> float | None:
        """Seconds of wall time left before the timeout (constant while stopped), or None."""
        return self._deadline.left if self._deadline is not None else None

    def on(self, event: str, fn: Hook | None = None) -> Any:
        """Register a hook for this run only; usable as a decorator."""
        if fn is None:
            return lambda f: self.hooks.add(event, f)
        return self.hooks.add(event, fn)

    def on_batch(self, event: str, fn: BatchHook | None = None) -> Any:
        """Register a batch hook for this run only; usable as a decorator."""
        if fn is None:
            return lambda f: self.hooks.add_batch(event, f)
        return self.hooks.add_batch(event, fn)

    async def messages(self) -> AsyncIterator[Message]:
        """Every message of the run in stream order, ending with the terminal event.

        Available on runs from :meth:`Executor.start`; messages are held (bounded, so the task
        is back-pressured) until this is iterated or :meth:`wait` is called.
        """
        if self._tap is None or self._tap_taken:
            raise LuteAsyncError(
                f"messages() of run {self.name!r} is available once, on runs from Executor.start()"
            )
        self._tap_taken = True
        async with self._tap[1] as receive:
            async for message in receive:
                yield message

    async def stop(self) -> None:
        """Pause the task's whole process group (SIGSTOP); fires ``stopped``."""
        process = self._require_process("stop")
        process.send_signal(signal_module.SIGSTOP)
        wait_stopped = getattr(process, "wait_stopped", None)  # local: until it is stopped
        if wait_stopped is not None:
            with anyio.move_on_after(self.grace):
                await wait_stopped()
        if self._deadline is not None:  # stopped time is free
            self._deadline.pause()
        await self._inject(EventName.STOPPED, {"pid": process.pid})

    async def resume(self) -> None:
        """Continue a stopped task (SIGCONT); fires ``continued``."""
        process = self._require_process("resume")
        process.send_signal(signal_module.SIGCONT)
        if self._deadline is not None:
            self._deadline.resume()
        await self._inject(EventName.CONTINUED, {"pid": process.pid})

    async def cancel(self) -> None:
        """End the run: SIGTERM to its group (or the scheduler's cancel), SIGKILL after the
        grace period. The run ends ``cancelled`` unless something else ended it first. Safe
        to call at any time, and more than once."""
        if self._mark_cancelled() is not None:
            await self._terminate()

    async def kill(self) -> None:
        """End the run now: SIGKILL to its group (or the scheduler's forced cancel). The run
        ends ``cancelled`` unless something else ended it first."""
        if (process := self._mark_cancelled()) is not None:
            await process.kill()

    async def wait(self) -> AnalysisRecord:
        """Wait until the run has ended and its record is final; return the record."""
        if self._tap is not None and not self._tap_taken:
            self._tap_taken = True
            self._tap[1].close()  # nobody will read the messages: stop holding them
            self._tap = None
        await self._finished.wait()
        return self.record

    def end_for_limit(self, kind: str, detail: str) -> None:
        """End the run now (SIGKILL to its group) because a limit was exceeded; the record's
        verdict says which (e.g. a channel's byte limit: ``output_limit``)."""
        enforcement.end_for_limit(self._lifecycle, self.record, self._process, kind, detail)

    def _mark_cancelled(self) -> TaskProcess | None:
        """Claim ``cancelled`` as the run's end (if nothing did before) and stop any wait for
        a slot; return the process if it is still running and must be ended."""
        self._lifecycle.cancel()
        if self._queued is not None:
            self._queued.cancel()
        return None if self._lifecycle.exited else self._process

    def _require_process(self, action: str) -> TaskProcess:
        if self._process is None or self._lifecycle.exited:
            raise LuteAsyncError(f"cannot {action} run {self.name!r}: it is not running")
        return self._process
