"""The attempts of a run: its before steps, then one attempt, or more with a ``retry``.

One run is one id and one record, however many attempts it takes. An attempt whose ending the
run's :class:`~lute_async.retry.Retry` is for is *not* a terminal event: the ``retrying`` event
says which attempt ended, why (``failed``, ``timed_out``, ``lost``) and how long the backoff is;
the record keeper files the attempt in the record's ``attempts`` and clears what was its own.
Then the run waits out the backoff (holding no concurrency slot), and the next attempt starts
with a fresh lifecycle and deadline (each attempt has the whole timeout). The last attempt's end
is the run's one terminal event, as for any run.

A cancel during the backoff ends the wait at once: the cancel claims the next attempt's
lifecycle (made before anything is awaited, so no cancel falls between two attempts) and the
backoff's cancel scope is the run's ``_queued`` scope, which ``cancel()`` cancels.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import anyio

from lute_async.launchers.base import ExitStatus
from lute_async.messages import EventName
from lute_async.retry import reason_for
from lute_async.run.enforcement import Deadline
from lute_async.run.lifecycle import EndCause, Lifecycle
from lute_async.run.supervise import Supervisor

#: Ends whose attempt a retry may follow: the task's own exit and the run's timeout (a cancel,
#: a limit's kill or a launch error never is).
_RETRIED_CAUSES = frozenset({EndCause.EXIT, EndCause.TIMEOUT})


class Attempts(Supervisor):
    """Runs a run's before steps and its attempts, and sends its one terminal event."""

    async def _supervise(self) -> None:
        await self._context.save(self)
        ended = await self._before_steps()
        if ended is not None:  # a before step skipped the run or failed
            await self._end(ended)
            return
        while True:
            self._attempt_number += 1
            status = await self._attempt()
            delay = await self._retry_after(status)
            if delay is None:
                return
            with anyio.CancelScope() as self._queued:  # cancel() ends the backoff at once
                if not self._lifecycle.ending:
                    await anyio.sleep(delay)
            self._queued = None
            if self._lifecycle.ending:
                error = {
                    "type": "Cancelled",
                    "message": f"run was cancelled while waiting to start attempt "
                    f"{self._attempt_number + 1}",
                }
                await self._end(ExitStatus(exit_code=None, error=error))
                return

    async def _retry_after(self, status: ExitStatus) -> float | None:
        """End the attempt that ended with ``status``: send the run's terminal event and
        return None, or, when the retry is for this ending, make the next attempt's state,
        send ``retrying`` and return the backoff in seconds."""
        lifecycle, retry, attempt = self._lifecycle, self._retry, self._attempt_number
        event = lifecycle.finish(status)
        data = lifecycle.payload(event, status)
        cause = lifecycle.end.cause if lifecycle.end is not None else None
        reason = reason_for(event, data["error"]) if cause in _RETRIED_CAUSES else None
        if retry is None or not retry.retries(reason, attempt):
            await self._end(status)  # the lifecycle has ended: this sends its terminal event
            return None
        delay = retry.delay(attempt)
        self._next_attempt()  # before any await: a cancel from now on is the next attempt's
        retrying: dict[str, Any] = {
            "attempt": attempt,
            "attempts": retry.attempts,
            "reason": reason,
            "event": event,
            "delay": delay,
            "next_at": time.time() + delay,
            **data,
        }
        await self._emit(EventName.RETRYING.value, retrying)
        return delay

    def _next_attempt(self) -> None:
        """A fresh lifecycle, deadline and process state for the next attempt, and a secret
        of its own: a process an earlier attempt left behind cannot report into this one (its
        hello is refused); every attempt's secret stays masked in the record and the logs."""
        self._secret = secrets.token_urlsafe(24)
        self.redactor = self._keeper.redactor = self.redactor.with_secrets(self._secret)
        self._lifecycle = Lifecycle(self.timeout)
        self._deadline = Deadline(self.timeout) if self.timeout is not None else None
        self._process = None
        self._exit = None
        self._exit_error = None
        self._exited = asyncio.Event()
        self._drained = asyncio.Event()
