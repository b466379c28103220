"""The dashboard's ASGI app (Starlette): server-rendered pages, live streams, one cancel form.

Pages are rendered with Jinja2, autoescaping everything (what a task sent is text, never
markup); the hand-written ``static/live.js`` keeps them live from server-sent events and builds
what it adds with ``textContent``. The streams are fed by :class:`~lute_async.web.live.LiveHub`
(the executor's own event stream): nothing polls. Reads of the records database run in a worker
thread, one at a time, when a page or a filter asks.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import anyio
import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from lute_async.records import AnalysisRecord, RecordStore
from lute_async.status import RUN_STATUSES
from lute_async.web import history
from lute_async.web.access import TokenGate, csrf_value, same_origin
from lute_async.web.live import LiveHub, LiveRun, summary_of

__all__ = ["DashboardState", "build_app"]

HERE = Path(__file__).resolve().parent
#: Log lines on one page of a run's log (and per message of its stream).
LOG_PAGE = 200
T = TypeVar("T")


@dataclass
class DashboardState:
    """What the pages need: the live runs, the records, the token and what is allowed."""

    hub: LiveHub
    store: Callable[[], RecordStore]
    token: str
    allow_control: bool
    #: True when an executor feeds the hub (False: a history-only ``serve``).
    live: bool
    limiter: anyio.CapacityLimiter

    async def read(self, fn: Callable[[RecordStore], T]) -> T:
        """``fn(store)`` in a worker thread, one read at a time."""
        store = self.store()
        return await anyio.to_thread.run_sync(fn, store, limiter=self.limiter)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _duration(summary: dict[str, Any]) -> str:
    start, end = summary.get("started_at"), summary.get("ended_at")
    if not start:
        return ""
    seconds = (end or time.time()) - start  # a running run's: so far
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=repr, ensure_ascii=False)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(when=_when, duration=_duration, pretty=_pretty)
    return env


def _sse(kind: str, data: Any, event_id: str | None = None) -> str:
    """One server-sent event; json.dumps never leaves a raw newline in ``data``."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, default=repr)}\n\n"


