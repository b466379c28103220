"""Installed tasks: a @task function and a task table."""

from __future__ import annotations

from lute_async.task import task


@task
def square(x: int = 3) -> dict[str, int]:
    """Return x squared."""
    return {"square": x * x}


#: A task defined as a table, like one [tasks.NAME] of a config file.
ECHO = {
    "command": ["sh", "-c", "echo plugin says {{ word }}"],
    "params": {"word": "hello"},
    "hooks": ["plugin_announce"],
}
