"""The dashboard over HTTP: the token gate, history paging and filters, the run and graph
pages, the live streams and the cancel form, with Starlette's TestClient and against a real
uvicorn (httpx). The browser's view is tests/test_web_browser.py."""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

with warnings.catch_warnings():  # Starlette 1.x suggests another client; httpx still works
    warnings.filterwarnings("ignore", "Using `httpx` with `starlette.testclient`")
    from starlette.testclient import TestClient
from web_support import Gate, gated_command, plant

from lute_async import Executor
from lute_async.errors import ConfigError
from lute_async.records import AnalysisRecord, RecordStore, RunFilter
from lute_async.web import Dashboard
from lute_async.web.app import DashboardState, build_app
from lute_async.web.live import LiveHub

pytestmark = pytest.mark.timeout(120)
TOKEN = "t" * 24
ROW = re.compile(r'<tr data-run="([0-9a-f]{32})">')


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RecordStore, list[Any]]]:
    """10,000 finished runs in one database, for the history tests."""
    directory = tmp_path_factory.mktemp("history")
    directory.chmod(0o700)
    with RecordStore(directory / "runs.db") as store:
        yield store, plant(store, 10_000)


def client_for(store: RecordStore, *, allow_control: bool = False) -> TestClient:
    state = DashboardState(
        hub=LiveHub(),
        store=lambda: store,
        token=TOKEN,
        allow_control=allow_control,
        live=False,
        limiter=anyio.CapacityLimiter(1),
    )
    return TestClient(build_app(state, cookie="lute_async_token_test"), follow_redirects=False)


def signed_in(store: RecordStore) -> TestClient:
    client = client_for(store)
    assert client.get(f"/?token={TOKEN}").status_code == 303
    return client


def test_no_token_no_page_and_the_token_becomes_a_cookie(planted: Any) -> None:
    store, _ = planted
    client = client_for(store)
    for path in ("/", "/static/live.js", "/stream/runs", "/runs/abc", "/graphs/abc"):
        response = client.get(path)
        assert response.status_code == 403, path
        assert "needs its token" in response.text and "<tr" not in response.text
    assert client.get("/?token=wrong").status_code == 403
    assert client.get(f"/?token={TOKEN}&token={TOKEN}").status_code == 403
    assert client.get("/", headers={"authorization": "Bearer wrong"}).status_code == 403
    response = client.get(f"/?name=merge&token={TOKEN}")
    assert response.status_code == 303
    assert response.headers["location"] == "/?name=merge"  # the token leaves the address
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN in cookie
    page = client.get("/?name=merge")  # the client keeps the cookie
    assert page.status_code == 200 and len(ROW.findall(page.text)) == 50
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY"
    bearer = client_for(store).get("/", headers={"authorization": f"Bearer {TOKEN}"})
    assert bearer.status_code == 200


def test_every_page_of_a_filter_in_order_none_twice(planted: Any) -> None:
    store, records = planted
    client = signed_in(store)
    wanted = [r.id for r in reversed(records) if r.name == "merge"]
    seen: list[str] = []
    link = "/?name=merge"
    while link:
        page = client.get(link.replace("&amp;", "&"))
        assert page.status_code == 200
        seen += ROW.findall(page.text)
        older = re.search(r'id="older" href="([^"]+)"', page.text)
        link = older.group(1) if older else ""
    assert seen == wanted  # 2,500 runs over 50 pages, newest first
    newer = re.search(r'id="newer" href="([^"]+)"', page.text)
    assert newer is not None
    back = client.get(newer.group(1).replace("&amp;", "&"))
    assert ROW.findall(back.text) == wanted[-100:-50]


def test_filters_each_row_matches(planted: Any) -> None:
    store, records = planted
    client = signed_in(store)
    page = client.get("/?status=TIMEDOUT&tag=dark")
    ids = ROW.findall(page.text)
    expected = [r.id for r in reversed(records) if r.status == "TIMEDOUT" and "dark" in r.tags]
    assert ids == expected[:50]
    assert client.get("/?tag=no-such-tag").text.count("No run matches") == 1


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("status=DONE", "status: expected one of CANCELLED, COMPLETED"),
        ("since=yesterday-ish", "since: expected a date and time like 2026-12-01T10:00, got"),
        ("until=12%2F01", "until: expected a date and time"),
        ("after=garbage", "after: expected a page cursor, got &#39;garbage&#39;"),
        ("before=1.5%3Ax", "before: expected a page cursor"),
    ],
)
def test_a_bad_filter_value_is_a_400_naming_it(planted: Any, query: str, message: str) -> None:
    response = signed_in(planted[0]).get(f"/?{query}")
    assert response.status_code == 400
    assert message in response.text


