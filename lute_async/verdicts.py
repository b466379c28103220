"""A finished run's verdict: which limit (if any) ended it, decided from how it ended.

The verdict is ``{"kind": KIND, "detail": TEXT}`` (plus ``"limit"`` naming the rlimit when a
``runtime_error`` was caused by one). The rules, in order:

1. A verdict set while the run was live stands (``output_limit`` from the output budget or a
   channel limit).
2. ``timed_out`` (``timeout`` / ``Limits.wall_time``) -> ``time_limit``; ``cancelled`` ->
   ``signal`` with detail ``cancelled``; ``done`` -> ``ok``.
3. Killed by a signal: SIGXCPU, or SIGKILL once user+system CPU reached ``cpu_time``, ->
   ``cpu_limit`` (the soft CPU limit sends SIGXCPU, the hard one a second later SIGKILL). With a
   ``memory`` limit, SIGKILL/SIGSEGV/SIGABRT/SIGBUS with max RSS near the limit or with memory
   evidence (below) -> ``memory_limit``. Any other signal -> ``signal``.
4. Non-zero exit: with a ``memory`` limit and memory evidence -> ``memory_limit``; with a
   ``pids`` limit and fork-failure evidence -> ``runtime_error`` with ``limit="pids"``; with an
   ``open_files`` limit and EMFILE evidence -> ``runtime_error`` with ``limit="open_files"``;
   else ``runtime_error``.

*Evidence* is the error the task reported (type and message: ``Reporter``/``@task`` report
``MemoryError``, ``BlockingIOError``, ``OSError``) and the last lines of its stderr (an uncaught
Python exception ends with ``MemoryError``; C programs print ``Cannot allocate memory``, shells
``Cannot fork``). An address-space limit (RLIMIT_AS) makes allocations fail rather than the
process be killed, so the exit code alone cannot tell a memory limit from any other error.
"""

from __future__ import annotations

import re
import signal
from collections import deque
from typing import Any

from lute_async.messages import EventName, Message

#: Stderr lines kept per run for the evidence (only for runs with memory/pids/open_files limits).
STDERR_TAIL = 20
#: SIGKILLed with max RSS at least this fraction of the memory limit counts as memory_limit.
RSS_NEAR_LIMIT = 0.9

MEMORY_EVIDENCE = re.compile(
    r"MemoryError|Cannot allocate memory|ENOMEM|bad_alloc|out of memory", re.IGNORECASE
)
PIDS_EVIDENCE = re.compile(
    r"BlockingIOError|Resource temporarily unavailable|EAGAIN|Cannot fork|fork: retry",
    re.IGNORECASE,
)
OPEN_FILES_EVIDENCE = re.compile(r"Too many open files|EMFILE", re.IGNORECASE)
MEMORY_SIGNALS = frozenset({signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS})


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


class VerdictJudge:
    """Collects a run's evidence (its stderr tail) and decides its verdict when it ends."""

    def __init__(self, limits: dict[str, Any] | None = None, timeout: float | None = None) -> None:
        self.limits = dict(limits or {})
        self.timeout = timeout
        self._stderr: deque[str] = deque(maxlen=STDERR_TAIL)

    @property
    def wants_output(self) -> bool:
        """True when the stderr tail can change the verdict (memory, pids or open_files set)."""
        return any(self.limits.get(k) is not None for k in ("memory", "pids", "open_files"))

    def observe(self, message: Message) -> None:
        """Keep ``message`` if it is a stderr line."""
        data = message.data
        if isinstance(data, dict) and data.get("stream") == "stderr":
            self._stderr.append(str(data.get("message", "")))

    def evidence(self, error: dict[str, Any] | None) -> str:
        parts = list(self._stderr)
        if error:
            parts.append(f"{error.get('type', '')}: {error.get('message', '')}")
        return "\n".join(parts)

    def judge(
        self,
        event: str,
        *,
        exit_code: int | None,
        signum: int | None,
        usage: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The verdict of a run that ended with ``event`` (see the module docstring)."""
        if event == EventName.DONE:
            return {"kind": "ok", "detail": None}
        if event == EventName.TIMED_OUT:
            limit = f"{self.timeout} s" if self.timeout is not None else "its"
            return {"kind": "time_limit", "detail": f"wall time exceeded {limit} limit"}
        if event == EventName.CANCELLED:
            return {"kind": "signal", "detail": "cancelled", "signal": signum}
        limits = self.limits
        usage = usage or {}
        if signum is not None:
            return self._killed(signum, usage, error)
        text = self.evidence(error)
        if limits.get("memory") is not None and MEMORY_EVIDENCE.search(text):
            return {
                "kind": "memory_limit",
                "detail": f"allocation failed under the {limits['memory']} byte memory limit",
            }
        if limits.get("pids") is not None and PIDS_EVIDENCE.search(text):
            return {
                "kind": "runtime_error",
                "detail": f"fork failed (EAGAIN): pids limit of {limits['pids']} reached",
                "limit": "pids",
            }
        if limits.get("open_files") is not None and OPEN_FILES_EVIDENCE.search(text):
            return {
                "kind": "runtime_error",
                "detail": f"too many open files (EMFILE): limit of {limits['open_files']}",
                "limit": "open_files",
            }
        if exit_code is None:
            message = (error or {}).get("message") or "the run did not start"
            return {"kind": "runtime_error", "detail": str(message)}
        return {"kind": "runtime_error", "detail": f"exit code {exit_code}"}

    def _killed(
        self, signum: int, usage: dict[str, Any], error: dict[str, Any] | None
    ) -> dict[str, Any]:
        limits = self.limits
        name = _signal_name(signum)
        cpu_limit = limits.get("cpu_time")
        if cpu_limit is not None:
            cpu = float(usage.get("user", 0.0)) + float(usage.get("system", 0.0))
            if signum == signal.SIGXCPU or (signum == signal.SIGKILL and cpu >= cpu_limit):
                return {
                    "kind": "cpu_limit",
                    "detail": f"{name} after {cpu:.2f} s of CPU (limit {cpu_limit} s)",
                }
        memory = limits.get("memory")
        if memory is not None and signum in MEMORY_SIGNALS:
            rss = float(usage.get("max_rss_kib", 0.0)) * 1024
            # A peak no higher than the executor's own at spawn may be inherited, not the task's.
            own = rss > float(usage.get("inherited_rss_kib", 0.0)) * 1024
            near = own and rss >= RSS_NEAR_LIMIT * memory
            if near or MEMORY_EVIDENCE.search(self.evidence(error)):
                return {
                    "kind": "memory_limit",
                    "detail": f"{name} at max RSS {int(rss)} bytes (limit {memory})",
                }
        return {"kind": "signal", "detail": f"killed by {name}", "signal": signum}
