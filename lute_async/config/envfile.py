"""Env files: ``KEY=VALUE`` lines read as data, with ``$VAR`` expanded as shells and dotenv do.

One assignment a line; blank lines and ``#`` comment lines are skipped, ``export`` may come
first, and a ``#`` after the value starts a comment. The value is one shell word: plain text,
``'...'`` (everything literal), ``"..."`` (``\\`` escapes ``$``, `````, ``"`` and ``\\``) and
``\\x`` outside quotes (``x``). Outside single quotes ``$NAME`` and ``${NAME}`` expand to the
variable's value: from the lines above in the same file, else the run's environment, else the
empty string (as in shells and python-dotenv). Nothing else is expanded or executed: ``$(...)``
and backticks are kept as written, a ``$`` not followed by a name stays a ``$``, and any other
``${...}`` form (``${NAME:-default}``...) is an error. A substituted value is never scanned again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

from lute_async.errors import ConfigError

__all__ = ["parse_env_file"]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"(?:export\s+)?([^=\s]+)=(.*)")
#: What a backslash escapes inside double quotes (before anything else it is kept).
_DOUBLE_QUOTED_ESCAPES = '$`"\\'
#: A variable's value by name: the file's lines above, then the run's environment.
_Lookup = Callable[[str], "str | None"]


class _LineError(ValueError):
    """A problem with one line, reported with the file and line number."""


def parse_env_file(
    path: Path, where: str = "", environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The variables ``path`` assigns, ``$VAR`` expanded from ``environ`` (default: this
    process's environment); never executes anything. A ConfigError names the file and line."""
    label = where or str(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{label}: cannot read env file {path}: {exc}") from None
    outer = os.environ if environ is None else environ
    env: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        assignment = _ASSIGNMENT.fullmatch(text)
        if assignment is None:
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE, got {text!r}")
        key = assignment.group(1)
        if not _ENV_NAME.fullmatch(key):
            raise ConfigError(f"{path}:{number}: {key!r} is not a variable name")
        try:
            env[key] = _value(assignment.group(2), lambda name: env.get(name, outer.get(name)))
        except _LineError as exc:
            raise ConfigError(f"{path}:{number}: {exc}") from None
    return env


def _value(text: str, lookup: _Lookup) -> str:
    """The word ``text`` starts with, unquoted and expanded; only a comment may follow it."""
    out: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        char = text[i]
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                out.append(char)
            i += 1
        elif char == "\\":
            if i + 1 == len(text):
                raise _LineError("the line ends in a backslash (values are one line)")
            escaped = text[i + 1]
            if quote and escaped not in _DOUBLE_QUOTED_ESCAPES:
                out.append(char)
            out.append(escaped)
            i += 2
        elif char == "$":
            expanded, i = _expand(text, i, lookup)
            out.append(expanded)
        elif char == quote:
            quote = ""
            i += 1
        elif not quote and char in "'\"":
            quote = char
            i += 1
        elif not quote and char.isspace():
            rest = text[i:].strip()
            if not rest.startswith("#"):
                raise _LineError(f"expected one value, got more after it: {rest!r}")
            break
        else:
            out.append(char)
            i += 1
    if quote:
        raise _LineError(f"no closing quotation ({quote}) on the line")
    return "".join(out)


def _expand(text: str, start: int, lookup: _Lookup) -> tuple[str, int]:
    """The value of the reference at ``text[start]`` (a ``$``), and where the text goes on."""
    after = start + 1
    if text.startswith("{", after):
        end = text.find("}", after)
        if end < 0:
            raise _LineError(f"{text[start:]!r}: '${{' without a closing '}}'")
        name = text[after + 1 : end]
        if not _ENV_NAME.fullmatch(name):
            raise _LineError(f"{text[start : end + 1]!r}: only $NAME and ${{NAME}} are expanded")
        return lookup(name) or "", end + 1
    found = _ENV_NAME.match(text, after)
    if found is None:
        return "$", after
    return lookup(found.group()) or "", found.end()
