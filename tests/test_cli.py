"""The ``lute-async`` command end to end, each command as a real subprocess."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from conftest import process_exists

from lute_async.records import AnalysisRecord, RecordStore

PYTHON = sys.executable
CLI = [PYTHON, "-m", "lute_async.cli"]

Lute = Callable[..., subprocess.CompletedProcess[str]]

TASK_SCRIPT = """\
import sys
from lute_async.task import Reporter, read_params

params = read_params()
with Reporter.connect() as report:
    print("loading", params.get("run"), flush=True)
    report.progress(0.5, "half way")
    report.progress(1.0, "all frames")
    report.result({"peaks": 42, "run": params.get("run")}, summary="42 peaks")
"""

CONFIG = """\
[tasks.peaks]
command = ["{python}", "task.py"]
cwd = "."
params = {{ run = 7 }}
tags = ["cli-test"]

[tasks.broken]
command = ["{python}", "-c", "import sys; print('about to fail'); sys.exit(3)"]

[tasks.slow]
command = ["{python}", "-c", "import time; time.sleep(60)"]
timeout = 0.5
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of CLI subprocesses: a fresh database, a wide plain display."""
    return {
        **os.environ,
        "LUTE_ASYNC_DB": os.fspath(tmp_path / "runs.db"),
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")]),
    }


@pytest.fixture
def lute(tmp_path: Path, env: dict[str, str]) -> Lute:
    """Run ``lute-async ARGS`` in tmp_path (with a task script and config there)."""
    (tmp_path / "task.py").write_text(TASK_SCRIPT)
    (tmp_path / "lute-async.toml").write_text(CONFIG.format(python=PYTHON))

    def run(
        *args: str, input: str = "", env: dict[str, str] = env, **kwargs: object
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args],
            input=input,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=60,
            **kwargs,  # type: ignore[arg-type]
        )

    return run


def only_json(stdout: str) -> dict[str, object]:
    record = json.loads(stdout)
    assert isinstance(record, dict)
    return record


# --- run -----------------------------------------------------------------------------------------


def test_run_shows_live_progress_logs_result_and_status(lute: Lute) -> None:
    done = lute("run", "peaks")
    assert done.returncode == 0, done.stderr
    assert "peaks RUNNING" in done.stdout
    assert "peaks loading 7" in done.stdout
    assert "progress  50% half way" in done.stdout
    assert 'result {"peaks":42,"run":7}  (42 peaks)' in done.stdout
    assert "peaks COMPLETED" in done.stdout


def test_run_json_prints_only_the_final_record_on_stdout(lute: Lute, tmp_path: Path) -> None:
    done = lute("run", "peaks", "--json", "--param", "run=12", "--tag", "extra")
    assert done.returncode == 0, done.stderr
    record = only_json(done.stdout)
    assert record["status"] == "COMPLETED"
    assert record["params"] == {"run": 12}
    assert record["result"] == {"payload": {"peaks": 42, "run": 12}, "summary": "42 peaks"}
    assert record["tags"] == ["cli-test", "extra"]
    assert "half way" in done.stderr  # the live display went to stderr
    with RecordStore(tmp_path / "runs.db") as store:
        assert store.get(str(record["id"])).status == "COMPLETED"


@pytest.mark.parametrize(
    ("task", "code", "status"), [("broken", 1, "FAILED"), ("slow", 3, "TIMEDOUT")]
)
def test_run_exit_code_tells_how_the_run_ended(
    lute: Lute, task: str, code: int, status: str
) -> None:
    done = lute("run", task, "--json")
    assert done.returncode == code
    assert only_json(done.stdout)["status"] == status


def test_run_of_an_undefined_task_exits_2_naming_the_known_tasks(lute: Lute) -> None:
    done = lute("run", "nope")
    assert done.returncode == 2
    assert "lute-async.toml: no task 'nope'; known tasks: " in done.stderr
    assert "peaks" in done.stderr


def test_run_without_a_task_file_says_there_is_none_before_naming_installed_tasks(
    lute: Lute, tmp_path: Path
) -> None:
    (tmp_path / "lute-async.toml").unlink()
    done = lute("run", "peaks")
    assert done.returncode == 2
    assert done.stderr.startswith(
        f"lute-async: error: no task 'peaks': there is no task file lute-async.toml in {tmp_path}"
    )
    assert "-c FILE or $LUTE_ASYNC_CONFIG" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_hook_module_beside_the_task_file_imports_without_pythonpath(
    lute: Lute, tmp_path: Path
) -> None:
    """The task file and its hook module live in proj/, the CLI runs elsewhere (so neither
    the working directory nor PYTHONPATH holds the module)."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "site_hooks.py").write_text(
        "import pathlib\n"
        "def on_done(event):\n"
        "    if event.name == 'done':\n"
        "        pathlib.Path(event.run.name + '.hooked').write_text(event.name)\n"
    )
    (project / "tasks.toml").write_text(
        '[tasks.hooked]\ncommand = ["true"]\nhooks = ["site_hooks:on_done"]\n'
    )
    done = lute("run", "-c", "proj/tasks.toml", "hooked")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "hooked.hooked").read_text() == "done"


