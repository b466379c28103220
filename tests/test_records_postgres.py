"""Records in PostgreSQL: libpq's ways to name a database, every bad input a clear error, the
password kept out of records, logs and batch scripts, many executors at once, and the journal
when the server goes away."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import pytest
from pg_support import PgServer, PrivateServer, raw_query
from slurm_support import slurm_cluster  # noqa: F401 - a fixture, used by name

from lute_async import Executor
from lute_async.errors import RecordStoreError
from lute_async.records import AnalysisRecord, RecordStore
from lute_async.records.location import describe_db

REPO_ROOT = Path(__file__).resolve().parents[1]
SECRET = "hunter2-not-the-password"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def with_password(url: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}:{password}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl()


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lute_async.cli", *args],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=60,
    )


def assert_one_line_error(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert SECRET not in done.stderr


# --- naming a database the libpq way ----------------------------------------------------------


def test_a_unix_socket_url_reaches_the_same_database(pg_server: PgServer, pg_url: str) -> None:
    name = urlsplit(pg_url).path.lstrip("/")
    with RecordStore(pg_url) as tcp:
        tcp.save(AnalysisRecord(name="via-tcp", status="COMPLETED"))
    with RecordStore(pg_server.database_url(name, socket=True)) as local:
        assert [r.name for r in local.query()] == ["via-tcp"]


def test_a_service_name_and_pgpassfile_give_host_user_and_password(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = urlsplit(pg_url)
    services = tmp_path / "pg_service.conf"
    services.write_text(
        f"[lute]\nhost={parts.hostname}\nport={parts.port}\n"
        f"dbname={parts.path.lstrip('/')}\nuser={parts.username}\n"
    )
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{parts.hostname}:{parts.port}:*:{parts.username}:{parts.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    with RecordStore("postgresql:///?service=lute") as store:
        store.save(AnalysisRecord(name="by-service", status="COMPLETED"))
    done = cli(
        "records",
        "list",
        "--db",
        "postgresql:///?service=lute",
        "--json",
        env={"PGSERVICEFILE": str(services), "PGPASSFILE": str(passfile)},
    )
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["name"] for line in done.stdout.splitlines()] == ["by-service"]


def test_the_records_commands_work_on_a_server_database(pg_url: str) -> None:
    ran = cli("exec", "--db", pg_url, "--json", "--", "true")
    assert ran.returncode == 0, ran.stderr
    run_id = json.loads(ran.stdout)["id"]
    listed = cli("records", "list", "--db", pg_url, "--json")
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [run_id]
    shown = cli("records", "show", run_id[:8], "--db", pg_url)
    assert shown.returncode == 0 and run_id in shown.stdout, shown.stderr
    exported = cli("records", "export", "--db", pg_url, "--format", "csv")
    assert exported.returncode == 0 and run_id in exported.stdout, exported.stderr
    reconciled = cli("records", "reconcile", "--db", pg_url, "--json")
    assert reconciled.returncode == 0, reconciled.stderr


def test_a_failed_transaction_is_rolled_back_and_the_connection_serves_on(
    record_db: Path | str,
) -> None:
    with RecordStore(record_db) as store:
        database = store._database  # the backend seam itself
        with (
            pytest.raises(RecordStoreError, match="cannot try this in records database"),
            database.write("try this") as conn,
        ):
            conn.execute("INSERT INTO run_tags (run_id, tag) VALUES (?, ?)", ("r", "t"))
            conn.execute("INSERT INTO runs (id) VALUES (?)", ("no-name",))
        with (
            pytest.raises(ValueError, match="not the database's"),
            database.write("try that") as conn,
        ):
            conn.execute("INSERT INTO run_tags (run_id, tag) VALUES (?, ?)", ("r", "t"))
            raise ValueError("not the database's")
        saved = AnalysisRecord(name="after", status="COMPLETED", tags=["a"])
        store.save(saved)
        assert [r.id for r in store.query()] == [saved.id]
    assert raw_query(record_db, "SELECT run_id, tag FROM run_tags") == [(saved.id, "a")]


# --- bad input: each a clear error naming it --------------------------------------------------


def test_an_unreachable_server_is_named_without_the_password(pg_server: PgServer) -> None:
    url = f"postgresql://lute_test:{SECRET}@127.0.0.1:1/records"
    with pytest.raises(RecordStoreError) as caught:
        RecordStore(url)
    message = str(caught.value)
    assert message.startswith(
        "cannot reach the PostgreSQL server of records database "
        "postgresql://lute_test:***@127.0.0.1:1/records"
    )
    assert "is it running" in message and SECRET not in message
    assert_one_line_error(cli("records", "list", "--db", url), "cannot reach", "127.0.0.1:1")


@pytest.mark.parametrize(
    ("url", "named"),
    [
        (f"postgresql://u:{SECRET}@127.0.0.1:1/db?sslmode=bogus", 'invalid sslmode value: "bogus"'),
        ("postgresql:///?service=lute_nosuch", 'definition of service "lute_nosuch" not found'),
        (f"postgres://u:{SECRET}@[::1/x", "IPv6 host address"),
        ("postgresql:/lute_typo", "postgresql:/lute_typo"),  # a URL, not a sqlite file
    ],
)
def test_a_url_libpq_refuses_is_named_with_libpqs_reason(url: str, named: str) -> None:
    with pytest.raises(RecordStoreError, match="is not a usable URL") as caught:
        RecordStore(url)
    assert named in str(caught.value) and SECRET not in str(caught.value)
    assert_one_line_error(cli("records", "list", "--db", url), "not a usable URL", named)
    assert not Path("postgresql:").exists()


def test_a_wrong_password_is_a_refused_login(pg_url: str) -> None:
    url = with_password(pg_url, SECRET)
    with pytest.raises(RecordStoreError, match=r"refused the login.*password") as caught:
        RecordStore(url)
    assert SECRET not in str(caught.value)
    assert_one_line_error(cli("records", "list", "--db", url), "refused the login")


def test_a_database_that_does_not_exist_is_named(pg_server: PgServer) -> None:
    url = pg_server.database_url("lute_no_such_database")
    with pytest.raises(RecordStoreError, match=r"lute_no_such_database.*does not exist"):
        RecordStore(url)


def test_a_database_without_the_schema_that_we_may_not_create_is_named(
    pg_server: PgServer,
) -> None:
    # Owned by postgres: the test role may connect but not create tables (PostgreSQL 15+).
    name = "lute_t_not_ours"
    pg_server.superuser(f'DROP DATABASE IF EXISTS "{name}"')
    pg_server.superuser(f'CREATE DATABASE "{name}"')
    try:
        url = pg_server.database_url(name)
        with pytest.raises(RecordStoreError) as caught:
            RecordStore(url)
        assert str(caught.value).startswith(f"cannot migrate records database {describe_db(url)}")
        assert "from schema v0 to v1: permission denied for schema public" in str(caught.value)
        assert_one_line_error(cli("records", "list", "--db", url), "permission denied", name)
    finally:
        pg_server.superuser(f'DROP DATABASE IF EXISTS "{name}"')


def test_a_newer_schema_is_refused_on_the_command_line(pg_url: str) -> None:
    RecordStore(pg_url).close()
    with __import__("psycopg").connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE lute_async_schema SET version = 99")
    assert_one_line_error(cli("records", "list", "--db", pg_url), "schema v99", "upgrade")


def test_without_psycopg_a_url_says_how_to_install_it(pg_url: str) -> None:
    code = "import sys; sys.modules['psycopg'] = None\n" + textwrap.dedent(
        """
        from lute_async.records import RecordStore
        try:
            RecordStore(sys.argv[1])
        except Exception as exc:
            print(exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, pg_url], capture_output=True, text=True, env=ENV
    )
    assert "needs psycopg 3: pip install 'lute-async[postgres]'" in done.stdout, done.stderr
    assert (urlsplit(pg_url).password or "") not in done.stdout


