"""``python -m lute_async.cli``: the ``lute-async`` command."""

from lute_async.cli.entry import main

main()
