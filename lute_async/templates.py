"""The one template engine: ``{{ ... }}`` in task files, graph files and graph params.

Grammar (one for everything)::

    template   = "{{" reference [":" format-spec] "}}"     (spaces allowed around each part)
    reference  = "$" VARIABLE                              an environment variable
               | NAME {"." PART}                           a name, then a path into its value
    NAME       = letter or "_", then letters, digits, "_", "-"
    PART       = letters, digits, "_", "-"                 (digits index a list)
    format-spec = Python's format mini-language            ({{ run:04d }})

A string that is exactly one template without a format spec takes the referenced value itself
(a number stays a number); otherwise each template is replaced by ``format(value, spec)``.
What a reference means is the caller's business: :func:`render` asks a resolver, which may
answer :data:`LEAVE` to keep the template as written.

Rendering is one pass over the text as written: a substituted value is never scanned again, so
a value holding ``{{ ... }}`` (a ``--param``, an upstream result) stays a literal. A number in a
format spec (width, precision) may be at most :data:`MAX_FORMAT_NUMBER`, so a short template
cannot ask for a huge string.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from lute_async.errors import ConfigError

__all__ = [
    "LEAVE",
    "MAX_FORMAT_NUMBER",
    "NothingThere",
    "Reference",
    "Resolver",
    "TemplateError",
    "references",
    "render",
    "walk",
]

#: The largest width or precision a format spec may give.
MAX_FORMAT_NUMBER: Final = 4096

_SCAN = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
_REFERENCE = re.compile(
    r"(?P<path>\$[A-Za-z_]\w*|[A-Za-z_][\w-]*(?:\.[\w-]+)*)\s*(?::\s*(?P<spec>.*?))?"
)
#: Every number in a format spec: the width and the precision (a digit fill is one digit).
_SPEC_NUMBER = re.compile(r"(\.?)(\d+)")


class TemplateError(ConfigError):
    """A template is malformed or cannot be formatted; ``key`` says where it was written."""

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class Reference:
    """One parsed template."""

    #: The reference as written, without the format spec: ``"run"``, ``"$HOME"``, ``"a.b.c"``.
    expression: str
    #: The format spec, or None when there is none.
    spec: str | None

    @property
    def variable(self) -> str | None:
        """The environment variable's name for ``{{ $NAME }}``, else None."""
        return self.expression[1:] if self.expression.startswith("$") else None

    @property
    def path(self) -> tuple[str, ...]:
        """The name and the parts after it (empty for an environment variable)."""
        return () if self.variable is not None else tuple(self.expression.split("."))

    @property
    def text(self) -> str:
        """The template as it reads in messages: ``{{ run:04d }}`` or ``{{ a.b }}``."""
        spec = f":{self.spec}" if self.spec is not None else ""
        return f"{{{{ {self.expression}{spec} }}}}"


class _Leave:
    def __repr__(self) -> str:
        return "LEAVE"


#: A resolver's answer meaning "not mine: keep the template as written".
LEAVE: Final = _Leave()

#: Gives a reference's value; ``key`` names where the string was written (``params.x``).
Resolver = Callable[[Reference, str], Any]


class NothingThere(LookupError):
    """:func:`walk` found nothing at ``part``."""

    def __init__(self, part: str) -> None:
        super().__init__(part)
        self.part = part


def walk(document: Any, parts: Iterable[str]) -> Any:
    """What a reference's path reaches in ``document``: table keys, list indexes (digits)."""
    for part in parts:
        if isinstance(document, Mapping) and part in document:
            document = document[part]
        elif isinstance(document, list) and part.isdigit() and int(part) < len(document):
            document = document[int(part)]
        else:
            raise NothingThere(part)
    return document


def _parse(inner: str, key: str, strict: bool) -> Reference | None:
    match = _REFERENCE.fullmatch(inner)
    if match is None:
        if not strict:
            return None
        raise TemplateError(
            f"template {{{{ {inner} }}}}: expected NAME, NAME.PATH or $VARIABLE, "
            "optionally followed by :FORMAT",
            key,
        )
    return Reference(match.group("path"), match.group("spec"))


def references(value: Any) -> Iterator[Reference]:
    """The well-formed templates in ``value`` (strings inside lists and tables too)."""
    if isinstance(value, str):
        for match in _SCAN.finditer(value):
            found = _parse(match.group(1), "", strict=False)
            if found is not None:
                yield found
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from references(item)


def render(value: Any, resolve: Resolver, key: str = "", *, strict: bool = True) -> Any:
    """``value`` with its templates filled in by ``resolve`` (strings in lists and tables too).

    ``key`` names ``value`` in errors; list items add ``[i]``, table entries ``.name``. With
    ``strict=False`` a malformed template is left as written instead of raising.
    """
    if isinstance(value, list | tuple):
        return [render(item, resolve, f"{key}[{i}]", strict=strict) for i, item in enumerate(value)]
    if isinstance(value, Mapping):
        return {
            name: render(item, resolve, f"{key}.{name}" if key else str(name), strict=strict)
            for name, item in value.items()
        }
    if not isinstance(value, str) or "{{" not in value:
        return value
    whole = _SCAN.fullmatch(value.strip())
    if whole is not None:
        reference = _parse(whole.group(1), key, strict)
        if reference is not None and reference.spec is None:
            found = resolve(reference, key)
            return value if found is LEAVE else found

    def substitute(match: re.Match[str]) -> str:
        reference = _parse(match.group(1), key, strict)
        if reference is None:
            return match.group(0)
        found = resolve(reference, key)
        if found is LEAVE:
            return match.group(0)
        _check_spec(reference, key)
        try:
            return format(found, reference.spec or "")
        except (ValueError, TypeError) as exc:
            raise TemplateError(
                f"cannot format {reference.text} (value {found!r}): {exc}", key
            ) from None

    return _SCAN.sub(substitute, value)


def _check_spec(reference: Reference, key: str) -> None:
    """A TemplateError when the spec's width or precision is over :data:`MAX_FORMAT_NUMBER`."""
    for number in _SPEC_NUMBER.finditer(reference.spec or ""):
        digits = number.group(2).lstrip("0") or "0"
        if len(digits) > len(str(MAX_FORMAT_NUMBER)) or int(digits) > MAX_FORMAT_NUMBER:
            what = "precision" if number.group(1) else "width"
            raise TemplateError(
                f"template {reference.text}: format {what} {number.group(2)} is over "
                f"{MAX_FORMAT_NUMBER}",
                key,
            )
