"""The trio server's TLS on the accepted socket itself (an ``ssl.SSLSocket``, no ``trio.SSLStream``).

The watchdog still times each wait out inside TLS, close() still reaches idle TLS sessions, the server ends
a TLS session with close_notify, and a handshake that never comes is cut off after its timeout.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from .clients import Flood, before_handshake, starttls_client, wait_until
from .conftest import BACKENDS, Recorder

pytestmark = pytest.mark.parametrize("backend", [BACKENDS["trio"]], ids=["trio"])

TIMEOUT = 0.6


def test_idle_tls_session_gets_its_421_and_close_notify(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, socket_timeout=TIMEOUT)
    client = starttls_client(server.port, strict_eof=True)
    client.expect("NOOP", 250)
    started = time.monotonic()
    assert client.reply() == (421, ["4.4.2 mx.test Timeout - closing connection"])
    assert time.monotonic() - started >= TIMEOUT * 0.9
    assert client.at_eof()  # a ragged EOF would raise SSLEOFError
    client.close()
    rec.wait_closed()


def test_close_reaches_an_idle_tls_session(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, close_timeout=0.3)
    client = starttls_client(server.port, strict_eof=True)
    server.begin_close()
    assert client.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    assert client.at_eof()
    client.close()
    assert server.closed.wait(10)


def test_a_large_message_over_tls(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    client = starttls_client(server.port, strict_eof=True)
    body = b"".join(b"line %06d of a long message\r\n" % i for i in range(20_000))
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    client.send(body + b".\r\n")  # many TLS records, in writes of the client's choosing
    assert client.reply()[0] == 250
    # Pipelined commands in one record: every reply comes, nothing waits on bytes already decrypted.
    client.send(b"NOOP\r\n" * 50 + b"QUIT\r\n")
    assert [client.reply()[0] for _ in range(51)] == [250] * 50 + [221]
    assert client.at_eof()
    client.close()
    rec.wait_closed()
    [stored] = rec.stored
    assert stored.body == body


def test_a_tls_client_that_never_reads_its_replies_is_cut_off(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, socket_timeout=TIMEOUT)
    client = starttls_client(server.port, strict_eof=True)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    flood = Flood(client.sock, b"NOOP\r\n" * 1_000_000)
    try:
        rec.wait_closed(1, 20)
        assert time.monotonic() - flood.started >= TIMEOUT * 0.9
    finally:
        with contextlib.suppress(OSError):  # already reset by the server
            client.sock.shutdown(socket.SHUT_RDWR)
        flood.join()
        client.close()


def test_a_handshake_that_never_comes_times_out(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, socket_timeout=TIMEOUT)
    client = before_handshake(server.port)
    started = time.monotonic()
    assert client.at_eof()
    assert time.monotonic() - started >= TIMEOUT * 0.9
    client.close()
    wait_until(lambda: server.statistics().tls_failures == 1)
