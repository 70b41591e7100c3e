"""The asyncio transports' ``receive_commands``: a consumer that takes chunks inside the read callback.

A real event loop and a real socket pair; the consumer stands in for the pump.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable

import pytest

from smtpproto_adapters._asyncio_protocol import ReadQueue


class _Queue(ReadQueue):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]


Test = Callable[[asyncio.AbstractEventLoop, _Queue, socket.socket], Awaitable[None]]


def _run(test: Test) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, peer = socket.socketpair()
        peer.setblocking(False)
        transport, queue = await loop.connect_accepted_socket(
            lambda: _Queue(memoryview(bytearray(65536)), loop), ours
        )
        try:
            await test(loop, queue, peer)
        finally:
            transport.close()
            peer.close()

    asyncio.run(main())


def test_replies_go_out_and_the_wait_goes_on_until_the_consumer_needs_the_task() -> None:
    async def test(loop: asyncio.AbstractEventLoop, queue: _Queue, peer: socket.socket) -> None:
        seen: list[bytes] = []

        def consume(data: bytes) -> bytes | None:
            seen.append(data)
            return None if data == b"two" else b"reply to " + data

        waiting = asyncio.ensure_future(queue.receive_commands(1024, 5.0, consume))
        await loop.sock_sendall(peer, b"one")
        assert await loop.sock_recv(peer, 100) == b"reply to one"
        assert not waiting.done()
        await loop.sock_sendall(peer, b"two")
        assert await waiting is None  # the consumer took it
        assert seen == [b"one", b"two"]
        # Once the wait is over, chunks are queued for the next receive, not consumed.
        await loop.sock_sendall(peer, b"three")
        assert await queue.receive(1024, 5.0) == b"three"
        assert seen == [b"one", b"two"]

    _run(test)


def test_what_arrived_before_the_wait_is_returned_without_the_consumer() -> None:
    async def test(loop: asyncio.AbstractEventLoop, queue: _Queue, peer: socket.socket) -> None:
        await loop.sock_sendall(peer, b"early")
        while not queue._chunks:
            await asyncio.sleep(0.01)
        assert await queue.receive_commands(1024, 5.0, lambda data: pytest.fail("consumed")) == (
            b"early"
        )

    _run(test)


def test_an_error_in_the_consumer_is_raised_by_the_wait() -> None:
    async def test(loop: asyncio.AbstractEventLoop, queue: _Queue, peer: socket.socket) -> None:
        def consume(data: bytes) -> bytes | None:
            raise ValueError(f"cannot take {data!r}")

        waiting = asyncio.ensure_future(queue.receive_commands(1024, 5.0, consume))
        await loop.sock_sendall(peer, b"this")
        with pytest.raises(ValueError, match="cannot take b'this'"):
            await waiting

    _run(test)


def test_the_timeout_counts_from_the_last_chunk_consumed() -> None:
    async def test(loop: asyncio.AbstractEventLoop, queue: _Queue, peer: socket.socket) -> None:
        started = time.monotonic()
        waiting = asyncio.ensure_future(queue.receive_commands(1024, 0.4, lambda data: b""))
        await asyncio.sleep(0.3)
        await loop.sock_sendall(peer, b"still here")
        with pytest.raises(TimeoutError):
            await waiting
        assert time.monotonic() - started >= 0.65

    _run(test)


def test_end_of_stream_ends_the_wait() -> None:
    async def test(loop: asyncio.AbstractEventLoop, queue: _Queue, peer: socket.socket) -> None:
        waiting = asyncio.ensure_future(queue.receive_commands(1024, 5.0, lambda data: b""))
        await asyncio.sleep(0.05)
        peer.shutdown(socket.SHUT_WR)
        assert await waiting == b""

    _run(test)
