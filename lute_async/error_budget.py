"""ErrorBudget: one kind of trouble of one run (bad frames, failing hooks), bounded however often
it happens: the first few kept whole, the rest only counted per kind, and logged sparingly."""

from __future__ import annotations

from typing import Any

from lute_async.logs import get_logger

__all__ = ["KEPT_ERRORS", "ErrorBudget"]

#: Errors of one kind of trouble passed on whole (to the record and the log); later ones are
#: counted. Enough to diagnose a buggy task or hook, small enough that a flood costs nothing.
KEPT_ERRORS = 20


class ErrorBudget:
    """Counts a run's errors of one sort (``what``); :meth:`add` says whether to keep one whole.

    Past the first ``kept``, errors are counted per kind in :attr:`dropped`, and one
    ``<what>_dropped`` warning is logged each time the number dropped reaches a power of ten
    (1, 10, 100, ...): a flood of N errors logs about ``kept + log10(N)`` lines.
    """

    __slots__ = ("dropped", "kept", "run_id", "total", "what")

    def __init__(self, what: str, run_id: str, kept: int = KEPT_ERRORS) -> None:
        self.what = what
        self.run_id = run_id
        self.kept = kept
        self.total = 0
        #: Errors not kept, by kind.
        self.dropped: dict[str, int] = {}

    def add(self, kind: str, **last: Any) -> bool:
        """Count an error of ``kind``; True when it is among the first ``kept`` and should be
        passed on whole. ``last`` describes it for the sparse log line of dropped ones."""
        self.total += 1
        if self.total <= self.kept:
            return True
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        count = self.total - self.kept
        if count == 10 ** (len(str(count)) - 1):  # 1, 10, 100, ...
            get_logger().warning(
                f"{self.what}_dropped",
                run_id=self.run_id,
                kept=self.kept,
                dropped=count,
                by_kind=dict(self.dropped),
                **last,
            )
        return False

    def summary(self) -> dict[str, Any] | None:
        """For the record once errors were dropped: ``{"total", "kept", "dropped"}``, the
        last a count per kind; None while every error was passed on."""
        if not self.dropped:
            return None
        return {"total": self.total, "kept": self.kept, "dropped": dict(self.dropped)}
