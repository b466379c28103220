"""The fork server: imports a task's modules once, then forks one child per task.

Started by :mod:`lute_async.launchers.forkserver` as ``python -c ENTRY FD EXECUTOR_PID
MODULE...``: FD is its end of a ``SOCK_SEQPACKET`` pair, the control connection. Every message
either way is one msgpack map (never pickle); a spawn request carries the task's fds as
``SCM_RIGHTS``. The server is single-threaded: one ``selectors`` loop over the connection and
the ``SIGCHLD`` wakeup pipe. It reaps its children with ``wait4`` (exit status and rusage go
back over the connection) and reports stops (``WUNTRACED``) so ``Run.stop`` knows when a task
is stopped. It dies with the executor (``PR_SET_PDEATHSIG``), and its children with it.

A child is the task: its own session and process group, the run's environment, cwd, fds (moved
to the numbers the executor chose) and rlimits, then :func:`lute_async.worker.run_task`; it
ends as :mod:`lute_async.task.ending` says (threads joined, ``atexit``, stdio flushed, then
``os._exit``: no finalization of the inherited interpreter).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys

from lute_async.task.ending import end_forked_task
from lute_async.worker import run_task

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The largest control message (a spawn request carries the run's environment).
MAX_MESSAGE = 1 << 20
MAX_FDS = 64
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
#: The first argument of a server started inside a sandbox (see :class:`Server`).
SANDBOXED = "--sandboxed"
#: Exit code of a child whose set-up (fds, cwd, limits) failed before the task could start.
EXIT_SETUP = 127
#: What ``python -c`` runs to start a server (the worker's safe-path rule first).
ENTRY = (
    "import sys; sys.flags.safe_path or sys.path.pop(0); "
    "from lute_async.forkserver_main import main; sys.exit(main())"
)
#: What every task (and a child's set-up) would import on its own: imported once, here.
#: Not ``dataclasses`` (it loads ``inspect``, ~1 MB the fork copies the page table of): a task
#: that returns a dataclass has imported it already. Nor ``threading``: its after-fork hook runs
#: in every child, ~100 page faults and 0.2-0.3 ms of its CPU (the reporter's flusher needs
#: only ``_thread``); a task that starts threads imports it after the fork (~1.5 ms), unless a
#: preload module (or one it imports: ``logging`` does) has.
WARM = (
    *("lute_async.worker", "lute_async.targets", "lute_async.task.async_reporter", "json"),
    *("stat", "atexit", "traceback", "msgpack", "fcntl", "resource", "io"),
)
_prctl: Any = None
#: Plain ints: a forked child resets its signals through ``_signal`` (``signal``'s wrappers
#: convert to and from enums, a tenth of what the child does before its task).
SIGKILL, SIGCHLD, SIG_DFL = int(signal.SIGKILL), int(signal.SIGCHLD), int(signal.SIG_DFL)
_reset_signal: Any = sys.modules["_signal"].signal  # what signal.signal wraps (no stubs)
#: What each request's recvmsg uses, as plain ints (``socket``'s flags are enums: ``|`` and
#: ``&`` on them go through ``enum`` in Python).
FDS_SPACE = socket.CMSG_SPACE(MAX_FDS * 4)
DONTWAIT, TRUNCATED = int(socket.MSG_DONTWAIT), int(socket.MSG_TRUNC | socket.MSG_CTRUNC)
SOL_SOCKET, SCM_RIGHTS = int(socket.SOL_SOCKET), int(socket.SCM_RIGHTS)
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") / 1024
_statm: int | None = None
_pack: Any = None
#: rlimits by :class:`~lute_async.limits.Limits` field, as the ``prlimit`` shim sets them.
RLIMITS = {
    "memory": "RLIMIT_AS",
    "pids": "RLIMIT_NPROC",
    "open_files": "RLIMIT_NOFILE",
}


def prctl(option: int, value: int) -> None:
    global _prctl
    if _prctl is None:  # looked up once, in the server: every child calls it
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    if _prctl(option, value, 0, 0, 0) != 0:
        import ctypes

        raise OSError(ctypes.get_errno(), f"prctl({option})")


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the thread that started it ends."""
    prctl(PR_SET_PDEATHSIG, SIGKILL)


