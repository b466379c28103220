"""The run record: what ran, how and how it ended (:class:`AnalysisRecord`), in plain JSON types."""

from __future__ import annotations

import dataclasses
import enum
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Self

from lute_async.hostname import hostname
from lute_async.status import TERMINAL_STATUSES, status_value

__all__ = [
    "MAX_NESTING",
    "AnalysisRecord",
    "UnserialisableValue",
    "default_db_path",
    "new_run_id",
    "to_jsonable",
    "to_jsonable_or_summary",
    "unserialisable_summary",
]


def default_db_path() -> Path:
    """Return where runs are recorded by default: ``$LUTE_ASYNC_DB`` or the user data dir."""
    configured = os.environ.get("LUTE_ASYNC_DB")
    if configured:
        return Path(configured).expanduser()
    import platformdirs  # imported here: only needed when no database path was given

    return platformdirs.user_data_path("lute-async") / "runs.db"


def new_run_id() -> str:
    """A fresh, unique run id: a random (version 4) UUID's 32 hex digits, made from the 16
    random bytes directly (``uuid.uuid4().hex`` builds a UUID object and an int first)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC 4122 variant
    return raw.hex()


MAX_NESTING: Final = 128
"""The deepest nesting of lists and mappings a record keeps; deeper values are summarised."""


class UnserialisableValue(ValueError):
    """A value cannot become plain JSON types: nested too deep, or its conversion failed."""


def to_jsonable(value: Any, keep_bytes: bool = False) -> Any:
    """Convert *value* to plain JSON types: enums, paths, tuples, sets, bytes, numpy values...

    With *keep_bytes*, bytes-like values become ``bytes`` instead of text (for msgpack).
    :class:`UnserialisableValue` when it is nested deeper than :data:`MAX_NESTING` levels (or
    is cyclic); whatever a conversion raises (a ``tolist`` or ``repr`` that fails) passes.
    """
    return _plain(value, keep_bytes, 0)


#: Values of exactly these types are stored as they are (a subclass goes the long way: a str
#: subclass becomes a plain str).
PLAIN_TYPES: Final = frozenset({str, int, float, bool, type(None)})


_STR_ONLY: Final = frozenset({str})
_DICT_ONLY: Final = frozenset({dict})


def _all_plain(items: list[Any]) -> bool:
    """Whether every item is of exactly a plain type (a check in C, no call per item)."""
    return PLAIN_TYPES.issuperset(map(type, items))


def _flat(table: dict[Any, Any]) -> bool:
    """Whether every key is exactly a str and every value of exactly a plain type."""
    return _STR_ONLY.issuperset(map(type, table)) and PLAIN_TYPES.issuperset(
        map(type, table.values())
    )


def _plain(value: Any, keep_bytes: bool, depth: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if depth >= MAX_NESTING:
        raise UnserialisableValue(f"nested deeper than {MAX_NESTING} levels")
    # The usual containers of a record (argv, env, extra's flat dicts) hold plain values
    # only: copied in one step instead of one call per item (three saves a run).
    kind = type(value)
    if kind is list:
        if _all_plain(value):
            return list(value)
        if _DICT_ONLY.issuperset(map(type, value)) and depth + 1 < MAX_NESTING:
            # A list of flat tables (a record's communicators): each copied in one step too.
            copies = [dict(item) for item in value if _flat(item)]
            if len(copies) == len(value):
                return copies
    elif kind is dict and _flat(value):
        return dict(value)
    depth += 1
    if isinstance(value, enum.Enum):
        return _plain(value.value, keep_bytes, depth)
    if isinstance(value, Mapping):
        return {
            (key if isinstance(key, str) else str(_plain(key, False, depth))): _plain(
                item, keep_bytes, depth
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_plain(item, keep_bytes, depth) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((_plain(item, keep_bytes, depth) for item in value), key=repr)
    if isinstance(value, bytes | bytearray | memoryview):
        if keep_bytes:
            return bytes(value)  # no copy for bytes itself
        return bytes(value).decode("utf-8", errors="backslashreplace")
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _plain(fields, keep_bytes, depth)
    tolist = getattr(value, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return _plain(tolist(), keep_bytes, depth)
    return repr(value)


def unserialisable_summary(value: Any, error: BaseException) -> dict[str, Any]:
    """What is recorded in place of a value :func:`to_jsonable` refused: its type, its size
    (items at the top level, None when unsized) and the reason."""
    try:
        size: int | None = len(value)
    except Exception:  # any object's __len__ may fail
        size = None
    reason = str(error) if isinstance(error, UnserialisableValue) else repr(error)[:200]
    return {"omitted": {"type": type(value).__name__, "size": size, "reason": reason}}


def to_jsonable_or_summary(value: Any, keep_bytes: bool = False) -> Any:
    """:func:`to_jsonable` of *value*, or its :func:`unserialisable_summary` when that fails;
    a mapping is converted key by key, so one bad value does not hide its siblings. Never
    raises for a value a task sent (too deep, cyclic, a failing conversion)."""
    kind = type(value)
    if kind in PLAIN_TYPES:  # None, a number, a string: as _plain returns them
        return value
    # A record's usual fields (argv, params, launcher, usage...) hold plain values only:
    # copied in one step, as _plain would (three saves a run, a dozen such fields each).
    if kind is dict and _flat(value):
        return dict(value)
    if kind is list and _all_plain(value):
        return list(value)
    try:
        if isinstance(value, Mapping):
            return {
                (key if isinstance(key, str) else str(to_jsonable(key))): _jsonable_or_summary(
                    item, keep_bytes
                )
                for key, item in value.items()
            }
    except Exception as exc:  # a key that fails, a mapping that cannot iterate
        return unserialisable_summary(value, exc)
    return _jsonable_or_summary(value, keep_bytes)


def _jsonable_or_summary(value: Any, keep_bytes: bool) -> Any:
    try:
        return to_jsonable(value, keep_bytes)
    except Exception as exc:  # RecursionError, a failing tolist or repr...
        return unserialisable_summary(value, exc)


@dataclass(slots=True, kw_only=True)
class AnalysisRecord:
    """One run, as recorded: its definition, where and how it ran, and how it ended.

    ``env`` must already be redacted by whoever builds the record (see
    :func:`lute_async.redaction.redact_env`); :meth:`RecordStore.save` redacts it again anyway.
    """

    name: str
    id: str = field(default_factory=new_run_id)
    command: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    communicators: list[dict[str, Any]] = field(default_factory=list)
    launcher: dict[str, Any] = field(default_factory=dict)
    status: str = "PENDING"
    result: dict[str, Any] | None = None
    """``{"payload": ..., "summary": ...}`` once the task reported a result."""
    exit_code: int | None = None
    signal: int | None = None
    error: dict[str, Any] | None = None
    """``{"type": ..., "message": ..., "traceback": ...}`` when the run failed."""
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    ended_at: float | None = None
    host: str = field(default_factory=hostname)
    """Host the task ran on (the first node for multi-node runs)."""
    pid: int | None = None
    """The task's pid (rank 0, or the launcher process for MPI and SLURM)."""
    executor_pid: int = field(default_factory=os.getpid)
    executor_host: str = field(default_factory=hostname)
    slurm_job_id: str | None = None
    ranks: int | None = None
    hook_errors: list[dict[str, Any]] = field(default_factory=list)
    """One ``{"event", "hook", "type", "message", "traceback"}`` per hook that raised."""
    tags: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    """Resource usage at exit (cpu times, max rss...)."""
    verdict: dict[str, Any] | None = None
    """``{"kind": ..., "detail": ...}``: why the run ended the way it did."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Launcher-specific facts: slurm_state, node_list, batch_script, launch_command..."""
    cwd: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    """Runs with a ``retry``: one ``{"attempt", "status", "reason", "exit_code", "signal",
    "error", "verdict", "started_at", "ended_at", "delay", "next_at"}`` per attempt, in order
    (``next_at``: when the next attempt starts, None for the last)."""

    def __post_init__(self) -> None:
        self.status = status_value(self.status)

    @property
    def is_terminal(self) -> bool:
        """Whether the run has ended for good (COMPLETED, FAILED, CANCELLED, TIMEDOUT, LOST)."""
        return self.status in TERMINAL_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, or None until the run has both started and ended."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a new dict of plain JSON types (a deep copy); a value that
        cannot be converted is replaced by its :func:`unserialisable_summary`."""
        document: dict[str, Any] = {
            f.name: to_jsonable_or_summary(getattr(self, f.name)) for f in dataclasses.fields(self)
        }
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Build a record from :meth:`to_dict` output, ignoring keys this version doesn't know.

        Unknown keys (written by a newer version) are dropped and missing ones take their
        defaults, so rows written by older and newer versions both load.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in data.items() if key in known}
        values.setdefault("name", "")
        return cls(**values)
