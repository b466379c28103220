"""ProtocolErrorLog: a run's protocol errors, bounded however many bad frames or connections
arrive: the first few kept whole, the rest only counted per kind, and logged sparingly."""

from __future__ import annotations

from typing import Any

from lute_async.errors import ProtocolError
from lute_async.logs import get_logger

#: Protocol errors of one run passed on whole (to the record and the log); later ones are
#: counted. Enough to diagnose a buggy task, small enough that a flood costs nothing.
KEPT_ERRORS = 20


class ProtocolErrorLog:
    """Counts a run's protocol errors; :meth:`add` says whether to pass one on whole.

    Past the first ``kept``, errors are counted per kind (the error's class name) in
    :attr:`dropped`, and one ``protocol_errors_dropped`` line is logged each time the number
    dropped reaches a power of ten (1, 10, 100, ...): a flood of N errors logs about
    ``kept + log10(N)`` lines.
    """

    __slots__ = ("dropped", "kept", "run_id", "total")

    def __init__(self, run_id: str, kept: int = KEPT_ERRORS) -> None:
        self.run_id = run_id
        self.kept = kept
        self.total = 0
        #: Errors not passed on, by kind.
        self.dropped: dict[str, int] = {}

    def add(self, source: str, error: ProtocolError) -> bool:
        """Count ``error``; True when it is among the first ``kept`` and should be passed on."""
        self.total += 1
        if self.total <= self.kept:
            return True
        kind = type(error).__name__
        self.dropped[kind] = self.dropped.get(kind, 0) + 1
        count = self.total - self.kept
        if count == 10 ** (len(str(count)) - 1):  # 1, 10, 100, ...
            get_logger().warning(
                "protocol_errors_dropped",
                run_id=self.run_id,
                kept=self.kept,
                dropped=count,
                by_kind=dict(self.dropped),
                last_source=source,
                last_error=str(error),
            )
        return False

    def summary(self) -> dict[str, Any] | None:
        """For the record once errors were dropped: ``{"total", "kept", "dropped"}``, the
        last a count per kind; None while every error was passed on."""
        if not self.dropped:
            return None
        return {"total": self.total, "kept": self.kept, "dropped": dict(self.dropped)}
