"""HookRegistry: the hooks registered per event name (per message, or per decoded batch),
called in order with errors isolated."""

from __future__ import annotations

import inspect
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import anyio

from lute_async.hooks.events import (
    ANY_EVENT,
    BatchHook,
    Event,
    EventBatch,
    Hook,
    HookError,
    RunView,
    hook_name,
)

if TYPE_CHECKING:
    from lute_async.hooks.watchdog import HookWatchdog

__all__ = [
    "ANY_EVENT",
    "BatchHook",
    "Event",
    "EventBatch",
    "Hook",
    "HookError",
    "HookRegistry",
    "RunView",
    "call_batch_hooks",
    "call_hooks",
    "hook_error",
    "hook_name",
]


def _is_async(fn: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects count too
    )


class HookRegistry:
    """Hooks by event name; ``*`` hooks see every event. Registration order is call order.

    Batch hooks (:meth:`add_batch`) take the list of one decoded batch's events instead.
    """

    def __init__(self, hooks: Mapping[str, Hook | Iterable[Hook]] | None = None) -> None:
        self._hooks: dict[str, list[tuple[Hook, bool]]] = {}
        self._batch: list[tuple[str, BatchHook, bool]] = []
        #: Counts changes (add, remove), so callers can cache what ``hooks_for`` said.
        self.version = 0
        for event, fns in (hooks or {}).items():
            for fn in [fns] if callable(fns) else fns:
                self.add(event, fn)

    def add(self, event: str, fn: Hook) -> Hook:
        """Register ``fn`` for ``event`` (``"*"`` for all events) and return it."""
        _check_callable(event, fn)
        self._hooks.setdefault(event, []).append((fn, _is_async(fn)))
        self.version += 1
        return fn

    def add_batch(self, event: str, fn: BatchHook) -> BatchHook:
        """Register ``fn`` to be called with the list of ``event``'s events (``"*"``: every
        event) of each decoded batch, in stream order; return it."""
        _check_callable(event, fn)
        self._batch.append((event, fn, _is_async(fn)))
        self.version += 1
        return fn

    def remove_batch(self, event: str, fn: BatchHook) -> None:
        """Unregister the batch hook ``fn`` from ``event``; one not registered is an error."""
        for i, (name, registered, _) in enumerate(self._batch):
            if name == event and registered is fn:
                del self._batch[i]
                self.version += 1
                return
        raise ValueError(f"{hook_name(fn)} is not registered as a batch hook for {event!r}")

    def batch_hooks(self) -> list[tuple[str, BatchHook, bool]]:
        """The batch hooks as ``(event, fn, is_async)``, in registration order."""
        return self._batch

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
        """True when some hook (per message or batch) would see ``event``."""
        return bool(self._hooks.get(event) or self._hooks.get(ANY_EVENT)) or any(
            name in (event, ANY_EVENT) for name, _, _ in self._batch
        )

    def __bool__(self) -> bool:
        return any(self._hooks.values()) or bool(self._batch)


def _check_callable(event: str, fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"hook for {event!r} must be callable, got {type(fn).__name__}")


async def call_hooks(
    hooks: list[tuple[Hook, bool]],
    event: Event,
    timeout: float | None,
    watchdog: HookWatchdog | None = None,
) -> list[HookError]:
    """Call each hook with ``event`` in order; a raising or overrunning hook is reported, the
    rest still run.

    An async hook is cut after ``timeout``; a sync one cannot be, so ``watchdog`` logs it while
    it blocks and it is reported as overrun when it returns.
    """
    return await _call_each(hooks, event, event.name, event.run.id, timeout, watchdog)


async def call_batch_hooks(
    hooks: list[tuple[BatchHook, bool]],
    events: EventBatch,
    name: str,
    timeout: float | None,
    watchdog: HookWatchdog | None = None,
) -> list[HookError]:
    """Call each batch hook with ``events`` (of one run, registered for ``name``) as
    :func:`call_hooks` calls hooks with an event."""
    return await _call_each(hooks, events, name, events.run.id, timeout, watchdog)


async def _call_each(
    hooks: list[tuple[Callable[[Any], Awaitable[None] | None], bool]],
    arg: Any,
    name: str,
    run_id: str,
    timeout: float | None,
    watchdog: HookWatchdog | None,
) -> list[HookError]:
    errors: list[HookError] = []
    for fn, is_async in hooks:
        try:
            if is_async:
                if timeout is None:
                    await fn(arg)  # type: ignore[misc]
                else:
                    with anyio.fail_after(timeout):
                        await fn(arg)  # type: ignore[misc]
            elif watchdog is not None:
                watchdog.enter(fn, name, run_id)
                try:
                    result = fn(arg)
                finally:
                    overran = watchdog.leave()
                if overran is not None:
                    errors.append(_blocked(name, fn, overran, watchdog.timeout))
                if result is not None and inspect.isawaitable(result):
                    await result
            else:
                result = fn(arg)
                # A sync callable that returned a coroutine; the None test skips isawaitable's
                # costly ABC check for the usual hook (a third of dispatch time at 200k msg/s).
                if result is not None and inspect.isawaitable(result):
                    await result
        except Exception as exc:
            errors.append(hook_error(name, fn, exc, timeout))
    return errors


def _blocked(
    name: str, fn: Callable[..., Any], seconds: float, timeout: float
) -> HookError:
    return HookError(
        event=name,
        hook=hook_name(fn),
        type="TimeoutError",
        message=f"sync hook ran {seconds:.2f} s, past hook_timeout {timeout} s; it could not "
        "be cut and blocked the event loop (make it async or move the work to a thread)",
        traceback="",
    )


def hook_error(
    name: str, fn: Callable[..., Any], exc: Exception, timeout: float | None
) -> HookError:
    """What to report of ``fn`` raising ``exc`` on event ``name`` (TimeoutError: overran)."""
    message = f"hook took longer than {timeout} s" if isinstance(exc, TimeoutError) else str(exc)
    return HookError(
        event=name,
        hook=hook_name(fn),
        type=type(exc).__name__,
        message=message,
        traceback="".join(traceback.format_exception(exc)),
    )