@pytest.mark.parametrize(
    "runs",
    [
        RunFilter(),
        RunFilter(name="merge"),
        RunFilter(status="FAILED"),
        RunFilter(tags="beamtime-42"),
        RunFilter(tags=["beamtime-42", "dark"]),
        RunFilter(name="calibrate", status="COMPLETED", tags="dark"),
        RunFilter(since=1_793_491_200.0 + 600, until=1_793_491_200.0 + 60 * 9_000),
    ],
)
def test_a_deep_page_costs_what_the_first_does(planted: Any, runs: RunFilter) -> None:
    """Keyset paging: sqlite's work (its VM steps, counted: no clock) for the 100th page is
    about that of the first, so paging stays fast however many runs there are."""
    store, _ = planted
    conn = store._database.connection()
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    def cost(after: Any) -> tuple[int, Any]:
        steps[0] = 0
        conn.set_progress_handler(count, 100)
        try:
            _, cursor = store.page(runs, after=after, limit=50)
        finally:
            conn.set_progress_handler(None, 100)
        return steps[0], cursor

    first, cursor = cost(None)
    for _ in range(8):
        _, cursor = store.page(runs, after=cursor, limit=50)
    deep, _ = cost(cursor)
    assert deep <= 2 * first + 50, (first, deep)


def test_the_pages_say_when_a_run_or_graph_is_unknown(planted: Any) -> None:
    client = signed_in(planted[0])
    assert client.get("/runs/" + "0" * 32).status_code == 404
    assert client.get("/graphs/nope").status_code == 404
    run = planted[1][5]
    page = client.get(f"/runs/{run.id}")
    assert page.status_code == 200 and run.name in page.text
    assert "the records database does not keep them" in page.text


def test_a_retried_runs_page_lists_its_attempts(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "runs.db") as store:
        run = AnalysisRecord(name="flaky", status="COMPLETED")
        run.attempts = [
            {"attempt": 1, "status": "FAILED", "reason": "failed", "exit_code": 3},
            {"attempt": 2, "status": "COMPLETED", "reason": None, "exit_code": 0},
        ]
        store.save(run)
        page = signed_in(store).get(f"/runs/{run.id}").text
    assert "<h3>Attempts</h3>" in page
    assert page.count("&#34;attempt&#34;") == 2, page  # both attempts, escaped in a <pre>


def test_bad_dashboard_arguments_are_config_errors(tmp_path: Path) -> None:
    wrong = r"key 'dashboard': expected a dashboard, got a string \('http://localhost'\)"
    with pytest.raises(ConfigError, match=wrong):
        Executor(db=tmp_path / "runs.db", dashboard="http://localhost")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dashboard: port: expected 0 to 65535, got 70000"):
        Dashboard(port=70000)
    with pytest.raises(ConfigError, match="token: expected a string of at least 16"):
        Dashboard(token="short")
    with pytest.raises(ConfigError, match="allow_control: expected true or false, got 'yes'"):
        Dashboard(allow_control="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="host: expected an address to listen on, got ''"):
        Dashboard(host="")
    with pytest.raises(ConfigError, match="host: expected an address to listen on, got 8080"):
        Dashboard(host=8080)  # type: ignore[arg-type]


async def test_a_port_in_use_is_a_config_error(tmp_path: Path) -> None:
    async with Dashboard(db=tmp_path / "runs.db", announce=None) as first:
        port = int(first.address.rsplit(":", 1)[1])
        second = Dashboard(db=tmp_path / "runs.db", port=port, announce=None)
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await second.open()
        await second.aclose()
        # An executor whose dashboard cannot listen fails on entry, its store closed again.
        executor = Executor(db=tmp_path / "runs.db", dashboard=second)
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            await executor.__aenter__()
        assert executor._store is None


async def sse_events(response: httpx.Response) -> Any:
    """The (event, data) pairs of a server-sent event stream."""
    import json

    kind = None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            yield kind, json.loads(line[6:])


async def test_a_live_run_over_real_uvicorn_streams_then_is_cancelled(tmp_path: Path) -> None:
    gate = Gate(tmp_path / "gate")
    dashboard = Dashboard(announce=None, allow_control=True, token=TOKEN)
    db = tmp_path / "runs.db"
    async with (
        Executor(db=db, workdir=tmp_path / "work", dashboard=dashboard) as executor,
        httpx.AsyncClient(base_url=dashboard.address) as http,
        anyio.create_task_group() as tg,
    ):
        assert (await http.get("/")).status_code == 403
        assert (await http.get(f"/?token={TOKEN}")).status_code == 303
        records: list[Any] = []

        async def run() -> None:
            records.append(await executor.run(gated_command(tmp_path, gate, 2), name="held"))

        async with http.stream("GET", "/stream/runs") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
            kind, first = await anext(events)
            assert kind == "runs" and first == {"runs": [], "snapshot": True}
            tg.start_soon(run)
            while True:  # each update is pushed as it happens
                _, update = await anext(events)
                if update["runs"] and update["runs"][0]["status"] == "RUNNING":
                    break
            run_id = update["runs"][0]["id"]
            await gate.step()
            while True:
                _, update = await anext(events)
                if update["runs"][0]["fraction"] == 0.5:
                    break
        async with http.stream("GET", f"/stream/runs/{run_id}") as response:
            events = sse_events(response)
            _, update = await anext(events)
            assert update["logs"][0]["text"] == "step 1 of 2 <script>window.pwned = 1</script>"
        page = (await http.get(f"/runs/{run_id}")).text
        assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in page
        assert "<script>window" not in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None and TOKEN not in csrf.group(1)
        cancel = f"/runs/{run_id}/cancel"
        assert (await http.post(cancel, data={"csrf": "0" * 64})).status_code == 403
        wrong_origin = {"origin": "http://evil.example"}
        forged = await http.post(cancel, data={"csrf": csrf.group(1)}, headers=wrong_origin)
        assert forged.status_code == 403
        assert (await http.post(cancel, data={"csrf": csrf.group(1)})).status_code == 303
    gate.close()
    assert records[0].status == "CANCELLED"
    # The executor is closed: its dashboard is gone with it.
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(base_url=dashboard.address) as http:
            await http.get("/")


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Executor, httpx.AsyncClient]]:
    """An executor serving its dashboard, and a client holding the token."""
    dashboard = Dashboard(announce=None, token=TOKEN)
    bearer = {"authorization": f"Bearer {TOKEN}"}
    async with (
        Executor(db=tmp_path / "runs.db", workdir=tmp_path / "work", dashboard=dashboard) as ex,
        httpx.AsyncClient(base_url=dashboard.address, headers=bearer) as http,
    ):
        yield ex, http


async def test_read_only_by_default_no_cancel(tmp_path: Path) -> None:
    async with served(tmp_path) as (ex, http):
        record = await ex.run([sys.executable, "-c", "print('hi')"], name="short")
        page = (await http.get(f"/runs/{record.id}")).text
        assert "cancel-form" not in page and "hi\n" in page
        response = await http.post(f"/runs/{record.id}/cancel", data={"csrf": "x"})
        assert response.status_code == 403 and "--allow-control" in response.text
        async with http.stream("GET", f"/stream/runs/{record.id}") as stream:
            kinds = [kind async for kind, _ in sse_events(stream)]
        assert kinds == ["run", "end"]  # a finished run's stream ends (the page stops it)


async def test_a_finished_runs_log_is_paged(tmp_path: Path) -> None:
    async with served(tmp_path) as (ex, http):
        code = "for i in range(450): print(f'line {i}')"
        record = await ex.run([sys.executable, "-c", code], name="chatty")
        latest = (await http.get(f"/runs/{record.id}")).text
        numbers = [int(n) for n in re.findall(r'data-n="(\d+)"', latest)]
        assert numbers == list(range(250, 450))
        assert f'href="/runs/{record.id}?log_start=50"' in latest
        first = (await http.get(f"/runs/{record.id}?log_start=0")).text
        assert [int(n) for n in re.findall(r'data-n="(\d+)"', first)] == list(range(200))
        assert "line 0\n" in first and "line 200\n" not in first


