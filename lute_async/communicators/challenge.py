"""The executor's side of the TCP hello (protocol v2): a fresh nonce sent first on every
connection, and the hello that must answer it with ``HMAC-SHA256(secret, nonce || sender)``.

A captured hello answers another connection's nonce, so replaying it fails; the secret itself
never crosses the network. A v1 hello (the plain secret) is refused on TCP, naming the version.
"""

from __future__ import annotations

import hmac
import secrets
import socket
from typing import Any

import anyio

from lute_async.errors import HandshakeError
from lute_async.messages import Hello, _brief, parse_hello
from lute_async.wire import (
    CHALLENGE_PREFIX,
    NONCE_BYTES,
    PROTOCOL_VERSION,
    TCP_PROTOCOL_VERSION,
    hello_mac,
)

#: Bytes of an HMAC-SHA256.
MAC_BYTES = 32


def new_nonce() -> bytes:
    """A fresh random nonce for one connection."""
    return secrets.token_bytes(NONCE_BYTES)


async def send_challenge(conn: socket.socket, nonce: bytes) -> None:
    """Send the challenge ``{"v": 2, "nonce": nonce}`` on the non-blocking ``conn``, waiting
    while its buffer is full (the caller bounds the wait); a peer gone already is left to the
    reader, which sees it end."""
    view = memoryview(CHALLENGE_PREFIX + nonce)
    while view:
        try:
            view = view[conn.send(view, socket.MSG_NOSIGNAL) :]
        except BlockingIOError:
            await anyio.wait_writable(conn)
        except OSError:
            return


def parse_tcp_hello(frame: Any, *, run_id: str, secret: str, nonce: bytes) -> Hello:
    """Check a TCP hello: protocol v2, for this run, with a MAC answering ``nonce``."""
    if not isinstance(frame, dict) or frame.get("v") != TCP_PROTOCOL_VERSION:
        if isinstance(frame, dict) and frame.get("v") == PROTOCOL_VERSION:
            raise HandshakeError(_v1_refusal(frame, secret))
        if isinstance(frame, dict) and "secret" in frame:  # never echo a secret into logs
            frame = {**frame, "secret": "***"}
        raise HandshakeError(
            f"expected a protocol v{TCP_PROTOCOL_VERSION} hello frame on TCP, got {_brief(frame)}"
        )
    if "secret" in frame:
        raise HandshakeError(
            f"a protocol v{TCP_PROTOCOL_VERSION} hello carries a MAC, never the secret"
        )
    # The run, pid and rank are checked as on every channel.
    claim = {key: frame.get(key) for key in ("run", "pid", "rank")}
    sender = parse_hello(
        {**claim, "v": PROTOCOL_VERSION}, run_id=run_id, secret=None, require_secret=False
    )
    mac = frame.get("mac")
    if not isinstance(mac, bytes) or len(mac) != MAC_BYTES:
        raise HandshakeError(f"hello frame has no {MAC_BYTES}-byte MAC")
    expected = hello_mac(secret, nonce, run_id, sender.pid, sender.rank)
    if not hmac.compare_digest(mac, expected):
        raise HandshakeError(
            "hello frame has a wrong MAC: it does not answer this connection's nonce with the "
            "run's secret (a wrong secret, or a hello replayed from another connection)"
        )
    return sender


def _v1_refusal(frame: dict[Any, Any], secret: str) -> str:
    """Why a v1 hello is refused on TCP, saying what its secret was (never the secret)."""
    given = frame.get("secret")
    if not isinstance(given, str):
        carried = "it has no secret"
    elif hmac.compare_digest(given.encode(), secret.encode()):
        carried = "it carried the run's secret in plain text over the network"
    else:
        carried = "it has a wrong secret"
    return (
        f"protocol v{PROTOCOL_VERSION} hello refused on TCP ({carried}): TCP needs a protocol "
        f"v{TCP_PROTOCOL_VERSION} hello answering the executor's nonce with a MAC; the task's "
        "lute-async is older than the executor's"
    )
