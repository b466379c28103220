"""The record keeper: applies a run's messages to its :class:`AnalysisRecord`, in order."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lute_async.messages import TERMINAL_STATUS, EventName, Message
from lute_async.records.model import AnalysisRecord
from lute_async.redaction import Redactor
from lute_async.status import TaskStatus
from lute_async.verdicts import VerdictJudge

__all__ = ["RecordKeeper"]


class RecordKeeper:
    """Applies a run's messages to its record; ``apply`` says when the record must be saved."""

    def __init__(
        self,
        record: AnalysisRecord,
        *,
        limits: dict[str, Any] | None = None,
        timeout: float | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self.record = record
        #: Masks secrets in what the record keeps of results and errors (the hooks and the
        #: caller's events still see the task's data as sent).
        self.redactor = redactor if redactor is not None else Redactor({})
        self.judge = VerdictJudge(limits, timeout)
        self._judging = (limits, timeout)
        #: When the attempt in progress started (runs with a retry record each attempt).
        self._attempt_started: float | None = None
        # The handlers are the class's, made once (not bound methods made for every run); the
        # log's only for runs whose verdict may depend on their stderr.
        self._handlers = _WITH_LOG if self.judge.wants_output else _HANDLERS

    @property
    def handled(self) -> frozenset[str]:
        """The event names ``apply`` does something for; it ignores every other one."""
        return _HANDLED_WITH_LOG if self._handlers is _WITH_LOG else _HANDLED

    def apply(self, message: Message) -> bool:
        """Update the record from ``message``; True when its status changed."""
        handler = self._handlers.get(message.sig)
        return handler(self, message) if handler is not None else False

    def task_started(self, message: Message) -> None:
        """The task's own ``started`` report: keep what it says it runs with."""
        data = message.data if isinstance(message.data, dict) else {}
        params = data.get("params")
        if params is not None:
            self.record.extra["reported_params"] = (
                self.redactor.mapping(params) if isinstance(params, dict) else params
            )

    def _queued(self, message: Message) -> bool:
        data = message.data if isinstance(message.data, dict) else {}
        self.record.status = TaskStatus.QUEUED.value
        self.record.extra.update({k: v for k, v in data.items() if v is not None})
        if data.get("slurm_job_id") is not None:
            self.record.slurm_job_id = str(data["slurm_job_id"])
        return True

    def _started(self, message: Message) -> bool:
        record = self.record
        data = message.data if isinstance(message.data, dict) else {}
        record.status = TaskStatus.RUNNING.value
        record.started_at = message.ts
        if self._attempt_started is None:
            self._attempt_started = message.ts
        if message.source == "executor":
            record.pid = data.get("pid", record.pid)
            if data.get("host"):
                record.host = data["host"]
            for key in ("node_list", "ranks"):
                if data.get(key) is not None:
                    if key == "ranks":
                        record.ranks = int(data[key])
                    else:
                        record.extra[key] = data[key]
        else:
            record.pid = message.pid
            self.task_started(message)
        return True

    def _result(self, message: Message) -> bool:
        data = message.data
        if isinstance(data, dict) and "payload" in data:
            result = {"payload": data.get("payload"), "summary": data.get("summary")}
        else:
            result = {"payload": data, "summary": None}
        self.record.result = self.redactor.mapping(result)
        return False

    def _error(self, message: Message) -> bool:
        data = message.data
        if isinstance(data, dict):
            error = {
                "type": str(data.get("type") or "TaskError"),
                "message": str(data.get("message") or ""),
                "traceback": data.get("traceback"),
            }
        else:
            error = {"type": "TaskError", "message": str(data), "traceback": None}
        self.record.error = self.redactor.mapping(error)
        return False

    def _stopped(self, message: Message) -> bool:
        self.record.status = TaskStatus.STOPPED.value
        return True

    def _continued(self, message: Message) -> bool:
        self.record.status = TaskStatus.RUNNING.value
        return True

    def _requeued(self, message: Message) -> bool:
        """Back in the scheduler's queue: QUEUED until the next attempt starts."""
        data = message.data if isinstance(message.data, dict) else {}
        self.record.status = TaskStatus.QUEUED.value
        seen = self.record.extra.get("requeues", 0) + 1
        self.record.extra["requeues"] = data.get("requeues", seen)
        if data.get("slurm_restarts") is not None:
            self.record.extra["slurm_restarts"] = data["slurm_restarts"]
        return True

    def _terminal(self, message: Message) -> bool:
        record = self.record
        data: dict[str, Any] = message.data if isinstance(message.data, dict) else {}
        self._settle(message.sig, data, message.ts)
        if record.verdict is None:
            record.verdict = self._judge(message.sig)
        attempt = data.get("attempt")
        if isinstance(attempt, int) and attempt > len(record.attempts):  # the last attempt
            record.attempts.append(self._attempt(attempt, message.ts, record.verdict, data))
        return True

    def _retrying(self, message: Message) -> bool:
        """An attempt ended and another follows: record it, and clear what was its own."""
        record = self.record
        data: dict[str, Any] = message.data if isinstance(message.data, dict) else {}
        event = str(data.get("event") or EventName.FAILED.value)
        if event not in TERMINAL_STATUS:
            event = EventName.FAILED.value
        self._settle(event, data, message.ts)
        # Not record.verdict: a retried attempt never has a live verdict (a limit's end is
        # never retried), and the next attempt may have set one already.
        verdict = self._judge(event)
        attempt = data.get("attempt")
        number = attempt if isinstance(attempt, int) else len(record.attempts) + 1
        record.attempts.append(self._attempt(number, message.ts, verdict, data))
        record.status = TaskStatus.PENDING.value
        record.result = record.error = None
        record.exit_code = record.signal = record.usage = record.ended_at = None
        self.judge = VerdictJudge(*self._judging)
        self._attempt_started = None
        return True

    def _settle(self, event: str, data: dict[str, Any], ts: float) -> None:
        """How an attempt ended (``event`` and its payload ``data``), into the record."""
        record = self.record
        record.status = TERMINAL_STATUS[EventName(event)].value
        record.ended_at = ts
        record.exit_code = data.get("exit_code")
        record.signal = data.get("signal")
        if data.get("usage") is not None:
            record.usage = data["usage"]
        if data.get("extra"):
            record.extra.update(data["extra"])
        if event != EventName.DONE and record.error is None and data.get("error"):
            record.error = self.redactor.mapping({"traceback": None, **data["error"]})

    def _judge(self, event: str) -> dict[str, Any] | None:
        record = self.record
        return self.judge.judge(
            event,
            exit_code=record.exit_code,
            signum=record.signal,
            usage=record.usage,
            error=record.error,
        )

    def _attempt(
        self, number: int, ts: float, verdict: dict[str, Any] | None, data: dict[str, Any]
    ) -> dict[str, Any]:
        """The record's entry for attempt ``number``, which ended at ``ts``."""
        record = self.record
        entry = {
            "attempt": number,
            "status": record.status,
            "reason": data.get("reason"),
            "exit_code": record.exit_code,
            "signal": record.signal,
            "error": record.error,
            "verdict": verdict,
            "started_at": self._attempt_started,
            "ended_at": ts,
            "delay": data.get("delay"),
            "next_at": data.get("next_at"),
        }
        if record.slurm_job_id is not None:  # each attempt is a job of its own
            entry["slurm_job_id"] = record.slurm_job_id
        return entry

    def _log(self, message: Message) -> bool:
        self.judge.observe(message)
        return False


#: What RecordKeeper.apply calls for each event it handles.
_HANDLERS: dict[str, Callable[[RecordKeeper, Message], bool]] = {
    EventName.QUEUED: RecordKeeper._queued,
    EventName.STARTED: RecordKeeper._started,
    EventName.RESULT: RecordKeeper._result,
    EventName.ERROR: RecordKeeper._error,
    EventName.STOPPED: RecordKeeper._stopped,
    EventName.CONTINUED: RecordKeeper._continued,
    EventName.RETRYING: RecordKeeper._retrying,
    EventName.REQUEUED: RecordKeeper._requeued,
    **dict.fromkeys(TERMINAL_STATUS, RecordKeeper._terminal),
}
_WITH_LOG = {**_HANDLERS, EventName.LOG: RecordKeeper._log}
_HANDLED = frozenset(_HANDLERS)
_HANDLED_WITH_LOG = frozenset(_WITH_LOG)
