"""STARTTLS at the connection level (RFC 3207, RFC 8314 implicit TLS, RFC 8689 REQUIRETLS): CONFORMANCE §3.

The handshake itself belongs to the driver; here the test plays the driver and calls ``tls_established`` by
hand, so that what happens *between* the 220 and the handshake (the injection window) can be observed.

Not here: TLS-14 (a failed handshake closes the socket) and TLS-15 (post-handshake policy) are driver
decisions, and TLS-13 (require TLS before other commands) is not a core option.
"""

from __future__ import annotations

import pytest

from smtpproto import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    ConnectionClosed,
    Event,
    Hello,
    LocalProtocolError,
    MailFrom,
    RcptTo,
    Sentinel,
    ServerConfig,
    ServerConnection,
    SessionState,
    StartTLS,
    TLSDetails,
)

from .helpers import codes, replies, run, session

TLS = ServerConfig(tls_available=True)
EHLO = b"EHLO client.test\r\n"
READY = b"220 2.0.0 Ready to start TLS\r\n"
PLAIN_TIM = b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm"  # base64("\0tim\0tanstaaftanstaaf")


def keywords(out: bytes) -> list[str]:
    """The capability lines of the last EHLO reply in ``out`` (its greeting line left out)."""
    lines = out.decode("ascii").split("\r\n")[:-1]
    end = max(i for i, line in enumerate(lines) if line.startswith("250 "))
    start = end
    while start > 0 and lines[start - 1].startswith("250-"):
        start -= 1
    return [line[4:] for line in lines[start + 1 : end + 1]]


def feed(conn: ServerConnection, data: bytes = b"") -> tuple[bytes, list[Event], Sentinel | None]:
    """Play the driver: feed ``data``, accept every decision, stop at NEED_DATA, PAUSED or the end.

    Unlike ``helpers.drain`` it does *not* complete the handshake on StartTLS: the test does that.
    Returns (output, events, the sentinel that stopped it or None after ConnectionClosed).
    """
    if data:
        conn.receive_data(data)
    events: list[Event] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA or event is PAUSED:
            return conn.data_to_send(), events, event
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return conn.data_to_send(), events, None
        while conn.awaiting is not None:
            conn.accept()


def connect(config: ServerConfig = TLS) -> ServerConnection:
    conn = ServerConnection(config)
    assert conn.data_to_send() == b"220 localhost ESMTP\r\n"
    return conn


def handshake(conn: ServerConnection) -> None:
    conn.tls_established(server_name="mx.test", protocol="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256")


# --- advertising -------------------------------------------------------------------------------------


def test_TLS_01_advertised_when_available() -> None:
    out, events = session(EHLO, TLS)
    assert b"250-DSN\r\n250 STARTTLS\r\n" in out
    assert "STARTTLS" in keywords(out)
    assert events == [Hello(command="EHLO", hostname="client.test")]


def test_TLS_11_not_advertised_without_tls() -> None:
    out, _ = session(EHLO, ServerConfig())
    assert "STARTTLS" not in keywords(out)
    assert b"STARTTLS" not in out


def test_hide_starttls_hides_but_still_accepts() -> None:
    conn = connect(ServerConfig(tls_available=True, hide_starttls=True))
    out, _, _ = feed(conn, EHLO)
    assert "STARTTLS" not in keywords(out)
    out, events, stop = feed(conn, b"STARTTLS\r\n")
    assert out == READY
    assert events == [StartTLS()]
    assert stop is PAUSED


def test_starttls_disabled_is_unknown_and_not_advertised() -> None:
    config = ServerConfig(tls_available=True, disabled_commands=frozenset({"STARTTLS"}))
    out, _ = session(EHLO + b"STARTTLS\r\n", config)
    assert "STARTTLS" not in keywords(out)
    assert replies(out)[-1] == "500 5.5.2 Command not recognized"


# --- the 220 and the pause ----------------------------------------------------------------------------


def test_TLS_02_ready_then_paused_until_the_handshake() -> None:
    conn = connect()
    feed(conn, EHLO)
    out, events, stop = feed(conn, b"STARTTLS\r\n")
    assert out == b"220 2.0.0 Ready to start TLS\r\n"
    assert events == [StartTLS()]
    assert stop is PAUSED
    # However often the driver asks, nothing moves until the handshake is reported.
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED
    assert conn.secure is False
    assert conn.tls is None
    handshake(conn)
    assert conn.secure is True
    assert conn.tls == TLSDetails(
        server_name="mx.test", protocol="TLSv1.3", cipher="TLS_AES_128_GCM_SHA256"
    )
    # ! No second greeting: after the handshake the client speaks first.
    assert conn.data_to_send() == b""
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""
    assert conn.state is SessionState.GREETED


