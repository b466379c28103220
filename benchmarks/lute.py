"""``--with-lute``: LUTE (``lute-lcls``) on the spawn and throughput scenarios, in its own venv.

The benchmark creates the venv once (under the user cache directory) and then, for every
measured run, starts ``children/lute_side.py`` with the venv's Python: a stock LUTE ``Executor``
running one ``Task`` to the end, as ``run_task`` does. Each run is a separate process tree with a
timeout; a run still going at the timeout is killed and counted as hung.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import CHILDREN_DIR, Result

LUTE_SPEC = "lute-lcls==0.3.0"
# Requirements of lute-lcls not installed: kerberos and lcls-krtc (-> pykerberos) are C
# extensions that need the GSSAPI headers (gssapi/gssapi.h, Debian's libkrb5-dev) to build, and
# LUTE imports them only inside its eLog and launch functions, which these runs never call.
SKIPPED_REQUIREMENTS = frozenset({"kerberos", "lcls-krtc"})
SIDE = CHILDREN_DIR / "lute_side.py"
RUN_TIMEOUT = 30.0  # seconds for one LUTE run before it counts as hung
PIP_TIMEOUT = 900.0


class LuteUnavailable(RuntimeError):
    """LUTE could not be installed or could not run a task here; the message says why."""


@dataclass(frozen=True)
class LuteSizes:
    """How much LUTE work ``--with-lute`` does (LUTE runs take seconds each)."""

    spawn_runs: int
    messages: int
    throughput_rounds: int


LUTE_FULL = LuteSizes(spawn_runs=10, messages=5_000, throughput_rounds=3)
LUTE_QUICK = LuteSizes(spawn_runs=4, messages=2_000, throughput_rounds=1)


@dataclass
class Figure:
    """LUTE's median for one scenario and what it delivered."""

    value: float | None
    unit: str
    delivered: str


@dataclass
class Outcome:
    """One LUTE run: wall time of the whole process tree and what the executor reported."""

    wall: float
    hung: bool
    returncode: int | None
    report: dict[str, Any] | None
    log: Path

    @property
    def completed(self) -> bool:
        return (
            not self.hung
            and self.returncode == 0
            and self.report is not None
            and self.report["status"] == "COMPLETED"
        )

    def failure(self) -> str:
        tail = self.log.read_text(errors="replace").strip().splitlines()[-15:]
        what = "timed out" if self.hung else f"exited {self.returncode}"
        return f"LUTE run {what} after {self.wall:.1f} s; its log ends:\n" + "\n".join(tail)


def default_venv() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lute-async-bench" / "lute-venv"


def _pip(python: Path, *args: str) -> None:
    command = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    if done.returncode:
        lines = [
            line
            for line in (done.stdout + done.stderr).splitlines()
            if line.strip() and not line.startswith("WARNING: Location")
        ]
        raise LuteUnavailable(f"`pip install {' '.join(args)}` failed:\n" + "\n".join(lines[-20:]))


def _requirements(python: Path) -> list[str]:
    """lute-lcls's own requirements (extras left out) minus ``SKIPPED_REQUIREMENTS``."""
    probe = (
        "import importlib.metadata as m; "
        "print('\\n'.join(r for r in m.requires('lute-lcls') or [] if 'extra ==' not in r))"
    )
    out = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    keep = []
    for requirement in out.stdout.splitlines():
        name = requirement.split(";")[0]
        for mark in "<>=!~[ ":
            name = name.split(mark)[0]
        if name.lower() not in SKIPPED_REQUIREMENTS:
            keep.append(requirement)
    return keep


def ensure_venv(venv: Path | None = None) -> Path:
    """The venv's Python, creating the venv and installing ``LUTE_SPEC`` into it if needed."""
    venv = venv or default_venv()
    python = venv / "bin" / "python"
    marker = venv / ".lute-bench-ready"
    wanted = f"{LUTE_SPEC} without {','.join(sorted(SKIPPED_REQUIREMENTS))}\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if venv.exists():
        if not (venv / "pyvenv.cfg").exists():
            raise LuteUnavailable(f"{venv} exists and is not a venv; remove it or move it away")
        shutil.rmtree(venv)
    print(f"# --with-lute: creating {venv} with {LUTE_SPEC} (once)", file=sys.stderr)
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    _pip(python, "--no-deps", LUTE_SPEC)
    _pip(python, *_requirements(python))
    probe = [str(python), "-c", "import lute.execution.executor, lute.tasks.task"]
    done = subprocess.run(probe, capture_output=True, text=True)
    if done.returncode:
        raise LuteUnavailable(f"LUTE installed but does not import:\n{done.stderr.strip()}")
    marker.write_text(wanted)
    return python


def _config(work: Path, section: str) -> str:
    """A LUTE YAML config: the header document, then the task's parameters."""
    return (
        "%YAML 1.3\n---\n"
        'title: "lute-async benchmark"\nexperiment: "BENCH0001"\nrun: 1\n'
        f'date: "2026/01/01"\nlute_version: 0.3.0\ntask_timeout: 600\nwork_dir: "{work}"\n'
        f"...\n---\n{section}\n...\n"
    )


