"""Task definitions from TOML: parsing, precise errors, templates, env modes, entry points."""

from __future__ import annotations

import os
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from lute_async import worker
from lute_async.config import (
    EnvSetting,
    LauncherDef,
    load_config,
    load_hook,
    parse_config,
    parse_env_file,
)
from lute_async.errors import ConfigError
from lute_async.limits import Limits
from lute_async.records import AnalysisRecord, RecordStore


def config(text: str, source: str = "tasks.toml", base: Path | None = None):  # type: ignore[no-untyped-def]
    return parse_config(textwrap.dedent(text), source, base)


def error_of(text: str, name: str | None = None, **resolve: object) -> str:
    with pytest.raises(ConfigError) as info:
        parsed = config(text)
        if name is not None:
            parsed.resolve(name, **resolve)  # type: ignore[arg-type]
    return str(info.value)


# --- parsing -------------------------------------------------------------------------------------


def test_a_full_definition_parses_into_typed_fields(tmp_path: Path) -> None:
    parsed = config(
        """
        [executor]
        db = "runs.db"
        max_concurrency = 2

        [tasks.peaks]
        command = ["./peaks", "--thr", "{{ threshold }}"]
        timeout = 600
        cwd = "work"
        limits = { memory = 1000000, wall_time = 30 }
        launcher = { kind = "mpi", np = 4, extra_args = ["--oversubscribe"] }
        communicators = ["pipe", "tcp"]
        hooks = ["mypkg.hooks:notify"]
        tags = ["nightly"]

        [tasks.peaks.params]
        threshold = 3

        [tasks.peaks.env]
        PATH = { prepend = "/opt/bin" }
        OMP_NUM_THREADS = 4
        """,
        base=tmp_path,
    )
    task = parsed.tasks["peaks"]
    assert task.command == ["./peaks", "--thr", "{{ threshold }}"]
    assert task.timeout == 600.0
    assert task.limits == Limits(memory=1000000, wall_time=30.0)
    assert task.launcher == LauncherDef("mpi", {"np": 4, "extra_args": ["--oversubscribe"]})
    assert task.communicators == ("pipe", "tcp")
    assert task.hooks == ("mypkg.hooks:notify",)
    assert task.env == {
        "PATH": EnvSetting("/opt/bin", "prepend"),
        "OMP_NUM_THREADS": EnvSetting("4"),
    }
    assert parsed.executor.db == tmp_path / "runs.db"
    assert parsed.executor.max_concurrency == 2


def test_slurm_launcher_options_are_validated_into_a_dict() -> None:
    parsed = config(
        """
        [tasks.big]
        function = "pkg.mod:fn"
        launcher = { kind = "slurm", partition = "debug", ntasks = 8, time = "0:30", mpi = false }
        """
    )
    assert parsed.tasks["big"].launcher == LauncherDef(
        "slurm", {"partition": "debug", "ntasks": 8, "time": "0:30", "mpi": False}
    )


def test_launcher_tables_take_the_python_and_tcp_address_options_python_does() -> None:
    parsed = config(
        """
        [tasks.big]
        command = ["python", "job.py"]
        [tasks.big.launcher]
        kind = "slurm"
        tcp_host = "10.1.2.3"
        tcp_advertise = "node-a"
        python = "/opt/py"
        [tasks.ranks]
        command = ["python", "job.py"]
        launcher = { kind = "mpi", np = 2, python = "/opt/py" }
        """
    )
    slurm = parsed.resolve("big").launcher
    assert (slurm.tcp_host, slurm.tcp_advertise, slurm.python) == (  # type: ignore[union-attr]
        "10.1.2.3",
        "node-a",
        "/opt/py",
    )
    assert parsed.resolve("ranks").launcher.python == "/opt/py"  # type: ignore[union-attr]
    message = error_of(
        '[tasks.t]\ncommand = ["true"]\nlauncher = { kind = "slurm", tcp_host = 3 }\n'
    )
    assert "key 'launcher.tcp_host'" in message and "got an integer (3)" in message


def test_a_hook_beside_the_task_file_is_found_in_its_directory(tmp_path: Path) -> None:
    (tmp_path / "beside_hooks_mod.py").write_text("def hook(event):\n    return None\n")
    hook = load_hook("beside_hooks_mod:hook", "t", base=tmp_path)
    assert hook.__module__ == "beside_hooks_mod"
    assert os.fspath(tmp_path) not in sys.path
    with pytest.raises(ConfigError, match="cannot load hook 'nowhere_mod:hook'"):
        load_hook("nowhere_mod:hook", "t", base=tmp_path)


