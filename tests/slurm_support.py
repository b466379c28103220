"""Fixtures and helpers for tests against the single-node SLURM cluster and Open MPI.

The cluster comes from ``scripts/slurm-localhost up``, which writes
``${LUTE_ASYNC_SLURM_DIR:-/tmp/lute-async-slurm}/env`` (``export SLURM_CONF=...``). When the
cluster, ``mpirun`` or mpi4py is missing, a test needing it fails in CI (``CI=true``) and is
skipped elsewhere with the reason.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

SLURM_DIR = Path(os.environ.get("LUTE_ASYNC_SLURM_DIR", "/tmp/lute-async-slurm"))
ENV_FILE = SLURM_DIR / "env"


def unavailable(reason: str) -> NoReturn:
    """Fail in CI, where the cluster must be up; skip with ``reason`` elsewhere."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
    pytest.skip(reason)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export NAME=VALUE`` lines of a shell env file."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "export":
            words = words[1:]
        for word in words:
            name, sep, value = word.partition("=")
            if sep:
                env[name] = value
    return env


@dataclass(frozen=True)
class SlurmCluster:
    """The running cluster: its config file and the environment that reaches it."""

    conf: Path
    env: dict[str, str]

    def scontrol_job(self, job_id: str) -> str:
        """``scontrol show job`` output for ``job_id``."""
        done = subprocess.run(
            ["scontrol", "show", "job", job_id],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **self.env},
        )
        return done.stdout

    def job_state(self, job_id: str) -> str:
        """The job's ``JobState=`` word."""
        for word in self.scontrol_job(job_id).split():
            if word.startswith("JobState="):
                return word.partition("=")[2]
        raise AssertionError(f"no JobState for job {job_id}")


@functools.cache
def _probe_cluster() -> tuple[SlurmCluster | None, str]:
    if not ENV_FILE.exists():
        return None, f"no SLURM cluster: {ENV_FILE} is missing (run scripts/slurm-localhost up)"
    env = read_env_file(ENV_FILE)
    conf = env.get("SLURM_CONF")
    if not conf or not Path(conf).exists():
        return None, f"no SLURM cluster: {ENV_FILE} names no existing SLURM_CONF"
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None, "no SLURM cluster: the SLURM client tools (sinfo, sbatch) are not installed"
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-o", "%t"],
            capture_output=True,
            text=True,
            timeout=15,
            env={**os.environ, **env},
        )
    except subprocess.TimeoutExpired:
        return None, "no SLURM cluster: sinfo did not answer within 15 s"
    states = done.stdout.split()
    if done.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mix", "alloc") for s in states):
        reason = done.stderr.strip() or " ".join(states) or "no nodes"
        return None, f"no usable SLURM node (sinfo: {reason}); run scripts/slurm-localhost up"
    return SlurmCluster(Path(conf), env), ""


@pytest.fixture
def slurm_cluster(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlurmCluster]:
    """The local SLURM cluster, with ``SLURM_CONF`` set for the test and its subprocesses."""
    cluster, reason = _probe_cluster()
    if cluster is None:
        unavailable(reason)
    use_cluster_env(monkeypatch, cluster.env)
    yield cluster


def use_cluster_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """Set a cluster's ``env`` for the test and its subprocesses."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    # A test process running inside a job must not make the executor think it is in one.
    for name in ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_NPROCS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def mpi_ready() -> None:
    """Open MPI's ``mpirun`` and mpi4py are installed."""
    if shutil.which("mpirun") is None:
        unavailable("Open MPI's mpirun is not installed (apt-get install openmpi-bin)")
    if importlib.util.find_spec("mpi4py") is None:
        unavailable("mpi4py is not installed (pip install -e '.[test]')")
