"""Listening sockets with ``SO_REUSEPORT``, for backends whose I/O library cannot set it itself (trio).

``ServerOptions.reuse_port`` lets several processes listen on one port (``smtpproto serve --workers``);
asyncio, anyio and the blocking backend pass it to their own listen calls.
"""

from __future__ import annotations

import socket

__all__ = ["reuse_port_sockets"]


def reuse_port_sockets(host: str | None, port: int, backlog: int) -> list[socket.socket]:
    """Non-blocking TCP sockets listening on every address of ``host``:``port``, with ``SO_REUSEPORT``.

    Blocking (it resolves ``host``): call it from a worker thread in an event loop.
    """
    seen: set[tuple[int, object]] = set()
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                # As trio and asyncio do: the IPv6 socket must not also claim the IPv4 port.
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets
