"""Fixtures and helpers for tests against a real PostgreSQL server.

The server comes from ``scripts/postgres-localhost up``, which writes
``${LUTE_ASYNC_PG_DIR:-/tmp/lute-async-pg}/env`` (``LUTE_ASYNC_TEST_PG``: a URL with the test
role's password over TCP; ``LUTE_ASYNC_TEST_PG_SOCKET``: the same role over the Unix socket).
When the server or psycopg is missing, a test needing it fails under ``CI=true`` and is skipped
elsewhere with the reason. Each test gets a database of its own (``CREATE DATABASE``, fast).
"""

from __future__ import annotations

import functools
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from slurm_support import read_env_file, unavailable

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "postgres-localhost"
PG_DIR = Path(os.environ.get("LUTE_ASYNC_PG_DIR", "/tmp/lute-async-pg"))


@dataclass(frozen=True)
class PgServer:
    """A running server: the test role's URLs (TCP with password, and Unix socket)."""

    url: str
    socket_url: str
    directory: Path

    def database_url(self, name: str, *, socket: bool = False) -> str:
        """The URL of database *name* on this server."""
        if socket:  # no host part: urlunsplit would drop the "//"
            return f"postgresql:///{name}?{urlsplit(self.socket_url).query}"
        return urlunsplit(urlsplit(self.url)._replace(path=f"/{name}"))

    def admin(self, sql: str) -> None:
        """Run one statement as the test role, outside any transaction."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(sql)

    def superuser(self, sql: str, database: str = "postgres") -> None:
        """Run one statement as the ``postgres`` superuser over the socket (root is mapped)."""
        import psycopg

        url = self.database_url(database, socket=True).replace("user=lute_test", "user=postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql)

    def fresh_database(self) -> str:
        """A new empty database's name."""
        name = f"lute_t_{uuid.uuid4().hex[:16]}"
        self.admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _probe(directory: Path) -> tuple[PgServer | None, str]:
    env_file = directory / "env"
    if not env_file.exists():
        return None, f"no PostgreSQL server: {env_file} is missing (run {SCRIPT} up)"
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed (pip install '.[postgres]')"
    env = read_env_file(env_file)
    url, socket_url = env.get("LUTE_ASYNC_TEST_PG"), env.get("LUTE_ASYNC_TEST_PG_SOCKET")
    if not url or not socket_url:
        return None, f"no PostgreSQL server: {env_file} names no LUTE_ASYNC_TEST_PG"
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return None, f"the PostgreSQL server of {env_file} does not answer: {exc}"
    return PgServer(url, socket_url, directory), ""


@functools.cache
def _shared_server() -> tuple[PgServer | None, str]:
    return _probe(PG_DIR)


@pytest.fixture
def pg_server() -> PgServer:
    """The PostgreSQL server of ``scripts/postgres-localhost``."""
    server, reason = _shared_server()
    if server is None:
        unavailable(reason)
    return server


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL (with the test role's password) of a fresh database, dropped after the test."""
    name = pg_server.fresh_database()
    try:
        yield pg_server.database_url(name)
    finally:
        pg_server.drop_database(name)


class PrivateServer:
    """A server of the test's own (its own directory and port), to stop and start at will."""

    def __init__(self, directory: Path, port: int) -> None:
        self.env = {
            **os.environ,
            "LUTE_ASYNC_PG_DIR": str(directory),
            "LUTE_ASYNC_PG_PORT": str(port),
        }
        self.directory = directory

    def _script(self, command: str) -> None:
        done = subprocess.run([str(SCRIPT), command], env=self.env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    def up(self) -> PgServer:
        self._script("up")
        server, reason = _probe(self.directory)
        assert server is not None, reason
        return server

    def stop(self) -> None:
        """Stop the server, keeping its cluster (``up`` starts it again)."""
        bindir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        data = self.directory / "data"
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *pg_ctl], check=True, capture_output=True
        )

    def down(self) -> None:
        self._script("down")
        subprocess.run(["rm", "-rf", str(self.directory)], check=False)


@pytest.fixture
def private_pg(pg_server: PgServer) -> Iterator[PrivateServer]:
    """A PostgreSQL server of this test's own (needs the shared one up: same packages, root).

    Its directory is under /tmp, not tmp_path: the ``postgres`` user must reach it.
    """
    if os.geteuid() != 0:
        unavailable("a PostgreSQL server of the test's own needs root (initdb as postgres)")
    directory = Path(f"/tmp/lute-async-pg-test-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    server = PrivateServer(directory, 56000 + os.getpid() % 1000)
    try:
        yield server
    finally:
        server.down()


def raw_query(target: Path | str, sql: str) -> list[tuple[object, ...]]:
    """The rows of *sql* read straight from a records database of either backend (bytea as
    bytes), bypassing RecordStore."""
    if isinstance(target, Path):
        import sqlite3

        conn = sqlite3.connect(target)
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()
    import psycopg

    with psycopg.connect(target) as pg:
        return [
            tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
            for row in pg.execute(sql).fetchall()
        ]


def raw_execute(target: Path | str, sql: str) -> None:
    """Run one statement straight on a records database of either backend, committed."""
    if isinstance(target, Path):
        import sqlite3

        target.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(target)
        try:
            conn.execute(sql)
            conn.commit()
        finally:
            conn.close()
        return
    import psycopg

    with psycopg.connect(target, autocommit=True) as pg:
        pg.execute(sql)
