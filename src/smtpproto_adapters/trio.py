"""SMTPServer on trio: a nursery holds the sessions, ``trio.SSLStream`` does TLS.

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

import collections
import contextlib
import errno
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
#: At most this many connections are accepted in a row before the accepting task yields.
_ACCEPT_BATCH = 16
#: accept() errors that say the process ran out of something: back off, as trio.serve_listeners does.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_ACCEPT_RETRY_DELAY = 0.1
#: accept() errors about that one connection only (the same list as trio.SocketListener's).
_IGNORABLE_ACCEPT_ERRNOS = {
    getattr(errno, name)
    for name in [
        *("EPERM", "ECONNABORTED", "EPROTO", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN", "ENONET"),
        *("EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH", "ENOSR", "ESOCKTNOSUPPORT"),
        *("EPROTONOSUPPORT", "ETIMEDOUT", "ECONNRESET"),
    ]
    if hasattr(errno, name)
}


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
        #: The same listening sockets as stdlib sockets: the accept loops use them directly.
        self._listening: list[socket.socket] = []
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
        self._watchdog = _Watchdog(self._state.options.socket_timeout)

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
        else:
            # The accept loops work on stdlib sockets (see _accept_loop): take trio's over.
            opened = await trio.open_tcp_listeners(port, host=host, backlog=1024)
            socks = [socket.socket(fileno=listener.socket.detach()) for listener in opened]
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in socks]
        self._listeners += listeners
        self._listening += socks
        self._state.logger.info(
            "listening on %s", [listener.socket.getsockname() for listener in listeners]
        )
        if self._accepting is not None:
            self._accept(list(zip(listeners, socks, strict=True)))

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
                sessions.start_soon(self._watchdog.run)
                async with trio.open_nursery() as accepting:
                    self._sessions, self._accepting = sessions, accepting
                    # A copy: listen() may append meanwhile.
                    self._accept(list(zip(self._listeners, self._listening, strict=True)))
                    await self._close_requested.wait()
                    # The accept loops close their listeners as they unwind: no new connections from here.
                    accepting.cancel_scope.cancel()
                self._accepting = None
                await self._wind_down()
                self._watchdog.scope.cancel()  # every session has ended, or been cancelled
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

    def _accept(self, listeners: list[tuple[trio.SocketListener, socket.socket]]) -> None:
        assert self._accepting is not None
        for listener, sock in listeners:
            self._accepting.start_soon(self._accept_loop, listener, sock)

    async def _accept_loop(self, listener: trio.SocketListener, sock: socket.socket) -> None:
        """Accept connections on one listening socket and start a session task for each.

        Not ``trio.serve_listeners``: it wraps each connection in a ``trio.SocketStream`` and a handler
        task that closes it forcefully afterwards, which costs more per connection than all of a short
        session's replies. Here a session starts with a bare stdlib socket (see :class:`_Connection`).
        """
        sessions = self._sessions
        assert sessions is not None
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                for _ in range(_ACCEPT_BATCH):
                    try:
                        client, _ = sock.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:
                        if exc.errno in _IGNORABLE_ACCEPT_ERRNOS:
                            continue
                        if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                            raise
                        self._state.logger.error(
                            "accept failed (%s); retrying in %ss", exc, _ACCEPT_RETRY_DELAY
                        )
                        await trio.sleep(_ACCEPT_RETRY_DELAY)
                        break
                    sessions.start_soon(self._serve_socket, client, sessions.cancel_scope)
        finally:
            listener.socket.close()  # synchronous, so that it also happens when cancelled

    async def _wind_down(self) -> None:
        await self._wait_idle(self._state.options.close_timeout)
        for connection in list(self._connections):
            connection.interrupt()  # idle sessions get their 421 4.3.2 now
        await self._wait_idle(_HOOK_GRACE)
        for connection in list(self._connections):
            connection.kill()  # the sessions nursery waits for them to unwind (see _serve_socket)

    async def _wait_idle(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            # A loop: a straggler session may start after an earlier idle moment.
            while self._connections:
                await self._idle.wait()

    async def _serve_socket(self, sock: socket.socket, sessions: trio.CancelScope) -> None:
        """One accepted connection; its socket is closed when the session ends, whatever happened.

        It needs no cancel scope of its own: kill() only ever comes for every session at once, so it
        cancels the sessions nursery (``sessions``) instead.
        """
        try:
            sock.setblocking(False)
            remote, local = sock.getpeername(), sock.getsockname()
            # As trio.SocketStream does: a reply is one write, and should leave at once.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # reset before we got to it
            sock.close()
            return
        connection = _Connection(None, sock, remote, local, self._state, sessions, self._watchdog)
        self._started(connection)
        try:
            await run_session(self._state, connection, self._runner)
        except Exception:  # a bug (run_session handles its own errors): keep the other sessions
            self._state.count("errors")
            self._state.logger.exception("session task failed")
        finally:
            connection.release()
            self._ended(connection)

    async def _serve_stream(self, stream: trio.abc.Stream, remote: Any, local: Any) -> None:
        """Run one session over any trio stream (a memory stream in the tests), in its own cancel scope."""
        connection = _Connection(stream, None, remote, local, self._state, trio.CancelScope())
        self._started(connection)
        try:
            with connection.scope:
                await run_session(self._state, connection, self._runner)
        except Exception:  # a bug (run_session handles its own errors): keep the other sessions
            self._state.count("errors")
            self._state.logger.exception("session task failed")
        finally:
            self._ended(connection)

    def _started(self, connection: _Connection) -> None:
        if not self._connections:
            self._idle = trio.Event()
        self._connections.add(connection)

    def _ended(self, connection: _Connection) -> None:
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


class _Watchdog:
    """Times out the socket waits of every plain connection of a server, from one task.

    A cancel scope per wait would cost ~15 µs each, and a watchdog task per connection costs more than a
    short session's replies. Every wait is ``socket_timeout`` long, so the connections, kept in the order
    their current waits started (a wait moves its connection to the end), time out in that order: the
    task sleeps until the first one's deadline, and when a wait really has lasted that long, wakes it with
    ``trio.lowlevel.notify_closing`` (which leaves the socket usable, so the 421 still goes out). A wait
    that starts later never needs an earlier wake-up: like the asyncio backend's timer, it re-checks lazily.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: The connections on a plain socket, the one whose wait started first at the front.
        self.order: collections.OrderedDict[_Connection, None] = collections.OrderedDict()
        self.scope = trio.CancelScope()

    async def run(self) -> None:
        timeout, order = self.timeout, self.order
        with self.scope:
            wake = trio.current_time() + timeout
            while True:
                await trio.sleep_until(wake)
                now = trio.current_time()
                wake = now + timeout  # for a wait that starts after now
                for _ in range(len(order)):
                    connection = next(iter(order))
                    if connection.waiting and not connection.tripped:
                        deadline = connection.wait_started + timeout
                        if now < deadline:
                            wake = deadline  # the waits further on started later still
                            break
                        connection.trip()
                    # Not waiting (its next wait moves it back to the end), or just timed out.
                    order.move_to_end(connection)


