"""SMTPServer on anyio: runs under whichever anyio backend is running, asyncio or trio.

Usage::

    server = SMTPServer(handler, size=10_000_000)
    async with server:
        await server.listen(2525)
        await server.serve_forever()    # until server.close() from another task

    anyio.run(main)                     # or anyio.run(main, backend="trio")

Listeners come from ``anyio.create_tcp_listener``, sessions run in a task group owned by
:meth:`SMTPServer.serve_forever`, and STARTTLS and implicit TLS use ``anyio.streams.tls.TLSStream``. Under
asyncio a connection is an asyncio protocol of our own (``smtpproto_adapters._anyio_asyncio``), which
spares every receive anyio's re-registration of the socket with the selector; under trio it is the trio
server's connection on the bare socket (``smtpproto_adapters._anyio_trio``), which spares it anyio's
stream and cancel scopes. As with trio, :meth:`SMTPServer.listen` binds the sockets and ``serve_forever``
does the accepting; :meth:`SMTPServer.close` (from another task) winds the sessions down gracefully, while
cancelling ``serve_forever`` tears them down at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import ssl
from asyncio.trsock import TransportSocket
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
from anyio.abc import ByteStream, SocketAttribute, SocketListener, SocketStream, TaskGroup
from anyio.streams.tls import TLSAttribute, TLSStream

from ._anyio_asyncio import ProtocolConnection, accepted
from ._hooks import Hook
from ._options import ServerOptions
from ._pump import READ_SIZE, run_session
from ._server import ServerState, Statistics, build_options
from ._session import TLSInfo
from ._stream import AsyncStream, MessageSource
from ._transport import ShutdownRequested, stream_error_reason

if TYPE_CHECKING:
    from ._anyio_trio import TrioSessions
    from ._trio_connection import Connection

__all__ = ["SMTPServer"]

#: After close_timeout and the 421, how long sessions still inside a hook get before they are cancelled.
_HOOK_GRACE = 5.0
#: How long on_close may take when its session is being torn down by cancellation.
_ON_CLOSE_GRACE = 2.0
#: Pause after a failed accept (e.g. EMFILE), so that an exhausted server does not spin.
_ACCEPT_RETRY = 0.1


class SMTPServer:
    """An SMTP/LMTP server on anyio (asyncio or trio underneath). Hooks are ``async def`` methods of ``handler``.

    ``SMTPServer(handler, options=None, **option_overrides)``; see
    :class:`~smtpproto_adapters.ServerOptions` for the options.
    """

    def __init__(
        self, handler: object, options: ServerOptions | None = None, **option_overrides: Any
    ) -> None:
        self._state = ServerState(
            handler, build_options(options, option_overrides), asynchronous=True
        )
        self._listeners: list[SocketListener] = []
        self._connections: set[_Connection | ProtocolConnection | Connection] = set()
        #: Where every connection on asyncio reads to (see ProtocolConnection.get_buffer); made on first use.
        self._read_buffer: memoryview | None = None
        # anyio events belong to a running backend, so they are made on first use (see _events()).
        self._idle: anyio.Event | None = None  # set whenever no session is running
        self._close_requested: anyio.Event | None = None
        self._closed: anyio.Event | None = None
        self._accepting: TaskGroup | None = None
        self._sessions: TaskGroup | None = None
        #: Under trio: the sessions' nursery and watchdog (see _anyio_trio); made by serve_forever.
        self._trio: TrioSessions | None = None
        self._close_started = False
        self._serving = False
        self._runner = _Runner(self._state.hooks.on_close)

    @property
    def options(self) -> ServerOptions:
        """The options in effect."""
        return self._state.options

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets."""
        return [listener.extra(SocketAttribute.raw_socket) for listener in self._listeners]

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after ``listen(0)``)."""
        if not self._listeners:
            raise RuntimeError("not listening")
        return int(self.sockets[0].getsockname()[1])

    def statistics(self) -> Statistics:
        """A snapshot of the server's counters."""
        return self._state.statistics()

    async def listen(self, port: int = 0, host: str = "127.0.0.1") -> None:
        """Bind and listen on ``host``:``port`` (port 0 picks a free one). May be repeated.

        Connections are accepted once :meth:`serve_forever` runs (at once, if it already does).
        """
        if self._close_started or self._state.closing:
            raise RuntimeError("the server is closed")
        self._events()
        multi = await anyio.create_tcp_listener(
            local_host=host, local_port=port, backlog=1024, reuse_port=self.options.reuse_port
        )
        # create_tcp_listener only ever holds socket listeners; the check narrows the type to one with accept().
        listeners = [each for each in multi.listeners if isinstance(each, SocketListener)]
        if len(listeners) != len(multi.listeners):
            raise RuntimeError("anyio returned a listener that is not a socket listener")
        self._listeners += listeners
        self._state.logger.info(
            "listening on %s",
            [listener.extra(SocketAttribute.local_address) for listener in listeners],
        )
        if self._accepting is not None:
            for listener in listeners:
                self._accepting.start_soon(self._accept_loop, listener)

    async def serve_forever(self) -> None:
        """Accept and serve connections until :meth:`close` has finished (call it from another task)."""
        if not self._listeners:
            raise RuntimeError("call listen() first")
        if self._serving:
            raise RuntimeError("serve_forever() is already running")
        close_requested, closed = self._events()
        if self._close_started:  # closed before it ever served
            await closed.wait()
            return
        self._serving = True
        self._idle = anyio.Event()
        self._idle.set()
        if _on_trio():
            from ._anyio_trio import TrioSessions

            self._trio = TrioSessions(self._state, self._runner, self._started, self._ended)
        try:
            async with anyio.create_task_group() as sessions:
                if self._trio is not None:
                    await sessions.start(self._trio.run)
                async with anyio.create_task_group() as accepting:
                    self._sessions, self._accepting = sessions, accepting
                    for listener in self._listeners:
                        accepting.start_soon(self._accept_loop, listener)
                    await close_requested.wait()
                    # Each accept loop closes its listener as it unwinds: no new connections from here.
                    accepting.cancel_scope.cancel()
                self._accepting = None
                await self._wind_down()
                if self._trio is not None:
                    self._trio.watchdog.scope.cancel()  # every session has ended, or been cancelled
        finally:
            self._state.closing = True
            self._accepting = self._sessions = None
            for sock in self.sockets:
                sock.close()  # synchronous: this also runs when serve_forever is cancelled
            closed.set()
            self._state.logger.info("server closed")

    async def close(self) -> None:
        """Stop accepting, let sessions finish for ``close_timeout``, then send them 421 and close.

        Safe to call more than once and from any task of the server's event loop; returns once closed.
        """
        close_requested, closed = self._events()
        if self._close_started:
            await closed.wait()
            return
        self._close_started = True
        self._state.closing = True
        close_requested.set()
        if self._serving:
            await closed.wait()  # serve_forever winds the sessions down
            return
        for listener in self._listeners:
            await listener.aclose()
        closed.set()
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

    def _events(self) -> tuple[anyio.Event, anyio.Event]:
        if self._close_requested is None or self._closed is None:
            self._close_requested, self._closed = anyio.Event(), anyio.Event()
        return self._close_requested, self._closed

    # -- inside serve_forever ---------------------------------------------------------------------------

    async def _accept_loop(self, listener: SocketListener) -> None:
        sock = listener.extra(SocketAttribute.raw_socket)
        if anyio.get_cancelled_exc_class() is asyncio.CancelledError and isinstance(
            sock, socket.socket
        ):
            await self._accept_protocols(listener, sock)
            return
        if self._trio is not None and isinstance(sock, socket.socket):
            await self._trio.accept(listener, sock)
            return
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except anyio.ClosedResourceError:
                    return
                except OSError as exc:
                    # e.g. EMFILE: keep serving the sessions we have and retry, instead of dying.
                    self._state.logger.error("accept failed: %s", exc)
                    await anyio.sleep(_ACCEPT_RETRY)
                    continue
                assert self._sessions is not None
                self._sessions.start_soon(self._handle, stream)

    async def _accept_protocols(self, listener: SocketListener, sock: socket.socket) -> None:
        """The accept loop on asyncio: each connection gets a ProtocolConnection instead of anyio's stream."""
        loop = asyncio.get_running_loop()
        async with listener:
            while True:
                # Every waiting connection is taken before the loop waits again, as asyncio's servers do.
                try:
                    try:
                        client, _ = sock.accept()
                    except BlockingIOError:
                        client, _ = await loop.sock_accept(sock)
                except OSError as exc:
                    if sock.fileno() < 0:  # the listener is closed
                        return
                    # e.g. EMFILE: keep serving the sessions we have and retry, instead of dying.
                    self._state.logger.error("accept failed: %s", exc)
                    await anyio.sleep(_ACCEPT_RETRY)
                    continue
                assert self._sessions is not None
                self._sessions.start_soon(self._handle_socket, client)

    async def _handle_socket(self, sock: socket.socket) -> None:
        addresses = accepted(sock)
        if addresses is None:  # reset before we got to it
            sock.close()
            return
        if self._read_buffer is None:
            self._read_buffer = memoryview(bytearray(READ_SIZE))
        loop = asyncio.get_running_loop()
        connection = ProtocolConnection(self._state, self._read_buffer, loop, *addresses)
        try:
            await loop.connect_accepted_socket(lambda: connection, sock)
        except OSError as exc:
            self._state.logger.info("connection lost before it started: %s", exc)
            sock.close()
            return
        await self._run(connection)

    async def _wind_down(self) -> None:
        await self._wait_idle(self._state.options.close_timeout)
        for connection in list(self._connections):
            connection.interrupt()  # idle sessions get their 421 4.3.2 now
        await self._wait_idle(_HOOK_GRACE)
        for connection in list(self._connections):
            connection.kill()  # the sessions task group waits for them to unwind

    async def _wait_idle(self, timeout: float) -> None:
        with anyio.move_on_after(timeout):
            # A loop: a straggler session may start after an earlier idle moment.
            while self._idle is not None and self._connections:
                await self._idle.wait()

    async def _handle(self, stream: SocketStream) -> None:
        try:
            remote = stream.extra(SocketAttribute.remote_address)
            local = stream.extra(SocketAttribute.local_address)
        except OSError:  # reset before we got to it
            await anyio.aclose_forcefully(stream)
            return
        await self._serve_stream(stream, remote, local)

    async def _serve_stream(self, stream: ByteStream, remote: Any, local: Any) -> None:
        """Run one session over any anyio byte stream."""
        await self._run(_Connection(stream, remote, local, self._state))

    async def _run(self, connection: _Connection | ProtocolConnection) -> None:
        self._started(connection)
        if connection.watched and self._sessions is not None:
            self._sessions.start_soon(connection.watch)
        # run_session handles its own errors; the except only keeps a bug from crashing the task group.
        try:
            with connection.scope:
                await run_session(self._state, connection, self._runner)
        except Exception:
            self._state.count("errors")
            self._state.logger.exception("session task failed")
        finally:
            connection.unwatch()
            self._ended(connection)

    def _started(self, connection: _Connection | ProtocolConnection | Connection) -> None:
        if not self._connections:
            self._idle = anyio.Event()
        self._connections.add(connection)

    def _ended(self, connection: _Connection | ProtocolConnection | Connection) -> None:
        self._connections.discard(connection)
        if not self._connections and self._idle is not None:
            self._idle.set()


