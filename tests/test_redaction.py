"""Specification of secret redaction for run records and logs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lute_async.redaction import (
    MIN_SECRET_LENGTH,
    REDACTED,
    is_secret_key,
    redact_env,
    redact_text,
    redact_url_credentials,
    secret_values,
)


@pytest.mark.parametrize(
    "key",
    [
        "TOKEN",
        "GITHUB_TOKEN",
        "HF_TOKEN",
        "AWS_SECRET_ACCESS_KEY",
        "API_KEY",
        "SSH_KEY",
        "KEY",
        "DB_PASSWORD",
        "PGPASSWORD",
        "MYSQL_PWD",
        "LDAP_PASSWD",
        "SMTP_PASS",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "X-Auth-Token",
        "db.password",
        "apiKey",
        "APIKey",
        "awsSecretAccessKey",
        "client_secret",
        "LUTE_ASYNC_SECRET",
        "session-cookie",
        "githubtoken",
    ],
)
def test_keys_naming_a_secret_are_secret(key: str) -> None:
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "PATH",
        "HOME",
        "PWD",
        "OLDPWD",
        "KEYBOARD",
        "MONKEY",
        "HOTKEYS",
        "BYPASS_PROXY",
        "TOKENIZERS_PARALLELISM",
        "XDG_SESSION_ID",
        "SESSION_MANAGER",
        "OMP_NUM_THREADS",
        "SLURM_JOB_ID",
        "",
    ],
)
def test_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key)


def test_secret_keys_are_recognised_in_any_case() -> None:
    assert is_secret_key("github_token")
    assert is_secret_key("Github_Token")


def test_redact_env_masks_secret_values_and_keeps_the_rest() -> None:
    env = {"API_KEY": "abc123", "HOME": "/home/me", "DB_PASSWORD": "hunter22"}
    assert redact_env(env) == {"API_KEY": REDACTED, "HOME": "/home/me", "DB_PASSWORD": REDACTED}


def test_redact_env_returns_a_copy() -> None:
    env = {"API_KEY": "abc123"}
    redacted = redact_env(env)
    assert env == {"API_KEY": "abc123"}
    assert redacted is not env


def test_redact_env_masks_passwords_in_urls_under_ordinary_keys() -> None:
    env = {"DATABASE_URL": "postgres://me:hunter2@db.example/x", "PROXY": "http://host:8080/p@q"}
    assert redact_env(env) == {
        "DATABASE_URL": f"postgres://me:{REDACTED}@db.example/x",
        "PROXY": "http://host:8080/p@q",
    }


def test_redact_env_is_idempotent() -> None:
    env = {"API_KEY": "abc123", "DATABASE_URL": "mysql://u:pw@h/d", "X": "y"}
    assert redact_env(redact_env(env)) == redact_env(env)


def test_redact_url_credentials_keeps_urls_without_a_password() -> None:
    text = "see https://example.org/a:b@c and ssh://user@host"
    assert redact_url_credentials(text) == text


def test_secret_values_lists_values_of_secret_keys_only() -> None:
    env = {"API_KEY": "abc123", "HOME": "/home/me", "TOKEN": REDACTED}
    assert secret_values(env) == ["abc123"]


def test_redact_text_replaces_every_occurrence_of_a_secret() -> None:
    text = "token=s3cr3t-value; again s3cr3t-value."
    assert redact_text(text, ["s3cr3t-value"]) == f"token={REDACTED}; again {REDACTED}."


def test_redact_text_ignores_secrets_shorter_than_the_minimum() -> None:
    short = "a" * (MIN_SECRET_LENGTH - 1)
    assert redact_text(f"x {short} y", [short]) == f"x {short} y"


def test_redact_text_masks_a_secret_containing_another_whole() -> None:
    assert redact_text("key: abcdef123456", ["abcdef", "abcdef123456"]) == f"key: {REDACTED}"


def test_redact_text_treats_secrets_literally_not_as_patterns() -> None:
    assert redact_text("a.b*c+d(e) and axbbcd", ["a.b*c+d(e)"]) == f"{REDACTED} and axbbcd"


def test_redact_text_without_secrets_returns_text_unchanged() -> None:
    assert redact_text("nothing to hide", []) == "nothing to hide"


@given(
    secret=st.text(min_size=MIN_SECRET_LENGTH, max_size=20).filter(lambda s: "*" not in s),
    before=st.text(max_size=20),
    after=st.text(max_size=20),
)
def test_redact_text_never_leaves_a_secret_in_the_text(
    secret: str, before: str, after: str
) -> None:
    assert secret not in redact_text(before + secret + after, [secret])


@given(st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=8))
def test_redact_env_keeps_keys_and_masks_exactly_the_secret_keys(env: dict[str, str]) -> None:
    redacted = redact_env(env)
    assert redacted.keys() == env.keys()
    for key, value in redacted.items():
        if is_secret_key(key):
            assert value == REDACTED
