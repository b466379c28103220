"""What the dashboard tests share: Debian's Chromium driven by Playwright, a gated task, and a
planted history.

The browser is the system's (``scripts/browser-deps up``), never one Playwright downloads. A test
that needs it fails under ``CI=true`` when it is missing and skips with the reason elsewhere.
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from lute_async.records import AnalysisRecord, RecordStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Where the README's screenshots are written, when set (LUTE_ASYNC_SCREENSHOTS=docs/img).
SCREENSHOTS = os.environ.get("LUTE_ASYNC_SCREENSHOTS")


def need_browser() -> None:
    """Fail in CI, skip elsewhere, when Chromium or Playwright is missing."""
    missing = None
    if not os.access(CHROMIUM, os.X_OK):
        missing = f"no {CHROMIUM} (install it: scripts/browser-deps up)"
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            missing = "Playwright for Python is not installed (pip install '.[test]')"
    if missing is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{missing} (required when CI=true)", pytrace=False)
    pytest.skip(missing)


@asynccontextmanager
async def browser_page() -> AsyncIterator[Any]:
    """A fresh page of headless Chromium (one context, so cookies are its own)."""
    from playwright.async_api import async_playwright, expect

    # A loaded CI machine may take seconds to start a task: wait for states, up to 30 s.
    expect.set_options(timeout=30_000)

    async with async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            yield await context.new_page()
        finally:
            await browser.close()


async def screenshot(page: Any, name: str) -> None:
    """Save the page as ``$LUTE_ASYNC_SCREENSHOTS/name`` when that is set."""
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=False)


#: A task that takes one step per line written to its fifo (argv[1]): each step reports
#: progress and logs a line (with markup in it, which must stay text); EOF ends it.
GATED_TASK = """
import sys
from lute_async.task import Reporter

steps = int(sys.argv[2])
with Reporter.connect() as report, open(sys.argv[1]) as gate:
    report.started({"steps": steps})
    for i in range(1, steps + 1):
        gate.readline()
        report.log(f"step {i} of {steps} <script>window.pwned = {i}</script>")
        report.progress(i / steps, f"step {i} <b>bold?</b>")
        report.flush()
    gate.readline()
    report.result({"html": "<script>window.pwned = 'result'</script>", "steps": steps})
"""


class Gate:
    """The write end of a gated task's fifo: each :meth:`step` lets it take one step."""

    def __init__(self, path: Path) -> None:
        self.path = path
        os.mkfifo(path, 0o600)
        self._fd: int | None = None

    async def step(self) -> None:
        if self._fd is None:  # opening blocks until the task opens its end
            self._fd = await anyio.to_thread.run_sync(os.open, self.path, os.O_WRONLY)
        os.write(self._fd, b"go\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def gated_command(tmp_path: Path, gate: Gate, steps: int) -> list[str]:
    script = tmp_path / "gated_task.py"
    script.write_text(GATED_TASK)
    return [sys.executable, str(script), str(gate.path), str(steps)]


NAMES = ("calibrate", "find_peaks", "integrate", "merge")
STATUSES = ("COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "CANCELLED", "TIMEDOUT")
#: The planted history starts here (2026-11-01T00:00 UTC), one run a minute.
PLANT_START = 1_793_491_200.0


def plant(store: RecordStore, count: int, seed: int = 7) -> list[AnalysisRecord]:
    """``count`` finished runs, one a minute from :data:`PLANT_START`, saved in one go."""
    chance = random.Random(seed)
    records = []
    for i in range(count):
        at = PLANT_START + 60.0 * i
        records.append(
            AnalysisRecord(
                name=NAMES[i % len(NAMES)],
                status=STATUSES[i % len(STATUSES)],
                submitted_at=at,
                started_at=at + 1,
                ended_at=at + 1 + chance.uniform(1, 90),
                tags=["beamtime-42"] + (["dark"] if i % 7 == 0 else []),
                params={"run": i},
                pid=10_000 + i,
            )
        )
    store.save_many(records)
    return records
