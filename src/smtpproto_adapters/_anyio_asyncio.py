"""The anyio server's connections when anyio runs on asyncio: an asyncio protocol instead of anyio's stream.

anyio's asyncio ``SocketStream`` resumes the transport's reading for every receive and pauses it again after
(two ``epoll_ctl`` calls and the selector's bookkeeping per command), and wraps each wait in its own event and
checkpoints: together most of the anyio server's cost per command over the asyncio one. This connection
instead is the transport's :class:`asyncio.BufferedProtocol`, registered for reading for its whole life, as
the asyncio backend's is; it uses only public asyncio and anyio API. A wait is a bare future: anyio's cancel
scopes still cancel it (they cancel the task), and the idle timeout is one timer per connection, not a task.
STARTTLS and implicit TLS go through ``anyio.streams.tls.TLSStream`` over this same connection (see
:class:`_PlainStream`), as on anyio's own streams.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from typing import Any, cast

import anyio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSAttribute, TLSStream

from ._server import ServerState
from ._session import TLSInfo
from ._transport import ShutdownRequested

__all__ = ["ProtocolConnection", "address_of"]

# Stop reading the socket while this much received data waits for the pump (TCP back-pressure).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
#: The longest a closing connection may take to flush what it still has to send.
_CLOSE_GRACE = 5.0


def address_of(address: Any) -> tuple[str, int]:
    """Host and port of a socket address, as anyio's ``SocketAttribute.remote_address`` gives them."""
    host, port = str(address[0]), int(address[1])
    if len(address) == 4 and address[3]:  # IPv6 scope, as anyio shows it
        host = f"{host}%{address[3]}"
    return host, port


