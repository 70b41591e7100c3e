"""What the trio and anyio servers add: the pump over trio's in-memory streams, and cancellation.

* ``trio.testing.lockstep_stream_pair`` has no buffer at all: every write waits for the peer to read. A session
  driven over it (byte by byte, with STARTTLS, and pipelined with a slow hook) fails with a timeout instead
  of passing by luck if the pump ever waits for the client while a reply the client needs is held back.
* A hook stuck past close()'s grace period is cut off on every backend, and on_close still runs once.
* Cancelling ``serve_forever`` (instead of calling close()) tears sessions down and releases every socket.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
import time
from typing import Any

import anyio
import pytest
import trio
import trio.testing

from smtpproto_adapters import Session

from .clients import RawClient, unverified_context, wait_until
from .conftest import DEFAULT_OPTIONS, Backend, RunningServer

#: The structured-concurrency servers, each with the anyio backend the in-process tests run it under.
STRUCTURED = [
    pytest.param("trio", "smtpproto_adapters.trio", id="trio"),
    pytest.param(("asyncio", {"debug": True}), "smtpproto_adapters.anyio", id="anyio"),
    pytest.param("trio", "smtpproto_adapters.anyio", id="anyio+trio"),
]
CLIENT = ("192.0.2.1", 40000)
LOCAL = ("192.0.2.25", 25)


class Collector:
    """A handler that keeps every message and session; on_data reads slowly, on_close checkpoints."""

    def __init__(self, chunk_delay: float = 0.0) -> None:
        self.chunk_delay = chunk_delay
        self.messages: list[bytes] = []
        self.closed: list[Session] = []
        self.close_finished = 0

    async def on_data(self, stream: Any, session: Session) -> None:
        parts = []
        async for chunk in stream:
            parts.append(chunk)
            await anyio.sleep(self.chunk_delay)
        self.messages.append(b"".join(parts))

    async def on_close(self, session: Session) -> None:
        self.closed.append(session)
        await anyio.sleep(0.01)  # a real checkpoint: it must survive a cancelled session
        self.close_finished += 1


class ReplyReader:
    """Reads SMTP replies from a trio stream."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def reply(self) -> tuple[int, list[str]]:
        lines: list[bytes] = []
        while True:
            while b"\r\n" not in self.buffer:
                data = await self.stream.receive_some(4096)
                if not data:
                    raise EOFError(f"connection closed after {lines!r}")
                self.buffer += data
            line, _, rest = bytes(self.buffer).partition(b"\r\n")
            self.buffer = bytearray(rest)
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), [each[4:].decode() for each in lines]

    async def at_eof(self) -> bool:
        return not self.buffer and not await self.stream.receive_some(4096)


