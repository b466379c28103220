"""``lute-async emit``: send events from inside a task, paying little more than Python's start.

Shell tasks may emit once per item, so this path imports only :mod:`lute_async.task` and C
modules: not click (the console script dispatches ``emit`` here first), not ``json`` (it loads
``re`` and ``enum``, half of a bare interpreter's start). The click command in
:mod:`lute_async.cli.tasks` (``--help``, and any argument shape :func:`run` does not take)
calls the same functions.

``--batch`` reads one event a line from stdin, each a JSON object
``{"event": "progress", "data": 0.5}`` (``data`` optional, as DATA on the command line); every
good line is sent, each bad one is reported with its line number and makes the exit code 2.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs every emit milliseconds
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    from lute_async.task import Reporter

#: Bad usage or input: cli.common.EXIT_USAGE, which cannot be imported here (it loads click).
EXIT_USAGE = 2
_WHITESPACE = " \t\n\r"


class EmitError(Exception):
    """What stops an emit, as the one line ``lute-async: error: ...`` says it."""


class _JsonContext:
    """The settings ``_json.make_scanner`` reads, as :func:`json.loads` passes them."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int

    @staticmethod
    def parse_constant(name: str) -> float:
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}[name]


def parse_json(text: str) -> Any:
    """``json.loads(text)`` by the json module's own C scanner, without importing ``json``."""
    try:
        from _json import make_scanner
    except ImportError:  # an interpreter without the C accelerator
        import json

        return json.loads(text)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        # typeshed types the context as a scanner; the C scanner reads only these settings
        value, end = make_scanner(_JsonContext())(text, start)  # type: ignore[arg-type]
    except StopIteration:
        raise ValueError(f"expecting a JSON value at char {start}") from None
    if text[end:].strip(_WHITESPACE):
        raise ValueError(f"extra data after the JSON value at char {end}")
    return value


def parse_data(text: str | None) -> Any:
    """DATA from the command line: JSON when it parses, else the text itself (a bare word or
    sentence is sent as a string)."""
    if text is None:
        return None
    try:
        return parse_json(text)
    except ValueError:
        return text


def check(event: str, value: Any) -> None:
    """Refuse a ``progress`` whose fraction is no number before anything is sent."""
    if event == "progress" and isinstance(value, dict):
        fraction = value.get("fraction", 0.0)
        if not _is_number(fraction):
            raise EmitError(
                f"cannot emit 'progress': its fraction must be a number, got {fraction!r}"
            )


def connect(what: str) -> Reporter:
    """A reporter on a channel of its own to the executor running this task (``what`` names
    what cannot be emitted if there is none)."""
    from lute_async.task import Reporter

    try:
        return Reporter.connect(prefer=("socket", "tcp", "pipe"), required=True)
    except OSError as exc:
        raise EmitError(
            f"cannot emit {what}: the executor's channel is unreachable: {exc}"
        ) from exc
    except Exception as exc:
        from lute_async.errors import NotInExecutorError  # loaded only when it is raised

        if not isinstance(exc, NotInExecutorError):
            raise
        raise EmitError(f"cannot emit {what}: {exc}") from exc


def send(reporter: Reporter, event: str, value: Any) -> None:
    """Send one event the way its name asks: a number or a dict as ``progress``, a string as a
    ``log`` line, the ``result``, or any other event with ``value`` as its data."""
    if event == "progress" and _is_number(value):
        reporter.progress(float(value))
    elif event == "progress" and isinstance(value, dict):
        reporter.progress(float(value.get("fraction", 0.0)), str(value.get("message", "")))
    elif event == "log" and isinstance(value, str):
        reporter.log(value)
    elif event == "result":
        reporter.result(value)
    else:
        reporter.emit(event, value)  # written at once when the channel was quiet, or on close


def emit_one(event: str, data: str | None) -> None:
    """``lute-async emit EVENT [DATA]``."""
    value = parse_data(data)
    check(event, value)
    with connect(repr(event)) as reporter:
        send(reporter, event, value)


def emit_batch(lines: Iterable[bytes]) -> int:
    """``lute-async emit --batch``: one event per line of ``lines``, every good one sent; the
    exit code is 2 when some line was bad (each is named on stderr with its line number)."""
    bad = 0
    with connect("the --batch events") as reporter:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                event, value = _batch_event(line)
                check(event, value)
            except (EmitError, ValueError) as exc:
                bad += 1
                sys.stderr.write(f"lute-async: error: line {number}: {exc}\n")
                continue
            send(reporter, event, value)
    if bad:
        sys.stderr.write(f"lute-async: error: {bad} bad line(s) not sent\n")
        return EXIT_USAGE
    return 0


def _batch_event(line: bytes) -> tuple[str, Any]:
    """The event name and data of one ``--batch`` line."""
    try:
        item = parse_json(line.decode())
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(item, dict):
        raise ValueError(f'expected {{"event": NAME, "data": ...}}, got {type(item).__name__}')
    event = item.get("event")
    if not isinstance(event, str) or not event:
        raise ValueError('"event" must be a non-empty string')
    extra = set(item) - {"event", "data"}
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)} (only event and data)")
    return event, item.get("data")


def run(args: list[str]) -> int | None:
    """The light ``lute-async emit ARGS``: the exit code, or None for an argument shape it
    leaves to click (options, ``--help``, a wrong count), whose messages stay click's."""
    batch = args == ["--batch"]
    if not batch and (not 1 <= len(args) <= 2 or any(arg.startswith("-") for arg in args)):
        return None
    try:
        if batch:
            return emit_batch(sys.stdin.buffer)
        emit_one(args[0], args[1] if len(args) == 2 else None)
    except EmitError as exc:
        sys.stderr.write(f"lute-async: error: {exc}\n")
        return EXIT_USAGE
    return 0


def _is_number(value: Any) -> bool:
    """An int or float from JSON (``true`` is not a number here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
