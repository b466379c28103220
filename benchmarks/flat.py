"""The peers table's ``flat`` row: what one ``Executor.run`` of a command must do at the
least, written flat in one coroutine, with no run engine around it.

Per task: a record saved three times (pending, running, ended; each loop turn's saves in one
sqlite transaction, as the executor's writer does), a frame pipe, stdout and stderr as pipes,
the spawn in a new session with an environment, working directory and inherited fd, the
three pipes read to their end and the pidfd waited on, ``wait4`` for the status and usage.
Set beside the floor (the spawn alone) and ``Executor.run`` in the same run, it splits the
executor's cost into what the work needs and what the engine adds.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any


class FlatRunner:
    """Runs a command the flat way; records go to a sqlite file in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._db = sqlite3.connect(workdir / "flat-records.db", isolation_level=None)
        self._db.execute("pragma journal_mode=wal")
        self._db.execute("pragma synchronous=normal")
        self._db.execute("create table if not exists runs (id text primary key, doc text)")
        self._pending: list[tuple[str, str]] = []
        self._env = {**os.environ, "FLAT_RUN_SECRET": os.urandom(24).hex()}
        self._stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def close(self) -> None:
        self._db.close()
        os.close(self._stdin)

    def _save(self, record: dict[str, Any]) -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._write)
        self._pending.append((record["id"], json.dumps(record)))

    def _write(self) -> None:
        self._db.execute("begin immediate")
        self._db.executemany("insert or replace into runs values (?, ?)", self._pending)
        self._db.execute("commit")
        self._pending.clear()

    async def run(self, argv: list[str]) -> bool:
        """Run ``argv`` to its end; True when it exited 0."""
        loop = asyncio.get_running_loop()
        record: dict[str, Any] = {"id": os.urandom(16).hex(), "command": argv}
        record.update(status="PENDING", submitted_at=time.time())
        self._save(record)
        pipes = [os.pipe() for _ in range(3)]  # frames, stdout, stderr
        frames_w = pipes[0][1]
        env = {**self._env, "FLAT_RUN_FD": str(frames_w)}
        # On the loop, as the executor spawns (vfork: the loop waits only for the exec).
        process = subprocess.Popen(  # noqa: ASYNC220
            argv,
            env=env,
            cwd=self.workdir,
            stdin=self._stdin,
            stdout=pipes[1][1],
            stderr=pipes[2][1],
            pass_fds=(frames_w,),
            start_new_session=True,
        )
        for _, write_end in pipes:
            os.close(write_end)
        record.update(status="RUNNING", pid=process.pid, started_at=time.time())
        self._save(record)
        pidfd = os.pidfd_open(process.pid)
        waiting = {read_end for read_end, _ in pipes} | {pidfd}
        done = loop.create_future()

        def readable(fd: int) -> None:
            if fd != pidfd:
                try:
                    if os.read(fd, 65536):
                        return  # output: the real executor would decode it here
                except BlockingIOError:
                    return
            loop.remove_reader(fd)
            waiting.discard(fd)
            if not waiting:
                done.set_result(None)

        for fd in list(waiting):
            if fd != pidfd:
                os.set_blocking(fd, False)
            loop.add_reader(fd, readable, fd)
        await done
        _, status, usage = os.wait4(process.pid, 0)  # noqa: ASYNC222 (the pidfd said it exited)
        process.returncode = code = os.waitstatus_to_exitcode(status)
        for read_end, _ in pipes:
            os.close(read_end)
        os.close(pidfd)
        record.update(status="COMPLETED" if code == 0 else "FAILED", exit_code=code)
        record.update(ended_at=time.time(), user=usage.ru_utime, system=usage.ru_stime)
        self._save(record)
        return code == 0
