"""The message stream that ``on_data`` reads.

There is no buffer and no extra task between the socket and the hook: each time the hook asks for the next
chunk, the stream asks the session's pump for the next piece of message, and the pump reads the socket only
when the core has nothing buffered. A slow hook therefore slows the client down (TCP back-pressure) and
memory stays bounded by the read size, whatever the message size.

The async stream is an async iterator of ``bytes`` chunks with ``await read(n=-1)``; the blocking stream is
an iterator with ``read(n=-1)``, enough for ``shutil.copyfileobj``. Both expose ``size`` (octets so far,
after dot-unstuffing) and ``size_exceeded`` (the ``size`` option was passed).

When the client goes away, stalls past ``socket_timeout`` or the server shuts down mid-message, reading
raises :class:`MessageAborted`. When the core refuses the message itself (over the size limit, or bare line
endings under the default smuggling policy), reading its end raises :class:`MessageRefused`: the client has
already been told, so the hook must not keep the message.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import smtpproto

from ._transport import drive

__all__ = [
    "PENDING",
    "AsyncDataStream",
    "AsyncStream",
    "BlockingDataStream",
    "BlockingStream",
    "DataStreamError",
    "MessageAborted",
    "MessageReader",
    "MessageRefused",
    "MessageSource",
    "Pending",
]


class DataStreamError(Exception):
    """The message cannot be read to its end."""


class MessageAborted(DataStreamError, ConnectionError):
    """The client went away, stalled past ``socket_timeout``, or the server is shutting down mid-message."""


class MessageRefused(DataStreamError):
    """The core refused the message (``reply`` was already sent): too large, or bare CR/LF in the data."""

    def __init__(self, reply: smtpproto.Reply) -> None:
        super().__init__(f"message refused: {reply.code} {reply.text}")
        self.reply = reply


class Pending(enum.Enum):
    """The type of :data:`PENDING`."""

    PENDING = enum.auto()


#: What :meth:`MessageSource.pull_ready` returns when the next chunk needs a read from the connection.
PENDING = Pending.PENDING


class MessageSource(Protocol):
    """Where a stream gets its chunks: implemented by the pump."""

    @property
    def size(self) -> int:
        """Octets of message delivered so far."""
        ...

    @property
    def size_exceeded(self) -> bool:
        """Whether the message is over the size limit."""
        ...

    async def pull(self) -> bytes | None:
        """The next chunk, or None at the end; raises :class:`DataStreamError`."""
        ...

    def pull_ready(self) -> bytes | Pending | None:
        """:meth:`pull` if it can answer without reading the connection, else :data:`PENDING`."""
        ...


@runtime_checkable
class AsyncDataStream(Protocol):
    """What ``on_data`` receives on the async backends."""

    @property
    def size(self) -> int:
        """Octets received so far (after dot-unstuffing)."""
        ...

    @property
    def size_exceeded(self) -> bool:
        """True once the message is larger than the ``size`` option."""
        ...

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` octets (all the rest for ``n < 0``); ``b""`` at the end."""
        ...


