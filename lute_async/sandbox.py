"""Sandbox: what a sandboxed run may see and touch, and the bubblewrap command that enforces it.

A :class:`Sandbox` is plain data; :func:`sandbox_command` turns it and a run's
:class:`~lute_async.launchers.base.LaunchSpec` into the ``bwrap`` argv that runs the task in new
mount, pid, IPC and (unless ``network=True``) network namespaces, with:

* a read-only view of the system (``/usr``, ``/etc``, the ``/bin``, ``/lib*`` links or dirs, the
  Python in use and the entries of the task's ``PYTHONPATH``);
* a private ``/tmp``, and ``/proc`` and ``/dev`` of the sandbox's own; no capabilities (even
  when the executor runs as root), a session of its own (no terminal to inject input into);
* the run's working directory writable, its Unix socket and params file reachable;
* the extra ``readonly`` and ``writable`` paths, in that order (a writable path inside a
  read-only one stays writable).

Any launcher can apply it: the argv it returns replaces the task's argv, with the three extra
fds it names passed to the child (see :mod:`lute_async.launchers.sandboxed`). Inside, a one-line
``bash`` step (about a millisecond) moves the task's stderr back to fd 2 and signals "set up"
before it execs the task, so bubblewrap's own errors never mix with the task's output.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Protocol

import msgspec

from lute_async.errors import ConfigError, LaunchError
from lute_async.wire import ENV_PARAMS_FILE, ENV_SOCKET, ENV_TCP

__all__ = [
    "SANDBOX_OPTION",
    "Sandbox",
    "SandboxFds",
    "check_communicators",
    "find_bwrap",
    "sandbox_command",
]

#: The Debian package that provides ``bwrap``.
PACKAGE = "bubblewrap"

#: System directories seen read-only (those that exist); ``/bin``-style links are recreated.
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/opt")

#: Run inside the sandbox before the task: fd ``$1`` becomes stderr, a byte on fd ``$2`` says
#: the sandbox is set up, both are closed, then the task is exec'd (same pid).
_STEP = 'eval "exec 2>&$1 $1>&-; printf x >&$2; exec $2>&-"; shift 2; exec "$@"'


def _paths(key: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str | os.PathLike):
        value = [value]
    if not isinstance(value, Iterable) or isinstance(value, bytes | dict):
        raise ConfigError(f"key 'sandbox.{key}': expected a list of absolute paths, got {value!r}")
    out = []
    for item in value:
        if not isinstance(item, str | os.PathLike):
            raise ConfigError(f"key 'sandbox.{key}': expected absolute paths, got {item!r}")
        text = os.fspath(item)
        if not os.path.isabs(text) or "\x00" in text:
            raise ConfigError(f"key 'sandbox.{key}': expected an absolute path, got {text!r}")
        out.append(os.path.normpath(text))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class Sandbox:
    """A run's sandbox: no network unless ``network``; extra ``readonly``/``writable`` paths
    (absolute, existing when the run starts) on top of the system view and the working dir."""

    network: bool = False
    readonly: tuple[str, ...] = ()
    writable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.network, bool):
            raise ConfigError(
                f"key 'sandbox.network': expected true or false, got {self.network!r}"
            )
        object.__setattr__(self, "readonly", _paths("readonly", self.readonly))
        object.__setattr__(self, "writable", _paths("writable", self.writable))

    def to_dict(self) -> dict[str, Any]:
        return {
            "network": self.network,
            "readonly": list(self.readonly),
            "writable": list(self.writable),
        }


#: An absolute path as a table writes it.
AbsolutePath = Annotated[str, msgspec.Meta(pattern="^/[^\x00]*$")]


class SandboxTable(msgspec.Struct, forbid_unknown_fields=True):
    """:class:`Sandbox` written as a table (a task file's or graph node's ``sandbox``)."""

    network: bool = False
    readonly: list[AbsolutePath] = []
    writable: list[AbsolutePath] = []


def _build(table: SandboxTable) -> Sandbox:
    return Sandbox(table.network, tuple(table.readonly), tuple(table.writable))


#: The keyword arguments of the ``sandbox`` run option (:class:`~lute_async.options.Option`).
SANDBOX_OPTION: dict[str, Any] = {
    "expected": "a Sandbox or a table with network, readonly, writable",
    "type": SandboxTable,
    "accepts": lambda value: isinstance(value, Sandbox),
    "build": _build,
    "parts": {
        "network": "true or false",
        "readonly": "a list of absolute paths",
        "writable": "a list of absolute paths",
    },
}


class LaunchSpec(Protocol):
    """What the sandbox reads of a run's :class:`~lute_async.launchers.base.LaunchSpec`."""

    argv: list[str]
    env: dict[str, str]
    name: str
    cwd: str | None


@dataclass(frozen=True, slots=True)
class SandboxFds:
    """The fds (numbers in the launcher's process, passed to the child) bwrap is told about:
    ``info`` gets bwrap's JSON (the sandbox's pid 1), ``stderr`` is the task's own stderr
    (bwrap's fd 2 is the launcher's, for bwrap's messages), ``ready`` gets one byte once set up."""

    info: int
    stderr: int
    ready: int


