"""``Reporter``: sends a task's messages to the executor that started it, through a
:class:`Sink` (the pipe, Unix socket or TCP address the executor named).

Sending is buffered: a message goes out at once when the channel has been quiet for ``linger``
seconds (low latency for sparse messages), otherwise it joins a batch that a background thread
flushes within ``linger`` (few syscalls for bursts). ``result``, ``error``, ``flush`` and
``close`` always flush. With ``write_inline`` off (as :class:`AsyncReporter` sets it) every
write that is not a flushing call is the background thread's, so a full channel never blocks
the sender. Messages are packed by :class:`~lute_async.task.packing.MessagePacker`.
"""

from __future__ import annotations

import os
import sys
import time
from _thread import allocate_lock  # threading itself costs a task start ~5 ms; loaded lazily

from lute_async.task.function import current_rank
from lute_async.task.packing import MessagePacker, to_wire
from lute_async.wire import ENV_FD, ENV_RUN, ENV_SECRET, ENV_SOCKET, ENV_TCP, PROTOCOL_VERSION

TYPE_CHECKING = False  # typing and collections.abc cost every task start milliseconds
if TYPE_CHECKING:
    import threading
    from collections.abc import Callable
    from types import TracebackType
    from typing import Any

    Write = Callable[[bytes | bytearray], None]

_FLUSH_BYTES = 64 * 1024
_time, _monotonic = time.time, time.monotonic  # bound once: emit is the task's hot path
_DEFAULT_LINGER = 0.0005
# -- sinks: where frames go --------------------------------------------------------------


class Sink:
    """Where frames go: a file descriptor (pipe) or a socket (TCP: with the executor's nonce)."""

    __slots__ = ("close", "nonce", "write")

    def __init__(self, write: Write, close: Callable[[], None], nonce: bytes | None = None):
        self.write = write
        self.close = close
        self.nonce = nonce


def fd_sink(spec: str) -> Sink | None:
    """Open the frame pipe named ``FD:INODE`` if this process really holds that pipe."""
    import stat

    fd_text, _, inode_text = spec.partition(":")
    try:
        fd = int(fd_text)
        info = os.fstat(fd)
    except (ValueError, OSError):
        return None
    if not stat.S_ISFIFO(info.st_mode) or (inode_text and str(info.st_ino) != inode_text):
        return None  # an unrelated fd that happens to have the same number: never write to it

    def write(data: bytes | bytearray) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def close() -> None:
        os.close(fd)

    return Sink(write, close)