def test_tls_details_default_to_none() -> None:
    conn = connect()
    feed(conn, b"STARTTLS\r\n")
    conn.tls_established()
    assert conn.tls == TLSDetails(server_name=None, protocol=None, cipher=None)


def test_tls_established_without_starttls_is_a_local_error() -> None:
    conn = connect()
    with pytest.raises(LocalProtocolError):
        conn.tls_established()
    feed(conn, EHLO + b"STARTTLS\r\n")
    handshake(conn)
    # Twice is as wrong as never.
    with pytest.raises(LocalProtocolError):
        handshake(conn)
    assert conn.secure is True


# --- injection (CVE-2011-0411, CVE-2024-34083, EAST) ----------------------------------------------------


@pytest.mark.parametrize(
    "injected",
    [
        b"NOOP\r\n",
        b"EHLO x\r\n",
        b"EHLO commandinjectiontester\r\n",
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n",
        b"QUIT\r\n",
        b"RSET\r\nNOOP",  # a complete and a partial line (REFERENCE §6)
    ],
)
def test_injection_in_the_same_write_is_discarded(injected: bytes) -> None:
    conn = connect()
    feed(conn, EHLO)
    out, events, stop = feed(conn, b"STARTTLS\r\n" + injected)
    # Only the 220: nothing of the injected commands ran in clear ...
    assert out == READY
    assert events == [StartTLS()]
    assert stop is PAUSED
    handshake(conn)
    # ... nor inside TLS.
    out, events, stop = feed(conn)
    assert (out, events, stop) == (b"", [], NEED_DATA)
    assert conn.state is SessionState.GREETED


def test_TLS_03_east_command_injection_verbatim() -> None:
    conn = connect()
    out, _, _ = feed(conn, b"EHLO commandinjectiontester\r\n")
    assert codes(out) == [250]
    out, _, _ = feed(conn, b"STARTTLS\r\nEHLO commandinjectiontester\r\n")
    assert out == READY
    handshake(conn)
    # "then read without sending": the server says nothing (EAST flags any 250 here).
    out, events, stop = feed(conn)
    assert (out, events, stop) == (b"", [], NEED_DATA)
    out, events, _ = feed(conn, b"FAKE commandinjectiontester\r\n")
    assert out == b"500 5.5.2 Command not recognized\r\n"
    assert events == []


def test_TLS_04_injected_transaction_is_gone() -> None:
    conn = connect()
    out, _, _ = feed(conn, b"STARTTLS\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n")
    assert out == READY
    handshake(conn)
    out, events, _ = feed(conn, b"EHLO c.test\r\nRCPT TO:<x@y.test>\r\n")
    assert out.startswith(b"250-localhost Nice to meet you\r\n")
    assert replies(out)[-1] == "503 5.5.1 Need MAIL command"
    assert events == [Hello(command="EHLO", hostname="c.test")]
    assert not any(isinstance(event, MailFrom | RcptTo) for event in events)


def test_TLS_05_bytes_while_the_handshake_is_pending_are_discarded() -> None:
    client_hello = bytes.fromhex("16030100f8010000f40303") + bytes(range(256))
    conn = connect()
    feed(conn, EHLO)
    out, _, stop = feed(conn, b"STARTTLS\r\n" + client_hello)
    assert (out, stop) == (READY, PAUSED)
    # Plaintext (or a ClientHello) that arrives before the driver reports the handshake goes nowhere.
    for late in (client_hello, b"NOOP\r\n", b"MAIL FROM:<a@b.test>\r\n", b"\r\n"):
        conn.receive_data(late)
        assert conn.next_event() is PAUSED
        assert conn.data_to_send() == b""
    handshake(conn)
    out, events, stop = feed(conn)
    assert (out, events, stop) == (b"", [], NEED_DATA)
    # The first bytes after the handshake are read from a clean slate.
    out, events, _ = feed(conn, b"NOOP\r\n")
    assert out == b"250 2.0.0 OK\r\n"


def test_TLS_12_no_reply_after_the_220() -> None:
    conn = connect()
    out, events, stop = feed(conn, b"NOOP\r\nSTARTTLS\r\n")
    assert out == b"250 2.0.0 OK\r\n" + READY
    assert events == [StartTLS()]
    assert stop is PAUSED
    # Even with more commands arriving, nothing follows the 220 in clear.
    conn.receive_data(b"NOOP\r\nEHLO x\r\n")
    assert conn.next_event() is PAUSED
    assert conn.data_to_send() == b""


