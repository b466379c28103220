"""SpoolCommunicator: the messages a batch job's reporters spooled while no executor listened
(:mod:`lute_async.task.spool`), read in order from the run's spool directory by the executor
that attached to the job, and followed as the job goes on writing them.

Each spool file is a connection of its own: its header names the sender (checked against the
run), its messages keep the seq numbers the reporter gave them (continuing those its dead
executor received) and must go up by one. The files are looked at with a backing-off interval
while the job runs, as its output file is, and read to their end once it has ended.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any, BinaryIO

import anyio

from lute_async.communicators.base import BATCH_BYTES, Batch, ChildSetup, RunChannel
from lute_async.communicators.bounds import CONTAINERS, data_too_deep
from lute_async.communicators.pump import send_batch
from lute_async.errors import ProtocolError
from lute_async.messages import FrameDecoder, Message, parse_message
from lute_async.task.spool import SPOOL_VERSION, SUFFIX

#: First and longest pause between two looks at the spool directory (seconds).
LOOK_FIRST = 0.05
LOOK_LONGEST = 1.0
#: Reads of BATCH_BYTES (a batch each) one look takes from a file before the next file's turn.
READS_PER_LOOK = 64


class SpoolReader:
    """One spool file, decoded as far as it has been written."""

    def __init__(self, path: Path, channel: RunChannel) -> None:
        self.path = path
        self.conn = channel.next_conn()
        self.messages = 0
        self._channel = channel
        self._decoder = FrameDecoder(channel.max_frame)
        self._file: BinaryIO | None = None
        self._sender: tuple[int | None, int | None] | None = None  # (rank, pid) once read
        self._last_seq: int | None = None
        self._broken = False

    def read(self) -> tuple[Batch, bool]:
        """The messages of the next chunk written, and whether there was one."""
        chunk = b"" if self._broken else self._chunk()
        if not chunk:
            return [], False
        batch: Batch = []
        frames, error = self._decoder.feed_batch(chunk)
        for frame in frames:
            try:
                message = self._frame(frame)
            except ProtocolError as exc:
                error = exc
                break
            if message is not None:
                batch.append(message)
        if error is not None:
            self._fail(error)
        self.messages += len(batch)
        return batch, True

    def finish(self) -> None:
        """At the end of the job: a frame left half written is reported."""
        if not self._broken and self._decoder.pending:
            self._fail(ProtocolError(f"the spool {self.path.name} ends inside a frame"))

    def _chunk(self) -> bytes:
        if self._file is None:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                self._fail(ProtocolError(f"cannot read the spool {self.path}: {exc}"))
                return b""
            self._file = os.fdopen(fd, "rb")
        return self._file.read(BATCH_BYTES)

    def _frame(self, frame: Any) -> Message | None:
        if self._sender is None:  # the header
            if not (isinstance(frame, dict) and frame.get("spool") == SPOOL_VERSION):
                raise ProtocolError(f"the spool {self.path.name} has no spool header")
            if frame.get("run") != self._channel.run_id:
                raise ProtocolError(f"the spool {self.path.name} is another run's")
            rank, pid = frame.get("rank"), frame.get("pid")
            self._sender = (
                rank if isinstance(rank, int) else None,
                pid if isinstance(pid, int) else None,
            )
            return None
        if isinstance(frame, dict) and frame.get("spool") == "full":
            self._channel.protocol_error(
                "spool",
                self.conn,
                ProtocolError(
                    f"the spool {self.path.name} reached its {frame.get('limit')}-byte limit: "
                    "the task dropped the messages it sent after that"
                ),
            )
            return None
        if isinstance(frame, dict) and "v" in frame:
            return None  # a hello that was on its way to the dead executor: not a message
        sig, seq, ts, data = parse_message(frame)
        if type(data) in CONTAINERS and data_too_deep(data):
            raise ProtocolError("message data nested too deep")
        if self._last_seq is not None and seq != self._last_seq + 1:
            self._channel.protocol_error(
                "spool", self.conn, ProtocolError(f"seq jumped from {self._last_seq} to {seq}")
            )
        self._last_seq = seq
        rank, pid = self._sender
        return Message(sig, data, seq, ts, rank, pid, "spool", self.conn)

    def _fail(self, error: ProtocolError) -> None:
        """A spool that cannot be decoded further is reported and read no more."""
        self._broken = True
        self._channel.protocol_error("spool", self.conn, error)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class SpoolCommunicator:
    """Reads a run's spool directory: every file in it, each in order, until the job ends.

    ``follow``: look while the job runs (an attached run, whose job spools all it sends), or
    only once it has ended (a run whose executor lives: its job spools only what a broken
    connection could not take). ``claims``: the run's id is entered there at :meth:`open`,
    for the launcher to give the directory (:attr:`directory`) it makes at launch.
    """

    kind = "spool"

    def __init__(
        self,
        directory: Path | None = None,
        *,
        follow: bool = True,
        claims: dict[str, SpoolCommunicator] | None = None,
    ) -> None:
        self.directory = directory
        self.follow = follow
        self._claims = claims
        self._channel: RunChannel | None = None
        self._readers: dict[str, SpoolReader] = {}

    async def open(self, channel: RunChannel) -> ChildSetup:
        self._channel = channel
        if self._claims is not None:
            self._claims[channel.run_id] = self
        return ChildSetup()

    def child_started(self) -> None:
        """Nothing to hand over: the job writes its spool files itself."""

    async def serve(self, exited: asyncio.Event) -> None:
        delay = LOOK_FIRST
        if not self.follow:
            await exited.wait()
        while not exited.is_set():
            moved = await self._look(final=False)
            delay = LOOK_FIRST if moved else min(delay * 2, LOOK_LONGEST)
            # The task writes files, which signal nothing: look again after a pause that
            # backs off while they stay still, or at once when the job has ended.
            with anyio.move_on_after(delay):
                await exited.wait()
        await self._look(final=True)

    async def _look(self, *, final: bool) -> bool:
        """Read what every spool file holds now; True when a message was read."""
        channel, directory = self._channel, self.directory
        assert channel is not None
        if directory is None:
            return False  # the run never launched
        for name in await anyio.to_thread.run_sync(self._names, directory):
            if name not in self._readers:
                self._readers[name] = SpoolReader(directory / name, channel)
        moved = False
        for reader in self._readers.values():
            reads = 0
            while final or reads < READS_PER_LOOK:
                batch, more = await anyio.to_thread.run_sync(reader.read)
                reads += 1
                if batch:
                    moved = True
                    await send_batch(channel.send, batch)
                if not more:
                    break
            if final:
                reader.finish()
        return moved

    @staticmethod
    def _names(directory: Path) -> list[str]:
        try:
            return sorted(name for name in os.listdir(directory) if name.endswith(SUFFIX))
        except OSError:
            return []

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "follow": self.follow}

    def summary(self) -> dict[str, Any]:
        """What was read: the directory, its files and their messages."""
        return {
            "directory": None if self.directory is None else os.fspath(self.directory),
            "files": len(self._readers),
            "messages": sum(reader.messages for reader in self._readers.values()),
        }

    async def aclose(self) -> None:
        if self._claims is not None and self._channel is not None:
            self._claims.pop(self._channel.run_id, None)
        for reader in self._readers.values():
            reader.close()
