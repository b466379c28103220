"""Records per second into each backend, with 1 and with 8 concurrent writer processes.

``python -m benchmarks.records [--records N] [--pg URL]``: every writer opens its own
RecordStore and saves N records, one transaction each (as an executor saves a run's status
changes); all start together, and the rate is all records over the wall time from the start to
the last writer's end. sqlite is a fresh file; PostgreSQL a fresh database on the server of
``--pg`` or ``$LUTE_ASYNC_TEST_PG`` (``scripts/postgres-localhost up``; skipped without one).
Only same-run ratios mean anything: the figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO_ROOT = Path(__file__).resolve().parents[1]
WRITERS = (1, 8)
RECORDS = 300

_WRITER = """
import sys, time
from lute_async.records import AnalysisRecord, RecordStore
db, count = sys.argv[1], int(sys.argv[2])
with RecordStore(db, mark_lost=False) as store:
    records = [AnalysisRecord(name="bench", status="COMPLETED", tags=["b"]) for _ in range(count)]
    print("ready", flush=True)
    sys.stdin.readline()
    for record in records:
        store.save(record)
"""


def measure(db: str, writers: int, records: int) -> float:
    """Records per second of *writers* processes saving *records* each into *db*."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, db, str(records)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(writers)
    ]
    for child in children:  # every writer has opened its store (and migrated it) first
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    start = time.perf_counter()
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.close()
    for child in children:
        if child.wait() != 0:
            raise RuntimeError(f"a writer into {db} failed (exit {child.returncode})")
    return writers * records / (time.perf_counter() - start)


def _fresh_pg_database(server: str) -> tuple[str, str]:
    """A new database on *server* (a URL): its URL and name."""
    import psycopg

    name = f"lute_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return urlunsplit(urlsplit(server)._replace(path=f"/{name}")), name


def _drop_pg_database(server: str, name: str) -> None:
    import psycopg

    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(records: int, pg: str | None) -> list[tuple[str, int, float]]:
    """``(backend, writers, records/s)`` rows."""
    rows: list[tuple[str, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="lute-bench-records-") as tmp:
        for writers in WRITERS:
            db = Path(tmp) / f"w{writers}" / "runs.db"
            rows.append(("sqlite", writers, measure(str(db), writers, records)))
    if pg:
        for writers in WRITERS:
            url, name = _fresh_pg_database(pg)
            try:
                rows.append(("postgresql", writers, measure(url, writers, records)))
            finally:
                _drop_pg_database(pg, name)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.records", description=__doc__)
    parser.add_argument("--records", type=int, default=RECORDS, help="records per writer")
    parser.add_argument("--pg", default=os.environ.get("LUTE_ASYNC_TEST_PG"), help="server URL")
    args = parser.parse_args(argv)
    rows = run(args.records, args.pg)
    print("| backend | writers | records/s |\n|---|---:|---:|")
    for backend, writers, rate in rows:
        print(f"| {backend} | {writers} | {rate:,.0f} |")
    if not args.pg:
        print("(PostgreSQL not measured: no --pg and no $LUTE_ASYNC_TEST_PG)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
