"""The lifecycle of one run, as pure rules: its phases and how it ends.

A run can be ended by its owner (cancel), its wall-time deadline (timeout), a limit (the
output budget, a channel's byte limit), the task's own exit, or a failed launch. Whichever
happens *first* wins and decides the terminal event, the reason and the verdict; later causes
change nothing. The exit counts once the stream is drained, so output the task wrote before
it exited is judged before the exit. The terminal event's payload is built here, once, for the
executor and for settling a run after the fact (``launchers/slurm_reconcile``).

No I/O and no event loop here: stimulus in, decision out, tested without processes.
"""

from __future__ import annotations

import signal as signal_module
from dataclasses import dataclass
from enum import Enum
from typing import Any

from lute_async.launchers.base import ExitStatus
from lute_async.messages import EventName

#: The error a run's record gets when the call that owned it was cancelled.
OWNER_CANCELLED = {"type": "Cancelled", "message": "run was cancelled by its owner"}


class Phase(Enum):
    """Where a run is; phases only move forward."""

    PENDING = 0  # created, record saved
    LAUNCHING = 1  # holds its slot, opening communicators and starting the process
    RUNNING = 2  # the process is running (or stopped): it can be signalled
    DRAINING = 3  # the process has exited; its stream is being read to the end
    ENDED = 4  # the terminal event has been sent


_DRAINING: int = Phase.DRAINING._value_


class EndCause(Enum):
    """What ended a run."""

    CANCEL = "cancel"
    TIMEOUT = "timeout"
    LIMIT = "limit"
    EXIT = "exit"
    LAUNCH_ERROR = "launch_error"


@dataclass(frozen=True, slots=True)
class End:
    """The winning end of a run: its cause, its reason (the terminal event for a cancel or a
    timeout, the limit's kind for a limit, the exit's event otherwise) and the verdict it
    sets on the record (a limit's; the others leave the verdict to the record keeper)."""

    cause: EndCause
    reason: str
    verdict: dict[str, Any] | None = None


class Lifecycle:
    """The phase of one run and its first-wins end."""

    __slots__ = ("end", "phase", "timeout")

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self.phase = Phase.PENDING
        self.end: End | None = None

    # -- phases ---------------------------------------------------------------------------

    def advance(self, phase: Phase) -> None:
        """Move to ``phase``; moving backwards is a bug in the engine."""
        # _value_, not value: Enum.value is a Python-level property, asked at every step.
        if phase._value_ < self.phase._value_:
            raise ValueError(f"a run cannot go back from {self.phase.name} to {phase.name}")
        self.phase = phase

    @property
    def running(self) -> bool:
        """True while the process is up (it can be stopped, resumed or signalled)."""
        return self.phase is Phase.RUNNING

    @property
    def exited(self) -> bool:
        """True once the process has exited (or never started and never will)."""
        return self.phase._value_ >= _DRAINING

    # -- the first-wins end ---------------------------------------------------------------

    @property
    def ending(self) -> bool:
        """True once some cause has claimed the run's end."""
        return self.end is not None

    def _claim(self, end: End) -> bool:
        if self.end is not None:
            return False
        self.end = end
        return True

    def cancel(self) -> bool:
        """The owner cancels; True if this is the run's end."""
        return self._claim(End(EndCause.CANCEL, EventName.CANCELLED.value))

    def time_out(self) -> bool:
        """The wall-time deadline passed; True if this is the run's end."""
        return self._claim(End(EndCause.TIMEOUT, EventName.TIMED_OUT.value))

    def exceed(self, kind: str, detail: str) -> bool:
        """A limit of ``kind`` was exceeded; True if this is the run's end (the process must
        then be killed and the record's verdict set to :attr:`End.verdict`)."""
        return self._claim(End(EndCause.LIMIT, kind, {"kind": kind, "detail": detail}))

    def launch_failed(self) -> bool:
        """The process could not be started; True if this is the run's end."""
        return self._claim(End(EndCause.LAUNCH_ERROR, EventName.FAILED.value))

    def finish(self, status: ExitStatus) -> str:
        """The stream is drained after ``status``: the exit claims the end if nothing did
        before. Return the terminal event to send, and enter :attr:`Phase.ENDED`."""
        self._claim(End(EndCause.EXIT, status.terminal_event()))
        self.advance(Phase.ENDED)
        return self.terminal_event(status)

    def terminal_event(self, status: ExitStatus) -> str:
        """The terminal event of the run ended by :attr:`end` with ``status``."""
        end = self.end
        if end is None or end.cause in (EndCause.EXIT, EndCause.LIMIT):
            # A killed-for-limit task failed; its verdict says why.
            return status.terminal_event()
        if end.cause is EndCause.LAUNCH_ERROR:
            return EventName.FAILED.value
        return end.reason

    def payload(self, event: str, status: ExitStatus | None) -> dict[str, Any]:
        """The terminal event's data for this run (see :func:`terminal_payload`)."""
        return terminal_payload(event, status, timeout=self.timeout)


def terminal_payload(
    event: str,
    status: ExitStatus | None,
    *,
    timeout: float | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The data of terminal ``event`` for a run that ended with ``status`` (None: unknown).

    ``error`` overrides the status's; without either, the error says why the run did not
    succeed (its timeout, a cancel, a signal, a non-zero exit), or None for ``done``.
    """
    if status is None:
        status = ExitStatus(exit_code=None)
    return {
        "exit_code": status.exit_code,
        "signal": status.signal,
        "usage": status.usage,
        "error": error or status.error or exit_error(event, status, timeout),
        "extra": status.extra,
    }


def exit_error(event: str, status: ExitStatus, timeout: float | None) -> dict[str, Any] | None:
    """Why a run that ended with ``event`` and ``status`` did not succeed; None for done."""
    if event == EventName.TIMED_OUT:
        return {"type": "Timeout", "message": f"run exceeded its {timeout} s timeout"}
    if event == EventName.CANCELLED:
        return {"type": "Cancelled", "message": "run was cancelled"}
    if event != EventName.FAILED:
        return None
    if status.signal is not None:
        name = signal_name(status.signal)
        return {"type": "KilledBySignal", "message": f"task was killed by {name}"}
    return {"type": "NonZeroExit", "message": f"task exited with code {status.exit_code}"}


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 99`` for a number without a name."""
    try:
        return signal_module.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
