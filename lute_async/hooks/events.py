"""What hooks see: the Event a hook receives, the RunView of its run, and HookError.

This is the contract between the run engine and hook code; it imports nothing of the engine.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from lute_async.messages import Message
    from lute_async.records.model import AnalysisRecord
    from lute_async.redaction import Redactor

Hook: TypeAlias = Callable[["Event"], Awaitable[None] | None]
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