def find_bwrap() -> str:
    """The path of ``bwrap``, or a LaunchError naming the Debian package."""
    path = shutil.which("bwrap")
    if path is None:
        raise LaunchError(
            f"a sandboxed run needs bubblewrap's `bwrap`, which is not on PATH: install the "
            f"Debian package {PACKAGE!r} (apt-get install {PACKAGE})"
        )
    return path


@functools.cache
def _system_view() -> tuple[tuple[str, ...], ...]:
    """bwrap options for the read-only system: links kept as links, dirs bound read-only."""
    options: list[tuple[str, ...]] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            options.append(("--symlink", os.readlink(path), path))
        elif os.path.isdir(path):
            options.append(("--ro-bind", path, path))
    return tuple(options)


def _python_dirs(env: dict[str, str]) -> list[str]:
    """The Python in use (prefixes and the interpreter's dir) and the task's PYTHONPATH."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    dirs.update(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)
    found: list[str] = ["/usr", "/etc"]
    for path in sorted(os.path.realpath(p) for p in dirs):  # a dir sorts before its children
        if os.path.isabs(path) and os.path.exists(path) and not _within(path, found):
            found.append(path)
    return found[2:]


def _within(path: str, dirs: Iterable[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in dirs)


def _existing(key: str, paths: Iterable[str], spec: LaunchSpec) -> list[str]:
    for path in paths:
        if not os.path.exists(path):
            raise LaunchError(
                f"sandbox.{key} path {path!r} of run {spec.name!r} does not exist"
            )
    return list(paths)


def _visible(program: str, spec: LaunchSpec, bound: list[str]) -> None:
    """A LaunchError unless the program the task execs is inside the sandbox's view."""
    if os.sep in program:
        path = os.path.join(spec.cwd or os.getcwd(), program)
    else:
        path = shutil.which(program, path=spec.env.get("PATH", os.defpath)) or ""
    if not path:
        return  # the launcher reports "command not found" itself
    real = os.path.realpath(path)
    # Both the path the task execs (a venv's python is a link) and where it leads must be seen.
    if not (_within(real, bound) and _within(os.path.abspath(path), bound)):
        raise LaunchError(
            f"command {program!r} of run {spec.name!r} ({real}) is outside the sandbox's "
            "view: add its directory to sandbox.readonly"
        )


def check_communicators(sandbox: Sandbox, spec: LaunchSpec) -> None:
    """A LaunchError if the run reports over TCP while the sandbox has no network."""
    if not sandbox.network and ENV_TCP in spec.env:
        raise LaunchError(
            f"run {spec.name!r} uses the 'tcp' communicator, which needs sandbox network=true"
        )


def sandbox_command(
    sandbox: Sandbox, spec: LaunchSpec, argv: list[str], fds: SandboxFds, *, bwrap: str
) -> list[str]:
    """The bwrap argv that runs ``argv`` (the task's, behind any limits shim) for ``spec``
    inside ``sandbox``. Raises LaunchError for what cannot work: a missing extra path, the
    program outside the view, a TCP communicator without the network."""
    check_communicators(sandbox, spec)
    cwd = os.path.realpath(spec.cwd or os.getcwd())
    options = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
    # bwrap run by root keeps nearly every capability (CAP_SYS_MODULE, CAP_SYS_TIME...) unless
    # told otherwise: a sandboxed task has none, whoever started the executor.
    options += ["--unshare-uts", "--unshare-cgroup-try", "--cap-drop", "ALL"]
    if not sandbox.network:
        options.append("--unshare-net")
    bound = ["/usr", "/etc"]
    for entry in _system_view():
        options += entry
        bound.append(entry[2])
    # The private /tmp first: the Python in use may live under /tmp (a venv there) and must
    # be bound over it, not hidden by it.
    options += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in _python_dirs(spec.env):
        options += ["--ro-bind", path, path]
        bound.append(path)
    for path in _existing("readonly", sandbox.readonly, spec):
        options += ["--ro-bind", path, path]
        bound.append(path)
    if ENV_PARAMS_FILE in spec.env:
        params_dir = os.path.dirname(spec.env[ENV_PARAMS_FILE])
        options += ["--ro-bind", params_dir, params_dir]
    if ENV_SOCKET in spec.env:  # the executor's one socket file, not the rest of its directory
        socket_path = spec.env[ENV_SOCKET]
        options += ["--bind", socket_path, socket_path]
    for path in [cwd, *_existing("writable", sandbox.writable, spec)]:
        options += ["--bind", path, path]
        bound.append(path)
    for program in dict.fromkeys(argv[:1] + spec.argv[:1]):
        _visible(program, spec, bound)
    shell = shutil.which("bash", path=os.defpath) or "/bin/sh"  # dash: only fds 0-9
    step = [shell, "-c", _STEP, "lute-async-sandbox", str(fds.stderr), str(fds.ready)]
    return [*options, "--chdir", cwd, "--info-fd", str(fds.info), "--", *step, *argv]
