"""Hooks: plain callables ``(Event) -> None | Awaitable[None]`` fired for each event of a run."""

from lute_async.hooks.registry import Event, Hook, HookRegistry

__all__ = ["Event", "Hook", "HookRegistry"]