def build_app(state: DashboardState, *, cookie: str) -> Any:
    """The ASGI app: the Starlette routes behind the token gate."""
    templates = _environment()

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        context.update(live=state.live, allow_control=state.allow_control)
        return HTMLResponse(templates.get_template(name).render(**context), status_code=status)

    async def runs_page(request: Request) -> Response:
        query = history.HistoryQuery.from_params(request.query_params)
        found = await state.read(lambda store: history.read_page(store, query))
        rows = [summary_of(record, None, live=False) for record in found.records]
        active = []
        if not state.live:  # no stream here: what the records say is running elsewhere
            recorded = await state.read(history.read_active)
            active = [summary_of(record, None, live=False) for record in recorded]
        return page(
            "runs.html",
            status=400 if found.error else 200,
            query=query,
            found=found,
            rows=rows,
            active=active,
            statuses=sorted(RUN_STATUSES),
        )

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        live = state.hub.runs.get(run_id)
        record: AnalysisRecord | None
        if live is not None:
            record = live.run.record
        else:
            record = await state.read(lambda store: history.read_run(store, run_id))
        if record is None:
            return page("missing.html", status=404, what=f"run {run_id}")
        start = _int(request.query_params.get("log_start"))
        lines, skipped, log_next, events = _log_view(live, start)
        return page(
            "run.html",
            record=record,
            summary=live.summary() if live else summary_of(record, None, live=False),
            following=live is not None and not live.finished,
            seen=live is not None,
            lines=lines,
            skipped=skipped,
            log_start=start,
            log_next=log_next,
            log_page=LOG_PAGE,
            events=events,
            event_next=live.events_seen if live else 0,
            csrf=csrf_value(state.token),
            attempts=record.attempts,
            protocol_errors={key: value for key, value in record.extra.items() if "error" in key},
        )

    async def graph_page(request: Request) -> Response:
        graph_id = request.path_params["graph_id"]
        records = await state.read(lambda store: history.graph_records(store, graph_id))
        by_name = {record.name: record for record in records}
        tag = history.GRAPH_TAG + graph_id
        for live in state.hub.runs.values():  # live ones are newer than their records
            if tag in live.run.record.tags:
                by_name[live.run.record.name] = live.run.record
        if not by_name:
            return page("missing.html", status=404, what=f"graph {graph_id}")
        edges: dict[str, list[str]] = {}
        for record in by_name.values():
            linked = record.extra.get("graph")
            if isinstance(linked, dict) and isinstance(linked.get("nodes"), dict):
                edges.update(linked["nodes"])
        states = {
            name: {"status": record.status, "id": record.id} for name, record in by_name.items()
        }
        layout = history.graph_layout(edges, states)
        return page("graph.html", graph_id=graph_id, layout=layout)

    async def runs_stream(request: Request) -> Response:
        subscriber = state.hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield _sse("runs", {"runs": state.hub.summaries(), "snapshot": True})
                while (changed := await subscriber.changed()) is not None:
                    yield _sse("runs", {"runs": state.hub.summaries(changed)})
            finally:
                state.hub.unsubscribe(subscriber)

        return _streaming(stream())

    async def run_stream(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        live = state.hub.runs.get(run_id)
        resume = request.headers.get("last-event-id", "")
        log_from, _, event_from = resume.partition(":")
        log_next = _int(log_from or request.query_params.get("log")) or 0
        event_next = _int(event_from or request.query_params.get("event")) or 0
        subscriber = state.hub.subscribe(run_id)

        async def stream() -> AsyncIterator[str]:
            nonlocal log_next, event_next
            try:
                while live is not None:
                    lines, skipped = live.logs_from(log_next, LOG_PAGE)
                    events = live.events_from(event_next)
                    log_next = max(log_next, lines[-1]["n"] + 1 if lines else live.logs_seen)
                    event_next = live.events_seen
                    update = {
                        "summary": live.summary(),
                        "logs": lines,
                        "skipped": skipped,
                        "events": events,
                    }
                    yield _sse("run", update, f"{log_next}:{event_next}")
                    if log_next < live.logs_seen:
                        continue  # more lines are waiting: send them before sleeping
                    if live.finished or await subscriber.changed() is None:
                        break
                yield _sse("end", {})
            finally:
                state.hub.unsubscribe(subscriber)

        return _streaming(stream())

    async def cancel(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        if not state.allow_control:
            return PlainTextResponse("403 Forbidden: started without --allow-control", 403)
        form = dict(parse_qsl((await request.body()).decode("utf-8", errors="replace")))
        given = form.get("csrf", "")
        if not same_origin(dict(request.headers)) or not hmac.compare_digest(
            given.encode(), csrf_value(state.token).encode()
        ):
            return PlainTextResponse("403 Forbidden: bad or missing CSRF value", 403)
        live = state.hub.runs.get(run_id)
        if live is None or live.finished:
            return PlainTextResponse(f"409 Conflict: run {run_id} is not running here", 409)
        await live.run.cancel()
        return RedirectResponse(f"/runs/{run_id}", status_code=303)

    routes = [
        Route("/", runs_page),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/cancel", cancel, methods=["POST"]),
        Route("/graphs/{graph_id}", graph_page),
        Route("/stream/runs", runs_stream),
        Route("/stream/runs/{run_id}", run_stream),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return TokenGate(Starlette(routes=routes), state.token, cookie)


def _streaming(body: AsyncIterator[str]) -> StreamingResponse:
    headers = {"cache-control": "no-store", "x-accel-buffering": "no"}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


def _int(text: str | None) -> int | None:
    try:
        return max(0, int(text)) if text else None
    except ValueError:
        return None


def _log_view(
    live: LiveRun | None, start: int | None
) -> tuple[list[dict[str, Any]], int, int, list[dict[str, Any]]]:
    """The log lines a run page shows (the last page, or the page from ``start``), how many
    were dropped before them, the number of the next line, and the timeline."""
    if live is None:
        return [], 0, 0, []
    if start is None:
        start = max(0, live.logs_seen - LOG_PAGE)
    lines, skipped = live.logs_from(start, LOG_PAGE)
    log_next = lines[-1]["n"] + 1 if lines else max(start, live.logs_seen - len(live.logs))
    return lines, skipped, log_next, live.events_from(0)
