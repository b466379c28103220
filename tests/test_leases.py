"""LOST detection by lease, on both backends: an executor's lease row, renewed while it lives;
an active run whose executor's lease has lapsed is LOST whichever host looks."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest
from pg_support import raw_execute, raw_query
from slurm_support import unavailable

from lute_async import Executor
from lute_async.errors import ConfigError
from lute_async.records import AnalysisRecord, RecordStore
from lute_async.records.leases import LEASE_PERIODS, PROCESS_STARTED

REPO_ROOT = Path(__file__).resolve().parents[1]
OTHER_HOST = "lute-other-node"


def lease_row(db: Path | str, host: str, pid: int, started: float, expires: float) -> None:
    raw_execute(
        db,
        "INSERT INTO executor_leases (host, pid, started_at, renewed_at, expires_at) "
        f"VALUES ('{host}', {pid}, {started}, {started}, {expires})",
    )


def running_elsewhere(store: RecordStore, pid: int = 4242, **fields: object) -> AnalysisRecord:
    """A RUNNING run of executor *pid* on another host (its pid cannot be checked here)."""
    record = AnalysisRecord(
        name="far", status="RUNNING", executor_host=OTHER_HOST, executor_pid=pid, **fields
    )
    store.save(record)
    return record


def test_a_run_whose_executor_holds_a_fresh_lease_is_left_alone(record_db: Path | str) -> None:
    with RecordStore(record_db) as store:
        record = running_elsewhere(store)
        lease_row(record_db, OTHER_HOST, 4242, record.submitted_at - 1, time.time() + 3600)
        assert store.mark_lost() == []
        assert store.get(record.id).status == "RUNNING"


def test_a_run_whose_executor_lease_lapsed_is_lost_from_another_host(
    record_db: Path | str,
) -> None:
    with RecordStore(record_db) as store:
        record = running_elsewhere(store)
        lease_row(record_db, OTHER_HOST, 4242, record.submitted_at - 1, time.time() - 1)
        assert store.mark_lost() == [record.id]
        lost = store.get(record.id)
    assert lost.status == "LOST" and lost.ended_at is not None
    assert lost.error is not None
    assert lost.error["message"] == (
        f"executor process 4242 on {OTHER_HOST} stopped renewing its lease while the run was "
        "RUNNING"
    )


def test_a_run_submitted_before_its_pids_lease_started_is_lost(record_db: Path | str) -> None:
    # The pid now belongs to a later executor process: the run's executor is gone.
    with RecordStore(record_db) as store:
        record = running_elsewhere(store)
        lease_row(record_db, OTHER_HOST, 4242, record.submitted_at + 10, time.time() + 3600)
        assert store.mark_lost() == [record.id]


def test_a_run_without_a_lease_elsewhere_is_left_to_its_own_host(record_db: Path | str) -> None:
    with RecordStore(record_db) as store:
        record = running_elsewhere(store)
        assert store.mark_lost() == []
        assert store.get(record.id).status == "RUNNING"


def test_renewing_writes_this_process_lease_ahead_by_three_periods(
    record_db: Path | str,
) -> None:
    with RecordStore(record_db) as store:
        store.renew_lease(10.0)
        ((host, pid, started, renewed, expires),) = raw_query(
            record_db,
            "SELECT host, pid, started_at, renewed_at, expires_at FROM executor_leases",
        )
        assert (host, pid, started) == (os.uname().nodename, os.getpid(), PROCESS_STARTED)
        assert expires == pytest.approx(float(renewed) + 10.0 * LEASE_PERIODS)  # type: ignore[arg-type]
        assert store.lease_expires_at() == expires


async def test_an_open_executor_holds_a_lease_and_its_runs_stay_running_elsewhere(
    record_db: Path | str, tmp_path: Path
) -> None:
    waits = [sys.executable, "-c", "import sys; sys.stdin.read()"]
    async with (
        Executor(db=record_db, workdir=tmp_path / "work", lease_period=60) as ex,
        ex.start(waits) as run,
    ):
        with RecordStore(record_db) as other:
            assert other.lease_expires_at() is not None
            assert other.mark_lost() == []
        await run.cancel()


async def test_an_open_executor_renews_its_lease_while_a_run_outlasts_it(
    record_db: Path | str, tmp_path: Path
) -> None:
    waits = [sys.executable, "-c", "import time; time.sleep(3600)"]
    async with (
        Executor(db=record_db, workdir=tmp_path / "work", lease_period=0.5) as ex,
        ex.start(waits) as run,
    ):
        with RecordStore(record_db) as other:
            first = other.lease_expires_at()
            assert first is not None
            # Renewed: the expiry moves on (bounded wait, one lease period at a time).
            deadline = time.monotonic() + 30
            while (renewed := other.lease_expires_at()) == first:
                assert time.monotonic() < deadline, "the lease was never renewed"
                await anyio.sleep(0.5)
            assert renewed is not None and renewed > first
            assert other.mark_lost() == []  # just renewed: nobody takes the run for lost
        await run.cancel()
    assert run.record.status == "CANCELLED"


def test_lease_period_must_be_a_positive_number(tmp_path: Path) -> None:
    for bad in (0, -1.0, "5", float("nan")):
        with pytest.raises(ConfigError, match="lease_period"):
            Executor(db=tmp_path / "r.db", lease_period=bad)  # type: ignore[arg-type]


# The executor of the SIGKILL test: runs a task that waits, prints the run's id and the task's
# pid once RUNNING, and renews its lease every LEASE_PERIOD seconds until it is killed.
LEASE_PERIOD = 0.2
EXECUTOR = textwrap.dedent(
    """
    import json, sys, anyio
    from lute_async import Executor

    async def main():
        async with Executor(db=sys.argv[1], workdir=sys.argv[2], lease_period=PERIOD) as ex:
            async with ex.start([sys.executable, "-c", "import time; time.sleep(3600)"]) as run:
                async for message in run.messages():
                    if message.sig == "started":
                        print(json.dumps([run.id, run.pid]), flush=True)
                await anyio.sleep_forever()

    anyio.run(main)
    """
).replace("PERIOD", str(LEASE_PERIOD))


def test_a_sigkilled_executors_runs_turn_lost_after_its_lease_lapses_seen_elsewhere(
    record_db: Path | str, tmp_path: Path
) -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        unavailable("another host's executor is a UTS namespace: needs root and unshare")
    if isinstance(record_db, Path):
        record_db.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # The executor runs on "another host": a UTS namespace with a hostname of its own, so the
    # checker (on this host) cannot ask after its pid and sees it die only by its lease.
    argv = ["unshare", "--uts", "sh", "-c", f'hostname {OTHER_HOST} && exec "$@"', "sh"]
    executor = subprocess.Popen(
        [*argv, sys.executable, "-c", EXECUTOR, str(record_db), str(tmp_path / "work")],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert executor.stdout is not None
    run_id, task_pid = json.loads(executor.stdout.readline())
    executor.send_signal(signal.SIGKILL)
    executor.wait()
    os.kill(task_pid, signal.SIGKILL)  # the orphaned task, so nothing is left behind
    ((expires,),) = raw_query(record_db, "SELECT expires_at FROM executor_leases")
    # This process looks again each period until the lease's expiry has passed (bounded); no
    # run of a lease not yet lapsed may be LOST.
    deadline = float(expires) + 30  # type: ignore[arg-type]
    while True:
        started = time.time()
        with RecordStore(record_db) as store:
            seen = store.get(run_id)
        if seen.status == "LOST":
            # Not before the lease lapsed: this look ended after its expiry.
            assert time.time() >= float(expires), (started, expires)  # type: ignore[arg-type]
            break
        assert started < deadline, f"still {seen.status} 30 s after the lease lapsed"
        # Until the expiry, then once per lease period.
        time.sleep(max(float(expires) - time.time(), LEASE_PERIOD))  # type: ignore[arg-type]
    assert seen.error is not None
    assert re.fullmatch(
        f"executor process {executor.pid} on {OTHER_HOST} stopped renewing its lease "
        "while the run was (PENDING|RUNNING)",
        seen.error["message"],
    ), seen.error


def leases_of(db: Path | str) -> set[tuple[str, int]]:
    rows = raw_query(db, "SELECT host, pid FROM executor_leases")
    return {(str(host), int(str(pid))) for host, pid in rows}


def test_a_lapsed_lease_no_active_run_names_is_pruned_when_the_records_open(
    record_db: Path | str,
) -> None:
    """One lease row per executor process would otherwise stay for good: a lapsed one goes
    once no active run names it (its runs ended, or were just marked LOST); a fresh one, or a
    lapsed one whose run is still active elsewhere until then, is not pruned before."""
    with RecordStore(record_db) as store:
        ended = AnalysisRecord(
            name="done", status="COMPLETED", executor_host=OTHER_HOST, executor_pid=1111
        )
        store.save(ended)
        far = running_elsewhere(store, pid=2222)
        now = time.time()
        lease_row(record_db, OTHER_HOST, 1111, now - 100, now - 50)  # lapsed, its run ended
        lease_row(record_db, OTHER_HOST, 2222, far.submitted_at - 1, now - 1)  # lapsed, active
        lease_row(record_db, OTHER_HOST, 3333, now - 100, now + 3600)  # fresh, no run
    with RecordStore(record_db) as store:  # opening marks LOST, then prunes
        assert store.lost_on_open == [far.id]
        assert store.get(far.id).status == "LOST"
    assert leases_of(record_db) == {(OTHER_HOST, 3333)}


def test_a_plain_open_with_nothing_to_prune_leaves_the_leases(record_db: Path | str) -> None:
    with RecordStore(record_db) as store:
        record = running_elsewhere(store, pid=4444)
        lease_row(record_db, OTHER_HOST, 4444, record.submitted_at - 1, time.time() + 3600)
    with RecordStore(record_db) as store:
        assert store.lost_on_open == []
    assert leases_of(record_db) == {(OTHER_HOST, 4444)}
