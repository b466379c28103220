"""Launchers: local processes, MPI programs and SLURM jobs, found by kind in the registry."""

from lute_async.launchers.base import ExitStatus, Launcher, LaunchSpec, TaskProcess
from lute_async.launchers.local import Local
from lute_async.launchers.registry import LauncherKind, build_launcher, kinds, register

__all__ = [
    "ExitStatus",
    "LaunchSpec",
    "Launcher",
    "LauncherKind",
    "Local",
    "TaskProcess",
    "build_launcher",
    "kinds",
    "register",
]
