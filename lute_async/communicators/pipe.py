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
    Batch,
    ChildSetup,
    FrameConnection,
    LineSplitter,
    RunChannel,
)
from lute_async.communicators.callback_reads import CallbackReads, Decode
from lute_async.communicators.fdio import set_nonblocking
from lute_async.communicators.readers import Readers, serve_on_demand
from lute_async.errors import ProtocolError
from lute_async.wire import ENV_FD


class PipeCommunicator:
    """Frames over an inherited pipe; stdout and stderr captured line by line."""

    kind = "pipe"
    reads_on_demand = True

    def __init__(self, *, capture_output: bool = True) -> None:
        self.capture_output = capture_output
        self._channel: RunChannel | None = None
        self._read_fds: list[tuple[int, str]] = []
        self._child_fds: list[int] = []
        self._frame_fd: int | None = None
        self._reads: CallbackReads | None = None

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

    def read_with(self, readers: Readers) -> None:
        """Read the frame pipe, stdout and stderr in the loop's reader callbacks, counted in
        ``readers`` until all three are at their end (pipes end by themselves: EOF comes once
        every process holding a write end is gone)."""
        decoders = {
            fd: self._frames(fd) if source == "pipe" else self._lines(source)
            for fd, source in self._read_fds
        }
        self._reads = CallbackReads(decoders, self._channel_or_raise().send, readers)

    def exited(self) -> None:
        """Nothing to do at the exit: the pipes' ends say when all is read."""

    async def serve(self, exited: asyncio.Event) -> None:
        await serve_on_demand(self, exited)

    def _channel_or_raise(self) -> RunChannel:
        if self._channel is None:
            raise RuntimeError("the pipe communicator is not open")
        return self._channel

    def _frames(self, fd: int) -> Decode:
        channel = self._channel_or_raise()
        parser = FrameConnection(channel, "pipe", require_secret=False)

        def decode(chunk: bytes | memoryview) -> tuple[list[Batch], bool]:
            if not chunk:
                parser.finish()
                return [], False
            # At most BATCH_BYTES (CallbackReads slices larger reads): one batch.
            batch = parser.feed(chunk)
            batches = [batch] if batch else []
            try:
                parser.raise_fatal()
            except ProtocolError as exc:  # fatal for the stream: read no more of it
                channel.protocol_error(parser.source, parser.conn, exc)
                return batches, False
            return batches, True

        return decode

    def _lines(self, source: str) -> Decode:
        channel = self._channel_or_raise()
        splitter = LineSplitter(source, channel.next_conn())
        on_output = channel.on_output

        def decode(chunk: bytes | memoryview) -> tuple[list[Batch], bool]:
            if not chunk:
                tail = splitter.finish()
                return ([tail] if tail else []), False
            if on_output is not None and not on_output(len(chunk)):
                return [], True  # over the output limit: count and discard, keep it drained
            batch = splitter.feed(chunk if type(chunk) is bytes else bytes(chunk))
            return ([batch] if batch else []), True

        return decode

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "fd": self._frame_fd, "capture_output": self.capture_output}

    async def aclose(self) -> None:
        self.close_now()

    def close_now(self) -> None:
        """Release the pipes at once (nothing to wait for)."""
        self.child_started()
        if self._reads is not None:  # its reader callbacks go before the descriptors
            self._reads.cancel()
            self._reads = None
        for fd, _ in self._read_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._read_fds.clear()
