"""The live state a dashboard serves: every run its executor has shown it, fed by a ``"*"`` hook.

:class:`LiveHub` keeps, per run, its latest summary, a bounded timeline of its events and a
bounded buffer of its log lines (what a task printed is masked by the run's redactor first), and
wakes its subscribers (:class:`Subscriber`, one per open page stream) when something changed.
Nothing waits on a timer: a subscriber sleeps on an event the hook sets, and what changed while
it was sending is coalesced (a run's summary is sent once however many progress events came).
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any, Final

import anyio

from lute_async.messages import TERMINAL_EVENTS, EventName
from lute_async.workflow import GRAPH_TAG

if TYPE_CHECKING:
    from lute_async.hooks.events import Event, RunView

__all__ = ["LiveHub", "LiveRun", "Subscriber", "log_text"]

#: Log lines kept per run, and their characters (older lines are dropped and counted).
MAX_LOG_LINES: Final = 5_000
MAX_LOG_CHARS: Final = 1_000_000
#: Events kept per run for its timeline (progress and log events are not in it).
MAX_EVENTS: Final = 500
#: Finished runs kept in memory (with their logs) beyond the live ones.
MAX_FINISHED: Final = 100
#: Characters of one log line or of one event's data kept for display.
MAX_TEXT: Final = 4_000


def _cut(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def log_text(data: Any) -> str:
    """The text of a ``log`` event's data: a line, or a reporter's ``{"message": ...}``."""
    if isinstance(data, dict):
        data = data.get("message", data)
    if isinstance(data, bytes | bytearray):
        data = bytes(data).decode("utf-8", errors="backslashreplace")
    return data if isinstance(data, str) else json.dumps(data, default=repr)


def _brief(data: Any) -> str:
    if data is None:
        return ""
    try:
        text = data if isinstance(data, str) else json.dumps(data, default=repr)
    except (TypeError, ValueError, RecursionError):
        text = repr(data)
    return _cut(text, 500)


def summary_of(record: Any, progress: dict[str, Any] | None, live: bool) -> dict[str, Any]:
    """What a runs table row shows of a run (a record, and its progress when live)."""
    graph = next((tag[len(GRAPH_TAG) :] for tag in record.tags if tag.startswith(GRAPH_TAG)), None)
    fraction = progress.get("fraction") if isinstance(progress, dict) else None
    message = progress.get("message") if isinstance(progress, dict) else None
    return {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "fraction": float(fraction) if isinstance(fraction, int | float) else None,
        "message": _cut(str(message), 300) if message else "",
        "submitted_at": record.submitted_at,
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "host": record.host,
        "pid": record.pid,
        "job": record.slurm_job_id,
        "tags": list(record.tags),
        "graph": graph,
        "verdict": (record.verdict or {}).get("kind"),
        "executor": f"{record.executor_host}:{record.executor_pid}",
        "live": live,
    }


class LiveRun:
    """One run as the dashboard saw it: its handle, timeline and log lines."""

    def __init__(self, run: RunView) -> None:
        self.run = run
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_EVENTS)
        self.events_seen = 0
        self.logs: deque[dict[str, Any]] = deque()
        self.logs_seen = 0
        self._log_chars = 0
        self.finished = False

    def summary(self) -> dict[str, Any]:
        return summary_of(self.run.record, self.run.progress, live=not self.finished)

    def add_log(self, event: Event) -> None:
        message = event.message
        data = event.data
        level = data.get("level") if isinstance(data, dict) else None
        text = event.run.redactor.text(_cut(log_text(data)))
        self.logs.append(
            {
                "n": self.logs_seen,
                "ts": event.ts,
                "stream": message.source,
                "rank": event.rank,
                "level": str(level) if level else "",
                "text": text,
            }
        )
        self.logs_seen += 1
        self._log_chars += len(text)
        while len(self.logs) > MAX_LOG_LINES or (
            self._log_chars > MAX_LOG_CHARS and len(self.logs) > 1
        ):
            self._log_chars -= len(self.logs.popleft()["text"])

    def add_event(self, event: Event) -> None:
        self.events.append(
            {
                "n": self.events_seen,
                "ts": event.ts,
                "name": event.name,
                "rank": event.rank,
                "data": event.run.redactor.text(_brief(event.data)),
            }
        )
        self.events_seen += 1

    def logs_from(self, start: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to ``limit`` log lines from number ``start`` on, and how many before ``start``
        were dropped from memory (0 when none)."""
        first = self.logs_seen - len(self.logs)
        skipped = max(0, first - start)
        begin = max(start, first) - first
        lines = [self.logs[i] for i in range(begin, min(len(self.logs), begin + limit))]
        return lines, skipped

    def events_from(self, start: int) -> list[dict[str, Any]]:
        first = self.events_seen - len(self.events)
        return list(self.events)[max(start, first) - first :]


class Subscriber:
    """One open stream: which runs changed since it last looked, and a wake-up."""

    def __init__(self, run_id: str | None) -> None:
        #: The run a run page follows; None for the runs page (every run's summary).
        self.run_id = run_id
        self.dirty: dict[str, None] = {}
        self.closed = False
        self._wake = anyio.Event()

    def touch(self, run_id: str) -> None:
        self.dirty[run_id] = None
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def changed(self) -> list[str] | None:
        """The runs changed since the last call (waits for one); None once closed."""
        if not self.dirty and not self.closed:
            await self._wake.wait()
        self._wake = anyio.Event()
        if self.closed:
            return None
        ids = list(self.dirty)
        self.dirty.clear()
        return ids


class LiveHub:
    """Every run shown to the dashboard, and the streams watching them."""

    def __init__(self) -> None:
        self.runs: OrderedDict[str, LiveRun] = OrderedDict()
        self._subscribers: set[Subscriber] = set()
        self.closed = False

    def observe(self, event: Event) -> None:
        """The ``"*"`` hook: keep what ``event`` says and wake whoever watches its run."""
        run_id = event.run.id
        live = self.runs.get(run_id)
        if live is None:
            live = self.runs[run_id] = LiveRun(event.run)
        name = event.name
        if name == EventName.LOG:
            live.add_log(event)
        elif name != EventName.PROGRESS:
            live.add_event(event)
        if name in TERMINAL_EVENTS:
            live.finished = True
            self._forget_finished()
        for subscriber in self._subscribers:
            if subscriber.run_id is None:
                if name != EventName.LOG:
                    subscriber.touch(run_id)
            elif subscriber.run_id == run_id:
                subscriber.touch(run_id)

    def _forget_finished(self) -> None:
        finished = [run_id for run_id, live in self.runs.items() if live.finished]
        for run_id in finished[: max(0, len(finished) - MAX_FINISHED)]:
            del self.runs[run_id]

    def summaries(self, ids: list[str] | None = None) -> list[dict[str, Any]]:
        """The summaries of runs ``ids`` (all, newest first, when None)."""
        if ids is None:
            ids = list(reversed(self.runs))
        return [self.runs[run_id].summary() for run_id in ids if run_id in self.runs]

    def subscribe(self, run_id: str | None = None) -> Subscriber:
        subscriber = Subscriber(run_id)
        if self.closed:
            subscriber.close()
        else:
            self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def close(self) -> None:
        """End every stream (the server is stopping)."""
        self.closed = True
        for subscriber in self._subscribers:
            subscriber.close()
        self._subscribers.clear()
