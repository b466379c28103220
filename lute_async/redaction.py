"""Keep secrets out of run records and logs: spot secret names, mask their values.

Secret names. A key (env variable, param, flag) is split into lower-case *words* on any
non-alphanumeric character and at camel-case boundaries. It is secret when one of its words is in
:data:`SECRET_WORDS` or ends with one of :data:`SECRET_SUFFIXES` (glued words: ``DBPASSWORD``,
``SECRETKEY``, ``SENTRY_DSN``), or it is ``pwd`` beside another word (``MYSQL_PWD``, not ``PWD``),
unless its last word is in :data:`LOCATION_WORDS`: ``PASSWD_FILE``, ``TOKEN_PATH``,
``SSH_AUTH_SOCK`` and ``--password-stdin`` say where a secret lives, not what it is. ``key`` and
``pass`` count only as whole words (``MONKEY``, ``BYPASS``), and so does ``pat`` (``GH_PAT``, not
``PATH``); ``session`` is not a secret word (``XDG_SESSION_ID``); ``TOKENIZERS_PARALLELISM`` is
one word, not ``token``.

URLs. In ``scheme://userinfo@host`` the password of ``user:password`` is masked (and so is a
``password=`` parameter, libpq's ``postgresql://host/db?password=x``); the user is
masked too when it looks like a token (:func:`looks_like_token`: ``TOKEN:x-oauth-basic@``). A
lone user (``https://TOKEN@host``) is the credential for most services and is masked, except
for the key-login schemes of :data:`LOGIN_NAME_SCHEMES` (``ssh://git@host`` is kept).

Arguments (:func:`redact_argv`). ``--name=VALUE`` and ``-name=VALUE`` mask the whole value when
the name is secret; ``--name VALUE`` and ``-name VALUE`` mask the next argument unless it starts
with ``--`` (then it is an option of its own). Single-letter flags (``-p``) are never judged:
``-p`` is a password for mysql but a port for ssh. Inside any argument, ``NAME=VALUE`` words with
a secret name (``sh -c "TOKEN=x cmd"``) mask VALUE up to the next blank (or its closing quote),
and a whole argument (or flag value) ``Name: value`` with a secret name (curl's
``Authorization: Bearer x``) masks the value. Then every argument goes through
:meth:`Redactor.text`.

Free text (:meth:`Redactor.text`, log lines, error messages) is only cleared of known secret
values (at least :data:`MIN_SECRET_LENGTH` long) and URL credentials: ``key=value`` words in logs
are too often harmless (``tokens=512``) to be rewritten.

Mappings (:func:`redact_mapping`: params, results, errors) mask the whole value under a secret key
(``None`` and booleans kept: they hide nothing), recurse into mappings, lists and tuples, and pass
strings (keys too) through :meth:`Redactor.text`. A container nested deeper than
:data:`MAX_REDACTION_DEPTH` cannot be checked and becomes :data:`REDACTED` (cycles end there too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any

__all__ = [
    "LOCATION_WORDS",
    "LOGIN_NAME_SCHEMES",
    "MAX_REDACTION_DEPTH",
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "SECRET_SUFFIXES",
    "SECRET_WORDS",
    "Redactor",
    "is_secret_key",
    "looks_like_token",
    "redact_argv",
    "redact_env",
    "redact_mapping",
    "redact_text",
    "redact_url_credentials",
    "secret_values",
]

REDACTED = "***"
"""What a secret value is replaced with."""

MIN_SECRET_LENGTH = 6
"""Shorter values are not searched for in free text: masking ``"1"`` or ``"yes"`` everywhere
would mangle logs while protecting nothing."""

MAX_REDACTION_DEPTH = 32
"""Containers nested deeper than this in a redacted mapping are replaced whole by
:data:`REDACTED`, so a hostile deeply nested value cannot exhaust the stack."""

SECRET_WORDS: frozenset[str] = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "creds",
        "key",
        "keys",
        "pass",
        "passphrase",
        "passwd",
        "password",
        "passwords",
        "pat",
        "pgpass",
        "secret",
        "secrets",
        "sshpass",
        "token",
        "tokens",
    }
)
"""Lower-case words that make a key secret when they appear as a whole word of it."""

SECRET_SUFFIXES: tuple[str, ...] = (
    "accesskey",
    "apikey",
    "credentials",
    "dsn",
    "jwt",
    "passphrase",
    "passwd",
    "password",
    "privatekey",
    "secret",
    "secretkey",
    "token",
)
"""Lower-case endings that make a word secret even when glued to another word (``DBPASSWORD``).
``key``, ``pass`` and ``pat`` are left out on purpose: ``monkey``, ``bypass``, ``compat``."""

LOCATION_WORDS: frozenset[str] = frozenset(
    {"dir", "fd", "file", "filename", "path", "sock", "socket", "stdin"}
)
"""A key ending with one of these words names where a secret is, not the secret."""

LOGIN_NAME_SCHEMES: frozenset[str] = frozenset(
    {"git", "git+ssh", "rsync", "scp", "sftp", "ssh", "ssh+git"}
)
"""URL schemes whose lone user part is a login name (``ssh://git@host``), kept in clear."""

_SECRET_BESIDE_OTHER_WORDS = frozenset({"pwd"})

_NON_ALNUM = re.compile(r"[^0-9A-Za-z]+")
# Camel-case words: an acronym before a capitalised word (``API`` in ``APIKey``), a capitalised or
# lower-case word, a trailing acronym, or digits.
_CAMEL_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# ``scheme://userinfo@``: the scheme starts a word; the userinfo runs to the authority's last
# ``@`` (it may hold unencoded ``@``); the authority ends at ``/ ? #``, a blank or a quote.
_URL_USERINFO = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*)://([^/?#\s\"'<>]*)@")
# A password given as a URL parameter (libpq's ``postgresql://host/db?password=x``, and its
# ``sslpassword``): the value runs to the next ``&``, ``#``, blank or quote.
_URL_PASSWORD_PARAM = re.compile(
    r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*:[^\s\"'<>]*?[?&](?:ssl)?password=)"
    r"([^&#\s\"'<>]*)",
    re.IGNORECASE,
)
_TOKEN_LIKE = re.compile(r"[A-Za-z0-9_\-]{20,}")
# A bare flag judged by name: ``--name`` or ``-name`` (two letters or more).
_BARE_FLAG = re.compile(r"--([A-Za-z][\w.-]*)|-([A-Za-z][\w.-]+)")
# ``--name=VALUE`` / ``-name=VALUE``: the value is the rest of the argument.
_FLAG_ASSIGNMENT = re.compile(r"(--?[A-Za-z][\w.-]*)=(.+)", re.DOTALL)
# ``NAME=VALUE`` words inside an argument: VALUE is quoted, or runs to the next blank.
_WORD_ASSIGNMENT = re.compile(r"(?<![\w.-])([A-Za-z_][\w.-]*)=(\"[^\"]*\"|'[^']*'|[^\s\"']\S*)")
# A header-like argument ``Name: value``.
_HEADER = re.compile(r"([A-Za-z][\w-]*)(\s*:\s*)(.+)", re.DOTALL)


def _words(key: str) -> list[str]:
    """Split *key* into lower-case words on separators and camel-case boundaries."""
    return [word.lower() for chunk in _NON_ALNUM.split(key) for word in _CAMEL_WORD.findall(chunk)]


@lru_cache(maxsize=4096)  # every run redacts the whole environment: same keys each time
def is_secret_key(key: str) -> bool:
    """Tell whether an environment variable, parameter or flag named *key* holds a secret."""
    words = _words(key)
    if not words or words[-1] in LOCATION_WORDS:
        return False
    return any(
        word in SECRET_WORDS
        or word.endswith(SECRET_SUFFIXES)
        or (word in _SECRET_BESIDE_OTHER_WORDS and len(words) > 1)
        for word in words
    )


def looks_like_token(text: str) -> bool:
    """Tell whether *text* looks like a generated token: 20 or more letters, digits, ``_`` or
    ``-``, with both a letter and a digit (``ghp_...``, ``glpat-...``; not ``jenkins-builder``)."""
    return (
        _TOKEN_LIKE.fullmatch(text) is not None
        and any(c.isdigit() for c in text)
        and any(c.isalpha() for c in text)
    )


def _mask_userinfo(match: re.Match[str]) -> str:
    scheme, userinfo = match.group(1), match.group(2)
    user, _, password = userinfo.partition(":")
    if password:
        shown_user = REDACTED if looks_like_token(user) else user
        return f"{scheme}://{shown_user}:{REDACTED}@"
    if not user or scheme.lower() in LOGIN_NAME_SCHEMES:
        return match.group(0)
    return f"{scheme}://{REDACTED}@"


def _mask_password_param(match: re.Match[str]) -> str:
    return match.group(1) + (REDACTED if match.group(2) else "")


def redact_url_credentials(text: str) -> str:
    """Mask the credentials of every ``scheme://userinfo@host`` URL in *text* (see the module
    docstring: passwords always, a user part alone or when it looks like a token), and the
    value of a ``password=`` (or ``sslpassword=``) parameter of a URL."""
    if ":" not in text:  # the common case, checked without the regexes
        return text
    if "@" in text and "://" in text:
        text = _URL_USERINFO.sub(_mask_userinfo, text)
    if "assword=" in text or "ASSWORD=" in text:
        text = _URL_PASSWORD_PARAM.sub(_mask_password_param, text)
    return text


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of *env* safe to store: secret keys' values and URL credentials masked.

    Values of secret keys become :data:`REDACTED`; in every other value, credentials embedded in
    a URL (``DATABASE_URL=postgres://me:hunter2@db/x``) are masked in place. Idempotent.
    """
    return {
        key: REDACTED if is_secret_key(key) else redact_url_credentials(value)
        for key, value in env.items()
    }


def secret_values(env: Mapping[str, str]) -> list[str]:
    """List the values of *env*'s secret keys, to pass to :func:`redact_text`."""
    # filter: the cached check called from C (every run asks this of its whole environment)
    return [value for key in filter(is_secret_key, env) if (value := env[key]) != REDACTED]


#: Up to this many secrets are masked by plain substring replacement: compiling a regex costs a
#: run ~0.1 ms (each run has a fresh TCP secret, so no compiled pattern is ever reused).
_REPLACE_AT_MOST = 8


class _SecretMask:
    """Masks known secret values in a text, longest first (a secret containing another is
    masked whole): by ``str.replace`` for a few, by one compiled alternation for many."""

    __slots__ = ("_pattern", "_secrets")

    def __init__(self, candidates: list[str]) -> None:
        self._secrets = candidates
        many = len(candidates) > _REPLACE_AT_MOST
        self._pattern = re.compile("|".join(map(re.escape, candidates))) if many else None

    def sub(self, text: str) -> str:
        if self._pattern is not None:
            return self._pattern.sub(REDACTED, text)
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def _secrets_pattern(secrets: Iterable[str]) -> _SecretMask | None:
    """What masks any searchable secret (at least MIN_SECRET_LENGTH long); None when there is
    none."""
    candidates = sorted(
        {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH},
        key=lambda secret: (-len(secret), secret),
    )
    return _SecretMask(candidates) if candidates else None


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a known secret value in *text* with :data:`REDACTED`.

    Only secrets at least :data:`MIN_SECRET_LENGTH` characters long are searched for. Longer
    secrets are matched first, so a secret that contains another is masked whole. To redact many
    texts with the same secrets, build a :class:`Redactor` once.
    """
    pattern = _secrets_pattern(secrets) if text else None
    return text if pattern is None else pattern.sub(text)


def _mask_word_assignment(match: re.Match[str]) -> str:
    name = match.group(1)
    return f"{name}={REDACTED}" if is_secret_key(name) else match.group(0)


def _mask_header(text: str) -> str:
    """*text* with its value masked when it is a header ``Name: value`` with a secret name."""
    header = _HEADER.fullmatch(text)
    if header is None or not is_secret_key(header.group(1)):
        return text
    return f"{header.group(1)}{header.group(2)}{REDACTED}"


def _mask_assignments(arg: str) -> str:
    """*arg* with the values of secret ``--name=VALUE``, ``NAME=VALUE`` and ``Name: value``
    masked (rules in the module docstring)."""
    flag = _FLAG_ASSIGNMENT.fullmatch(arg)
    if flag is not None:
        if is_secret_key(flag.group(1).lstrip("-")):
            return f"{flag.group(1)}={REDACTED}"
        value = _mask_header(flag.group(2))  # ``--header=Authorization: Bearer x``
        if value != flag.group(2):
            return f"{flag.group(1)}={value}"
    else:
        masked = _mask_header(arg)
        if masked != arg:
            return masked
    if "=" not in arg:
        return arg
    return _WORD_ASSIGNMENT.sub(_mask_word_assignment, arg)


def _takes_secret_value(arg: str) -> bool:
    """Tell whether *arg* is a bare flag with a secret name (``--token``, ``-password``)."""
    flag = _BARE_FLAG.fullmatch(arg)
    return flag is not None and is_secret_key(flag.group(1) or flag.group(2))


class Redactor:
    """Everything a run redacts, built once per run from its environment (and any other known
    secrets): its secret values are compiled into one regex, then reused for every text."""

    __slots__ = ("_env", "_pattern", "secrets")

    def __init__(self, env: Mapping[str, str] | None = None, secrets: Iterable[str] = ()) -> None:
        self._env: dict[str, str] = dict(env or {})
        self.secrets: tuple[str, ...] = tuple(dict.fromkeys([*secret_values(self._env), *secrets]))
        """Known secret values: the env's secret keys' values, then *secrets*."""
        self._pattern = _secrets_pattern(self.secrets)

    def with_secrets(self, *more: str) -> Redactor:
        """A redactor masking what this one does and the secret values ``more`` too."""
        return Redactor(self._env, (*self.secrets, *more))

    def text(self, text: str) -> str:
        """*text* with known secret values and URL credentials masked (a log line, a message)."""
        if self._pattern is not None and text:
            text = self._pattern.sub(text)
        return redact_url_credentials(text)

    def argv(self, argv: Sequence[str]) -> list[str]:
        """A copy of a command's *argv* safe to store (rules in the module docstring)."""
        redacted: list[str] = []
        value_is_secret = False
        for arg in argv:
            if value_is_secret and not arg.startswith("--"):
                redacted.append(REDACTED)
                value_is_secret = False
                continue
            value_is_secret = _takes_secret_value(arg)
            redacted.append(self.text(_mask_assignments(arg)))
        return redacted

    def mapping(self, data: Mapping[Any, Any]) -> dict[Any, Any]:
        """A copy of *data* (params, a result, an error) safe to store: values under secret keys
        masked, strings passed through :meth:`text`, nesting bounded by
        :data:`MAX_REDACTION_DEPTH`."""
        return self._mapping(data, 1)

    def env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """:func:`redact_env` of *env* (default: the run's own) with known secret values masked in
        every other value too (``MYSQL_CMD=mysql -phunter22``)."""
        chosen = self._env if env is None else env
        if self._pattern is None:
            return redact_env(chosen)
        sub, url = self._pattern.sub, redact_url_credentials  # and redact_env's, in one pass
        return {k: REDACTED if is_secret_key(k) else sub(url(v)) for k, v in chosen.items()}

    def _mapping(self, data: Mapping[Any, Any], depth: int) -> dict[Any, Any]:
        return {
            self.text(key) if isinstance(key, str) else key: (
                REDACTED
                if isinstance(key, str)
                and is_secret_key(key)
                and value is not None
                and not isinstance(value, bool)
                else self._value(value, depth)
            )
            for key, value in data.items()
        }

    def _value(self, value: Any, depth: int) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if not isinstance(value, Mapping | list | tuple):
            return value
        if depth >= MAX_REDACTION_DEPTH:
            return REDACTED
        if isinstance(value, Mapping):
            return self._mapping(value, depth + 1)
        items = [self._value(item, depth + 1) for item in value]
        return tuple(items) if isinstance(value, tuple) else items


def redact_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> list[str]:
    """A copy of *argv* safe to store; *secrets* are known secret values (see :class:`Redactor`)."""
    return Redactor(secrets=secrets).argv(argv)


def redact_mapping(data: Mapping[str, Any], secrets: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of *data* safe to store; *secrets* are known secret values (see :class:`Redactor`)."""
    return Redactor(secrets=secrets).mapping(data)
