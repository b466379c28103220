"""Every README block runs as written: each fenced ``python``, ``sh`` and ``bash`` block of
README.md and docs/*.md is run from the repository's root, or says why not; every relative
link of those documents points at a file that exists.

A block is marked by an HTML comment on the line right before its fence:

* ``<!-- not run: REASON -->``: not run here, for the reason given (a cluster, an hour, CI).
* ``<!-- needs: slurm -->``: run with the one-node cluster's environment
  (``scripts/slurm-localhost up``); skipped without it, failed when ``CI=true``.
* ``<!-- same as: PATH -->``: the block is the file PATH (from the root), which other blocks
  run; it must stay equal to it.

Python blocks run as ``python block.py`` with this interpreter, ``PYTHONPATH`` = the root and
``LUTE_ASYNC_DB`` in a temporary directory. Shell blocks run under ``bash -euo pipefail`` with
a ``lute-async`` on PATH that runs this checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from lute_async.records import RecordStore
from tests.slurm_support import slurm_cluster  # noqa: F401 - a fixture, used by name

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The languages of the blocks that are run (or marked).
RUN_LANGUAGES = frozenset({"python", "sh", "bash"})
MARKER = re.compile(r"^<!--\s*(not run|needs|same as):\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(```+|~~~+)\s*([\w+-]*)")
#: Seconds one block may take (they take one to three each).
BLOCK_TIMEOUT = 60


@dataclass(frozen=True)
class Block:
    """One fenced block of a document, with the marker right before it (if any)."""

    document: Path
    line: int  # of the opening fence, from 1
    language: str
    text: str
    marker: tuple[str, str] | None

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def read_blocks(document: Path) -> list[Block]:
    """The fenced blocks of ``document``, in order."""
    lines = document.read_text().splitlines()
    blocks: list[Block] = []
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, language = opening.groups()
        end = index + 1
        while end < len(lines) and not lines[end].startswith(fence[0] * len(fence)):
            end += 1
        before = lines[index - 1].strip() if index > 0 else ""
        found = MARKER.match(before)
        marker = (found.group(1), found.group(2)) if found else None
        text = "\n".join(lines[index + 1 : end]) + "\n"
        blocks.append(Block(document, index + 1, language.lower(), text, marker))
        index = end + 1
    return blocks


ALL_BLOCKS = [block for document in DOCUMENTS for block in read_blocks(document)]
CHECKED_BLOCKS = [
    block for block in ALL_BLOCKS if block.language in RUN_LANGUAGES or block.marker is not None
]


@pytest.fixture
def block_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a block: this checkout importable and on PATH, a fresh database."""
    shims = tmp_path / "bin"
    shims.mkdir()
    shim = shims / "lute-async"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m lute_async.cli "$@"\n')
    shim.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith("LUTE_ASYNC_")}
    env.update(
        PYTHONPATH=os.fspath(ROOT),
        LUTE_ASYNC_DB=os.fspath(tmp_path / "db" / "runs.db"),
        PATH=os.pathsep.join([os.fspath(shims), os.path.dirname(sys.executable), env["PATH"]]),
        COLUMNS="100",
    )
    return env


def run_block(block: Block, env: dict[str, str], tmp_path: Path) -> None:
    """Run ``block`` from the root; fail with its output unless it exits 0."""
    if block.language == "python":
        script = tmp_path / "block.py"
        script.write_text(block.text)
        argv = [sys.executable, os.fspath(script)]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", block.text]
    done = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BLOCK_TIMEOUT
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == 0, (
        f"{block.where}: the {block.language} block exited {done.returncode}\n{output}"
    )
    # A block that only prints its records would pass with every task FAILED: each run it
    # made must have completed.
    database = Path(env["LUTE_ASYNC_DB"])
    if database.exists():
        store = RecordStore(database)
        try:
            ended = {f"{record.name} {record.id[:8]}": record.status for record in store.iterate()}
        finally:
            store.close()
        unfinished = {run: status for run, status in ended.items() if status != "COMPLETED"}
        assert not unfinished, f"{block.where}: runs that did not complete: {unfinished}\n{output}"


@pytest.mark.parametrize("block", CHECKED_BLOCKS, ids=lambda block: block.where)
def test_every_block_runs_as_written_or_says_why_not(
    block: Block, block_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    kind, value = block.marker or ("run", "")
    if kind == "not run":
        assert value, f"{block.where}: a 'not run' marker must give its reason"
        pytest.skip(f"not run: {value}")
    elif kind == "same as":
        shipped = ROOT / value
        assert shipped.is_file(), f"{block.where}: {value} does not exist"
        assert block.text == shipped.read_text(), f"{block.where}: the block differs from {value}"
    elif kind == "needs":
        assert value == "slurm", f"{block.where}: unknown requirement {value!r}"
        cluster = request.getfixturevalue("slurm_cluster")  # skips (fails if CI=true) without it
        env = {**block_env, **cluster.env}
        for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NPROCS"):
            env.pop(name, None)  # not inside a job, even when pytest is
        run_block(block, env, tmp_path)
    else:
        run_block(block, block_env, tmp_path)


def test_every_marker_stands_right_before_a_block() -> None:
    for document in DOCUMENTS:
        lines = document.read_text().splitlines()
        for number, line in enumerate(lines, start=1):
            if MARKER.match(line.strip()) or line.strip().startswith("<!-- not run"):
                following = lines[number] if number < len(lines) else ""
                assert FENCE.match(following), (
                    f"{document.relative_to(ROOT)}:{number}: a marker must be on the line "
                    "right before a block's opening fence"
                )


def test_the_blocks_are_found() -> None:
    # A parser that found nothing would make every other test here pass.
    readme = [block for block in ALL_BLOCKS if block.document.name == "README.md"]
    assert sum(block.language == "python" for block in readme) >= 5
    assert all(block.text.strip() for block in CHECKED_BLOCKS)


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE = re.compile(r"^(```+|~~~+).*?^\1", re.S | re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_relative_links_point_at_files_that_exist(document: Path) -> None:
    text = INLINE_CODE.sub("", CODE.sub("", document.read_text()))
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL, a mail address or an anchor in the same document
        path = target.split("#", 1)[0]
        if not (document.parent / path).exists():
            broken.append(target)
    assert not broken, f"{document.relative_to(ROOT)}: links to missing files: {broken}"


def test_the_documented_report_command_explains_itself() -> None:
    # docs/performance.md names `python -m benchmarks.report out.json`; --help must not crash.
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.report", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "RESULTS.json" in done.stdout
