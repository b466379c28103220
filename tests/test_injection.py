"""Attacks through values: a value substituted into a template is never rendered again, format
widths are capped, env files expand ``$VAR`` like dotenv (never a command), and no control
character reaches a name or an sbatch directive (a newline there was a shell line)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from lute_async import Executor, templates
from lute_async.config import parse_config, parse_env_file
from lute_async.errors import ConfigError
from lute_async.templates import TemplateError, render
from lute_async.workflow import run_graph_from_config

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
