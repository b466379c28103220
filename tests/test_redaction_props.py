"""Properties of secret redaction: no known secret survives, ordinary data passes unchanged."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lute_async.redaction import (
    LOCATION_WORDS,
    MIN_SECRET_LENGTH,
    REDACTED,
    SECRET_WORDS,
    Redactor,
    is_secret_key,
    redact_argv,
    redact_env,
    redact_mapping,
    redact_text,
    secret_values,
)

secrets = st.text(min_size=MIN_SECRET_LENGTH, max_size=16).filter(lambda s: "*" not in s)
words = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8)
json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=10)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@given(st.lists(secrets, min_size=1, max_size=4), st.lists(st.text(max_size=24), max_size=6))
def test_no_known_secret_survives_in_any_argument(known: list[str], around: list[str]) -> None:
    argv = [piece + known[i % len(known)] + piece for i, piece in enumerate(around)]
    for arg in Redactor(secrets=known).argv([*argv, *known]):
        assert all(secret not in arg for secret in known)


@given(secrets, st.text(max_size=40))
def test_redacting_text_is_idempotent(secret: str, text: str) -> None:
    redactor = Redactor(secrets=[secret])
    once = redactor.text(text + secret + text)
    assert secret not in once
    assert redactor.text(once) == once


@given(st.lists(st.text("abcXYZ0189 ./_,", max_size=20), max_size=8))
def test_ordinary_arguments_pass_unchanged(argv: list[str]) -> None:
    assert redact_argv(argv) == argv


def _strings(value: Any) -> list[str]:
    """Every string in *value*, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*_strings(key), *_strings(item))]
    if isinstance(value, list | tuple):
        return [s for item in value for s in _strings(item)]
    return []


@given(json_values, secrets)
def test_values_under_secret_keys_are_masked_whatever_they_are(value: Any, secret: str) -> None:
    stored = redact_mapping({"params": value, "api_token": value, "nested": [{"password": secret}]})
    assert stored["api_token"] == (value if value is None or isinstance(value, bool) else REDACTED)
    assert stored["nested"] == [{"password": REDACTED}]


@given(json_values, secrets, st.text(max_size=6))
def test_no_known_secret_survives_in_a_mapping(value: Any, secret: str, around: str) -> None:
    data = {"params": value, around + secret: [around + secret + around, {"k": secret}]}
    assert all(secret not in s for s in _strings(redact_mapping(data, [secret])))


@given(st.dictionaries(words, json_scalars, max_size=6))
def test_ordinary_flat_mappings_pass_unchanged(data: dict[str, Any]) -> None:
    ordinary = {key: value for key, value in data.items() if not is_secret_key(key)}
    plain = {k: v for k, v in ordinary.items() if not isinstance(v, str) or "@" not in v}
    assert redact_mapping(plain) == plain


@given(st.lists(words, max_size=3), st.sampled_from(sorted(SECRET_WORDS)))
def test_a_secret_word_makes_a_key_secret_unless_a_location_follows(
    prefix: list[str], secret_word: str
) -> None:
    key = "_".join([*prefix, secret_word]).upper()
    assert is_secret_key(key)
    for location in LOCATION_WORDS:
        assert not is_secret_key(f"{key}_{location.upper()}")


@given(st.integers(min_value=0, max_value=5_000))
def test_any_nesting_depth_is_redacted_without_error(depth: int) -> None:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": [value]}
    stored = json.dumps(redact_mapping({"v": value}))
    assert ("leaf" in stored) != (REDACTED in stored)  # kept whole, or cut at the bound


env_keys = st.sampled_from(["HOME", "PATH", "API_TOKEN", "DB_PASSWORD", "PASSWD_FILE", "X"])
env_values = st.sampled_from(
    ["", "plain", REDACTED, "https://me:pw@host/x", "tok-0123456789", "x tok-0123456789 y"]
) | st.text(max_size=12)


@given(
    st.dictionaries(env_keys | st.text(max_size=8), env_values, max_size=6),
    st.lists(secrets | st.just("tok-0123456789"), max_size=3),
)
def test_redactor_env_is_redact_env_then_the_known_secrets_masked(
    env: dict[str, str], known: list[str]
) -> None:
    redactor = Redactor(env, known)
    expected = {key: redact_text(value, redactor.secrets) for key, value in redact_env(env).items()}
    assert redactor.env() == expected
    assert list(secret_values(env)) == [
        value for key, value in env.items() if is_secret_key(key) and value != REDACTED
    ]
