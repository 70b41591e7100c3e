"""The receive side shared by the asyncio connections (the asyncio backend's, and the anyio backend's on asyncio).

:class:`ReadQueue` is an :class:`asyncio.BufferedProtocol` that stays registered for reading for the whole
connection: the transport reads into a buffer shared by all the server's connections, :meth:`buffer_updated`
copies what arrived out of it at once into a queue of chunks, and the session's one task takes them with
:meth:`ReadQueue._take`, after awaiting :meth:`ReadQueue._readable` when the queue is empty. Reading pauses while
too much waits in the queue (TCP back-pressure), and a single timer per connection times out the waits.
TLS (STARTTLS and implicit) runs in memory in the same protocol: an ``ssl.SSLObject`` between two BIOs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._session import TLSInfo
from ._transport import ShutdownRequested, tls_info

if TYPE_CHECKING:
    from ._tls import TLSSetup

__all__ = ["ReadQueue"]

# Stop reading the socket while this much received data waits for the pump (TCP back-pressure).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024
#: The most one SSL_read returns (records are at most 16 KiB: this takes any).
_TLS_READ_SIZE = 65536


class ReadQueue(asyncio.BufferedProtocol):
    """Received chunks queued for one task; subclasses add the sending, TLS and closing of their backend."""

    def __init__(self, read_buffer: memoryview, loop: asyncio.AbstractEventLoop) -> None:
        self._read_buffer = read_buffer
        self._loop = loop  # passed in: asyncio.get_running_loop() costs a getpid() system call
        self._transport: asyncio.Transport | None = None
        self._chunks: collections.deque[bytes] = collections.deque()  # received, not yet taken
        self._queued = 0  # octets in _chunks
        self._eof = False
        self._error: BaseException | None = None
        self._reading_paused = False
        self._writing_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timed: asyncio.Future[None] | None = None  # the wait that the timer times
        self._wait_started = 0.0
        self._wait_timeout = 0.0
        #: Whether TLS is on (after the handshake): the transport carries records of ``_ssl``.
        self._tls = False
        #: TLS in memory: the session's SSLObject between two BIOs (records in, records out), made by
        #: _start_tls (two BIOs cost an idle plaintext connection about 2 KiB).
        self._ssl: ssl.SSLObject | None = None
        self._incoming: ssl.MemoryBIO
        self._outgoing: ssl.MemoryBIO
        self._handshaking = False
        self._interrupted = False
        # The pump's consumer while the task waits in receive_commands (cleared by every wake-up), and whether
        # it took the chunk that woke the task.
        self._consume: Callable[[bytes], bytes | None] | None = None
        self._consumed = False

    # -- asyncio.BufferedProtocol ---------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        # Shared by every connection of the server: buffer_updated always empties it before the next read.
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if self._ssl is None:
            data = self._read_buffer[:nbytes].tobytes()
        else:
            self._incoming.write(self._read_buffer[:nbytes])
            if self._handshaking:
                self._wake()  # the handshake goes on in _start_tls
                return
            data = self._decrypt()
            if not data:
                return
        self._received(data)

    def _received(self, data: bytes) -> None:
        """Plaintext from the client: to the pump's consumer at once, or into the queue for the task."""
        consume = self._consume
        if consume is not None and not self._writing_paused:
            self._give(consume, data)
            return
        self._chunks.append(data)
        self._queued += len(data)
        if self._queued >= _HIGH_WATER and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection_ended(exc)

    def _connection_ended(self, exc: Exception | None) -> None:
        """What every connection_lost does: stop the timer, end the stream, wake every waiter."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._eof = True
        self._error = exc
        self._wake()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _give(self, consume: Callable[[bytes], bytes | None], data: bytes) -> None:
        """The fast path of receive_commands: the pump takes ``data`` here, and the task sleeps on if it can."""
        try:
            replies = consume(data)
        except Exception as exc:  # noqa: BLE001  # the task raises it, as if it had run the consumer
            self._wake(exc)
            return
        if replies is None:
            self._consumed = True
            self._wake()
            return
        if replies and self._transport is not None:
            self._write(replies)
        self._wait_started = self._loop.time()  # the idle timeout counts from the last command

    def _wake(self, exc: BaseException | None = None) -> None:
        self._consume = None
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

    def interrupt(self) -> None:
        """Ask the session to end: its current or next receive raises ShutdownRequested.

        A handshake in progress runs on to its own timeout (it waits on no future of ours); the receive after
        it raises.
        """
        self._interrupted = True
        self._wake(ShutdownRequested())

    # -- the pump's Transport: the receive side ---------------------------------------------------------

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        """The next received chunk (see the pump's Transport)."""
        if self._interrupted:
            raise ShutdownRequested
        if not self._chunks and not self._eof:
            await self._readable(timeout)
        return self._take(max_bytes)

    async def receive_commands(
        self, max_bytes: int, timeout: float | None, consume: Callable[[bytes], bytes | None]
    ) -> bytes | None:
        """``receive`` that lets ``consume`` take what arrives (see the pump's ReceiveCommands)."""
        if self._interrupted:
            raise ShutdownRequested
        if not self._chunks and not self._eof:
            self._consume = consume
            try:
                await self._readable(timeout)
            finally:
                self._consume = None
            if self._consumed:
                self._consumed = False
                return None
        return self._take(max_bytes)

    async def receive_before_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        """One read of at most ``max_bytes``, the rest left for the TLS handshake (see _read_bounded)."""
        if self._interrupted:
            raise ShutdownRequested
        return await self._read_bounded(max_bytes, timeout)

    # -- waiting and taking ---------------------------------------------------------------------------

    def _readable(self, timeout: float | None) -> asyncio.Future[None]:
        """A future to await until a chunk or the end of the stream is there (TimeoutError after ``timeout``).

        A plain function returning the future, not a coroutine: this wait happens for every command.
        """
        waiter = self._waiter = self._loop.create_future()
        if timeout is not None:
            self._arm_timer(timeout)
        return waiter

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

    # -- TLS ------------------------------------------------------------------------------------------

    async def _read_bounded(self, max_bytes: int, timeout: float | None) -> bytes:
        """One read of at most ``max_bytes`` octets, leaving the rest in the kernel (a PROXY header before
        implicit TLS: what follows it is the ClientHello, for :meth:`_start_tls` to read).

        The transport hands this protocol whatever one recv() got (up to 256 KiB), which would swallow the
        ClientHello, and _start_tls drops it. A BufferedProtocol is read into the buffer it provides instead,
        so for this one read :class:`_BoundedRead` stands in, with a buffer of exactly ``max_bytes``, and
        stops the transport's reading as soon as it has its octets.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        reader = _BoundedRead(self, transport, max_bytes)
        self._waiter = self._loop.create_future()
        handle = None
        if timeout is not None:
            handle = self._loop.call_later(timeout, self._wake, TimeoutError())
        transport.set_protocol(reader)
        transport.resume_reading()
        try:
            await self._waiter
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()
            transport.pause_reading()  # _start_tls resumes it
            transport.set_protocol(self)
        if reader.data:
            return reader.data
        if self._error is not None:
            raise ConnectionResetError(str(self._error))
        return b""

    async def _start_tls(
        self, context: ssl.SSLContext, timeout: float | None, setup: TLSSetup | None
    ) -> TLSInfo:
        """The server side of a TLS handshake, in memory: an ``ssl.SSLObject`` between two BIOs.

        The transport keeps carrying bytes to this protocol, which now hands them to OpenSSL and reads the
        plaintext back (asyncio's ``loop.start_tls`` puts a layer of its own in between that cost about a
        quarter of this server's CPU per message). For implicit TLS the transport has been paused from the
        start, so that the ClientHello is still in the kernel; reading resumes here.
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("connection closed")
        # Plaintext received after STARTTLS is never decrypted or passed on (the core drops its copy too).
        self._chunks.clear()
        self._queued = 0
        self._reading_paused = False
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        ssl_object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._ssl, self._handshaking = ssl_object, True
        deadline = None if timeout is None else self._loop.time() + timeout
        transport.resume_reading()
        try:
            while True:
                try:
                    ssl_object.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush_tls()
                await self._handshake_data(deadline)
        except ssl.SSLError:
            self._flush_tls()  # the alert tells the client why
            raise
        finally:
            self._handshaking = False
        self._flush_tls()  # the last flight, session tickets
        self._tls = True
        data = self._decrypt()  # what the client sent right behind its Finished
        if data:
            self._chunks.append(data)
            self._queued += len(data)
        return tls_info(ssl_object, setup.servername(ssl_object) if setup else None)

    async def _handshake_data(self, deadline: float | None) -> None:
        """Wait for more of the client's handshake (TimeoutError at ``deadline``).

        ``close()`` does not cut a handshake short: it runs on to its own timeout, and the first receive
        after it raises ShutdownRequested.
        """
        if self._eof or self._error is not None:
            raise ConnectionResetError("connection closed during the TLS handshake")
        handle = None
        if deadline is not None:
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                raise TimeoutError("TLS handshake timed out")
            handle = self._loop.call_later(remaining, self._wake, TimeoutError())
        waiter = self._waiter = self._loop.create_future()
        try:
            await waiter
        except ShutdownRequested:
            pass
        finally:
            self._waiter = None
            if handle is not None:
                handle.cancel()

    def _decrypt(self) -> bytes:
        """The plaintext of every whole record received (the end of the stream at the client's close_notify)."""
        ssl_object = self._ssl
        assert ssl_object is not None
        incoming = self._incoming
        parts: list[bytes] = []
        try:
            # One SSL_read per record; stop when nothing is left, rather than on the SSLWantReadError of
            # one more read (an exception per chunk).
            while True:
                part = ssl_object.read(_TLS_READ_SIZE)
                if not part:
                    break
                parts.append(part)
                if not ssl_object.pending() and not incoming.pending:
                    break
        except ssl.SSLWantReadError:  # the rest of a record is still on its way
            pass
        except ssl.SSLZeroReturnError:  # the client's close_notify
            self._connection_ended(None)
        except ssl.SSLError as exc:
            self._connection_ended(exc)
            if self._transport is not None:
                self._transport.abort()
        self._flush_tls()  # e.g. the answer to a TLS 1.3 KeyUpdate
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _write(self, data: bytes) -> None:
        """Hand ``data`` to the transport (encrypted once TLS is on); the transport sends what it can at once."""
        transport = self._transport
        assert transport is not None
        ssl_object = self._ssl
        if ssl_object is not None:
            ssl_object.write(data)  # never blocks: the records go to memory
            data = self._outgoing.read()
        transport.write(data)

    def _flush_tls(self) -> None:
        """Send the records OpenSSL has written to memory (handshake flights, alerts, close_notify)."""
        transport = self._transport
        if self._outgoing.pending and transport is not None and not transport.is_closing():
            transport.write(self._outgoing.read())

    def _close_tls(self) -> None:
        """Queue our close_notify, for the transport's close() to send before the end of the stream."""
        ssl_object = self._ssl
        if ssl_object is None or self._handshaking or not self._tls:
            return
        # Raises SSLWantReadError once ours is written, as the client's close_notify is not in yet.
        with contextlib.suppress(ssl.SSLError, ValueError):
            ssl_object.unwrap()
        self._flush_tls()


class _BoundedRead(asyncio.BufferedProtocol):
    """The protocol of a connection for one read of at most ``size`` octets (see ``_read_bounded``).

    The transport reads into :meth:`get_buffer`'s buffer, so never more than ``size`` octets; the first read
    pauses the transport before it can read again. End of stream and loss go on to the connection.
    """

    def __init__(self, connection: ReadQueue, transport: asyncio.Transport, size: int) -> None:
        self._connection = connection
        self._transport = transport
        self._buffer = bytearray(size)
        #: What the read got; empty until then.
        self.data = b""

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._buffer)

    def buffer_updated(self, nbytes: int) -> None:
        self._transport.pause_reading()
        self.data = bytes(self._buffer[:nbytes])
        self._connection._wake()

    def eof_received(self) -> bool:
        return bool(self._connection.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        self._connection.connection_lost(exc)
