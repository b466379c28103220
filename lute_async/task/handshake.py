"""The task's side of the TCP hello (protocol v2): read the executor's nonce, answer it with a
MAC of the run's secret. Loaded only by tasks that report over TCP."""

from __future__ import annotations

from lute_async.wire import CHALLENGE_BYTES, CHALLENGE_PREFIX, TCP_PROTOCOL_VERSION, hello_mac

TYPE_CHECKING = False  # typing costs every task start milliseconds
if TYPE_CHECKING:
    import socket
    from typing import Any

#: Seconds a task waits for the executor's challenge: far past any executor's hello timeout,
#: so only an executor that will never send one (not lute-async, or one older than v2) hits it.
CHALLENGE_WAIT = 60.0


def read_nonce(sock: socket.socket) -> bytes:
    """The nonce of the challenge the executor sends first on ``sock``. When none comes (the
    connection ends, times out, or sends something else) ``sock`` is closed and OSError raised."""
    received = bytearray()
    try:
        sock.settimeout(CHALLENGE_WAIT)
        while len(received) < CHALLENGE_BYTES:
            chunk = sock.recv(CHALLENGE_BYTES - len(received))
            if not chunk:
                raise ConnectionError(
                    "the executor closed the connection before sending its protocol "
                    f"v{TCP_PROTOCOL_VERSION} challenge (is its lute-async older than the task's?)"
                )
            received += chunk
        if not received.startswith(CHALLENGE_PREFIX):
            raise ConnectionError(
                f"the executor's first frame is no protocol v{TCP_PROTOCOL_VERSION} challenge"
            )
        sock.settimeout(None)
    except OSError:
        sock.close()
        raise
    return bytes(received[len(CHALLENGE_PREFIX) :])


def tcp_hello(nonce: bytes, hello: dict[str, Any]) -> dict[str, Any]:
    """The v2 hello answering ``nonce`` for the sender a v1 ``hello`` names: the same run, pid
    and rank, and a MAC of its secret instead of the secret."""
    run, pid, rank, secret = hello["run"], hello["pid"], hello["rank"], hello["secret"]
    mac = b"" if secret is None else hello_mac(secret, nonce, run, pid, rank)
    return {"v": TCP_PROTOCOL_VERSION, "run": run, "pid": pid, "rank": rank, "mac": mac}