def test_a_command_string_is_split_like_a_shell_would() -> None:
    parsed = config("[tasks.t]\ncommand = \"echo 'two words' three\"\n")
    assert parsed.tasks["t"].command == ["echo", "two words", "three"]


def test_a_function_task_runs_in_the_worker() -> None:
    parsed = config('[tasks.t]\nfunction = "pkg.mod:fn"\n')
    resolved = parsed.resolve("t", python="/usr/bin/python3")
    assert resolved.argv == ["/usr/bin/python3", "-c", worker.ENTRY, "pkg.mod:fn"]


# --- errors --------------------------------------------------------------------------------------


def test_missing_task_names_the_file_and_the_known_tasks() -> None:
    message = error_of('[tasks.a]\ncommand = ["true"]\n', "nope")
    assert message.startswith("tasks.toml: no task 'nope'; known tasks: a")


def test_unknown_key_names_file_task_key_and_the_allowed_keys() -> None:
    message = error_of('[tasks.a]\ncommand = ["true"]\ntimout = 3\n')
    assert message.startswith("tasks.toml: task 'a': key 'timout': unknown key; expected one of ")
    assert "timeout" in message


def test_unknown_top_level_key_is_an_error() -> None:
    assert error_of("[task.a]\ncommand = ['true']\n") == (
        "tasks.toml: key 'task': unknown top-level key; "
        "expected [tasks.NAME], [graph.NAME] or [executor]"
    )


def test_bad_type_says_what_was_expected_and_what_was_given() -> None:
    assert error_of('[tasks.a]\ncommand = ["true"]\ntimeout = "soon"\n') == (
        "tasks.toml: task 'a': key 'timeout': expected a positive number of seconds, "
        "got a string ('soon')"
    )


def test_bad_launcher_option_is_named_with_its_kind() -> None:
    message = error_of('[tasks.a]\ncommand = ["true"]\nlauncher = { kind = "mpi", ntasks = 4 }\n')
    assert message == (
        "tasks.toml: task 'a': key 'launcher.ntasks': unknown option for a mpi launcher; "
        "expected np, launcher, extra_args, python"
    )


def test_bad_launcher_option_type_is_an_error() -> None:
    message = error_of(
        '[tasks.a]\ncommand = ["true"]\nlauncher = { kind = "slurm", ntasks = "8" }\n'
    )
    assert message == (
        "tasks.toml: task 'a': key 'launcher.ntasks': expected an integer, got a string ('8')"
    )


def test_command_and_function_together_are_an_error() -> None:
    message = error_of('[tasks.a]\ncommand = ["true"]\nfunction = "m:f"\n')
    assert message == "tasks.toml: task 'a': expected exactly one of 'command' or 'function'"


def test_unknown_env_mode_is_an_error() -> None:
    message = error_of('[tasks.a]\ncommand = ["true"]\nenv = { PATH = { insert = "/x" } }\n')
    assert message == (
        "tasks.toml: task 'a': key 'env.PATH.insert': unknown mode; "
        "expected one of prepend, append, overwrite"
    )


def test_invalid_toml_names_the_file() -> None:
    assert error_of("[tasks.a\n").startswith("tasks.toml: not valid TOML: ")


def test_template_to_a_missing_param_names_the_key_and_the_params() -> None:
    message = error_of(
        '[tasks.a]\ncommand = ["echo", "{{ thresh }}"]\nparams = { threshold = 3 }\n', "a"
    )
    assert message == (
        "tasks.toml: task 'a': key 'command[1]': template {{ thresh }}: no param 'thresh' "
        "(params: threshold)"
    )


def test_template_to_a_missing_task_is_an_error() -> None:
    message = error_of('[tasks.a]\ncommand = ["echo"]\nparams = { x = "{{ b.y }}" }\n', "a")
    assert (
        message
        == "tasks.toml: task 'a': key 'params.x': template {{ b.y }}: no task 'b' in tasks.toml"
    )


def test_template_to_an_unset_environment_variable_is_an_error() -> None:
    message = error_of('[tasks.a]\ncommand = ["echo", "{{ $NOPE }}"]\n', "a", environ={})
    assert message == (
        "tasks.toml: task 'a': key 'command[1]': template {{ $NOPE }}: "
        "environment variable 'NOPE' is not set"
    )


def test_params_referring_to_each_other_in_a_cycle_are_an_error() -> None:
    message = error_of(
        '[tasks.a]\ncommand = ["x"]\nparams = { p = "{{ q }}", q = "{{ p }}" }\n', "a"
    )
    assert "params refer to each other in a cycle: p -> q -> p" in message


