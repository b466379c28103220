"""``lute-async serve``: the dashboard of the records database, in a browser; and what
``run --dashboard`` uses to serve its own runs live."""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from lute_async.app.supervise import run_loop
from lute_async.cli.common import fail, lute_errors, settings_of
from lute_async.cli.database import db_option, records_db

if TYPE_CHECKING:
    from lute_async.web import Dashboard

__all__ = ["dashboard_option", "make_dashboard", "serve"]


def make_dashboard(address: str, **options: Any) -> Dashboard:
    """A dashboard listening on ``[HOST:]PORT``; a one-line error without the [web] extra."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        fail(f"dashboard address {address!r}: expected [HOST:]PORT with a port of 0 to 65535")
    try:
        from lute_async.web import Dashboard
    except ImportError as exc:
        fail(str(exc))
    return Dashboard(host=host, port=int(port), **options)


#: ``run --dashboard [[HOST:]PORT]``: serve the run's dashboard while it runs.
dashboard_option = click.option(
    "--dashboard",
    "dashboard",
    is_flag=False,
    flag_value="127.0.0.1:0",
    default=None,
    metavar="[HOST:]PORT",
    help="Serve a live dashboard of the run while it runs (alone: 127.0.0.1, a free port); "
    "its address, with the token, is printed on stderr.",
)


@click.command(short_help="Serve the dashboard of the run history (a web page).")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; any address still needs the token.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8765,
    show_default=True,
    help="Port to listen on (0: a free one).",
)
@db_option()
@click.pass_context
def serve(ctx: click.Context, host: str, port: int) -> None:
    """Serve the dashboard of the records database until Ctrl-C.

    It prints its address with a random token; open it in a browser (the token is then kept
    in a cookie). Pages read the database when they are asked: runs of other processes show
    with their last recorded status, not live (`run --dashboard` serves a run live).
    """
    settings = settings_of(ctx)
    dashboard = make_dashboard(f"[{host}]:{port}", db=records_db(settings), announce=_print)

    async def main() -> None:
        import anyio

        await dashboard.open()
        try:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    break
        finally:
            await dashboard.aclose()

    with lute_errors():
        run_loop(main)


def _print(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
