"""Executor and Run: start tasks, multiplex their communicators into one ordered stream per run,
fire hooks for each event and keep every run's record.

One run is three concurrent jobs inside the task group of the call that owns it:

* the supervisor launches the process, serves its communicators, waits for it to exit (on a
  pidfd or the scheduler), enforces the timeout, and ends the stream with the terminal event;
* the communicators' readers push batches of messages into a bounded memory stream;
* the dispatcher takes messages in order, updates the record, and awaits each event's hooks
  before the next one, so a slow hook back-pressures the task instead of dropping anything.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import secrets
import signal as signal_module
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    suppress,
)
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from lute_async.communicators import CommunicatorSpec, RunChannel, make_communicator
from lute_async.communicators.base import Batch, Communicator
from lute_async.errors import LaunchError, LuteAsyncError, ProtocolError
from lute_async.hooks.builtin import RecordKeeper, log_event
from lute_async.hooks.registry import (
    Event,
    Hook,
    HookError,
    HookRegistry,
    call_hooks,
    hook_error,
)
from lute_async.hooks.watchdog import HookWatchdog
from lute_async.launchers.base import ExitStatus, Launcher, LaunchSpec, TaskProcess
from lute_async.launchers.local import Local
from lute_async.limits import Limits
from lute_async.logs import get_logger
from lute_async.messages import (
    DEFAULT_MAX_FRAME,
    TERMINAL_EVENTS,
    EventName,
    Message,
    TaskStatus,
)
from lute_async.records import (
    DEFAULT_MAX_RESULT_BYTES,
    AnalysisRecord,
    RecordStore,
    default_db_path,
    spill_record,
)
from lute_async.redaction import redact_env
from lute_async.wire import (
    ENV_EXECUTOR_PID,
    ENV_NAME,
    ENV_PARAMS,
    ENV_PARAMS_FILE,
    ENV_RUN,
    ENV_SECRET,
)

if TYPE_CHECKING:
    from lute_async.channel import Channel
    from lute_async.workflow import Workflow

#: Params larger than this go to the task in a file instead of the environment.
MAX_ENV_PARAMS = 64 * 1024
#: Batches buffered between a run's readers and its dispatcher (each decoded from at most
#: BATCH_BYTES of frames). This bounds a run's decoded backlog: tiny messages grow ~10x when
#: decoded. The full load (1,000 runs, 200 at once, 10,000 messages each) peaked at 3.9 GiB in
#: 120 s with 32, 553 MiB in 168 s with 8 and 450 MiB in 188 s with 4; one run's throughput
#: is the same with any of them.
STREAM_BUFFER = 8
# Plain values for the per-message checks: an enum member lookup costs 0.1 us on 3.11.
_STARTED: str = EventName.STARTED.value
_PROGRESS: str = EventName.PROGRESS.value

Command = str | Sequence[str]
Tap = tuple[MemoryObjectSendStream[Message], MemoryObjectReceiveStream[Message]]
HooksArg = Mapping[str, Hook | Iterable[Hook]] | HookRegistry | None


def _argument(part: Any) -> str:
    return os.fspath(part) if isinstance(part, os.PathLike) else str(part)


def _signal_name(signum: int) -> str:
    try:
        return signal_module.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class Run:
    """A live handle on one run: its id, status and record, its messages, and control."""

    def __init__(
        self,
        executor: Executor,
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
    ) -> None:
        self.id = uuid.uuid4().hex
        self.name = name
        self.hooks = hooks if isinstance(hooks, HookRegistry) else HookRegistry(hooks)
        self._executor = executor
        self._argv = argv
        self._params = dict(params or {})
        self._env_overrides = dict(env or {})
        self._cwd = os.fspath(cwd) if cwd is not None else None
        self._limits = limits
        self.timeout = timeout if timeout is not None else (limits.wall_time if limits else None)
        self.grace = executor.grace if grace is None else grace
        self.launcher: Launcher = launcher if launcher is not None else Local()
        self._communicator_specs = tuple(
            communicators if communicators is not None else executor.communicators
        )
        self._secret = secrets.token_urlsafe(24)
        self.record = AnalysisRecord(
            id=self.id,
            name=name,
            command=list(argv),
            params=self._params,
            cwd=self._cwd,
            launcher=self.launcher.describe(),
            tags=list(tags or ()),
            status=TaskStatus.PENDING.value,
            submitted_at=time.time(),
        )
        if limits is not None:
            self.record.extra["limits"] = limits.to_dict()
        self._keeper = RecordKeeper(
            self.record, limits=self.record.extra.get("limits"), timeout=self.timeout
        )
        # Events _handle does more for than calling hooks; the others take _dispatch_batch's
        # fast path when all their hooks are sync (cached per event until a registry changes).
        self._special_events = (
            self._keeper.handled | TERMINAL_EVENTS | {EventName.STARTED, EventName.PROGRESS}
        )
        self._plain_hooks: dict[str, tuple[Hook, ...] | None] = {}
        self._plain_version = -1
        self._send, self._receive = anyio.create_memory_object_stream[Batch](STREAM_BUFFER)
        self._process: TaskProcess | None = None
        self._exit: ExitStatus | None = None
        self._exited = anyio.Event()
        self._finished = anyio.Event()
        # Draining after exit: readers still serving, and when the stream last moved.
        self._readers_left = 0
        self._drained = anyio.Event()
        self._dispatching = False
        self._last_progress = 0.0
        self._end_reason: str | None = None
        self._started_fired = False
        self._terminal_fired = False
        self.progress: dict[str, Any] | None = None
        if tap:
            self._tap: Tap | None = anyio.create_memory_object_stream[Message](1024)
        else:
            self._tap = None
        self._tap_taken = False
        # The wall-time deadline: a cancel scope whose deadline stop() parks and resume() moves.
        self._deadline: anyio.CancelScope | None = None
        self._queued: anyio.CancelScope | None = None  # set while waiting for a slot
        self._paused_left: float | None = None
        # Channel ends this run's stdin/stdout are connected to (they act as communicators).
        self._channel_ends = [
            channel.attach(self, side)
            for channel, side in ((stdin, "stdin"), (stdout, "stdout"))
            if channel is not None
        ]

    # -- public face ---------------------------------------------------------------------

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

    def on(self, event: str, fn: Hook | None = None) -> Any:
        """Register a hook for this run only; usable as a decorator."""
        if fn is None:
            return lambda f: self.hooks.add(event, f)
        return self.hooks.add(event, fn)

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
        if self._deadline is not None and self._paused_left is None:  # stopped time is free
            self._paused_left = self._deadline.deadline - anyio.current_time()
            self._deadline.deadline = math.inf
        await self._inject(EventName.STOPPED, {"pid": process.pid})

    async def resume(self) -> None:
        """Continue a stopped task (SIGCONT); fires ``continued``."""
        process = self._require_process("resume")
        process.send_signal(signal_module.SIGCONT)
        if self._deadline is not None and self._paused_left is not None:
            self._deadline.deadline = anyio.current_time() + self._paused_left
            self._paused_left = None
        await self._inject(EventName.CONTINUED, {"pid": process.pid})

    async def cancel(self) -> None:
        """End the run: SIGTERM to its group (or the scheduler's cancel), SIGKILL after the
        grace period. The run ends ``cancelled``. Safe to call at any time, and more than once."""
        if self._mark_cancelled() is not None:
            await self._terminate()

    async def kill(self) -> None:
        """End the run now: SIGKILL to its group (or the scheduler's forced cancel). The run
        ends ``cancelled``."""
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

    def _mark_cancelled(self) -> TaskProcess | None:
        """Make ``cancelled`` the run's end and stop any wait for a slot; return the process
        if it is still running and must be ended."""
        if self._end_reason is None:
            self._end_reason = EventName.CANCELLED
        if self._queued is not None:
            self._queued.cancel()
        return None if self._exited.is_set() else self._process

    def _require_process(self, action: str) -> TaskProcess:
        if self._process is None or self._exited.is_set():
            raise LuteAsyncError(f"cannot {action} run {self.name!r}: it is not running")
        return self._process

    # -- supervision ----------------------------------------------------------------------

    async def _execute(self) -> None:
        """Run to the end: supervise the process and dispatch its stream concurrently."""
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._dispatch)
                try:
                    await self._supervise()
                finally:
                    self._send.close()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self.grace + 10
                await self._abort()
            raise

    async def _supervise(self) -> None:
        executor = self._executor
        await executor._save(self)
        async with AsyncExitStack() as slot:
            if executor._limiter is not None:
                # Waiting for a max_concurrency slot: cancel() ends the wait at once.
                with anyio.CancelScope() as self._queued:
                    if self._end_reason is None:
                        await slot.enter_async_context(executor._limiter)
                self._queued = None
            if self._end_reason is not None:  # cancelled before it could start
                await self._end(EventName.CANCELLED, ExitStatus(exit_code=None))
                return
            channel = RunChannel(
                self.id,
                self._secret,
                self._send,
                max_frame=executor.max_frame,
                on_protocol_error=self._protocol_error,
                on_output=self._output_budget(),
            )
            communicators = [
                make_communicator(spec)
                for spec in self.launcher.communicators(self._communicator_specs)
            ] + list(self._channel_ends)
            try:
                status = await self._launch_and_wait(channel, communicators)
            finally:
                with anyio.CancelScope(shield=True):
                    for communicator in communicators:
                        await communicator.aclose()
                    self._remove_params_file()
        if status is not None:
            await self._end(self._terminal_event(status), status)

    async def _launch_and_wait(
        self, channel: RunChannel, communicators: list[Communicator]
    ) -> ExitStatus | None:
        spec = self._launch_spec()
        try:
            for communicator in communicators:
                setup = await communicator.open(channel)
                spec.env.update(setup.env)
                spec.pass_fds += setup.pass_fds
                spec.stdout = setup.stdout if setup.stdout is not None else spec.stdout
                spec.stderr = setup.stderr if setup.stderr is not None else spec.stderr
                spec.stdin = getattr(setup, "stdin", None) or spec.stdin  # a channel's end
            self.record.communicators = [c.describe() for c in communicators]
            self.record.env = self._recorded_env(spec.env)
            self._process = await self.launcher.launch(spec, self._notify)
        except (LaunchError, OSError) as exc:
            kind = type(exc).__name__ if isinstance(exc, LaunchError) else "LaunchError"
            error = {"type": kind, "message": str(exc), "traceback": None}
            await self._end(EventName.FAILED, ExitStatus(exit_code=None, error=error))
            return None
        for communicator in communicators:
            communicator.child_started()
        self.record.extra.update(self._process.describe())
        if self._end_reason is not None:  # cancel() arrived while launching
            await self._terminate_soon()
        async with anyio.create_task_group() as readers:
            self._readers_left = len(communicators)
            for communicator in communicators:
                readers.start_soon(self._serve, communicator)
            async with anyio.create_task_group() as waiting:
                if self.timeout is not None:
                    waiting.start_soon(self._enforce_timeout, self.timeout)
                status = await self._process.wait()
                waiting.cancel_scope.cancel()
            self._exit = status
            self._exited.set()
            await self._drain(readers.cancel_scope)
        return status

    async def _serve(self, communicator: Communicator) -> None:
        try:
            await communicator.serve(self._exited)
        finally:
            self._readers_left -= 1
            if not self._readers_left:
                self._drained.set()

    async def _drain(self, readers: anyio.CancelScope) -> None:
        """After the exit, let the readers reach end of stream while messages keep moving.

        What the task wrote before it exited may take a while to read on a loaded executor,
        so the limit is on *silence*: ``drain_timeout`` seconds with no batch handled (a
        process that escaped the group may hold a pipe open forever) ends the readers.
        """
        timeout = self._executor.drain_timeout
        self._last_progress = anyio.current_time()
        while not self._drained.is_set():
            # Not a poll: this wakes once per drain_timeout of silence, or when drained.
            with anyio.move_on_after(self._last_progress + timeout - anyio.current_time()):
                await self._drained.wait()
            silent = anyio.current_time() - self._last_progress >= timeout
            if silent and not self._dispatching and not self._drained.is_set():
                readers.cancel()
                get_logger().warning(
                    "drain_timeout", run_id=self.id, run=self.name, seconds=timeout
                )
                return
            if self._dispatching:  # a slow hook is still working through what was read
                self._last_progress = anyio.current_time()

    def _launch_spec(self) -> LaunchSpec:
        executor = self._executor
        env = dict(os.environ) if executor.inherit_env else {}
        env.setdefault("PYTHONUNBUFFERED", "1")  # live log lines from Python tasks
        env.update(self._env_overrides)
        env[ENV_RUN] = self.id
        env[ENV_NAME] = self.name
        env[ENV_SECRET] = self._secret
        env[ENV_EXECUTOR_PID] = str(os.getpid())
        run_dir = executor.workdir / self.id
        if self._params:
            text = json.dumps(self._params)
            if len(text) <= MAX_ENV_PARAMS:
                env[ENV_PARAMS] = text
            else:
                run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                path = run_dir / "params.json"
                path.write_text(text)
                env[ENV_PARAMS_FILE] = os.fspath(path)
        return LaunchSpec(
            argv=list(self._argv),
            env=env,
            run_id=self.id,
            name=self.name,
            run_dir=run_dir,
            cwd=self._cwd,
            limits=self._limits,
        )

    def _remove_params_file(self) -> None:
        path = self._executor.workdir / self.id / "params.json"
        if path.exists():
            path.unlink(missing_ok=True)

    def _recorded_env(self, env: Mapping[str, str]) -> dict[str, str]:
        recorded = redact_env(env)
        recorded.pop(ENV_PARAMS, None)  # the params are recorded on their own
        return recorded

    def end_for_limit(self, kind: str, detail: str) -> None:
        """End the run now (SIGKILL to its group) because a limit was exceeded; the record's
        verdict says which (e.g. a channel's byte limit: ``output_limit``)."""
        if self._end_reason is None:
            self._end_reason = kind
        if self.record.verdict is None:
            self.record.verdict = {"kind": kind, "detail": detail}
        if self._process is not None and not self._exited.is_set():
            self._process.send_signal(signal_module.SIGKILL)

    def _output_budget(self) -> Any:
        limit = self._limits.output_bytes if self._limits is not None else None
        if limit is None:
            return None
        seen = 0

        def within(n: int) -> bool:
            nonlocal seen
            seen += n
            if seen <= limit:
                return True
            if self._end_reason is None:
                self._end_reason = "output_limit"
                self.record.verdict = {
                    "kind": "output_limit",
                    "detail": f"more than {limit} bytes on stdout/stderr",
                }
                if self._process is not None:
                    self._process.send_signal(signal_module.SIGKILL)
            self.record.extra["output_discarded_bytes"] = seen - limit
            return False

        return within

    @property
    def time_left(self) -> float | None:
        """Seconds of wall time left before the timeout (constant while stopped), or None."""
        if self._paused_left is not None:
            return self._paused_left
        if self._deadline is None:
            return None
        return max(0.0, self._deadline.deadline - anyio.current_time())

    async def _enforce_timeout(self, timeout: float) -> None:
        # A deadline, not a poll: this task wakes once, when the (movable) deadline passes.
        with anyio.CancelScope(deadline=anyio.current_time() + timeout) as deadline:
            self._deadline = deadline
            try:
                await anyio.sleep_forever()
            finally:
                self._deadline = None
        if self._end_reason is None:
            self._end_reason = EventName.TIMED_OUT
        await self._terminate()

    async def _terminate(self) -> None:
        """SIGTERM (or the scheduler's cancel), then SIGKILL if still running after ``grace``."""
        process = self._process
        if process is None:
            return
        await process.terminate()
        with anyio.move_on_after(self.grace):
            await self._exited.wait()
        if not self._exited.is_set():
            await process.kill()

    async def _terminate_soon(self) -> None:
        if self._process is not None:
            await self._process.terminate()

    def _terminal_event(self, status: ExitStatus) -> str:
        if self._end_reason in (EventName.CANCELLED, EventName.TIMED_OUT):
            return self._end_reason
        return status.terminal_event()

    async def _notify(self, sig: str, data: dict[str, Any]) -> None:
        await self._inject(sig, data)

    async def _inject(self, sig: str, data: Any) -> None:
        await self._send.send([Message(str(sig), data, 0, time.time(), None, os.getpid())])

    async def _end(self, event: str, status: ExitStatus) -> None:
        """Send the terminal event, the last message of the stream."""
        data: dict[str, Any] = {
            "exit_code": status.exit_code,
            "signal": status.signal,
            "usage": status.usage,
            "error": status.error or self._exit_error(event, status),
            "extra": status.extra,
        }
        await self._send.send([Message(str(event), data, 0, time.time(), None, os.getpid())])

    def _exit_error(self, event: str, status: ExitStatus) -> dict[str, Any] | None:
        if event == EventName.TIMED_OUT:
            return {"type": "Timeout", "message": f"run exceeded its {self.timeout} s timeout"}
        if event == EventName.CANCELLED:
            return {"type": "Cancelled", "message": "run was cancelled"}
        if event != EventName.FAILED:
            return None
        if status.signal is not None:
            name = _signal_name(status.signal)
            return {"type": "KilledBySignal", "message": f"task was killed by {name}"}
        return {"type": "NonZeroExit", "message": f"task exited with code {status.exit_code}"}

    async def _abort(self) -> None:
        """The owner of this run was cancelled: end the process, then record and fire
        ``cancelled`` directly (the dispatcher is gone)."""
        if self._terminal_fired:
            return
        self._end_reason = EventName.CANCELLED
        status = self._exit
        if self._process is not None and not self._exited.is_set():
            await self._process.terminate()
            with anyio.move_on_after(self.grace):
                status = await self._process.wait()
            if status is None:
                await self._process.kill()
                with anyio.move_on_after(5):
                    status = await self._process.wait()
        message = Message(
            EventName.CANCELLED.value,
            {
                "exit_code": status.exit_code if status else None,
                "signal": status.signal if status else None,
                "usage": status.usage if status else None,
                "error": {"type": "Cancelled", "message": "run was cancelled by its owner"},
                "extra": {},
            },
            0,
            time.time(),
            None,
            os.getpid(),
        )
        await self._handle(message)

    # -- dispatch -------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        try:
            async with self._receive:
                async for batch in self._receive:
                    self._dispatching = True
                    await self._dispatch_batch(batch)
                    self._dispatching = False
                    self._last_progress = anyio.current_time()
        finally:
            if self._tap is not None:
                self._tap[0].close()

    async def _dispatch_batch(self, batch: Batch) -> None:
        """Handle ``batch`` in order. A message whose event only fires sync hooks, and touches
        neither the record nor the tap, takes the fast path: an Event and the hook calls, with
        no coroutine, hook-list concatenation or record check per message."""
        if self._tap is not None:  # the tap only ever goes away, never comes back mid-batch
            for message in batch:
                await self._handle(message)
            return
        executor_hooks, run_hooks = self._executor.hooks, self.hooks
        timeout = self._executor.hook_timeout  # only named in errors, as call_hooks does
        plain = self._plain_hooks
        new = object.__new__
        for message in batch:
            if executor_hooks.version + run_hooks.version != self._plain_version:
                plain = self._renew_plain_hooks()
            sig = message.sig
            hooks = plain.get(sig)
            if hooks is None:
                if sig not in plain:
                    plain[sig] = hooks = self._sync_hooks_only(sig)
                if hooks is None:
                    await self._handle(message)
                    continue
            if hooks:
                # Event(...) field by field: 40% cheaper than calling the dataclass on 3.11
                # (test_hooks_get_events_equal_to_constructed_ones checks every field is set).
                event = new(Event)
                event.name = sig
                event.run = self
                event.data = message.data
                event.rank = message.rank
                event.ts = message.ts
                event.message = message
                for fn in hooks:
                    try:
                        result = fn(event)
                        # A sync callable that returned a coroutine; testing for None first
                        # skips isawaitable's costly ABC check for the usual hook.
                        if result is not None and inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        self._hook_errors([hook_error(event, fn, exc, timeout)])

    def _renew_plain_hooks(self) -> dict[str, tuple[Hook, ...] | None]:
        """Forget the cached hook lists: a registry has changed since they were made."""
        self._plain_version = self._executor.hooks.version + self.hooks.version
        self._plain_hooks = {}
        return self._plain_hooks

    def _sync_hooks_only(self, sig: str) -> tuple[Hook, ...] | None:
        """The hooks of ``sig`` when they are all sync and the event is none of those
        ``_handle`` treats specially; None when ``_handle`` must take it."""
        if sig in self._special_events or self._executor._watchdog is not None:
            return None  # the watchdog of sync hooks lives in call_hooks only
        hooks = self._executor.hooks.hooks_for(sig) + self.hooks.hooks_for(sig)
        if any(is_async for _, is_async in hooks):
            return None
        return tuple(fn for fn, _ in hooks)

    async def _handle(self, message: Message) -> None:
        sig = message.sig
        if sig == _STARTED:
            if self._started_fired:
                # The executor already announced the start; the task's own "started" adds
                # what it reports (its params) to the record without firing twice.
                if message.source == "executor":
                    # A scheduler may see a job running after its ranks said so (SLURM):
                    # keep its nodes and rank count, not a second start time.
                    started_at = self.record.started_at
                    self._keeper.apply(message)
                    self.record.started_at = started_at
                    await self._executor._save(self)
                else:
                    self._keeper.task_started(message)
                return
            self._started_fired = True
        elif sig == _PROGRESS:
            self.progress = message.data if isinstance(message.data, dict) else None
        terminal = sig in TERMINAL_EVENTS
        if terminal:
            if self._terminal_fired:
                return
            self._terminal_fired = True
        if self._keeper.apply(message):
            await self._executor._save(self)
        hooks = self._executor.hooks.hooks_for(sig) + self.hooks.hooks_for(sig)
        if hooks:
            event = Event(sig, self, message.data, message.rank, message.ts, message)
            errors = await call_hooks(
                hooks, event, self._executor.hook_timeout, self._executor._watchdog
            )
            if errors:
                self._hook_errors(errors)
                if terminal:
                    await self._executor._save(self)
        if self._tap is not None:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._tap[0].send(message)
        if terminal:
            self._finished.set()

    def _hook_errors(self, errors: list[HookError]) -> None:
        log = get_logger()
        for error in errors:
            self.record.hook_errors.append(error.to_dict())
            log.error(
                "hook_failed",
                run_id=self.id,
                run=self.name,
                hook_event=error.event,
                hook=error.hook,
                error=f"{error.type}: {error.message}",
                traceback=error.traceback,
            )

    def _protocol_error(self, source: str, conn: int, error: ProtocolError) -> None:
        self.record.extra.setdefault("protocol_errors", []).append(
            {"source": source, "conn": conn, "message": str(error), "offset": error.offset}
        )
        get_logger().error(
            "protocol_error",
            run_id=self.id,
            run=self.name,
            source=source,
            conn=conn,
            offset=error.offset,
            error=str(error),
        )


class Executor:
    """Starts tasks, fires hooks for their events and records every run.

    ``db`` is a path, an open :class:`RecordStore`, or None for ``$LUTE_ASYNC_DB`` or the user
    data directory. ``max_concurrency`` bounds how many runs execute at once (others wait in
    PENDING). ``communicators`` are the kinds each run opens unless it says otherwise.
    ``drain_timeout`` is how long the stream may stay silent after a task's exit before its
    readers are ended; ``hook_timeout`` cuts async hooks and has a watchdog report sync ones
    that block the loop; ``max_result_bytes`` bounds a result kept whole in its record.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | RecordStore | None = None,
        *,
        hooks: HooksArg = None,
        max_concurrency: int | None = None,
        communicators: Sequence[CommunicatorSpec] = ("pipe", "socket"),
        grace: float = 5.0,
        max_frame: int = DEFAULT_MAX_FRAME,
        drain_timeout: float = 2.0,
        hook_timeout: float | None = None,
        inherit_env: bool = True,
        workdir: str | os.PathLike[str] | None = None,
        log_events: bool = True,
        max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES,
    ) -> None:
        self.hooks = hooks if isinstance(hooks, HookRegistry) else HookRegistry(hooks)
        if log_events:
            log_event.register(self.hooks)
        self.communicators = tuple(communicators)
        self.grace = grace
        self.max_frame = max_frame
        self.drain_timeout = drain_timeout
        self.hook_timeout = hook_timeout
        self.max_result_bytes = max_result_bytes
        self._watchdog = HookWatchdog(hook_timeout) if hook_timeout is not None else None
        self.inherit_env = inherit_env
        self.max_concurrency = max_concurrency
        self._limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        if isinstance(db, RecordStore):
            self._store: RecordStore | None = db
            self.db_path = Path(db.path)
        else:
            self._store = None
            self.db_path = Path(db) if db is not None else default_db_path()
        self.workdir = Path(workdir) if workdir is not None else self.db_path.parent / "runs"
        self._store_lock = anyio.Lock()
        self._db_limiter = anyio.CapacityLimiter(1)
        self.host = socket.gethostname()

    # -- hooks ----------------------------------------------------------------------------

    def on(self, event: str, fn: Hook | None = None) -> Any:
        """Register a hook for ``event`` (``"*"`` for all) on every run; usable as a decorator."""
        if fn is None:
            return lambda f: self.hooks.add(event, f)
        return self.hooks.add(event, fn)

    # -- running --------------------------------------------------------------------------

    def _make_run(self, cmd: Command, *, name: str | None = None, **options: Any) -> Run:
        """A Run of ``cmd``; ``options`` are :class:`Run`'s keyword arguments."""
        # Paths and numbers (a template resolved to an int) are arguments too.
        argv = [cmd] if isinstance(cmd, str) else [_argument(part) for part in cmd]
        return Run(self, argv, name=name or (Path(argv[0]).name if argv else "run"), **options)

    async def run(self, cmd: Command, **options: Any) -> AnalysisRecord:
        """Run ``cmd`` (argv list, or one program name) to the end and return its record.

        Options: ``name``, ``params``, ``env``, ``cwd``, ``timeout`` (seconds), ``hooks``
        (``{event: fn or [fns]}`` for this run), ``launcher``, ``limits``, ``communicators``,
        ``tags``, ``grace``, ``stdin``/``stdout`` (a :class:`~lute_async.channel.Channel`).
        Cancelling the caller cancels the run (its record says CANCELLED).
        """
        run = self._make_run(cmd, **options)
        await run._execute()
        return run.record

    async def run_function(
        self, target: str, *, python: str | None = None, **options: Any
    ) -> AnalysisRecord:
        """Run the ``@task`` function ``"pkg.mod:func"`` in a worker process with ``params``."""
        options.setdefault("name", target.rpartition(":")[2] or target)
        return await self.run(self.function_command(target, python=python), **options)

    @staticmethod
    def function_command(target: str, *, python: str | None = None) -> list[str]:
        """The worker command line that runs ``target``."""
        from lute_async.worker import command

        return command(target, python)

    def start(self, cmd: Command, **options: Any) -> AbstractAsyncContextManager[Run]:
        """Start ``cmd`` and hold it as a :class:`Run` for the ``async with`` block.

        Leaving the block waits for the run to end; an exception in the block cancels it.
        """
        return self._start(cmd, options)

    @asynccontextmanager
    async def _start(self, cmd: Command, options: dict[str, Any]) -> AsyncIterator[Run]:
        run = self._make_run(cmd, tap=True, **options)
        failure: Exception | None = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(run._execute)
            try:
                yield run
            except Exception as exc:
                # End the run, then raise the block's own exception as is, not wrapped in
                # the task group's ExceptionGroup.
                failure = exc
                with anyio.CancelScope(shield=True):
                    await run.cancel()
            else:
                await run.wait()
        if failure is not None:
            raise failure

    def graph(self, *, max_concurrency: int | None = None) -> Workflow:
        """A new :class:`~lute_async.workflow.Workflow` of tasks run by this executor."""
        from lute_async.workflow import Workflow

        return Workflow(self, max_concurrency=max_concurrency)

    # -- records --------------------------------------------------------------------------

    async def store(self) -> RecordStore:
        """The record store, opened on first use (runs left RUNNING by dead executors -> LOST)."""
        if self._store is None:
            async with self._store_lock:
                if self._store is None:
                    self._store = await anyio.to_thread.run_sync(
                        lambda: RecordStore(
                            self.db_path, mark_lost=True, max_result_bytes=self.max_result_bytes
                        )
                    )
        return self._store

    async def _save(self, run: Run) -> None:
        try:
            store = await self.store()
            await anyio.to_thread.run_sync(store.save, run.record, limiter=self._db_limiter)
        except Exception as exc:
            run.record.extra["record_errors"] = run.record.extra.get("record_errors", 0) + 1
            error = f"{type(exc).__name__}: {exc}"
            if self._store is None:  # the database cannot even be opened: spill the record
                spilled = await anyio.to_thread.run_sync(
                    spill_record, self.db_path, run.record, limiter=self._db_limiter
                )
                error = f"{error}; {spilled}"
            get_logger().error(
                "record_save_failed",
                run_id=run.id,
                run=run.name,
                status=run.record.status,
                db=os.fspath(self.db_path),
                error=error,
            )

    async def aclose(self) -> None:
        """Close the record store (and stop the hook watchdog)."""
        if self._watchdog is not None:
            self._watchdog.close()
        if self._store is not None:
            store, self._store = self._store, None
            await anyio.to_thread.run_sync(store.close, limiter=self._db_limiter)

    async def __aenter__(self) -> Executor:
        await self.store()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
