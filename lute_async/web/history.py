"""What the dashboard reads from the records database, when a page or a filter asks.

The runs page's filters (name, status, tag, a time range) become a
:class:`~lute_async.records.filters.RunFilter`; its pages are keyset pages of
:meth:`RecordStore.page` (a cursor ``submitted_at:rowid``, never an OFFSET), so the hundredth
page of 100,000 runs costs what the first does. A graph page gathers the records tagged
``graph:<id>`` (an indexed tag) and the edges their ``extra["graph"]`` holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from lute_async.errors import RecordNotFound
from lute_async.records import AnalysisRecord, RecordStore, RunFilter
from lute_async.records.store import Cursor
from lute_async.status import ACTIVE_STATUSES, RUN_STATUSES
from lute_async.workflow import GRAPH_TAG

__all__ = [
    "GRAPH_TAG",
    "PAGE_SIZE",
    "FilterError",
    "HistoryPage",
    "HistoryQuery",
    "graph_layout",
    "graph_records",
    "read_active",
    "read_page",
    "read_run",
]

#: Runs on one page of the history.
PAGE_SIZE: Final = 50
#: Nodes a graph page reads at most.
MAX_GRAPH_NODES: Final = 2_000


class FilterError(ValueError):
    """A filter value the history cannot use; the message names the field and the value."""


def _time(field_name: str, text: str) -> float:
    try:
        return datetime.fromisoformat(text).timestamp()  # naive: local time, as typed
    except ValueError:
        raise FilterError(
            f"{field_name}: expected a date and time like 2026-12-01T10:00, got {text!r}"
        ) from None


def _cursor(field_name: str, text: str) -> Cursor:
    at, _, rowid = text.partition(":")
    try:
        return float(at), int(rowid)
    except ValueError:
        raise FilterError(f"{field_name}: expected a page cursor, got {text!r}") from None


@dataclass(frozen=True)
class HistoryQuery:
    """The runs page's filters and where its page starts, as typed in its form."""

    name: str = ""
    status: str = ""
    tag: str = ""
    since: str = ""
    until: str = ""
    after: str = ""
    before: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> HistoryQuery:
        known = {key: params.get(key, "").strip() for key in cls.__dataclass_fields__}
        return cls(**known)

    def run_filter(self) -> RunFilter:
        """The filter these fields say; :class:`FilterError` for a value it cannot use."""
        if self.status and self.status not in RUN_STATUSES:
            raise FilterError(
                f"status: expected one of {', '.join(sorted(RUN_STATUSES))}, got {self.status!r}"
            )
        return RunFilter(
            name=self.name or None,
            status=self.status or None,
            tags=self.tag or None,
            since=_time("since", self.since) if self.since else None,
            until=_time("until", self.until) if self.until else None,
        )

    def link(self, **changes: str) -> str:
        """The query string of these filters with ``changes`` (paging cursors)."""
        from urllib.parse import urlencode

        values = {**self.__dict__, "after": "", "before": "", **changes}
        return urlencode({key: value for key, value in values.items() if value})


@dataclass
class HistoryPage:
    """One page of the history, and the cursors of its neighbours."""

    records: list[AnalysisRecord]
    older: str | None = None
    newer: str | None = None
    error: str | None = None


def read_page(store: RecordStore, query: HistoryQuery) -> HistoryPage:
    """The page ``query`` asks for (newest first)."""
    try:
        runs = query.run_filter()
        if query.before:  # the page before a cursor: read towards newer runs, then flip
            found, more = store.page(
                runs, after=_cursor("before", query.before), limit=PAGE_SIZE, newest_first=False
            )
            found.reverse()
            newer_exists = more is not None
            older_exists = True
        else:
            after = _cursor("after", query.after) if query.after else None
            found, more = store.page(runs, after=after, limit=PAGE_SIZE)
            newer_exists = after is not None
            older_exists = more is not None
    except FilterError as exc:
        return HistoryPage([], error=str(exc))
    if not found:
        return HistoryPage([])
    first, last = _keys(store, found[0].id), _keys(store, found[-1].id)
    return HistoryPage(
        found,
        older=last if older_exists else None,
        newer=first if newer_exists else None,
    )


def _keys(store: RecordStore, run_id: str) -> str:
    """The cursor ``submitted_at:rowid`` of run ``run_id``."""
    at, rowid = store.cursor_of(run_id)
    return f"{at!r}:{rowid}"


def read_active(store: RecordStore) -> list[AnalysisRecord]:
    """The runs the records say are not over (PENDING, QUEUED, RUNNING, STOPPED), newest first:
    what other processes run, as last recorded."""
    return store.page(RunFilter(status=ACTIVE_STATUSES), limit=PAGE_SIZE)[0]


def read_run(store: RecordStore, run_id: str) -> AnalysisRecord | None:
    """The record of ``run_id``, or None when the database has none."""
    try:
        return store.get(run_id)
    except RecordNotFound:
        return None


def graph_records(store: RecordStore, graph_id: str) -> list[AnalysisRecord]:
    """The recorded runs of workflow ``graph_id`` (oldest first)."""
    return store.query(tags=GRAPH_TAG + graph_id, limit=MAX_GRAPH_NODES, newest_first=False)


def graph_layout(
    edges: Mapping[str, list[str]], states: Mapping[str, dict[str, Any]]
) -> dict[str, Any]:
    """Where each node of a graph goes (columns by dependency depth) and its edges."""
    names = list(edges) or list(states)
    for name in list(states):
        if name not in edges:
            names.append(name)
    depth: dict[str, int] = {}

    def level(name: str, seen: frozenset[str] = frozenset()) -> int:
        if name in depth:
            return depth[name]
        after = [dep for dep in edges.get(name, []) if dep not in seen]
        depth[name] = 1 + max((level(dep, seen | {name}) for dep in after), default=-1)
        return depth[name]

    columns: dict[int, list[str]] = {}
    for name in names:
        columns.setdefault(level(name), []).append(name)
    width, height, gap_x, gap_y = 180, 44, 70, 26
    nodes = []
    where: dict[str, tuple[int, int]] = {}
    for column, members in sorted(columns.items()):
        for row, name in enumerate(members):
            x, y = 20 + column * (width + gap_x), 20 + row * (height + gap_y)
            where[name] = (x, y)
            state = states.get(name, {"status": "PENDING", "id": None})
            nodes.append({"name": name, "x": x, "y": y, "w": width, "h": height, **state})
    lines = [
        {
            "x1": where[dep][0] + width,
            "y1": where[dep][1] + height // 2,
            "x2": where[name][0],
            "y2": where[name][1] + height // 2,
            "from": dep,
            "to": name,
        }
        for name in names
        for dep in edges.get(name, [])
        if dep in where
    ]
    rows = max((len(members) for members in columns.values()), default=1)
    return {
        "nodes": nodes,
        "edges": lines,
        "width": 40 + len(columns) * (width + gap_x),
        "height": 40 + rows * (height + gap_y),
    }