def socket_sink(address: str, tcp: bool) -> Sink:
    """Connect to the executor's Unix socket ``address``, or its TCP ``host:port``."""
    if tcp:
        import socket

        host, _, port = address.rpartition(":")
        sock = socket.create_connection((host.strip("[]"), int(port)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        from lute_async.task.handshake import read_nonce

        return Sink(sock.sendall, sock.close, read_nonce(sock))  # closes sock on failure
    import _socket  # its C core: `socket` loads enum and selectors, ~7 ms of a task start

    unix = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        unix.connect(address)
    except OSError:
        unix.close()
        raise
    return Sink(unix.sendall, unix.close)


def open_sink(env: dict[str, str] | os._Environ[str], prefer: tuple[str, ...]) -> Sink | None:
    """The first channel of ``prefer`` (``pipe``, ``socket``, ``tcp``) that ``env`` names and
    that opens; None when none does."""
    for kind in prefer:
        try:
            if kind == "pipe" and (spec := env.get(ENV_FD)):
                sink = fd_sink(spec)
            elif kind == "socket" and (path := env.get(ENV_SOCKET)):
                sink = socket_sink(path, tcp=False)
            elif kind == "tcp" and (address := env.get(ENV_TCP)):
                sink = socket_sink(address, tcp=True)
            else:
                continue
        except OSError as exc:  # gone or refused: try the next channel
            sys.stderr.write(f"lute-async: cannot use the {kind} channel: {exc}\n")
            continue
        if sink is not None:
            return sink
    return None


# -- the reporter ----------------------------------------------------------------------------


class Reporter:
    """Sends a task's messages to the executor that started it (synchronous API).

    Use :meth:`connect` to find the executor from ``LUTE_ASYNC_*`` variables; outside an
    executor it logs structured lines on stderr instead, so task scripts also run standalone.
    """

    def __init__(
        self,
        sink: Sink | None,
        *,
        run_id: str | None = None,
        rank: int | None = None,
        all_ranks: bool = False,
        linger: float = _DEFAULT_LINGER,
    ) -> None:
        self.run_id = run_id
        self.rank = rank
        self.all_ranks = all_ranks
        self.linger = linger
        self._sink = sink
        #: False: ``emit`` never writes on the calling thread, the flusher thread does (only
        #: the flushing calls write); AsyncReporter sets it so that sends never block a loop.
        self.write_inline = True
        self._seq = 0
        self._buf = bytearray()
        self._buf_lock = allocate_lock()  # held for memory operations only, never for a write
        self._write_lock = allocate_lock()  # one write at a time, taken before the buffer swap
        self._last_flush = 0.0
        self._last_emit = 0.0
        self._flusher: threading.Thread | None = None
        self._armed: threading.Event | None = None
        self._wake: threading.Event | None = None
        # True from just before _armed is set until just after the flusher clears it: what
        # emit reads instead of _armed.is_set(), a Python call per message.
        self._arming = False
        self._closed = False
        self._packer = MessagePacker()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        *,
        prefer: tuple[str, ...] = ("pipe", "socket", "tcp"),
        all_ranks: bool = False,
        linger: float = _DEFAULT_LINGER,
        required: bool = False,
    ) -> Reporter:
        """Connect to the executor named in the environment, trying ``prefer`` in order.

        With ``required=True`` a process not started by an executor raises
        :class:`NotInExecutorError`; otherwise it gets a standalone reporter logging to stderr.
        """
        env = os.environ
        run_id = env.get(ENV_RUN)
        rank = current_rank(env)
        sink = open_sink(env, prefer) if run_id is not None else None
        if sink is None and required:
            from lute_async.errors import NotInExecutorError

            raise NotInExecutorError(
                "this process was not started by lute-async (no usable "
                f"{ENV_FD}/{ENV_SOCKET}/{ENV_TCP} in the environment); run it with "
                "`lute-async exec -- ...` or from an Executor"
            )
        reporter = cls(sink, run_id=run_id, rank=rank, all_ranks=all_ranks, linger=linger)
        if sink is not None:
            hello = {
                "v": PROTOCOL_VERSION,
                "run": run_id,
                "pid": os.getpid(),
                "rank": rank,
                "secret": env.get(ENV_SECRET),
            }
            if sink.nonce is not None:  # TCP: answer the executor's nonce, never send the secret
                from lute_async.task.handshake import tcp_hello

                hello = tcp_hello(sink.nonce, hello)
            # Sent now, not with the first batch: a TCP listener drops connections that stay
            # silent past its hello timeout, and a task may be busy (or blocked writing to
            # another channel) long before its first flush on this one.
            reporter._buf += reporter._packer.pack(hello)
            reporter.flush()
            import atexit

            atexit.register(reporter.close)
        return reporter

    @property
    def connected(self) -> bool:
        """True when messages go to an executor, False when they are logged standalone."""
        return self._sink is not None

    @property
    def _leads(self) -> bool:
        return self.all_ranks or not self.rank

    # -- the reporting API ----------------------------------------------------------------

    def started(self, params: Any = None) -> None:
        """Say the task has begun, with the params it runs with (rank 0 only by default)."""
        if self._leads:
            self.emit("started", {"params": params})

    def log(self, message: str, level: str = "info") -> None:
        """Send one log line."""
        self.emit("log", {"message": message, "level": level, "stream": "reporter"})

    def progress(self, fraction: float, message: str = "", *, total: float | None = None) -> None:
        """Report progress as a fraction in [0, 1], or as ``fraction`` out of ``total``."""
        value = fraction / total if total else fraction
        self.emit("progress", {"fraction": float(value), "message": message})

    def result(self, payload: Any, summary: str | None = None) -> None:
        """Send the task's result (rank 0 only by default) and flush."""
        if self._leads:
            self.emit("result", {"payload": payload, "summary": summary}, flush=True)

    def error(self, exc: BaseException | str, *, tb: str | None = None) -> None:
        """Report the error the task is failing with, then flush."""
        if isinstance(exc, BaseException):
            import traceback

            data: dict[str, str | None] = {
                "type": type(exc).__name__,
                "message": str(exc),
                "traceback": tb or "".join(traceback.format_exception(exc)),
            }
        else:
            data = {"type": "TaskError", "message": exc, "traceback": tb}
        self.emit("error", data, flush=True)

    def emit(self, sig: str, data: Any = None, *, flush: bool = False) -> None:
        """Send a message with any event name (a custom one fires hooks of that name)."""
        if self._sink is None:
            self._log_standalone(sig, data)
            return
        with self._buf_lock:
            seq = self._seq = self._seq + 1
            buf = self._buf  # += extends it in place
            buf += self._packer.frame(sig, seq, _time(), data)
            now = _monotonic()
            linger = self.linger
            # Quiet means no *message* for ``linger``: measured from the last flush instead, a
            # steady 1 kHz sender whose previous message the flusher sent 0.5 ms late never
            # looked quiet, and every message waited out the linger.
            quiet = now - self._last_emit >= linger
            self._last_emit = now
            due = (
                flush
                or quiet
                or len(buf) >= _FLUSH_BYTES
                or now - self._last_flush >= linger
            )
        if due and (flush or self.write_inline):
            self.flush()
        elif due or not self._arming:
            self._arm_flusher(urgent=due)  # else the flusher will send it: nothing to do

    @property
    def buffered(self) -> int:
        """Bytes packed and not yet handed to the channel."""
        return len(self._buf)

    def flush(self) -> None:
        """Write everything buffered now (after any write already under way)."""
        with self._write_lock:
            with self._buf_lock:
                data, self._buf = self._buf, bytearray()
                self._last_flush = time.monotonic()
                sink = self._sink
            if data and sink is not None:
                self._write(sink, data)

    def close(self) -> None:
        """Flush and close the channel; later messages are logged standalone."""
        if self._closed:
            return
        self._closed = True
        if self._armed is not None and self._wake is not None:
            self._wake.set()
            self._armed.set()
        with self._write_lock:
            with self._buf_lock:
                sink, self._sink = self._sink, None
                data, self._buf = self._buf, bytearray()
            if sink is not None:
                try:
                    if data:
                        sink.write(data)
                finally:
                    sink.close()

    def __enter__(self) -> Reporter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None and not isinstance(exc, KeyboardInterrupt | SystemExit):
            self.error(exc)
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _write(self, sink: Sink, data: bytearray) -> None:
        try:
            sink.write(data)
        except (BrokenPipeError, ConnectionError):
            # The executor is gone: nobody can hear us, so say so once and stop sending.
            with self._buf_lock:
                if self._sink is sink:
                    self._sink = None
            sys.stderr.write("lute-async: executor connection lost; reporting to stderr\n")

    def _arm_flusher(self, urgent: bool) -> None:
        if self._armed is None or self._wake is None:
            import threading

            self._armed, self._wake = threading.Event(), threading.Event()
            self._flusher = threading.Thread(
                target=self._flush_loop,
                args=(self._armed, self._wake),
                name="lute-async-flush",
                daemon=True,
            )
            self._flusher.start()
        # Event.set takes a Condition and notifies: skip it while already armed (the flusher
        # clears before it flushes, so a message buffered before this check is always sent).
        self._arming = True  # before set(): the flusher clears it only after clear()
        if not self._armed.is_set():
            self._armed.set()
        if urgent:
            self._wake.set()  # a message that is due now: no linger

    def _flush_loop(self, armed: threading.Event, wake: threading.Event) -> None:
        # Waits for data to be buffered, then for the linger deadline (cut short by a message
        # that is due, or by close), then flushes.
        while True:
            armed.wait()
            wake.wait(self.linger)
            wake.clear()
            armed.clear()
            self._arming = False  # after clear(), before the flush that sends what is buffered
            if self._closed:
                return  # close writes what is left
            self.flush()

    def _log_standalone(self, sig: str, data: Any) -> None:
        import json

        record = {"event": sig, "ts": time.time(), "rank": self.rank, "data": data}
        sys.stderr.write(json.dumps(record, default=_log_value) + "\n")


def _log_value(obj: Any) -> Any:
    """JSON for a value of a standalone log line: bytes as text (as a record's JSON shows
    them), anything else as it would go to the executor."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return bytes(obj).decode("utf-8", "backslashreplace")
    return to_wire(obj)
