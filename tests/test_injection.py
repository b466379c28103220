"""Attacks through values: a value substituted into a template is never rendered again, format
widths are capped, env files expand ``$VAR`` like dotenv (never a command), and no control
character reaches a name or an sbatch directive (a newline there was a shell line)."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lute_async import Executor, templates
from lute_async.config import parse_config, parse_env_file
from lute_async.errors import ConfigError, LaunchError
from lute_async.launchers.base import LaunchSpec
from lute_async.launchers.slurm import Slurm
from lute_async.launchers.slurm import launcher as slurm_launcher
from lute_async.templates import TemplateError, render
from lute_async.workflow import Workflow, run_graph_from_config

TOKEN = "tok-3f9a-very-secret"
REPORT = "from lute_async.task import Reporter\nwith Reporter.connect() as r: r.result({result})"


def config(text: str, base: Path | None = None):  # type: ignore[no-untyped-def]
    return parse_config(textwrap.dedent(text), "tasks.toml", base)


# --- 1. a substituted value is a literal; widths are capped ---------------------------------


def test_a_param_override_is_a_literal_never_a_template() -> None:
    parsed = config(
        """
        [tasks.a]
        command = ["echo", "{{ p }}", "{{ q }}"]
        params = { p = "x", q = "{{ p }}!" }
        """
    )
    resolved = parsed.resolve("a", {"p": "{{ $MY_API_TOKEN }}"}, environ={"MY_API_TOKEN": TOKEN})
    assert resolved.argv == ["echo", "{{ $MY_API_TOKEN }}", "{{ $MY_API_TOKEN }}!"]
    assert resolved.params["p"] == "{{ $MY_API_TOKEN }}"
    assert TOKEN not in repr(resolved.params)


def test_an_override_with_a_huge_width_is_kept_as_written() -> None:
    parsed = config('[tasks.a]\ncommand = ["echo", "{{ p }}"]\nparams = { p = 1 }\n')
    resolved = parsed.resolve("a", {"p": "{{ $HOME:>300000000 }}"}, environ={"HOME": "/h"})
    assert resolved.argv == ["echo", "{{ $HOME:>300000000 }}"]


async def test_an_upstream_result_is_a_literal_in_commands_and_defined_tasks(
    executor: Executor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_API_TOKEN", TOKEN)
    result = repr({"p": "{{ $MY_API_TOKEN }}", "wide": "{{ $HOME:>300000000 }}"})
    report = REPORT.format(result=result).replace("\n", "\\n")
    path = tmp_path / "graph.toml"
    path.write_text(
        f"""
[tasks.use]
command = ["echo", "{{{{ p }}}}", "{{{{ wide }}}}"]
params = {{ p = "", wide = "" }}

[graph.source]
command = ["{sys.executable}", "-c", "{report}"]

[graph.direct]
command = ["echo", "{{{{ source.result.payload.p }}}}", "{{{{ source.result.payload.wide }}}}"]
after = ["source"]

