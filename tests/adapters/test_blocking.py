"""The blocking backend's own machinery: reused session threads, and both ways a session waits for input.

On Linux a plain socket waits in ``recv()`` (SO_RCVTIMEO, woken by ``shutdown(SHUT_RD)`` at close); a TLS
socket, and any socket elsewhere, waits in a selector. The timeout and close tests from
``test_connections`` run here once more with plain sockets forced into the selector.
"""

from __future__ import annotations

import smtplib
import threading
import time
from typing import Any

import pytest

from smtpproto_adapters import blocking

from .clients import RawClient, starttls_client, wait_until
from .conftest import BACKENDS, Backend, Recorder
from .test_connections import (
    test_client_stalled_mid_data_times_out,
    test_close_lets_a_message_finish_and_421s_the_idle,
    test_idle_client_times_out,
)

__all__ = [
    "test_client_stalled_mid_data_times_out",
    "test_close_lets_a_message_finish_and_421s_the_idle",
    "test_idle_client_times_out",
]


@pytest.fixture
def backend() -> Backend:
    return BACKENDS["blocking"]


@pytest.fixture(autouse=True, params=["recv", "selector"])
def wait_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    mode: str = request.param
    if mode == "recv" and not blocking._WAIT_IN_RECV:
        pytest.skip("waiting in recv() is for Linux")
    monkeypatch.setattr(blocking, "_WAIT_IN_RECV", mode == "recv")
    return mode


def test_idle_tls_client_times_out(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, socket_timeout=0.5)
    client = starttls_client(server.port)
    started = time.monotonic()
    assert client.reply() == (421, ["4.4.2 mx.test Timeout - closing connection"])
    assert 0.4 < time.monotonic() - started < 3
    client.close()
    rec.wait_closed()


def test_close_421s_idle_plain_and_tls_sessions(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, close_timeout=0.2)
    plain = RawClient(server.port)
    assert plain.reply()[0] == 220
    plain.expect("EHLO plain.test", 250)
    tls = starttls_client(server.port)
    server.begin_close()
    for client in (plain, tls):
        assert client.reply() == (421, ["4.3.2 mx.test Service shutting down"])
        client.close()
    assert server.closed.wait(5)
    assert len(rec.closed) == 2


def test_session_threads_are_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    # The accept loop's pool (session threads that accept are in test_blocking_threads).
    monkeypatch.setattr(blocking, "_ACCEPT_IN_SESSION_THREADS", False)
    threads: list[int] = []

    class Handler:
        def on_connect(self, session: Any) -> None:
            threads.append(threading.get_ident())

    with blocking.SMTPServer(Handler(), name="mx.test", disable_reverse_lookup=True) as server:
        server.listen(0)
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        for _ in range(3):
            with smtplib.SMTP("127.0.0.1", server.port) as client:
                client.noop()
            wait_until(lambda: server._pool._idle == 1)  # its thread waits for the next
    serving.join(5)
    assert len(threads) == 3
    assert len(set(threads)) == 1
