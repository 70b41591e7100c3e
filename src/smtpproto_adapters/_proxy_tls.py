"""The PROXY header in front of implicit TLS: read off the connection without touching the ClientHello.

On a plaintext listener the core reads the PROXY header from its own buffer (``use_proxy`` in
:class:`smtpproto.ServerConfig`) and keeps what follows, since that is SMTP. With implicit TLS what follows
is the client's TLS ClientHello, which belongs to the handshake: a single octet of it taken off the
connection before ``start_tls`` would be lost to the handshake, and the client with it. So for ``secure``
listeners the pump reads the header itself, through ``Transport.receive_before_tls``, asking each time for
no more octets than the header certainly still has (:func:`safe_read_size`). The core's
:func:`smtpproto.read_proxy_header` judges the octets exactly as on the plaintext path, and the session
takes the result through the same :meth:`~smtpproto_adapters.Session.apply_proxy`.

Reading in bounded steps works over any stream whose receive returns at most what was asked and keeps
the rest for the next receive (the sockets and streams of every backend), so it needs no ``MSG_PEEK``,
which would also spin on a partial v1 line: a peek returns at once as long as anything is waiting.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import smtpproto

from ._logging import SessionLogger
from ._transport import ShutdownRequested, Transport

__all__ = ["read_header_before_tls", "receive_proxy_header", "safe_read_size"]

#: ``receive(max_bytes, timeout)``: ``Transport.receive_before_tls``.
Receive = Callable[[int, float | None], Awaitable[bytes]]

# The shortest header of either version: "PROXY UNKNOWN\r\n" (v2's fixed part alone is 16 octets).
_SHORTEST = 15
# The v2 fixed part: signature, version/command, family/transport, and the 2-octet length of the rest.
_V2_FIXED = 16
# The first octet of the v2 signature (CR); a v1 line starts with "P".
_V2_FIRST = 0x0D
_V1_PREFIX = b"PROXY "
# The shortest valid text of each of the four fields after a v1 family word: two addresses, two ports.
_V1_FIELDS = {b"TCP4": (7, 7, 1, 1), b"TCP6": (2, 2, 1, 1)}  # "0.0.0.0", "::", "0"


def safe_read_size(head: bytes | bytearray) -> int:
    """How many octets may follow ``head`` (the start of an incomplete header) without passing its end.

    The least that any valid header beginning with ``head`` still has to come, so a read of that many
    octets stops inside the header or exactly at its end. Where ``head`` cannot begin a valid header the
    number does not matter: the core refuses it and the connection is closed. Always at least 1.
    """
    if len(head) < _SHORTEST:
        return _SHORTEST - len(head)
    if head[0] == _V2_FIRST:
        if len(head) < _V2_FIXED:
            return _V2_FIXED - len(head)
        return max(1, _V2_FIXED + int.from_bytes(head[14:16], "big") - len(head))
    return _v1_left(bytes(head))


def _v1_left(head: bytes) -> int:
    """The least a v1 line that starts with ``head`` (at least 15 octets, no CRLF yet) still has."""
    if head.endswith(b"\r"):
        return 1  # the LF may be next
    fields = head[len(_V1_PREFIX) :].split(b" ")
    shortest = _V1_FIELDS.get(fields[0])
    # The index of the address or port field being read (-1 while the family word is still open).
    current = len(fields) - 2
    if shortest is None or not 0 <= current < len(shortest):
        return 2  # UNKNOWN (the rest of its line is free text), or already malformed: only CRLF is sure
    # What the field being read still needs, then each later field with the space before it, then CRLF.
    need = max(0, shortest[current] - len(fields[-1]))
    return need + sum(size + 1 for size in shortest[current + 1 :]) + 2


async def receive_proxy_header(receive: Receive, timeout: float) -> smtpproto.ProxyHeader:
    """Read the PROXY header that starts the connection, and not one octet more.

    The whole header must arrive within ``timeout`` seconds: a proxy sends it in one piece at once, so a
    slow trickle is not a proxy.

    :raises smtpproto.ProxyHeaderError: the octets are not a valid header, or the connection ended first.
    :raises TimeoutError: the header was not complete within ``timeout``.
    :raises ShutdownRequested: from ``receive``, when the server is closing.
    :raises OSError: from ``receive``, when the connection broke.
    """
    deadline = time.monotonic() + timeout
    head = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        data = await receive(safe_read_size(head), left)
        if not data:
            raise smtpproto.ProxyHeaderError(
                "connection closed before the PROXY header was complete"
            )
        head += data
        header = smtpproto.read_proxy_header(
            head
        )  # raises ProxyHeaderError once it cannot be valid
        if header is not None:
            if head:  # safe_read_size failed its one promise: the handshake would miss these octets
                raise RuntimeError(f"read {len(head)} octets past the PROXY header")
            return header


async def read_header_before_tls(
    transport: Transport, timeout: float, log: SessionLogger
) -> smtpproto.ProxyHeader | None:
    """The PROXY header in front of an implicit-TLS handshake, or ``None`` (logged) to close without a word.

    ``None`` covers what the core's plaintext path also closes on: a malformed header, the end of the
    connection, no complete header within ``timeout`` (``socket_timeout``), and the server shutting down.
    """
    try:
        return await receive_proxy_header(transport.receive_before_tls, timeout)
    except smtpproto.ProxyHeaderError as exc:
        log.info("closing: bad PROXY header: %s", exc)
    except TimeoutError:  # before OSError, of which it is a subclass
        log.info("no PROXY header within %ss: closing", timeout)
    except ShutdownRequested:
        log.info("closing before the PROXY header: the server is shutting down")
    except OSError as exc:
        log.info("connection lost: %s", exc)
    return None