async def test_a_workflow_has_a_graph_page_live_and_from_the_records(tmp_path: Path) -> None:
    ok, bad = [sys.executable, "-c", "pass"], [sys.executable, "-c", "raise SystemExit(3)"]
    async with served(tmp_path) as (ex, http):
        graph = ex.graph()
        graph.add("calibrate", ok)
        graph.add("peaks", bad, after=["calibrate"])
        graph.add("report", ok, after=["peaks"])
        graph.add("<b>odd</b>", ok, after=["calibrate"])
        records = await graph.run()
        assert f"graph:{graph.id}" in records["calibrate"].tags
        live_page = (await http.get(f"/graphs/{graph.id}")).text
        run_page = (await http.get(f"/runs/{records['peaks'].id}")).text
    assert f'href="/graphs/{graph.id}"' in run_page
    async with (
        Dashboard(db=tmp_path / "runs.db", announce=None, token=TOKEN) as history_only,
        httpx.AsyncClient(
            base_url=history_only.address, headers={"authorization": f"Bearer {TOKEN}"}
        ) as http,
    ):
        recorded_page = (await http.get(f"/graphs/{graph.id}")).text
    for page in (live_page, recorded_page):
        found = re.findall(r'<g class="node s-(\w+)" data-node="([^"]+)"', page)
        nodes = {name: state for state, name in found}
        assert nodes == {
            "calibrate": "COMPLETED",
            "peaks": "FAILED",
            "report": "CANCELLED",
            "&lt;b&gt;odd&lt;/b&gt;": "COMPLETED",
        }
        edges = set(re.findall(r'data-from="([^"]+)" data-to="([^"]+)"', page))
        assert edges == {
            ("calibrate", "peaks"),
            ("peaks", "report"),
            ("calibrate", "&lt;b&gt;odd&lt;/b&gt;"),
        }


async def test_what_is_kept_of_a_run_is_bounded_and_coalesced(tmp_path: Path) -> None:
    from lute_async.web.live import MAX_LOG_CHARS, MAX_LOG_LINES

    async with served(tmp_path) as (ex, http):
        dashboard = ex.dashboard
        assert isinstance(dashboard, Dashboard)
        watching = dashboard.hub.subscribe()
        lines = MAX_LOG_LINES + 50
        code = (
            "from lute_async.task import Reporter\n"
            "with Reporter.connect() as r:\n"
            "    for i in range(1000): r.progress(i / 1000)\n"
            f"for i in range({lines}): print(f'line {{i}}')\n"
        )
        record = await ex.run([sys.executable, "-c", code], name="flood")
        # 1,000 progress events and the rest, unread meanwhile: one change to send, once.
        assert await watching.changed() == [record.id]
        assert watching.dirty == {}
        live = dashboard.hub.runs[record.id]
        kept, skipped = live.logs_from(0, 200)
        assert skipped == 50 and kept[0]["n"] == 50 and kept[0]["text"] == "line 50"
        assert live.logs_seen == lines and len(live.logs) == MAX_LOG_LINES
        first = (await http.get(f"/runs/{record.id}?log_start=0")).text
        assert "50 earlier line(s) no longer kept" in first
        wide = await ex.run([sys.executable, "-c", "for i in range(300): print('x' * 3999)"])
        kept_wide = dashboard.hub.runs[wide.id].logs
        assert dashboard.hub.runs[wide.id].logs_seen == 300
        assert sum(len(line["text"]) for line in kept_wide) <= MAX_LOG_CHARS < 300 * 3999


async def test_a_runs_secrets_are_masked_in_its_log_lines(tmp_path: Path) -> None:
    secret = "s3cr3t-value-for-the-dashboard"
    async with served(tmp_path) as (ex, http):
        code = "import os; print('token is', os.environ['API_TOKEN'])"
        record = await ex.run([sys.executable, "-c", code], name="leaky", env={"API_TOKEN": secret})
        page = (await http.get(f"/runs/{record.id}")).text
    assert "token is " in page and secret not in page


def test_a_history_only_page_lists_what_the_records_say_is_running(tmp_path: Path) -> None:
    from lute_async.records import AnalysisRecord

    with RecordStore(tmp_path / "runs.db") as store:
        elsewhere = AnalysisRecord(name="elsewhere", status="RUNNING", started_at=1.0e9)
        store.save_many([elsewhere, AnalysisRecord(name="over", status="COMPLETED")])
        page = signed_in(store).get("/").text
    active = page.split('id="recorded-active"', 1)[1].split("</table>", 1)[0]
    assert ROW.findall(active) == [elsewhere.id]
    assert f"{elsewhere.executor_host}:{elsewhere.executor_pid}" in active
