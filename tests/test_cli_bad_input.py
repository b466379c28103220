"""Every ``lute-async`` command given broken input, as real subprocesses: exit code 2, one line
``lute-async: error: ...`` on stderr naming the bad value, never a traceback.

The cases run four at a time once per module (each in its own database); each test then
checks one. ``pytest -s`` prints the count the README's reliability table quotes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "lute_async.cli"]


@dataclass(frozen=True)
class Bad:
    """One broken invocation: its arguments, what the error line must name, and its setting."""

    args: tuple[str, ...]
    names: str
    env: dict[str, str | None] = field(default_factory=dict)  # None: unset
    cwd: str = "."
    stdin: str = ""

    @property
    def id(self) -> str:
        where = "".join(f"{k}={v} " for k, v in self.env.items())
        return (where + " ".join(self.args))[:80]


#: The commands the sweep must cover (the group's options and unknown names are cases too).
COMMANDS = {
    "run", "exec", "call", "run-task", "run-graph", "submit", "demo",
    "records list", "records show", "records export", "records reconcile",
}  # fmt: skip
FIND_PEAKS = "lute_async.demo:find_peaks"
NO_DB: dict[str, str | None] = {"LUTE_ASYNC_DB": None}

CASES = [
    # run
    Bad(("run", "nosuch"), "no task 'nosuch'"),
    Bad(("run", "-c", "bad.toml", "peaks"), "bad.toml: not valid TOML"),
    Bad(("run", "-c", "missing.toml", "peaks"), "missing.toml: config file not found"),
    Bad(
        ("run", "peaks"),
        "missing.toml: config file not found",
        {"LUTE_ASYNC_CONFIG": "missing.toml"},
    ),
    Bad(("run", "-c", "adir", "peaks"), "'adir' is a directory"),
    Bad(("run", "-c", "badtask.toml", "peaks"), "'soon'"),
    Bad(("run", "peaks", "-p", "novalue"), "'novalue'"),
    Bad(("run", "peaks", "--db", "adir"), "'adir' is a directory"),
    Bad(("run", "peaks", "--db", "junk.db"), "junk.db is not a lute-async records database"),
    Bad(("run", "peaks"), "'adir' (from $LUTE_ASYNC_DB) is a directory", {"LUTE_ASYNC_DB": "adir"}),
    Bad(("run", "-c", "dirdb.toml", "peaks"), "adir' (from [executor] db of dirdb.toml)", NO_DB),
    Bad(("run",), "Missing argument 'NAME'"),
    # exec
    Bad(("exec", "-t", "-1", "--", "true"), "'-1' is not a positive number of seconds"),
    Bad(("exec", "--timeout", "soon", "--", "true"), "'soon' is not a positive number"),
    Bad(("exec", "-t", "0", "--", "true"), "'0' is not a positive number"),
    Bad(("exec", "-t", "nan", "--", "true"), "'nan' is not a positive number"),
    Bad(("exec", "-t", "1e400", "--", "true"), "'1e400' is not a positive number"),
    Bad(("exec", "-e", "NOEQ", "--", "true"), "'NOEQ'"),
    Bad(("exec", "-p", "=x", "--", "true"), "'=x'"),
    Bad(("exec", "--cwd", "missing-dir", "--", "true"), "'missing-dir' does not exist"),
    Bad(("exec",), "Missing argument 'COMMAND...'"),
    Bad(("exec", "--db", "adir", "--", "true"), "'adir' is a directory"),
    Bad(("exec", "--", "true"), "lute-async.toml: not valid TOML", NO_DB, cwd="broken"),
    # call / run-task
    Bad(("call", "foo"), "'foo' is not of the form PKG.MOD:FUNC"),
    Bad(("call", "pkg.mod:"), "'pkg.mod:' is not of the form"),
    Bad(("run-task", "foo"), "'foo' is not of the form"),
    Bad(("call", FIND_PEAKS, "--params", "bad.json"), "params from 'bad.json' are not valid JSON"),
    Bad(("call", FIND_PEAKS, "--params", "list.json"), "must be a JSON object, got list"),
    Bad(("call", FIND_PEAKS, "--params", "missing.json"), "'missing.json'"),
    Bad(("call", FIND_PEAKS, "--params", "latin1.json"), "cannot read params from 'latin1.json'"),
    Bad(("call", FIND_PEAKS, "--params", "-"), "params from stdin are not valid JSON", stdin="{no"),
    Bad(("call", FIND_PEAKS, "-t", "soon"), "'soon' is not a positive number"),
    Bad(("call", FIND_PEAKS, "-p", "n"), "'n'"),
    Bad(("call", FIND_PEAKS, "--db", "adir"), "'adir' is a directory"),
    # run-graph
    Bad(("run-graph",), "Missing option '-c' / '--config'"),
    Bad(("run-graph", "-c", "missing.toml"), "'missing.toml' does not exist"),
    Bad(("run-graph", "-c", "bad.toml"), "bad.toml: not valid TOML"),
    Bad(("run-graph", "-c", "cycle.toml"), "dependency cycle: a -> b -> a"),
    Bad(("run-graph", "-c", "unknown-dep.toml"), "unknown task 'zz'"),
    Bad(("run-graph", "-c", "cycle.toml", "--max-concurrency", "0"), "'--max-concurrency': 0"),
    Bad(("run-graph", "-c", "cycle.toml", "--db", "adir"), "'adir' is a directory"),
    # records list
    Bad(("records", "list", "--limit", "0"), "'--limit': must be 1 or more, got 0"),
    Bad(("records", "list", "--limit", "-1"), "must be 1 or more, got -1"),
    Bad(("records", "list", "--limit", "many"), "'many'"),
    Bad(
        ("records", "list", "--since", "yesterday-ish"), "'--since': 'yesterday-ish' is not a time"
    ),
    Bad(("records", "list", "--until", "soon"), "'--until': 'soon' is not a time"),
    Bad(("records", "list", "--since", "1e400"), "'1e400' is not a time"),
    Bad(("records", "list", "--status", "BOGUS"), "'BOGUS'"),
    Bad(("records", "list", "--db", "adir"), "'adir' is a directory"),
    Bad(("records", "list", "--db", "junk.db"), "junk.db is not a lute-async records database"),
    Bad(("records", "list", "--db", "junk.db/runs.db"), "junk.db/runs.db"),
    Bad(("records", "list"), "'adir' (from $LUTE_ASYNC_DB)", {"LUTE_ASYNC_DB": "adir"}),
    Bad(
        ("records", "list"),
        "missing.toml: config file not found",
        {**NO_DB, "LUTE_ASYNC_CONFIG": "missing.toml"},
    ),
    Bad(
        ("records", "list"), "bad.toml: not valid TOML", {**NO_DB, "LUTE_ASYNC_CONFIG": "bad.toml"}
    ),
    Bad(("records", "list"), "lute-async.toml: not valid TOML", NO_DB, cwd="broken"),
    # records show / export / reconcile
    Bad(("records", "show", "nope"), "no run with id 'nope'"),
    Bad(("records", "show"), "Missing argument 'ID'"),
    Bad(("records", "show", "nope", "--db", "adir"), "'adir' is a directory"),
    Bad(("records", "export", "--format", "xml"), "'xml'"),
    Bad(("records", "export", "--limit", "0"), "must be 1 or more, got 0"),
    Bad(("records", "export", "--since", "soon"), "'soon' is not a time"),
    Bad(("records", "export", "-o", "missing-dir/out.jsonl"), "missing-dir/out.jsonl"),
    Bad(("records", "export", "--db", "junk.db"), "junk.db is not a lute-async records database"),
    Bad(
        ("records", "reconcile", "--db", "junk.db"), "junk.db is not a lute-async records database"
    ),
    Bad(("records", "reconcile", "--db", "adir"), "'adir' is a directory"),
    Bad(("records", "nosuch"), "No such command 'nosuch'"),
    # submit
    Bad(("submit", "nosuch"), "no task 'nosuch'"),
    Bad(("submit", "-c", "missing.toml", "peaks"), "missing.toml: config file not found"),
    Bad(("submit", "-c", "bad.toml", "peaks"), "bad.toml: not valid TOML"),
    Bad(("submit", "peaks", "-p", "novalue"), "'novalue'"),
    Bad(("submit", "peaks", "--db", "adir"), "'adir' is a directory"),
    Bad(("submit", "peaks"), "no task 'peaks'", cwd="empty"),
    # demo
    Bad(("demo", "--db", "adir"), "'adir' is a directory"),
    Bad(("demo", "--db", "junk.db"), "junk.db is not a lute-async records database"),
    # the group
    Bad(("--log-level", "loud", "records", "list"), "'loud'"),
    Bad(("--log-format", "xml", "records", "list"), "'xml'"),
    Bad(("--db", "adir", "records", "list"), "'adir' is a directory"),
    Bad(("--db", "runs.db", "records", "list", "--db", "adir"), "'adir' is a directory"),
    Bad(("nosuchcommand",), "No such command 'nosuchcommand'"),
    Bad(("run", "peaks", "--bogus"), "No such option '--bogus'"),
]

CONFIG = """\
[tasks.peaks]
command = ["true"]
"""
FILES = {
    "lute-async.toml": CONFIG,
    "bad.toml": "[tasks.peaks\ncommand = 1\n",
    "badtask.toml": '[tasks.peaks]\ncommand = ["true"]\ntimeout = "soon"\n',
    "dirdb.toml": '[executor]\ndb = "adir"\n\n' + CONFIG,
    "cycle.toml": '[graph.a]\ncommand = ["true"]\nafter = ["b"]\n'
    '[graph.b]\ncommand = ["true"]\nafter = ["a"]\n',
    "unknown-dep.toml": '[graph.a]\ncommand = ["true"]\nafter = ["zz"]\n',
    "bad.json": '{"n": 3,',
    "list.json": "[1, 2]",
    "junk.db": "this is not a database\n" * 100,
    "broken/lute-async.toml": "[tasks\n",
}


@dataclass(frozen=True)
class Outcome:
    code: int
    stdout: str
    stderr: str


def _run(case: Bad, index: int, where: Path) -> Outcome:
    env = {
        **os.environ,
        "LUTE_ASYNC_DB": os.fspath(where / "dbs" / f"{index}.db"),
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join([os.fspath(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("LUTE_ASYNC_CONFIG", None)
    env.pop("LUTE_ASYNC_DEBUG", None)
    for key, value in case.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    done = subprocess.run(
        [*CLI, *case.args],
        input=case.stdin,
        capture_output=True,
        text=True,
        cwd=where / case.cwd,
        env=env,
        timeout=60,
    )
    return Outcome(done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> list[Outcome]:
    """Every case's outcome, run four at a time in one shared directory of broken inputs."""
    where = tmp_path_factory.mktemp("bad-input")
    for name, text in FILES.items():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_text(text)
    (where / "latin1.json").write_bytes(b'{"name": "caf\xe9"}')
    # A database file of the user's own, 0600: one others may read is tightened with a warning
    # line first (tested in test_records_security), which is not what this sweep is about.
    os.chmod(where / "junk.db", 0o600)
    for directory in ("adir", "dbs", "empty"):
        (where / directory).mkdir()
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda item: _run(item[1], item[0], where), enumerate(CASES)))


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case.id for case in CASES])
def test_broken_input_is_one_line_naming_it_and_exit_2(outcomes: list[Outcome], index: int) -> None:
    case, outcome = CASES[index], outcomes[index]
    lines = outcome.stderr.splitlines()
    assert outcome.code == 2, outcome.stderr
    assert len(lines) == 1, outcome.stderr
    assert lines[0].startswith("lute-async: error: "), outcome.stderr
    assert case.names in lines[0]
    assert "Traceback" not in outcome.stderr + outcome.stdout


def _command(args: tuple[str, ...]) -> str:
    """The command a case runs: past the group's options; ``records`` with its sub-command."""
    rest = list(args)
    while rest and rest[0].startswith("--"):
        del rest[:2]
    if not rest:
        return "lute-async"
    return " ".join(rest[:2]) if rest[0] == "records" and len(rest) > 1 else rest[0]


def test_the_sweep_count(outcomes: list[Outcome]) -> None:
    commands = {_command(case.args) for case in CASES} & COMMANDS
    assert commands == COMMANDS
    refused = sum(
        outcome.code == 2 and len(outcome.stderr.splitlines()) == 1 for outcome in outcomes
    )
    tracebacks = sum("Traceback" in outcome.stderr for outcome in outcomes)
    # the README's reliability table quotes this line
    print(
        f"bad input: {len(CASES)} broken invocations of {len(commands)} commands; "
        f"{refused} refused with exit 2 and one error line; {tracebacks} tracebacks"
    )
    assert refused == len(CASES)
    assert tracebacks == 0