[graph.defined]
task = "use"
after = ["source"]
params.p = "{{{{ source.result.payload.p }}}}"
params.wide = "{{{{ source.result.payload.wide }}}}"
"""
    )
    records = await run_graph_from_config(path, executor)
    literal = ["{{ $MY_API_TOKEN }}", "{{ $HOME:>300000000 }}"]
    for name in ("direct", "defined"):
        record = records[name]
        assert record.status == "COMPLETED", record.error
        assert record.command[1:] == literal
    assert records["defined"].params == {"p": literal[0], "wide": literal[1]}


def test_a_format_width_over_the_cap_names_the_template() -> None:
    with pytest.raises(TemplateError, match=r"\{\{ x:>300000000 \}\}"):
        render("a{{ x:>300000000 }}", lambda ref, key: "v", "params.p")
    with pytest.raises(TemplateError, match="precision"):
        render("{{ x:.5000f }}", lambda ref, key: 1.0, "params.p")
    assert render(f"{{{{ x:>{templates.MAX_FORMAT_NUMBER} }}}}", lambda r, k: "v").endswith("v")
    parsed = config('[tasks.a]\ncommand = ["echo", "{{ $HOME:0>9999 }}"]\n')
    with pytest.raises(ConfigError) as info:
        parsed.resolve("a", environ={"HOME": "/h"})
    message = str(info.value)
    assert "task 'a': key 'command[1]'" in message and "{{ $HOME:0>9999 }}" in message


# --- 2. env files ----------------------------------------------------------------------------


def test_an_env_file_expands_variables_from_the_run_environment(tmp_path: Path) -> None:
    path = tmp_path / "site.env"
    path.write_text(
        textwrap.dedent(
            """\
            PATH=/site/bin:$PATH
            export DATA=${HOME}/data   # a comment
            DOUBLE="$DATA and ${UNSET_ONE}end"
            SINGLE='$PATH stays'
            ESCAPED=\\$PATH"\\$HOME"
            CMD="$(id) `id` $ ${HOME}x"
            HASH=a#b
            """
        )
    )
    env = parse_env_file(path, environ={"PATH": "/usr/bin:/bin", "HOME": "/home/u"})
    assert env == {
        "PATH": "/site/bin:/usr/bin:/bin",
        "DATA": "/home/u/data",
        "DOUBLE": "/home/u/data and end",
        "SINGLE": "$PATH stays",
        "ESCAPED": "$PATH$HOME",
        "CMD": "$(id) `id` $ /home/ux",
        "HASH": "a#b",
    }


def test_a_task_finds_sh_with_an_env_file_extending_path(tmp_path: Path) -> None:
    (tmp_path / "site.env").write_text("PATH=/site/bin:$PATH\n")
    parsed = config('[tasks.a]\ncommand = ["sh"]\nenv_file = "site.env"\n', base=tmp_path)
    env = parsed.resolve("a", environ={"PATH": "/usr/bin:/bin"}).env
    assert env["PATH"] == "/site/bin:/usr/bin:/bin"


@pytest.mark.parametrize("line", ["A=${B", "A=${B:-x}", "A=${1}"])
def test_a_malformed_expansion_is_an_error_naming_the_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "bad.env"
    path.write_text(f"OK=1\n{line}\n")
    with pytest.raises(ConfigError, match=r"bad\.env:2: "):
        parse_env_file(path, environ={})


# --- 3. control characters in names and sbatch directives -----------------------------------

EVIL_NAME = "peaks\ntouch pwned #"


async def test_a_run_name_with_a_newline_is_refused(executor: Executor) -> None:
    with pytest.raises(ConfigError, match=r"key 'name'.*'peaks\\ntouch pwned #'"):
        await executor.run(["true"], name=EVIL_NAME)
    for bad in ("a\rb", "a\x7fb", "a\x85b", "a\x00b", ""):
        with pytest.raises(ConfigError, match="key 'name'"):
            await executor.run(["true"], name=bad)


def test_a_workflow_node_name_with_a_newline_is_refused(executor: Executor) -> None:
    with pytest.raises(ConfigError, match=r"key 'name'.*\\n"):
        Workflow(executor).add(EVIL_NAME, ["true"])


async def test_a_graph_node_name_with_a_newline_is_refused(
    executor: Executor, tmp_path: Path
) -> None:
    path = tmp_path / "graph.toml"
    path.write_text('[graph."peaks\\ntouch pwned #"]\ncommand = ["true"]\n')
    with pytest.raises(ConfigError, match=r"graph node 'peaks\\ntouch pwned #': key 'name'"):
        await run_graph_from_config(path, executor)
    assert (await executor.store()).query() == []


def test_a_task_name_with_a_newline_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"key 'name'.*\\n"):
        config('[tasks."a\\nb"]\ncommand = ["true"]\n')


@pytest.mark.parametrize("key", ["time", "mem", "partition", "account", "qos", "job_name"])
def test_an_sbatch_option_with_a_newline_is_refused(key: str) -> None:
    value = "1\ntouch pwned"
    with pytest.raises(ConfigError, match=rf"key 'launcher.{key}'.*'1\\ntouch pwned'"):
        Slurm(**{key: value})  # type: ignore[arg-type]
    if key != "job_name":
        table = f'[tasks.a]\ncommand = ["x"]\nlauncher = {{ kind = "slurm", {key} = "1\\nx" }}\n'
        with pytest.raises(ConfigError, match=rf"task 'a': key 'launcher.{key}'.*\\n"):
            config(table)


def test_extra_sbatch_with_a_control_character_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"key 'launcher.extra_sbatch\[1\]'.*\\r"):
        Slurm(extra_sbatch=["--exclusive", "--comment=x\rtouch pwned"])
    with pytest.raises(ConfigError, match=r"launcher.extra_sbatch"):
        config(
            '[tasks.a]\ncommand = ["x"]\n'
            'launcher = { kind = "slurm", extra_sbatch = ["--comment=\\u0085"] }\n'
        )


def _spec(tmp_path: Path, name: str = "peaks") -> LaunchSpec:
    return LaunchSpec(argv=["true"], env={}, run_id="abc", name=name, run_dir=tmp_path)


def test_the_batch_script_refuses_a_run_name_or_path_with_a_newline(tmp_path: Path) -> None:
    with pytest.raises(LaunchError, match=r"job-name.*'peaks\\ntouch pwned #'"):
        Slurm().batch_script(_spec(tmp_path, EVIL_NAME), tmp_path / "out")
    with pytest.raises(LaunchError, match=r"output.*\\n"):
        Slurm().batch_script(_spec(tmp_path), tmp_path / "a\nb")


async def test_sbatch_gets_the_script_on_stdin_and_its_copy_is_new_private_and_no_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted: list[tuple[list[str], bytes | None]] = []

    async def sbatch(
        argv: list[str], env: object, *, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        submitted.append((argv, stdin))
        return subprocess.CompletedProcess(argv, 0, b"42\n", b"")

    monkeypatch.setattr(slurm_launcher, "run_client", sbatch)
    run_dir = tmp_path / "run"
    job = await Slurm().launch(_spec(run_dir), _ignore)
    script = run_dir / "job.sbatch"
    assert job.job_id == "42" and job.batch_script == script
    assert submitted == [(["sbatch", "--parsable", "--export=ALL"], script.read_bytes())]
    assert stat.S_IMODE(script.stat().st_mode) == 0o600
    script.unlink()
    target = tmp_path / "elsewhere"
    script.symlink_to(target)
    with pytest.raises(LaunchError, match=r"job\.sbatch"):
        await Slurm().launch(_spec(run_dir), _ignore)
    assert not target.exists() and len(submitted) == 1


async def _ignore(sig: str, data: dict[str, object]) -> None:
    pass
