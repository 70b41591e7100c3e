"""SMTPServer on asyncio: one Protocol and one task per connection, TLS in memory in that protocol.

Usage::

    server = SMTPServer(handler, size=10_000_000)
    async with server:
        await server.listen(2525)
        await server.serve_forever()
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from types import TracebackType
from typing import Any, Self, cast

from ._asyncio_protocol import ReadQueue
from ._hooks import Hook
from ._options import ServerOptions
from ._pump import READ_SIZE, run_session
from ._server import ServerState, Statistics, build_options
from ._session import TLSInfo
from ._stream import AsyncStream, MessageSource

__all__ = ["SMTPServer"]

#: After close_timeout and the 421, how long sessions still inside a hook get before they are cancelled.
_HOOK_GRACE = 5.0


class SMTPServer:
    """An SMTP/LMTP server on asyncio. Hooks are ``async def`` methods of ``handler``.

    ``SMTPServer(handler, options=None, **option_overrides)``; see
    :class:`~smtpproto_adapters.ServerOptions` for the options.
    """

    def __init__(
        self, handler: object, options: ServerOptions | None = None, **option_overrides: Any
    ) -> None:
        self._state = ServerState(
            handler, build_options(options, option_overrides), asynchronous=True
        )
        self._servers: list[asyncio.Server] = []
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed: asyncio.Event | None = None
        self._closing: asyncio.Future[None] | None = None
        self._runner = _Runner()
        #: Where every connection's transport reads to (see _Connection.get_buffer).
        self._read_buffer = memoryview(bytearray(READ_SIZE))

    @property
    def options(self) -> ServerOptions:
        """The options in effect."""
        return self._state.options

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets."""
        return [sock for server in self._servers for sock in server.sockets]

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after ``listen(0)``)."""
        if not self._servers:
            raise RuntimeError("not listening")
        return int(self.sockets[0].getsockname()[1])

    def statistics(self) -> Statistics:
        """A snapshot of the server's counters."""
        return self._state.statistics()

    async def listen(self, port: int = 0, host: str = "127.0.0.1") -> None:
        """Start accepting connections on ``host``:``port`` (port 0 picks a free one). May be repeated."""
        if self._state.closing:
            raise RuntimeError("the server is closed")
        loop = asyncio.get_running_loop()
        self._closed = self._closed or asyncio.Event()
        server = await loop.create_server(
            lambda: _Connection(self, loop),
            host,
            port,
            backlog=1024,
            reuse_address=True,
            reuse_port=self.options.reuse_port,
        )
        self._servers.append(server)
        self._state.logger.info("listening on %s", [s.getsockname() for s in server.sockets])

    async def serve_forever(self) -> None:
        """Wait until :meth:`close` has finished (connections are served from :meth:`listen` on)."""
        if self._closed is None:
            raise RuntimeError("call listen() first")
        await self._closed.wait()

    async def close(self) -> None:
        """Stop accepting, let sessions finish for ``close_timeout``, then send them 421 and close."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close())
        await asyncio.shield(self._closing)

    async def _close(self) -> None:
        self._state.closing = True
        for server in self._servers:
            server.close()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self._state.options.close_timeout)
        for connection in list(self._connections):
            connection.interrupt()  # idle sessions get their 421 4.3.2 now
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=_HOOK_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for server in self._servers:
            await server.wait_closed()
        if self._closed is not None:
            self._closed.set()
        self._state.logger.info("server closed")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _start(self, connection: _Connection) -> None:
        task = connection._loop.create_task(run_session(self._state, connection, self._runner))
        self._connections.add(connection)
        self._tasks.add(task)

        def done(_: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._connections.discard(connection)

        task.add_done_callback(done)


class _Runner:
    """Hooks are awaited in the session's task; reverse DNS runs in the loop's executor."""

    async def call(self, hook: Hook, *args: Any) -> Any:
        return await hook(*args)

    def data_stream(self, source: MessageSource) -> AsyncStream:
        return AsyncStream(source)

    async def reverse_lookup(self, address: str, timeout: float) -> str | None:
        loop = asyncio.get_running_loop()
        try:
            host, _ = await asyncio.wait_for(
                loop.getnameinfo((address, 0), socket.NI_NAMEREQD), timeout
            )
        except (OSError, TimeoutError, UnicodeError):
            return None
        return str(host)


class _Connection(ReadQueue):
    """One connection: an asyncio BufferedProtocol (see :class:`ReadQueue`) that is also the pump's Transport."""

    remote_address = ""
    remote_port = 0
    local_address = ""
    local_port = 0

    def __init__(self, server: SMTPServer, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(server._read_buffer, loop)
        self._server = server
        self._lost = self._loop.create_future()
        self._sending = False  # a send is waiting for the transport to drain

    # -- asyncio.Protocol ---------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports have the same methods but are no asyncio.Transport.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.remote_address, self.remote_port = str(peer[0]), int(peer[1])
        self.local_address, self.local_port = str(local[0]), int(local[1])
        if self._server.options.secure:
            # Nothing may be read before start_tls takes over the socket, or the ClientHello is lost.
            transport.pause_reading()
        self._server._start(self)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        # Keep a plaintext transport open for writing: a client may half-close right after QUIT.
        return not self._tls

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection_ended(exc)
        if not self._lost.done():
            self._lost.set_result(None)

    # -- the pump's Transport -------------------------------------------------------------------------

    async def send(self, data: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        # Only one task runs at a time: a plain flag catches a second writer (a bug) like SendGuard does.
        if self._sending:
            raise RuntimeError("another task or thread is already sending on this connection")
        self._write(data)
        if self._writing_paused:
            self._sending = True
            try:
                self._drained = self._loop.create_future()
                timeout = self._server.options.socket_timeout
                await asyncio.wait_for(self._drained, timeout)
            finally:
                self._sending = False
            if transport.is_closing():
                raise ConnectionResetError("connection closed")

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        return await self._start_tls(context, timeout, self._server._state.tls)

    async def aclose(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if not transport.is_closing():
            self._close_tls()
        # An open transport with nothing left to write reports the loss on the next loop turn.
        prompt = not transport.is_closing() and transport.get_write_buffer_size() == 0
        if not transport.is_closing():
            transport.close()
        if self._lost.done():
            return
        if prompt:
            await self._lost
            return
        # A client that never reads cannot keep a closing connection around.
        grace = min(self._server.options.socket_timeout, 5.0)
        handle = self._loop.call_later(grace, transport.abort)  # abort() ends in connection_lost
        try:
            # Cancelling this wait may cancel _lost too, which only connection_lost would have set.
            await self._lost
        finally:
            handle.cancel()
