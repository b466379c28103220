"""Communicators: the ways task processes send frames to the executor."""

from __future__ import annotations

from lute_async.communicators.base import ChildSetup, Communicator, RunChannel
from lute_async.communicators.pipe import PipeCommunicator
from lute_async.communicators.shared_socket import SharedSocketCommunicator, SocketHome
from lute_async.communicators.socket import SocketCommunicator
from lute_async.communicators.tcp import TcpCommunicator
from lute_async.errors import ConfigError

KINDS: dict[str, type[Communicator]] = {
    "pipe": PipeCommunicator,
    "socket": SocketCommunicator,
    "tcp": TcpCommunicator,
}

CommunicatorSpec = str | Communicator


def make_communicator(
    spec: CommunicatorSpec, socket_home: SocketHome | None = None
) -> Communicator:
    """A fresh communicator for one run from a kind name (``pipe``, ``socket``, ``tcp``); a
    socket is the one shared listener of ``socket_home`` when one is given."""
    if not isinstance(spec, str):
        return spec
    if spec == "socket" and socket_home is not None:
        return SharedSocketCommunicator(socket_home)
    try:
        return KINDS[spec]()
    except KeyError:
        raise ConfigError(
            f"unknown communicator {spec!r}; choose from {', '.join(sorted(KINDS))}"
        ) from None


__all__ = [
    "KINDS",
    "ChildSetup",
    "Communicator",
    "CommunicatorSpec",
    "PipeCommunicator",
    "RunChannel",
    "SharedSocketCommunicator",
    "SocketCommunicator",
    "SocketHome",
    "TcpCommunicator",
    "make_communicator",
]
