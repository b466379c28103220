"""How a forked task ends: what an interpreter's exit would do that a task may rely on, then
``os._exit`` (a full finalization of the inherited interpreter costs a fork-server child ~3.5 ms
of CPU, most of its life).

A task forked by the fork server may rely on, in this order, as in ``Py_FinalizeEx``:

1. its non-daemon threads being joined (as ``threading`` does at exit, after ending the
   workers of the ``concurrent.futures`` pools it did not shut down);
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
    """What ``Py_FinalizeEx`` does first: ``threading._shutdown``, which calls the
    threading-atexit hooks (``concurrent.futures`` ends its pools' workers there) and then waits
    for every non-daemon thread."""
    threading = sys.modules.get("threading")
    if threading is None:  # never imported: no thread was started through it
        return
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()


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