class _Connection:
    """One connection: the pump's Transport over a plain socket, or over a trio stream.

    An accepted connection starts as a bare non-blocking stdlib socket: a ``send`` that fits in the
    socket's buffer (nearly all of them) is one ``socket.send`` that never suspends, and a ``receive`` is
    one checkpoint and a ``recv``, waiting with ``trio.lowlevel.wait_readable`` only when nothing has
    arrived yet; the server's :class:`_Watchdog` times those waits out. After STARTTLS the socket becomes
    a ``trio.SSLStream`` over a ``trio.SocketStream``, and each wait gets its own cancel scope instead, as
    on any other stream (the tests run sessions over memory streams).
    """

    def __init__(
        self,
        stream: trio.abc.Stream | None,
        sock: socket.socket | None,
        remote: Any,
        local: Any,
        state: ServerState,
        scope: trio.CancelScope,
        watchdog: _Watchdog | None = None,
    ) -> None:
        self.remote_address, self.remote_port = str(remote[0]), int(remote[1])
        self.local_address, self.local_port = str(local[0]), int(local[1])
        self._raw = stream
        self._stream = stream
        self._state = state
        self._timeout = state.options.socket_timeout
        #: What kill() cancels: the session's own scope, or the nursery of all sessions.
        self.scope = scope
        self._receive_scope: trio.CancelScope | None = None
        self._interrupted = False
        self._closed = False
        self._sending = False
        #: The plain socket, until STARTTLS turns it into a stream (None: a stream from the start).
        self._sock = sock
        self._watchdog = watchdog
        self.waiting = 0  # _RECEIVING or _SENDING while a wait on self._sock is in progress
        self.wait_started = 0.0
        self.tripped = False  # the watchdog timed the current wait out
        if watchdog is not None:
            watchdog.order[self] = None

    def trip(self) -> None:
        """The watchdog's verdict: the current wait has timed out."""
        self.tripped = True
        if self._sock is not None:
            trio.lowlevel.notify_closing(self._sock)

    def _start_wait(self, kind: int) -> None:
        self.waiting, self.wait_started = kind, trio.current_time()
        if self._watchdog is not None:
            self._watchdog.order.move_to_end(self)

    def _unwatch(self) -> None:
        if self._watchdog is not None:
            self._watchdog.order.pop(self, None)
            self._watchdog = None

    def interrupt(self) -> None:
        """Ask the session to end: its current or next receive raises ShutdownRequested."""
        self._interrupted = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        if self.waiting == _RECEIVING and self._sock is not None:
            trio.lowlevel.notify_closing(self._sock)

    def kill(self) -> None:
        """Cancel the session wherever it is (its cleanup still runs, shielded and bounded)."""
        self.scope.cancel()

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        if self._interrupted:
            raise ShutdownRequested
        sock = self._sock
        if sock is None or timeout != self._timeout:
            return await self._receive_scoped(max_bytes, timeout)
        # A checkpoint first, as trio's own socket methods have one: it lets the other sessions run (and
        # gives the client time to answer, so that the recv below mostly succeeds without a wait).
        await trio.lowlevel.checkpoint()
        if self._interrupted:
            raise ShutdownRequested
        try:
            # recv(n) takes at most n octets off the socket and leaves the rest (receive_before_tls).
            return sock.recv(max_bytes)  # b"" at EOF
        except BlockingIOError:
            pass
        self._start_wait(_RECEIVING)
        try:
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    return sock.recv(max_bytes)
                except BlockingIOError:
                    pass
        except trio.ClosedResourceError as exc:  # notify_closing: interrupt() or the watchdog
            if self._interrupted:
                raise ShutdownRequested from None
            if self.tripped:
                raise TimeoutError from None
            raise ConnectionResetError(_reason(exc)) from exc
        finally:
            self.waiting, self.tripped = 0, False

    async def _receive_scoped(self, max_bytes: int, timeout: float | None) -> bytes:
        # Cancelling a receive loses nothing: trio hands over bytes atomically, SSLStream included
        # (outside a handshake), so a timeout or interrupt() can cut in at any point.
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            self._receive_scope = scope
            try:
                return bytes(await self._as_stream().receive_some(max_bytes))  # b"" at EOF
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionResetError(_reason(exc)) from exc
            finally:
                self._receive_scope = None
        if self._interrupted:
            raise ShutdownRequested
        raise TimeoutError

    async def receive_before_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        # recv(n) and receive_some(n) return at most n octets and leave the rest in the socket (a
        # trio.SocketStream is one socket.recv(n), no read-ahead), so the SSLStream gets the whole ClientHello.
        return await self.receive(max_bytes, timeout)

    async def send(self, data: bytes) -> None:
        # One task at a time: a plain flag catches a second writer (a bug) as SendGuard does, for less.
        if self._sending:
            raise RuntimeError("another task or thread is already sending on this connection")
        sock = self._sock
        if sock is None:
            await self._send_scoped(data)
            return
        # No checkpoint when it all fits in the socket's buffer: the pump receives next, and that is one.
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent < len(data):
            await self._send_rest(sock, memoryview(data)[sent:])

    async def _send_rest(self, sock: socket.socket, view: memoryview) -> None:
        self._sending = True
        self._start_wait(_SENDING)
        try:
            while view:
                if self.tripped:  # timed out between two partial sends
                    raise trio.ClosedResourceError
                await trio.lowlevel.wait_writable(sock)
                with contextlib.suppress(BlockingIOError):
                    view = view[sock.send(view) :]
        except trio.ClosedResourceError as exc:  # the watchdog, or the socket was closed
            if self.tripped:
                raise TimeoutError("the client does not read its replies") from None
            raise ConnectionResetError(_reason(exc)) from exc
        finally:
            self.waiting, self.tripped, self._sending = 0, False, False

    async def _send_scoped(self, data: bytes) -> None:
        self._sending = True
        try:
            # A cancelled send_all leaves the stream broken; the pump never writes again after it.
            with trio.fail_after(self._timeout):
                await self._as_stream().send_all(data)
        except trio.TooSlowError:
            raise TimeoutError("the client does not read its replies") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionResetError(_reason(exc)) from exc
        finally:
            self._sending = False

    def _as_stream(self) -> trio.abc.Stream:
        """The connection as a trio stream; a plain socket becomes a ``trio.SocketStream`` for good."""
        if self._stream is None:
            assert self._sock is not None
            self._unwatch()  # from here on each wait has its own cancel scope
            self._stream = self._raw = trio.SocketStream(trio.socket.from_stdlib_socket(self._sock))
            self._sock = None
        return self._stream

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        # Nothing to discard here: the pump's receive never reads past what it asked for, and the core
        # already dropped whatever it had buffered after STARTTLS.
        stream = trio.SSLStream(self._as_stream(), context, server_side=True)
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

    def release(self) -> None:
        """Close the socket at once, if it is still open (the end of every accepted connection)."""
        sock = self._sock
        if sock is not None and not self._closed:
            self._closed = True
            self._unwatch()
            # Every send has completed by now (nothing is buffered here): closing is all there is to do.
            # No notify_closing: only this task ever waits on the socket, and it is not waiting now (a
            # finished or cancelled wait leaves nothing registered with trio).
            sock.close()
        elif isinstance(self._raw, trio.SocketStream):
            self._raw.socket.close()  # after STARTTLS: aclose() normally did this already

    async def aclose(self) -> None:
        if self._sock is not None:
            self.release()
            return
        if self._closed or self._stream is None:
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
            if self._raw is not None and self._stream is not self._raw:
                await trio.aclose_forcefully(self._raw)


def _reason(exc: BaseException) -> str:
    """The underlying error of a trio stream exception, for the log."""
    return str(exc.__cause__ or exc) or type(exc).__name__