def become_subreaper() -> None:
    """Orphaned descendants become this process's children (not the namespace's pid 1's)."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def pack(message: dict[str, Any]) -> bytes:
    global _pack
    if _pack is None:  # one packer, not one a message as msgpack.packb makes
        import msgpack

        _pack = msgpack.Packer(use_bin_type=True).pack
    data: bytes = _pack(message)
    return data


def unpack(data: bytes) -> dict[str, Any]:
    import msgpack

    value = msgpack.unpackb(data, raw=False, strict_map_key=True)
    if not isinstance(value, dict):
        raise ValueError(f"a control message must be a map, got {type(value).__name__}")
    return value


def set_rlimits(limits: dict[str, Any]) -> None:
    """Set the run's rlimits in this (child) process, as ``prlimit`` would before an exec."""
    import resource

    cpu = limits.get("cpu_time")
    if cpu is not None:  # soft:hard a second apart: SIGXCPU (a clear cpu_limit) first
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 1))
    for field, name in RLIMITS.items():
        value = limits.get(field)
        if value is not None:
            resource.setrlimit(getattr(resource, name), (int(value), int(value)))


def set_environ(env: dict[str, str], unset: list[str] | None = None) -> None:
    """Make ``os.environ`` (and the C environment) the run's: with ``unset`` (a list), ``env``
    holds only what differs from the server's environment (as its ``ready`` report gave it)
    and ``unset`` what the run does not have; without, ``env`` is the whole environment."""
    environ = os.environ
    if unset is None:
        unset = [key for key in environ if key not in env]
        env = {key: value for key, value in env.items() if environ.get(key) != value}
    for key in unset:
        environ.pop(key, None)
    for key, value in env.items():
        environ[key] = value


def ready_report() -> dict[str, Any]:
    """The server's ``ready`` report: its pid and its environment (after the preloads), which
    the executor sends each request's differences from; without it if msgpack cannot carry it
    (not UTF-8), and every request carries the whole environment."""
    report: dict[str, Any] = {"kind": "ready", "pid": os.getpid(), "env": dict(os.environ)}
    try:
        pack(report)
    except (UnicodeEncodeError, ValueError, TypeError):
        del report["env"]
    return report


def place_fds(received: list[int], targets: list[int], keep: int = 3) -> None:
    """Move each received fd to its target number and close every other fd above ``keep``-1
    (0, 1 and 2 stay unless a target replaces them)."""
    import fcntl

    base = max([*targets, *received, keep]) + 1
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, base) for fd in received]
    for fd, target in zip(moved, targets, strict=True):
        os.dup2(fd, target)  # inheritable, as Popen's pass_fds leaves them
    wanted = sorted({*targets, *range(keep)})
    low = 0
    for fd in wanted:
        if fd > low:
            os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 30)


def child(
    request: dict[str, Any],
    received: list[int],
    server_pid: int,
    hello: socket.socket | None = None,
) -> int:
    """Become the task of ``request`` (in the forked child) and run it; its exit code.

    With ``hello`` (a sandboxed server), the child first says hello over the control
    connection: the executor reads its pid outside the namespace from the message's
    credentials. It is a subreaper, so what it leaves behind stays its own while it runs."""
    if hello is not None:
        hello.send(pack({"kind": "hello", "id": request["id"], "pid": os.getpid()}))
        become_subreaper()
    os.setsid()
    die_with_parent()
    if os.getppid() != server_pid:  # the server died before the line above
        return EXIT_SETUP
    signal.set_wakeup_fd(-1)  # the C function itself, unlike signal.signal
    _reset_signal(SIGCHLD, SIG_DFL)
    targets = list(request["fds"])
    if 0 not in targets:
        received = [*received, os.open(os.devnull, os.O_RDONLY)]
        targets.append(0)
    place_fds(received, targets)
    try:
        if request.get("cwd") is not None:
            os.chdir(request["cwd"])
        set_environ(request["env"], request.get("unset"))
        set_rlimits(request.get("limits") or {})
    except OSError as exc:
        print(f"lute-async fork server: cannot start the task: {exc}", file=sys.stderr)
        return EXIT_SETUP
    sys.argv = ["-c", request["target"]]
    return run_task(request["target"])


def resident_kib() -> float:
    """This process's resident set now: where a forked child's peak RSS starts (one
    ``pread`` of ``/proc/self/statm``, kept open: the kernel renders it anew at offset 0)."""
    global _statm
    if _statm is None:
        _statm = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
    return int(os.pread(_statm, 128, 0).split()[1]) * PAGE_KIB


def receive(sock: socket.socket) -> tuple[bytes, list[int], int]:
    """One message and its fds, without blocking (``socket.recv_fds`` drops its flags)."""
    import array

    fds = array.array("i")
    data, ancillary, flags, _ = sock.recvmsg(MAX_MESSAGE, FDS_SPACE, DONTWAIT)
    for level, kind, payload in ancillary:
        if level == SOL_SOCKET and kind == SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    return data, list(fds), flags


