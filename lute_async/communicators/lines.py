"""Task output as text: stdout and stderr cut into lines, each line a ``log`` message."""

from __future__ import annotations

import time

from lute_async.messages import Message

#: Longest stdout/stderr line kept whole; longer ones are split into several log messages.
MAX_LINE = 1024 * 1024


class LineBuffer:
    """Cuts a byte stream into lines (without their newline); the last, unfinished line is
    held for the next chunk, and a line longer than :data:`MAX_LINE` is cut into pieces."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._partial + chunk if self._partial else chunk
        lines = data.split(b"\n")
        self._partial = lines.pop()
        while len(self._partial) > MAX_LINE:
            lines.append(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]
        return lines

    def finish(self) -> list[bytes]:
        """At end of stream: the unfinished last line, if any."""
        rest, self._partial = self._partial, b""
        return [rest] if rest else []


def line_text(raw: bytes) -> str:
    """One output line as text: invalid UTF-8 replaced, a CRLF's CR dropped."""
    return raw.decode("utf-8", "replace").rstrip("\r")


class LineSplitter:
    """Splits a byte stream (stdout or stderr) into ``log`` messages, one per line."""

    __slots__ = ("_lines", "_seq", "conn", "source")

    def __init__(self, source: str, conn: int) -> None:
        self.source = source
        self.conn = conn
        self._lines = LineBuffer()
        self._seq = 0

    def feed(self, chunk: bytes) -> list[Message]:
        return self._messages(self._lines.feed(chunk))

    def finish(self) -> list[Message]:
        return self._messages(self._lines.finish())

    def _messages(self, lines: list[bytes]) -> list[Message]:
        now = time.time()
        batch: list[Message] = []
        for raw in lines:
            self._seq += 1
            data = {"message": line_text(raw), "level": "info", "stream": self.source}
            batch.append(Message("log", data, self._seq, now, None, None, self.source, self.conn))
        return batch
