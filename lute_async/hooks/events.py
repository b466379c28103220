"""What hooks see: the Event a hook receives, the RunView of its run, and HookError.

This is the contract between the run engine and hook code; it imports nothing of the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, overload

if TYPE_CHECKING:
    from lute_async.messages import Message
    from lute_async.records.model import AnalysisRecord
    from lute_async.redaction import Redactor

Hook: TypeAlias = Callable[["Event"], Awaitable[None] | None]
#: A batch hook: called with the events of one decoded batch, in stream order.
BatchHook: TypeAlias = Callable[["EventBatch"], Awaitable[None] | None]
#: The event name that matches every event.
ANY_EVENT = "*"


class RunView(Protocol):
    """What a hook may read and call on the run an event belongs to."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def done(self) -> bool: ...
    @property
    def record(self) -> AnalysisRecord: ...
    @property
    def progress(self) -> dict[str, Any] | None: ...
    @property
    def time_left(self) -> float | None: ...
    @property
    def redactor(self) -> Redactor:
        """Masks this run's secrets in a text, an argv or a mapping before it is kept."""
        ...

    def on(self, event: str, fn: Hook | None = None) -> Any:
        """Register a hook for this run only."""
        ...

    def on_batch(self, event: str, fn: BatchHook | None = None) -> Any:
        """Register a batch hook for this run only."""
        ...

    async def stop(self) -> None: ...
    async def resume(self) -> None: ...
    async def cancel(self) -> None: ...
    async def kill(self) -> None: ...
    async def wait(self) -> AnalysisRecord: ...


@dataclass(slots=True)
class Event:
    """What a hook receives: the event's name, the run it belongs to and the message's data."""

    name: str
    run: RunView
    data: Any
    rank: int | None
    ts: float
    message: Message


class EventBatch(Sequence[Event]):
    """What a batch hook receives: the events of one decoded batch of one run, in stream
    order. Each Event is made when it is read (equal to, not the same object as, the one
    per-message hooks got); :attr:`messages` are their messages, with no Event made."""

    __slots__ = ("messages", "run")

    def __init__(self, run: RunView, messages: list[Message]) -> None:
        self.run = run
        self.messages = messages

    def __len__(self) -> int:
        return len(self.messages)

    @overload
    def __getitem__(self, index: int) -> Event: ...
    @overload
    def __getitem__(self, index: slice) -> EventBatch: ...
    def __getitem__(self, index: int | slice) -> Event | EventBatch:
        if isinstance(index, slice):
            return EventBatch(self.run, self.messages[index])
        return event_of(self.run, self.messages[index])

    def __iter__(self) -> Iterator[Event]:
        run = self.run
        for message in self.messages:
            yield event_of(run, message)

    def __repr__(self) -> str:
        return f"EventBatch({len(self.messages)} events of run {self.run.id})"


def event_of(run: RunView, message: Message) -> Event:
    """The Event of ``message`` in ``run``."""
    # Field by field: 40% cheaper than calling the dataclass on 3.11 (every field is set:
    # test_hooks_get_events_equal_to_constructed_ones compares with a constructed one).
    event = object.__new__(Event)
    event.name = message.sig
    event.run = run
    event.data = message.data
    event.rank = message.rank
    event.ts = message.ts
    event.message = message
    return event


@dataclass(slots=True)
class HookError:
    """A hook that raised (or timed out): what to log and to note in the record."""

    event: str
    hook: str
    type: str
    message: str
    traceback: str

    def to_dict(self) -> dict[str, str]:
        return {
            "event": self.event,
            "hook": self.hook,
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
        }


def hook_name(fn: Callable[..., Any]) -> str:
    """A readable name for a hook: ``module.qualname``."""
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"