# --- the password stays out of records, logs and journals -------------------------------------


async def test_the_urls_password_is_in_no_record_log_or_journal(
    pg_url: str, tmp_path: Path, json_logs: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = urlsplit(pg_url).password or ""
    monkeypatch.setenv("LUTE_ASYNC_DB", pg_url)
    monkeypatch.setenv("LUTE_ASYNC_JOURNAL_DIR", str(tmp_path / "journal"))
    async with Executor(workdir=tmp_path / "work", record_env="all") as ex:
        record = await ex.run(
            [sys.executable, "-c", "import os; print(os.environ['LUTE_ASYNC_DB'])"]
        )
    assert record.status == "COMPLETED"
    assert "***" in record.env["LUTE_ASYNC_DB"]
    rows = raw_query(pg_url, "SELECT doc FROM runs")
    assert rows and all(password not in str(row) for row in rows)
    # A server that cannot be reached: the record goes to the journal, the failure to the log.
    unreachable = with_password(pg_url, SECRET).replace(str(urlsplit(pg_url).port), "1", 1)
    lone = Executor(db=unreachable, workdir=tmp_path / "work")
    spilled = await lone.run([sys.executable, "-c", "pass"])
    await lone.aclose()
    logged = json_logs.getvalue()  # type: ignore[attr-defined]
    assert "record_save_failed" in logged and "spilled to the journal" in logged
    journals = list((tmp_path / "journal").iterdir())
    assert journals and spilled.id in journals[0].read_text()
    for text in (logged, *(path.read_text() for path in journals)):
        assert SECRET not in text and password not in text


# --- many executors at once, and a server that goes away --------------------------------------

RECORDER = textwrap.dedent(
    """
    import sys, anyio
    from lute_async import Executor

    async def main(db, workdir, worker, count):
        async with Executor(db=db, workdir=workdir, max_concurrency=8, log_events=False) as ex:
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(lambda i=i: ex.run(["true"], name=f"w{worker}", tags=[f"i{i}"]))

    sys.stdin.readline()  # all four start together
    anyio.run(main, sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
    """
)


def test_four_executor_processes_recording_1000_runs_lose_and_duplicate_nothing(
    record_db: Path | str, tmp_path: Path
) -> None:
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                RECORDER,
                str(record_db),
                str(tmp_path / f"w{n}"),
                str(n),
                "250",
            ],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=ENV,
            text=True,
        )
        for n in range(4)
    ]
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
    for writer in writers:
        assert writer.stderr is not None
        with writer.stderr:
            stderr = writer.stderr.read()
        assert writer.wait() == 0, stderr
    with RecordStore(record_db) as store:
        runs = store.query()
    assert len(runs) == 1000 and len({run.id for run in runs}) == 1000
    assert {run.status for run in runs} == {"COMPLETED"}
    for n in range(4):
        tags = sorted(run.tags[0] for run in runs if run.name == f"w{n}")
        assert tags == sorted(f"i{i}" for i in range(250))