def test_eof_while_the_handshake_is_pending() -> None:
    conn = connect()
    feed(conn, b"STARTTLS\r\n")
    conn.receive_data(b"")
    assert conn.next_event() is PAUSED
    handshake(conn)
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert conn.data_to_send() == b""


# --- after the handshake: RFC 3207 §4.2 reset -----------------------------------------------------------


def test_TLS_06_mail_right_after_tls_needs_ehlo() -> None:
    out, events = run([EHLO + b"STARTTLS\r\n", b"MAIL FROM:<a@b.test>\r\n"], TLS)
    assert replies(out)[-2:] == [
        "220 2.0.0 Ready to start TLS",
        "503 5.5.1 Send HELO/EHLO first",
    ]
    assert not any(isinstance(event, MailFrom) for event in events)


def test_TLS_06_ehlo_again_works_and_the_transaction_follows() -> None:
    out, events = run([EHLO + b"STARTTLS\r\n", EHLO + b"MAIL FROM:<a@b.test>\r\n"], TLS)
    assert codes(out) == [220, 250, 220, 250, 250]
    assert events[-1] == MailFrom(address="a@b.test")


def test_TLS_06_authentication_is_forgotten() -> None:
    config = ServerConfig(tls_available=True, allow_insecure_auth=True)
    conn = connect(config)
    feed(conn, EHLO)
    out, events, _ = feed(conn, b"AUTH PLAIN " + PLAIN_TIM + b"\r\n")
    assert out == b"235 2.7.0 Authentication successful\r\n"
    assert conn.authenticated_user == "tim"
    feed(conn, EHLO + b"STARTTLS\r\n")
    handshake(conn)
    assert conn.authenticated_user is None
    out, _, _ = feed(conn, EHLO)
    # AUTH is offered again (it was hidden while authenticated) and works again.
    assert "AUTH PLAIN LOGIN" in keywords(out)
    out, events, _ = feed(conn, b"AUTH PLAIN " + PLAIN_TIM + b"\r\n")
    assert out == b"235 2.7.0 Authentication successful\r\n"
    assert isinstance(events[0], AuthRequest)


def test_TLS_07_ehlo_after_tls_lists_no_starttls() -> None:
    config = ServerConfig(tls_available=True)
    out, _ = run([EHLO, b"STARTTLS\r\n", EHLO], config)
    before, after = out.split(READY)
    assert "STARTTLS" in keywords(before)
    assert "REQUIRETLS" not in keywords(before)
    assert "AUTH PLAIN LOGIN" not in keywords(before)
    caps = keywords(after)
    assert "STARTTLS" not in caps
    # The list may differ after TLS (CONFORMANCE TLS-07): AUTH and REQUIRETLS appear.
    assert caps[-2:] == ["AUTH PLAIN LOGIN", "REQUIRETLS"]


def test_TLS_08_starttls_inside_tls_is_503() -> None:
    # run(), not session(): split input would move bytes across the handshake (they are discarded).
    out, events = run([EHLO + b"STARTTLS\r\n", EHLO + b"STARTTLS\r\nNOOP\r\n"], TLS)
    assert replies(out)[-2:] == ["503 5.5.1 TLS already active", "250 2.0.0 OK"]
    # ! Never a nested handshake.
    assert sum(isinstance(event, StartTLS) for event in events) == 1


def test_TLS_08_starttls_before_ehlo_inside_tls_is_503() -> None:
    out, _ = run([b"STARTTLS\r\n", b"STARTTLS\r\n"], TLS)
    assert replies(out)[1:] == ["220 2.0.0 Ready to start TLS", "503 5.5.1 TLS already active"]


# --- refusals -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [b"STARTTLS now\r\n", b"STARTTLS  \r\n", b"starttls x\r\n"])
def test_TLS_09_arguments_are_501(line: bytes) -> None:
    out, events = session(EHLO + line + b"NOOP\r\n", TLS)
    assert replies(out)[-2:] == ["501 5.5.4 Syntax: STARTTLS (no arguments)", "250 2.0.0 OK"]
    assert not any(isinstance(event, StartTLS) for event in events)


def test_TLS_09_arguments_inside_tls_are_still_501() -> None:
    out, _ = session(b"STARTTLS now\r\n", ServerConfig(secure=True))
    assert replies(out)[-1] == "501 5.5.4 Syntax: STARTTLS (no arguments)"


