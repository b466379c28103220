"""The dispatcher of a run: its messages, in stream order, into the record, the hooks and the
tap. This is the hot path (hundreds of thousands of messages a second): measure before and
after changing it (``python -m benchmarks``)."""

from __future__ import annotations

import asyncio
import inspect
import sys
from contextlib import suppress

import anyio

from lute_async.communicators.base import Batch
from lute_async.errors import ProtocolError
from lute_async.hooks.events import ANY_EVENT, Event, EventBatch, Hook, HookError
from lute_async.hooks.registry import call_batch_hooks, call_hooks, hook_error
from lute_async.logs import get_logger
from lute_async.messages import TERMINAL_EVENTS, EventName, Message
from lute_async.run.state import RunState

# Plain values for the per-message checks: an enum member lookup costs 0.1 us on 3.11.
_STARTED: str = EventName.STARTED.value
_PROGRESS: str = EventName.PROGRESS.value


class Dispatcher(RunState):
    """Takes a run's batches in order and handles each message before the next."""

    async def _dispatch_until(self, done: asyncio.Event) -> None:
        """Dispatch the stream's batches as they come until ``done`` is set (whoever sets it
        wakes the stream). The run's own task is its dispatcher."""
        receive = self._receive
        while not done.is_set():
            batch = await receive.next()
            if batch is not None:
                await self._dispatch_batch(batch)

    async def _pump(self) -> None:
        """Dispatch every batch the stream holds now, in order."""
        receive = self._receive
        while (batch := receive.next_nowait()) is not None:
            await self._dispatch_batch(batch)

    async def _dispatch_batch(self, batch: Batch) -> None:
        """Handle ``batch`` in order, then call the batch hooks with its events. A message
        whose event only fires sync hooks, and touches neither the record nor the tap, takes
        the fast path: an Event and the hook calls, with no coroutine, hook-list
        concatenation or record check per message."""
        if self._tap is not None:  # the tap only ever goes away, never comes back mid-batch
            await self._dispatch_tapped(batch)
            return
        executor_hooks, run_hooks = self._context.hooks, self.hooks
        timeout = self._context.hook_timeout  # only named in errors, as call_hooks does
        routes, wanted = self._routes, self._batch_names
        version = self._routes_version
        collected: list[Message] = []  # the batch hooks' (their Events are made lazily)
        collect = collected.append
        new, refs = object.__new__, sys.getrefcount
        # The route of the last message's sig, while it holds: a connection gives its messages
        # one sig object, so a run of them takes one lookup (`is`, not `==`: a cheap miss).
        last: str | None = None
        hooks: tuple[Hook, ...] | None = None
        only: Hook | None = None  # the one hook, when there is one: called with no loop
        batch_wants = False
        event = new(Event)
        event.run = self
        alone = refs(event)  # its refcount while nothing but this frame holds it
        for message in batch:
            if executor_hooks.version + run_hooks.version != version:
                routes, wanted = self._renew_routes()
                version, last = self._routes_version, None
            sig = message.sig
            if sig is not last:
                hooks = routes.get(sig)
                if hooks is None:
                    if sig not in routes:
                        hooks = self._route(sig)
                    if hooks is None:
                        last = None
                        if await self._handle(message) and wanted and self._batch_wants(sig):
                            collect(message)
                        continue
                last, only = sig, hooks[0] if len(hooks) == 1 else None
                batch_wants = bool(wanted) and (sig in wanted or ANY_EVENT in wanted)
            if batch_wants:
                collect(message)
            if hooks:
                # One Event, filled field by field for each message (40% cheaper than calling
                # the dataclass on 3.11; test_hooks_get_events_equal_to_constructed_ones checks
                # every field is set), and made anew only once a hook has kept a reference to
                # it: when nothing but this frame holds it (its refcount is `alone`; an Event
                # has no weakrefs), filling it again is what freeing it and making the next
                # one would give, without either.
                if refs(event) != alone:
                    event = new(Event)
                    event.run = self
                event.name = sig
                event.data = message.data
                event.rank = message.rank
                event.ts = message.ts
                event.message = message
                if only is not None:  # the loop below, for one hook (no tuple iterator)
                    try:
                        result = only(event)
                        if result is not None and inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        self._hook_errors([hook_error(sig, only, exc, timeout)])
                    continue
                for fn in hooks:
                    try:
                        result = fn(event)
                        # A sync callable that returned a coroutine; testing for None first
                        # skips isawaitable's costly ABC check for the usual hook.
                        if result is not None and inspect.isawaitable(result):
                            await result
                    except Exception as exc:
                        self._hook_errors([hook_error(sig, fn, exc, timeout)])
        if collected or self._terminal_fired:
            await self._end_batch(collected)

    async def _dispatch_tapped(self, batch: Batch) -> None:
        """Handle ``batch`` of a run with a tap: every message by ``_handle``."""
        collected = [
            message
            for message in batch
            if await self._handle(message) and self._batch_wants(message.sig)
        ]
        await self._end_batch(collected)

    async def _end_batch(self, collected: list[Message]) -> None:
        """Call the batch hooks with ``collected``; after the terminal event's, the record is
        final: :meth:`wait` returns it."""
        if collected:
            await self._fire_batch_hooks(collected)
        if self._terminal_fired and not self._finished.is_set():
            self._finished.set()

    def _renew_routes(self) -> tuple[dict[str, tuple[Hook, ...] | None], frozenset[str]]:
        """Forget the cached routes, and list the batch hooks' events anew: a registry has
        changed since they were made."""
        executor_hooks, run_hooks = self._context.hooks, self.hooks
        self._routes_version = executor_hooks.version + run_hooks.version
        self._routes = {}
        self._batch_names = frozenset(
            name
            for registry in (executor_hooks, run_hooks)
            for name, _, _ in registry.batch_hooks()
        )
        return self._routes, self._batch_names

    def _batch_wants(self, sig: str) -> bool:
        """True when a batch hook wants ``sig``'s events."""
        if self._context.hooks.version + self.hooks.version != self._routes_version:
            self._renew_routes()
        names = self._batch_names
        return sig in names or ANY_EVENT in names

    def _route(self, sig: str) -> tuple[Hook, ...] | None:
        """The sync hooks of ``sig`` for the fast path, cached until a registry changes; None
        when ``_handle`` must take it (an event it treats specially, an async hook, or the
        watchdog: that of sync hooks lives in call_hooks only)."""
        context = self._context
        hooks: tuple[Hook, ...] | None = None
        if sig not in self._special_events and context.watchdog is None:
            listed = context.hooks.hooks_for(sig) + self.hooks.hooks_for(sig)
            if not any(is_async for _, is_async in listed):
                hooks = tuple(fn for fn, _ in listed)
        self._routes[sig] = hooks
        return hooks

    async def _fire_batch_hooks(self, messages: list[Message]) -> None:
        """Call each batch hook (the executor's, then the run's) with the events of
        ``messages`` it was registered for; errors are recorded like per-message hooks'."""
        context = self._context
        sig = messages[0].sig
        one_event = all(message.sig == sig for message in messages)
        errors: list[HookError] = []
        for registry in (context.hooks, self.hooks):
            for key, fn, is_async in list(registry.batch_hooks()):
                if key == ANY_EVENT:
                    chosen = messages
                elif one_event:
                    chosen = messages if key == sig else []
                else:
                    chosen = [message for message in messages if message.sig == key]
                if chosen:
                    batch = EventBatch(self, chosen)
                    errors += await call_batch_hooks(
                        [(fn, is_async)], batch, key, context.hook_timeout, context.watchdog
                    )
        if errors:
            self._hook_errors(errors)
            if self._terminal_fired:
                await context.save(self)

    async def _handle(self, message: Message) -> bool:
        """Handle one message; False when it fires nothing (a repeated start or end)."""
        sig = message.sig
        if sig == _STARTED:
            if self._started_fired:
                # The executor already announced the start; the task's own "started" adds
                # what it reports (its params) to the record without firing twice.
                if message.source == "executor":
                    # A scheduler may see a job running after its ranks said so (SLURM):
                    # keep its nodes and rank count, not a second start time.
                    started_at = self.record.started_at
                    self._keeper.apply(message)
                    self.record.started_at = started_at
                    await self._context.save(self)
                else:
                    self._keeper.task_started(message)
                return False
            self._started_fired = True
        elif sig == _PROGRESS:
            self.progress = message.data if isinstance(message.data, dict) else None
        terminal = sig in TERMINAL_EVENTS
        if terminal:
            if self._terminal_fired:
                return False
            if self._after:  # a done's after steps may make it a failed (run.tasklets)
                message = await self._after_steps(message)
                sig = message.sig
            self._terminal_fired = True
        if self._keeper.apply(message):
            await self._context.save(self)
        hooks = self._context.hooks.hooks_for(sig) + self.hooks.hooks_for(sig)
        if hooks:
            event = Event(sig, self, message.data, message.rank, message.ts, message)
            errors = await call_hooks(
                hooks, event, self._context.hook_timeout, self._context.watchdog
            )
            if errors:
                self._hook_errors(errors)
                if terminal:
                    await self._context.save(self)
        if self._tap is not None:
            with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self._tap[0].send(message)
        return True

    def _hook_errors(self, errors: list[HookError]) -> None:
        log = get_logger()
        budget = self._hook_budget
        for error in errors:
            if not budget.add(f"{error.hook} ({error.event})", last_error=error.message):
                # Past the first few, a hook that fails on every message is only counted.
                self.record.extra["hook_errors_dropped"] = budget.summary()
                continue
            self.record.hook_errors.append(error.to_dict())
            log.error(
                "hook_failed",
                run_id=self.id,
                run=self.name,
                hook_event=error.event,
                hook=error.hook,
                error=f"{error.type}: {error.message}",
                traceback=error.traceback,
            )

    def _protocol_error(self, source: str, conn: int, error: ProtocolError) -> None:
        self.record.extra.setdefault("protocol_errors", []).append(
            {"source": source, "conn": conn, "message": str(error), "offset": error.offset}
        )
        get_logger().error(
            "protocol_error",
            run_id=self.id,
            run=self.name,
            source=source,
            conn=conn,
            offset=error.offset,
            error=str(error),
        )
