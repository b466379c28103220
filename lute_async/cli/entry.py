"""The ``lute-async`` console script: ``emit`` is dispatched before click is imported (a shell
task may emit once per item), every other command goes to the click group."""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs every emit milliseconds
if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``lute-async ARGV`` (``sys.argv[1:]`` by default) and exit with its code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["emit"]:
        from lute_async.cli.emitter import run

        code = run(args[1:])
        if code is not None:
            sys.exit(code)
    from lute_async.cli.group import main as group_main

    group_main(argv)
