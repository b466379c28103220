"""Following a job's output and error files as ``log`` events."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import anyio

from lute_async.communicators.base import LineBuffer, line_text
from lute_async.launchers.base import Notify

#: A look at a running job's output file reads at most this many chunks of OUTPUT_READ bytes
#: (a job writing faster is caught up with at the next look, and wholly once it has ended).
OUTPUT_READ = 1024 * 1024
OUTPUT_CHUNKS_PER_LOOK = 8
#: The ``stream`` of log events carrying a job's output (stdout, and stderr unless the job
#: writes it to a file of its own, whose lines come as ERROR_STREAM).
OUTPUT_STREAM = "job_output"
ERROR_STREAM = "job_error"


class OutputFollower:
    """Hands on what a job has written to its output file since the last look, as ``log``
    events, one per line. The job follower looks each time it queries the scheduler and once
    more when the job has ended, so lines arrive in order and before the terminal event.

    SLURM writes the file on the batch host: the executor sees it through a shared filesystem
    (or on a single-node cluster); where it cannot, nothing is sent and the record still names
    the file.
    """

    def __init__(self, path: Path, notify: Notify, stream: str = OUTPUT_STREAM) -> None:
        self.path = path
        self.stream = stream
        self._notify = notify
        self._file: BinaryIO | None = None
        self._lines = LineBuffer()
        self._closed = False

    async def look(self, *, final: bool = False) -> None:
        """Send the complete lines written since the last look; ``final`` also sends an
        unfinished last line, reads to the end of the file and closes it."""
        chunks = 0
        while not self._closed and (final or chunks < OUTPUT_CHUNKS_PER_LOOK):
            chunk = await anyio.to_thread.run_sync(self._read)  # NFS reads may block
            if not chunk:
                break
            chunks += 1
            await self._send(self._lines.feed(chunk))
        if final:
            await self._send(self._lines.finish())
            self.close()

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None

    def _read(self) -> bytes:
        if self._file is None:
            try:
                self._file = open(self.path, "rb")  # noqa: SIM115 - held open across looks
            except OSError:
                return b""  # not written yet, or not visible from here
        return self._file.read(OUTPUT_READ)

    async def _send(self, lines: list[bytes]) -> None:
        for raw in lines:
            await self._notify(
                "log", {"message": line_text(raw), "level": "info", "stream": self.stream}
            )
