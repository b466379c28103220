"""Load and soak runs for the reliability table: nothing lost, reordered or hung, no growth.

``python -m benchmarks.reliability load [--runs 1000 --at-once 200 --messages 10000]`` starts
``runs`` tasks, ``at_once`` at a time, each sending ``messages`` over a mix of communicators (the
pipe, the Unix socket and TCP, one to three per run). ``python -m benchmarks.reliability soak
[--minutes 10]`` keeps short tasks running back to back and samples the executor's open fds and
RSS. Both check every message by its per-connection seq and by the index its payload carries,
and every record in the database; ``tests/test_load.py`` runs the same code at CI size.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import anyio

from benchmarks.harness import CHILDREN_DIR, PYTHON, rss_kib
from lute_async import AnalysisRecord, Event, Executor
from lute_async.messages import TaskStatus

TASK = CHILDREN_DIR / "mixed_channels.py"
#: The communicator mixes runs cycle through: every kind alone, every pair, all three.
MIXES: tuple[tuple[str, ...], ...] = (
    ("pipe",),
    ("socket",),
    ("tcp",),
    ("pipe", "socket"),
    ("pipe", "tcp"),
    ("socket", "tcp"),
    ("pipe", "socket", "tcp"),
)


def open_fds() -> int:
    """How many file descriptors this process holds now."""
    return len(os.listdir("/proc/self/fd"))


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def heap_in_use_kib() -> int | None:
    """Bytes malloc has handed out and not had back (glibc's mallinfo2), in KiB.

    RSS also counts freed memory malloc keeps for reuse (one arena per thread that allocated),
    so a flat heap under a rising RSS is retention, not a leak. None without glibc 2.33+.
    """
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return int(info.uordblks + info.hblkhd) // 1024


class Ledger:
    """Checks the ``tick`` stream as a hook: per connection, seq goes 1, 2, 3, ... and the
    payload's index goes 0, 1, 2, ...; the payload names the communicator it was sent on."""

    def __init__(self) -> None:
        # (run id, source, connection) -> [last seq, ticks seen]
        self._connections: dict[tuple[str, str, int], list[int]] = {}
        self.delivered: Counter[str] = Counter()
        self.reordered = 0
        self.misrouted = 0

    def tick(self, event: Event) -> None:
        message = event.message
        key = (event.run.id, message.source, message.conn)
        state = self._connections.get(key)
        if state is None:
            state = self._connections[key] = [message.seq - 1, 0]
        kind, index = message.data
        if message.seq != state[0] + 1 or index != state[1]:
            self.reordered += 1
        if kind != message.source:
            self.misrouted += 1
        state[0] = message.seq
        state[1] += 1
        self.delivered[event.run.id] += 1

    def forget(self, run_id: str) -> None:
        """Drop a finished run's connection state (the soak would otherwise grow it)."""
        for key in [key for key in self._connections if key[0] == run_id]:
            del self._connections[key]


@dataclass
class Tally:
    """What a set of runs delivered, checked against what each task says it sent."""

    runs: int = 0
    expected: int = 0
    delivered: int = 0
    lost: int = 0
    reordered: int = 0
    misrouted: int = 0
    hung: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    protocol_errors: int = 0

    def add(self, record: AnalysisRecord, ledger: Ledger, messages: int) -> None:
        """Count one finished run (its record as returned) against the ledger."""
        self.runs += 1
        self.expected += messages
        got = ledger.delivered.pop(record.id, 0)
        self.delivered += got
        self.lost += messages - got
        self.statuses[record.status] = self.statuses.get(record.status, 0) + 1
        self.hung += record.status == TaskStatus.TIMEDOUT
        self.protocol_errors += len(record.extra.get("protocol_errors") or ())
        ledger.forget(record.id)

    @property
    def clean(self) -> bool:
        return (
            self.lost == 0
            and self.reordered == 0
            and self.misrouted == 0
            and self.hung == 0
            and self.protocol_errors == 0
            and set(self.statuses) == {"COMPLETED"}
        )


@dataclass
class LoadReport:
    """The outcome of a load run."""

    runs: int
    at_once: int
    messages_per_run: int
    tally: Tally
    stored: int
    non_terminal: int
    fds_before: int
    fds_after: int
    peak_rss_kib: int
    seconds: float

    def summary(self) -> str:
        t = self.tally
        return (
            f"load: {t.runs} runs ({self.at_once} at a time), {t.delivered:,} of {t.expected:,} "
            f"messages over pipe/socket/tcp mixes, lost {t.lost}, reordered {t.reordered}, "
            f"misrouted {t.misrouted}, hung {t.hung}, protocol errors {t.protocol_errors}, "
            f"statuses {dict(t.statuses)}, records {self.stored} ({self.non_terminal} "
            f"non-terminal), fds {self.fds_before}->{self.fds_after}, executor peak RSS "
            f"{self.peak_rss_kib / 1024:.0f} MiB, {self.seconds:.0f} s"
        )


def _executor(workdir: Path, at_once: int) -> Executor:
    return Executor(
        db=workdir / "runs.db",
        workdir=workdir / "work",
        max_concurrency=at_once,
        log_events=False,  # a lifecycle line per run would flood the terminal at this scale
    )


def _command(messages: int, mix: tuple[str, ...]) -> list[str]:
    return [PYTHON, os.fspath(TASK), str(messages), ",".join(mix)]


async def _stored(executor: Executor) -> tuple[int, int]:
    """How many runs the executor's store holds, and how many of them are not terminal."""
    store = await executor.store()
    stored = await anyio.to_thread.run_sync(lambda: store.query(limit=None))
    return len(stored), sum(not TaskStatus(r.status).is_terminal for r in stored)


async def load(
    workdir: Path, *, runs: int, at_once: int, messages: int, timeout: float = 600.0
) -> LoadReport:
    """Run ``runs`` mixed-communicator tasks, ``at_once`` at a time, and check everything."""
    ledger = Ledger()
    tally = Tally()
    peak = rss_kib()
    # What a process keeps from its first spawn on (its guardian's pipe, /dev/null for the
    # tasks' stdin) is opened before the count, so only what runs leave behind is compared.
    async with _executor(workdir / "first-spawn", 1) as first:
        await first.run(["true"])
    gc.collect()
    fds_before = open_fds()
    began = time.monotonic()
    async with _executor(workdir, at_once) as executor:
        executor.on("tick", ledger.tick)

        async def one(i: int) -> None:
            nonlocal peak
            mix = MIXES[i % len(MIXES)]
            record = await executor.run(
                _command(messages, mix), name=f"load-{i}", communicators=mix, timeout=timeout
            )
            tally.add(record, ledger, messages)
            peak = max(peak, rss_kib())

        async with anyio.create_task_group() as tg:
            for i in range(runs):
                tg.start_soon(one, i)
        stored, non_terminal = await _stored(executor)
    seconds = time.monotonic() - began
    gc.collect()
    return LoadReport(
        runs=runs,
        at_once=at_once,
        messages_per_run=messages,
        tally=tally,
        stored=stored,
        non_terminal=non_terminal,
        fds_before=fds_before,
        fds_after=open_fds(),
        peak_rss_kib=peak,
        seconds=seconds,
    )


@dataclass
class Sample:
    """The executor process at one moment of a soak."""

    seconds: float
    runs: int
    fds: int
    rss_kib: int
    objects: int
    heap_kib: int | None = None
    py_blocks: int = 0


def _kib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.1f} MiB"


