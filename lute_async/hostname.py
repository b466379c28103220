"""This machine's host name and environment, read once per process rather than per run.

``socket.gethostname()`` is a system call and each run asked for it four times; decoding
``os.environ`` into a dict costs ~20 us for 35 variables. Both are cached: the host name
until a fork (a forked child may change its UTS namespace), the environment until it changes
(one C-level comparison of the raw bytes per call).
"""

from __future__ import annotations

import os
import socket

_host: str | None = None
_env_raw: dict[bytes, bytes] = {}
_env: dict[str, str] = {}


def hostname() -> str:
    """``socket.gethostname()``, asked once per process (again after a fork)."""
    global _host
    if _host is None:
        _host = socket.gethostname()
    return _host


def environment() -> dict[str, str]:
    """A fresh copy of ``os.environ`` as a plain dict (cached decoding)."""
    global _env_raw, _env
    raw = getattr(os.environ, "_data", None)  # CPython's bytes mapping behind os.environ
    if not isinstance(raw, dict):
        return dict(os.environ)
    if raw != _env_raw:  # set or unset since the last call: decode again
        _env_raw, _env = dict(raw), dict(os.environ)
    return dict(_env)


def _forget_host() -> None:
    global _host
    _host = None


os.register_at_fork(after_in_child=_forget_host)