def test_run_with_an_invalid_config_exits_2_with_the_precise_error(
    lute: Lute, tmp_path: Path
) -> None:
    (tmp_path / "bad.toml").write_text('[tasks.a]\ncommand = ["true"]\nretries = 3\n')
    done = lute("run", "a", "--config", "bad.toml")
    assert done.returncode == 2
    assert "bad.toml: task 'a': key 'retries': unknown key" in done.stderr


# --- exec and emit -------------------------------------------------------------------------------


def test_exec_runs_a_shell_command_whose_emits_reach_the_hooks(lute: Lute) -> None:
    script = (
        f"echo hello; {PYTHON} -m lute_async.cli emit progress 0.25; "
        f"{PYTHON} -m lute_async.cli emit peaks '{{\"n\": 3}}'; "
        f"{PYTHON} -m lute_async.cli emit result '{{\"ok\": true}}'"
    )
    done = lute("exec", "--name", "shell", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert "shell hello" in done.stdout
    assert "shell progress  25%" in done.stdout
    assert 'shell peaks {"n":3}' in done.stdout
    assert 'shell result {"ok":true}' in done.stdout


def test_exec_json_reports_a_failing_command_with_its_exit_code(lute: Lute) -> None:
    done = lute("exec", "--json", "--", "sh", "-c", "exit 3")
    assert done.returncode == 1
    record = only_json(done.stdout)
    assert (record["status"], record["exit_code"], record["name"]) == ("FAILED", 3, "sh")


def test_exec_of_a_missing_program_fails_with_a_clear_error(lute: Lute) -> None:
    done = lute("exec", "--json", "--", "no-such-program-here")
    assert done.returncode == 1
    error = only_json(done.stdout)["error"]
    assert isinstance(error, dict)
    assert "no-such-program-here" in error["message"]


def test_emit_outside_an_executor_exits_2_with_a_clear_message(
    lute: Lute, env: dict[str, str]
) -> None:
    for name in [k for k in env if k.startswith("LUTE_ASYNC_") and k != "LUTE_ASYNC_DB"]:
        del env[name]
    done = lute("emit", "peaks", '{"n": 1}')
    assert done.returncode == 2
    assert "cannot emit 'peaks': this process was not started by lute-async" in done.stderr


@pytest.mark.parametrize("data", ['{"fraction": "half"}', '{"fraction": null}'])
def test_emit_of_a_progress_without_a_numeric_fraction_exits_2_without_a_traceback(
    lute: Lute, data: str
) -> None:
    done = lute("emit", "progress", data)
    assert done.returncode == 2, done.stderr
    assert "lute-async: error: cannot emit 'progress': its fraction must be a number" in done.stderr
    assert "Traceback" not in done.stderr


# --- call ----------------------------------------------------------------------------------------


def test_call_takes_params_from_a_file_and_prints_the_record(lute: Lute, tmp_path: Path) -> None:
    (tmp_path / "params.json").write_text(json.dumps({"frames": 2, "threshold": 1.5}))
    done = lute("call", "lute_async.demo:find_peaks", "--params", "params.json")
    assert done.returncode == 0, done.stderr
    record = only_json(done.stdout)
    assert record["name"] == "find_peaks"
    assert record["result"] == {
        "payload": {"peaks": 3, "frames": 2, "threshold": 1.5},
        "summary": None,
    }
    assert "progress 100% frame 2/2" in done.stderr


@pytest.mark.parametrize("command", ["call", "run-task"])
def test_call_reads_params_from_stdin_judge_style(lute: Lute, command: str) -> None:
    done = lute(command, "lute_async.demo:find_peaks", "-q", input='{"frames": 1}')
    assert done.returncode == 0, done.stderr
    assert only_json(done.stdout)["params"] == {"frames": 1}
    assert done.stderr == ""


def test_call_of_a_raising_function_exits_1_with_the_traceback(lute: Lute) -> None:
    done = lute("call", "lute_async.demo:calibrate", "-q", input='{"run": 3}')
    assert done.returncode == 1
    error = only_json(done.stdout)["error"]
    assert isinstance(error, dict)
    assert error["type"] == "FileNotFoundError"
    assert "calib/r0003.h5" in error["message"]
    assert "Traceback" in error["traceback"]


# --- records -------------------------------------------------------------------------------------


def test_records_list_show_and_export(lute: Lute) -> None:
    first = only_json(lute("run", "peaks", "--json").stdout)
    second = only_json(lute("run", "broken", "--json").stdout)

    listed = lute("records", "list", "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [
        second["id"],
        first["id"],
    ]
    failed = lute("records", "list", "--status", "failed", "--json")
    assert [json.loads(line)["name"] for line in failed.stdout.splitlines()] == ["broken"]
    table = lute("records", "list", "--since", "1h")
    assert "peaks" in table.stdout and "COMPLETED" in table.stdout and "FAILED" in table.stdout

    shown = lute("records", "show", str(first["id"])[:8], "--json")
    assert only_json(shown.stdout)["result"] == first["result"]
    human = lute("records", "show", str(second["id"]))
    assert "broken" in human.stdout and "FAILED" in human.stdout

    jsonl = lute("records", "export", "--format", "jsonl")
    assert [json.loads(line)["id"] for line in jsonl.stdout.splitlines()] == [
        first["id"],
        second["id"],
    ]
    rows = list(csv.DictReader(io.StringIO(lute("records", "export", "-f", "csv").stdout)))
    assert [(row["name"], row["status"], row["exit_code"]) for row in rows] == [
        ("peaks", "COMPLETED", "0"),
        ("broken", "FAILED", "3"),
    ]
    assert json.loads(rows[0]["result"])["payload"] == {"peaks": 42, "run": 7}


def test_records_commands_show_binary_and_summarised_results(
    lute: Lute, env: dict[str, str]
) -> None:
    binary = AnalysisRecord(name="frames", status="COMPLETED", result={"payload": b"\xff\x00"})
    large = AnalysisRecord(
        name="stack", status="COMPLETED", result={"payload": bytes(100), "summary": "a stack"}
    )
    with RecordStore(env["LUTE_ASYNC_DB"], max_result_bytes=64) as store:
        store.save(binary)
        store.save(large)

    table = lute("records", "list")
    assert table.returncode == 0
    assert "a stack [payload not recorded: bytes, 100 bytes]" in table.stdout
    assert "b'\\xff\\x00'" in table.stdout
    shown = only_json(lute("records", "show", binary.id, "--json").stdout)
    assert shown["result"] == {"payload": "\\xff\x00"}  # JSON has no bytes: escaped as before
    omitted = only_json(lute("records", "show", large.id, "--json").stdout)["result"]
    assert omitted["omitted"]["size"] == 100  # type: ignore[index]
    assert lute("records", "show", large.id).returncode == 0
    assert lute("records", "export", "-f", "csv").returncode == 0


@pytest.mark.parametrize("command", ["list", "export"])
def test_records_with_a_negative_limit_exit_2_without_a_traceback(lute: Lute, command: str) -> None:
    done = lute("records", command, "--limit", "-1")
    assert done.returncode == 2, done.stderr
    assert "Invalid value for '--limit': must be 1 or more, got -1" in done.stderr
    assert "Traceback" not in done.stderr


def test_records_show_of_an_unknown_id_exits_2(lute: Lute) -> None:
    done = lute("records", "show", "ffffffff")
    assert done.returncode == 2
    assert "no run with id 'ffffffff'" in done.stderr


# --- demo, help, submit --------------------------------------------------------------------------


def test_demo_prints_events_as_they_happen_and_a_records_table(lute: Lute) -> None:
    done = lute("demo")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for expected in (
        "find_peaks     progress   100% frame 8/8",
        "convert        log        [stdout] converting chunk 1 of 3",
        "convert        peaks",
        "calibrate      failed     FAILED",
        "wait_detector  timed_out  TIMEDOUT",
        "records in",
    ):
        assert expected in out
    table = out[out.index("records in") :]
    for status in ("COMPLETED", "FAILED", "TIMEDOUT"):
        assert status in table


@pytest.mark.parametrize(
    "command",
    [[], ["run"], ["exec"], ["call"], ["emit"], ["records"], ["records", "export"], ["demo"]],
)
def test_every_command_has_help(lute: Lute, command: list[str]) -> None:
    done = lute(*command, "--help")
    assert done.returncode == 0
    assert "Usage: lute-async" in done.stdout


def test_run_help_documents_the_exit_codes(lute: Lute) -> None:
    help_text = lute("run", "--help").stdout
    assert "3  the run TIMEDOUT" in help_text
    assert "4  the run was CANCELLED" in help_text


def test_submit_of_an_undefined_task_fails_before_submitting(lute: Lute) -> None:
    done = lute("submit", "nope")
    assert done.returncode == 2
    assert "no task 'nope'" in done.stderr


# --- entry points --------------------------------------------------------------------------------


@pytest.mark.skipif(
    not list(metadata.entry_points(group="lute_async.tasks", name="plugin_echo")),
    reason="tests/plugin_pkg is not installed (pip install ./tests/plugin_pkg)",
)
def test_run_finds_an_installed_task_and_its_installed_hook(lute: Lute) -> None:
    done = lute("run", "plugin_echo", "--param", "word=bonjour")
    assert done.returncode == 0, done.stderr
    assert "plugin says bonjour" in done.stdout
    assert "plugin hook: plugin_echo done" in done.stderr


# --- Ctrl-C --------------------------------------------------------------------------------------

FAMILY = """\
import os, signal, subprocess, sys, time
if "--ignore-term" in sys.argv:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
child = subprocess.Popen(["sleep", "60"])
print("ready", os.getpid(), child.pid, flush=True)
time.sleep(60)
"""


def start_cli(args: list[str], tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env=env,
    )


def wait_for(cli: subprocess.Popen[str], needle: str) -> str:
    """Read the CLI's output until a line containing ``needle``; return that line."""
    assert cli.stdout is not None
    for line in cli.stdout:
        if needle in line:
            return line
    raise AssertionError(f"the CLI ended without printing {needle!r}")


def task_pids(line: str) -> list[int]:
    return [int(word) for word in line.split("ready", 1)[1].split()]


def test_ctrl_c_cancels_the_run_and_leaves_no_task_process(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "family.py").write_text(FAMILY)
    cli = start_cli(["exec", "--name", "family", "--", PYTHON, "family.py"], tmp_path, env)
    try:
        pids = task_pids(wait_for(cli, "ready"))
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=30) == 4
    finally:
        cli.kill()
        cli.wait()
    assert not any(process_exists(pid) for pid in pids)
    with RecordStore(tmp_path / "runs.db") as store:
        [record] = store.query(name="family")
    assert record.status == "CANCELLED"


