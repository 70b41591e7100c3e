"""The trio server's connections: the pump's Transport over a trio socket, and the idle watchdog.

An accepted connection works on the bare socket with trio's low-level waits, suspending only when the socket
is not ready; the server's one :class:`Watchdog` task times those waits out. TLS stays on that socket too
(a stdlib ``ssl.SSLSocket``): ``trio.SSLStream`` is pure Python over a memory BIO, and costs twice as much
CPU per record. Only a stream handed to the server uses trio streams, ``trio.SSLStream`` included, with a
cancel scope for each wait.
"""

from __future__ import annotations

import collections
import math
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ._server import ServerState
from ._session import TLSInfo
from ._tls import capture_servername
from ._transport import ShutdownRequested, stream_error_reason, tls_info

__all__ = ["Connection", "Watchdog"]

_RECEIVING, _SENDING = 1, 2


class Watchdog:
    """Times out the socket waits of every accepted connection of a server, from one task.

    A cancel scope per wait would cost ~15 µs each, and a watchdog task per connection costs more than a
    short session's replies. Every wait is ``socket_timeout`` long, so the connections, kept in the order
    their current waits started (a wait moves its connection to the end), time out in that order: the
    task sleeps until the first one's deadline, and when a wait really has lasted that long, wakes it with
    ``trio.lowlevel.notify_closing`` (which leaves the socket usable, so the 421 still goes out). A wait
    that starts later never needs an earlier wake-up: like the asyncio backend's timer, it re-checks lazily.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        #: The connections on a socket, the one whose wait started first at the front.
        self.order: collections.OrderedDict[Connection, None] = collections.OrderedDict()
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


class Connection:
    """One connection: the pump's Transport over a socket, or over a trio stream.

    An accepted connection is a bare non-blocking stdlib socket: a ``send`` that fits in the socket's
    buffer (nearly all of them) is one ``socket.send`` that never suspends, and a ``receive`` is one
    checkpoint and a ``recv``, waiting with ``trio.lowlevel.wait_readable`` only when nothing has arrived
    yet; the server's :class:`Watchdog` times those waits out. STARTTLS (or implicit TLS) wraps the socket
    in an ``ssl.SSLSocket`` and keeps all of that: its ``recv``/``send`` raise ``SSLWantReadError`` or
    ``SSLWantWriteError`` (either one, from either call) where a plain socket raises ``BlockingIOError``.
    A stream handed to the server (the tests run sessions over memory streams) gets a cancel scope for
    each wait instead, and ``trio.SSLStream`` for TLS.
    """

    def __init__(
        self,
        stream: trio.abc.Stream | None,
        sock: socket.socket | None,
        remote: Any,
        local: Any,
        state: ServerState,
        scope: trio.CancelScope,
        watchdog: Watchdog | None = None,
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
        #: The socket, plain or (after the handshake) an ssl.SSLSocket; None: a stream from the start.
        self._sock = sock
        #: The TLS session on self._sock is established and intact: aclose() sends close_notify.
        self._tls_open = False
        self._watchdog = watchdog
        self.waiting = 0  # _RECEIVING or _SENDING while a watched wait on self._sock is in progress
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
        if sock is None:
            return await self._receive_scoped(max_bytes, timeout)
        # A checkpoint first, as trio's own socket methods have one: it lets the other sessions run (and
        # gives the client time to answer, so that the recv below mostly succeeds without a wait).
        await trio.lowlevel.checkpoint()
        if self._interrupted:
            raise ShutdownRequested
        # Always a recv before any wait: an SSLSocket may hold decrypted bytes (pending()) that the
        # kernel socket will never signal as readable.
        try:
            # recv(n) takes at most n octets off the socket and leaves the rest (receive_before_tls).
            return sock.recv(max_bytes)  # b"" at EOF
        except (BlockingIOError, ssl.SSLWantReadError):
            wait = trio.lowlevel.wait_readable
        except ssl.SSLWantWriteError:
            wait = trio.lowlevel.wait_writable
        except OSError:
            self._tls_open = False  # a broken TLS session gets no close_notify
            raise
        if timeout != self._timeout:  # not the watchdog's timeout: a cancel scope of its own
            return await self._receive_socket_scoped(sock, max_bytes, timeout, wait)
        self._start_wait(_RECEIVING)
        try:
            return await _recv_when_ready(sock, max_bytes, wait)
        except trio.ClosedResourceError as exc:  # notify_closing: interrupt() or the watchdog
            if self._interrupted:
                raise ShutdownRequested from None
            if self.tripped:
                raise TimeoutError from None
            self._tls_open = False
            raise ConnectionResetError(stream_error_reason(exc)) from exc
        except OSError:
            self._tls_open = False
            raise
        finally:
            self.waiting, self.tripped = 0, False

    async def _receive_socket_scoped(
        self, sock: socket.socket, max_bytes: int, timeout: float | None, wait: _Wait
    ) -> bytes:
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            self._receive_scope = scope
            try:
                return await _recv_when_ready(sock, max_bytes, wait)
            except trio.ClosedResourceError as exc:
                raise ConnectionResetError(stream_error_reason(exc)) from exc
            finally:
                self._receive_scope = None
        if self._interrupted:
            raise ShutdownRequested
        raise TimeoutError

    async def _receive_scoped(self, max_bytes: int, timeout: float | None) -> bytes:
        # Cancelling a receive loses nothing: trio hands over bytes atomically, SSLStream included
        # (outside a handshake), so a timeout or interrupt() can cut in at any point.
        with trio.move_on_after(math.inf if timeout is None else timeout) as scope:
            self._receive_scope = scope
            try:
                return bytes(await self._as_stream().receive_some(max_bytes))  # b"" at EOF
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionResetError(stream_error_reason(exc)) from exc
            finally:
                self._receive_scope = None
        if self._interrupted:
            raise ShutdownRequested
        raise TimeoutError

    async def receive_before_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        # recv(n) and receive_some(n) return at most n octets and leave the rest in the socket (a
        # stream is only ever a test's, no read-ahead), so the handshake gets the whole ClientHello.
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
        except (BlockingIOError, ssl.SSLWantWriteError):
            sent, wait = 0, trio.lowlevel.wait_writable
        except ssl.SSLWantReadError:
            sent, wait = 0, trio.lowlevel.wait_readable
        except OSError:
            self._tls_open = False
            raise
        else:
            wait = trio.lowlevel.wait_writable
        if sent < len(data):
            # After a want-error an SSLSocket needs the same bytes again: view[0:] is just that.
            await self._send_rest(sock, memoryview(data)[sent:], wait)

    async def _send_rest(self, sock: socket.socket, view: memoryview, wait: _Wait) -> None:
        self._sending = True
        self._start_wait(_SENDING)
        try:
            while view:
                if self.tripped:  # timed out between two partial sends
                    raise trio.ClosedResourceError
                await wait(sock)
                try:
                    view = view[sock.send(view) :]
                except (BlockingIOError, ssl.SSLWantWriteError):
                    wait = trio.lowlevel.wait_writable
                except ssl.SSLWantReadError:
                    wait = trio.lowlevel.wait_readable
        except trio.ClosedResourceError as exc:  # the watchdog, or the socket was closed
            self._tls_open = False  # a TLS record may be half written: no close_notify after it
            if self.tripped:
                raise TimeoutError("the client does not read its replies") from None
            raise ConnectionResetError(stream_error_reason(exc)) from exc
        except BaseException:  # an OSError, or cancelled mid-record
            self._tls_open = False
            raise
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
            raise ConnectionResetError(stream_error_reason(exc)) from exc
        finally:
            self._sending = False

    def _as_stream(self) -> trio.abc.Stream:
        """The stream this connection was made for (only a connection without a socket has one)."""
        assert self._stream is not None
        return self._stream

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        # Nothing to discard here: the pump's receive never reads past what it asked for, and the core
        # already dropped whatever it had buffered after STARTTLS. Plaintext the client sent after
        # STARTTLS is still in the kernel, and goes to the handshake (which fails on it), never decrypted.
        sock = self._sock
        if sock is None:
            return await self._start_tls_stream(context, timeout)
        # wrap_socket takes the descriptor over (sock is detached), keeping it non-blocking.
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        self._sock = tls
        # One cancel scope for the whole handshake: a single wait would not do, it takes several.
        with trio.move_on_after(math.inf if timeout is None else timeout):
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    await trio.lowlevel.wait_readable(tls)
                except ssl.SSLWantWriteError:
                    await trio.lowlevel.wait_writable(tls)
            self._tls_open = True
            setup = self._state.tls
            # The SNI callback saw this very SSLSocket: TLSSetup kept the name under it.
            return tls_info(tls, setup.servername(tls) if setup is not None else None)
        raise TimeoutError("TLS handshake timed out")

    async def _start_tls_stream(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
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
            raise ConnectionResetError(stream_error_reason(exc)) from exc
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

    async def aclose(self) -> None:
        sock = self._sock
        if sock is not None:
            if self._tls_open and not self._closed:
                await self._close_notify(sock)
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

    async def _close_notify(self, sock: socket.socket) -> None:
        """Send close_notify, as trio.SSLStream does: without waiting for the client's."""
        assert isinstance(sock, ssl.SSLSocket)
        self._tls_open = False
        # Shielded, so that a cancelled session still says goodbye; bounded, because it can block on a
        # client that never reads.
        with trio.CancelScope(shield=True), trio.move_on_after(min(self._timeout, 5.0)):
            while True:
                try:
                    sock.unwrap()  # both close_notify alerts are through
                    return
                except ssl.SSLWantReadError:
                    return  # ours is sent; the client's is not worth a wait
                except ssl.SSLWantWriteError:
                    await trio.lowlevel.wait_writable(sock)
                except (OSError, ValueError) as exc:
                    self._state.logger.debug("closing the connection: %s", exc)
                    return


_Wait = Callable[[socket.socket], Awaitable[None]]


async def _recv_when_ready(sock: socket.socket, max_bytes: int, wait: _Wait) -> bytes:
    """``sock.recv(max_bytes)`` once ``wait`` says it can proceed; the wait may change on the way."""
    while True:
        await wait(sock)
        try:
            return sock.recv(max_bytes)
        except (BlockingIOError, ssl.SSLWantReadError):
            wait = trio.lowlevel.wait_readable
        except ssl.SSLWantWriteError:
            wait = trio.lowlevel.wait_writable
