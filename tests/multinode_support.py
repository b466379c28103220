"""The multi-node SLURM cluster from ``scripts/slurm-cluster up``: a fixture that finds it.

The script writes ``${LUTE_ASYNC_CLUSTER_DIR:-/tmp/lute-async-cluster}/env`` (``export
SLURM_CONF=...``) and ``nodes`` (the head and each node with its address). When the cluster is
missing or a node is not usable, a test needing it fails in CI (``CI=true``) and is skipped
elsewhere with the reason.
"""

from __future__ import annotations

import functools
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from slurm_support import read_env_file, unavailable, use_cluster_env

CLUSTER_DIR = Path(os.environ.get("LUTE_ASYNC_CLUSTER_DIR", "/tmp/lute-async-cluster"))
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm-cluster"
USABLE = ("idle", "mix", "alloc")


@dataclass(frozen=True)
class MultiNodeCluster:
    """The running cluster: its environment, the head's interface and the nodes' addresses."""

    env: dict[str, str]
    head: str
    head_address: str
    head_interface: str
    nodes: dict[str, str]

    def on_node(self, node: str, argv: list[str]) -> list[str]:
        """The argv that runs ``argv`` inside ``node`` (its network, hostname, /etc/hosts)."""
        return [os.fspath(SCRIPT), "exec", node, "--", *argv]

    def scontrol(self, *args: str) -> str:
        """``scontrol ARGS`` output; a failure raises."""
        done = subprocess.run(
            ["scontrol", *args], capture_output=True, text=True, check=True, timeout=30
        )
        return done.stdout


def _read_nodes(path: Path) -> tuple[tuple[str, str, str], dict[str, str]]:
    head = ("", "", "")
    nodes: dict[str, str] = {}
    for line in path.read_text().splitlines():
        words = line.split()
        if words[:1] == ["head"] and len(words) == 4:
            head = (words[1], words[2], words[3])
        elif words[:1] == ["node"] and len(words) == 4:
            nodes[words[1]] = words[2]
    return head, nodes


@functools.cache
def _probe() -> tuple[MultiNodeCluster | None, str]:
    env_file, nodes_file = CLUSTER_DIR / "env", CLUSTER_DIR / "nodes"
    if not env_file.exists() or not nodes_file.exists():
        return None, f"no multi-node cluster: {env_file} is missing (run scripts/slurm-cluster up)"
    env = read_env_file(env_file)
    head, nodes = _read_nodes(nodes_file)
    if len(nodes) < 2 or not all(head):
        return None, f"no multi-node cluster: {nodes_file} names no head or fewer than 2 nodes"
    try:
        done = subprocess.run(
            ["sinfo", "-h", "-N", "-o", "%N %t"],
            capture_output=True,
            text=True,
            timeout=15,
            env={**os.environ, **env},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"no multi-node cluster: sinfo failed ({exc})"
    states = dict(line.split() for line in done.stdout.splitlines() if len(line.split()) == 2)
    bad = {
        n: states.get(n, "missing") for n in nodes if states.get(n, "").rstrip("*~#") not in USABLE
    }
    if done.returncode != 0 or bad:
        reason = done.stderr.strip() or ", ".join(f"{n} {s}" for n, s in bad.items())
        return None, f"multi-node cluster not usable ({reason}); run scripts/slurm-cluster up"
    return MultiNodeCluster(env, *head, nodes), ""


@pytest.fixture
def multinode(monkeypatch: pytest.MonkeyPatch) -> Iterator[MultiNodeCluster]:
    """The multi-node cluster, with ``SLURM_CONF`` set for the test and its subprocesses."""
    cluster, reason = _probe()
    if cluster is None:
        unavailable(reason)
    use_cluster_env(monkeypatch, cluster.env)
    monkeypatch.delenv("LUTE_ASYNC_TCP_HOST", raising=False)
    yield cluster
