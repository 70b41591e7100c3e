"""The Transport protocol: the only view of a connection that the shared pump has.

A backend implements these few methods over its own sockets or streams. They are ``async def`` on every
backend; the blocking backend's versions simply never suspend (see :func:`smtpproto_adapters._pump.drive`).

Contract:

* ``receive(max_bytes, timeout)`` returns at most ``max_bytes`` bytes, ``b""`` at end of stream, raises
  :class:`TimeoutError` when nothing arrived for ``timeout`` seconds and :class:`ShutdownRequested` once the
  server asked the session to end (``close()`` ran past its grace period). Any other :class:`OSError`
  means the connection is broken.
* ``receive_before_tls(max_bytes, timeout)`` is ``receive`` that takes no more than ``max_bytes`` off the
  connection: every later byte stays for ``start_tls``. The pump uses it for the PROXY header in front of
  implicit TLS (:mod:`smtpproto_adapters._proxy_tls`), where the next byte belongs to the ClientHello. It is
  only called before ``start_tls``.
* ``send(data)`` writes everything or raises :class:`OSError`; after a failed or interrupted send the state
  of the stream is unknown and the pump never writes again. Two concurrent sends are a bug: guard the write
  path with :class:`SendGuard`.
* ``start_tls(context, timeout)`` does the server side of a TLS handshake over the existing connection and
  returns the negotiated :class:`TLSInfo`; bytes received before it are discarded, never decrypted or fed on.
* ``aclose()`` always releases the socket, even after errors.

A transport may also have ``receive_commands(max_bytes, timeout, consume)`` (see :class:`ReceiveCommands`),
the pump's fast path for commands (asyncio, blocking); the pump looks it up once per session and uses
``receive`` where it is missing.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Protocol, TypeVar

from ._session import TLSInfo

__all__ = [
    "NegotiatedTLS",
    "ReceiveCommands",
    "SendGuard",
    "ShutdownRequested",
    "Transport",
    "drive",
    "stream_error_reason",
    "tls_info",
]

T = TypeVar("T")


class ShutdownRequested(Exception):
    """Raised by ``Transport.receive`` when the server is closing this session (421 4.3.2 follows)."""


class Transport(Protocol):
    """One client connection, as the pump uses it (see the module docstring for the contract)."""

    remote_address: str
    remote_port: int
    local_address: str
    local_port: int

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        """Up to ``max_bytes`` received bytes; ``b""`` at EOF."""
        ...

    async def receive_before_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        """As :meth:`receive`, reading nothing past ``max_bytes``: the rest stays for :meth:`start_tls`."""
        ...

    async def send(self, data: bytes) -> None:
        """Write all of ``data``."""
        ...

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        """Server-side TLS handshake over this connection."""
        ...

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        ...


class ReceiveCommands(Protocol):
    """A transport's optional ``receive_commands(max_bytes, timeout, consume)``: ``receive`` with a fast path.

    Each chunk that arrives while it waits may go straight to ``consume(chunk)``, which feeds it to the
    session synchronously and returns the replies to write, or ``None`` when the session's own loop must run.
    The transport writes those replies and waits on, or returns ``None`` (the consumer has taken the chunk).
    It may also return received bytes untouched, as ``receive`` would (same timeout, end of stream and
    errors): the pump then runs ``consume`` on them itself. An exception from ``consume``, or from the write,
    is raised by this call.

    The asyncio transports run ``consume`` inside the protocol's read callback, so a command that needs no hook
    costs no task wake-up (not while their writes are paused: then they wake the task). The blocking
    transport parks the socket in the server's ``CommandReactor``, whose one thread runs ``consume`` for every
    parked session, so that a command costs no GIL hand-off between session threads.
    """

    async def __call__(
        self, max_bytes: int, timeout: float | None, consume: Callable[[bytes], bytes | None]
    ) -> bytes | None: ...


class SendGuard:
    """Detects a second writer on a connection's send path (a bug) instead of interleaving their bytes.

    Use as ``with guard: <write>``. It never waits: a concurrent entry raises :class:`RuntimeError`.
    It is thread-safe, so it serves the blocking backend as well as the async ones.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise RuntimeError("another task or thread is already sending on this connection")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._lock.release()


class NegotiatedTLS(Protocol):
    """What :func:`tls_info` reads: an ``ssl.SSLObject``/``ssl.SSLSocket``, or a stream forwarding to one."""

    def cipher(self) -> tuple[str, str, int] | None: ...

    def version(self) -> str | None: ...


def tls_info(ssl_object: NegotiatedTLS, servername: str | None) -> TLSInfo:
    """The :class:`TLSInfo` of a finished handshake (``trio.SSLStream`` forwards both methods)."""
    cipher = ssl_object.cipher()
    return TLSInfo(
        servername=servername,
        protocol=ssl_object.version() or "",
        cipher=cipher[0] if cipher else "",
    )


def stream_error_reason(exc: BaseException) -> str:
    """The underlying error of a trio or anyio stream exception (they wrap the OSError), for the log."""
    return str(exc.__cause__ or exc) or type(exc).__name__


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends to its end, synchronously, and return its result.

    This is how the blocking backend shares the async pump: its transport and hook wrappers are
    ``async def`` functions that complete without awaiting anything that suspends, so one ``send(None)``
    runs the whole coroutine. A coroutine that does suspend is a bug (an async primitive leaked into the
    blocking path) and raises RuntimeError.
    """
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise RuntimeError("a coroutine suspended on the blocking backend")
