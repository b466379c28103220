"""The public face: every name in the architecture's contract imports from ``lute_async``, and
the module paths that commands and scripts name keep working."""

from __future__ import annotations

import subprocess

import pytest
from conftest import PYTHON

import lute_async

CONTRACT = (
    "Executor", "Run", "Event", "Message", "Reporter", "AsyncReporter", "task", "TaskStatus",
    "Limits", "MPI", "Slurm", "Local", "AnalysisRecord", "RecordStore", "RunFilter", "Workflow",
    "Channel", "HookRegistry",
)  # fmt: skip


def test_the_contract_names_are_all_exported() -> None:
    assert set(CONTRACT) <= set(lute_async.__all__)


@pytest.mark.parametrize("first", ["Reporter", "task", "Executor"])
def test_every_public_name_imports_in_a_fresh_interpreter_whatever_comes_first(
    first: str,
) -> None:
    # Importing lute_async.task binds the package attribute `task` to the submodule: the
    # decorator must still be what `from lute_async import task` gives.
    names = [first, *(n for n in lute_async.__all__ if n != first)]
    code = (
        f"from lute_async import {', '.join(names)}\n"
        "import types\n"
        "assert callable(task) and not isinstance(task, types.ModuleType), task\n"
        f"print(len([{', '.join(names)}]))\n"
    )
    done = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(names))


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "lute_async.cli", "--help"],
        ["-c", "from lute_async.cli import main; main(['--help'])"],
    ],
    ids=["python -m lute_async.cli", "lute_async.cli:main"],
)
def test_the_cli_module_paths_still_run(argv: list[str]) -> None:
    done = subprocess.run([PYTHON, *argv], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: lute-async")


def test_the_worker_module_path_still_runs() -> None:
    done = subprocess.run(
        [PYTHON, "-m", "lute_async.worker", "no-colon"], capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "lute-async worker: task target 'no-colon' is not of the form" in done.stderr
