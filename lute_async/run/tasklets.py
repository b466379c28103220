"""Running a run's tasklets (:mod:`lute_async.tasklets`): its before steps, once, before the
first attempt, and its after steps, once, on the ``done`` of the last, before it is recorded.

Before steps run while the run waits to start (``cancel()`` ends an async step at once; a sync
step in its thread is waited for); what they leave in the context's params and env is what the
task gets. After steps run in the dispatcher when the terminal ``done`` comes up, so they see
everything the task sent (its result included) and nothing has been recorded as ended yet: a
step that raises turns the ``done`` into a ``failed`` naming it.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import traceback
from typing import Any

import anyio

from lute_async.launchers.base import ExitStatus
from lute_async.messages import EventName, Message
from lute_async.redaction import Redactor
from lute_async.run.state import RunState
from lute_async.tasklets import LoadedTasklet, SkipRun, TaskletContext, TaskletError, fill

#: The end of a failing command step's stderr kept in the run's error.
STDERR_TAIL = 2000


class TaskletSteps(RunState):
    """Runs the before and after steps of a run."""

    async def _before_steps(self) -> ExitStatus | None:
        if not self._before:
            return None
        context = TaskletContext(
            "", "before", self.id, self.name, dict(self._params), dict(self._env_overrides)
        )
        try:
            with anyio.CancelScope() as self._queued:  # cancel() ends the wait at once
                for step in self._before:
                    if self._lifecycle.ending:
                        break
                    await self._run_step(step, context)
        except SkipRun as skip:
            self._lifecycle.cancel()
            message = f"before step {context.step!r} skipped the run: {skip.reason}"
            return ExitStatus(exit_code=None, error={"type": "Skipped", "message": message})
        except Exception as exc:
            self._lifecycle.launch_failed()
            return ExitStatus(exit_code=None, error=self._step_error("before", context.step, exc))
        finally:
            self._queued = None
        if context.env != self._env_overrides:  # the record masks the new env's secrets too
            known = dict(os.environ) if self._inherit_env else {}
            known.update(context.env)
            self.redactor = self._keeper.redactor = Redactor(known, (self._secret,))
        self._params, self._env_overrides = context.params, context.env
        self.record.params = self.redactor.mapping(self._params)
        return None

    async def _after_steps(self, message: Message) -> Message:
        if not self._after or message.sig != EventName.DONE:
            return message
        record = self.record
        context = TaskletContext(
            "",
            "after",
            self.id,
            self.name,
            dict(self._params),
            dict(self._env_overrides),
            record=record,
            result=record.result,
        )
        try:
            for step in self._after:
                await self._run_step(step, context)
        except Exception as exc:
            data = dict(message.data) if isinstance(message.data, dict) else {}
            data["error"] = self._step_error("after", context.step, exc)
            record.error = None  # the step's error is the run's
            return dataclasses.replace(message, sig=EventName.FAILED.value, data=data)
        if context.result is not record.result:
            record.result = self.redactor.mapping(context.result) if context.result else None
        return message

    async def _run_step(self, step: LoadedTasklet, context: TaskletContext) -> None:
        """Run ``step`` with its templates filled in from ``context``'s params and env."""
        context.step = step.name
        environ = dict(os.environ) if self._context.inherit_env else {}
        environ.update(context.env)
        if step.command is not None:
            argv = [str(part) for part in fill(list(step.command), context.params, environ)]
            await self._run_command(step.name, argv, environ)
            return
        assert step.function is not None
        function = step.function
        args = fill(dict(step.args), context.params, environ)
        if inspect.iscoroutinefunction(function):
            await function(context, **args)
            return
        result = await anyio.to_thread.run_sync(lambda: function(context, **args))
        if inspect.isawaitable(result):  # a sync callable that returned a coroutine
            await result

    async def _run_command(self, name: str, argv: list[str], environ: dict[str, str]) -> None:
        try:
            done = await anyio.run_process(
                argv, check=False, stdin=subprocess.DEVNULL, env=environ, cwd=self._cwd
            )
        except OSError as exc:
            raise TaskletError(f"cannot run {argv[0]!r}: {exc}") from None
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace").strip()[-STDERR_TAIL:]
            raise TaskletError(
                f"exited with code {done.returncode}" + (f": {stderr}" if stderr else "")
            )

    def _step_error(self, phase: str, step: str, exc: BaseException) -> dict[str, Any]:
        """The run's error for ``phase`` step ``step``, which raised ``exc``."""
        text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TaskletError) else str(exc)
        tb = None
        if not isinstance(exc, TaskletError):
            tb = self.redactor.text("".join(traceback.format_exception(exc)))
        return {
            "type": "TaskletError",
            "message": self.redactor.text(f"{phase} step {step!r} failed: {text}"),
            "traceback": tb,
            "step": step,
        }
