"""What every scenario shares: results, alternating rounds, the bare wire reader, memory."""

from __future__ import annotations

import os
import statistics
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
import msgpack

CHILD = Path(__file__).parent / "children" / "task.py"
CHILDREN_DIR = CHILD.parent
PYTHON = sys.executable
READ_SIZE = 256 * 1024


@dataclass
class Result:
    """One row of the table: lute-async against its floor (and LUTE where measured)."""

    scenario: str
    unit: str
    lute_async: float
    floor: float | None
    higher_is_better: bool
    target: str
    met: bool | None
    delivered: str = ""
    lute: float | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)
    lute_delivered: str = ""

    @property
    def ratio(self) -> float | None:
        """lute-async as a fraction of the floor's rate, or as a multiple of the floor's time."""
        if self.floor is None or not self.floor or not self.lute_async:
            return None
        return self.lute_async / self.floor

    @property
    def lute_ratio(self) -> float | None:
        """How many times better lute-async is than LUTE (faster, or more messages/s)."""
        if not self.lute or not self.lute_async:
            return None
        return self.lute_async / self.lute if self.higher_is_better else self.lute / self.lute_async

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "lute_ratio": self.lute_ratio}


Measure = Callable[[], Awaitable[float]]


async def alternate(rounds: int, floor: Measure, lute: Measure) -> tuple[list[float], list[float]]:
    """Run floor and lute-async alternately, ``rounds`` times each, and return both series."""
    floors: list[float] = []
    lutes: list[float] = []
    for _ in range(rounds):
        floors.append(await floor())
        lutes.append(await lute())
    return floors, lutes


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def rss_kib() -> int:
    """This process's resident set size now, in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class RssSampler:
    """Samples this process's RSS in the background (a benchmark may poll; the library may not)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_kib())
            await anyio.sleep(self.interval)


async def read_frames(fd: int, on_frame: Callable[[Any], None], max_buffer: int) -> None:
    """The floor's reader: readiness wait, ``os.read``, a bare ``msgpack.Unpacker``."""
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=max_buffer, strict_map_key=False)
    while True:
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        if not chunk:
            return
        unpacker.feed(chunk)
        for frame in unpacker:
            on_frame(frame)


async def read_lines(fd: int, on_line: Callable[[bytes], None]) -> None:
    """The floor's line reader: the same reads, split on newlines."""
    partial = b""
    while True:
        try:
            chunk = os.read(fd, READ_SIZE)
        except BlockingIOError:
            await anyio.wait_readable(fd)
            continue
        if not chunk:
            if partial:
                on_line(partial)
            return
        parts = (partial + chunk).split(b"\n")
        partial = parts.pop()
        for line in parts:
            on_line(line)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def reap(pid: int) -> None:
    """Reap a finished child started without a Popen object to do it."""
    os.waitpid(pid, 0)