def _on_trio() -> bool:
    """Whether anyio runs on trio (imported only then: anyio on asyncio does not need it)."""
    cancelled = anyio.get_cancelled_exc_class()
    if cancelled is asyncio.CancelledError:
        return False
    import trio

    return cancelled is trio.Cancelled


class _Runner:
    """Hooks are awaited in the session's task; reverse DNS runs in the backend's resolver thread."""

    def __init__(self, on_close: Hook | None) -> None:
        self._on_close = on_close

    async def call(self, hook: Hook, *args: Any) -> Any:
        if hook is self._on_close and anyio.current_effective_deadline() == -math.inf:
            # The session is being cancelled (close() ran out of patience, or serve_forever was cancelled):
            # on_close still runs once, shielded from that cancellation but bounded.
            with anyio.CancelScope(shield=True), anyio.move_on_after(_ON_CLOSE_GRACE):
                return await hook(*args)
            return None
        return await hook(*args)

    def data_stream(self, source: MessageSource) -> AsyncStream:
        return AsyncStream(source)

    async def reverse_lookup(self, address: str, timeout: float) -> str | None:
        with anyio.move_on_after(timeout):  # the lookup thread is abandoned, not waited for
            try:
                host, _ = await anyio.getnameinfo((address, 0), socket.NI_NAMEREQD)
            except (OSError, UnicodeError):
                return None
            return str(host)
        return None


