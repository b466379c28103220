"""``python -I -S guardian_main.py``: the guardian of one executor process's local tasks.

It reads lines on stdin: ``+PID`` when the executor has started a task (its process group is
PID: tasks lead their own session), ``-PID`` once the executor has reaped it. When stdin ends,
because the executor closed it or died (even by SIGKILL: the kernel closes its descriptors),
every task still registered and still alive has its process group SIGKILLed, then the guardian
exits. It runs as a script (stdlib only, no site, no lute_async import) in its own session, so
a terminal's Ctrl-C to the executor's group does not end it before it has done its work.

Each registered task is held by a pidfd, so a pid the kernel gave to another process after the
task ended is never signalled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def _end(pid: int, pidfd: int) -> None:
    """SIGKILL ``pid``'s process group, if ``pid`` is still the task registered as ``pidfd``."""
    try:
        signal.pidfd_send_signal(pidfd, 0)
    except ProcessLookupError:
        return  # the task has ended (and its pid may belong to someone else by now)
    except OSError:
        return
    with contextlib.suppress(OSError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):  # the task may have left its group (setsid)
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)


def _apply(line: bytes, tasks: dict[int, int]) -> None:
    """Apply one ``+PID`` / ``-PID`` line to ``tasks`` (pid -> pidfd)."""
    try:
        pid = int(line[1:])
    except ValueError:
        return
    if line[:1] == b"+":
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return  # already ended and reaped: nothing to guard
        old = tasks.pop(pid, None)
        if old is not None:
            os.close(old)
        tasks[pid] = fd
    elif line[:1] == b"-":
        fd = tasks.pop(pid, -1)
        if fd >= 0:
            os.close(fd)


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tasks: dict[int, int] = {}
    pending = b""
    while True:
        try:
            chunk = os.read(0, 65536)
        except InterruptedError:
            continue
        except OSError:
            break
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            _apply(line, tasks)
    for pid, fd in tasks.items():
        _end(pid, fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
