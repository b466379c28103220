"""``python -m benchmarks.cpu_path [--messages N] [--rounds N]``: the executor's receiving path
alone, in CPU time, against the wire floor's reader on the same bytes.

The throughput rows time a real task, so their rates also carry the sender and, on a shared
machine, the scheduler. This feeds one pre-packed stream (a hello and N ~100-byte ``data``
frames, as ``children/task.py flood`` sends them) in 64 KiB reads, in one process, through what
a pipe reader does (``pump_connection``: decode in 16 KiB batches, the run's memory stream, the
dispatcher, the hooks) and through the floor's bare ``msgpack.Unpacker``, alternately, and
reports process CPU time per message: with one per-message sync hook, one batch hook reading
``batch.messages``, and one iterating the batch's Events. Each hook, as the floor's reader,
counts and checks seq order as the throughput rows do (``scenarios.Delivery``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import msgpack

from benchmarks.scenarios import Delivery
from lute_async.communicators.base import FrameConnection, RunChannel
from lute_async.communicators.pump import pump_connection
from lute_async.executor import Executor
from lute_async.hooks.registry import EventBatch

READ = 64 * 1024
BODY = b"x" * 60
MODES = ("per-message hook", "batch hook, messages", "batch hook, events")


def stream(run_id: str, n: int) -> list[bytes]:
    pack = msgpack.Packer(use_bin_type=True).pack
    data = bytearray(pack({"v": 1, "run": run_id, "pid": 1, "rank": None, "secret": None}))
    for seq in range(1, n + 1):
        data += pack({"sig": "data", "seq": seq, "ts": time.time(), "data": BODY})
    return [bytes(data[at : at + READ]) for at in range(0, len(data), READ)]


def floor(chunks: list[bytes], n: int) -> float:
    count = Delivery()
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=1 << 30, strict_map_key=False)
    start = time.process_time()
    for chunk in chunks:
        unpacker.feed(chunk)
        for frame in unpacker:
            if "sig" in frame:
                count.arrived(frame["seq"])
    spent = time.process_time() - start
    assert count.count == n and count.in_order
    return spent


def register(executor: Executor, mode: str, count: Delivery) -> None:
    if mode == MODES[0]:
        executor.on("data", lambda event: count.arrived(event.message.seq))
        return
    by_message = mode == MODES[1]

    def on_batch(batch: EventBatch) -> None:
        arrived = count.arrived
        if by_message:
            for message in batch.messages:
                arrived(message.seq)
        else:
            for event in batch:
                arrived(event.message.seq)

    executor.on_batch("data", on_batch)


async def lute(workdir: Path, mode: str, n: int) -> tuple[float, list[bytes]]:
    count = Delivery()
    executor = Executor(db=workdir / "runs.db", workdir=workdir / "work", log_events=False)
    register(executor, mode, count)
    run = executor._make_run(["true"], {})
    chunks = stream(run.id, n)
    channel = RunChannel(
        run.id, run._secret, run._send, max_frame=1 << 20, on_protocol_error=print_error
    )
    parser = FrameConnection(channel, "pipe", require_secret=False)
    reads = iter([*chunks, b""])

    async def receive() -> bytes:
        await anyio.lowlevel.checkpoint()  # as a readiness wait would
        return next(reads)

    start = time.process_time()
    async with anyio.create_task_group() as tg:
        tg.start_soon(run._dispatch)
        async with run._send:
            await pump_connection(receive, parser, run._send)
    spent = time.process_time() - start
    await executor.aclose()
    assert count.count == n and count.in_order, (count.count, count.in_order)
    return spent, chunks


def print_error(*error: Any) -> None:
    raise AssertionError(f"protocol error: {error}")


async def measure(n: int, rounds: int, report: Callable[[str], None]) -> None:
    with tempfile.TemporaryDirectory(prefix="lute-cpu-") as tmp:
        for mode in MODES:
            ratios, costs = [], []
            for index in range(rounds):
                workdir = Path(tmp) / f"{MODES.index(mode)}-{index}"
                spent, chunks = await lute(workdir, mode, n)
                floor_spent = floor(chunks, n)
                spent = (spent + (await lute(workdir / "again", mode, n))[0]) / 2  # floor between
                ratios.append(floor_spent / spent)
                costs.append(spent / n * 1e9)
            report(
                f"{mode:22s} {statistics.median(costs):6.0f} ns/msg  "
                f"{statistics.median(ratios):4.0%} of the floor (median of {rounds}; "
                f"rounds {min(ratios):.0%}-{max(ratios):.0%})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cpu_path", description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    from lute_async.logs import configure

    configure(level="WARNING")
    anyio.run(measure, args.messages, args.rounds, print, backend_options={"use_uvloop": True})


if __name__ == "__main__":
    main()
