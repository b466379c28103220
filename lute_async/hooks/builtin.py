"""Built-in hooks: log every event with structlog. ``RecordKeeper`` lives in records/keeper."""

from __future__ import annotations

import logging
from typing import Any

from lute_async.hooks.registry import ANY_EVENT, Event, HookRegistry
from lute_async.logs import get_logger, is_enabled_for
from lute_async.messages import TERMINAL_STATUS, EventName
from lute_async.records.keeper import RecordKeeper as RecordKeeper  # re-exported for now

#: Events logged at info level; every other message is logged at debug level.
LIFECYCLE_EVENTS = frozenset(
    {
        EventName.QUEUED,
        EventName.STARTED,
        EventName.RESULT,
        EventName.ERROR,
        EventName.STOPPED,
        EventName.CONTINUED,
        EventName.DONE,
        EventName.FAILED,
        EventName.CANCELLED,
        EventName.TIMED_OUT,
        EventName.RETRYING,
    }
)


class _EventLogger:
    """Logs lifecycle events at info level and, when debug is on, every message."""

    def __call__(self, event: Event) -> None:
        log = get_logger()
        is_enabled = getattr(log, "is_enabled_for", None)
        # Quiet (the library's default: warnings only): no line to build, unless it is a
        # task's error (a warning).
        if (
            is_enabled is not None
            and not is_enabled(logging.INFO)
            and (event.name != EventName.ERROR or not is_enabled(logging.WARNING))
        ):
            return
        run = event.run
        message = event.message
        fields: dict[str, Any] = {
            "run_id": run.id,
            "run": run.name,
            # The executor's own messages (started, done...) are about the task's process.
            "pid": run.pid if message.source == "executor" else message.pid,
            "rank": event.rank,
        }
        if event.name in LIFECYCLE_EVENTS:
            if event.name in TERMINAL_STATUS:
                record = event.run.record
                fields.update(status=record.status, exit_code=record.exit_code)
                if record.signal is not None:
                    fields["signal"] = record.signal
                if record.error and event.name != EventName.DONE:
                    fields["error"] = record.error.get("message")
                log.info(event.name, **fields)
            elif event.name == EventName.RETRYING:
                sent = event.data if isinstance(event.data, dict) else {}
                keys = ("attempt", "reason", "delay", "exit_code")
                log.info("retrying", **{key: sent.get(key) for key in keys}, **fields)
            elif event.name == EventName.ERROR:
                sent = event.data if isinstance(event.data, dict) else {}
                error = run.redactor.text(str(sent.get("message")))
                log.warning("task_error", error=error, **fields)
            else:
                log.info(event.name, **fields)
        else:
            data = event.data
            if isinstance(data, dict):
                data = run.redactor.mapping(data)
            elif isinstance(data, str):
                data = run.redactor.text(data)
            log.debug(event.name, data=data, **fields)

    def register(self, registry: HookRegistry) -> None:
        """Add this logger to ``registry``: for every event when debug logging is on, else
        for lifecycle events only (so high message rates cost nothing)."""
        if is_enabled_for(logging.DEBUG):
            registry.add(ANY_EVENT, self)
        else:
            for name in LIFECYCLE_EVENTS:
                registry.add(name, self)


log_event = _EventLogger()
