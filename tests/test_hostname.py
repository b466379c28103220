"""The host name and environment read once: still right after the environment changes."""

from __future__ import annotations

import os
import socket

import pytest

from lute_async.hostname import environment, hostname


def test_hostname_is_the_host_name() -> None:
    assert hostname() == socket.gethostname()


def test_environment_follows_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    assert environment() == dict(os.environ)
    monkeypatch.setenv("LUTE_ASYNC_TEST_ENV_CACHE", "one")
    assert environment()["LUTE_ASYNC_TEST_ENV_CACHE"] == "one"
    monkeypatch.setenv("LUTE_ASYNC_TEST_ENV_CACHE", "two")  # same keys, another value
    assert environment()["LUTE_ASYNC_TEST_ENV_CACHE"] == "two"
    monkeypatch.delenv("LUTE_ASYNC_TEST_ENV_CACHE")
    assert "LUTE_ASYNC_TEST_ENV_CACHE" not in environment()


def test_environment_is_a_copy_each_time() -> None:
    first = environment()
    first["LUTE_ASYNC_TEST_ENV_CACHE"] = "changed by the caller"
    assert "LUTE_ASYNC_TEST_ENV_CACHE" not in environment()
    assert "LUTE_ASYNC_TEST_ENV_CACHE" not in os.environ
