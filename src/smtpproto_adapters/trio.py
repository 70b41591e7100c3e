"""SMTPServer on trio: ``trio.serve_listeners`` accepts, a nursery holds the sessions, ``trio.SSLStream`` does TLS.

Usage::

    server = SMTPServer(handler, size=10_000_000)
    async with server:
        await server.listen(2525)
        await server.serve_forever()    # until server.close() from another task

trio has no background tasks, so the work happens inside :meth:`SMTPServer.serve_forever`:
:meth:`SMTPServer.listen` binds the sockets (clients that connect before ``serve_forever`` wait in the
backlog), ``serve_forever`` runs the accept loops and every session in its own nursery, and
:meth:`SMTPServer.close` (from another task) asks it to wind down gracefully. Cancelling ``serve_forever``
instead tears all sessions down at once.
"""

from __future__ import annotations

import functools
import math
import socket
import ssl
from types import TracebackType
from typing import Any, Self

import trio

from ._hooks import Hook
from ._options import ServerOptions
from ._pump import run_session
from ._server import ServerState, Statistics, build_options
from ._session import TLSInfo
from ._sockets import reuse_port_sockets
from ._stream import AsyncStream, MessageSource
from ._tls import capture_servername
from ._transport import ShutdownRequested, tls_info

__all__ = ["SMTPServer"]

#: After close_timeout and the 421, how long sessions still inside a hook get before they are cancelled.
_HOOK_GRACE = 5.0
#: How long on_close may take when its session is being torn down by cancellation.
_ON_CLOSE_GRACE = 2.0


