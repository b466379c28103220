"""Live display of runs for the CLI: a rich progress bar per running task on a terminal, plain
lines otherwise, and a table of records.

:class:`LiveDisplay` is a hook (``executor.on("*", display)``): it sees every event of every run.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lute_async.app.text import visible

if TYPE_CHECKING:
    from lute_async.hooks.registry import Event
    from lute_async.records import AnalysisRecord

STATUS_STYLES = {
    "COMPLETED": "green",
    "FAILED": "red",
    "TIMEDOUT": "yellow",
    "CANCELLED": "magenta",
    "LOST": "red",
    "RUNNING": "cyan",
    "PENDING": "dim",
    "QUEUED": "dim",
    "STOPPED": "yellow",
}
TERMINAL_WORDS = {
    "done": "COMPLETED",
    "failed": "FAILED",
    "timed_out": "TIMEDOUT",
    "cancelled": "CANCELLED",
}


def safe(text: object, *, newlines: bool = False) -> str:
    """``text`` ready for rich markup: control characters shown (:func:`visible`), markup
    escaped. Everything a task sent goes through here before it is printed."""
    return escape(visible(str(text), newlines=newlines))


def short(data: Any, width: int = 100) -> str:
    """One line of JSON for an event's data, cut to ``width`` characters."""
    if isinstance(data, bytes | bytearray):
        data = repr(bytes(data[:width]))  # not the repr of a whole (maybe huge) binary result
    text = data if isinstance(data, str) else json.dumps(data, default=repr, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


class LiveDisplay:
    """Shows events as they happen: bars for progress, lines for logs, results and status."""

    def __init__(self, file: IO[str], *, live: bool | None = None, show_logs: bool = True) -> None:
        self.console = make_console(file)
        self.live = self.console.is_terminal if live is None else live
        self.show_logs = show_logs
        self._progress = Progress(
            TextColumn("[bold]{task.fields[run]}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TextColumn("{task.description}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._bars: dict[str, TaskID] = {}
        self._live: Live | None = None

    def __enter__(self) -> LiveDisplay:
        if self.live:
            self._live = Live(self._progress, console=self.console, refresh_per_second=10)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def __call__(self, event: Event) -> None:
        name, run, data = event.name, event.run, event.data
        label = f"{run.name}"
        if name == "progress":
            self._on_progress(run.id, label, data)
        elif name == "log":
            if self.show_logs:
                message = data.get("message", "") if isinstance(data, dict) else str(data)
                stream = data.get("stream", "") if isinstance(data, dict) else ""
                style = "red" if stream == "stderr" else "dim" if stream == "stdout" else ""
                self._line(label, f"[{style}]{safe(message)}[/]" if style else safe(message))
        elif name == "started":
            pid = data.get("pid") if isinstance(data, dict) else None
            self._line(label, "[cyan]RUNNING[/]" + (f" pid {pid}" if pid else ""))
        elif name in ("queued", "stopped", "continued"):
            status = {"queued": "QUEUED", "stopped": "STOPPED", "continued": "RUNNING"}[name]
            job = data.get("slurm_job_id") if isinstance(data, dict) else None
            self._line(label, f"[yellow]{status}[/]" + (f" job {job}" if job else ""))
        elif name == "result":
            payload = data.get("payload") if isinstance(data, dict) else data
            summary = data.get("summary") if isinstance(data, dict) else None
            text = short(payload) + (f"  ({summary})" if summary else "")
            self._line(label, f"[bold green]result[/] {safe(text)}")
        elif name in TERMINAL_WORDS:
            self._finish(run.id)
            status = TERMINAL_WORDS[name]
            error = data.get("error") if isinstance(data, dict) else None
            detail = f": {error.get('message')}" if isinstance(error, dict) else ""
            style = STATUS_STYLES[status]
            self._line(label, f"[bold {style}]{status}[/]{safe(detail)}")
        elif name == "retrying" and isinstance(data, dict):
            self._finish(run.id)
            error = data.get("error")
            why = f": {error.get('message')}" if isinstance(error, dict) else ""
            attempt, reason, delay = data.get("attempt"), data.get("reason"), data.get("delay")
            text = f"attempt {attempt} {reason}{why}; the next in {delay} s"
            self._line(label, f"[yellow]RETRYING[/] {safe(text)}")
        elif name == "error":
            message = data.get("message") if isinstance(data, dict) else data
            kind = data.get("type", "error") if isinstance(data, dict) else "error"
            self._line(label, f"[red]{safe(kind)}: {safe(message)}[/]")
        else:
            self._line(label, f"[blue]{safe(name)}[/] {safe(short(data))}")

    def _on_progress(self, run_id: str, label: str, data: Any) -> None:
        fraction = float(data.get("fraction", 0.0)) if isinstance(data, dict) else 0.0
        message = str(data.get("message", "")) if isinstance(data, dict) else ""
        if not self.live:
            self._line(label, f"progress {fraction:4.0%} {safe(message)}".rstrip())
            return
        bar = self._bars.get(run_id)
        if bar is None:
            bar = self._bars[run_id] = self._progress.add_task("", total=1.0, run=safe(label))
        self._progress.update(bar, completed=fraction, description=safe(message))

    def _finish(self, run_id: str) -> None:
        bar = self._bars.pop(run_id, None)
        if bar is not None:
            self._progress.remove_task(bar)

    def _line(self, label: str, text: str) -> None:
        stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
        self.console.print(f"[dim]{stamp}[/] [bold]{safe(label)}[/] {text}")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _short_when(ts: float | None) -> str:
    if not ts:
        return "-"
    moment = datetime.fromtimestamp(ts)
    same_day = moment.date() == datetime.now().date()
    return moment.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M")


def _duration(record: AnalysisRecord) -> str:
    seconds = record.duration
    if seconds is None and record.started_at is not None and not record.is_terminal:
        seconds = time.time() - record.started_at
    return f"{seconds:.2f}s" if seconds is not None else "-"


def outcome(record: AnalysisRecord) -> str:
    """The one-line gist of how a run ended: its result summary, payload or error."""
    if record.result is not None:
        summary = record.result.get("summary")
        omitted = record.result.get("omitted")
        if isinstance(omitted, dict):  # too large to record: RecordStore kept a description
            described = f"payload not recorded: {omitted.get('type')}, {omitted.get('size')} bytes"
            return f"{summary} [{described}]" if summary else described
        return str(summary) if summary else short(record.result.get("payload"), 60)
    if record.error:
        return str(record.error.get("message", ""))
    if record.exit_code is not None:
        return f"exit code {record.exit_code}"
    return ""


def records_table(records: list[AnalysisRecord], *, title: str | None = None) -> Table:
    """A table of runs: id, name, status, start, duration, exit code and outcome."""
    table = Table(title=title, header_style="bold")
    table.add_column("id", no_wrap=True)
    table.add_column("name", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("submitted", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("exit", justify="right", no_wrap=True)
    table.add_column("result / error", overflow="fold", ratio=1)
    for record in records:
        style = STATUS_STYLES.get(record.status, "")
        exit_text = "-" if record.exit_code is None else str(record.exit_code)
        if record.signal is not None:
            exit_text = f"sig {record.signal}"
        table.add_row(
            record.id[:8],
            safe(record.name),
            f"[{style}]{record.status}[/]" if style else safe(record.status),
            _short_when(record.submitted_at),
            _duration(record),
            exit_text,
            safe(outcome(record)),
        )
    return table


def make_console(file: IO[str] | None = None) -> Console:
    """A console for ``file`` (stdout by default); wide enough for tables when not a terminal."""
    console = Console(file=file, highlight=False, soft_wrap=True, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120
    return console


def attempt_line(entry: Any) -> str:
    """One attempt of a retried run in a line: ``#2 FAILED exit code 3 (failed) at ...``."""
    if not isinstance(entry, dict):
        return repr(entry)
    parts = [f"#{entry.get('attempt')}", str(entry.get("status"))]
    if entry.get("signal") is not None:
        parts.append(f"signal {entry['signal']}")
    elif entry.get("exit_code") is not None:
        parts.append(f"exit code {entry['exit_code']}")
    error = entry.get("error")
    if isinstance(error, dict) and error.get("message"):
        parts.append(f"- {error['message']}")
    started, ended = entry.get("started_at"), entry.get("ended_at")
    parts.append(f"{_short_when(started)} -> {_short_when(ended)}")
    if entry.get("delay") is not None:
        parts.append(f"retried ({entry.get('reason')}) after {entry['delay']:g} s")
    return " ".join(parts)


def record_details(record: AnalysisRecord) -> Table:
    """Every field of one run as a two-column table."""
    table = Table(show_header=False, box=None, padding=(0, 1))
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for key, value in record.to_dict().items():
        if key in ("submitted_at", "started_at", "ended_at") and value:
            text = f"{_when(value)} ({value:.3f})"
        elif key == "env" and isinstance(value, dict):
            text = f"{len(value)} variables (secrets redacted; --json shows them)"
        elif key == "attempts" and value:
            text = "\n".join(attempt_line(entry) for entry in value)
        elif isinstance(value, dict | list):
            if not value:
                continue
            text = json.dumps(value, indent=2, default=repr)
        elif value is None:
            continue
        else:
            text = str(value)
        if key == "status":
            style = STATUS_STYLES.get(str(value), "")
            table.add_row(key, f"[{style}]{text}[/]" if style else safe(text))
        else:
            table.add_row(safe(key), safe(text, newlines=True))
    return table
