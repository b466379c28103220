"""A ``@task`` function for the ``run_function`` spawn benchmark."""

from lute_async.task import task


@task
def noop() -> None:
    """Do nothing: the cost measured is the worker's start and its reports."""


@task
def index(index: int) -> int:
    """Return ``index``: the peers benchmark checks that every run's result is its own."""
    return index
