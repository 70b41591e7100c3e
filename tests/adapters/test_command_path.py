"""Commands that need no hook, on every backend.

The asyncio-based transports answer these inside their read callback, without waking the session's task, and
accept a DATA there too (its 354 goes out at once; the task is woken by the message itself). The replies, the
idle timeout and what reaches the hooks must be exactly what the other backends give.
"""

from __future__ import annotations

import socket
import time

from .clients import Flood, RawClient
from .conftest import Recorder

TIMEOUT = 0.6
TIMED_OUT = (421, ["4.4.2 mx.test Timeout - closing connection"])
SHUTTING_DOWN = (421, ["4.3.2 mx.test Service shutting down"])
#: A handler with no MAIL or RCPT hook: every command up to the message is answered without a hook.
DATA_ONLY = ("on_data", "on_close")


def _greeted(port: int) -> RawClient:
    client = RawClient(port)
    assert client.reply()[0] == 220
    client.expect("EHLO c.test", 250)
    return client


def test_each_command_restarts_the_idle_timeout(start_server) -> None:
    rec = Recorder(hooks=DATA_ONLY)
    server = start_server(rec, socket_timeout=TIMEOUT)
    client = _greeted(server.port)
    started = time.monotonic()
    for line in ("NOOP", "MAIL FROM:<a@b.test>", "RCPT TO:<x@y.test>", "RSET", "NOOP"):
        time.sleep(TIMEOUT * 0.6)
        client.expect(line, 250)
    assert time.monotonic() - started > TIMEOUT * 2.5  # far longer than one timeout, in small steps
    last = time.monotonic()
    assert client.reply() == TIMED_OUT
    assert time.monotonic() - last >= TIMEOUT * 0.9
    assert client.at_eof()
    client.close()
    rec.wait_closed()
    assert rec.stored == []


def test_message_sent_before_the_354_is_delivered(start_server) -> None:
    rec = Recorder(hooks=DATA_ONLY)
    server = start_server(rec)
    client = _greeted(server.port)
    client.send(
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
        b"Subject: eager\r\n\r\nno wait for the 354\r\n.\r\nQUIT\r\n"
    )
    assert [client.reply()[0] for _ in range(5)] == [250, 250, 354, 250, 221]
    assert client.at_eof()
    client.close()
    rec.wait_closed()
    assert [(m.mail_from, m.rcpt_to, m.body) for m in rec.stored] == [
        ("a@b.test", ["x@y.test"], b"Subject: eager\r\n\r\nno wait for the 354\r\n")
    ]


def test_messages_back_to_back(start_server) -> None:
    # The next transaction's commands come in the same write as the previous message's end.
    rec = Recorder(hooks=DATA_ONLY)
    server = start_server(rec)
    client = _greeted(server.port)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    for number in (1, 2, 3):
        client.send(
            f"Subject: {number}\r\n\r\nbody {number}\r\n.\r\n".encode()
            + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
        )
        assert [client.reply()[0] for _ in range(4)] == [250, 250, 250, 354]
    client.send(b"Subject: 4\r\n\r\nbody 4\r\n.\r\n")
    assert client.reply()[0] == 250
    client.expect("QUIT", 221)
    client.close()
    rec.wait_closed()
    assert [m.body for m in rec.stored] == [
        f"Subject: {n}\r\n\r\nbody {n}\r\n".encode() for n in (1, 2, 3, 4)
    ]
    assert [m.transaction for m in rec.stored] == [1, 2, 3, 4]


def test_silence_after_the_354_times_out(start_server) -> None:
    rec = Recorder(hooks=DATA_ONLY)
    server = start_server(rec, socket_timeout=TIMEOUT)
    client = _greeted(server.port)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    started = time.monotonic()
    assert client.reply() == TIMED_OUT
    assert time.monotonic() - started >= TIMEOUT * 0.9
    assert client.at_eof()
    client.close()
    rec.wait_closed()
    assert rec.stored == []
    assert len(rec.data_errors) == 1  # on_data saw the message break off, as on every backend


def test_close_while_the_client_owes_its_message(start_server) -> None:
    rec = Recorder(hooks=DATA_ONLY)
    server = start_server(rec, close_timeout=0.5)
    client = _greeted(server.port)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    server.begin_close()
    assert client.reply() == SHUTTING_DOWN
    assert client.at_eof()
    client.close()
    assert server.closed.wait(10)
    assert rec.stored == []
    assert len(rec.closed) == 1


def test_a_client_that_never_reads_its_replies_is_cut_off(start_server) -> None:
    # Every pipelined NOOP is answered without a hook: once the replies fill the socket buffers the server
    # must stop answering (and reading), and time the client out, not queue replies without end.
    rec = Recorder(hooks=DATA_ONLY)
    server = start_server(rec, socket_timeout=TIMEOUT)
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    # 24 MB: more than the socket buffers on both sides hold.
    flood = Flood(stalled, b"EHLO c.test\r\n" + b"NOOP\r\n" * 4_000_000)
    try:
        rec.wait_closed(1, 20)
        assert time.monotonic() - flood.started >= TIMEOUT * 0.9
        other = _greeted(server.port)  # meanwhile the server serves others as usual
        other.expect("QUIT", 221)
        other.close()
    finally:
        stalled.close()
        flood.join()
    assert (
        not flood.sent_all.is_set()
    )  # the server stopped reading: the client could not send it all
