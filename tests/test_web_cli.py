"""``lute-async serve`` and ``lute-async run --dashboard`` as a user runs them: real processes,
a real uvicorn, httpx; bad values are one line and exit code 2."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from web_support import GATED_TASK, plant

from lute_async.records import RecordStore

pytestmark = pytest.mark.timeout(120)
CLI = [sys.executable, "-m", "lute_async.cli"]
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LUTE_ASYNC_DB": os.fspath(tmp_path / "runs.db"),
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([os.fspath(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.fixture
def started(tmp_path: Path, env: dict[str, str]) -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts, interrupted and reaped at its end."""
    processes: list[subprocess.Popen[str]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=30)


def dashboard_url(stream: object) -> str:
    """The address printed by the dashboard (read line by line as it is written)."""
    for line in stream:  # type: ignore[attr-defined]
        if line.startswith("lute-async dashboard: "):
            return str(line.split(": ", 1)[1].strip())
    raise AssertionError("the dashboard printed no address")


def test_serve_shows_the_history_with_its_token_until_ctrl_c(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    with RecordStore(tmp_path / "runs.db") as store:
        planted = plant(store, 120)
    serve = subprocess.Popen(
        [*CLI, "serve", "--port", "0"], env=env, stdout=subprocess.PIPE, text=True
    )
    started.append(serve)
    url = dashboard_url(serve.stdout)
    address = url.split("/?token=")[0]
    assert address.startswith("http://127.0.0.1:")
    assert httpx.get(address + "/").status_code == 403
    with httpx.Client(follow_redirects=True) as http:
        page = http.get(url)
        assert page.status_code == 200
        assert planted[-1].id in page.text and "history only" in page.text
        assert http.get(f"{address}/runs/{planted[0].id}").status_code == 200
    serve.send_signal(signal.SIGINT)
    assert serve.wait(timeout=30) == 0


def test_run_dashboard_serves_the_run_live_while_it_runs(
    tmp_path: Path, env: dict[str, str], started: list[subprocess.Popen[str]]
) -> None:
    gate = tmp_path / "gate"
    os.mkfifo(gate, 0o600)
    (tmp_path / "gated.py").write_text(GATED_TASK)
    (tmp_path / "lute-async.toml").write_text(
        f'[tasks.held]\ncommand = ["{sys.executable}", "gated.py", "{gate}", "1"]\ncwd = "."\n'
    )
    run = subprocess.Popen(
        [*CLI, "run", "held", "--dashboard", "--allow-control"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    started.append(run)
    url = dashboard_url(run.stderr)
    address, token = url.split("/?token=")
    with httpx.Client(base_url=address, headers={"authorization": f"Bearer {token}"}) as http:
        with http.stream("GET", "/stream/runs") as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    runs = json.loads(line[6:])["runs"]
                    if runs and runs[0]["status"] == "RUNNING":
                        break
        assert runs[0]["name"] == "held"
        page = http.get(f"/runs/{runs[0]['id']}").text
        assert 'id="cancel-form"' in page  # --allow-control
    with open(gate, "w") as writer:  # two steps: the one step, then the end
        writer.write("go\ngo\n")
    assert run.wait(timeout=60) == 0
    with RecordStore(tmp_path / "runs.db") as store:
        assert store.get(runs[0]["id"]).status == "COMPLETED"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--port", "70000"], "Invalid value for '--port': 70000 is not in the range"),
        (["serve", "--port", "http"], "Invalid value for '--port': 'http' is not a valid integer"),
        (["serve", "--host", "256.1.1.1"], "dashboard: cannot listen on 256.1.1.1:8765"),
        (["--db", ".", "serve"], "Invalid value for '--db': '.' is a directory, not a file"),
        (["run", "x", "--dashboard", "nope"], "dashboard address 'nope': expected [HOST:]PORT"),
        (["run", "x", "--dashboard", "1:99999"], "dashboard address '1:99999': expected"),
    ],
)
def test_bad_dashboard_values_are_one_line_and_exit_2(
    tmp_path: Path, env: dict[str, str], args: list[str], message: str
) -> None:
    (tmp_path / "lute-async.toml").write_text('[tasks.x]\ncommand = ["true"]\n')
    done = subprocess.run(
        [*CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_dashboard_port_in_use_exits_2_before_anything_runs(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "lute-async.toml").write_text('[tasks.x]\ncommand = ["true"]\n')
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args in (["run", "x", "--dashboard", str(port)], ["serve", "--port", str(port)]):
            done = subprocess.run(
                [*CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 2, done.stderr
            assert f"dashboard: cannot listen on 127.0.0.1:{port}" in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
    with RecordStore(tmp_path / "runs.db") as store:
        assert store.query() == []  # nothing ran, no record left behind


def test_serve_on_a_database_that_is_not_one_exits_2(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "junk.db").write_bytes(b"not sqlite at all" * 100)
    (tmp_path / "junk.db").chmod(0o600)
    done = subprocess.run(
        [*CLI, "--db", "junk.db", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "is not a lute-async records database" in done.stderr