async def test_a_server_stopped_mid_runs_then_restarted_gets_every_record_from_the_journal(
    private_pg: PrivateServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = private_pg.up()
    name = server.fresh_database()
    url = server.database_url(name)
    monkeypatch.setenv("LUTE_ASYNC_JOURNAL_DIR", str(tmp_path / "journal"))
    gate = tmp_path / "gate"
    gate.touch()
    # The tasks wait on a lock the test holds: they end when the test lets go of it.
    waiter = [
        sys.executable,
        "-c",
        f"import fcntl; fcntl.flock(open({str(gate)!r}), fcntl.LOCK_EX)",
    ]
    held = gate.open()
    fcntl.flock(held, fcntl.LOCK_EX)
    started = anyio.Event()
    running = 0

    def count(event: object) -> None:
        nonlocal running
        running += 1
        if running == 5:
            started.set()

    records: list[AnalysisRecord] = []
    async with Executor(db=url, workdir=tmp_path / "work", lease_period=60) as ex:
        ex.on("started", count)
        async with anyio.create_task_group() as tg:

            async def one(i: int) -> None:
                records.append(await ex.run(waiter, name=f"gated{i}"))

            for i in range(5):
                tg.start_soon(one, i)
            await started.wait()
            await anyio.to_thread.run_sync(private_pg.stop)
            held.close()  # the tasks end while the server is down
    assert {r.status for r in records} == {"COMPLETED"}
    assert list((tmp_path / "journal").iterdir())  # their ends were spilled
    server = private_pg.up()
    with RecordStore(url) as store:
        assert sorted(store.replayed_on_open) == sorted(r.id for r in records)
        assert {store.get(r.id).status for r in records} == {"COMPLETED"}
        assert not list((tmp_path / "journal").glob("*.jsonl"))
        # An open store outlives a restart: it reconnects by itself, and the first save that
        # gets through replays what was spilled meanwhile.
        private_pg.stop()
        spilled = AnalysisRecord(name="while-down", status="COMPLETED")
        with pytest.raises(RecordStoreError, match="spilled to the journal"):
            store.save(spilled)
        private_pg.up()
        store.save(AnalysisRecord(name="after", status="COMPLETED"))
        assert store.get(spilled.id).name == "while-down"
    assert not list((tmp_path / "journal").glob("*.jsonl"))


def test_an_executor_db_key_of_a_config_file_may_be_a_url(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "lute-async.toml"
    config.write_text(f'[executor]\ndb = "{pg_url}"\n\n[tasks.hello]\ncommand = ["true"]\n')
    env = {key: value for key, value in ENV.items() if key != "LUTE_ASYNC_DB"}
    done = subprocess.run(
        [sys.executable, "-m", "lute_async.cli", "run", "hello", "-c", str(config), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with RecordStore(pg_url) as store:
        assert [r.id for r in store.query(name="hello")] == [json.loads(done.stdout)["id"]]


# --- a batch job's executor records into the server -------------------------------------------


@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
async def test_a_submitted_executor_records_into_the_server_and_the_user_lists_the_run(
    pg_url: str, tmp_path: Path
) -> None:
    from lute_async.launchers.slurm import submit_executor

    password = urlsplit(pg_url).password or ""
    config = tmp_path / "tasks.toml"
    config.write_text(f'[tasks.greet]\ncommand = ["{sys.executable}", "-c", "print(1)"]\n')
    output = tmp_path / "job.out"
    job_id = await anyio.to_thread.run_sync(
        lambda: submit_executor("greet", config, [f"--output={output}"], {}, pg_url)
    )
    done = await anyio.run_process(["srun", f"--dependency=afterany:{job_id}", "true"], check=False)
    assert done.returncode == 0, done.stderr.decode()
    listed = cli("records", "list", "--db", pg_url, "--name", "greet", "--json")
    assert listed.returncode == 0, listed.stderr
    (record,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert record["status"] == "COMPLETED", output.read_text()
    assert record["slurm_job_id"] is None or record["slurm_job_id"] == job_id
    script = await anyio.run_process(
        ["scontrol", "write", "batch_script", job_id, "-"], check=False
    )
    assert script.returncode == 0 and b"lute_async.cli" in script.stdout, script.stderr
    for text in (script.stdout.decode(), output.read_text(), listed.stdout):
        assert password not in text


def test_the_records_benchmark_measures_both_backends(pg_server: PgServer) -> None:
    sys.path.insert(0, str(REPO_ROOT))  # benchmarks/ is not installed
    from benchmarks import records as bench

    rows = bench.run(records=3, pg=pg_server.url)
    assert [(backend, writers) for backend, writers, _ in rows] == [
        ("sqlite", 1),
        ("sqlite", 8),
        ("postgresql", 1),
        ("postgresql", 8),
    ]
    assert all(rate > 0 for _, _, rate in rows)


def test_pages_and_cursors_walk_every_run_once_on_both_backends(record_db: Path | str) -> None:
    from lute_async.records import RunFilter

    with RecordStore(record_db) as store:
        saved = [
            AnalysisRecord(name="p", status="COMPLETED", submitted_at=float(i // 3), tags=["t"])
            for i in range(10)
        ]
        store.save_many(saved)
        seen: list[str] = []
        found, cursor = store.page(RunFilter(tags="t"), limit=4)
        seen += [r.id for r in found]
        while cursor is not None:
            found, cursor = store.page(RunFilter(tags="t"), after=cursor, limit=4)
            seen += [r.id for r in found]
        assert sorted(seen) == sorted(r.id for r in saved) and len(seen) == 10
        newest = store.query(limit=1)[0]
        rest, _ = store.page(after=store.cursor_of(newest.id), limit=20)
        assert [r.id for r in rest] == [r.id for r in store.query()][1:]


async def test_a_password_given_as_a_url_parameter_is_masked_too(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts = urlsplit(pg_url)
    password = parts.password or ""
    url = f"postgresql://{parts.username}@{parts.hostname}:{parts.port}{parts.path}"
    url += f"?password={password}&application_name=lute-test"
    monkeypatch.setenv("LUTE_ASYNC_DB", url)
    async with Executor(workdir=tmp_path / "work", record_env="all") as ex:
        record = await ex.run(["true"])
    assert record.status == "COMPLETED"
    assert record.env["LUTE_ASYNC_DB"].endswith("?password=***&application_name=lute-test")
    assert describe_db(url).endswith("?password=***&application_name=lute-test")
    rows = raw_query(pg_url, "SELECT doc FROM runs")
    assert rows and all(password not in str(row) for row in rows)