class Server:
    """The server's loop: spawn requests in, spawned/stopped/exit reports out.

    A ``sandboxed`` server shares its namespaces with every task: it is a subreaper, so a
    process a finished task left behind (even in a session of its own) becomes its child, and
    it kills those before it reports that task's exit."""

    def __init__(self, sock: socket.socket, sandboxed: bool = False) -> None:
        import selectors

        self.sock = sock
        self.sandboxed = sandboxed
        self.children: set[int] = set()
        self.selector = selectors.DefaultSelector()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd does the work
        self.selector.register(self.sock, selectors.EVENT_READ, self.requests)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self.reap)

    def send(self, message: dict[str, Any]) -> None:
        self.sock.send(pack(message))

    def serve(self) -> int:
        while True:
            for key, _ in self.selector.select():
                if not key.data():
                    self.end_children()
                    return 0

    def requests(self) -> bool:
        """Handle every request that is waiting; False once the executor has gone."""
        while True:
            try:
                data, fds, flags = receive(self.sock)
            except BlockingIOError:
                return True
            except (ConnectionError, OSError):
                return False
            if not data:
                return False
            request: dict[str, Any] = {}
            try:
                request = unpack(data)
                if flags & TRUNCATED:
                    raise ValueError("the request was truncated")
                if request.get("kind") == "shutdown":
                    return False
                self.spawn(request, fds)
            except (ValueError, KeyError, TypeError) as exc:
                self.send({"kind": "refused", "id": request.get("id"), "error": str(exc)})
            finally:
                for fd in fds:
                    os.close(fd)

    def spawn(self, request: dict[str, Any], fds: list[int]) -> None:
        if len(request["fds"]) != len(fds):
            raise ValueError(f"{len(fds)} fds came for {len(request['fds'])} targets")
        inherited = resident_kib()
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the task: never returns into the server's loop
            code = EXIT_SETUP
            try:
                code = child(request, fds, server_pid, self.sock if self.sandboxed else None)
            except BaseException as exc:
                print(f"lute-async fork server: task set-up failed: {exc!r}", file=sys.stderr)
            finally:
                end_forked_task(code)  # what a task may rely on of an exit, then os._exit
        self.children.add(pid)
        self.send({"kind": "spawned", "id": request["id"], "pid": pid, "rss_kib": inherited})

    def reap(self) -> bool:
        with contextlib.suppress(BlockingIOError):  # a byte a signal: one read takes them all
            os.read(self.wake_r, 4096)  # (if not, the selector comes back for the rest)
        while self.children:
            try:
                pid, status, ru = os.wait4(-1, os.WNOHANG | os.WUNTRACED)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid not in self.children:  # left behind by a task, already killed
                continue
            if os.WIFSTOPPED(status):
                self.send({"kind": "stopped", "pid": pid})
                continue
            self.children.discard(pid)
            if self.sandboxed:
                self.end_leftovers()
            usage = {"user": ru.ru_utime, "system": ru.ru_stime, "max_rss_kib": ru.ru_maxrss}
            self.send({"kind": "exit", "pid": pid, "status": status, "usage": usage})
        return True

    def end_leftovers(self) -> None:
        """Kill and reap every child that is not a task: orphans of ended tasks (a running
        task, a subreaper, keeps its own), until none is left (theirs come next)."""
        while True:
            path = f"/proc/self/task/{os.getpid()}/children"
            with open(path) as listing:
                leftovers = [int(p) for p in listing.read().split()]
            leftovers = [pid for pid in leftovers if pid not in self.children]
            if not leftovers:
                return
            for pid in leftovers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for pid in leftovers:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def end_children(self) -> None:
        """The executor has gone: so do the tasks (their groups, as the executor would)."""
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sandboxed = bool(args) and args[0] == SANDBOXED
    args = args[1:] if sandboxed else args
    if len(args) < 2 or not args[0].isdigit() or not args[1].isdigit():
        print(f"usage: forkserver [{SANDBOXED}] FD EXECUTOR_PID [MODULE ...]", file=sys.stderr)
        return 2
    die_with_parent()
    if sandboxed:  # its parent is the namespace's pid 1, which dies with the executor
        become_subreaper()
    elif os.getppid() != int(args[1]):  # the executor died before the line above
        return 1
    sock = socket.socket(fileno=int(args[0]))
    import importlib

    for module in [*WARM, *args[2:]]:
        try:
            importlib.import_module(module)
        except BaseException as exc:  # whatever the import raised is the reason
            error = f"{type(exc).__name__}: {exc}"
            sock.send(pack({"kind": "preload_failed", "module": module, "error": error}))
            return 3
    import gc

    gc.freeze()  # the preloaded objects stay shared with every child (no refcount copies)
    server = Server(sock, sandboxed)
    server.send(ready_report())
    return server.serve()
