"""How a forked task ends: what an interpreter's exit would do that a task may rely on, then
``os._exit`` (a full finalization of the inherited interpreter costs a fork-server child ~3.5 ms
of CPU, most of its life).

A task forked by the fork server may rely on, in this order, as in ``Py_FinalizeEx``:

1. its non-daemon threads being joined (``threading`` waits for them at exit);
2. its ``atexit`` handlers running (an exception in one is printed and ignored);
3. ``sys.stdout`` and ``sys.stderr`` being flushed, whatever objects they are by then;
4. the exit code: the task's (``SystemExit(n)`` keeps ``n``), as a spawned worker's.

It may not rely on what only a finalization does: modules torn down, ``__del__`` of objects
still alive (a file left open in a global and never closed loses its buffered writes), weakref
callbacks and buffered writes of other open streams. Close what you open (``with``).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["end_forked_task", "join_threads"]


def join_threads() -> None:
    """Wait for every non-daemon thread but this one, those they start included."""
    threading = sys.modules.get("threading")
    if threading is None:  # never imported: no thread was started through it
        return
    current = threading.current_thread()
    while True:
        alive = [
            thread
            for thread in threading.enumerate()
            if thread is not current and not thread.daemon and thread.is_alive()
        ]
        if not alive:
            return
        for thread in alive:
            thread.join()


def flush_stdio() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed, or its reader gone
                stream.flush()


def end_forked_task(code: int) -> NoReturn:
    """Join the task's threads, run its ``atexit`` handlers, flush its stdout and stderr, and
    exit with ``code`` without finalizing the interpreter."""
    try:
        join_threads()
        atexit._run_exitfuncs()
        flush_stdio()
    finally:
        os._exit(code)
