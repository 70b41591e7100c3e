"""SMTPServer on trio: a nursery holds the sessions, which run on the bare sockets (TLS through the stdlib ``ssl``).

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

import errno
import math
import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import trio

from ._hooks import Hook, Runner
from ._options import ServerOptions
from ._pump import run_session
from ._server import ServerState, Statistics, build_options
from ._sockets import reuse_port_sockets
from ._stream import AsyncStream, MessageSource
from ._trio_connection import Connection, Watchdog

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
        self._connections: set[Connection] = set()
        self._idle = trio.Event()  # set whenever no session is running
        self._idle.set()
        self._accepting: trio.Nursery | None = None
        self._sessions: trio.Nursery | None = None
        self._close_requested = trio.Event()
        self._closed = trio.Event()
        self._close_started = False
        self._serving = False
        self._runner = _Runner(self._state.hooks.on_close)
        self._watchdog = Watchdog(self._state.options.socket_timeout)

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
        session's replies. Here a session starts with a bare stdlib socket (see :class:`Connection`).
        """
        sessions = self._sessions
        assert sessions is not None
        scope = sessions.cancel_scope
        try:
            await accept_sockets(
                sock,
                self._state,
                lambda client: sessions.start_soon(self._serve_socket, client, scope),
            )
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
        """One accepted connection (see :func:`serve_socket`)."""
        await serve_socket(
            sock, self._state, self._runner, sessions, self._watchdog, self._started, self._ended
        )

    async def _serve_stream(self, stream: trio.abc.Stream, remote: Any, local: Any) -> None:
        """Run one session over any trio stream (a memory stream in the tests), in its own cancel scope."""
        connection = Connection(stream, None, remote, local, self._state, trio.CancelScope())
        self._started(connection)
        try:
            with connection.scope:
                await run_session(self._state, connection, self._runner)
        except Exception:  # a bug (run_session handles its own errors): keep the other sessions
            self._state.count("errors")
            self._state.logger.exception("session task failed")
        finally:
            self._ended(connection)

    def _started(self, connection: Connection) -> None:
        if not self._connections:
            self._idle = trio.Event()
        self._connections.add(connection)

    def _ended(self, connection: Connection) -> None:
        self._connections.discard(connection)
        if not self._connections:
            self._idle.set()


async def accept_sockets(
    sock: socket.socket, state: ServerState, start: Callable[[socket.socket], object]
) -> None:
    """Accept connections on a non-blocking stdlib listening socket forever, ``start(client)`` for each.

    Shared with the anyio server on trio. Closing ``sock`` is up to the caller.
    """
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
                state.logger.error("accept failed (%s); retrying in %ss", exc, _ACCEPT_RETRY_DELAY)
                await trio.sleep(_ACCEPT_RETRY_DELAY)
                break
            start(client)


async def serve_socket(
    sock: socket.socket,
    state: ServerState,
    runner: Runner,
    sessions: trio.CancelScope,
    watchdog: Watchdog,
    started: Callable[[Connection], None],
    ended: Callable[[Connection], None],
) -> None:
    """One accepted connection; its socket is closed when the session ends, whatever happened.

    It needs no cancel scope of its own: kill() only ever comes for every session at once, so it
    cancels the scope of all sessions (``sessions``) instead. Shared with the anyio server on trio.
    """
    try:
        sock.setblocking(False)
        remote, local = sock.getpeername(), sock.getsockname()
        # As trio.SocketStream does: a reply is one write, and should leave at once.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:  # reset before we got to it
        sock.close()
        return
    connection = Connection(None, sock, remote, local, state, sessions, watchdog)
    started(connection)
    try:
        await run_session(state, connection, runner)
    except Exception:  # a bug (run_session handles its own errors): keep the other sessions
        state.count("errors")
        state.logger.exception("session task failed")
    finally:
        connection.release()
        ended(connection)


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