async def _drip(stream: trio.abc.Stream, data: bytes) -> None:
    """Send one byte per write: over a lockstep stream the server also receives one byte at a time."""
    for index in range(len(data)):
        await stream.send_all(data[index : index + 1])


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_byte_by_byte_session_with_starttls_over_lockstep_streams() -> None:
    from smtpproto_adapters.trio import SMTPServer

    handler = Collector()
    server = SMTPServer(handler, **DEFAULT_OPTIONS)
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    body = b"Subject: lockstep\r\n\r\n.leading dot\r\n" + b"x" * 500 + b"\r\n"
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server._serve_stream, server_stream, CLIENT, LOCAL)
        with trio.fail_after(20):
            plain = ReplyReader(client_stream)
            assert (await plain.reply())[0] == 220
            await _drip(client_stream, b"EHLO c.test\r\n")
            assert "STARTTLS" in (await plain.reply())[1]
            await _drip(client_stream, b"STARTTLS\r\n")
            assert (await plain.reply())[0] == 220
            tls = trio.SSLStream(client_stream, unverified_context(), server_hostname="mx.test")
            await tls.do_handshake()
            secure = ReplyReader(tls)
            for command, code in [
                (b"EHLO c.test\r\n", 250),
                (b"MAIL FROM:<a@b.test>\r\n", 250),
                (b"RCPT TO:<x@y.test>\r\n", 250),
                (b"DATA\r\n", 354),
                (b"..leading dot\r\n".join(body.split(b".leading dot\r\n")) + b".\r\n", 250),
                (b"QUIT\r\n", 221),
            ]:
                await _drip(tls, command)
                assert (await secure.reply())[0] == code, command
            assert await secure.at_eof()
    assert handler.messages == [body]
    [session] = handler.closed
    assert (session.remote_address, session.local_port) == ("192.0.2.1", 25)
    assert session.tls is not None
    assert session.tls.servername == "mx.test"
    assert session.transmission_type == "ESMTPS"


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_pipelined_messages_to_a_slow_hook_over_lockstep_streams() -> None:
    # The server writes each 250 while the client is still writing the next pipelined group: with no buffer
    # anywhere, this only finishes if the pump reads and writes in the right order.
    from smtpproto_adapters.trio import SMTPServer

    handler = Collector(chunk_delay=0.001)
    server = SMTPServer(handler, **DEFAULT_OPTIONS)
    client_stream, server_stream = trio.testing.lockstep_stream_pair()
    bodies = [b"Subject: %d\r\n\r\n" % n + (b"%06d line of text\r\n" % n) * 8000 for n in range(3)]
    group = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n"
    codes: list[int] = []
    send_replies, receive_replies = trio.open_memory_channel[int](100)

    async def read_replies() -> None:
        reader = ReplyReader(client_stream)
        async with send_replies:
            while True:
                try:
                    code, _ = await reader.reply()
                except EOFError:
                    return
                codes.append(code)
                await send_replies.send(code)

    async def expect(count: int) -> None:
        for _ in range(count):
            await receive_replies.receive()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(server._serve_stream, server_stream, CLIENT, LOCAL)
        nursery.start_soon(read_replies)
        with trio.fail_after(30):
            await expect(1)
            await client_stream.send_all(b"EHLO c.test\r\n")
            await expect(1)
            await client_stream.send_all(group)
            for index, body in enumerate(bodies):
                await expect(4 if index == 0 else 5)  # (the previous 250), MAIL, RCPT, RCPT, 354
                follow = group if index + 1 < len(bodies) else b"QUIT\r\n"
                await client_stream.send_all(body + b".\r\n" + follow)
            await expect(2)  # the last 250, then 221
    assert codes == [220, 250, 250, 250, 250, 354] + [250, 250, 250, 250, 354] * 2 + [250, 221]
    assert [hashlib.sha256(m).digest() for m in handler.messages] == [
        hashlib.sha256(b).digest() for b in bodies
    ]


