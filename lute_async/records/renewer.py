"""The lease renewer: the executor's own task that keeps its lease fresh (see leases).

It is a task of the event loop the executor runs on, not a child of a task group entered in
``Executor.__aenter__``: that group would have to be left in the same task, and callers such as
async test fixtures and application lifespans enter and leave an executor in different tasks.
A loop task also stops renewing when the loop itself is stuck, which is when the executor is as
good as dead. (lute-async runs on asyncio's loop or uvloop's, see the SLURM queue.)
"""

from __future__ import annotations

import asyncio
import contextlib

import anyio

from lute_async.errors import RecordStoreError
from lute_async.logs import get_logger
from lute_async.records.store import RecordStore

__all__ = ["LeaseRenewer", "renew_lease"]


async def renew_lease(
    store: RecordStore, period: float, limiter: anyio.CapacityLimiter, *, quiet: bool = False
) -> bool:
    """Renew this process's lease in *store* once, in a worker thread; False (logged as
    ``lease_renew_failed`` unless *quiet*) when the database cannot take it."""
    try:
        await anyio.to_thread.run_sync(store.renew_lease, period, limiter=limiter)
    except RecordStoreError as exc:
        if not quiet:
            get_logger().warning("lease_renew_failed", db=str(store.path), error=str(exc))
        return False
    return True


class LeaseRenewer:
    """Renews the lease of *store* now and then every *period* seconds until :meth:`stop`.

    A database that cannot take a renewal is logged (once per outage) and tried again at the
    next period; a lease that lapses meanwhile only lets other processes mark the runs LOST (a
    later save of a run that lives on records its real status again). A lapsed lease means
    LOST even when the pid still exists: an executor stopped or stuck that long is not
    watching its runs.
    """

    def __init__(self, store: RecordStore, period: float, limiter: anyio.CapacityLimiter) -> None:
        self.store = store
        self.period = period
        self._limiter = limiter
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Write the lease (before any run starts), then renew it from a task of this loop."""
        await renew_lease(self.store, self.period, self._limiter)
        self._task = asyncio.get_running_loop().create_task(self._renew(), name="lute-lease")

    async def _renew(self) -> None:
        failing = False  # an outage is logged once, when it starts, and once when it ends
        while True:
            await anyio.sleep(self.period)
            if self.store.closed:
                return
            renewed = await renew_lease(self.store, self.period, self._limiter, quiet=failing)
            if renewed and failing:
                get_logger().warning("lease_renewed_again", db=str(self.store.path))
            failing = not renewed

    async def stop(self) -> None:
        """Stop renewing (the lease then lapses by itself; runs have ended by then)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
