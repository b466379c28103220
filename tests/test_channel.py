"""Channels: a run's stdout streamed into another run's stdin with bounded memory."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import anyio

from lute_async import Event, Executor
from lute_async.channel import Channel

MIB = 1024 * 1024

PRODUCER = """
    import hashlib, os, sys
    total = int(sys.argv[1])
    block = bytearray(os.urandom(64 * 1024))
    digest = hashlib.sha256()
    out = sys.stdout.buffer
    sent = 0
    while sent < total:
        block[:8] = sent.to_bytes(8, "little")
        chunk = bytes(block[: total - sent])
        out.write(chunk)
        digest.update(chunk)
        sent += len(chunk)
    out.flush()
    print(digest.hexdigest(), file=sys.stderr, flush=True)
"""

CONSUMER = """
    import hashlib, sys
    digest = hashlib.sha256()
    count = 0
    while chunk := sys.stdin.buffer.read1(1 << 20):
        digest.update(chunk)
        count += len(chunk)
    print(count, digest.hexdigest(), flush=True)
"""


def _lines(into: list[str], stream: str) -> Callable[[Event], None]:
    def hook(event: Event) -> None:
        if event.data.get("stream") == stream:
            into.append(event.data["message"])

    return hook


async def test_a_200_mib_pipe_delivers_every_byte_with_bounded_executor_memory(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    total = 200 * MIB
    sent: list[str] = []
    received: list[str] = []
    channel = Channel(buffer_size=64 * 1024)
    # The peak of what this process allocates while the bytes flow, from zero for this test
    # alone (ru_maxrss is a peak for the whole process: an earlier test could mask a leak).
    tracemalloc.start()
    tracemalloc.reset_peak()
    start, _ = tracemalloc.get_traced_memory()
    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: executor.run(
                [*script(PRODUCER), str(total)],
                name="producer",
                stdout=channel,
                hooks={"log": _lines(sent, "stderr")},
            )
        )
        tg.start_soon(
            lambda: executor.run(
                script(CONSUMER),
                name="consumer",
                stdin=channel,
                hooks={"log": _lines(received, "stdout")},
            )
        )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    count, digest = received[0].split()
    assert int(count) == total == channel.bytes
    assert digest == sent[0]
    assert peak - start < 32 * MIB  # a buffered stream would add 200 MiB


async def test_a_channel_over_its_limit_ends_the_producer_with_output_limit(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    limit = 4 * MIB
    received: list[str] = []
    channel = Channel(buffer_size=64 * 1024, limit=limit)
    records = {}

    async def run(name: str, argv: list[str], **options: object) -> None:
        records[name] = await executor.run(argv, name=name, **options)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run("producer", [*script(PRODUCER), str(64 * MIB)], stdout=channel))
        tg.start_soon(
            lambda: run(
                "consumer",
                script(CONSUMER),
                stdin=channel,
                hooks={"log": _lines(received, "stdout")},
            )
        )
    assert records["producer"].status == "FAILED"
    assert records["producer"].verdict is not None
    assert records["producer"].verdict["kind"] == "output_limit"
    assert channel.verdict is not None and channel.verdict["kind"] == "output_limit"
    assert records["consumer"].status == "COMPLETED"
    assert int(received[0].split()[0]) == limit == channel.bytes


async def test_workflow_tasks_connected_by_a_channel_stream_between_them(
    executor: Executor, script: Callable[[str], list[str]]
) -> None:
    received: list[str] = []
    graph = executor.graph()
    first = graph.add("first", script("print('hello through the channel')"))
    second = graph.add(
        "second",
        script("import sys; print(sys.stdin.read().upper())"),
        hooks={"log": _lines(received, "stdout")},
    )
    channel = Channel(source=first.stdout, target=second.stdin)
    records = await graph.run()
    assert all(r.status == "COMPLETED" for r in records.values())
    assert received[0] == "HELLO THROUGH THE CHANNEL"
    assert channel.bytes == len("hello through the channel\n")