class LuteBench:
    """Runs LUTE tasks with the venv's Python in ``workdir`` and summarises them."""

    def __init__(self, python: Path, sizes: LuteSizes, workdir: Path) -> None:
        self.python = python
        self.sizes = sizes
        self.workdir = workdir
        self.work = workdir / "work"  # LUTE's work_dir: its sqlite database goes here
        self.work.mkdir(parents=True, exist_ok=True)
        self._runs = 0
        if " " in str(SIDE) + str(workdir):
            # LUTE builds the task command as a string and splits it on whitespace
            raise LuteUnavailable(f"LUTE cannot start tasks from a path with spaces: {SIDE}")

    def _env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("LUTE_", "SLURM_"))
            and key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "JID_UPDATE_COUNTERS")
        }
        env["PATH"] = f"{self.python.parent}{os.pathsep}{env.get('PATH', '')}"
        env["TMPDIR"] = str(self.workdir)  # LUTE puts its socket in tempfile.gettempdir()
        return env

    def run(self, task: str, section: str) -> Outcome:
        """One ``Executor(task).execute_task()`` in a new process, killed at ``RUN_TIMEOUT``."""
        self._runs += 1
        config = self.workdir / f"config-{self._runs}.yaml"
        config.write_text(_config(self.work, section))
        out = self.workdir / f"report-{self._runs}.json"
        log = self.workdir / f"log-{self._runs}.txt"
        command = [str(self.python), str(SIDE), "executor", task, str(config), str(out)]
        with open(log, "wb") as sink:
            start = time.perf_counter()
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self._env(),
                start_new_session=True,
            )
            hung = False
            try:
                process.wait(timeout=RUN_TIMEOUT)
            except subprocess.TimeoutExpired:
                hung = True
                # the task and anything it started are in the executor's process group
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            wall = time.perf_counter() - start
        report = json.loads(out.read_text()) if out.exists() else None
        return Outcome(wall, hung, None if hung else process.returncode, report, log)

    def warm_up(self) -> None:
        """One empty task first (not counted); if it cannot complete, LUTE cannot run here."""
        outcome = self.run("BenchEmpty", "BenchEmpty: {}")
        if not outcome.completed:
            raise LuteUnavailable(outcome.failure())

    def spawn(self) -> Figure:
        """``spawn_runs`` sequential empty tasks: median wall time of one whole LUTE run."""
        n = self.sizes.spawn_runs
        outcomes = [self.run("BenchEmpty", "BenchEmpty: {}") for _ in range(n)]
        done = [o for o in outcomes if o.completed]
        hung = sum(o.hung for o in outcomes)
        execute = [o.report["execute_s"] * 1000 for o in done if o.report]
        value = statistics.median(o.wall * 1000 for o in done) if done else None
        delivered = f"{len(done)}/{n} completed, {hung} hung"
        if execute:
            delivered += f"; execute_task {statistics.median(execute):,.0f} ms"
        return Figure(value, "ms/task", delivered)

    def throughput(self, via: str) -> Figure:
        """A task sends ``messages`` messages (``str`` -> pipe, ``dict`` -> socket); median
        rate between the first and last arrival at the executor, and how many arrived."""
        m, rounds = self.sizes.messages, self.sizes.throughput_rounds
        section = f"BenchFlood:\n  messages: {m}\n  via: {via}"
        rates: list[float] = []
        delivered: list[int] = []
        in_order = True
        hung = failed = 0
        for _ in range(rounds):
            outcome = self.run("BenchFlood", section)
            hung += outcome.hung
            if not outcome.completed or outcome.report is None:
                failed += not outcome.hung
                continue
            report = outcome.report
            seqs: list[int] = report["seqs"]
            delivered.append(len(set(seqs)))
            in_order = in_order and seqs == sorted(seqs)
            span = (report["last"] or 0.0) - (report["first"] or 0.0)
            rates.append((len(seqs) - 1) / span if len(seqs) > 1 and span > 0 else 0.0)
        text = f"{statistics.median(delivered):,.0f}/{m:,} delivered" if delivered else "none"
        text += f" (median of {len(delivered)})" if len(delivered) > 1 else ""
        text += "" if in_order else ", out of order"
        if hung or failed:
            text += f", {hung} hung, {failed} failed of {rounds}"
        return Figure(statistics.median(rates) if rates else None, "msg/s", text)


def measure(
    names: list[str], quick: bool, workdir: Path, venv: Path | None = None
) -> dict[str, Figure]:
    """LUTE's figures for the scenarios in ``names`` that it has (spawn, throughput)."""
    wanted = [name for name in names if name in ("spawn", "throughput")]
    if not wanted:
        return {}
    python = ensure_venv(venv)
    bench = LuteBench(python, LUTE_QUICK if quick else LUTE_FULL, workdir)
    started = time.perf_counter()
    bench.warm_up()
    figures: dict[str, Figure] = {}
    if "spawn" in wanted:
        figures["spawn"] = bench.spawn()
    if "throughput" in wanted:
        for via in ("pipe", "socket"):
            figures[f"throughput {via}"] = bench.throughput(via)
    print(f"# lute: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return figures


def attach(results: list[Result], figures: dict[str, Figure]) -> None:
    """Put each LUTE figure on the rows whose scenario it measures (both spawn rows)."""
    for result in results:
        for prefix, figure in figures.items():
            if result.scenario.startswith(prefix) and result.unit == figure.unit:
                result.lute = figure.value
                result.lute_delivered = figure.delivered


def describe(quick: bool) -> str:
    sizes = LUTE_QUICK if quick else LUTE_FULL
    skipped = ", ".join(sorted(SKIPPED_REQUIREMENTS))
    return (
        f"LUTE: {LUTE_SPEC} in its own venv (without {skipped}), {sizes.spawn_runs} empty tasks, "
        f"{sizes.messages:,} messages x {sizes.throughput_rounds} per communicator"
    )
