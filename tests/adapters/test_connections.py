"""Connection management: max_clients, idle timeouts, graceful close, statistics, options, IPv6."""

from __future__ import annotations

import smtplib
import socket
import threading
import time

import pytest

from .clients import RawClient, wait_until
from .conftest import Pause, Recorder


def _open_session(port: int) -> RawClient:
    client = RawClient(port)
    assert client.reply()[0] == 220
    return client


def test_max_clients_refuses_without_running_hooks(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, max_clients=2)
    first, second = _open_session(server.port), _open_session(server.port)
    third = RawClient(server.port)
    code, text = third.reply()
    assert (code, text[0]) == (
        421,
        "4.7.0 mx.test Too many connected clients, try again in a moment",
    )
    assert third.at_eof()
    third.close()
    assert len(rec.called("on_connect")) == 2
    first.expect("QUIT", 221)
    first.close()
    wait_until(lambda: server.statistics().connections_active == 1)
    fourth = _open_session(server.port)  # a slot is free again
    for client in (second, fourth):
        client.expect("QUIT", 221)
        client.close()
    rec.wait_closed(3)
    assert len(rec.closed) == 3  # never for the refused one
    stats = server.statistics()
    assert (stats.connections_total, stats.connections_refused) == (3, 1)


def test_idle_client_times_out(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, socket_timeout=0.5)
    client = _open_session(server.port)
    client.expect("EHLO c.test", 250)
    started = time.monotonic()
    code, text = client.reply()
    elapsed = time.monotonic() - started
    assert (code, text) == (421, ["4.4.2 mx.test Timeout - closing connection"])
    assert 0.4 < elapsed < 3
    assert client.at_eof()
    client.close()
    rec.wait_closed()


def test_client_stalled_mid_data_times_out(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, socket_timeout=0.5)
    client = _open_session(server.port)
    client.expect("EHLO c.test", 250)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    client.send(b"Subject: stalled\r\n\r\nhalf a mess")
    code, text = client.reply()
    assert (code, text) == (421, ["4.4.2 mx.test Timeout - closing connection"])
    assert client.at_eof()
    client.close()
    rec.wait_closed()
    assert rec.stored == []
    assert len(rec.data_errors) == 1


def test_timeout_does_not_fire_while_a_hook_works(start_server) -> None:
    rec = Recorder(rules={"on_mail_from": Pause(0.8)})
    server = start_server(rec, socket_timeout=0.5)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        assert client.sendmail("a@b.test", ["x@y.test"], b"x\r\n") == {}


def test_close_lets_a_message_finish_and_421s_the_idle(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, close_timeout=1.0)
    idle = _open_session(server.port)
    idle.expect("EHLO idle.test", 250)
    busy = _open_session(server.port)
    busy.expect("EHLO busy.test", 250)
    busy.expect("MAIL FROM:<a@b.test>", 250)
    busy.expect("RCPT TO:<x@y.test>", 250)
    busy.expect("DATA", 354)
    busy.send(b"Subject: in flight\r\n\r\nfirst half, ")
    assert rec.data_started.wait(5)

    started, port = time.monotonic(), server.port
    server.begin_close()
    time.sleep(0.3)
    assert _turned_away(port)
    busy.send(b"second half\r\n.\r\n")
    assert busy.reply()[0] == 250  # finished within close_timeout: delivered
    assert busy.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    assert idle.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    assert time.monotonic() - started >= 0.9
    for client in (idle, busy):
        assert client.at_eof()
        client.close()
    assert server.closed.wait(10)
    assert [m.body for m in rec.stored] == [
        b"Subject: in flight\r\n\r\nfirst half, second half\r\n"
    ]
    assert len(rec.closed) == 2


def test_close_never_cuts_off_an_accepted_message(start_server) -> None:
    # The hook is still storing the message when close_timeout runs out: its 250 must still go out first.
    release = threading.Event()
    rec = Recorder(rules={"on_data": Pause(until=release)})
    server = start_server(rec, close_timeout=0.3)
    client = _open_session(server.port)
    client.expect("EHLO c.test", 250)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    client.send(b"complete message\r\n.\r\n")
    wait_until(lambda: len(rec.stored) == 1)
    server.begin_close()
    time.sleep(0.6)  # past close_timeout
    release.set()
    assert client.reply()[0] == 250
    assert client.reply() == (421, ["4.3.2 mx.test Service shutting down"])
    client.close()
    assert server.closed.wait(10)


def test_close_with_no_sessions_is_quick(start_server) -> None:
    server = start_server(close_timeout=5.0)
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 1.0


def _turned_away(port: int) -> bool:
    """A new client cannot start a session: refused by the OS, or greeted with 421 and closed."""
    try:
        client = RawClient(port, timeout=2)
    except ConnectionRefusedError:
        return True
    try:
        return client.reply()[0] == 421 and client.at_eof()
    except (EOFError, ConnectionResetError):
        return True
    finally:
        client.close()


def test_options_reach_the_core(start_server) -> None:
    server = start_server(
        name="mail.example.test",
        banner="Welcome",
        size=5000,
        max_recipients=2,
        hide_pipelining=True,
        disabled_commands=["help"],
    )
    client = RawClient(server.port)
    assert client.reply() == (220, ["mail.example.test ESMTP Welcome"])
    lines = client.expect("EHLO c.test", 250)
    assert "SIZE 5000" in lines
    assert "PIPELINING" not in lines
    assert "STARTTLS" in lines
    client.expect("HELP", 500)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x1@y.test>", 250)
    client.expect("RCPT TO:<x2@y.test>", 250)
    client.expect("RCPT TO:<x3@y.test>", 452)
    client.expect("QUIT", 221)
    client.close()


def test_statistics(start_server) -> None:
    rec = Recorder(rules={"on_data": lambda body, session: b"reject" not in body or False})
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@b.test", ["x@y.test"], b"one\r\n")
        with pytest.raises(smtplib.SMTPDataError):
            client.sendmail("a@b.test", ["x@y.test"], b"reject\r\n")
        while_open = server.statistics()
    rec.wait_closed()
    wait_until(lambda: server.statistics().connections_active == 0)
    stats = server.statistics()
    assert while_open.connections_active == 1
    assert (stats.connections_total, stats.messages, stats.bytes) == (1, 1, 13)
    assert (stats.errors, stats.tls_failures, stats.connections_refused) == (0, 0, 0)


def test_ipv6_loopback(start_server) -> None:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        pytest.fail("this machine has no IPv6 loopback; the IPv6 test needs one")
    rec = Recorder()
    server = start_server(rec, host="::1")
    with smtplib.SMTP("::1", server.port) as client:
        assert client.sendmail("a@b.test", ["x@y.test"], b"over v6\r\n") == {}
    rec.wait_closed()
    assert rec.closed[0].remote_address == "::1"
    assert rec.closed[0].client_hostname == "[::1]"


def test_reverse_lookup(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, disable_reverse_lookup=False)
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.noop()
    assert time.monotonic() - started < 3  # bounded by the 1.5 s lookup timeout
    rec.wait_closed()
    expected = _ptr("127.0.0.1")
    assert rec.closed[0].client_hostname == (expected or "[127.0.0.1]")


def _ptr(address: str) -> str | None:
    try:
        return socket.getnameinfo((address, 0), socket.NI_NAMEREQD)[0].rstrip(".").lower()
    except OSError:
        return None