class SMTPServer:
    """An SMTP/LMTP server on trio. Hooks are ``async def`` methods of ``handler``.

    ``SMTPServer(handler, options=None, **option_overrides)``; see
    :class:`~smtpproto_adapters.ServerOptions` for the options.
    """

    def __init__(
        self, handler: object, options: ServerOptions | None = None, **option_overrides: Any
    ) -> None:
        self._state = ServerState(
            handler, build_options(options, option_overrides), asynchronous=True
        )
        self._listeners: list[trio.SocketListener] = []
        self._connections: set[_Connection] = set()
        self._idle = trio.Event()  # set whenever no session is running
        self._idle.set()
        self._accepting: trio.Nursery | None = None
        self._sessions: trio.Nursery | None = None
        self._close_requested = trio.Event()
        self._closed = trio.Event()
        self._close_started = False
        self._serving = False
        self._runner = _Runner(self._state.hooks.on_close)

    @property
    def options(self) -> ServerOptions:
        """The options in effect."""
        return self._state.options

    @property
    def sockets(self) -> list[trio.socket.SocketType]:
        """The listening sockets (trio socket objects)."""
        return [listener.socket for listener in self._listeners]

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after ``listen(0)``)."""
        if not self._listeners:
            raise RuntimeError("not listening")
        return int(self._listeners[0].socket.getsockname()[1])

    def statistics(self) -> Statistics:
        """A snapshot of the server's counters."""
        return self._state.statistics()

    async def listen(self, port: int = 0, host: str = "127.0.0.1") -> None:
        """Bind and listen on ``host``:``port`` (port 0 picks a free one). May be repeated.

        Connections are accepted once :meth:`serve_forever` runs (at once, if it already does).
        """
        if self._close_started or self._state.closing:
            raise RuntimeError("the server is closed")
        if self.options.reuse_port:  # trio cannot set SO_REUSEPORT itself
            socks = await trio.to_thread.run_sync(reuse_port_sockets, host, port, 1024)
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in socks]
        else:
            listeners = await trio.open_tcp_listeners(port, host=host, backlog=1024)
        self._listeners += listeners
        self._state.logger.info(
            "listening on %s", [listener.socket.getsockname() for listener in listeners]
        )
        if self._accepting is not None:
            self._accept(listeners)

    async def serve_forever(self) -> None:
        """Accept and serve connections until :meth:`close` has finished (call it from another task)."""
        if not self._listeners:
            raise RuntimeError("call listen() first")
        if self._serving:
            raise RuntimeError("serve_forever() is already running")
        if self._close_started:  # closed before it ever served
            await self._closed.wait()
            return
        self._serving = True
        try:
            async with trio.open_nursery() as sessions:
                async with trio.open_nursery() as accepting:
                    self._sessions, self._accepting = sessions, accepting
                    self._accept(list(self._listeners))  # a copy: listen() may append meanwhile
                    await self._close_requested.wait()
                    # serve_listeners closes its listeners as it unwinds: no new connections from here.
                    accepting.cancel_scope.cancel()
                self._accepting = None
                await self._wind_down()
        finally:
            self._state.closing = True
            self._accepting = self._sessions = None
            for listener in self._listeners:
                listener.socket.close()  # synchronous: this also runs when serve_forever is cancelled
            self._closed.set()
            self._state.logger.info("server closed")

    async def close(self) -> None:
        """Stop accepting, let sessions finish for ``close_timeout``, then send them 421 and close.

        Safe to call more than once and from any task of the server's trio run; returns once closed.
        """
        if self._close_started:
            await self._closed.wait()
            return
        self._close_started = True
        self._state.closing = True
        self._close_requested.set()
        if self._serving:
            await self._closed.wait()  # serve_forever winds the sessions down
            return
        for listener in self._listeners:
            await listener.aclose()
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

    # -- inside serve_forever ---------------------------------------------------------------------------

    def _accept(self, listeners: list[trio.SocketListener]) -> None:
        assert self._accepting is not None
        assert self._sessions is not None
        self._accepting.start_soon(
            functools.partial(
                trio.serve_listeners, self._handle, listeners, handler_nursery=self._sessions
            )
        )

    async def _wind_down(self) -> None:
        await self._wait_idle(self._state.options.close_timeout)
        for connection in list(self._connections):
            connection.interrupt()  # idle sessions get their 421 4.3.2 now
        await self._wait_idle(_HOOK_GRACE)
        for connection in list(self._connections):
            connection.kill()  # the sessions nursery waits for them to unwind

    async def _wait_idle(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            # A loop: a straggler session may start after an earlier idle moment.
            while self._connections:
                await self._idle.wait()

    async def _handle(self, stream: trio.SocketStream) -> None:
        """One accepted connection (serve_listeners closes ``stream`` afterwards, whatever happened)."""
        try:
            remote, local = stream.socket.getpeername(), stream.socket.getsockname()
        except OSError:  # reset before we got to it
            return
        await self._serve_stream(stream, remote, local)

    async def _serve_stream(self, stream: trio.abc.Stream, remote: Any, local: Any) -> None:
        """Run one session over any trio stream (a socket, or a memory stream in the tests)."""
        connection = _Connection(stream, remote, local, self._state)
        if not self._connections:
            self._idle = trio.Event()
        self._connections.add(connection)
        # run_session handles its own errors; the except only keeps a bug from crashing the whole nursery.
        if connection.watched and self._sessions is not None:
            self._sessions.start_soon(connection.watch)
        try:
            with connection.scope:
                await run_session(self._state, connection, self._runner)
        except Exception:
            self._state.count("errors")
            self._state.logger.exception("session task failed")
        finally:
            connection.unwatch()
            self._connections.discard(connection)
            if not self._connections:
                self._idle.set()


class _Runner:
    """Hooks are awaited in the session's task; reverse DNS runs in trio's resolver thread."""

    def __init__(self, on_close: Hook | None) -> None:
        self._on_close = on_close

    async def call(self, hook: Hook, *args: Any) -> Any:
        if hook is self._on_close and trio.current_effective_deadline() == -math.inf:
            # The session is being cancelled (close() ran out of patience, or serve_forever was cancelled):
            # on_close still runs once, shielded from that cancellation but bounded.
            with trio.CancelScope(shield=True), trio.move_on_after(_ON_CLOSE_GRACE):
                return await hook(*args)
            return None
        return await hook(*args)

    def data_stream(self, source: MessageSource) -> AsyncStream:
        return AsyncStream(source)

    async def reverse_lookup(self, address: str, timeout: float) -> str | None:
        with trio.move_on_after(timeout):  # the lookup thread is abandoned, not waited for
            try:
                host, _ = await trio.socket.getnameinfo((address, 0), socket.NI_NAMEREQD)
            except (OSError, UnicodeError):
                return None
            return str(host)
        return None


_RECEIVING, _SENDING = 1, 2


class _Connection:
    """One connection: the pump's Transport over a trio stream (a ``trio.SSLStream`` after TLS starts).

    On a plain socket the timeouts cost no cancel scope per receive or send (trio charges ~15 µs for
    each): a watchdog task per connection sleeps until the earliest moment the current wait could time
    out, and when a wait really has, wakes it with ``trio.lowlevel.notify_closing`` (which leaves the
    socket usable, so the 421 still goes out). Every wait is ``socket_timeout`` long, so a wait that starts
    later never needs an earlier wake-up: the watchdog re-checks lazily, like the asyncio backend's timer.
    After STARTTLS (or on other streams) each wait gets its own cancel scope instead.
    """

    def __init__(
        self, stream: trio.abc.Stream, remote: Any, local: Any, state: ServerState
    ) -> None:
        self.remote_address, self.remote_port = str(remote[0]), int(remote[1])
        self.local_address, self.local_port = str(local[0]), int(local[1])
        self._raw = stream
        self._stream: trio.abc.Stream = stream
        self._state = state
        self._timeout = state.options.socket_timeout
        #: The whole session; cancelled by kill().
        self.scope = trio.CancelScope()
        self._receive_scope: trio.CancelScope | None = None
        self._interrupted = False
        self._closed = False
        self._sending = False
        #: The plain socket the watchdog guards (None: scoped waits, as after STARTTLS).
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._waiting = 0  # _RECEIVING or _SENDING while a wait on self._sock is in progress
        self._wait_started = 0.0
        self._tripped = False  # the watchdog timed the current wait out
        self._watch_scope = trio.CancelScope()
        self._first_wake = trio.current_time() + self._timeout

    @property
    def watched(self) -> bool:
        """Whether this connection needs its :meth:`watch` task."""
        return self._sock is not None

    async def watch(self) -> None:
        """The watchdog: time out the wait in progress once it has lasted ``socket_timeout``."""
        timeout = self._timeout
        wake = self._first_wake
        with self._watch_scope:
            while True:
                await trio.sleep_until(wake)
                now = trio.current_time()
                if self._waiting and self._sock is not None:
                    deadline = self._wait_started + timeout
                    if now < deadline:
                        wake = deadline
                        continue
                    self._tripped = True
                    trio.lowlevel.notify_closing(self._sock)
                wake = now + timeout

    def unwatch(self) -> None:
        """End the watchdog (the session is over)."""
        self._watch_scope.cancel()

    def interrupt(self) -> None:
        """Ask the session to end: its current or next receive raises ShutdownRequested."""
        self._interrupted = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        if self._waiting == _RECEIVING and self._sock is not None:
            trio.lowlevel.notify_closing(self._sock)

    def kill(self) -> None:
        """Cancel the session wherever it is (its cleanup still runs, shielded and bounded)."""
        self.scope.cancel()

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        if self._interrupted:
            raise ShutdownRequested
        sock = self._sock
        if sock is not None and timeout == self._timeout:
            self._waiting, self._wait_started = _RECEIVING, trio.current_time()
            try:
                # recv(n) takes at most n octets off the socket and leaves the rest (receive_before_tls).
                return await sock.recv(max_bytes)  # b"" at EOF
            except trio.ClosedResourceError as exc:  # notify_closing: interrupt() or the watchdog
                if self._interrupted:
                    raise ShutdownRequested from None
                if self._tripped:
                    raise TimeoutError from None
                raise ConnectionResetError(_reason(exc)) from exc
            finally:
                self._waiting, self._tripped = 0, False
        # Cancelling a receive loses nothing: trio hands over bytes atomically, SSLStream included
        # (outside a handshake), so a timeout or interrupt() can cut in at any point.
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            self._receive_scope = scope
            try:
                return bytes(await self._stream.receive_some(max_bytes))  # b"" at EOF
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionResetError(_reason(exc)) from exc
            finally:
                self._receive_scope = None
        if self._interrupted:
            raise ShutdownRequested
        raise TimeoutError

    async def receive_before_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        # receive_some(n) returns at most n octets and leaves the rest in the stream (a trio.SocketStream
        # is one socket.recv(n), no read-ahead), so the SSLStream built on it gets the whole ClientHello.
        return await self.receive(max_bytes, timeout)

    async def send(self, data: bytes) -> None:
        # One task at a time: a plain flag catches a second writer (a bug) as SendGuard does, for less.
        if self._sending:
            raise RuntimeError("another task or thread is already sending on this connection")
        self._sending = True
        sock = self._sock
        if sock is not None:
            self._waiting, self._wait_started = _SENDING, trio.current_time()
            try:
                view = memoryview(data)
                while view:
                    view = view[await sock.send(view) :]
                    if self._tripped:  # timed out between two partial sends
                        raise trio.ClosedResourceError
            except trio.ClosedResourceError as exc:  # the watchdog, or the socket was closed
                if self._tripped:
                    raise TimeoutError("the client does not read its replies") from None
                raise ConnectionResetError(_reason(exc)) from exc
            finally:
                self._waiting, self._tripped, self._sending = 0, False, False
            return
        try:
            # A cancelled send_all leaves the stream broken; the pump never writes again after it.
            with trio.fail_after(self._timeout):
                await self._stream.send_all(data)
        except trio.TooSlowError:
            raise TimeoutError("the client does not read its replies") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(_reason(exc)) from exc
        finally:
            self._sending = False

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        # Nothing to discard here: the pump's receive never reads past what it asked for, and the core
        # already dropped whatever it had buffered after STARTTLS.
        self._sock = None  # the watchdog leaves TLS waits to their own cancel scopes
        stream = trio.SSLStream(self._stream, context, server_side=True)
        self._stream = stream  # from here on aclose() closes the TLS stream
        try:
            with (
                capture_servername() as names,
                trio.fail_after(math.inf if timeout is None else timeout),
            ):
                await stream.do_handshake()
        except trio.TooSlowError:
            raise TimeoutError("TLS handshake timed out") from None
        except trio.BrokenResourceError as exc:
            raise ConnectionResetError(_reason(exc)) from exc
        return tls_info(stream, names[0] if names else None)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Shielded, so that a cancelled session still releases its socket; bounded, because a TLS
        # close_notify can block on a client that never reads (SSLStream then closes the socket itself).
        with trio.CancelScope(shield=True):
            with trio.move_on_after(min(self._timeout, 5.0)):
                try:
                    await self._stream.aclose()
                except (trio.BrokenResourceError, OSError) as exc:
                    self._state.logger.debug("closing the connection: %s", exc)
            if self._stream is not self._raw:
                await trio.aclose_forcefully(self._raw)


def _reason(exc: BaseException) -> str:
    """The underlying error of a trio stream exception, for the log."""
    return str(exc.__cause__ or exc) or type(exc).__name__
