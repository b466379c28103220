"""Hooks: plain callables ``(Event) -> None | Awaitable[None]`` fired for each event of a run."""

from lute_async.hooks.events import ANY_EVENT, Event, Hook, HookError, RunView
from lute_async.hooks.registry import HookRegistry

__all__ = ["ANY_EVENT", "Event", "Hook", "HookError", "HookRegistry", "RunView"]
