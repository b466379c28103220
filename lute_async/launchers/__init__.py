"""Launchers: local processes, MPI programs and SLURM jobs."""

from lute_async.launchers.base import ExitStatus, Launcher, LaunchSpec, TaskProcess
from lute_async.launchers.local import Local

__all__ = ["ExitStatus", "LaunchSpec", "Launcher", "Local", "TaskProcess"]
