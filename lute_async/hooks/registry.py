"""HookRegistry: the hooks registered per event name, called in order with errors isolated."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import anyio

from lute_async.hooks.events import ANY_EVENT, Event, Hook, HookError, RunView, hook_name

if TYPE_CHECKING:
    from lute_async.hooks.watchdog import HookWatchdog

__all__ = [
    "ANY_EVENT",
    "Event",
    "Hook",
    "HookError",
    "HookRegistry",
    "RunView",
    "call_hooks",
    "hook_error",
    "hook_name",
]


class HookRegistry:
    """Hooks by event name; ``*`` hooks see every event. Registration order is call order."""

    def __init__(self, hooks: Mapping[str, Hook | Iterable[Hook]] | None = None) -> None:
        self._hooks: dict[str, list[tuple[Hook, bool]]] = {}
        #: Counts changes (add, remove), so callers can cache what ``hooks_for`` said.
        self.version = 0
        for event, fns in (hooks or {}).items():
            for fn in [fns] if callable(fns) else fns:
                self.add(event, fn)

    def add(self, event: str, fn: Hook) -> Hook:
        """Register ``fn`` for ``event`` (``"*"`` for all events) and return it."""
        if not callable(fn):
            raise TypeError(f"hook for {event!r} must be callable, got {type(fn).__name__}")
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
        )
        self._hooks.setdefault(event, []).append((fn, is_async))
        self.version += 1
        return fn

    def remove(self, event: str, fn: Hook) -> None:
        """Unregister ``fn`` from ``event``; a hook that was not registered is an error."""
        entries = self._hooks.get(event, [])
        for i, (registered, _) in enumerate(entries):
            if registered is fn:
                del entries[i]
                self.version += 1
                return
        raise ValueError(f"{hook_name(fn)} is not registered for {event!r}")

    def hooks_for(self, event: str) -> list[tuple[Hook, bool]]:
        """The hooks to call for ``event``, specific ones then ``*`` ones."""
        specific = self._hooks.get(event)
        wildcard = self._hooks.get(ANY_EVENT)
        if specific and wildcard:
            return specific + wildcard
        return specific or wildcard or []

    def wants(self, event: str) -> bool:
        """True when some hook would see ``event``."""
        return bool(self._hooks.get(event) or self._hooks.get(ANY_EVENT))

    def __bool__(self) -> bool:
        return any(self._hooks.values())


async def call_hooks(
    hooks: list[tuple[Hook, bool]],
    event: Event,
    timeout: float | None,
    watchdog: HookWatchdog | None = None,
) -> list[HookError]:
    """Call each hook in order; a raising or overrunning hook is reported, the rest still run.

    An async hook is cut after ``timeout``; a sync one cannot be, so ``watchdog`` logs it while
    it blocks and it is reported as overrun when it returns.
    """
    errors: list[HookError] = []
    for fn, is_async in hooks:
        try:
            if is_async:
                if timeout is None:
                    await fn(event)  # type: ignore[misc]
                else:
                    with anyio.fail_after(timeout):
                        await fn(event)  # type: ignore[misc]
            elif watchdog is not None:
                watchdog.enter(fn, event.name, event.run.id)
                try:
                    result = fn(event)
                finally:
                    overran = watchdog.leave()
                if overran is not None:
                    errors.append(_blocked(event, fn, overran, watchdog.timeout))
                if result is not None and inspect.isawaitable(result):
                    await result
            else:
                result = fn(event)
                # A sync callable that returned a coroutine; the None test skips isawaitable's
                # costly ABC check for the usual hook (a third of dispatch time at 200k msg/s).
                if result is not None and inspect.isawaitable(result):
                    await result
        except Exception as exc:
            errors.append(hook_error(event, fn, exc, timeout))
    return errors


def _blocked(event: Event, fn: Hook, seconds: float, timeout: float) -> HookError:
    return HookError(
        event=event.name,
        hook=hook_name(fn),
        type="TimeoutError",
        message=f"sync hook ran {seconds:.2f} s, past hook_timeout {timeout} s; it could not "
        "be cut and blocked the event loop (make it async or move the work to a thread)",
        traceback="",
    )


def hook_error(event: Event, fn: Hook, exc: Exception, timeout: float | None) -> HookError:
    """What to report of ``fn`` raising ``exc`` on ``event`` (TimeoutError: it overran)."""
    message = f"hook took longer than {timeout} s" if isinstance(exc, TimeoutError) else str(exc)
    return HookError(
        event=event.name,
        hook=hook_name(fn),
        type=type(exc).__name__,
        message=message,
        traceback="".join(traceback.format_exception(exc)),
    )