def test_a_second_ctrl_c_kills_a_task_that_ignores_sigterm(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "family.py").write_text(FAMILY)
    args = ["exec", "--name", "stubborn", "--", PYTHON, "family.py", "--ignore-term"]
    cli = start_cli(args, tmp_path, env)
    try:
        pids = task_pids(wait_for(cli, "ready"))
        cli.send_signal(signal.SIGINT)
        wait_for(cli, "press Ctrl-C again to kill")
        cli.send_signal(signal.SIGINT)
        assert cli.wait(timeout=30) == 4
    finally:
        cli.kill()
        cli.wait()
    assert not any(process_exists(pid) for pid in pids)
    with RecordStore(tmp_path / "runs.db") as store:
        [record] = store.query(name="stubborn")
    assert record.status == "CANCELLED"
    assert record.signal == signal.SIGKILL


def test_config_file_doc_example_is_valid() -> None:
    """examples/tasks.toml parses (it is what the README points to)."""
    from lute_async.config import load_config

    config = load_config(Path(__file__).parent.parent / "examples" / "tasks.toml")
    assert set(config.tasks) == {"find_peaks", "summarise", "shell", "on_cluster"}


GRAPH = """\
[graph.calibrate]
command = ["{python}", "-c", "import lute_async.task as t; t.Reporter.connect().result(2)"]

[graph.broken]
command = ["sh", "-c", "exit 3"]

[graph.summary]
command = ["sh", "-c", "echo gain=$0", "{{{{ calibrate.result.payload }}}}"]
after = ["calibrate"]

[graph.needs_broken]
command = ["sh", "-c", "echo never"]
after = ["broken"]
"""


