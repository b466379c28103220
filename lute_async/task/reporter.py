"""``Reporter``: sends a task's messages to the executor that started it, through a
:class:`~lute_async.task.sinks.Sink` (the pipe, Unix socket or TCP address the executor named).

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
from _thread import allocate_lock, start_new_thread  # not threading (see _Flag)

from lute_async.task.function import current_rank
from lute_async.task.packing import MessagePacker, log_value
from lute_async.task.sinks import Sink, open_sink
from lute_async.wire import (
    ENV_FD,
    ENV_RUN,
    ENV_SECRET,
    ENV_SOCKET,
    ENV_SPOOL,
    ENV_TCP,
    PROTOCOL_VERSION,
)

TYPE_CHECKING = False  # typing and collections.abc cost every task start milliseconds
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any


_FLUSH_BYTES = 64 * 1024
_time, _monotonic = time.time, time.monotonic  # bound once: emit is the task's hot path
_DEFAULT_LINGER = 0.0005


class _Flag:
    """``threading.Event``'s ``set``, ``clear``, ``is_set`` and ``wait`` on ``_thread`` locks,
    for the flusher: ``threading`` costs a worker's start ~5 ms to import, and a fork-server
    child 0.2-0.3 ms of CPU when its server has it (its after-fork hook: ~100 page faults)."""

    __slots__ = ("_flag", "_mutex", "_waiters")

    def __init__(self) -> None:
        self._flag = False
        self._mutex = allocate_lock()
        self._waiters: list[Any] = []  # one held lock per waiting thread, released by set()

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        with self._mutex:
            self._flag = True
            for waiter in self._waiters:
                waiter.release()
            self._waiters.clear()

    def clear(self) -> None:
        with self._mutex:
            self._flag = False

    def wait(self, timeout: float | None = None) -> bool:
        with self._mutex:
            if self._flag:
                return True
            waiter = allocate_lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(True, -1 if timeout is None else timeout):
            return True
        with self._mutex:  # timed out, unless set() released it meanwhile
            if waiter in self._waiters:
                self._waiters.remove(waiter)
                return self._flag
            return True
# -- the reporter ----------------------------------------------------------------------------


class Reporter:
    """Sends a task's messages to the executor that started it (synchronous API).

    Use :meth:`connect` to find the executor from ``LUTE_ASYNC_*`` variables; outside an
    executor it logs structured lines on stderr instead, so task scripts also run standalone.
    A process has one connection: a second :meth:`connect` while one is open (a ``@task``
    that connects inside the worker's) shares it, and only the last ``close`` closes it.
    """

    #: The open, connected reporter of this process (its pid), which connect() shares.
    _shared: tuple[int, Reporter] | None = None

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
        self._flusher: int | None = None  # the flusher thread's ident, once started
        self._armed: _Flag | None = None
        self._wake: _Flag | None = None
        # True from just before _armed is set until just after the flusher clears it: what
        # emit reads instead of _armed.is_set(), a Python call per message.
        self._arming = False
        self._closed = False
        self._users = 1  # the connect() calls sharing this reporter, less their close()s
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
        shared = Reporter._shared
        if shared is not None and shared[0] == os.getpid() and not shared[1]._closed:
            shared[1]._users += 1
            return shared[1]
        run_id = env.get(ENV_RUN)
        rank = current_rank(env)
        sink = open_sink(env, prefer) if run_id is not None else None
        # A batch job whose executor is gone (a requeued attempt): its spool, and no hello.
        spooled = _spool_sink(run_id, rank) if sink is None and run_id is not None else None
        sink = sink or spooled
        if sink is None and required:
            from lute_async.errors import NotInExecutorError

            raise NotInExecutorError(
                "this process was not started by lute-async (no usable "
                f"{ENV_FD}/{ENV_SOCKET}/{ENV_TCP} in the environment); run it with "
                "`lute-async exec -- ...` or from an Executor"
            )
        reporter = cls(sink, run_id=run_id, rank=rank, all_ranks=all_ranks, linger=linger)
        if sink is not None and sink is not spooled:
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
            # On a socket, sent now, not with the first batch: the listener drops connections
            # that stay silent past its hello timeout, and a task may be busy (or blocked
            # writing to another channel) long before its first flush on this one. On the
            # frame pipe it goes with the first message: one write (and one executor wake-up)
            # less for a short task.
            reporter._buf += reporter._packer.pack(hello)
            if sink.timed:
                reporter.flush()
        if sink is not None:
            import atexit

            atexit.register(reporter._close)
            if sink is not spooled:
                Reporter._shared = (os.getpid(), reporter)
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
        """Flush and close the channel (once every sharer has); later messages are logged
        standalone."""
        self._users -= 1
        if self._users > 0 and not self._closed:
            self.flush()
        else:
            self._close()

    def _close(self) -> None:
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
            # The executor is gone: a batch job spools for one that attaches; others say so.
            spool = _spool_sink(self.run_id, self.rank)
            with self._buf_lock:
                if self._sink is sink:
                    self._sink = spool
            where = "to stderr" if spool is None else "to its spool"
            sys.stderr.write(f"lute-async: executor connection lost; reporting {where}\n")
            if spool is not None:
                spool.write(data)

    def _arm_flusher(self, urgent: bool) -> None:
        if self._armed is None or self._wake is None:
            self._armed, self._wake = _Flag(), _Flag()
            # A daemon thread (never joined at exit: close writes what is left).
            self._flusher = start_new_thread(self._flush_loop, (self._armed, self._wake))
        # set() takes a lock and releases the waiter: skip it while already armed (the flusher
        # clears before it flushes, so a message buffered before this check is always sent).
        self._arming = True  # before set(): the flusher clears it only after clear()
        if not self._armed.is_set():
            self._armed.set()
        if urgent:
            self._wake.set()  # a message that is due now: no linger

    def _flush_loop(self, armed: _Flag, wake: _Flag) -> None:
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
        sys.stderr.write(json.dumps(record, default=log_value) + "\n")


def _spool_sink(run_id: str | None, rank: int | None) -> Sink | None:
    """A sink into a new spool file of this process, if the job spools (:mod:`.spool`)."""
    if not os.environ.get(ENV_SPOOL):
        return None
    from lute_async.task.spool import open_spool

    spool = open_spool(os.environ, run_id or "", os.getpid(), rank)
    return None if spool is None else Sink(spool.write, spool.close)