class _Stuck:
    """on_mail_from hangs until released; on_close records that it ran to its end."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.closed = 0


def _stuck_handler(asynchronous: bool) -> _Stuck:
    if asynchronous:

        class Async(_Stuck):
            async def on_mail_from(self, address: object, session: Session) -> None:
                self.entered.set()
                while not self.release.is_set():
                    await anyio.sleep(0.01)

            async def on_close(self, session: Session) -> None:
                await anyio.sleep(0.01)
                self.closed += 1

        return Async()

    class Sync(_Stuck):
        def on_mail_from(self, address: object, session: Session) -> None:
            self.entered.set()
            self.release.wait(10)

        def on_close(self, session: Session) -> None:
            self.closed += 1

    return Sync()


def test_a_hook_stuck_past_the_grace_period_does_not_hold_close(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.import_module(backend.module), "_HOOK_GRACE", 0.3)
    handler = _stuck_handler(backend.asynchronous)
    server = RunningServer(backend, handler, "127.0.0.1", {**DEFAULT_OPTIONS, "close_timeout": 0.2})
    try:
        client = RawClient(server.port)
        client.reply()
        client.expect("EHLO c.test", 250)
        client.send(b"MAIL FROM:<a@b.test>\r\n")
        assert handler.entered.wait(5)
        started = time.monotonic()
        server.begin_close()
        assert server.closed.wait(5)
        assert time.monotonic() - started < 3  # close_timeout + grace, not the hook's pace
        if backend.asynchronous:  # the hook was cancelled, and on_close still ran to its end
            wait_until(lambda: handler.closed == 1)
        handler.release.set()  # (a blocking hook can only be abandoned: its socket was shut)
        wait_until(lambda: handler.closed == 1)
        assert client.rest() == b""
        client.close()
        time.sleep(0.05)
        assert handler.closed == 1
    finally:
        handler.release.set()
        server.stop()


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "module"), STRUCTURED)
async def test_cancelling_serve_forever_tears_sessions_down(module: str) -> None:
    handler = Collector()
    server = importlib.import_module(module).SMTPServer(handler, **DEFAULT_OPTIONS)
    await server.listen(0)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve_forever)
            client = await anyio.connect_tcp("127.0.0.1", server.port)
            assert (await client.receive()).startswith(b"220 ")
            tg.cancel_scope.cancel()
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await client.receive()
        await client.aclose()
    assert (len(handler.closed), handler.close_finished) == (1, 1)
    assert all(sock.fileno() == -1 for sock in server.sockets)
    assert server.statistics().connections_active == 0
    with pytest.raises(RuntimeError, match="closed"):
        await server.listen(0)


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "module"), STRUCTURED)
async def test_cancelling_serve_forever_while_a_client_owes_its_message(module: str) -> None:
    # After the 354 the session waits for the message (on asyncio with the message's turn already prepared
    # for its task): a cancel must end it cleanly too, on_close included, with nothing left unawaited.
    handler = Collector()
    server = importlib.import_module(module).SMTPServer(handler, **DEFAULT_OPTIONS)
    await server.listen(0)
    received = bytearray()

    async def codes(client: anyio.abc.ByteStream, count: int) -> list[bytes]:
        """The codes of the next ``count`` replies."""
        while True:
            lines = received.split(b"\r\n")[:-1]
            finals = [line[:3] for line in lines if line[3:4] == b" "]
            if len(finals) >= count:
                del received[:]
                return finals
            received.extend(await client.receive())

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve_forever)
            client = await anyio.connect_tcp("127.0.0.1", server.port)
            assert await codes(client, 1) == [b"220"]
            await client.send(b"EHLO c.test\r\n")
            assert await codes(client, 1) == [b"250"]
            await client.send(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
            assert await codes(client, 3) == [b"250", b"250", b"354"]
            tg.cancel_scope.cancel()
        with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await client.receive()
        await client.aclose()
    assert (len(handler.closed), handler.close_finished) == (1, 1)
    assert handler.messages == []
    assert server.statistics().connections_active == 0


@pytest.mark.anyio
@pytest.mark.parametrize(("anyio_backend", "module"), STRUCTURED)
async def test_close_before_serving_and_listen_while_serving(module: str) -> None:
    cls = importlib.import_module(module).SMTPServer
    with anyio.fail_after(10):
        unused = cls(object(), **DEFAULT_OPTIONS)
        await unused.listen(0)
        await unused.close()
        await unused.serve_forever()  # closed before it served: returns at once
        assert all(sock.fileno() == -1 for sock in unused.sockets)

        server = cls(object(), **DEFAULT_OPTIONS)
        with pytest.raises(RuntimeError, match="listen"):
            await server.serve_forever()
        await server.listen(0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve_forever)
            await server.listen(0, "::1")  # added while serving: accepted at once
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                async with await anyio.connect_tcp(host, port) as client:
                    assert (await client.receive()).startswith(b"220 ")
                    await client.send(b"QUIT\r\n")
            with pytest.raises(RuntimeError, match="already"):
                await server.serve_forever()
            await server.close()
        await server.close()  # again: a no-op
    assert server.statistics().connections_total == 2


def test_tls_session_fields_on_trio_come_from_the_handshake() -> None:
    # trio.SSLStream hides its SSLObject; the SNI name reaches the session through capture_servername().
    from smtpproto_adapters._tls import TLSSetup, capture_servername, self_signed_context

    setup = TLSSetup(self_signed_context())
    client_context = unverified_context()

    async def main() -> list[str]:
        client_stream, server_stream = trio.testing.memory_stream_pair()
        server = trio.SSLStream(server_stream, setup.context, server_side=True)
        client = trio.SSLStream(client_stream, client_context, server_hostname="Named.Test")
        with capture_servername() as names:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.do_handshake)
                await server.do_handshake()
        assert server.version() in ("TLSv1.2", "TLSv1.3")
        return names

    assert trio.run(main) == ["named.test"]
