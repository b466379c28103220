"""Coverage-guided fuzz target (atheris) for the TOML task-definition loader: any text must
either parse into a TaskConfig or raise ConfigError with a message, nothing else.

    python fuzz/fuzz_config.py -runs=20000
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports(include=["lute_async.config"]):
    from lute_async.config import parse_config
    from lute_async.errors import ConfigError

#: A valid document the fuzzer starts from and mutates (prepended on odd first bytes).
SEED = """
[tasks.find_peaks]
function = "mypkg.tasks:find_peaks"
timeout = 600
launcher = { kind = "mpi", np = 4 }
hooks = ["mypkg.hooks:notify"]
[tasks.find_peaks.params]
threshold = 3
run = 42
[tasks.find_peaks.env]
PATH = { prepend = "/opt/analysis/bin" }
OMP_NUM_THREADS = "4"
[tasks.shell]
command = ["./bin/peaks", "--thr", "{{ threshold }}"]
"""


def test_one_input(raw: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(raw)
    prefix = SEED if fdp.ConsumeBool() else ""
    text = prefix + fdp.ConsumeUnicodeNoSurrogates(fdp.remaining_bytes())
    try:
        parse_config(text, source="<fuzz>")
    except ConfigError as exc:
        assert str(exc)


def main(argv: list[str]) -> Any:
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
