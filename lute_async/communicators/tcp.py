"""TcpCommunicator: a TCP server for ranks on other nodes. Every connection gets a fresh nonce
first and must answer it, within ``hello_timeout``, with a protocol v2 hello whose MAC proves
the run's secret (:mod:`lute_async.communicators.challenge`)."""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

from lute_async.communicators.address import listen_address
from lute_async.communicators.challenge import new_nonce, parse_tcp_hello, send_challenge
from lute_async.communicators.listener import (
    MAX_PENDING_HELLOS,
    Handshake,
    ListeningCommunicator,
)
from lute_async.errors import LaunchError
from lute_async.wire import ENV_TCP


class TcpCommunicator(ListeningCommunicator):
    """TCP server for one run. The secret travels in the child's environment, never in logs
    or on the network."""

    kind = "tcp"

    def __init__(
        self,
        host: str | None = None,
        port: int = 0,
        *,
        advertise: str | None = None,
        hello_timeout: float = 10.0,
        max_pending_hellos: int = MAX_PENDING_HELLOS,
    ) -> None:
        super().__init__(max_pending_hellos=max_pending_hellos)
        self.host = host
        self.port = port
        self.advertise = advertise
        self.hello_timeout = hello_timeout
        self.address: tuple[str, int] | None = None

    def _bind(self) -> socket.socket:
        """Listen on the one address :func:`listen_address` chooses (never every interface)."""
        host, chosen_by = listen_address(self.host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self.port))
        except OSError as exc:
            sock.close()
            raise LaunchError(
                f"cannot listen for TCP on {host} port {self.port} ({chosen_by}): {exc}"
            ) from None
        self.address = (host, sock.getsockname()[1])
        return sock

    def _handshake(self, conn: socket.socket) -> Handshake:
        """The challenge: a fresh nonce sent first, a hello whose MAC answers it."""
        channel = self._channel
        assert channel is not None
        nonce = new_nonce()
        check = partial(parse_tcp_hello, run_id=channel.run_id, secret=channel.secret, nonce=nonce)
        return check, partial(send_challenge, conn, nonce)

    def _child_env(self) -> dict[str, str]:
        assert self.address is not None
        host = self.advertise or self.address[0]
        return {
            ENV_TCP: f"[{host}]:{self.address[1]}" if ":" in host else f"{host}:{self.address[1]}"
        }

    def describe(self) -> dict[str, Any]:
        host, port = self.address if self.address else (self.host, self.port)
        return {"kind": self.kind, "host": host, "port": port}
