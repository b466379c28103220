"""An installed hook."""

from __future__ import annotations

import sys
from typing import Any


def announce(event: Any) -> None:
    """Print each terminal event of a run on stderr."""
    if event.name in ("done", "failed", "cancelled", "timed_out"):
        print(f"plugin hook: {event.run.name} {event.name}", file=sys.stderr, flush=True)
