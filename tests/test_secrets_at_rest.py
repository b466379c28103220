"""Secrets a run is given never reach the database, the journal or the logs in clear.

Each secret is planted where a user would put one (a param, a command flag, the environment
the task reads and then prints, reports as an error and returns as a result); the test then
reads the bytes of every file the executor wrote and the log stream it produced.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import log_events

from lute_async import Event, Executor

PARAM_SECRET = "param-secret-8c1f29"
FLAG_SECRET = "flag-secret-77ab10"
ARG_SECRET = "arg-secret-3390fe"
ENV_SECRET = "env-secret-51d0aa"
RESULT_SECRET = "result-secret-c4e9b2"

TASK = """
    import os, sys
    from lute_async.task import Reporter
    token = os.environ["SERVICE_API_TOKEN"]
    with Reporter.connect() as report:
        report.started({"api_token": "PARAM", "seen": token})
        print(f"connecting with {token}", flush=True)
        report.log(f"using {token}")
        report.error(f"refused: {token}")
        report.result({"api_key": "RESULT", "note": f"made with {token}"})
""".replace("RESULT", RESULT_SECRET).replace("PARAM", PARAM_SECRET)

PLANTED = (PARAM_SECRET, FLAG_SECRET, ARG_SECRET, ENV_SECRET, RESULT_SECRET)


def _files_holding(directory: Path, secrets: tuple[str, ...]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in directory.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits = [s for s in secrets if s.encode() in data]
            if hits:
                found[os.fspath(path.relative_to(directory))] = hits
    return found


async def test_planted_secrets_are_masked_in_the_database_and_the_logs(
    tmp_path: Path,
    script: Callable[[str], list[str]],
    json_logs: io.StringIO,
) -> None:
    seen: list[str] = []

    def hook(event: Event) -> None:  # hooks still get what the task sent
        if event.name == "result":
            seen.append(event.data["payload"]["api_key"])

    argv = [*script(TASK), f"--password={FLAG_SECRET}", "--api-token", ARG_SECRET]
    db_dir = tmp_path / "db"
    async with Executor(db=db_dir / "runs.db", workdir=tmp_path / "work") as executor:
        record = await executor.run(
            argv,
            name="secretive",
            params={"api_token": PARAM_SECRET, "threshold": 3},
            env={"SERVICE_API_TOKEN": ENV_SECRET},
            hooks={"result": hook},
        )
    assert record.status == "COMPLETED"
    assert seen == [RESULT_SECRET]
    assert record.params == {"api_token": "***", "threshold": 3}
    assert record.command[-3:] == ["--password=***", "--api-token", "***"]
    assert record.result is not None
    assert record.result["payload"] == {"api_key": "***", "note": "made with ***"}
    assert record.error is not None and record.error["message"] == "refused: ***"
    assert record.extra["reported_params"] == {"api_token": "***", "seen": "***"}
    assert _files_holding(db_dir, PLANTED) == {}
    logged = json_logs.getvalue()
    assert log_events(logged), "the executor logged nothing: the check below would be empty"
    assert [s for s in PLANTED if s in logged] == []
    # The executor's own lines about the task name the task's process, not the executor's.
    lifecycle = [e for e in log_events(logged) if e["event"] in ("started", "done")]
    assert {e["event"] for e in lifecycle} == {"started", "done"}
    assert {e["pid"] for e in lifecycle} == {record.pid} != {os.getpid()}


async def test_a_record_spilled_to_the_journal_is_masked_too(
    tmp_path: Path,
    script: Callable[[str], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    journal = tmp_path / "journal"
    monkeypatch.setenv("LUTE_ASYNC_JOURNAL_DIR", os.fspath(journal))
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database's directory should be\n")
    executor = Executor(db=blocker / "runs.db", workdir=tmp_path / "work")
    record = await executor.run(  # the database cannot be opened: every save spills
        [*script(TASK), f"--password={FLAG_SECRET}"],
        name="spilled",
        params={"api_token": PARAM_SECRET},
        env={"SERVICE_API_TOKEN": ENV_SECRET},
    )
    await executor.aclose()
    assert record.status == "COMPLETED"
    spilled = list(journal.rglob("*.jsonl*"))
    assert spilled, "nothing was spilled: the database should have been unreachable"
    assert _files_holding(journal, PLANTED) == {}
    assert any(record.id.encode() in path.read_bytes() for path in spilled)


@pytest.mark.parametrize("record_env", ["overrides", "all"])
async def test_a_record_keeps_the_inherited_environment_only_when_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_env: str
) -> None:
    monkeypatch.setenv("INHERITED_SETTING", "from-the-shell")
    monkeypatch.setenv("INHERITED_API_TOKEN", "inherited-secret-0a9f")
    async with Executor(db=tmp_path / "runs.db", record_env=record_env) as executor:
        record = await executor.run(["true"], env={"GIVEN": "by-the-run"})
    assert record.env["GIVEN"] == "by-the-run"
    assert record.env["LUTE_ASYNC_SECRET"] == "***"
    if record_env == "overrides":
        assert "INHERITED_SETTING" not in record.env and "PATH" not in record.env
    else:
        assert record.env["INHERITED_SETTING"] == "from-the-shell"
        assert record.env["INHERITED_API_TOKEN"] == "***"
    assert b"inherited-secret-0a9f" not in b"".join(
        p.read_bytes() for p in tmp_path.glob("runs.db*")
    )


async def test_an_executor_argument_of_the_wrong_kind_is_a_config_error(tmp_path: Path) -> None:
    from lute_async.errors import ConfigError

    with pytest.raises(ConfigError, match=r"Executor: key 'record_env': expected 'overrides'"):
        Executor(db=tmp_path / "runs.db", record_env="everything")
    with pytest.raises(ConfigError, match=r"key 'max_concurrency': expected a positive integer"):
        Executor(db=tmp_path / "runs.db", max_concurrency="8")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"key 'grace': expected a number of seconds >= 0"):
        Executor(db=tmp_path / "runs.db", grace=-1)