def test_TLS_10_11_not_available_is_454_and_the_session_goes_on() -> None:
    out, events = session(EHLO + b"STARTTLS\r\nNOOP\r\n", ServerConfig())
    assert out.endswith(b"454 4.7.0 TLS not available\r\n250 2.0.0 OK\r\n")
    assert not any(isinstance(event, StartTLS) for event in events)


def test_starttls_refused_in_a_refused_session() -> None:
    config = ServerConfig(tls_available=True, refuse_service=True)
    out, events = session(b"STARTTLS\r\n", config)
    assert out == (
        b"554 5.7.1 localhost No SMTP service here\r\n503 5.5.1 No SMTP service here, only QUIT\r\n"
    )
    assert events == []


# --- [policy] choices -----------------------------------------------------------------------------------


def test_TLS_16_starttls_before_ehlo_is_accepted() -> None:
    # [policy]: as Postfix (observed), STARTTLS needs no EHLO first.
    conn = connect()
    out, events, stop = feed(conn, b"STARTTLS\r\n")
    assert (out, events, stop) == (READY, [StartTLS()], PAUSED)


def test_TLS_17_starttls_inside_a_transaction_drops_it() -> None:
    # [policy]: as Postfix (observed) STARTTLS is accepted and the reset drops the transaction.
    conn = connect()
    feed(conn, EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n")
    assert conn.state is SessionState.RECIPIENTS
    out, _, stop = feed(conn, b"STARTTLS\r\n")
    assert (out, stop) == (READY, PAUSED)
    handshake(conn)
    assert (conn.state, conn.secure) == (SessionState.GREETED, True)
    out, _, _ = feed(conn, EHLO + b"DATA\r\n")
    assert replies(out)[-1] == "503 5.5.1 Need MAIL command"
    # The dropped transaction does not count as aborted when the client leaves afterwards.
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)


# --- implicit TLS (RFC 8314) ------------------------------------------------------------------------------


def test_TLS_18_implicit_tls_starts_secure() -> None:
    config = ServerConfig(secure=True, tls_available=True)
    conn = ServerConnection(config)
    assert conn.secure is True
    assert (
        conn.tls is None
    )  # nothing was reported: the driver did the handshake before the greeting
    out, events = session(EHLO + b"STARTTLS\r\n", config)
    caps = keywords(out)
    assert "STARTTLS" not in caps
    assert "REQUIRETLS" in caps
    assert "AUTH PLAIN LOGIN" in caps
    assert replies(out)[-1] == "503 5.5.1 TLS already active"
    assert not any(isinstance(event, StartTLS) for event in events)


def test_hide_requiretls() -> None:
    out, _ = session(EHLO, ServerConfig(secure=True, hide_requiretls=True))
    assert "REQUIRETLS" not in keywords(out)


# --- REQUIRETLS (RFC 8689) ---------------------------------------------------------------------------------


def test_RTLS_01_02_requiretls_refused_in_plaintext() -> None:
    out, events = session(EHLO + b"MAIL FROM:<a@b.test> REQUIRETLS\r\n", TLS)
    assert "REQUIRETLS" not in keywords(out)
    # [rec] 530 5.7.10; ! never 250 in clear.
    assert replies(out)[-1] == "530 5.7.10 REQUIRETLS needs a TLS connection"
    assert not any(isinstance(event, MailFrom) for event in events)


def test_RTLS_02_requiretls_accepted_after_starttls() -> None:
    out, events = run([EHLO + b"STARTTLS\r\n", EHLO + b"MAIL FROM:<a@b.test> REQUIRETLS\r\n"], TLS)
    assert replies(out)[-1] == "250 2.1.0 Sender accepted"
    assert events[-1] == MailFrom(address="a@b.test", args={"REQUIRETLS": True})


def test_RTLS_02_requiretls_accepted_on_implicit_tls() -> None:
    out, events = session(EHLO + b"MAIL FROM:<a@b.test> REQUIRETLS\r\n", ServerConfig(secure=True))
    assert replies(out)[-1] == "250 2.1.0 Sender accepted"
    assert events[-1] == MailFrom(address="a@b.test", args={"REQUIRETLS": True})


def test_starttls_does_not_need_authentication() -> None:
    # RFC 4954 §6 / RFC 3207: with AUTH required, STARTTLS (and EHLO, NOOP) must still work.
    config = ServerConfig(tls_available=True, auth_required=True)
    out, events = run([EHLO + b"NOOP\r\nSTARTTLS\r\n", EHLO], config)
    assert codes(out) == [220, 250, 250, 220, 250]
    assert StartTLS() in events
