"""The anyio server's connections when anyio runs on asyncio: an asyncio protocol instead of anyio's stream.

anyio's asyncio ``SocketStream`` resumes the transport's reading for every receive and pauses it again after
(two ``epoll_ctl`` calls and the selector's bookkeeping per command), and wraps each wait in its own event and
checkpoints: together most of the anyio server's cost per command over the asyncio one. This connection
instead is the transport's :class:`asyncio.BufferedProtocol`, registered for reading for its whole life, as
the asyncio backend's is; it uses only public asyncio and anyio API. A wait is a bare future: anyio's cancel
scopes still cancel it (they cancel the task), and the idle timeout is one timer per connection, not a task.
STARTTLS and implicit TLS run in memory in this protocol as on the asyncio backend (anyio's ``TLSStream`` over
this connection cost twice the CPU per command, asyncio's ``loop.start_tls`` a quarter of it).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, cast

import anyio

from ._asyncio_protocol import ReadQueue
from ._server import ServerState
from ._session import TLSInfo

__all__ = ["ProtocolConnection", "accepted", "address_of"]

#: The longest a closing connection may take to flush what it still has to send.
_CLOSE_GRACE = 5.0


def address_of(address: Any) -> tuple[str, int]:
    """Host and port of a socket address, as anyio's ``SocketAttribute.remote_address`` gives them."""
    host, port = str(address[0]), int(address[1])
    if len(address) == 4 and address[3]:  # IPv6 scope, as anyio shows it
        host = f"{host}%{address[3]}"
    return host, port


class ProtocolConnection(ReadQueue):
    """One connection: the asyncio transport's protocol (see :class:`ReadQueue`), and the pump's Transport."""

    #: No watchdog task: the idle timeout is a loop timer (see ReadQueue._arm_timer).
    watched = False

    def __init__(
        self,
        state: ServerState,
        read_buffer: memoryview,
        loop: asyncio.AbstractEventLoop,
        remote: tuple[str, int],
        local: tuple[str, int],
    ) -> None:
        super().__init__(read_buffer, loop)
        self.remote_address, self.remote_port = remote
        self.local_address, self.local_port = local
        self._state = state
        self._timeout = state.options.socket_timeout
        self._lost = False
        self._closed_waiter: asyncio.Future[None] | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self._sending = False
        self._closed = False
        #: The whole session; cancelled by kill().
        self.scope = anyio.CancelScope()

    # -- asyncio.BufferedProtocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports have the same methods but are no asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)
        if self._state.options.secure:
            # Nothing may be read before start_tls takes over the socket, or the ClientHello is lost.
            self._transport.pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep a plaintext transport open for writing: a client may half-close right after QUIT.
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self._abort_handle is not None:
            self._abort_handle.cancel()
            self._abort_handle = None
        self._connection_ended(exc)
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)

    # -- sending ----------------------------------------------------------------------------------------

    def _write_now(self, data: bytes) -> asyncio.Transport:
        """Hand ``data`` to the transport, which sends at once what the kernel takes and buffers the rest."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._write(data)
        return transport

    async def _drain(self, transport: asyncio.Transport) -> None:
        """Wait until the transport's buffer is below its low-water mark again."""
        self._drained = self._loop.create_future()
        try:
            await self._drained
        finally:
            self._drained = None
        if transport.is_closing():
            raise ConnectionResetError("the connection is closed")

    # -- the server's view ------------------------------------------------------------------------------

    async def watch(self) -> None:
        """Not needed (``watched`` is False): the timer times the receives."""

    def unwatch(self) -> None:
        """Nothing to stop (see :meth:`watch`)."""

    def kill(self) -> None:
        """Cancel the session wherever it is (its cleanup still runs, shielded and bounded)."""
        self.scope.cancel()

    # -- the pump's Transport -----------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        # One task at a time: a plain flag catches a second writer (a bug) as SendGuard does, for less.
        if self._sending:
            raise RuntimeError("another task or thread is already sending on this connection")
        self._sending = True
        try:
            # A cancelled or timed-out send leaves the stream broken; the pump never writes again after it.
            transport = self._write_now(data)
            if self._writing_paused:
                with anyio.fail_after(self._timeout):
                    await self._drain(transport)
        finally:
            self._sending = False

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        return await self._start_tls(context, timeout, self._state.tls)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        transport = self._transport
        if transport is None or self._lost:
            return
        grace = min(self._timeout, _CLOSE_GRACE)
        if not transport.is_closing():
            self._close_tls()  # our close_notify goes out before the end of the stream
        transport.close()
        if self._lost or transport.get_write_buffer_size() == 0:
            return  # the transport releases the socket on the next loop turn
        # Replies still queued, or the TLS shutdown: give the client a bounded time, shielded, so that a
        # cancelled session still says goodbye.
        self._abort_handle = self._loop.call_later(grace, transport.abort)
        self._closed_waiter = self._loop.create_future()
        with anyio.CancelScope(shield=True):
            await self._closed_waiter


def accepted(sock: socket.socket) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """The remote and local address of an accepted socket, or None if it was reset before we got to it."""
    try:
        return address_of(sock.getpeername()), address_of(sock.getsockname())
    except OSError:
        return None
