"""The blocking backend's own machinery: reused session threads, and both ways a session waits for input.

On Linux a plain socket waits in ``recv()`` (SO_RCVTIMEO, woken by ``shutdown(SHUT_RD)`` at close); a TLS
socket, and any socket elsewhere, waits in a selector. The timeout and close tests from
``test_connections`` run here once more with plain sockets forced into the selector.
"""

from __future__ import annotations

import smtplib
import ssl
import threading
import time
from typing import Any

import pytest

from smtpproto_adapters import blocking

from .clients import RawClient, before_handshake, starttls_client, unverified_context, wait_until
from .conftest import BACKENDS, Backend, Recorder, linux_only_mode
from .test_command_path import (
    test_a_client_that_never_reads_its_replies_is_cut_off,
    test_close_while_the_client_owes_its_message,
    test_each_command_restarts_the_idle_timeout,
    test_message_sent_before_the_354_is_delivered,
    test_messages_back_to_back,
    test_silence_after_the_354_times_out,
)
from .test_connections import (
    test_client_stalled_mid_data_times_out,
    test_close_lets_a_message_finish_and_421s_the_idle,
    test_idle_client_times_out,
)
from .test_tls import (
    test_a_command_in_the_same_write_as_the_handshake_finished,
    test_a_failed_handshake_still_sends_its_alert,
    test_tls_records_that_arrive_together_or_in_pieces,
)
from .test_trio_tls_sockets import (
    test_a_handshake_that_never_comes_times_out,
    test_a_large_message_over_tls,
    test_a_tls_client_that_never_reads_its_replies_is_cut_off,
    test_close_reaches_an_idle_tls_session,
    test_idle_tls_session_gets_its_421_and_close_notify,
)

__all__ = [
    "test_a_client_that_never_reads_its_replies_is_cut_off",
    "test_a_command_in_the_same_write_as_the_handshake_finished",
    "test_a_failed_handshake_still_sends_its_alert",
    "test_a_handshake_that_never_comes_times_out",
    "test_a_large_message_over_tls",
    "test_a_tls_client_that_never_reads_its_replies_is_cut_off",
    "test_client_stalled_mid_data_times_out",
    "test_close_lets_a_message_finish_and_421s_the_idle",
    "test_close_reaches_an_idle_tls_session",
    "test_close_while_the_client_owes_its_message",
    "test_each_command_restarts_the_idle_timeout",
    "test_idle_client_times_out",
    "test_idle_tls_session_gets_its_421_and_close_notify",
    "test_message_sent_before_the_354_is_delivered",
    "test_messages_back_to_back",
    "test_silence_after_the_354_times_out",
    "test_tls_records_that_arrive_together_or_in_pieces",
]


@pytest.fixture
def backend() -> Backend:
    return BACKENDS["blocking"]


@pytest.fixture(autouse=True, params=["reactor", "recv", "selector"])
def wait_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Sessions wait for commands in the reactor, in recv() in their own thread, or in a selector."""
    monkeypatch.setattr(blocking, "_COMMANDS_IN_REACTOR", request.param == "reactor")
    if request.param == "reactor":
        return linux_only_mode(request, monkeypatch, "_WAIT_IN_RECV", "reactor")
    return linux_only_mode(request, monkeypatch, "_WAIT_IN_RECV", "recv")


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


# -- TLS over memory BIOs: the socket waits as a plain one does, OpenSSL decrypts what one recv() brought --


def test_close_during_a_handshake_lets_it_finish_then_421s(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, close_timeout=0.2)
    client = before_handshake(server.port)
    server.begin_close()
    time.sleep(0.6)  # the server gave up waiting and woke its idle sessions: not this handshake
    client.start_tls(unverified_context())
    assert isinstance(client.sock, ssl.SSLSocket)
    client.sock.suppress_ragged_eofs = False
    assert client.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    assert client.at_eof()  # with the server's close_notify: a ragged EOF would raise SSLEOFError
    client.close()
    assert server.closed.wait(5)


def test_the_clients_close_notify_ends_the_session(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    client = starttls_client(server.port)
    client.expect("NOOP", 250)
    assert isinstance(client.sock, ssl.SSLSocket)
    plain = client.sock.unwrap()  # sends close_notify and waits for the server's
    plain.close()
    rec.wait_closed()
    assert server.statistics().connections_active == 0