@runtime_checkable
class BlockingDataStream(Protocol):
    """What ``on_data`` receives on the blocking backend."""

    @property
    def size(self) -> int:
        """Octets received so far (after dot-unstuffing)."""
        ...

    @property
    def size_exceeded(self) -> bool:
        """True once the message is larger than the ``size`` option."""
        ...

    def __iter__(self) -> Iterator[bytes]: ...

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` octets (all the rest for ``n < 0``); ``b""`` at the end."""
        ...


class _Buffered:
    """The part both streams share: ``size``, ``size_exceeded`` and the chunk left over by ``read(n)``."""

    def __init__(self, source: MessageSource) -> None:
        self._source = source
        self._rest = b""

    @property
    def size(self) -> int:
        """Octets received so far (after dot-unstuffing)."""
        return self._source.size

    @property
    def size_exceeded(self) -> bool:
        """True once the message is larger than the ``size`` option."""
        return self._source.size_exceeded

    def _leftover(self) -> bytes:
        chunk, self._rest = self._rest, b""
        return chunk

    def _split(self, chunk: bytes, want: int) -> bytes:
        """Keep what is beyond ``want`` octets of ``chunk`` for the next read."""
        if len(chunk) > want:
            self._rest = chunk[want:]
            return chunk[:want]
        return chunk


class AsyncStream(_Buffered):
    """The :class:`AsyncDataStream` implementation."""

    def __aiter__(self) -> AsyncStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = self._leftover() or self._source.pull_ready()
        if chunk is PENDING:
            chunk = await self._source.pull()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    async def read(self, n: int = -1) -> bytes:
        """``n`` octets (fewer only at the end; all the rest for ``n < 0``); ``b""`` at the end."""
        parts: list[bytes] = []
        have = 0
        while n < 0 or have < n:
            chunk = self._leftover() or self._source.pull_ready()
            if chunk is PENDING:
                chunk = await self._source.pull()
            if chunk is None:
                break
            if n >= 0:
                chunk = self._split(chunk, n - have)
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)


class BlockingStream(_Buffered):
    """The :class:`BlockingDataStream` implementation: runs the (never-suspending) pull synchronously."""

    def __iter__(self) -> BlockingStream:
        return self

    def __next__(self) -> bytes:
        chunk = self._leftover() or self._source.pull_ready()
        if chunk is PENDING:
            chunk = drive(self._source.pull())
        if chunk is None:
            raise StopIteration
        return chunk

    def read(self, n: int = -1) -> bytes:
        """``n`` octets (fewer only at the end; all the rest for ``n < 0``); ``b""`` at the end."""
        parts: list[bytes] = []
        have = 0
        while n < 0 or have < n:
            chunk = self._leftover() or self._source.pull_ready()
            if chunk is PENDING:
                chunk = drive(self._source.pull())
            if chunk is None:
                break
            if n >= 0:
                chunk = self._split(chunk, n - have)
            parts.append(chunk)
            have += len(chunk)
        return b"".join(parts)

    def readable(self) -> bool:
        """Always True (file-like protocol)."""
        return True


class MessageReader:
    """The :class:`MessageSource` of one DATA phase: turns the core's data events into chunks.

    ``poll`` is the pump's "next event the core has, or NEED_DATA"; ``fill`` its "flush the replies and feed
    the core the next read"; ``limit`` the size limit.
    """

    def __init__(
        self,
        poll: Callable[[], object],
        fill: Callable[[], Awaitable[None]],
        limit: int | None,
        logger: logging.LoggerAdapter[Any],
    ) -> None:
        self._poll = poll
        self._fill = fill
        self._limit = limit
        self._log = logger
        self.size = 0
        #: The core's DataEnd once the message is complete (None while reading, or if it never ended).
        self.end: smtpproto.DataEnd | None = None
        #: The connection ended before the message did.
        self.aborted = False

    @property
    def size_exceeded(self) -> bool:
        """Whether the message is over the size limit (final once ``end`` is set)."""
        if self.end is not None:
            return self.end.size_exceeded
        return self._limit is not None and self.size > self._limit

    async def pull(self) -> bytes | None:
        """The next chunk, None at the end; raises MessageRefused or MessageAborted."""
        chunk = self.pull_ready()
        while chunk is PENDING:
            await self._fill()
            chunk = self.pull_ready()
        return chunk

    def pull_ready(self) -> bytes | Pending | None:
        """:meth:`pull` without reading the connection: PENDING when the core needs more data first."""
        if self.end is not None:
            if self.end.refusal is not None:
                raise MessageRefused(self.end.refusal)
            return None
        if self.aborted:
            raise MessageAborted("the message was not received in full")
        event = self._poll()
        if isinstance(event, smtpproto.DataChunk):
            self.size += len(event.data)
            return event.data
        if event is smtpproto.NEED_DATA:
            return PENDING
        if isinstance(event, smtpproto.DataEnd):
            self.end = event
            self.size = event.size
            return self.pull_ready()
        self.aborted = True  # ConnectionClosed: EOF, idle timeout or shutdown mid-message
        if not isinstance(event, smtpproto.ConnectionClosed):
            self._log.error("unexpected event inside DATA: %r", event)
        raise MessageAborted("the client went away before the end of the message")

    async def drain(self) -> None:
        """Read and discard the rest of the message."""
        while self.end is None and not self.aborted:
            try:
                await self.pull()
            except DataStreamError:
                return
