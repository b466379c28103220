"""Run history across processes, on sqlite and PostgreSQL: LOST after an executor dies,
``latest`` feeding templates.

Concurrent writers (4 processes x 200 records, none lost) are tested in
``tests/test_records.py::test_concurrent_writers_in_several_processes_lose_nothing``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import process_exists

from lute_async.records import RecordStore

PYTHON = sys.executable

EXECUTOR_SCRIPT = """\
import sys
import anyio
from lute_async import Executor

async def main() -> None:
    executor = Executor(db=sys.argv[1], log_events=False)

    def ready(event) -> None:
        if event.data.get("message") == "task ready":
            print("executor ready", event.run.id, event.run.pid, flush=True)

    executor.on("log", ready)
    task = "import time; print('task ready', flush=True); time.sleep(60)"
    await executor.run([sys.executable, "-c", task], name="long")

anyio.run(main)
"""


def test_runs_of_an_executor_killed_mid_run_are_marked_lost(
    tmp_path: Path, record_db: Path | str
) -> None:
    db = record_db
    (tmp_path / "executor.py").write_text(EXECUTOR_SCRIPT)
    executor = subprocess.Popen(
        [PYTHON, "executor.py", os.fspath(db)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert executor.stdout is not None
        line = executor.stdout.readline()
        assert line.startswith("executor ready"), line
        _, _, run_id, task_pid = line.split()
        executor.send_signal(signal.SIGKILL)
        assert executor.wait(timeout=30) == -signal.SIGKILL
    finally:
        executor.kill()
        executor.wait()
    try:
        with RecordStore(db) as store:
            record = store.get(run_id)
            assert store.lost_on_open == [run_id]
        assert record.status == "LOST"
        assert record.error is not None
        assert record.error["type"] == "ExecutorLost"
        assert f"executor process {executor.pid}" in record.error["message"]
        assert record.ended_at is not None
    finally:
        if process_exists(int(task_pid)):  # the task dies with its executor; make sure
            os.kill(int(task_pid), signal.SIGKILL)


def test_a_task_takes_params_from_another_tasks_latest_completed_result(
    tmp_path: Path, record_db: Path | str
) -> None:
    config = """\
        [tasks.count]
        command = ["sh", "-c", "PYTHON -m lute_async.cli emit result '{\\"n\\": {{ n }}}'"]
        params = { n = 5 }

        [tasks.report]
        command = ["echo", "found {{ latest.count.result.n:03d }}"]
        params = { n = "{{ latest.count.result.n }}" }
        """
    (tmp_path / "lute-async.toml").write_text(textwrap.dedent(config).replace("PYTHON", PYTHON))
    env = {**os.environ, "LUTE_ASYNC_DB": os.fspath(record_db)}

    def lute(*args: str) -> dict[str, object]:
        done = subprocess.run(
            [PYTHON, "-m", "lute_async.cli", *args, "--json"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        record = json.loads(done.stdout)
        assert isinstance(record, dict)
        return record

    assert lute("run", "count", "--param", "n=41")["result"] == {
        "payload": {"n": 41},
        "summary": None,
    }
    report = lute("run", "report")
    assert report["params"] == {"n": 41}
    assert report["command"] == ["echo", "found 041"]
