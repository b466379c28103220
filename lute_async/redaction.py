"""Keep secrets out of run records and logs: spot secret env keys, mask their values.

A key is secret when one of its *words* names a secret. Keys are split into words on any
non-alphanumeric character (``_``, ``-``, ``.``, ``/``, spaces) and at camel-case boundaries, so
``AWS_SECRET_ACCESS_KEY``, ``apiKey``, ``db.password`` and ``X-Auth-Token`` are secret while
``KEYBOARD``, ``MONKEY``, ``TOKENIZERS_PARALLELISM`` and ``PWD`` (the working directory) are not.
A word is secret when it is one of :data:`SECRET_WORDS`, or ends with one of the unambiguous
:data:`SECRET_SUFFIXES` (``GITHUBTOKEN``, ``DBPASSWORD``, ``APIKEY``); ``pwd`` counts only beside
another word (``MYSQL_PWD`` is secret, ``PWD`` is not). ``session`` is deliberately
not a secret word: ``XDG_SESSION_ID`` and ``SESSION_MANAGER`` are ordinary desktop variables,
while ``SESSION_TOKEN`` or ``SESSION_KEY`` are caught by their other word.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "SECRET_SUFFIXES",
    "SECRET_WORDS",
    "is_secret_key",
    "redact_env",
    "redact_text",
    "redact_url_credentials",
    "secret_values",
]

REDACTED = "***"
"""What a secret value is replaced with."""

MIN_SECRET_LENGTH = 6
"""Shorter values are not searched for in free text: masking ``"1"`` or ``"yes"`` everywhere
would mangle logs while protecting nothing."""

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
        "secret",
        "secrets",
        "token",
        "tokens",
    }
)
"""Lower-case words that make a key secret when they appear as a whole word of it."""

SECRET_SUFFIXES: tuple[str, ...] = (
    "apikey",
    "credentials",
    "passphrase",
    "passwd",
    "password",
    "secret",
    "token",
)
"""Lower-case endings that make a word secret even when glued to another word (``DBPASSWORD``).
``key`` and ``pass`` are left out on purpose: ``monkey``, ``hotkey``, ``bypass``, ``compass``."""

_SECRET_BESIDE_OTHER_WORDS = frozenset({"pwd"})

_NON_ALNUM = re.compile(r"[^0-9A-Za-z]+")
# Camel-case words: an acronym before a capitalised word (``API`` in ``APIKey``), a capitalised or
# lower-case word, a trailing acronym, or digits.
_CAMEL_WORD = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
# ``scheme://user:password@`` in a URL; the password is group 2.
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)([^@/\s]+)(@)")


def _words(key: str) -> list[str]:
    """Split *key* into lower-case words on separators and camel-case boundaries."""
    return [word.lower() for chunk in _NON_ALNUM.split(key) for word in _CAMEL_WORD.findall(chunk)]


@lru_cache(maxsize=4096)  # every run redacts the whole environment: same keys each time
def is_secret_key(key: str) -> bool:
    """Tell whether an environment variable or parameter named *key* holds a secret."""
    words = _words(key)
    return any(
        word in SECRET_WORDS
        or word.endswith(SECRET_SUFFIXES)
        or (word in _SECRET_BESIDE_OTHER_WORDS and len(words) > 1)
        for word in words
    )


def redact_url_credentials(text: str) -> str:
    """Mask the password of every ``scheme://user:password@host`` URL in *text*."""
    if "@" not in text:  # the common case, checked without running the regex
        return text
    return _URL_CREDENTIALS.sub(rf"\g<1>{REDACTED}\g<3>", text)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """Return a copy of *env* safe to store: secret keys' values and URL passwords masked.

    Values of secret keys become :data:`REDACTED`; in every other value, a password embedded in
    a URL (``DATABASE_URL=postgres://me:hunter2@db/x``) is masked in place. Idempotent.
    """
    return {
        key: REDACTED if is_secret_key(key) else redact_url_credentials(value)
        for key, value in env.items()
    }


def secret_values(env: Mapping[str, str]) -> list[str]:
    """List the values of *env*'s secret keys, to pass to :func:`redact_text`."""
    return [value for key, value in env.items() if is_secret_key(key) and value != REDACTED]


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every occurrence of a known secret value in *text* with :data:`REDACTED`.

    Only secrets at least :data:`MIN_SECRET_LENGTH` characters long are searched for. Longer
    secrets are matched first, so a secret that contains another is masked whole.
    """
    candidates = sorted(
        {secret for secret in secrets if len(secret) >= MIN_SECRET_LENGTH}, key=len, reverse=True
    )
    if not candidates or not text:
        return text
    pattern = re.compile("|".join(re.escape(secret) for secret in candidates))
    return pattern.sub(REDACTED, text)