class _Connection:
    """One connection: the pump's Transport over an anyio byte stream (a ``TLSStream`` after TLS starts).

    Used for any stream given to ``_serve_stream``, and for a listener without a stdlib socket; the accept
    loop otherwise serves a :class:`~smtpproto_adapters._anyio_asyncio.ProtocolConnection` (asyncio) or a
    trio server's connection (trio, see ``smtpproto_adapters._anyio_trio``) instead.

    On a plain socket the timeouts cost no cancel scope per receive or send (anyio charges ~10-15 µs for
    each). A receive waits in the stream with no scope at all: a watchdog task per connection sleeps until
    the earliest moment the wait could time out and, when it really has, shuts the socket's read side
    (``shutdown(SHUT_RD)``), which ends the wait with an end of stream on either anyio backend and leaves
    the write side usable, so the 421 still goes out; interrupt() does the same. A send first writes
    straight to the socket's descriptor (the stream keeps nothing queued between sends: its send returns
    only once all is handed to the kernel), and only what the kernel does not take at once goes through
    the stream under a deadline. After STARTTLS (or on other streams) each wait gets its own cancel scope instead.
    """

    def __init__(self, stream: ByteStream, remote: Any, local: Any, state: ServerState) -> None:
        self.remote_address, self.remote_port = str(remote[0]), int(remote[1])
        self.local_address, self.local_port = str(local[0]), int(local[1])
        self._raw = stream
        self._stream = stream
        self._state = state
        self._timeout = state.options.socket_timeout
        #: The whole session; cancelled by kill().
        self.scope = anyio.CancelScope()
        self._receive_scope: anyio.CancelScope | None = None
        self._interrupted = False
        self._closed = False
        self._sending = False
        #: The plain socket the watchdog guards (None: scoped waits, as after STARTTLS or on other streams).
        self._sock = _plain_socket(stream) if self._timeout is not None else None
        self._fd = self._sock.fileno() if self._sock is not None else -1
        self._receiving = False  # a watched receive is in progress
        self._wait_started = 0.0
        self._timed_out = False  # the watchdog shut the read side: every later receive times out
        self._watch_scope = anyio.CancelScope()

    @property
    def watched(self) -> bool:
        """Whether this connection needs its :meth:`watch` task."""
        return self._sock is not None

    async def watch(self) -> None:
        """The watchdog: time out the receive in progress once it has lasted ``socket_timeout``."""
        timeout = self._timeout
        assert timeout is not None
        with self._watch_scope:
            wake = anyio.current_time() + timeout
            while True:
                await anyio.sleep_until(wake)
                now = anyio.current_time()
                if self._receiving and self._sock is not None:
                    # Every wait is socket_timeout long, so one that started later never needs an earlier
                    # wake-up: re-check lazily.
                    deadline = self._wait_started + timeout
                    if now < deadline:
                        wake = deadline
                        continue
                    self._timed_out = True
                    self._shut_read()
                    return
                wake = now + timeout

    def unwatch(self) -> None:
        """End the watchdog (the session is over)."""
        self._watch_scope.cancel()

    def _shut_read(self) -> None:
        assert self._sock is not None
        with contextlib.suppress(OSError):  # already gone: the receive sees that by itself
            self._sock.shutdown(socket.SHUT_RD)

    def interrupt(self) -> None:
        """Ask the session to end: its current or next receive raises ShutdownRequested."""
        self._interrupted = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        if self._receiving and self._sock is not None:
            self._shut_read()

    def kill(self) -> None:
        """Cancel the session wherever it is (its cleanup still runs, shielded and bounded)."""
        self.scope.cancel()

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        if self._interrupted:
            raise ShutdownRequested
        if self._sock is not None and timeout == self._timeout:
            if self._timed_out:
                raise TimeoutError
            self._receiving, self._wait_started = True, anyio.current_time()
            try:
                return await self._stream.receive(max_bytes)
            except anyio.EndOfStream:
                # The read side was shut by interrupt() or the watchdog, or the client sent its EOF.
                if self._interrupted:
                    raise ShutdownRequested from None
                if self._timed_out:
                    raise TimeoutError from None
                return b""
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                if self._interrupted:
                    raise ShutdownRequested from None
                if self._timed_out:
                    raise TimeoutError from None
                raise ConnectionResetError(stream_error_reason(exc)) from exc
            finally:
                self._receiving = False
        # Cancelling a receive loses nothing (anyio keeps unread data buffered, TLSStream included), so a
        # timeout or interrupt() can cut in at any point.
        with anyio.move_on_after(timeout) as scope:
            self._receive_scope = scope
            try:
                return await self._stream.receive(max_bytes)
            except anyio.EndOfStream:
                return b""  # the core's single EOF convention
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise ConnectionResetError(stream_error_reason(exc)) from exc
            finally:
                self._receive_scope = None
        if self._interrupted:
            raise ShutdownRequested
        raise TimeoutError

    async def receive_before_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        # receive(n) returns at most n octets: under trio it is one socket recv(n); under asyncio the stream
        # reads ahead, but keeps the surplus queued for its next receive. TLSStream.wrap reads through this
        # same stream, so either way the ClientHello reaches the handshake whole.
        return await self.receive(max_bytes, timeout)

    async def send(self, data: bytes) -> None:
        # One task at a time: a plain flag catches a second writer (a bug) as SendGuard does, for less.
        if self._sending:
            raise RuntimeError("another task or thread is already sending on this connection")
        self._sending = True
        try:
            sock = self._sock
            if sock is not None:
                # Closed under us: never write to a descriptor that may since belong to another socket.
                if sock.fileno() != self._fd:
                    raise ConnectionResetError("the connection is closed")
                try:
                    sent = os.write(self._fd, data)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    raise ConnectionResetError(str(exc) or type(exc).__name__) from exc
                if sent == len(data):
                    return
                data = data[sent:]
            # A cancelled or timed-out send leaves the stream broken; the pump never writes again after it.
            with anyio.fail_after(self._timeout):
                await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConnectionResetError(stream_error_reason(exc)) from exc
        finally:
            self._sending = False

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        # Nothing to discard here: the pump's receive never reads past what it asked for, and the core
        # already dropped whatever it had buffered after STARTTLS. Implicit TLS comes here too, rather than
        # through a TLSListener, so that max_clients, PROXY and the tls_failures count apply before it.
        self._sock = None  # the watchdog leaves TLS waits to their own cancel scopes
        try:
            with anyio.fail_after(timeout):
                stream = await TLSStream.wrap(self._stream, server_side=True, ssl_context=context)
        except (anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            raise ConnectionResetError(stream_error_reason(exc)) from exc
        self._stream = stream  # from here on aclose() closes the TLS stream
        return tls_stream_info(stream, self._state)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shielded, so that a cancelled session still releases its socket; bounded, because TLSStream waits
        # for the client's close_notify (TLSStream then closes the socket itself).
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(min(self._timeout, 5.0)):
                try:
                    await self._stream.aclose()
                except (anyio.BrokenResourceError, OSError) as exc:
                    self._state.logger.debug("closing the connection: %s", exc)
            if self._stream is not self._raw:
                await anyio.aclose_forcefully(self._raw)


def _plain_socket(stream: ByteStream) -> socket.socket | TransportSocket | None:
    """The kernel socket under a plain anyio socket stream, if it may be written and shut directly.

    Under anyio's trio backend that is a ``socket.socket``; under asyncio (a stream given to
    ``_serve_stream``) it is the transport's ``TransportSocket``, which still shuts down but may not send
    (its file descriptor does, through ``os.write``). uvloop's stand-in, and anything else, gets scoped waits.
    """
    if os.name != "posix" or not isinstance(stream, SocketStream):
        return None
    try:
        sock = stream.extra(SocketAttribute.raw_socket)
    except Exception:  # noqa: BLE001  # no usable socket: scoped waits
        return None
    return sock if isinstance(sock, (socket.socket, TransportSocket)) else None


def tls_stream_info(stream: TLSStream, state: ServerState) -> TLSInfo:
    """What the session learns of a TLS stream once its handshake is done (SNI name through the server)."""
    ssl_object = stream.extra(TLSAttribute.ssl_object)
    cipher = stream.extra(TLSAttribute.cipher)
    tls = state.tls
    return TLSInfo(
        servername=tls.servername(ssl_object) if tls else None,
        protocol=stream.extra(TLSAttribute.tls_version),
        cipher=cipher[0] if cipher else "",
    )
