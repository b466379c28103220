"""Shared fixtures: an executor on a fresh sqlite file, task scripts written to tmp_path, and
records databases of both backends (a fresh PostgreSQL database per test: see pg_support)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvloop

# The support modules' asserts are rewritten like the tests' (they are imported here first).
pytest.register_assert_rewrite("pg_support", "slurm_support")
from pg_support import pg_server, pg_url, private_pg  # noqa: E402, F401 - fixtures by name

from lute_async import Executor, logs  # noqa: E402

PYTHON = sys.executable
#: Test modules whose tests run on uvloop's event loop instead of stdlib asyncio's.
UVLOOP_MODULES = frozenset({"test_uvloop.py"})


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], Any]]:
    """Run the tests of UVLOOP_MODULES on uvloop; the rest keep the default loop."""
    if item.path.name in UVLOOP_MODULES:
        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}


@pytest.fixture
async def executor(tmp_path: Path) -> AsyncIterator[Executor]:
    """An executor recording into a fresh database under tmp_path."""
    async with Executor(db=tmp_path / "runs.db", workdir=tmp_path / "work", grace=2.0) as ex:
        yield ex


@pytest.fixture(params=["sqlite", "postgresql"])
def record_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """A fresh records database of each backend: a sqlite file under tmp_path, or the URL of a
    new PostgreSQL database (failing under CI=true when the server is missing, else skipped)."""
    if request.param == "sqlite":
        return tmp_path / "records" / "runs.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def script(tmp_path: Path) -> Callable[[str], list[str]]:
    """Write a Python task script (dedented) and return the argv that runs it."""
    counter = 0

    def write(source: str) -> list[str]:
        nonlocal counter
        counter += 1
        path = tmp_path / f"task_{counter}.py"
        path.write_text(textwrap.dedent(source))
        return [PYTHON, os.fspath(path)]

    return write


def process_exists(pid: int) -> bool:
    """True while ``pid`` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def cyclic_garbage() -> Iterator[list[str]]:
    """The types of what the block leaves in reference cycles (filled at its end), found
    with the collector off and then run once with ``DEBUG_SAVEALL``."""
    import gc

    left: list[str] = []
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield left
        gc.collect()
        left += sorted({type(obj).__qualname__ for obj in gc.garbage})
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


async def ends_within(pid: int, seconds: float = 10.0) -> bool:
    """True once ``pid`` has ended, waiting on its pidfd at most ``seconds``: a process killed
    with its group closes its pipes a moment before it is gone."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        with anyio.move_on_after(seconds):
            await anyio.wait_readable(pidfd)
            return True
        return False
    finally:
        os.close(pidfd)


def log_events(text: str) -> list[dict[str, Any]]:
    """The JSON log lines in captured stderr."""
    events = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    return events


@pytest.fixture
def json_logs(monkeypatch: pytest.MonkeyPatch) -> io.StringIO:
    """lute-async's logs as JSON lines, written where the test can read them back."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.setattr(logs, "_logger", logs._logger)  # the old logger comes back after
    logs.configure(renderer="json")
    return stream


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, to fill up or remount read-only (needs root and mount)."""
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", os.fspath(mountpoint)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", os.fspath(mountpoint)], check=False)


def remount(mountpoint: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", os.fspath(mountpoint)], check=True)
