"""Structured logging for lute-async with structlog.

A library stays quiet until the application says otherwise: until :func:`configure` is called
(the CLI calls it from ``--log-level``/``--log-format``), lute-async writes only warnings and
errors, as console lines on stderr. An application that configured structlog itself gets
lute-async's events through its own configuration instead, at every level.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

#: The level lute-async logs at until :func:`configure` is called: warnings and errors only.
UNCONFIGURED_LEVEL = logging.WARNING

_logger: Any = None


def configure(
    *, renderer: Literal["console", "json"] = "console", level: int | str = logging.INFO
) -> None:
    """Set how lute-async logs: to stderr, as coloured console lines or JSON, at ``level``."""
    global _logger
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    processors: list[Any] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
        structlog.processors.dict_tracebacks if renderer == "json" else _keep,
        structlog.processors.JSONRenderer()
        if renderer == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
    ]
    _logger = structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
    ).bind(logger="lute_async")


def _keep(logger: Any, method: str, event_dict: Any) -> Any:
    return event_dict


def get_logger() -> Any:
    """The logger lute-async writes to: the one :func:`configure` set, else the application's
    structlog configuration when it has one, else warnings and errors on stderr."""
    if _logger is None:
        if structlog.is_configured():
            return structlog.get_logger("lute_async")
        configure(level=UNCONFIGURED_LEVEL)
    return _logger


def is_enabled_for(level: int) -> bool:
    """True when the current lute-async logger would emit ``level``."""
    logger = get_logger()
    is_enabled = getattr(logger, "is_enabled_for", None)
    return bool(is_enabled(level)) if is_enabled is not None else True
