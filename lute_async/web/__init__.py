"""The web dashboard (``lute-async serve``, ``Executor(dashboard=Dashboard())``): the live runs,
their history, each run and each workflow graph, in a browser. Needs the ``[web]`` extra
(Starlette, uvicorn, Jinja2)."""

from __future__ import annotations

try:
    from lute_async.web.server import Dashboard
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        f"lute-async's dashboard needs the [web] extra ({exc}): pip install 'lute-async[web]'"
    ) from exc

__all__ = ["Dashboard"]
