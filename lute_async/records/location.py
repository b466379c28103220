"""Where records live: a sqlite file (a path) or a PostgreSQL database (a libpq URL).

A URL is kept as the string given (libpq reads it: ``postgresql://user@host:port/db``,
``postgresql:///db?host=/run/postgresql`` for a Unix socket, ``postgresql:///?service=name``
for an entry of the service file; the password from the URL, ``PGPASSFILE`` or ``~/.pgpass``).
Messages and logs name it by :func:`describe_db`, which never shows a password.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Final

from lute_async.redaction import redact_url_credentials

__all__ = [
    "SERVER_SCHEMES",
    "DatabaseTarget",
    "as_target",
    "default_db",
    "default_workdir",
    "describe_db",
    "is_server_url",
    "server_key",
]

SERVER_SCHEMES: Final = ("postgresql:", "postgres:")
"""The URL schemes of a PostgreSQL records database (``postgresql:/db``, a typo, is a URL
libpq refuses, not a sqlite file of that odd name)."""

DatabaseTarget = Path | str
"""A sqlite file (Path) or a PostgreSQL URL (str)."""


def is_server_url(value: object) -> bool:
    """Whether *value* names a PostgreSQL database rather than a sqlite file."""
    return isinstance(value, str) and value.lower().startswith(SERVER_SCHEMES)


def as_target(value: str | os.PathLike[str]) -> DatabaseTarget:
    """*value* as a database target: a URL kept as given, anything else a path (``~`` expanded)."""
    if is_server_url(value):
        return str(value)
    return Path(value).expanduser()


def default_db() -> DatabaseTarget:
    """Where runs are recorded by default: ``$LUTE_ASYNC_DB`` (a path or a URL) or the user
    data dir's ``runs.db``."""
    configured = os.environ.get("LUTE_ASYNC_DB")
    if configured:
        return as_target(configured)
    import platformdirs  # imported here: only needed when no database was given

    return platformdirs.user_data_path("lute-async") / "runs.db"


def default_workdir(target: DatabaseTarget) -> Path:
    """Where runs' directories go by default: ``runs`` beside a sqlite file, else in the user
    data dir."""
    if isinstance(target, Path):
        return target.parent / "runs"
    import platformdirs

    return platformdirs.user_data_path("lute-async") / "runs"


def describe_db(target: str | os.PathLike[str]) -> str:
    """*target* as messages and logs show it: a URL's password (in its user part or as a
    ``password=`` parameter) masked."""
    text = os.fspath(target)
    return redact_url_credentials(text) if is_server_url(text) else text


def server_key(url: str) -> str:
    """What tells one server database from another (never the password): the journal of its
    spilled records is named by its digest."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(url)
    except Exception:  # no psycopg, or a URL libpq cannot parse: its redacted text will do
        return hashlib.sha256(describe_db(url).encode()).hexdigest()
    named = {key: str(params[key]) for key in sorted(params) if key != "password"}
    return hashlib.sha256(repr(sorted(named.items())).encode()).hexdigest()