def test_a_bad_format_spec_is_an_error() -> None:
    message = error_of('[tasks.a]\ncommand = ["echo", "{{ x:04d }}"]\nparams = { x = "ab" }\n', "a")
    assert message.startswith("tasks.toml: task 'a': key 'command[1]': cannot format {{ x:04d }}")


def test_missing_config_file_given_explicitly_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: config file not found"):
        load_config(tmp_path / "nope.toml")


# --- templates -----------------------------------------------------------------------------------


def test_templates_fill_params_with_format_specs_env_and_other_tasks() -> None:
    parsed = config(
        """
        [tasks.setup]
        command = ["true"]
        params = { detector = "epix", run = 7 }

        [tasks.a]
        command = ["ana", "--run", "{{ run:04d }}", "--det={{ setup.detector }}", "{{ $HOME }}"]
        params = { run = "{{ setup.run }}", label = "r{{ run:03d }}-{{ setup.detector }}" }
        """
    )
    resolved = parsed.resolve("a", environ={"HOME": "/home/me"})
    assert resolved.argv == ["ana", "--run", "0007", "--det=epix", "/home/me"]
    assert resolved.params == {"run": 7, "label": "r007-epix"}


def test_overrides_replace_defaults_before_templates_are_filled() -> None:
    parsed = config('[tasks.a]\ncommand = ["echo", "{{ run:04d }}"]\nparams = { run = 1 }\n')
    resolved = parsed.resolve("a", {"run": 42})
    assert resolved.argv == ["echo", "0042"]
    assert resolved.params == {"run": 42}


def test_a_whole_value_template_keeps_the_type_of_what_it_refers_to() -> None:
    parsed = config(
        '[tasks.a]\ncommand = ["x"]\nparams = { n = 3, copy = "{{ n }}", nested = ["{{ n }}"] }\n'
    )
    assert parsed.resolve("a").params == {"n": 3, "copy": 3, "nested": [3]}


def test_latest_template_reads_the_last_completed_result(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "runs.db") as store:
        old = AnalysisRecord(name="peaks", status="COMPLETED", submitted_at=1.0)
        old.result = {"payload": {"n": 1}, "summary": None}
        new = AnalysisRecord(name="peaks", status="COMPLETED", submitted_at=2.0)
        new.result = {"payload": {"n": 42, "file": "r42.h5"}, "summary": None}
        failed = AnalysisRecord(name="peaks", status="FAILED", submitted_at=3.0)
        for record in (old, new, failed):
            store.save(record)
        parsed = config(
            '[tasks.fit]\ncommand = ["fit", "{{ latest.peaks.result.file }}"]\n'
            'params = { n = "{{ latest.peaks.result.n }}" }\n'
        )
        resolved = parsed.resolve("fit", store=store)
    assert resolved.params == {"n": 42}
    assert resolved.argv == ["fit", "r42.h5"]


def test_latest_template_without_a_completed_run_is_an_error(tmp_path: Path) -> None:
    with RecordStore(tmp_path / "runs.db") as store:
        message = error_of(
            '[tasks.fit]\ncommand = ["fit"]\nparams = { n = "{{ latest.peaks.result.n }}" }\n',
            "fit",
            store=store,
        )
    assert message == (
        "tasks.toml: task 'fit': key 'params.n': template {{ latest.peaks.result.n }}: "
        "no COMPLETED run of 'peaks' in the records database"
    )


# --- env -----------------------------------------------------------------------------------------


def test_path_can_be_prepended_appended_or_overwritten() -> None:
    parsed = config(
        """
        [tasks.a]
        command = ["x"]
        [tasks.a.env]
        PATH = { prepend = "/opt/a/bin" }
        LD_LIBRARY_PATH = { append = ["/opt/a/lib", "/opt/b/lib"] }
        PYTHONPATH = { overwrite = "/only/this" }
        EMPTY_BEFORE = { prepend = "/first" }
        """
    )
    environ = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": "/lib", "PYTHONPATH": "/old"}
    env = parsed.resolve("a", environ=environ).env
    assert env["PATH"] == f"/opt/a/bin{os.pathsep}/usr/bin"
    assert env["LD_LIBRARY_PATH"] == os.pathsep.join(["/lib", "/opt/a/lib", "/opt/b/lib"])
    assert env["PYTHONPATH"] == "/only/this"
    assert env["EMPTY_BEFORE"] == "/first"


