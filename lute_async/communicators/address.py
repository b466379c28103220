"""Which address the TCP listener binds: one address of this host, never every interface.

The choice, first that is given: the communicator's ``host`` (``Slurm(tcp_host=...)``,
``TcpCommunicator(host)``), then ``$LUTE_ASYNC_TCP_HOST``, then the address this host's name
resolves to. Each may be an IP address, an interface name (``ib0``, ``eth1``: its IPv4
address) or a host name. An interface's address comes from the kernel's ``SIOCGIFADDR`` ioctl
(the stdlib's :mod:`fcntl`): no subprocess on every run's way to start (``ip -j addr``), no
reliance on iproute2 being on a compute node, no extra dependency (psutil). It gives one IPv4
address; for IPv6, name the address itself.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket
import struct

from lute_async.errors import LaunchError

#: The variable naming the address (or interface, or host name) ranks connect to.
ENV_TCP_HOST = "LUTE_ASYNC_TCP_HOST"
#: ``ioctl`` request: an interface's IPv4 address (Linux, <linux/sockios.h>).
SIOCGIFADDR = 0x8915
#: Values meaning "every interface": refused, the listener binds one address.
WILDCARDS = frozenset({"", "*", "0.0.0.0", "::", "[::]"})


def interface_address(name: str) -> str | None:
    """The IPv4 address of network interface ``name``; None when it has none or no such
    interface exists."""
    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), SIOCGIFADDR, request)
        except OSError:  # EADDRNOTAVAIL: no IPv4 address; ENODEV: no such interface
            return None
    return socket.inet_ntoa(answer[20:24])


def host_address() -> str:
    """The address this host's name resolves to, or loopback when it resolves to nothing."""
    try:
        return socket.gethostbyname(socket.gethostname())
    except OSError:
        return "127.0.0.1"


def listen_address(host: str | None) -> tuple[str, str]:
    """The one address to bind for ``host``, else ``$LUTE_ASYNC_TCP_HOST``, else this host's
    name, and what chose it (for messages). A LaunchError names the setting and its value
    when it gives no address."""
    if host is not None:
        return resolve(host, "tcp_host"), f"tcp_host={host!r}"
    chosen = os.environ.get(ENV_TCP_HOST)
    if chosen is not None:
        return resolve(chosen, ENV_TCP_HOST), f"{ENV_TCP_HOST}={chosen!r}"
    return host_address(), f"the host name {socket.gethostname()!r}"


def resolve(value: str, source: str) -> str:
    """``value`` (an address, an interface name or a host name) as an address to bind."""
    value = value.strip()
    if value in WILDCARDS:
        raise LaunchError(
            f"{source}={value!r}: the TCP listener binds one address, not every interface; "
            "name the cluster network's address or interface"
        )
    try:
        return str(ipaddress.ip_address(value.strip("[]")))
    except ValueError:
        pass
    if value in {ifname for _, ifname in socket.if_nameindex()}:
        address = interface_address(value)
        if address is None:
            raise LaunchError(f"{source}={value!r}: the interface has no IPv4 address")
        return address
    try:
        infos = socket.getaddrinfo(value, None, type=socket.SOCK_STREAM)
    except OSError:
        raise LaunchError(
            f"{source}={value!r} is neither an address, an interface of this host nor a host "
            "name that resolves"
        ) from None
    return str(infos[0][4][0])
