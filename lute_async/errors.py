"""Every exception lute-async raises, each with a message a user can act on."""

from __future__ import annotations


class LuteAsyncError(Exception):
    """Base class of all lute-async errors."""


class ProtocolError(LuteAsyncError):
    """A frame on the wire broke protocol v1 (bad bytes, wrong shape, too large)."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at byte {offset})")
        self.offset = offset


class FrameTooLarge(ProtocolError):
    """A frame exceeded the decoder's size limit."""


class HandshakeError(ProtocolError):
    """A connection's hello frame was missing, malformed, for another run or had a wrong secret."""


class LaunchError(LuteAsyncError):
    """A task could not be started (missing binary, bad cwd, no permission, launcher missing)."""


class ConfigError(LuteAsyncError):
    """A task definition or executor setting is invalid."""


class RecordStoreError(LuteAsyncError):
    """The records database could not be opened, read or written."""


class AttachError(LuteAsyncError):
    """A run that cannot be attached to: unknown, not a batch job, ended, or still followed."""


class NotInExecutorError(LuteAsyncError):
    """A task-side call needed an executor but the process was not started by one."""


class AmbiguousRunId(RecordStoreError):
    """A short run id matches several runs."""


class RecordNotFound(RecordStoreError, KeyError):
    """No run with the requested id is in the records database."""

    def __init__(self, run_id: str, path: str) -> None:
        super().__init__(f"no run with id {run_id!r} in records database {path}")
        self.run_id = run_id
        self.path = path

    def __str__(self) -> str:
        # KeyError would print the repr of the message; show it as written.
        return str(self.args[0])
