"""The supervisor of a run: launch the process, serve its communicators, wait for its exit
(on a pidfd or the scheduler) under its deadline, drain its stream, end it with the terminal
event; and end the process (SIGTERM, then SIGKILL after the grace period) when asked."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import anyio

from lute_async.communicators import RunChannel, make_communicator
from lute_async.communicators.base import Communicator
from lute_async.communicators.readers import OnDemand, Readers
from lute_async.errors import LaunchError
from lute_async.launchers.base import ExitStatus, LaunchSpec, TaskProcess
from lute_async.messages import EventName, Message
from lute_async.run.draining import Draining
from lute_async.run.enforcement import Deadline, OutputBudget
from lute_async.run.lifecycle import OWNER_CANCELLED, Phase, terminal_payload
from lute_async.wire import (
    ENV_EXECUTOR_PID,
    ENV_NAME,
    ENV_PARAMS,
    ENV_PARAMS_FILE,
    ENV_RUN,
    ENV_SECRET,
    ENV_SPOOL,
)

#: Params larger than this go to the task in a file instead of the environment.
MAX_ENV_PARAMS = 64 * 1024


async def terminate(
    process: TaskProcess, grace: float, exited: Callable[[], Awaitable[object]]
) -> bool:
    """SIGTERM ``process`` (or the scheduler's cancel), then SIGKILL if ``exited`` has not
    returned after ``grace`` seconds; True if it ended within the grace period."""
    await process.terminate()
    with anyio.move_on_after(grace):
        await exited()
        return True
    await process.kill()
    return False


def _own(sig: str, data: Any) -> Message:
    """A message of the executor's own (no seq, no rank), sent now from this process."""
    return Message(sig, data, 0, time.time(), None, os.getpid())


def _no_watch(callback: Callable[[ExitStatus], None]) -> bool:
    """``on_exit`` of a process that has none: it cannot call back."""
    return False


def _closed_at_once(communicator: Communicator) -> bool:
    """Close ``communicator`` now if it can close without waiting (``close_now``)."""
    close = getattr(communicator, "close_now", None)
    if close is None:
        return False
    close()
    return True


class Supervisor(Draining):
    """Launches, waits for, drains and ends one run's process."""

    async def _execute(self) -> None:
        """Run to the end. This one task supervises the process and dispatches the stream:
        the readers feed it (from reader callbacks, or tasks per connection), and it takes
        their batches in order while it waits for the exit, the drain and the end (a
        dispatcher task of its own, woken for each batch, cost a short run ~5 loop turns)."""
        try:
            try:
                await self._supervise()
            finally:
                self._send.close()
                self._receive.close_receiver()
                if self._tap is not None:
                    self._tap[0].close()
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True) as scope:
                scope.deadline = anyio.current_time() + self.grace + 10
                await self._abort()
            raise

    async def _attempt(self) -> ExitStatus:
        """One attempt: wait for a slot, launch, wait for the exit, drain. How it ended (a
        launch error's, or exit_code None when it was cancelled before it could start)."""
        context, lifecycle = self._context, self._lifecycle
        limiter, holding = context.limiter, False
        if limiter is not None:
            # Waiting for a max_concurrency slot: cancel() ends the wait at once.
            with anyio.CancelScope() as self._queued:
                if not lifecycle.ending:
                    await limiter.acquire()
                    holding = True
            self._queued = None
        try:
            if lifecycle.ending:  # cancelled before it could start
                return ExitStatus(exit_code=None)
            lifecycle.advance(Phase.LAUNCHING)
            channel = RunChannel(
                self.id,
                self._secret,
                self._send,
                max_frame=context.max_frame,
                on_protocol_error=self._protocol_error,
                on_output=self._output_budget(),
            )
            communicators = [
                make_communicator(spec, context.socket_home)
                for spec in self.launcher.communicators(self._communicator_specs)
            ] + list(self._channel_ends)
            try:
                status = await self._launch_and_wait(channel, communicators)
            finally:
                self._remove_params_file()
                # Those that close at once (the pipe, the shared socket) need no shield (an
                # anyio cancel scope a run); the others' aclose must finish even if cancelled.
                later = [c for c in communicators if not _closed_at_once(c)]
                if later:
                    with anyio.CancelScope(shield=True):
                        for communicator in later:
                            await communicator.aclose()
        finally:
            if holding:
                assert limiter is not None
                limiter.release()
        dropped = channel.error_log.summary()
        if dropped is not None:  # the first few are in extra["protocol_errors"]
            self.record.extra["protocol_errors_dropped"] = dropped
        return status

    async def _launch_and_wait(
        self, channel: RunChannel, communicators: list[Communicator]
    ) -> ExitStatus:
        try:
            spec = self._launch_spec()  # may write the params file: a private run dir
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
            self._lifecycle.advance(Phase.RUNNING)
        except (LaunchError, OSError) as exc:
            kind = type(exc).__name__ if isinstance(exc, LaunchError) else "LaunchError"
            error = {"type": kind, "message": self.redactor.text(str(exc)), "traceback": None}
            self._lifecycle.launch_failed()
            return ExitStatus(exit_code=None, error=error)
        for communicator in communicators:
            communicator.child_started()
        described = self._process.describe()
        if isinstance(described.get("launch_command"), list):
            described["launch_command"] = self.redactor.argv(described["launch_command"])
        self.record.extra.update(described)
        if self._lifecycle.ending:  # cancel() arrived while launching
            await self._process.terminate()
        async with asyncio.TaskGroup() as group:
            # A communicator that reads all along gets a task; one that reads on demand (the
            # pipe in the loop's callbacks, the shared socket a task per connection) starts
            # its readers in ``readers``.
            readers = Readers(group, self._readers_ended, self._process.pid)
            on_demand: list[OnDemand] = []
            try:
                for communicator in communicators:
                    if getattr(communicator, "reads_on_demand", False):
                        on_demand.append(cast(OnDemand, communicator))
                        on_demand[-1].read_with(readers)
                    else:
                        readers.spawn(communicator.serve(self._exited))
                deadline = self._deadline
                watch = None if deadline is None else group.create_task(self._enforce(deadline))
                if not getattr(self._process, "on_exit", _no_watch)(self._exited_with):
                    group.create_task(self._wait_exit(self._process))
                await self._dispatch_until(self._exited)
                if watch is not None:
                    watch.cancel()
                if self._exit_error is not None:
                    raise self._exit_error
                for reader in on_demand:  # what the task sent just before its exit
                    reader.exited()
                readers.exited()
                await self._drain(readers)
                await self._pump()
            finally:
                readers.cancel()  # nothing, unless the drain's limit or a cancel ended it
        assert self._exit is not None
        return self._exit

    def _launch_spec(self) -> LaunchSpec:
        context = self._context
        env = dict(self._inherited_env)
        env.setdefault("PYTHONUNBUFFERED", "1")  # live log lines from Python tasks
        env.update(self._env_overrides)
        env.pop(ENV_SPOOL, None)  # an enclosing job's: a spool is named by this run's launcher
        env[ENV_RUN] = self.id
        env[ENV_NAME] = self.name
        env[ENV_SECRET] = self._secret
        env[ENV_EXECUTOR_PID] = str(os.getpid())
        spec = LaunchSpec(
            argv=list(self._argv),
            env=env,
            run_id=self.id,
            name=self.name,
            run_dir=context.workdir / self.id,
            cwd=self._cwd,
            limits=self._limits,
            sandbox=self._sandbox,
            attempt=max(1, self._attempt_number),
        )
        if self._sandbox is not None and not getattr(self.launcher, "sandboxes", False):
            kind = getattr(self.launcher, "kind", type(self.launcher).__name__)
            raise LaunchError(f"the {kind} launcher cannot run run {self.name!r} in a sandbox")
        if self._params:
            text = json.dumps(self._params)
            if len(text) <= MAX_ENV_PARAMS:
                env[ENV_PARAMS] = text
            else:
                path = spec.write_private_file("params.json", text.encode())
                self._params_file = path
                env[ENV_PARAMS_FILE] = os.fspath(path)
        return spec

    def _remove_params_file(self) -> None:
        path, self._params_file = self._params_file, None
        if path is not None:  # only params too large for the environment go to a file
            path.unlink(missing_ok=True)

    def _recorded_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """What the record keeps of the task's environment, redacted: by default only what
        this run set (its env and lute-async's own variables), not all it inherited."""
        if self._context.record_env == "overrides":
            env = {
                key: value
                for key, value in env.items()
                if key in self._env_overrides or key.startswith("LUTE_ASYNC_")
            }
        recorded = self.redactor.env(env)
        recorded.pop(ENV_PARAMS, None)  # the params are recorded on their own
        return recorded

    def _output_budget(self) -> OutputBudget | None:
        limit = self._limits.output_bytes if self._limits is not None else None
        return None if limit is None else OutputBudget(limit, self.record, self.end_for_limit)

    async def _enforce(self, deadline: Deadline) -> None:
        await deadline.wait()  # wakes once, when the (movable) deadline passes
        self._lifecycle.time_out()
        await self._terminate()

    async def _terminate(self) -> None:
        """SIGTERM (or the scheduler's cancel), then SIGKILL if still running after ``grace``."""
        if self._process is not None:
            await terminate(self._process, self.grace, self._exited.wait)

    async def _notify(self, sig: str, data: dict[str, Any]) -> None:
        await self._inject(sig, data)

    async def _inject(self, sig: str, data: Any) -> None:
        await self._put([_own(str(sig), data)])

    async def _end(self, status: ExitStatus) -> None:
        """Dispatch the terminal event of the run's first-wins end, the last message."""
        event = self._lifecycle.finish(status)
        await self._emit(event, self._attempt_noted(self._lifecycle.payload(event, status)))

    async def _emit(self, sig: str, data: Any) -> None:
        """Dispatch one of the executor's own messages from the run's own task (its
        dispatcher), after everything the stream holds."""
        await self._pump()
        await self._dispatch_batch([_own(sig, data)])

    async def _put(self, batch: list[Message]) -> None:
        """Queue one of the executor's own messages (from a launcher, stop or resume) for
        the run's task to dispatch: at once while the stream has room (no checkpoint), else
        waiting for room like a reader."""
        try:
            self._send.send_nowait(batch)
        except anyio.WouldBlock:
            await self._send.send(batch)

    def _attempt_noted(self, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` of a terminal event, with the attempt it ends for a run with a retry."""
        if self._retry is not None:
            data["attempt"] = self._attempt_number
        return data

    async def _abort(self) -> None:
        """The owner of this run was cancelled: end the process, then record and fire
        ``cancelled`` directly (the dispatcher is gone; whatever else was ending the run, its
        stream is cut, so it ends cancelled)."""
        if self._terminal_fired:
            return
        self._lifecycle.cancel()
        status, process = self._exit, self._process
        if process is not None and not self._exited.is_set():

            async def exited() -> None:
                nonlocal status
                status = await process.wait()

            if not await terminate(process, self.grace, exited):
                with anyio.move_on_after(5):
                    status = await process.wait()
        self._lifecycle.advance(Phase.ENDED)
        event = EventName.CANCELLED.value
        data = self._attempt_noted(terminal_payload(event, status, error=OWNER_CANCELLED))
        await self._dispatch_batch([_own(event, data)])
