"""Structured logging for lute-async with structlog: a library-owned logger unless the
application configured structlog itself."""

from __future__ import annotations

import logging
import sys
from typing import Any, Literal

import structlog

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
    """The logger lute-async writes to (the application's structlog config when it has one)."""
    if _logger is None:
        if structlog.is_configured():
            return structlog.get_logger("lute_async")
        configure(level=logging.INFO)
    return _logger


def is_enabled_for(level: int) -> bool:
    """True when the current lute-async logger would emit ``level``."""
    logger = get_logger()
    is_enabled = getattr(logger, "is_enabled_for", None)
    return bool(is_enabled(level)) if is_enabled is not None else True
