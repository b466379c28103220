"""PipeCommunicator: a dedicated frame pipe (``LUTE_ASYNC_FD``) plus stdout/stderr as log lines.

The frame pipe is separate from the task's output, so nothing a task prints can be decoded as
a frame: every byte on stdout/stderr becomes a ``log`` message and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from lute_async.communicators.base import (
    ChildSetup,
    FrameConnection,
    LineSplitter,
    RunChannel,
    send_batch,
)
from lute_async.communicators.base import _deliver as deliver
from lute_async.communicators.fdio import OnChunk, read_until_eof, set_nonblocking
from lute_async.errors import ProtocolError
from lute_async.wire import ENV_FD


class PipeCommunicator:
    """Frames over an inherited pipe; stdout and stderr captured line by line."""

    kind = "pipe"

    def __init__(self, *, capture_output: bool = True) -> None:
        self.capture_output = capture_output
        self._channel: RunChannel | None = None
        self._read_fds: list[tuple[int, str]] = []
        self._child_fds: list[int] = []
        self._frame_fd: int | None = None

    async def open(self, channel: RunChannel) -> ChildSetup:
        self._channel = channel
        frames_r, frames_w = os.pipe()
        self._add(frames_r, frames_w, "pipe")
        self._frame_fd = frames_w
        setup = ChildSetup(
            env={ENV_FD: f"{frames_w}:{os.fstat(frames_w).st_ino}"}, pass_fds=(frames_w,)
        )
        if self.capture_output:
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            self._add(out_r, out_w, "stdout")
            self._add(err_r, err_w, "stderr")
            setup.stdout, setup.stderr = out_w, err_w
        return setup

    def _add(self, read_fd: int, write_fd: int, source: str) -> None:
        set_nonblocking(read_fd)
        self._read_fds.append((read_fd, source))
        self._child_fds.append(write_fd)

    def child_started(self) -> None:
        # The child's ends: nothing here ever waits on them, so no event-loop notice first.
        for fd in self._child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child_fds.clear()

    async def serve(self, exited: asyncio.Event) -> None:
        # Pipes end by themselves: EOF arrives once every process holding the write end is
        # gone. The frame pipe, stdout and stderr are all read by this one task.
        readers = {
            fd: self._frames(fd) if source == "pipe" else self._lines(source)
            for fd, source in self._read_fds
        }
        await read_until_eof(readers)

    def _frames(self, fd: int) -> OnChunk:
        channel = self._channel
        assert channel is not None
        parser = FrameConnection(channel, "pipe", require_secret=False)

        async def on_chunk(chunk: bytes) -> bool:
            if not chunk:
                parser.finish()
                return False
            try:
                await deliver(memoryview(chunk), parser, channel.send)
            except ProtocolError as exc:  # fatal for the stream: read no more of it
                channel.protocol_error(parser.source, parser.conn, exc)
                return False
            return True

        return on_chunk

    def _lines(self, source: str) -> OnChunk:
        channel = self._channel
        assert channel is not None
        splitter = LineSplitter(source, channel.next_conn())
        on_output = channel.on_output

        async def on_chunk(chunk: bytes) -> bool:
            if not chunk:
                tail = splitter.finish()
                if tail:
                    await channel.send.send(tail)
                return False
            if on_output is not None and not on_output(len(chunk)):
                return True  # over the output limit: count and discard, keep the pipe drained
            batch = splitter.feed(chunk)
            if batch:
                await send_batch(channel.send, batch)
            return True

        return on_chunk

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "fd": self._frame_fd, "capture_output": self.capture_output}

    async def aclose(self) -> None:
        self.child_started()
        for fd, _ in self._read_fds:  # read_until_eof left no reader on them: no notice
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fds.clear()
