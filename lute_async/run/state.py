"""RunState: the state one run's parts share, declared once.

:class:`~lute_async.run.handle.Run` is built from two parts that work on the same run: the
supervisor (launch, wait, drain, terminate) and the dispatcher (the ordered stream into the
record, the hooks and the tap). This declares what they share; ``Run.__init__`` sets it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

if TYPE_CHECKING:
    import asyncio
    from pathlib import Path

    import anyio

    from lute_async.communicators.base import Batch
    from lute_async.communicators.stream import BatchStream
    from lute_async.error_budget import ErrorBudget
    from lute_async.errors import ProtocolError
    from lute_async.hooks.events import BatchHook, Hook
    from lute_async.hooks.registry import HookRegistry
    from lute_async.launchers.base import ExitStatus, Launcher, TaskProcess
    from lute_async.limits import Limits
    from lute_async.messages import Message
    from lute_async.records.keeper import RecordKeeper
    from lute_async.records.model import AnalysisRecord
    from lute_async.redaction import Redactor
    from lute_async.retry import Retry
    from lute_async.run.context import RunContext
    from lute_async.run.enforcement import Deadline
    from lute_async.run.lifecycle import Lifecycle
    from lute_async.sandbox import Sandbox
    from lute_async.tasklets import LoadedTasklet

#: A run's message tap: what :meth:`Run.messages` reads, fed by the dispatcher.
Tap = tuple[MemoryObjectSendStream["Message"], MemoryObjectReceiveStream["Message"]]


class RunState:
    """The attributes of a run that its supervisor and dispatcher both use."""

    id: str
    name: str
    record: AnalysisRecord
    hooks: HookRegistry
    launcher: Launcher
    timeout: float | None
    grace: float
    progress: dict[str, Any] | None
    redactor: Redactor
    _hook_budget: ErrorBudget
    _context: RunContext
    _lifecycle: Lifecycle
    _deadline: Deadline | None
    _keeper: RecordKeeper
    _argv: list[str]
    _params: dict[str, Any]
    _params_file: Path | None  # the params written to a file (too large for the environment)
    _env_overrides: dict[str, str]
    _inherited_env: dict[str, str]  # os.environ when the run was made (or {}: inherit_env off)
    _cwd: str | None
    _limits: Limits | None
    _sandbox: Sandbox | None
    _secret: str
    _inherit_env: bool  # the task inherits the executor's environment
    _communicator_specs: tuple[Any, ...]
    _channel_ends: list[Any]
    # Attempts (run.attempts): the retry, and the attempt in progress or last ended (1...);
    # the before and after steps (run.tasklets).
    _retry: Retry | None
    _attempt_number: int
    _before: tuple[LoadedTasklet, ...]
    _after: tuple[LoadedTasklet, ...]
    # The stream from the readers to the dispatcher, and the tap after it.
    _send: BatchStream[Batch]
    _receive: BatchStream[Batch]  # the same stream: its receiving side
    _tap: Tap | None
    _tap_taken: bool
    # The process, how it exited, and when: exited, drained, finished (record final).
    _process: TaskProcess | None
    _exit: ExitStatus | None
    _exited: asyncio.Event
    _finished: asyncio.Event
    _drained: asyncio.Event
    _queued: anyio.CancelScope | None  # set while waiting: for a slot, a before step, a backoff
    # What the dispatcher has fired; what ended the wait for the exit with an error.
    _exit_error: Exception | None
    _started_fired: bool
    _terminal_fired: bool
    _special_events: frozenset[str] | set[str]
    # Per event: its sync hooks for the fast path (None: the full path); the events batch
    # hooks want; the registries' versions both were made from.
    _routes: dict[str, tuple[Hook, ...] | None]
    _batch_names: frozenset[str]
    _routes_version: int

    if TYPE_CHECKING:
        # Run's public face, declared for the type checker only, so that each part is the
        # RunView it hands to hooks and to the executor's save.
        @property
        def status(self) -> str: ...
        @property
        def pid(self) -> int | None: ...
        @property
        def done(self) -> bool: ...
        @property
        def time_left(self) -> float | None: ...
        def on(self, event: str, fn: Hook | None = None) -> Any: ...
        def on_batch(self, event: str, fn: BatchHook | None = None) -> Any: ...
        async def stop(self) -> None: ...
        async def resume(self) -> None: ...
        async def cancel(self) -> None: ...
        async def kill(self) -> None: ...
        async def wait(self) -> AnalysisRecord: ...

    # Each part's methods the other calls, declared here (the last base) so that they resolve
    # to the part that defines them.
    async def _supervise(self) -> None:
        """Save the record, run the attempts, end the stream (the attempts' loop's)."""
        raise NotImplementedError

    async def _before_steps(self) -> ExitStatus | None:
        """Run the before steps; how the run ends if one skipped or failed (run.tasklets)."""
        raise NotImplementedError

    async def _after_steps(self, message: Message) -> Message:
        """Run the after steps on a ``done``; the terminal message to handle (run.tasklets)."""
        raise NotImplementedError

    async def _dispatch_until(self, done: asyncio.Event) -> None:
        """Dispatch the stream's batches as they come until ``done`` (the dispatcher's)."""
        raise NotImplementedError

    async def _pump(self) -> None:
        """Dispatch every batch the stream holds now (the dispatcher's)."""
        raise NotImplementedError

    async def _dispatch_batch(self, batch: Batch) -> None:
        """Dispatch one batch (the dispatcher's; the supervisor's abort uses it)."""
        raise NotImplementedError

    def _protocol_error(self, source: str, conn: int, error: ProtocolError) -> None:
        """Note a broken frame stream in the record (the dispatcher's)."""
        raise NotImplementedError

    def end_for_limit(self, kind: str, detail: str) -> None:
        """End the run for an exceeded limit (the handle's)."""
        raise NotImplementedError
