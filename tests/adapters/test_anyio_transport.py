"""The anyio server's own connections on asyncio (an asyncio protocol, TLS through anyio's TLSStream).

The suite's ``anyio`` backend runs them already; these cover what only they do: timeouts and shutdown inside
TLS, flow control with a slow hook, a burst of connections, and uvloop. anyio+trio runs the same tests as a
reference, on anyio's streams.
"""

from __future__ import annotations

import importlib.util
import smtplib
import socket
import time

import pytest

from .clients import starttls_client, unverified_context
from .conftest import BACKENDS, Backend, Recorder

_ANYIO = [
    pytest.param(BACKENDS["anyio"], id="anyio"),
    pytest.param(BACKENDS["anyio+trio"], id="anyio+trio"),
]
if importlib.util.find_spec("uvloop") is not None:
    _UVLOOP = Backend(
        "anyio+uvloop", "smtpproto_adapters.anyio", "asyncio", (("use_uvloop", True),)
    )
    _ANYIO.append(pytest.param(_UVLOOP, id="anyio+uvloop"))

pytestmark = pytest.mark.parametrize("backend", _ANYIO)


def test_idle_timeout_inside_tls(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, socket_timeout=0.5)
    client = starttls_client(server.port)
    started = time.monotonic()
    assert client.reply() == (421, ["4.4.2 mx.test Timeout - closing connection"])
    assert 0.4 < time.monotonic() - started < 3
    assert client.at_eof()
    client.close()
    rec.wait_closed()


def test_close_421s_an_idle_tls_session(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, close_timeout=0.2)
    client = starttls_client(server.port)
    server.begin_close()
    assert client.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    assert client.at_eof()
    client.close()
    assert server.closed.wait(10)
    assert len(rec.closed) == 1


def test_slow_hook_and_large_message(start_server) -> None:
    # The client sends far more than the connection buffers before reading stops: nothing may be lost.
    rec = Recorder(read=("chunks", 0.002))
    server = start_server(rec)
    body = b"Subject: big\r\n\r\n" + b"".join(
        b"%07d " % i + b"x" * 70 + b"\r\n" for i in range(30_000)
    )
    with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
        client.sendmail("a@example.org", ["b@example.org"], body)
        client.starttls(context=unverified_context())
        client.sendmail("c@example.org", ["d@example.org"], body)
    rec.wait_closed()
    assert [each.body for each in rec.stored] == [body, body]


def test_burst_of_connections(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    clients = [socket.create_connection(("127.0.0.1", server.port), 10) for _ in range(40)]
    try:
        for sock in clients:
            sock.sendall(b"QUIT\r\n")
        for sock in clients:
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            assert received.startswith(b"220 ")
            assert b"\r\n221 " in received
    finally:
        for sock in clients:
            sock.close()
    rec.wait_closed(40)
    assert server.statistics().connections_total == 40
