"""The dashboard in a real browser: Debian's headless Chromium, driven by Playwright.

Each step of a live run is released by the test (the task waits on a fifo), and the page is
expected to show it, pushed over server-sent events: nothing in the test, the server or the
page waits on a timer. Playwright's ``expect`` waits for the page to reach the state.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime
from pathlib import Path

import anyio
import pytest
from web_support import (
    PLANT_START,
    Gate,
    browser_page,
    gated_command,
    need_browser,
    plant,
    screenshot,
)

from lute_async import Executor
from lute_async.records import RecordStore
from lute_async.web import Dashboard

pytestmark = pytest.mark.timeout(120)
STEPS = 3
#: The bar's data-fraction after each step, as the page writes it (String(1/3)...).
FRACTIONS = {1: r"^0\.333", 2: r"^0\.666", 3: r"^1$"}


@pytest.fixture(autouse=True)
def _browser() -> None:
    need_browser()


async def test_a_run_started_while_the_page_is_open_is_followed_live_to_its_end(
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    db = tmp_path / "runs.db"
    with RecordStore(db) as store:
        plant(store, 12)  # some history below the live runs, for the screenshot
    gate = Gate(tmp_path / "gate")
    dashboard = Dashboard(announce=None)
    async with (
        Executor(db=db, workdir=tmp_path / "work", dashboard=dashboard) as executor,
        browser_page() as page,
        anyio.create_task_group() as tg,
    ):
        await page.goto(dashboard.url)
        await expect(page.locator("#live-empty")).to_be_visible()
        run_page = await page.context.new_page()

        async def run() -> None:
            await executor.run(gated_command(tmp_path, gate, STEPS), name="find_peaks")

        tg.start_soon(run)
        row = page.locator("#live-runs tbody tr", has_text="find_peaks")
        await expect(row.locator(".status")).to_have_text("RUNNING")
        run_id = await row.get_attribute("data-run")
        await run_page.goto(f"{dashboard.address}/runs/{run_id}")
        await expect(run_page.locator("#status")).to_have_text("RUNNING")
        bar = row.locator(".bar")
        for step in range(1, STEPS + 1):
            await gate.step()
            fraction = re.compile(FRACTIONS[step])
            await expect(bar).to_have_attribute("data-fraction", fraction)
            await expect(row.locator(".message")).to_have_text(f"step {step} <b>bold?</b>")
            await expect(run_page.locator("#bar")).to_have_attribute("data-fraction", fraction)
            line = run_page.locator("#log .line", has_text=f"step {step} of {STEPS}")
            await expect(line).to_have_text(
                f"step {step} of {STEPS} <script>window.pwned = {step}</script>"
            )
            if step == 2:
                await screenshot(page, "dashboard-runs.png")
                await screenshot(run_page, "dashboard-run.png")
        await gate.step()
        gate.close()
        await expect(row.locator(".status")).to_have_text("COMPLETED")
        await expect(run_page.locator("#status")).to_have_text("COMPLETED")
        await expect(run_page.locator("#reload-note")).to_be_visible()
        events = run_page.locator("#events tbody tr")
        await expect(events.filter(has_text="done")).to_have_count(1)
        # What the task sent was shown, never run: no script of its ran, in either page.
        for one in (page, run_page):
            assert await one.evaluate("window.pwned") is None
        # The finished run's page, reloaded: its result (markup) is text, its log is paged.
        await run_page.reload()
        await expect(run_page.locator("#outcome")).to_contain_text("window.pwned = 'result'")
        assert await run_page.locator("script").count() == 1  # live.js alone
        assert await run_page.evaluate("window.pwned") is None
        await expect(run_page.locator("#log .line")).to_have_count(STEPS)


async def test_filters_and_paging_over_ten_thousand_planted_records(tmp_path: Path) -> None:
    from playwright.async_api import expect

    db = tmp_path / "runs.db"
    with RecordStore(db) as store:
        planted = plant(store, 10_000)
    async with Dashboard(db=db, announce=None) as dashboard, browser_page() as page:
        await page.goto(dashboard.url)
        rows = page.locator("#history-runs tbody tr")
        await expect(rows).to_have_count(50)
        newest = planted[-1]
        await expect(rows.first).to_have_attribute("data-run", newest.id)
        await expect(page.locator(".note")).to_contain_text("reads the records database only")
        seen: set[str] = set()
        for _ in range(3):  # older pages: each starts where the last ended, none repeats
            ids = [await r.get_attribute("data-run") for r in await rows.all()]
            assert not seen & set(ids)
            seen |= {i for i in ids if i}
            await page.locator("#older").click()
            await expect(rows).to_have_count(50)
        assert [r.id for r in planted[-150:]][::-1] == [r.id for r in planted[::-1] if r.id in seen]
        await page.locator("#newer").click()  # back one page: the third
        await expect(rows.first).to_have_attribute("data-run", planted[-101].id)
        # Filters: name and status and tag, then a time range; each row matches.
        await page.goto(f"{dashboard.address}/")
        await page.fill("input[name=name]", "merge")
        await page.select_option("select[name=status]", "FAILED")
        await page.fill("input[name=tag]", "dark")
        await page.click("button[type=submit]")
        wanted = [
            r for r in planted if r.name == "merge" and r.status == "FAILED" and "dark" in r.tags
        ]
        await expect(rows).to_have_count(min(50, len(wanted)))
        for text in await rows.locator("td:nth-child(2)").all_inner_texts():
            assert text == "FAILED"
        await expect(rows.first).to_have_attribute("data-run", wanted[-1].id)
        since = datetime.fromtimestamp(PLANT_START + 60 * 100).isoformat(timespec="minutes")
        until = datetime.fromtimestamp(PLANT_START + 60 * 110).isoformat(timespec="minutes")
        await page.goto(f"{dashboard.address}/?since={since}&until={until}")
        await expect(rows).to_have_count(10)
        await expect(rows.first).to_have_attribute("data-run", planted[109].id)
        await page.goto(f"{dashboard.address}/?since=yesterday-ish")
        await expect(page.locator("#filter-error")).to_contain_text("since: expected a date")


async def test_no_token_no_page(tmp_path: Path) -> None:
    async with (
        Dashboard(db=tmp_path / "runs.db", announce=None) as dashboard,
        browser_page() as page,
    ):
        response = await page.goto(f"{dashboard.address}/")
        assert response is not None and response.status == 403
        assert "needs its token" in await page.content()
        response = await page.goto(f"{dashboard.address}/?token=wrong-token-of-some-length")
        assert response is not None and response.status == 403
        response = await page.goto(dashboard.url)
        assert response is not None and response.status == 200
        assert "token" not in page.url  # it went into a cookie, out of the address


async def test_a_graph_page_follows_its_nodes_states_live(tmp_path: Path) -> None:
    from playwright.async_api import expect

    gate = Gate(tmp_path / "gate")
    dashboard = Dashboard(announce=None)
    async with (
        Executor(db=tmp_path / "runs.db", workdir=tmp_path / "work", dashboard=dashboard) as ex,
        browser_page() as page,
        anyio.create_task_group() as tg,
    ):
        graph = ex.graph()
        graph.add("calibrate", gated_command(tmp_path, gate, 1))
        graph.add("peaks", [sys.executable, "-c", "pass"], after=["calibrate"])
        await page.goto(dashboard.url)
        tg.start_soon(graph.run)
        row = page.locator("#live-runs tbody tr", has_text="calibrate")
        await expect(row.locator(".status")).to_have_text("RUNNING")
        await page.goto(f"{dashboard.address}/graphs/{graph.id}")
        calibrate = page.locator('g[data-node="calibrate"]')
        peaks = page.locator('g[data-node="peaks"]')
        await expect(calibrate).to_have_class("node s-RUNNING")
        await expect(peaks).to_have_class("node s-PENDING")
        await expect(page.locator('line[data-from="calibrate"][data-to="peaks"]')).to_have_count(1)
        await gate.step()
        await gate.step()
        gate.close()
        await expect(calibrate).to_have_class("node s-COMPLETED")
        await expect(peaks).to_have_class("node s-COMPLETED")
        await expect(peaks.locator(".node-status")).to_have_text("COMPLETED")
        peaks_link = page.locator('li[data-node="peaks"] a.node-link')
        await expect(peaks_link).to_have_attribute("href", re.compile(r"^/runs/[0-9a-f]{32}$"))
        await screenshot(page, "dashboard-graph.png")