def test_run_graph_runs_dependants_with_results_and_cancels_after_a_failure(
    lute: Lute, tmp_path: Path
) -> None:
    (tmp_path / "graph.toml").write_text(GRAPH.format(python=PYTHON))
    out = lute("run-graph", "--config", "graph.toml", "--json")
    assert out.returncode == 1, out.stderr
    records = json.loads(out.stdout)
    assert {name: r["status"] for name, r in records.items()} == {
        "calibrate": "COMPLETED",
        "broken": "FAILED",
        "summary": "COMPLETED",
        "needs_broken": "CANCELLED",
    }
    assert "gain=2" in out.stderr
    assert records["needs_broken"]["started_at"] is None


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (
            '[graph.a]\ncommand = ["true"]\nafter = ["b"]\n'
            '[graph.b]\ncommand = ["true"]\nafter = ["a"]\n',
            "workflow has a dependency cycle: a -> b -> a",
        ),
        (
            '[graph.a]\ncommand = ["true"]\nafter = ["zz"]\n',
            "task 'a' runs after unknown task 'zz'",
        ),
        (
            '[graph.a]\ncommand = ["true"]\nbogus = 1\n',
            "graph.toml: graph node 'a': key 'bogus': unknown key; expected one of command,",
        ),
    ],
    ids=["cycle", "unknown-dependency", "unknown-key"],
)
def test_run_graph_of_an_invalid_graph_exits_2_with_the_error_not_a_traceback(
    lute: Lute, tmp_path: Path, graph: str, message: str
) -> None:
    (tmp_path / "graph.toml").write_text(graph)
    out = lute("run-graph", "--config", "graph.toml")
    assert out.returncode == 2, out.stderr
    assert f"lute-async: error: {message}" in out.stderr
    assert "Traceback" not in out.stderr
    assert "ExceptionGroup" not in out.stderr


