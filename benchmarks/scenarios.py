"""The scenarios of issue 6, each timing its floor and lute-async alternately in one process."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio

from benchmarks.harness import (
    CHILD,
    CHILDREN_DIR,
    PYTHON,
    Result,
    RssSampler,
    alternate,
    child_env,
    median,
    percentile,
    read_frames,
    read_lines,
    rss_kib,
)
from lute_async.executor import Executor
from lute_async.hooks.registry import Event, EventBatch


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does; ``quick`` and ``full`` are the two presets."""

    spawn_rounds: int
    spawn_per_round: int
    messages: int
    lines: int
    throughput_rounds: int
    ticks: int
    latency_rounds: int
    payload_mib: int
    payload_rounds: int
    fanout_tasks: int
    fanout_rounds: int
    concurrency: int = 64


FULL = Sizes(4, 50, 200_000, 10_000, 5, 1000, 3, 256, 3, 500, 3)
QUICK = Sizes(3, 10, 50_000, 10_000, 3, 300, 3, 64, 2, 100, 2)
SMOKE = Sizes(1, 2, 500, 100, 1, 20, 1, 1, 1, 6, 1, concurrency=3)


class Delivery:
    """Counts messages as they arrive and checks their order (seq 1, 2, 3, ...)."""

    def __init__(self) -> None:
        self.count = 0
        self.in_order = True
        self.first = 0.0
        self.last = 0.0

    def arrived(self, seq: int) -> None:
        now = time.perf_counter()
        if not self.count:
            self.first = now
        self.count += 1
        self.last = now
        if seq != self.count:
            self.in_order = False

    def rate(self) -> float:
        """Messages per second between the first and the last arrival."""
        span = self.last - self.first
        return (self.count - 1) / span if span > 0 and self.count > 1 else 0.0