def _slope_per_min(samples: list[Sample]) -> float:
    if len(samples) < 2:
        return 0.0
    slope, _ = statistics.linear_regression(
        [s.seconds for s in samples], [float(s.rss_kib) for s in samples]
    )
    return slope * 60


@dataclass
class SoakReport:
    """The outcome of a soak: the tally and how fds and memory moved after the warm-up."""

    seconds: float
    at_once: int
    messages_per_run: int
    tally: Tally
    stored: int
    non_terminal: int
    samples: list[Sample]
    warmup: int

    def _steady(self) -> list[Sample]:
        return self.samples[self.warmup :] or self.samples

    @property
    def fd_growth(self) -> int:
        steady = self._steady()
        return max(s.fds for s in steady) - steady[0].fds

    @property
    def rss_growth_kib(self) -> int:
        steady = self._steady()
        return steady[-1].rss_kib - steady[0].rss_kib

    @property
    def rss_slope_kib_per_min(self) -> float:
        """Least-squares slope of RSS over time after the warm-up."""
        return _slope_per_min(self._steady())

    @property
    def rss_slope_late_kib_per_min(self) -> float:
        """The same slope over the second half of the soak: a leak keeps it up, caches level."""
        return _slope_per_min(self.samples[len(self.samples) // 2 :])

    @property
    def heap_growth_kib(self) -> int | None:
        steady = self._steady()
        first, last = steady[0].heap_kib, steady[-1].heap_kib
        return None if first is None or last is None else last - first

    @property
    def object_growth(self) -> int:
        steady = self._steady()
        return steady[-1].objects - steady[0].objects

    def summary(self) -> str:
        t = self.tally
        steady = self._steady()
        return (
            f"soak: {self.seconds / 60:.1f} min, {t.runs} runs ({self.at_once} at a time, "
            f"{t.runs / self.seconds:.0f} runs/s), {t.delivered:,} of {t.expected:,} messages, "
            f"lost {t.lost}, reordered {t.reordered}, misrouted {t.misrouted}, hung {t.hung}, "
            f"statuses {dict(t.statuses)}, records {self.stored} ({self.non_terminal} "
            f"non-terminal); after warm-up: fds {steady[0].fds}->{steady[-1].fds} "
            f"(max growth {self.fd_growth}), RSS {steady[0].rss_kib / 1024:.1f}->"
            f"{steady[-1].rss_kib / 1024:.1f} MiB (slope {self.rss_slope_kib_per_min:+.1f} "
            f"KiB/min; second half {self.rss_slope_late_kib_per_min:+.1f}), "
            f"malloc heap in use {_kib(steady[0].heap_kib)}->{_kib(steady[-1].heap_kib)}, "
            f"Python blocks {steady[0].py_blocks}->{steady[-1].py_blocks}, "
            f"gc objects {steady[0].objects}->{steady[-1].objects}"
        )


async def soak(
    workdir: Path,
    *,
    seconds: float,
    at_once: int,
    messages: int,
    samples: int = 40,
    warmup: float = 0.1,
    timeout: float = 120.0,
) -> SoakReport:
    """Keep ``at_once`` short runs going back to back for ``seconds``, sampling fds and RSS.

    The soak is cut into ``samples`` spans; at the end of each span the runs in flight finish
    and the executor is sampled while no run holds anything, so the fd count is comparable
    from span to span. The first ``warmup`` fraction of the samples is the warm-up.
    """
    ledger = Ledger()
    tally = Tally()
    taken: list[Sample] = []
    counter = itertools.count()
    began = time.monotonic()
    async with _executor(workdir, at_once) as executor:
        executor.on("tick", ledger.tick)

        async def worker(until: float) -> None:
            while time.monotonic() < until:
                i = next(counter)
                mix = MIXES[i % len(MIXES)]
                record = await executor.run(
                    _command(messages, mix), name=f"soak-{i}", communicators=mix, timeout=timeout
                )
                tally.add(record, ledger, messages)

        for span in range(1, samples + 1):
            async with anyio.create_task_group() as tg:
                for _ in range(at_once):
                    tg.start_soon(worker, began + seconds * span / samples)
            gc.collect()
            taken.append(
                Sample(
                    time.monotonic() - began,
                    tally.runs,
                    open_fds(),
                    rss_kib(),
                    len(gc.get_objects()),
                    heap_in_use_kib(),
                    sys.getallocatedblocks(),
                )
            )
        stored, non_terminal = await _stored(executor)
    return SoakReport(
        seconds=time.monotonic() - began,
        at_once=at_once,
        messages_per_run=messages,
        tally=tally,
        stored=stored,
        non_terminal=non_terminal,
        samples=taken,
        warmup=max(1, int(len(taken) * warmup)),
    )


def _report_dict(report: LoadReport | SoakReport) -> dict[str, Any]:
    data = asdict(report)
    data["summary"] = report.summary()
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.reliability", description=__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    load_args = sub.add_parser("load", help="many runs at once, many messages each")
    load_args.add_argument("--runs", type=int, default=1000)
    load_args.add_argument("--at-once", type=int, default=200)
    load_args.add_argument("--messages", type=int, default=10_000)
    soak_args = sub.add_parser("soak", help="short runs back to back; fd and memory growth")
    soak_args.add_argument("--minutes", type=float, default=10.0)
    soak_args.add_argument("--at-once", type=int, default=8)
    soak_args.add_argument("--messages", type=int, default=100)
    for p in (load_args, soak_args):
        p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
        p.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    args = parser.parse_args(argv)
    report: LoadReport | SoakReport
    loop = {"use_uvloop": args.loop == "uvloop"}
    with tempfile.TemporaryDirectory(prefix="lute-reliability-") as tmp:
        if args.what == "load":
            report = anyio.run(
                partial(load, runs=args.runs, at_once=args.at_once, messages=args.messages),
                Path(tmp),
                backend_options=loop,
            )
        else:
            report = anyio.run(
                partial(
                    soak, seconds=args.minutes * 60, at_once=args.at_once, messages=args.messages
                ),
                Path(tmp),
                backend_options=loop,
            )
    print(report.summary())
    if args.json:
        Path(args.json).write_text(json.dumps(_report_dict(report), indent=2, default=str))
    ok = report.tally.clean and report.non_terminal == 0
    if isinstance(report, SoakReport):
        ok = ok and report.fd_growth == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
