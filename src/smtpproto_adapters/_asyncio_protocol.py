"""The receive side shared by the asyncio connections (the asyncio backend's, and the anyio backend's on asyncio).

:class:`ReadQueue` is an :class:`asyncio.BufferedProtocol` that stays registered for reading for the whole
connection: the transport reads into a buffer shared by all the server's connections, :meth:`buffer_updated`
copies what arrived out of it at once into a queue of chunks, and the session's one task takes them with
:meth:`ReadQueue._take`, after awaiting :meth:`ReadQueue._readable` when the queue is empty. Reading pauses while
too much waits in the queue (TCP back-pressure), and a single timer per connection times out the waits.
"""

from __future__ import annotations

import asyncio
import collections

__all__ = ["ReadQueue"]

# Stop reading the socket while this much received data waits for the pump (TCP back-pressure).
_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


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

    # -- asyncio.BufferedProtocol ---------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        # Shared by every connection of the server: buffer_updated always empties it before the next read.
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._chunks.append(self._read_buffer[:nbytes].tobytes())
        self._queued += nbytes
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

    def _wake(self, exc: BaseException | None = None) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if exc is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(exc)

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

    def _drop_queued(self) -> None:
        """Forget what was received and not taken (the plaintext before a STARTTLS handshake)."""
        self._chunks.clear()
        self._queued = 0
        if self._reading_paused and self._transport is not None:
            self._reading_paused = False
            self._transport.resume_reading()
