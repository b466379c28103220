"""Retry: how often a run is tried again, after how long, and for which endings.

A run with a ``retry`` is one run (one id, one record) of up to ``attempts`` attempts. When an
attempt ends in one of the endings ``on`` names, the run waits ``delay(n)`` seconds (exponential
backoff: ``backoff * multiplier ** (n - 1)``, at most ``max_delay``) and starts the next attempt;
the run's status is its last attempt's. The endings a run can be retried for:

* ``failed``: a non-zero exit, a signal, an error the task or the launcher reported;
* ``timed_out``: the attempt ran past its ``timeout`` (each attempt has the whole timeout);
* ``lost``: the process or job was lost (a SLURM job no source knows, NODE_FAIL, BOOT_FAIL,
  PREEMPTED).

Never retried, whatever ``on`` says: a completed or cancelled run, a launch error (a missing
executable, a bad working directory, a refused batch script: no retry can fix those), an end
the run's own limits imposed (``output_bytes``), a ``before`` step that failed or skipped.

:class:`Retry` checks its values when made, with the same rule as a ``retry = {...}`` table in a
task or graph file (both are converted to :class:`RetryTable`).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Annotated, Any, Final, Literal

import msgspec

from lute_async.errors import ConfigError

__all__ = ["RETRY_ENDINGS", "RETRY_EXPECTED", "RETRY_PARTS", "Retry", "RetryTable", "reason_for"]

#: The endings a run may be retried for, in the order they are documented.
RETRY_ENDINGS: Final = ("failed", "timed_out", "lost")
#: Error types of a ``failed`` ending that mean the process or job was lost, not that it failed.
LOST_ERRORS: Final = frozenset({"SlurmJobLost", "NodeFail", "BootFail", "Preempted"})

_FINITE = sys.float_info.max
Ending = Literal["failed", "timed_out", "lost"]


class RetryTable(msgspec.Struct, forbid_unknown_fields=True):
    """A ``retry`` table as written (``retry = {attempts = 3, backoff = 1.0}``), checked."""

    attempts: Annotated[int, msgspec.Meta(gt=0)] = 3
    backoff: Annotated[float, msgspec.Meta(ge=0, le=_FINITE)] = 1.0
    multiplier: Annotated[float, msgspec.Meta(ge=1, le=_FINITE)] = 2.0
    max_delay: Annotated[float, msgspec.Meta(ge=0, le=_FINITE)] = 60.0
    on: list[Ending] = msgspec.field(default_factory=lambda: list(RETRY_ENDINGS))


#: What each key of a retry table must be, for error messages.
RETRY_PARTS: Final = {
    "attempts": "a positive integer (attempts in all, the first included)",
    "backoff": "a number of seconds >= 0",
    "multiplier": "a number >= 1",
    "max_delay": "a number of seconds >= 0",
    "on": "a list of " + ", ".join(repr(ending) for ending in RETRY_ENDINGS),
}
RETRY_EXPECTED: Final = "a Retry or a table with " + ", ".join(RETRY_PARTS)


@dataclass(frozen=True, slots=True)
class Retry:
    """Try a run up to ``attempts`` times in all, waiting between attempts (see the module).

    A bad value (``attempts=0``, a negative ``backoff``, an unknown ending in ``on``) is a
    :class:`~lute_async.errors.ConfigError` naming it, raised here.
    """

    attempts: int = 3
    backoff: float = 1.0
    multiplier: float = 2.0
    max_delay: float = 60.0
    on: tuple[str, ...] = RETRY_ENDINGS

    def __post_init__(self) -> None:
        values = self.to_dict()
        try:  # the one rule: the table type a task file's ``retry`` is converted to
            table = msgspec.convert(values, RetryTable)
        except msgspec.ValidationError as exc:
            raise _explain(values, str(exc)) from None
        for name in ("backoff", "multiplier", "max_delay"):
            object.__setattr__(self, name, getattr(table, name))  # ints become floats
        object.__setattr__(self, "on", tuple(dict.fromkeys(table.on)))

    @classmethod
    def from_table(cls, table: RetryTable) -> Retry:
        """The Retry a checked table describes."""
        return cls(**{f.name: getattr(table, f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        """The retry as a table of plain values (what the record keeps)."""
        values: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        on = values["on"]
        values["on"] = list(on) if isinstance(on, Sequence) and not isinstance(on, str) else on
        return values

    def delay(self, attempt: int) -> float:
        """Seconds to wait after attempt number ``attempt`` (1 for the first) ended."""
        delay: float = self.backoff * self.multiplier ** (attempt - 1)
        return min(delay, self.max_delay)

    def retries(self, ending: str | None, attempt: int) -> bool:
        """Whether an attempt ``attempt`` that ended for ``ending`` (see :func:`reason_for`)
        is followed by another."""
        return ending is not None and ending in self.on and attempt < self.attempts


def _explain(values: Mapping[str, Any], detail: str) -> ConfigError:
    """A ConfigError naming the key of ``values`` that msgspec's ``detail`` is about."""
    found = re.search(r"at `\$\.(\w+)", detail)
    if found is None or found.group(1) not in RETRY_PARTS:
        return ConfigError(f"key 'retry': expected {RETRY_EXPECTED}, got {dict(values)!r}")
    name = found.group(1)
    return ConfigError(f"key 'retry.{name}': expected {RETRY_PARTS[name]}, got {values[name]!r}")


def reason_for(event: str, error: Mapping[str, Any] | None) -> str | None:
    """The retry ending of an attempt that ended with terminal ``event`` and ``error``:
    ``failed``, ``timed_out``, ``lost``, or None for one no retry is for (done, cancelled)."""
    if event == "timed_out":
        return "timed_out"
    if event != "failed":
        return None
    if isinstance(error, Mapping) and error.get("type") in LOST_ERRORS:
        return "lost"
    return "failed"
