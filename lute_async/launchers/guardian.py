"""The parent-death guard of local tasks, without an exec per task.

One guardian process per executor process (:mod:`lute_async.guardian_main`, started on the
first guarded spawn) holds the read end of a pipe; the executor tells it each task's pid after
the spawn and again after the reap (two small writes). When the executor dies, even by SIGKILL,
the kernel closes the write end and the guardian SIGKILLs every task still running. This
replaces ``setpriv --pdeathsig KILL`` in front of every task: no second exec (~0.8 ms of CPU
and a longer spawn per task), and the whole process group goes, not only its main process.

A guardian that died (killed by someone) is started again at the next spawn and told every
task still running. A forked child of the executor drops the guardian it inherited.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from pathlib import Path

from lute_async.logs import get_logger

PROGRAM = Path(__file__).resolve().parent.parent / "guardian_main.py"


class Guardian:
    """The executor process's side of its guardian: start it, register and release tasks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._fd: int | None = None
        self._tasks: set[int] = set()  # pids registered and not yet released

    @property
    def pid(self) -> int | None:
        """The guardian process's pid (None before the first guarded spawn)."""
        return self._process.pid if self._process is not None else None

    def watch(self, pid: int) -> None:
        """Have the task ``pid`` (its process group's leader) SIGKILLed if this process dies."""
        with self._lock:
            self._tasks.add(pid)
            if not self._send(b"+%d\n" % pid):
                self._restart()

    def release(self, pid: int) -> None:
        """The task ``pid`` has been reaped: forget it (its pid may be reused)."""
        with self._lock:
            if pid in self._tasks:
                self._tasks.discard(pid)
                self._send(b"-%d\n" % pid)

    def _send(self, line: bytes) -> bool:
        # A guardian that died closed its end of the pipe: the write fails (EPIPE), so it
        # is not polled first (a waitpid a send, twice a run).
        if self._fd is None or self._process is None:
            return False
        try:
            os.write(self._fd, line)  # < PIPE_BUF: atomic, and the guardian reads at once
        except OSError:
            return False
        return True

    def _restart(self) -> None:
        """Start a guardian (again) and tell it every task still registered."""
        self._close_pipe()
        if self._process is not None:
            self._process.poll()  # reap a guardian that died
        read_fd, write_fd = os.pipe()
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-I", "-S", os.fspath(PROGRAM)],
                stdin=read_fd,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            os.close(write_fd)
            get_logger().error("guardian_failed", error=str(exc))
            return
        finally:
            os.close(read_fd)
        self._fd = write_fd
        lines = b"".join(b"+%d\n" % pid for pid in self._tasks)
        if lines and not self._send(lines):
            get_logger().error("guardian_failed", error="the guardian exited at start")

    def _close_pipe(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """End the guardian (at exit): it SIGKILLs any task still registered, then exits."""
        with self._lock:
            self._close_pipe()
            if self._process is not None:
                try:
                    self._process.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
                self._process = None

    def _forget(self) -> None:
        """In a forked child: the inherited guardian belongs to the parent."""
        self._close_pipe()
        self._process = None
        self._tasks = set()
        self._lock = threading.Lock()


#: This process's guardian.
GUARDIAN = Guardian()
os.register_at_fork(after_in_child=GUARDIAN._forget)
atexit.register(GUARDIAN.close)
