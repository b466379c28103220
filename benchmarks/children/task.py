"""The task processes the benchmarks start: ``task.py MODE [ARGS]``.

Each lute-async mode has a ``raw-`` twin that sends the same msgpack frames with no
lute-async at all (the wire floor): batched ``os.write`` to an inherited pipe or ``sendall`` to a
Unix socket. Imports are lazy so every mode pays only for what it uses.
"""

import os
import sys
import time

FLUSH = 64 * 1024
BODY = b"x" * 60  # with sig/seq/ts keys a frame is ~100 bytes


def _raw_sink(via: str):  # type: ignore[no-untyped-def]
    """A write function for the floor: the inherited pipe fd, or the Unix socket."""
    if via == "pipe":
        fd = int(os.environ["BENCH_FD"])

        def write(data: bytes | bytearray) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]

        return write
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(os.environ["BENCH_SOCKET"])
    return sock.sendall


def trivial() -> None:
    from lute_async.task import Reporter

    with Reporter.connect() as report:
        report.started()
        report.result(None)


def flood(n: int, via: str) -> None:
    from lute_async.task import Reporter

    with Reporter.connect(prefer=(via,)) as report:
        emit = report.emit
        for _ in range(n):
            emit("data", BODY)


def raw_flood(n: int, via: str) -> None:
    import msgpack

    write = _raw_sink(via)
    pack = msgpack.Packer(use_bin_type=True).pack
    buf = bytearray(pack({"v": 1, "run": "floor", "pid": os.getpid(), "rank": None}))
    for seq in range(1, n + 1):
        buf += pack({"sig": "data", "seq": seq, "ts": time.time(), "data": BODY})
        if len(buf) >= FLUSH:
            write(buf)
            buf.clear()
    write(buf)


def lines(n: int) -> None:
    out = sys.stdout
    for i in range(n):
        print(
            f"line {i:06d} of the task's ordinary output, as a scientist would print it", file=out
        )


def ticks(n: int, raw: bool) -> None:
    sleep, now, clock = time.sleep, time.perf_counter, time.time
    if raw:
        import msgpack

        write = _raw_sink("pipe")
        pack = msgpack.Packer(use_bin_type=True).pack
        write(pack({"v": 1, "run": "floor", "pid": os.getpid(), "rank": None}))

        def send(seq: int) -> None:
            write(pack({"sig": "tick", "seq": seq, "ts": clock(), "data": clock()}))

    else:
        from lute_async.task import Reporter

        report = Reporter.connect(prefer=("pipe",))

        def send(seq: int) -> None:
            report.emit("tick", clock())

    deadline = now()
    for seq in range(1, n + 1):
        send(seq)
        deadline += 0.001
        pause = deadline - now()
        if pause > 0:
            sleep(pause)
    if not raw:
        report.close()


def payload(size: int, raw: bool) -> None:
    data = bytes(size)
    if raw:
        import msgpack

        pack = msgpack.Packer(use_bin_type=True).pack
        write = _raw_sink("socket")
        write(pack({"v": 1, "run": "floor", "pid": os.getpid(), "rank": None}))
        frame = {"sig": "result", "seq": 1, "ts": time.time(), "data": {"payload": data}}
        write(pack(frame))
        return
    from lute_async.task import Reporter

    with Reporter.connect(prefer=("socket",)) as report:
        report.result(data)


def main(argv: list[str]) -> None:
    mode, args = argv[0], argv[1:]
    if mode == "trivial":
        trivial()
    elif mode == "flood":
        flood(int(args[0]), args[1])
    elif mode == "raw-flood":
        raw_flood(int(args[0]), args[1])
    elif mode == "lines":
        lines(int(args[0]))
    elif mode in ("ticks", "raw-ticks"):
        ticks(int(args[0]), raw=mode == "raw-ticks")
    elif mode in ("payload", "raw-payload"):
        payload(int(args[0]), raw=mode == "raw-payload")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
