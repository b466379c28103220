"""Executor: starts tasks as :class:`~lute_async.run.handle.Run` s, fires hooks for their
events and keeps every run's record. The run engine itself is the :mod:`lute_async.run`
package; this module gives each run what it needs from its executor (a
:class:`~lute_async.run.context.RunContext`) and owns the record store.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from lute_async.communicators import CommunicatorSpec, SocketHome
from lute_async.errors import ConfigError
from lute_async.hooks.builtin import log_event
from lute_async.hooks.events import BatchHook, Hook, RunView
from lute_async.hooks.observer import Observer
from lute_async.hooks.registry import HookRegistry
from lute_async.hooks.watchdog import HookWatchdog
from lute_async.logs import get_logger
from lute_async.messages import DEFAULT_MAX_FRAME
from lute_async.options import EXECUTOR_ARGUMENTS, check_options, check_run_options, describe
from lute_async.records import (
    DEFAULT_MAX_RESULT_BYTES,
    AnalysisRecord,
    RecordStore,
    spill_record,
)
from lute_async.records.leases import DEFAULT_LEASE_PERIOD
from lute_async.records.location import as_target, default_db, default_workdir, describe_db
from lute_async.records.renewer import LeaseRenewer
from lute_async.records.store import checkpoint, save_at_once
from lute_async.records.writer import RecordWriter
from lute_async.run.context import RunContext
from lute_async.run.handle import STREAM_BUFFER, HooksArg, Run
from lute_async.run.supervise import MAX_ENV_PARAMS

if TYPE_CHECKING:
    # Only for graph()'s annotation; workflow itself is imported when graph() is called.
    from lute_async.workflow import Workflow

__all__ = ["MAX_ENV_PARAMS", "STREAM_BUFFER", "Command", "Executor", "HooksArg", "Run"]

Command = str | Sequence[str]


def _argv(cmd: Any) -> list[str]:
    """``cmd`` as an argv: one program name, or a list of arguments (paths and numbers, as a
    template resolved to an int, are arguments too); anything else is a ConfigError."""
    if isinstance(cmd, str | os.PathLike):
        cmd = [cmd]
    if not isinstance(cmd, Sequence) or isinstance(cmd, bytes) or not cmd:
        raise ConfigError(
            "command: expected a program name or a non-empty list of arguments, "
            f"got {describe(cmd)}"
        )
    wrong = [part for part in cmd if not isinstance(part, str | os.PathLike | int | float)]
    if wrong or any(isinstance(part, bool) for part in cmd):
        raise ConfigError(
            "command: expected arguments that are strings, paths or numbers, "
            f"got {describe(list(cmd))}"
        )
    return [os.fspath(part) if isinstance(part, os.PathLike) else str(part) for part in cmd]


class Executor:
    """Starts tasks, fires hooks for their events and records every run.

    ``db`` is a path, a ``postgresql://`` URL, an open :class:`RecordStore`, or None for
    ``$LUTE_ASYNC_DB`` or the user data directory. ``max_concurrency`` bounds how many runs
    execute at once (others wait in PENDING). ``communicators`` are the kinds each run opens
    unless it says otherwise.
    ``drain_timeout`` is how long the stream may stay silent after a task's exit before its
    readers are ended; ``hook_timeout`` cuts async hooks and has a watchdog report sync ones
    that block the loop; ``max_result_bytes`` bounds a result kept whole in its record.
    ``dashboard`` (e.g. :class:`lute_async.web.Dashboard`) sees every event and is served
    while the executor is open (``async with``).
    Once its store is open the executor holds a lease in the database, renewed every
    ``lease_period`` seconds until :meth:`aclose`, so that its runs are marked LOST from any
    host once it dies.
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
        record_env: str = "overrides",
        lease_period: float = DEFAULT_LEASE_PERIOD,
        dashboard: Observer | None = None,
    ) -> None:
        # Every argument checked the one way run options and task files are: a ConfigError
        # naming the argument, the value and what was expected.
        given = {key: value for key, value in locals().items() if key != "self"}
        if isinstance(db, RecordStore):
            del given["db"]
        checked = check_options(given, EXECUTOR_ARGUMENTS, where="Executor")
        hooks = checked["hooks"]
        self.hooks = hooks if isinstance(hooks, HookRegistry) else HookRegistry(hooks)
        if checked["log_events"]:
            log_event.register(self.hooks)
        #: Sees every event (a ``"*"`` hook), opened and closed with the executor.
        self.dashboard: Observer | None = checked["dashboard"]
        if self.dashboard is not None:
            self.hooks.add("*", self.dashboard)
        self.communicators = tuple(checked["communicators"])
        self.grace: float = checked["grace"]
        self.max_frame: int = checked["max_frame"]
        self.drain_timeout: float = checked["drain_timeout"]
        self.hook_timeout: float | None = checked["hook_timeout"]
        self.max_result_bytes: int = checked["max_result_bytes"]
        self._watchdog = HookWatchdog(self.hook_timeout) if self.hook_timeout is not None else None
        self.inherit_env: bool = checked["inherit_env"]
        #: "overrides": a record keeps the env the run was given (and lute-async's own
        #: variables), redacted; "all": the whole environment the task saw, redacted.
        self.record_env: str = checked["record_env"]
        self.max_concurrency: int | None = checked["max_concurrency"]
        self._limiter = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        self.lease_period: float = checked["lease_period"] or DEFAULT_LEASE_PERIOD
        self._renewer: LeaseRenewer | None = None
        #: The database: a file, or a PostgreSQL URL (as given: name it by describe_db).
        self.db_path: Path | str
        if isinstance(db, RecordStore):
            self._store: RecordStore | None = db
            self.db_path = db.path
        else:
            self._store = None
            self.db_path = as_target(db) if db is not None else default_db()
        self.workdir = Path(workdir) if workdir is not None else default_workdir(self.db_path)
        self._store_lock = anyio.Lock()
        self._record_writer: RecordWriter | None = None
        self._db_limiter = anyio.CapacityLimiter(1)
        self.host = socket.gethostname()
        #: One private directory for every run's Unix socket, removed by :meth:`aclose`.
        self._socket_home = SocketHome()

    # -- hooks ----------------------------------------------------------------------------

    def on(self, event: str, fn: Hook | None = None) -> Any:
        """Register a hook for ``event`` (``"*"`` for all) on every run; usable as a decorator."""
        if fn is None:
            return lambda f: self.hooks.add(event, f)
        return self.hooks.add(event, fn)

    def on_batch(self, event: str, fn: BatchHook | None = None) -> Any:
        """Register a batch hook for ``event`` (``"*"`` for all) on every run: called with
        the list of one decoded batch's events, in order; usable as a decorator."""
        if fn is None:
            return lambda f: self.hooks.add_batch(event, f)
        return self.hooks.add_batch(event, fn)

    # -- running --------------------------------------------------------------------------

    def _run_context(self) -> RunContext:
        """What a new run gets from this executor (its settings as they are now)."""
        return RunContext(
            save=self._save,
            hooks=self.hooks,
            limiter=self._limiter,
            watchdog=self._watchdog,
            hook_timeout=self.hook_timeout,
            grace=self.grace,
            communicators=self.communicators,
            max_frame=self.max_frame,
            drain_timeout=self.drain_timeout,
            inherit_env=self.inherit_env,
            record_env=self.record_env,
            workdir=self.workdir,
            socket_home=self._socket_home,
        )

    def _make_run(self, cmd: Command, options: dict[str, Any], *, tap: bool = False) -> Run:
        """A Run of ``cmd``; ``options`` are :class:`Run`'s keyword arguments (``tap``: its
        messages are also kept for :meth:`Run.messages`)."""
        name = options.pop("name", None)
        argv = _argv(cmd)
        if name is None:
            # The program's base name: a string split, not a Path (~5 us a run), for the
            # usual command; a path ending in "/" or "." as pathlib names it.
            name = os.path.basename(argv[0])
            if not name or name == ".":
                name = Path(argv[0]).name or "run"
        # Checked before anything exists: a wrong option is a ConfigError naming it, never a
        # half-made run or a record left RUNNING.
        checked = check_run_options({"name": name, **options})
        if tap:
            checked["tap"] = True
        return Run(self._run_context(), argv, **checked)

    async def run(self, cmd: Command, **options: Any) -> AnalysisRecord:
        """Run ``cmd`` (argv list, or one program name) to the end and return its record.

        Options: ``name``, ``params``, ``env``, ``cwd``, ``timeout`` (seconds), ``hooks``
        (``{event: fn or [fns]}`` for this run), ``launcher``, ``limits``, ``communicators``,
        ``tags``, ``grace``, ``stdin``/``stdout`` (a :class:`~lute_async.channel.Channel`),
        ``retry`` (a :class:`~lute_async.retry.Retry`: more attempts, one run), ``before`` and
        ``after`` (tasklet steps, :mod:`lute_async.tasklets`), ``inherit_env`` (False: the task
        gets only ``env`` and lute-async's own variables; default: the executor's setting).
        Cancelling the caller cancels the run (its record says CANCELLED).
        """
        run = self._make_run(cmd, options)
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
        run = self._make_run(cmd, options, tap=True)
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

    async def attach(self, run_id: str, *, hooks: HooksArg = None) -> AnalysisRecord:
        """Take up run ``run_id`` (or a unique prefix) whose executor died while its SLURM job
        went on: follow the job to its end, replay what it spooled meanwhile through the
        hooks, and settle the record. A run that cannot be raises
        :class:`~lute_async.errors.AttachError` saying why."""
        from lute_async.run.attach import attach_run

        run = await attach_run(self._run_context(), await self.store(), run_id, hooks)
        await run._execute()
        return run.record

    def graph(self, *, max_concurrency: int | None = None) -> Workflow:
        """A new :class:`~lute_async.workflow.Workflow` of tasks run by this executor."""
        from lute_async.workflow import Workflow

        return Workflow(self, max_concurrency=max_concurrency)

    # -- records --------------------------------------------------------------------------

    async def store(self) -> RecordStore:
        """The record store, opened on first use (runs left RUNNING by dead executors -> LOST),
        and this executor's lease in it, written before any run starts and renewed until
        :meth:`aclose`."""
        if self._store is None or self._renewer is None:
            async with self._store_lock:
                if self._store is None:
                    self._store = await anyio.to_thread.run_sync(
                        lambda: RecordStore(
                            self.db_path, mark_lost=True, max_result_bytes=self.max_result_bytes
                        )
                    )
                if self._renewer is None:
                    self._renewer = LeaseRenewer(self._store, self.lease_period, self._db_limiter)
                    await self._renewer.start()
        return self._store

    async def _writer(self) -> RecordWriter:
        """The writer of this executor's records (the saves of concurrent runs share a
        transaction), made with the store."""
        if self._record_writer is None:
            store = await self.store()
            sqlite = store.backend == "sqlite"
            self._record_writer = RecordWriter(
                store.save_many,
                functools.partial(save_at_once, store) if sqlite else None,
                functools.partial(checkpoint, store) if sqlite else None,
            )
        return self._record_writer

    async def _save(self, run: RunView) -> None:
        try:
            await (await self._writer()).save(run.record)
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
                db=describe_db(self.db_path),
                error=error,
            )

    async def aclose(self) -> None:
        """Close the dashboard and the record store (and stop the hook watchdog, the lease
        renewer and this executor's fork servers)."""
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            await renewer.stop()
        if self.dashboard is not None:
            await self.dashboard.aclose()
        forkservers = sys.modules.get("lute_async.launchers.forkserver")
        if forkservers is not None:  # loaded only once a Forkserver launcher was used
            forkservers.close_servers(self.workdir)
        if self._watchdog is not None:
            self._watchdog.close()
        self._socket_home.close()
        writer, self._record_writer = self._record_writer, None
        if writer is not None:  # what is queued is written before the store closes
            await writer.aclose()
        if self._store is not None:
            store, self._store = self._store, None
            await anyio.to_thread.run_sync(store.close, limiter=self._db_limiter)

    async def __aenter__(self) -> Executor:
        await self.store()
        if self.dashboard is not None:
            try:
                await self.dashboard.open(self)
            except BaseException:
                await self.aclose()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
