"""Specification of secret redaction for run records and logs."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lute_async.redaction import (
    MAX_REDACTION_DEPTH,
    MIN_SECRET_LENGTH,
    REDACTED,
    Redactor,
    is_secret_key,
    looks_like_token,
    redact_argv,
    redact_env,
    redact_mapping,
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
        "SSHPASS",
        "GH_PAT",
        "GITHUB_PAT",
        "AUTH_JWT",
        "jwt",
        "SENTRY_DSN",
        "DATABASE_DSN",
        "SECRETKEY",
        "DJANGO_SECRETKEY",
        "PRIVATEKEY",
        "ACCESSKEY",
        "AWS_ACCESSKEY",
        "PGPASS",
        "api-token",
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
        "PASSWD_FILE",
        "PASSWORD_FILE",
        "PGPASSFILE",
        "TOKEN_PATH",
        "SSH_KEY_PATH",
        "SSH_AUTH_SOCK",
        "SSH_ASKPASS",
        "GIT_ASKPASS",
        "password-stdin",
        "PATTERN",
        "COMPAT_MODE",
        "DISPATCH_QUEUE",
        "SPATIAL_DIMS",
        "PYTHONPATH",
        "LUTE_ASYNC_PARAMS_FILE",
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


# URL credentials


def test_a_lone_user_part_is_masked_as_a_token() -> None:
    text = "git clone https://ghp_abcdef0123456789@github.com/me/repo"
    assert redact_url_credentials(text) == f"git clone https://{REDACTED}@github.com/me/repo"


def test_a_user_part_that_looks_like_a_token_is_masked_with_its_password() -> None:
    token = "ghp_0123456789abcdefghijKLMN"
    text = f"https://{token}:x-oauth-basic@github.com/x"
    assert redact_url_credentials(text) == f"https://{REDACTED}:{REDACTED}@github.com/x"


def test_a_password_containing_an_at_sign_is_masked_whole() -> None:
    assert redact_url_credentials("mysql://me:p@ss@db/x") == f"mysql://me:{REDACTED}@db/x"


@pytest.mark.parametrize(
    "text",
    [
        "ssh://git@github.com/me/repo",
        "git+ssh://git@host/r",
        "sftp://me@files.example/x",
        "mail me@example.org",
        "https://example.org/path?who=me@example.org",
        "https://host/p#a@b",
    ],
)
def test_login_names_and_at_signs_outside_the_authority_are_kept(text: str) -> None:
    assert redact_url_credentials(text) == text


def test_looks_like_token_needs_length_letters_and_digits() -> None:
    assert looks_like_token("ghp_0123456789abcdefghij")
    assert looks_like_token("glpat-xxxxxxxxxxxxxxxx1234")
    assert not looks_like_token("jenkins-builder-user")
    assert not looks_like_token("abc123")
    assert not looks_like_token("01234567890123456789012")


# Arguments


def test_redact_argv_masks_values_of_secret_flags() -> None:
    argv = [
        "tool",
        "--password",
        "hunter2",
        "--password=hunter2",
        "--token",
        "X",
        "--api-token=X",
        "-token",
        "Y",
        "--db-password=a=b",
        "--verbose",
        "out",
    ]
    assert redact_argv(argv) == [
        "tool",
        "--password",
        REDACTED,
        f"--password={REDACTED}",
        "--token",
        REDACTED,
        f"--api-token={REDACTED}",
        "-token",
        REDACTED,
        f"--db-password={REDACTED}",
        "--verbose",
        "out",
    ]


def test_redact_argv_leaves_single_letter_flags_alone() -> None:
    assert redact_argv(["ssh", "-p", "2222", "-l", "me", "host"]) == [
        "ssh",
        "-p",
        "2222",
        "-l",
        "me",
        "host",
    ]


def test_a_secret_flag_followed_by_an_option_masks_that_options_value() -> None:
    assert redact_argv(["--password", "--token", "T", "x"]) == [
        "--password",
        "--token",
        REDACTED,
        "x",
    ]


def test_a_secret_flag_last_on_the_line_is_kept() -> None:
    assert redact_argv(["login", "--token"]) == ["login", "--token"]


def test_location_flags_keep_their_values() -> None:
    argv = ["docker", "login", "--password-stdin", "registry.example", "--token-file=/run/tok"]
    assert redact_argv(argv) == argv


def test_a_rendered_env_template_in_a_flag_is_masked() -> None:
    # ``--token={{ $API_TOKEN }}`` as given, and once the template has been filled in.
    assert redact_argv(["--token={{ $API_TOKEN }}"]) == [f"--token={REDACTED}"]
    assert redact_argv(["--token=tok-0123456789"]) == [f"--token={REDACTED}"]


def test_redact_argv_masks_secret_assignments_inside_an_argument() -> None:
    argv = [
        "env",
        "PASSWORD=hunter2",
        "sh",
        "-c",
        "API_TOKEN=abc ./run --fast HOME=/h",
        'DB_PASS="two words" go',
        "--define=db.password=x",
        "THRESHOLD=3",
    ]
    assert redact_argv(argv) == [
        "env",
        f"PASSWORD={REDACTED}",
        "sh",
        "-c",
        f"API_TOKEN={REDACTED} ./run --fast HOME=/h",
        f"DB_PASS={REDACTED} go",
        f"--define=db.password={REDACTED}",
        "THRESHOLD=3",
    ]


def test_redact_argv_masks_secret_headers() -> None:
    argv = [
        "curl",
        "-H",
        "Authorization: Bearer abc",
        "--header=X-Api-Key: k",
        "-H",
        "Accept: text/plain",
    ]
    assert redact_argv(argv) == [
        "curl",
        "-H",
        f"Authorization: {REDACTED}",
        f"--header=X-Api-Key: {REDACTED}",
        "-H",
        "Accept: text/plain",
    ]


def test_redact_argv_masks_url_credentials_and_known_secret_values() -> None:
    argv = [
        "git",
        "clone",
        "https://ghp_abcdef0123@github.com/r",
        "--message",
        "use tok-0123456789 now",
        "postgres://me:pw@db/x",
    ]
    assert redact_argv(argv, ["tok-0123456789"]) == [
        "git",
        "clone",
        f"https://{REDACTED}@github.com/r",
        "--message",
        f"use {REDACTED} now",
        f"postgres://me:{REDACTED}@db/x",
    ]


def test_redact_argv_returns_a_new_list() -> None:
    argv = ["a", "--token", "t"]
    assert redact_argv(argv) is not argv and argv == ["a", "--token", "t"]


# Mappings


def test_redact_mapping_masks_values_under_secret_keys_at_any_depth() -> None:
    params = {
        "api_token": "abc",
        "n": 3,
        "db": {"host": "h", "password": {"nested": "x"}},
        "items": [{"secret": 5}, ("keep", {"auth": ["a"]})],
        "flag": True,
    }
    assert redact_mapping(params) == {
        "api_token": REDACTED,
        "n": 3,
        "db": {"host": "h", "password": REDACTED},
        "items": [{"secret": REDACTED}, ("keep", {"auth": REDACTED})],
        "flag": True,
    }


def test_redact_mapping_keeps_none_and_booleans_under_secret_keys() -> None:
    assert redact_mapping({"token": None, "use_auth": False}) == {"token": None, "use_auth": False}


def test_redact_mapping_redacts_strings_and_keys() -> None:
    data = {"url": "https://u:pw@h/x", "msg": "bad tok-0123456789", "tok-0123456789": 1}
    assert redact_mapping(data, ["tok-0123456789"]) == {
        "url": f"https://u:{REDACTED}@h/x",
        "msg": f"bad {REDACTED}",
        REDACTED: 1,
    }


def test_redact_mapping_does_not_change_its_input() -> None:
    data = {"token": "t", "inner": {"password": "p"}}
    redact_mapping(data)
    assert data == {"token": "t", "inner": {"password": "p"}}


def test_redact_mapping_replaces_containers_beyond_the_depth_bound() -> None:
    deep: dict[str, object] = {}
    inner = deep
    for _ in range(10 * MAX_REDACTION_DEPTH):
        inner["a"] = {"b": [1]}
        inner = inner["a"]  # type: ignore[assignment]
    redacted = redact_mapping(deep)
    depth = 0
    node: object = redacted
    while isinstance(node, dict):
        node, depth = node["a"], depth + 1
    assert node == REDACTED and depth <= MAX_REDACTION_DEPTH


def test_redact_mapping_survives_a_nesting_deeper_than_the_stack() -> None:
    hostile: list[object] = []
    for _ in range(100_000):
        hostile = [hostile]
    assert redact_mapping({"x": hostile})["x"][0] is not None


def test_redact_mapping_survives_a_cycle() -> None:
    cyclic: dict[str, object] = {"k": 1}
    cyclic["self"] = cyclic
    assert redact_mapping(cyclic)["k"] == 1


# Redactor


def test_redactor_knows_the_env_secrets_and_extra_ones() -> None:
    env = {"API_TOKEN": "tok-0123456789", "HOME": "/home/me", "SSHPASS": "hunter22"}
    redactor = Redactor(env, secrets=["extra-secret-1"])
    assert set(redactor.secrets) == {"tok-0123456789", "hunter22", "extra-secret-1"}
    line = "tok-0123456789 hunter22 extra-secret-1 https://ghp_x0123456789@h/"
    assert redactor.text(line) == f"{REDACTED} {REDACTED} {REDACTED} https://{REDACTED}@h/"


def test_redactor_env_masks_secret_values_under_ordinary_keys() -> None:
    env = {"API_TOKEN": "tok-0123456789", "CMD": "login tok-0123456789", "HOME": "/home/me"}
    assert Redactor(env).env() == {
        "API_TOKEN": REDACTED,
        "CMD": f"login {REDACTED}",
        "HOME": "/home/me",
    }
    assert Redactor(env).env({"OTHER": "x tok-0123456789"}) == {"OTHER": f"x {REDACTED}"}


def test_redactor_argv_and_mapping_use_the_env_secrets() -> None:
    redactor = Redactor({"GH_PAT": "ghp_0123456789"})
    assert redactor.argv(["push", "ghp_0123456789"]) == ["push", REDACTED]
    assert redactor.mapping({"note": "ghp_0123456789"}) == {"note": REDACTED}


def test_redactor_without_secrets_changes_nothing_ordinary() -> None:
    redactor = Redactor()
    line = "step 3/10: loss=0.25 user@example.org"
    assert redactor.text(line) == line
    assert redactor.env({"HOME": "/h"}) == {"HOME": "/h"}
