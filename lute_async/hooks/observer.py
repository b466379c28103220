"""Observer: what an executor needs of something that watches all its runs (a dashboard).

An observer is a ``"*"`` hook with a life: the executor registers it for every event, opens it
when the executor is entered and closes it when the executor is closed. The executor knows
nothing else of it, so a web dashboard (an application, layer 6) plugs into the executor
(layer 5) without the executor importing any web code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Awaitable
    from pathlib import Path

    from lute_async.hooks.events import Event
    from lute_async.records.store import RecordStore

__all__ = ["Observed", "Observer"]


class Observed(Protocol):
    """What an observer may use of the executor it watches."""

    db_path: Path | str  # a sqlite file, or a PostgreSQL URL
    host: str

    async def store(self) -> RecordStore: ...


@runtime_checkable
class Observer(Protocol):
    """A ``"*"`` hook the executor opens on entry and closes on exit."""

    def __call__(self, event: Event) -> Awaitable[None] | None: ...

    async def open(self, executor: Observed) -> None: ...

    async def aclose(self) -> None: ...
