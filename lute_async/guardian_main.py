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
import errno
import os
import signal
import sys
import time

#: Held for a task when the kernel has no pidfds (before Linux 5.3): its group is signalled
#: by pid alone.
NO_PIDFD = -2


def _end(pid: int, pidfd: int) -> None:
    """SIGKILL ``pid``'s process group, if ``pid`` is still the task registered as ``pidfd``."""
    if pidfd == NO_PIDFD:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        return
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


#: Pause between reads: lines written meanwhile wait in the pipe, so a burst of runs wakes the
#: guardian once, not twice per run. Its cost is only how late it sees the pipe end.
PAUSE = 0.1


def _apply(lines: list[bytes], tasks: dict[int, int]) -> None:
    """Apply ``+PID`` / ``-PID`` lines to ``tasks`` (pid -> pidfd); a task started and reaped
    within one batch is never opened."""
    net: dict[int, bool] = {}
    for line in lines:
        try:
            pid = int(line[1:])
        except ValueError:
            continue
        if line[:1] == b"+":
            net[pid] = True
        elif line[:1] == b"-":
            if net.get(pid):
                del net[pid]
            else:
                net[pid] = False
    for pid, alive in net.items():
        old = tasks.pop(pid, -1)
        if old >= 0:
            os.close(old)
        if alive:
            try:
                tasks[pid] = os.pidfd_open(pid)
            except OSError as exc:  # already ended and reaped, or no pidfds here
                if exc.errno == errno.ENOSYS:
                    tasks[pid] = NO_PIDFD


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
        _apply(lines, tasks)
        time.sleep(PAUSE)
    for pid, fd in tasks.items():
        _end(pid, fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