class ProtocolConnection(asyncio.BufferedProtocol):
    """One connection: the asyncio transport's protocol, and the pump's Transport.

    The transport reads into ``read_buffer`` (shared by the server's connections: :meth:`buffer_updated` copies
    what arrived out of it at once) and :meth:`receive` hands the pump each chunk as it came.
    """

    #: No watchdog task: the idle timeout is a loop timer (see _arm_timer).
    watched = False

    def __init__(
        self,
        state: ServerState,
        read_buffer: memoryview,
        remote: tuple[str, int],
        local: tuple[str, int],
    ) -> None:
        self.remote_address, self.remote_port = remote
        self.local_address, self.local_port = local
        self._state = state
        self._timeout = state.options.socket_timeout
        self._read_buffer = read_buffer
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._chunks: collections.deque[bytes] = collections.deque()  # received, not yet taken
        self._queued = 0  # octets in _chunks
        self._eof = False
        self._error: BaseException | None = None
        self._lost = False
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._abort_handle: asyncio.TimerHandle | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timed: asyncio.Future[None] | None = None  # the wait that the timer times
        self._wait_started = 0.0
        self._wait_timeout = 0.0
        self._interrupted = False
        self._sending = False
        self._closed = False
        #: After STARTTLS (or implicit TLS): the TLS stream every receive and send goes through.
        self._tls: TLSStream | None = None
        self._tls_started = False
        self._receive_scope: anyio.CancelScope | None = None
        #: The whole session; cancelled by kill().
        self.scope = anyio.CancelScope()

    # -- asyncio.BufferedProtocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports have the same methods but are no asyncio.Transport.
        self._transport = cast(asyncio.Transport, transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._chunks.append(self._read_buffer[:nbytes].tobytes())
        self._queued += nbytes
        if self._queued >= _HIGH_WATER and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return True  # keep the transport open for writing: a client may half-close right after QUIT

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._eof = True
        self._error = exc
        for handle in (self._timer, self._abort_handle):
            if handle is not None:
                handle.cancel()
        self._timer = self._abort_handle = None
        self._wake()
        for future in (self._drained, self._closed_waiter):
            if future is not None and not future.done():
                future.set_result(None)

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _wake(self, exc: BaseException | None = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    # -- waiting ----------------------------------------------------------------------------------------

    async def _wait_readable(self, timeout: float | None) -> None:
        """Wait until a chunk or the end of the stream is there (ends with TimeoutError/ShutdownRequested)."""
        self._waiter = self._loop.create_future()
        if timeout is not None:
            self._arm_timer(timeout)
        try:
            await self._waiter
        finally:
            self._waiter = self._timed = None

    def _arm_timer(self, timeout: float) -> None:
        """Time out the wait that starts now after ``timeout`` seconds.

        One timer per connection, not one per wait: a wait only notes when it started, and the timer, when it
        fires, either times out the wait that has lasted long enough or re-arms itself for the current one.
        """
        now = self._loop.time()
        self._timed = self._waiter
        self._wait_started = now
        self._wait_timeout = timeout
        if self._timer is None or self._timer.when() > now + timeout:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(now + timeout, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        if self._timed is None or self._timed.done():
            return  # not waiting: the next wait arms a new timer
        deadline = self._wait_started + self._wait_timeout
        if self._loop.time() >= deadline:
            self._wake(TimeoutError())
        else:
            self._timer = self._loop.call_at(deadline, self._timer_fired)

    def _take(self, max_bytes: int) -> bytes:
        """The next received chunk (at most ``max_bytes``), ``b""`` at the end; raises on a lost connection."""
        if self._chunks:
            data = self._chunks.popleft()
            if len(data) > max_bytes:
                self._chunks.appendleft(data[max_bytes:])
                data = data[:max_bytes]
            self._queued -= len(data)
            if self._reading_paused and self._queued < _LOW_WATER and self._transport:
                self._reading_paused = False
                self._transport.resume_reading()
            return data
        if self._error is not None:
            raise ConnectionResetError(str(self._error) or type(self._error).__name__)
        return b""

    def _write_now(self, data: bytes) -> asyncio.Transport:
        """Hand ``data`` to the transport, which sends at once what the kernel takes and buffers the rest."""
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the connection is closed")
        transport.write(data)
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

    def interrupt(self) -> None:
        """Ask the session to end: its current or next receive raises ShutdownRequested."""
        self._interrupted = True
        if self._receive_scope is not None:
            self._receive_scope.cancel()
        elif not self._tls_started:  # a handshake in progress runs on to its own timeout
            self._wake(ShutdownRequested())

    def kill(self) -> None:
        """Cancel the session wherever it is (its cleanup still runs, shielded and bounded)."""
        self.scope.cancel()

    # -- the pump's Transport -----------------------------------------------------------------------------

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        if self._interrupted:
            raise ShutdownRequested
        if self._tls is not None:
            return await self._receive_tls(max_bytes, timeout)
        if not self._chunks and not self._eof:
            await self._wait_readable(timeout)
        return self._take(max_bytes)

    async def receive_before_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        # Whatever arrives beyond max_bytes stays queued here, and the TLS stream reads it from the same queue.
        return await self.receive(max_bytes, timeout)

    async def _receive_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        assert self._tls is not None
        # A timer cannot end this wait: an error from below would break the TLS stream, which still has to
        # send the 421. Cancelling loses nothing (TLSStream and this connection keep unread data buffered).
        with anyio.move_on_after(timeout) as scope:
            self._receive_scope = scope
            try:
                return await self._tls.receive(max_bytes)
            except anyio.EndOfStream:
                return b""  # the core's single EOF convention
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                raise ConnectionResetError(_reason(exc)) from exc
            finally:
                self._receive_scope = None
        if self._interrupted:
            raise ShutdownRequested
        raise TimeoutError

    async def send(self, data: bytes) -> None:
        # One task at a time: a plain flag catches a second writer (a bug) as SendGuard does, for less.
        if self._sending:
            raise RuntimeError("another task or thread is already sending on this connection")
        self._sending = True
        try:
            # A cancelled or timed-out send leaves the stream broken; the pump never writes again after it.
            if self._tls is not None:
                with anyio.fail_after(self._timeout):
                    await self._tls.send(data)
                return
            transport = self._write_now(data)
            if self._writing_paused:
                with anyio.fail_after(self._timeout):
                    await self._drain(transport)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise ConnectionResetError(_reason(exc)) from exc
        finally:
            self._sending = False

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        self._tls_started = True
        if not self._state.options.secure:
            # After STARTTLS, anything still queued came before the 220 went out (this connection writes
            # without yielding): plaintext to drop, never to decrypt. With implicit TLS it is the ClientHello.
            self._chunks.clear()
            self._queued = 0
            if self._reading_paused and self._transport is not None:
                self._reading_paused = False
                self._transport.resume_reading()
        try:
            with anyio.fail_after(timeout):
                stream = await TLSStream.wrap(
                    _PlainStream(self), server_side=True, ssl_context=context
                )
        except (anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            raise ConnectionResetError(_reason(exc)) from exc
        self._tls = stream
        ssl_object = stream.extra(TLSAttribute.ssl_object)
        cipher = stream.extra(TLSAttribute.cipher)
        tls = self._state.tls
        return TLSInfo(
            servername=tls.servername(ssl_object) if tls else None,
            protocol=stream.extra(TLSAttribute.tls_version),
            cipher=cipher[0] if cipher else "",
        )

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
        if self._tls is not None:
            # Shielded, so that a cancelled session still says goodbye; bounded, because TLSStream waits for
            # the client's close_notify. It closes the transport itself.
            with anyio.CancelScope(shield=True), anyio.move_on_after(grace):
                try:
                    await self._tls.aclose()
                except (anyio.BrokenResourceError, OSError) as exc:
                    self._state.logger.debug("closing the connection: %s", exc)
        transport.close()
        if self._lost or transport.get_write_buffer_size() == 0:
            return  # the transport releases the socket on the next loop turn
        # Replies still queued: give the client a bounded time to take them.
        self._abort_handle = self._loop.call_later(grace, transport.abort)
        self._closed_waiter = self._loop.create_future()
        with anyio.CancelScope(shield=True):
            await self._closed_waiter


class _PlainStream(ByteStream):
    """The connection's plaintext as an anyio byte stream, for ``TLSStream`` to run over."""

    def __init__(self, connection: ProtocolConnection) -> None:
        self._connection = connection

    async def receive(self, max_bytes: int = 65536) -> bytes:
        connection = self._connection
        if not connection._chunks and not connection._eof:
            await connection._wait_readable(None)  # the TLS receive's own cancel scope times it
        try:
            data = connection._take(max_bytes)
        except OSError as exc:
            raise anyio.BrokenResourceError from exc
        if not data:
            raise anyio.EndOfStream
        return data

    async def send(self, item: bytes) -> None:
        connection = self._connection
        try:
            transport = connection._write_now(item)
            if connection._writing_paused:
                await connection._drain(transport)
        except OSError as exc:
            raise anyio.BrokenResourceError from exc

    async def send_eof(self) -> None:
        transport = self._connection._transport
        if transport is not None and transport.can_write_eof():
            with contextlib.suppress(OSError):
                transport.write_eof()

    async def aclose(self) -> None:
        transport = self._connection._transport
        if transport is not None:
            transport.close()


def _reason(exc: BaseException) -> str:
    """The underlying error of an anyio stream exception, for the log."""
    return str(exc.__cause__ or exc) or type(exc).__name__


def accepted(sock: socket.socket) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """The remote and local address of an accepted socket, or None if it was reset before we got to it."""
    try:
        return address_of(sock.getpeername()), address_of(sock.getsockname())
    except OSError:
        return None
