"""Channel: one run's stdout streamed into another run's stdin through the executor.

The executor holds at most ``buffer_size`` bytes of the stream at a time: it reads a chunk from
the producer's pipe only after the previous one was written to the consumer's, so a slow
consumer back-pressures the producer (which blocks on its full pipe) and memory stays bounded
whatever the volume. Every byte is counted; past ``limit`` the producer is ended with verdict
``output_limit``, the bytes up to the limit are delivered and the consumer sees end of file.

Use it with :meth:`Executor.run` / :meth:`Executor.start` (``stdout=channel`` on the producer,
``stdin=channel`` on the consumer, both running concurrently), or between workflow tasks with
``Channel(source=a.stdout, target=b.stdin)``. The producer's stderr is still captured as log
lines; its stdout is not.
"""

from __future__ import annotations

import asyncio
import errno
import os
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from lute_async.communicators.base import ChildSetup, RunChannel
from lute_async.communicators.fdio import close_fd, read_chunk, set_nonblocking
from lute_async.errors import LuteAsyncError

DEFAULT_BUFFER = 64 * 1024


class LimitedRun(Protocol):
    """The source run of a channel, as far as the channel needs it: something to end."""

    def end_for_limit(self, kind: str, detail: str) -> None: ...


class ChannelNode(Protocol):
    """A workflow task a channel end is given to: the channel sets its stdin/stdout option."""

    @property
    def options(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class PipeSetup(ChildSetup):
    """A ChildSetup that also gives the child its stdin."""

    stdin: int | None = None


class Channel:
    """A bounded, counted byte stream from one run's stdout to another run's stdin."""

    def __init__(
        self,
        source: tuple[ChannelNode, str] | None = None,
        target: tuple[ChannelNode, str] | None = None,
        *,
        buffer_size: int = DEFAULT_BUFFER,
        limit: int | None = None,
    ) -> None:
        if buffer_size <= 0:
            raise ValueError(f"Channel buffer_size must be positive, not {buffer_size}")
        self.buffer_size = buffer_size
        self.limit = limit
        #: Bytes delivered to the consumer so far.
        self.bytes = 0
        #: Set when the limit was exceeded: ``{"kind": "output_limit", "detail": ...}``.
        self.verdict: dict[str, Any] | None = None
        self._source: LimitedRun | None = None
        # The two pipes' fds while open: producer -> executor (src), executor -> consumer (dst).
        self._fds: dict[str, int] | None = None
        for end, side in ((source, "stdout"), (target, "stdin")):
            if end is not None:
                node, stream = end
                if stream != side:
                    raise LuteAsyncError(f"a channel's {side} end cannot be a task's {stream}")
                node.options[side] = self

    def attach(self, run: LimitedRun, side: str) -> ChannelEnd:
        """The communicator-like end that connects ``run``'s ``side`` (stdin or stdout)."""
        if side == "stdout":
            if self._source is not None:
                raise LuteAsyncError("a channel has one source run")
            self._source = run
        return ChannelEnd(self, side)

    def _fd(self, name: str) -> int:
        """The fd ``name`` (src_r, src_w, dst_r, dst_w), creating the pipes on first use."""
        if self._fds is None:
            src_r, src_w = os.pipe()
            dst_r, dst_w = os.pipe()
            set_nonblocking(src_r)
            set_nonblocking(dst_w)
            self._fds = {"src_r": src_r, "src_w": src_w, "dst_r": dst_r, "dst_w": dst_w}
        return self._fds.get(name, -1)

    def _close(self, *names: str) -> None:
        # Each fd is closed once: a number closed twice may by then belong to someone else.
        for name in names:
            if self._fds is not None and name in self._fds:
                close_fd(self._fds.pop(name))

    async def pump(self) -> None:
        """Move bytes from the producer to the consumer until EOF, the limit, or a closed
        consumer; then close both executor ends (EOF for one, EPIPE for the other)."""
        src_r, dst_w = self._fd("src_r"), self._fd("dst_w")
        try:
            while chunk := await read_chunk(src_r, self.buffer_size):
                if self.limit is not None and self.bytes + len(chunk) > self.limit:
                    await _write_all(dst_w, chunk[: self.limit - self.bytes])
                    self.bytes = self.limit
                    self._exceeded()
                    return
                if not await _write_all(dst_w, chunk):
                    return  # the consumer closed its stdin: the producer will get EPIPE
                self.bytes += len(chunk)
        finally:
            self._close("dst_w", "src_r")

    def _exceeded(self) -> None:
        detail = f"channel carried more than its {self.limit} byte limit"
        self.verdict = {"kind": "output_limit", "detail": detail}
        if self._source is not None:
            self._source.end_for_limit("output_limit", detail)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "channel",
            "buffer_size": self.buffer_size,
            "limit": self.limit,
            "bytes": self.bytes,
        }


async def _write_all(fd: int, data: bytes) -> bool:
    """Write all of ``data`` to the non-blocking ``fd``; False if the reader has gone."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await anyio.wait_writable(fd)
            continue
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                return False
            raise
        view = view[written:]
    return True


class ChannelEnd:
    """One run's side of a channel, served like a communicator by that run."""

    kind = "channel"

    def __init__(self, channel: Channel, side: str) -> None:
        self.channel = channel
        self.side = side

    async def open(self, run_channel: RunChannel) -> ChildSetup:
        if self.side == "stdout":
            return PipeSetup(stdout=self.channel._fd("src_w"))
        return PipeSetup(stdin=self.channel._fd("dst_r"))

    def child_started(self) -> None:
        # The child holds its end now; the parent's copy would keep EOF from ever arriving.
        self.channel._close("src_w" if self.side == "stdout" else "dst_r")

    async def serve(self, exited: asyncio.Event) -> None:
        if self.side == "stdin":  # the consumer's run owns the pump: it lives while reading
            await self.channel.pump()

    def describe(self) -> dict[str, Any]:
        return {**self.channel.describe(), "side": self.side}

    async def aclose(self) -> None:
        if self.side == "stdout":
            self.channel._close("src_w")
        else:  # the consumer is gone or never started: unblock the producer (EPIPE)
            self.channel._close("dst_r", "dst_w", "src_r")