def test_env_file_is_parsed_as_data_and_the_env_table_builds_on_it(tmp_path: Path) -> None:
    (tmp_path / "site.env").write_text(
        textwrap.dedent(
            """\
            # site settings
            export DATA_DIR=/data/\\$USER   # escaped: a literal
            GREETING="hello world"
            PATH=/site/bin
            EVIL='$(rm -rf /)'
            """
        )
    )
    parsed = config(
        '[tasks.a]\ncommand = ["x"]\nenv_file = "site.env"\nenv = { PATH = { append = "/x" } }\n',
        base=tmp_path,
    )
    env = parsed.resolve("a", environ={"PATH": "/usr/bin"}).env
    assert env == {
        "DATA_DIR": "/data/$USER",
        "GREETING": "hello world",
        "PATH": f"/site/bin{os.pathsep}/x",
        "EVIL": "$(rm -rf /)",
    }


def test_a_malformed_env_file_line_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.env"
    path.write_text("A=1\nnot an assignment\n")
    with pytest.raises(ConfigError, match=r"bad\.env:2: expected KEY=VALUE"):
        parse_env_file(path)


# --- entry points --------------------------------------------------------------------------------

plugin_installed = pytest.mark.skipif(
    not list(metadata.entry_points(group="lute_async.tasks", name="plugin_square")),
    reason="tests/plugin_pkg is not installed (pip install ./tests/plugin_pkg)",
)


@plugin_installed
def test_an_installed_task_function_is_found_by_name() -> None:
    resolved = config("").resolve("plugin_square", {"x": 5})
    assert resolved.argv == [
        sys.executable,
        "-c",
        worker.ENTRY,
        "lute_async_test_plugin.tasks:square",
    ]
    assert resolved.params == {"x": 5}


@plugin_installed
def test_an_installed_task_table_is_parsed_like_a_config_task() -> None:
    resolved = config("").resolve("plugin_echo", {"word": "hi"})
    assert resolved.argv == ["sh", "-c", "echo plugin says hi"]
    assert [hook.__name__ for hook in resolved.hooks] == ["announce"]


@plugin_installed
def test_an_installed_hook_is_loaded_by_name() -> None:
    assert load_hook("plugin_announce").__module__ == "lute_async_test_plugin.hooks"


def test_an_unknown_hook_name_is_an_error() -> None:
    with pytest.raises(ConfigError, match="hook 'no_such_hook' is neither"):
        load_hook("no_such_hook")


# --- the shared template grammar and run-option spec -------------------------------------------


def test_a_malformed_template_is_an_error_naming_the_key_and_the_grammar() -> None:
    message = error_of('[tasks.a]\ncommand = ["echo", "{{ not a ref }}"]\n', "a")
    assert message == (
        "tasks.toml: task 'a': key 'command[1]': template {{ not a ref }}: expected NAME, "
        "NAME.PATH or $VARIABLE, optionally followed by :FORMAT"
    )


def test_a_format_spec_may_have_spaces_and_another_tasks_list_item_is_reached_by_index() -> None:
    parsed = config(
        """
        [tasks.setup]
        command = ["true"]
        params = { dets = ["epix", "jungfrau"] }

        [tasks.a]
        command = ["echo", "{{ run : 04d }}", "{{ setup.dets.1 }}"]
        params = { run = 7 }
        """
    )
    assert parsed.resolve("a").argv == ["echo", "0007", "jungfrau"]


def test_an_infinite_timeout_is_refused() -> None:
    assert error_of('[tasks.a]\ncommand = ["true"]\ntimeout = inf\n') == (
        "tasks.toml: task 'a': key 'timeout': expected a positive number of seconds, "
        "got a number (inf)"
    )


def test_an_unknown_launcher_kind_lists_the_registered_kinds() -> None:
    assert error_of('[tasks.a]\ncommand = ["true"]\nlauncher = "k8s"\n') == (
        "tasks.toml: task 'a': key 'launcher.kind': "
        "expected one of local, mpi, slurm, forkserver, got 'k8s'"
    )


def test_a_registered_launcher_kind_is_built_from_its_factory() -> None:
    from lute_async.launchers import registry

    registry.register(registry.LauncherKind("plain", "lute_async.launchers.local:Local"))
    try:
        parsed = config('[tasks.a]\ncommand = ["true"]\nlauncher = "plain"\n')
        launcher = parsed.resolve("a").launcher
        assert launcher is not None and launcher.kind == "local"
    finally:
        registry.unregister("plain")