def test_lute_errors_leave_a_group_holding_other_exceptions_alone() -> None:
    from lute_async.cli.common import lute_errors
    from lute_async.errors import ConfigError

    with pytest.raises(ExceptionGroup), lute_errors():
        raise ExceptionGroup("mixed", [ConfigError("ours"), ValueError("a bug")])


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
def test_an_unexpected_error_is_one_line_and_exit_70_unless_debug_shows_the_traceback(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    debug: bool,
) -> None:
    # A bug inside lute-async (not bad input): the store fails in a way nothing expects.
    from lute_async.cli import main

    def broken(self: RecordStore, *args: object, **kwargs: object) -> None:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(RecordStore, "iterate", broken)
    args = ["--db", os.fspath(tmp_path / "runs.db"), "records", "list"]
    if debug:
        with pytest.raises(RuntimeError, match="the disk is on fire"):
            main(["--debug", *args])
        return
    with pytest.raises(SystemExit) as ended:
        main(args)
    assert ended.value.code == 70
    assert capsys.readouterr().err == (
        "lute-async: internal error: RuntimeError: the disk is on fire "
        "(run with --debug for the traceback)\n"
    )


def test_the_readme_command_block_is_the_help_of_today() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = readme.split("### Commands\n", 1)[1].split("```text\n", 1)[1].split("```", 1)[0]
    shown = subprocess.run(
        [*CLI, "--help"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert shown.stdout == block


# --- where records go ----------------------------------------------------------------------------


def _without_db(env: dict[str, str], **extra: str) -> dict[str, str]:
    return {**{k: v for k, v in env.items() if k != "LUTE_ASYNC_DB"}, **extra}


def _listed(done: subprocess.CompletedProcess[str]) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [json.loads(line)["name"] for line in done.stdout.splitlines()]


def test_every_command_records_into_the_config_files_executor_db(
    lute: Lute, tmp_path: Path, env: dict[str, str]
) -> None:
    config = tmp_path / "lute-async.toml"
    config.write_text('[executor]\ndb = "history.db"\n\n' + config.read_text())
    plain = _without_db(env)
    assert lute("run", "peaks", "--json", env=plain).returncode == 0
    assert lute("exec", "--name", "adhoc", "--json", "--", "true", env=plain).returncode == 0
    called = lute("call", "lute_async.demo:calibrate", "-q", input="{}", env=plain)
    assert called.returncode == 1
    assert _listed(lute("records", "list", "--json", env=plain)) == ["calibrate", "adhoc", "peaks"]
    # from elsewhere, the config named by $LUTE_ASYNC_CONFIG says where the records are
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = subprocess.run(
        [*CLI, "records", "list", "--json"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        env={**plain, "LUTE_ASYNC_CONFIG": os.fspath(config)},
        timeout=60,
    )
    assert _listed(found) == ["calibrate", "adhoc", "peaks"]
    assert (tmp_path / "history.db").exists()
    assert not (tmp_path / "runs.db").exists()


def test_db_after_the_command_is_taken_and_wins_over_the_one_before(
    lute: Lute, tmp_path: Path
) -> None:
    assert lute("run", "peaks", "--json", "--db", "after.db").returncode == 0
    assert lute("exec", "--json", "--db", "after.db", "--", "true").returncode == 0
    assert _listed(lute("records", "list", "--json", "--db", "after.db")) == ["true", "peaks"]
    wins = lute("--db", "before.db", "records", "list", "--json", "--db", "after.db")
    assert _listed(wins) == ["true", "peaks"]
    assert _listed(lute("records", "--db", "after.db", "list", "--json")) == ["true", "peaks"]
    assert _listed(lute("--db", "after.db", "records", "export")) == ["peaks", "true"]
    assert _listed(lute("records", "list", "--json")) == []  # $LUTE_ASYNC_DB: another file


# --- what tasks print ----------------------------------------------------------------------------

EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\\x9b31m"
EVIL_SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x1b]8;;http://evil.example\\x1b\\click"
EVIL_TASK = f"""\
import sys
from lute_async.task import Reporter, task

EVIL = {EVIL!r}

@task
def boom():
    raise ValueError("boom " + EVIL)

if __name__ == "__main__":
    with Reporter.connect() as report:
        print("out " + EVIL, flush=True)
        print("err " + EVIL, file=sys.stderr, flush=True)
        report.progress(0.5, "half " + EVIL)
        report.log("log " + EVIL)
        report.emit("custom", {{"text": EVIL}})
        report.result({{"text": EVIL}}, summary="sum " + EVIL)
"""


def _no_control(text: str) -> None:
    assert not [c for c in text if (ord(c) < 32 and c not in "\n\t") or 0x7F <= ord(c) < 0xA0]


def test_terminal_escapes_from_a_task_are_shown_never_sent(
    lute: Lute, tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "evil_task.py").write_text(EVIL_TASK)
    # (A name holding control characters is refused before the run: tests/test_injection.py.)
    shown = lute("exec", "--name", "evil", "--", PYTHON, "evil_task.py")
    assert shown.returncode == 0, shown.stderr
    _no_control(shown.stdout)
    for line in ("out ", "err ", "half ", "log ", "sum "):
        assert line + EVIL_SHOWN in shown.stdout
    with_task = {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path), env["PYTHONPATH"]])}
    failed = lute("call", "evil_task:boom", input="{}", env=with_task)
    assert failed.returncode == 1
    _no_control(failed.stderr)
    assert "boom " + EVIL_SHOWN in failed.stderr
    assert json.loads(failed.stdout)["error"]["message"] == "boom " + EVIL  # JSON escapes it
    _no_control(failed.stdout)
    listed = lute("records", "list")
    _no_control(listed.stdout)
    assert "pwned" in listed.stdout  # the name, summary and error are there, shown (folded)
    assert "\\x1b" in listed.stdout
    ids = [json.loads(line)["id"] for line in lute("records", "list", "--json").stdout.splitlines()]
    for run_id in ids:
        details = lute("records", "show", run_id)
        assert details.returncode == 0, details.stderr
        _no_control(details.stdout)
    assert "\\u001b]0;pwned" in lute("records", "show", ids[1]).stdout  # its result, as JSON


def test_log_events_logs_every_event_whatever_the_log_level(lute: Lute, tmp_path: Path) -> None:
    (tmp_path / "talk.py").write_text("print('a line of output', flush=True)\n")
    out = lute("--log-format", "json", "--log-events", "exec", "--", PYTHON, "talk.py")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line)["event"] for line in out.stderr.splitlines() if line.startswith("{")]
    assert {"started", "log", "done"} <= set(events)