class Bench:
    """Holds the scratch directory and builds executors recording there."""

    def __init__(self, sizes: Sizes, workdir: Path) -> None:
        self.sizes = sizes
        self.workdir = workdir
        self.delivery_ok = True
        self._executors = 0

    def executor(self, **options: Any) -> Executor:
        self._executors += 1
        db = self.workdir / f"runs-{self._executors}.db"
        return Executor(db=db, workdir=self.workdir / "work", grace=2.0, **options)

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.delivery_ok = False
            raise AssertionError(f"benchmark delivery check failed: {what}")

    # -- floors: the same bytes with no executor -----------------------------------------------

    async def _pipe_child(self, args: list[str], on_frame: Callable[[Any], None]) -> None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(read_fd, False)
        try:
            process = await anyio.open_process(
                [PYTHON, str(CHILD), *args],
                env=child_env(BENCH_FD=str(write_fd)),
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                cwd=self.workdir,
            )
            os.close(write_fd)
            write_fd = -1
            async with process:
                await read_frames(read_fd, on_frame, 1 << 30)
                await process.wait()
        finally:
            if write_fd >= 0:
                os.close(write_fd)
            anyio.notify_closing(read_fd)
            os.close(read_fd)

    async def _socket_child(
        self, args: list[str], on_frame: Callable[[Any], None], max_buffer: int = 1 << 30
    ) -> None:
        directory = tempfile.mkdtemp(dir=self.workdir)
        path = os.path.join(directory, "s")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(8)
        listener.setblocking(False)
        try:
            process = await anyio.open_process(
                [PYTHON, str(CHILD), *args],
                env=child_env(BENCH_SOCKET=path),
                stdin=subprocess.DEVNULL,
                stdout=None,
                stderr=None,
                cwd=self.workdir,
            )
            async with process:
                await anyio.wait_readable(listener)
                conn, _ = listener.accept()
                conn.setblocking(False)
                try:
                    await read_frames(conn.fileno(), on_frame, max_buffer)
                finally:
                    anyio.notify_closing(conn)
                    conn.close()
                await process.wait()
        finally:
            anyio.notify_closing(listener)
            listener.close()

    # -- spawn ---------------------------------------------------------------------------------

    async def spawn(self) -> list[Result]:
        from benchmarks import sandbox

        return [
            await self._spawn("spawn", [PYTHON, str(CHILD), "trivial"]),
            await self._spawn("spawn (run_function)", None),
            *await sandbox.measure(self),  # floor: the plain spawn, same run
        ]

    async def _spawn(self, label: str, command: list[str] | None) -> Result:
        """N sequential runs of a task that reports started and result, vs ``python -c pass``."""
        sizes = self.sizes
        n = sizes.spawn_per_round
        executor = self.executor()
        results_seen = 0

        def on_result(event: Event) -> None:
            nonlocal results_seen
            results_seen += 1

        executor.on("result", on_result)
        # The worker imports nothing from its cwd: the task module comes from PYTHONPATH.
        path = os.pathsep.join([str(CHILDREN_DIR), os.environ.get("PYTHONPATH", "")])
        functions_env = {"PYTHONPATH": path}
        async with executor:

            async def floor() -> float:
                start = time.perf_counter()
                for _ in range(n):
                    await anyio.run_process([PYTHON, "-c", "pass"])
                return (time.perf_counter() - start) / n * 1000

            async def lute() -> float:
                start = time.perf_counter()
                for _ in range(n):
                    if command is None:
                        record = await executor.run_function(
                            "bench_functions:noop", cwd=CHILDREN_DIR, env=functions_env
                        )
                    else:
                        record = await executor.run(command, cwd=self.workdir)
                    self.check(record.status == "COMPLETED", f"{label}: {record.status}")
                return (time.perf_counter() - start) / n * 1000

            await lute()  # warm the record store, thread pool and page cache
            results_seen = 0
            floors, lutes = await alternate(sizes.spawn_rounds, floor, lute)
        total = sizes.spawn_rounds * n
        self.check(results_seen == total, f"{label}: {results_seen}/{total} results")
        lute_ms, floor_ms = median(lutes), median(floors)
        return Result(
            label,
            "ms/task",
            lute_ms,
            floor_ms,
            higher_is_better=False,
            target="<= 1.25x floor",
            met=lute_ms <= 1.25 * floor_ms,
            delivered=f"{results_seen}/{total} results",
            rounds=[{"floor": f, "lute_async": v} for f, v in zip(floors, lutes, strict=True)],
        )

    async def emit(self) -> list[Result]:
        from benchmarks.emit import measure

        return await measure(self)

    # -- throughput ----------------------------------------------------------------------------

    async def throughput(self) -> list[Result]:
        results = [await self._frames_throughput(via) for via in ("pipe", "socket")]
        results.append(await self._frames_throughput("pipe", batch=True))
        results.append(await self._lines_throughput())
        return results

    async def _frames_throughput(self, via: str, batch: bool = False) -> Result:
        """One sync hook per message (``batch``: one batch hook reading each message)."""
        n, rounds = self.sizes.messages, self.sizes.throughput_rounds
        executor = self.executor(communicators=(via,))
        delivery = Delivery()
        if batch:

            def on_batch(events: EventBatch) -> None:
                arrived = delivery.arrived
                for message in events.messages:
                    arrived(message.seq)

            executor.on_batch("data", on_batch)
        else:
            executor.on("data", lambda event: delivery.arrived(event.message.seq))
        async with executor:

            async def floor() -> float:
                seen = Delivery()
                args = ["raw-flood", str(n), via]

                def on_frame(frame: Any) -> None:
                    if "sig" in frame:
                        seen.arrived(frame["seq"])

                if via == "pipe":
                    await self._pipe_child(args, on_frame)
                else:
                    await self._socket_child(args, on_frame)
                self.check(seen.count == n and seen.in_order, f"{via} floor delivery")
                return seen.rate()

            async def lute() -> float:
                nonlocal delivery
                delivery = Delivery()
                record = await executor.run([PYTHON, str(CHILD), "flood", str(n), via])
                self.check(record.status == "COMPLETED", f"{via} flood: {record.status}")
                self.check(
                    delivery.count == n and delivery.in_order,
                    f"{via}: {delivery.count}/{n} delivered, in order: {delivery.in_order}",
                )
                return delivery.rate()

            floors, lutes = await alternate(rounds, floor, lute)
        rate, floor_rate = median(lutes), median(floors)
        return Result(
            f"throughput {'batch hook, ' if batch else ''}{via} ({n:,} msgs)",
            "msg/s",
            rate,
            floor_rate,
            higher_is_better=True,
            target=">= 60% floor, >= 200k/s",
            met=rate >= 0.6 * floor_rate and rate >= 200_000,
            delivered=f"{n:,}/{n:,} in order x {rounds}",
            rounds=[{"floor": f, "lute_async": v} for f, v in zip(floors, lutes, strict=True)],
        )

    async def _lines_throughput(self) -> Result:
        n, rounds = self.sizes.lines, self.sizes.throughput_rounds
        executor = self.executor(communicators=("pipe",))
        delivery = Delivery()

        def on_log(event: Event) -> None:
            if event.data.get("stream") == "stdout":
                delivery.arrived(event.message.seq)

        executor.on("log", on_log)
        async with executor:

            async def floor() -> float:
                seen = Delivery()
                read_fd, write_fd = os.pipe()
                os.set_blocking(read_fd, False)
                process = await anyio.open_process(
                    [PYTHON, str(CHILD), "lines", str(n)],
                    env=child_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=write_fd,
                    stderr=None,
                )
                os.close(write_fd)
                async with process:
                    await read_lines(read_fd, lambda line: seen.arrived(seen.count + 1))
                    await process.wait()
                anyio.notify_closing(read_fd)
                os.close(read_fd)
                self.check(seen.count == n, f"stdout floor: {seen.count}/{n}")
                return seen.rate()

            async def lute() -> float:
                nonlocal delivery
                delivery = Delivery()
                record = await executor.run([PYTHON, str(CHILD), "lines", str(n)])
                self.check(record.status == "COMPLETED", f"lines: {record.status}")
                self.check(
                    delivery.count == n and delivery.in_order,
                    f"stdout: {delivery.count}/{n} lines, in order: {delivery.in_order}",
                )
                return delivery.rate()

            floors, lutes = await alternate(rounds, floor, lute)
        rate, floor_rate = median(lutes), median(floors)
        return Result(
            f"throughput stdout ({n:,} lines)",
            "lines/s",
            rate,
            floor_rate,
            higher_is_better=True,
            target="(no target)",
            met=None,
            delivered=f"{n:,}/{n:,} in order x {rounds}",
            rounds=[{"floor": f, "lute_async": v} for f, v in zip(floors, lutes, strict=True)],
        )

    # -- latency -------------------------------------------------------------------------------

    async def latency(self) -> list[Result]:
        n, rounds = self.sizes.ticks, self.sizes.latency_rounds
        executor = self.executor(communicators=("pipe",))
        lute_samples: list[float] = []
        executor.on("tick", lambda event: lute_samples.append(time.time() - event.data))
        floor_samples: list[float] = []
        async with executor:

            async def floor() -> float:
                def on_frame(frame: Any) -> None:
                    if "sig" in frame:
                        floor_samples.append(time.time() - frame["data"])

                await self._pipe_child(["raw-ticks", str(n)], on_frame)
                return 0.0

            async def lute() -> float:
                record = await executor.run([PYTHON, str(CHILD), "ticks", str(n)])
                self.check(record.status == "COMPLETED", f"ticks: {record.status}")
                return 0.0

            await alternate(rounds, floor, lute)
        self.check(len(lute_samples) == n * rounds, f"ticks: {len(lute_samples)}/{n * rounds}")
        self.check(len(floor_samples) == n * rounds, "floor ticks")
        us = 1e6
        med, floor_med = median(lute_samples) * us, median(floor_samples) * us
        p99, floor_p99 = percentile(lute_samples, 0.99) * us, percentile(floor_samples, 0.99) * us
        delivered = f"{len(lute_samples):,}/{n * rounds:,}"
        return [
            Result("latency median (1 kHz)", "us", med, floor_med, False, "<= 200 us",
                   med <= 200, delivered),
            Result("latency p99 (1 kHz)", "us", p99, floor_p99, False, "<= 2000 us",
                   p99 <= 2000, delivered),
        ]  # fmt: skip

    # -- payload -------------------------------------------------------------------------------

    async def payload(self) -> list[Result]:
        size = self.sizes.payload_mib * 1024 * 1024
        rounds = self.sizes.payload_rounds
        executor = self.executor(communicators=("socket",), max_frame=size + (1 << 20))
        arrived = 0.0
        got = 0

        def on_result(event: Event) -> None:
            nonlocal arrived, got
            arrived = time.perf_counter()
            got = len(event.data["payload"])

        executor.on("result", on_result)
        totals: list[float] = []
        async with executor:

            async def floor() -> float:
                received = 0
                start = time.perf_counter()
                end = start

                def on_frame(frame: Any) -> None:
                    nonlocal received, end
                    if "sig" in frame:
                        received = len(frame["data"]["payload"])
                        end = time.perf_counter()

                await self._socket_child(["raw-payload", str(size)], on_frame, size + (1 << 20))
                self.check(received == size, f"payload floor: {received}/{size} bytes")
                return size / 1e6 / (end - start)

            async def lute() -> float:
                nonlocal got
                got = 0
                start = time.perf_counter()
                record = await executor.run([PYTHON, str(CHILD), "payload", str(size)])
                totals.append(time.perf_counter() - start)
                self.check(record.status == "COMPLETED", f"payload: {record.status}")
                self.check(got == size, f"payload: {got}/{size} bytes")
                return size / 1e6 / (arrived - start)

            floors, lutes = await alternate(rounds, floor, lute)
        rate, floor_rate = median(lutes), median(floors)
        return [
            Result(
                f"payload ({self.sizes.payload_mib} MiB result, socket)",
                "MB/s",
                rate,
                floor_rate,
                higher_is_better=True,
                target=">= 50% floor",
                met=rate >= 0.5 * floor_rate,
                delivered=f"{rounds}/{rounds}; whole run {median(totals):.2f} s",
                rounds=[{"floor": f, "lute_async": v} for f, v in zip(floors, lutes, strict=True)],
            )
        ]

    # -- fan-out -------------------------------------------------------------------------------

    async def fanout(self) -> list[Result]:
        n, rounds, limit = self.sizes.fanout_tasks, self.sizes.fanout_rounds, self.sizes.concurrency
        command = [PYTHON, str(CHILD), "trivial"]
        executor = self.executor(max_concurrency=limit)
        completed = 0
        growth: list[float] = []

        async def one(run: Callable[[], Any]) -> None:
            nonlocal completed
            record = await run()
            if getattr(record, "status", "COMPLETED") == "COMPLETED":
                completed += 1

        async with executor:

            async def floor() -> float:
                limiter = anyio.CapacityLimiter(limit)

                async def run_one() -> Any:
                    async with limiter:
                        return await anyio.run_process(command, cwd=self.workdir)

                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for _ in range(n):
                        tg.start_soon(one, run_one)
                return n / (time.perf_counter() - start)

            async def lute() -> float:
                sampler = RssSampler()
                before = rss_kib()
                start = time.perf_counter()
                async with anyio.create_task_group() as outer:
                    outer.start_soon(sampler.run)
                    async with anyio.create_task_group() as tg:
                        for _ in range(n):
                            tg.start_soon(one, lambda: executor.run(command, cwd=self.workdir))
                    elapsed = time.perf_counter() - start
                    outer.cancel_scope.cancel()
                growth.append((sampler.peak - before) / limit)
                return n / elapsed

            floors, lutes = await alternate(rounds, floor, lute)
        self.check(completed == 2 * n * rounds, f"fan-out: {completed}/{2 * n * rounds} completed")
        rate, floor_rate = median(lutes), median(floors)
        per_run = median(growth)
        return [
            Result(
                f"fan-out ({n} tasks, {limit} at once)",
                "tasks/s",
                rate,
                floor_rate,
                higher_is_better=True,
                target=">= 80% floor",
                met=rate >= 0.8 * floor_rate,
                delivered=f"{n}/{n} completed x {rounds}",
                rounds=[{"floor": f, "lute_async": v} for f, v in zip(floors, lutes, strict=True)],
            ),
            Result(
                "fan-out RSS growth per concurrent run",
                "KiB",
                per_run,
                None,
                higher_is_better=False,
                target="< 100 KiB",
                met=per_run < 100,
                delivered=f"peak growth {max(growth) * limit / 1024:.1f} MiB",
            ),
        ]


SCENARIOS = ("spawn", "throughput", "latency", "fanout", "payload", "emit")
