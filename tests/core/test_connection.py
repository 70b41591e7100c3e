"""The ServerConnection API and its configuration: replies, protocol errors, EOF, shutdown, limits, switches.

The RFC behaviour itself is in ``test_conformance.py`` and its siblings, by CONFORMANCE item ID.
"""

from __future__ import annotations

import pytest

from smtpproto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataStart,
    Hello,
    LocalProtocolError,
    MailFrom,
    RcptTo,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    SessionState,
    StartTLS,
    Verify,
)

from .helpers import (
    DATA,
    EHLO,
    GREETING,
    MAIL,
    OPEN,
    after_greeting,
    drain,
    refusing,
    replies,
    run,
    session,
    statuses,
)

S = SessionState
_CANNOT_VRFY = "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery"


def connect(data: bytes = b"", config: ServerConfig | None = None) -> ServerConnection:
    """A connection that has read ``data`` and answered every decision, its output so far taken."""
    conn = ServerConnection(config)
    if data:
        conn.receive_data(data)
        drain(conn)
    conn.data_to_send()
    return conn


def until_decision(conn: ServerConnection) -> object:
    """Run to the next decision event, accepting none: return it."""
    while True:
        event = conn.next_event()
        if conn.awaiting is not None or event in (NEED_DATA, PAUSED):
            return event


def decision(data: bytes, kind: type, config: ServerConfig | None = None) -> ServerConnection:
    """A connection fed ``data`` that waits on the first decision of type ``kind`` (earlier ones accepted)."""
    conn = ServerConnection(config)
    conn.receive_data(data)
    while True:
        event = until_decision(conn)
        assert conn.awaiting is not None, f"no {kind.__name__} in {data!r}"
        if isinstance(event, kind):
            return conn
        conn.accept()


# -- Reply -------------------------------------------------------------------------------------------------


def test_reply_rendering() -> None:
    assert Reply(250, "OK", "2.0.0").to_bytes() == b"250 2.0.0 OK\r\n"
    assert Reply(250, "OK", "2.0.0").to_bytes(enhanced=False) == b"250 OK\r\n"
    assert Reply(250, ("a", "b", "c")).to_bytes() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(250, "one").lines == ("one",)
    assert Reply(354, "go").is_positive
    assert not Reply(421, "bye").is_positive


@pytest.mark.parametrize(
    ("args", "error"),
    [
        pytest.param((199, "x"), ValueError, id="code-low"),
        pytest.param((600, "x"), ValueError, id="code-high"),
        pytest.param((True, "x"), ValueError, id="code-bool"),
        pytest.param((250, ()), ValueError, id="no-lines"),
        pytest.param((250, ("a", 1)), TypeError, id="not-str"),
        pytest.param((550, "no\r\n250 2.1.0 ok"), ValueError, id="CORE-96"),
        pytest.param((550, "x" * 481), ValueError, id="too-long"),
        pytest.param((550, "\u00e9" * 241), ValueError, id="too-many-octets"),
        pytest.param((550, "x", "5.1"), ValueError, id="enhanced-syntax"),
        pytest.param((550, "x", "2.1.1"), ValueError, id="enhanced-class"),
        pytest.param((354, "x", "2.0.0"), ValueError, id="enhanced-on-3xx"),
    ],
)
def test_reply_validation(args: tuple[object, ...], error: type[Exception]) -> None:
    with pytest.raises(error):
        Reply(*args)  # type: ignore[arg-type]


# -- decisions and LocalProtocolError ----------------------------------------------------------------------


def test_replying_with_nothing_due() -> None:
    conn = connect()
    with pytest.raises(LocalProtocolError, match="no reply is due"):
        conn.send(Reply(250, "OK"))
    with pytest.raises(LocalProtocolError, match="no reply is due"):
        conn.accept()
    with pytest.raises(LocalProtocolError, match="no reply is due"):
        conn.reject()


def test_replying_twice() -> None:
    conn = decision(EHLO + MAIL, MailFrom)
    assert conn.awaiting == MailFrom(address="a@b.test")
    assert conn.replies_owed == 1
    assert conn.next_event() is PAUSED
    conn.accept()
    assert conn.awaiting is None
    assert conn.replies_owed == 0
    with pytest.raises(LocalProtocolError):
        conn.accept()
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(550, "changed my mind", "5.7.1"))
    assert statuses(conn.data_to_send()) == ["220", "250", "250 2.1.0"]


@pytest.mark.parametrize(
    ("data", "kind", "reply"),
    [
        pytest.param(EHLO + MAIL, MailFrom, Reply(354, "go ahead"), id="3xx-to-MAIL"),
        pytest.param(DATA, DataStart, Reply(250, "OK"), id="2xx-to-DATA"),
        pytest.param(DATA + b".\r\n", DataEnd, Reply(354, "more?"), id="3xx-to-DataEnd"),
        pytest.param(b"VRFY x\r\n", Verify, Reply(334, "what?"), id="3xx-to-VRFY"),
    ],
)
def test_a_reply_of_the_wrong_kind(data: bytes, kind: type, reply: Reply) -> None:
    conn = decision(data, kind)
    event = conn.awaiting
    with pytest.raises(LocalProtocolError):
        conn.send(reply)
    assert conn.awaiting is event  # still waiting for a proper answer


def test_reject_takes_only_refusals() -> None:
    conn = decision(EHLO + MAIL, MailFrom)
    with pytest.raises(LocalProtocolError, match="4xx or 5xx"):
        conn.reject(250)
    assert conn.awaiting is not None


@pytest.mark.parametrize(
    ("data", "kind", "answer", "expected"),
    [
        (EHLO + MAIL, MailFrom, "accept", "250 2.1.0 Sender accepted"),
        (EHLO + MAIL, MailFrom, "reject", "550 5.7.1 Sender rejected"),
        (OPEN, RcptTo, "accept", "250 2.1.5 Recipient accepted"),
        (OPEN, RcptTo, "reject", "550 5.1.1 Mailbox unavailable"),
        (DATA, DataStart, "accept", "354 End data with <CR><LF>.<CR><LF>"),
        (DATA, DataStart, "reject", "554 5.5.0 Transaction failed"),
        (DATA + b".\r\n", DataEnd, "accept", "250 2.0.0 Message accepted"),
        (DATA + b".\r\n", DataEnd, "reject", "554 5.7.1 Message refused"),
        (b"VRFY x\r\n", Verify, "accept", _CANNOT_VRFY),
        (b"VRFY x\r\n", Verify, "reject", "550 5.1.1 Mailbox unavailable"),
    ],
)
def test_accept_and_reject_defaults(data: bytes, kind: type, answer: str, expected: str) -> None:
    conn = decision(data, kind)
    getattr(conn, answer)()
    assert replies(conn.data_to_send())[-1] == expected


def test_reject_with_own_code_text_and_enhanced_code() -> None:
    conn = decision(EHLO + MAIL, MailFrom)
    conn.reject(451, "Greylisted, try again later", "4.7.1")
    assert replies(conn.data_to_send())[-1] == "451 4.7.1 Greylisted, try again later"

    conn = decision(EHLO + MAIL, MailFrom)
    conn.reject(451)  # the standard text; an enhanced code from the class
    assert replies(conn.data_to_send())[-1] == "451 4.0.0 Sender rejected"


def test_an_accepted_reply_without_enhanced_code_gets_the_standard_one() -> None:
    out, _ = session(DATA + b"hi\r\n.\r\n", decide=refusing({}, data_end=Reply(250, "fine")))
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]


_STANDARD_ACCEPTS = {
    MailFrom: Reply(250, "Sender accepted", "2.1.0"),
    RcptTo: Reply(250, "Recipient accepted", "2.1.5"),
    DataStart: Reply(354, "End data with <CR><LF>.<CR><LF>"),
    DataEnd: Reply(250, "Message accepted", "2.0.0"),
}


@pytest.mark.parametrize("lmtp", [False, True], ids=["SMTP", "LMTP"])
def test_send_with_the_standard_reply_does_what_accept_does(lmtp: bool) -> None:
    # accept() takes a short path of its own for these events; send() must lead to the same session.
    transaction = (
        b"MAIL FROM:<a@b.test> SMTPUTF8\r\nRCPT TO:<\xc3\xbc@b.test>\r\nRCPT TO:<c@d.test>\r\n"
        b"DATA\r\nhi\r\n.\r\n"
    )
    data = (b"LHLO client.test\r\n" if lmtp else EHLO) + transaction * 2 + b"QUIT\r\n"
    config = ServerConfig(lmtp=lmtp)

    def standard(event: object) -> list[Reply]:
        # LMTP answers the end of data once per recipient.
        return [_STANDARD_ACCEPTS[type(event)]] * (2 if lmtp and isinstance(event, DataEnd) else 1)

    sent = session(data, config, decide=standard)
    assert sent == session(data, config)
    transaction_replies = ["250 2.1.0", "250 2.1.5", "250 2.1.5", "354"] + ["250 2.0.0"] * (
        2 if lmtp else 1
    )
    assert after_greeting(sent[0]) == ["250", *transaction_replies * 2, "221 2.0.0"]


@pytest.mark.parametrize(
    ("data", "kind", "aborted"),
    [
        pytest.param(EHLO + MAIL, MailFrom, False, id="MAIL"),
        pytest.param(OPEN, RcptTo, True, id="RCPT"),
        pytest.param(DATA + b"hi\r\n.\r\n", DataEnd, True, id="DataEnd"),
    ],
)
def test_an_application_421_ends_the_session(data: bytes, kind: type, aborted: bool) -> None:
    conn = decision(data + b"NOOP\r\n", kind)
    conn.send(Reply(421, "localhost Going down", "4.3.2"))
    assert conn.awaiting is None
    assert conn.state is S.CLOSED
    assert conn.next_event() == ConnectionClosed(transaction_aborted=aborted)
    assert conn.data_to_send().endswith(b"421 4.3.2 localhost Going down\r\n")


# -- input and EOF -----------------------------------------------------------------------------------------


def test_receive_data_after_eof() -> None:
    conn = connect()
    conn.receive_data(b"")
    conn.receive_data(b"")  # a second EOF is harmless
    with pytest.raises(RuntimeError, match="after the end"):
        conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)


def test_input_after_the_close_is_ignored() -> None:
    conn = connect(b"QUIT\r\n")
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert conn.data_to_send() == b""


@pytest.mark.parametrize(
    ("data", "config", "state", "aborted"),
    [
        pytest.param(b"", None, S.GREETED, False, id="GREETED"),
        pytest.param(b"", ServerConfig(refuse_service=True), S.REFUSED, False, id="REFUSED"),
        pytest.param(EHLO, None, S.READY, False, id="READY"),
        pytest.param(EHLO + MAIL, None, S.SENDER, True, id="SENDER"),
        pytest.param(OPEN, None, S.RECIPIENTS, True, id="RECIPIENTS"),
        pytest.param(DATA, None, S.DATA, True, id="DATA"),
        pytest.param(DATA + b"Subject: t\r\n\r\npart", None, S.DATA, True, id="DATA-part"),
        pytest.param(OPEN + b"NOOP", None, S.RECIPIENTS, True, id="half-a-line"),
        pytest.param(b"QUIT\r\n", None, S.CLOSED, False, id="CLOSED"),
    ],
)
def test_core_80_to_83_eof_in_every_state(
    data: bytes, config: ServerConfig | None, state: SessionState, aborted: bool
) -> None:
    conn = connect(data, config)
    assert conn.state is state
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(transaction_aborted=aborted)
    assert conn.state is S.CLOSED
    assert conn.data_to_send() == b""  # nothing is said to a peer that is gone


def test_eof_while_a_decision_waits() -> None:
    conn = decision(OPEN, MailFrom)
    conn.receive_data(b"")
    assert conn.next_event() is PAUSED
    conn.accept()
    assert isinstance(conn.next_event(), RcptTo)
    conn.reject()
    assert conn.next_event() == ConnectionClosed(transaction_aborted=True)
    assert statuses(conn.data_to_send())[-2:] == ["250 2.1.0", "550 5.1.1"]


def test_data_chunks_and_the_end_of_data() -> None:
    out, events = session(DATA + b"hello\r\nworld\r\n.\r\n")
    assert events[-2:] == [DataChunk(data=b"hello\r\nworld\r\n"), DataEnd(size=14)]
    assert after_greeting(out)[-1] == "250 2.0.0"


# -- shutdown ------------------------------------------------------------------------------------------------


def test_shutdown_with_lmtp_replies_owed() -> None:
    conn = decision(
        b"LHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\n"
        b"DATA\r\nhi\r\n.\r\n",
        DataEnd,
        ServerConfig(lmtp=True),
    )
    conn.accept()
    assert conn.replies_owed == 1
    conn.shutdown()
    assert conn.replies_owed == 0
    assert statuses(conn.data_to_send())[-2:] == ["250 2.0.0", "421 4.3.2"]
    assert conn.next_event() == ConnectionClosed(transaction_aborted=True)


def test_shutdown_after_early_talk_keeps_the_greeting() -> None:
    conn = ServerConnection()
    conn.receive_data(b"NOOP\r\n")
    drain(conn)
    conn.shutdown()
    assert conn.data_to_send() == (
        GREETING + b"250 2.0.0 OK\r\n421 4.3.2 localhost Service shutting down\r\n"
    )


def starttls_pending() -> ServerConnection:
    """A session that has just produced StartTLS, its 220 queued and not yet taken."""
    conn = ServerConnection(ServerConfig(tls_available=True))
    conn.receive_data(b"EHLO c.test\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert conn.next_event() is NEED_DATA
    conn.data_to_send()
    conn.receive_data(b"STARTTLS\r\n")
    assert isinstance(conn.next_event(), StartTLS)
    assert conn.next_event() is PAUSED
    return conn


def test_shutdown_before_the_starttls_220_went_out_replaces_it() -> None:
    conn = starttls_pending()
    conn.shutdown()
    out = conn.data_to_send()
    assert b"220 2.0.0" not in out
    assert statuses(out)[-1] == "421 4.3.2"
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)


def test_shutdown_after_the_starttls_220_went_out_sends_nothing_in_plaintext() -> None:
    conn = starttls_pending()
    assert statuses(conn.data_to_send())[-1] == "220 2.0.0"
    conn.shutdown(Reply(421, "idle", "4.4.2"))
    assert conn.data_to_send() == b""  # the client is in its TLS handshake by now
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    with pytest.raises(LocalProtocolError):
        conn.tls_established()


# -- limits ------------------------------------------------------------------------------------------------


def test_max_errors() -> None:
    conn = ServerConnection(ServerConfig(max_errors=4))
    # 500, 501, 502 and 503 count; refusals such as 555 (and 552, 553, 452, 530) do not.
    conn.receive_data(
        EHLO + b"FOO\r\nMAIL FROM:<a@b.test> BAR=1\r\nHELO\r\nEXPN x\r\nNOOP\r\n"
        b"RCPT TO:<x@y.test>\r\nNOOP\r\n"
    )
    with pytest.raises(RemoteProtocolError) as info:
        drain_raising(conn)
    assert info.value.reply == Reply(421, "localhost Too many errors, closing connection", "4.7.0")
    # The fourth error is answered by the 421 alone.
    assert after_greeting(conn.data_to_send()) == [
        "250",
        "500 5.5.2",
        "555 5.5.4",
        "501 5.5.4",
        "502 5.5.1",
        "250 2.0.0",
        "421 4.7.0",
    ]
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)


def drain_raising(conn: ServerConnection) -> list[object]:
    """Like drain(), but a RemoteProtocolError propagates."""
    events: list[object] = []
    while (event := conn.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events
        if conn.awaiting is not None:
            conn.accept()
    return events


def test_unknown_http_request_lines_end_the_session() -> None:
    conn = ServerConnection()
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply is not None
    assert info.value.reply.code == 421
    assert conn.data_to_send() == GREETING + b"421 4.7.0 HTTP requests not allowed\r\n"
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)


def test_auth_required_refuses_the_transaction_and_counts_commands() -> None:
    config = ServerConfig(auth_required=True, max_unauthenticated_commands=5)
    conn = ServerConnection(config)
    conn.receive_data(EHLO + MAIL + b"RCPT TO:<x@y.test>\r\nNOOP\r\n")
    assert drain_raising(conn) == [Hello(command="EHLO", hostname="client.test")]
    # RCPT too is told to authenticate (not to send MAIL first, which could not succeed anyway).
    assert after_greeting(conn.data_to_send()) == ["250", "530 5.7.0", "530 5.7.0", "250 2.0.0"]
    # The fifth command is one too many.
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        drain_raising(conn)
    assert info.value.reply == Reply(421, "Too many unauthenticated commands", "4.7.0")
    assert conn.data_to_send() == b"421 4.7.0 Too many unauthenticated commands\r\n"
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)


# -- switches ----------------------------------------------------------------------------------------------


def ehlo_keywords(config: ServerConfig) -> list[str]:
    out, _ = run([EHLO], config)
    return [line[4:].split(" ")[0] for line in out.decode().split("\r\n")[2:-1]]


@pytest.mark.parametrize(
    ("line", "status", "help_status"),
    [
        (b"NOOP\r\n", "500 5.5.2", "504 5.5.4"),
        (b"HELP\r\n", "500 5.5.2", "500 5.5.2"),
        (b"RSET\r\n", "500 5.5.2", "504 5.5.4"),
        (b"HELO c.test\r\n", "500 5.5.2", "504 5.5.4"),
        (b"QUIT\r\n", "500 5.5.2", "504 5.5.4"),
        # RFC 5321 §7.3: VRFY and EXPN disabled for privacy MUST answer 252 (CONFORMANCE CORE-91).
        (b"VRFY x\r\n", "252 2.0.0", "214 2.0.0"),
        (b"EXPN x\r\n", "252 2.0.0", "504 5.5.4"),
    ],
)
def test_disabled_commands(line: bytes, status: str, help_status: str) -> None:
    verb = line.split(b" ")[0].strip()
    config = ServerConfig(disabled_commands=frozenset({verb.decode()}))
    out, events = session(line + b"HELP " + verb + b"\r\n", config)
    assert after_greeting(out) == [status, help_status]
    assert events == []


@pytest.mark.parametrize(
    ("verb", "config", "line"),
    [
        ("STARTTLS", ServerConfig(tls_available=True), b"STARTTLS\r\n"),
        ("AUTH", ServerConfig(allow_insecure_auth=True), b"AUTH PLAIN\r\n"),
    ],
)
def test_a_disabled_command_leaves_the_ehlo_reply(
    verb: str, config: ServerConfig, line: bytes
) -> None:
    assert verb in ehlo_keywords(config)
    disabled = ServerConfig(
        tls_available=config.tls_available,
        allow_insecure_auth=config.allow_insecure_auth,
        disabled_commands=frozenset({verb}),
    )
    assert verb not in ehlo_keywords(disabled)
    out, _ = session(EHLO + line, disabled)
    assert after_greeting(out) == ["250", "500 5.5.2"]


def test_a_disabled_ehlo_leaves_helo() -> None:
    config = ServerConfig(disabled_commands=frozenset({"EHLO"}))
    out, events = session(EHLO + b"HELO c.test\r\n" + MAIL, config)
    assert after_greeting(out) == ["500 5.5.2", "250", "250 2.1.0"]
    assert events[0] == Hello(command="HELO", hostname="c.test")
    assert not events[0].extended


SWITCHES = {
    "hide_pipelining": "PIPELINING",
    "hide_8bitmime": "8BITMIME",
    "hide_smtputf8": "SMTPUTF8",
    "hide_enhanced_status_codes": "ENHANCEDSTATUSCODES",
    "hide_dsn": "DSN",
}


@pytest.mark.parametrize("switch", list(SWITCHES))
def test_hide_switches(switch: str) -> None:
    default = ehlo_keywords(ServerConfig())
    hidden = ehlo_keywords(ServerConfig(**{switch: True}))  # type: ignore[arg-type]
    gone = {SWITCHES[switch]} | ({"SMTPUTF8"} if switch == "hide_8bitmime" else set())
    assert hidden == [keyword for keyword in default if keyword not in gone]


def test_hide_pipelining_does_not_stop_pipelining() -> None:
    # Hiding the keyword does not make the server lose pipelined commands.
    out, _ = session(EHLO + MAIL + b"RCPT TO:<x@y.test>\r\n", ServerConfig(hide_pipelining=True))
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5"]


def test_hide_size() -> None:
    config = ServerConfig(max_message_size=10, hide_size=True)
    out, _ = run([EHLO], config)
    assert b"250-SIZE\r\n" in out
    # The declared size is not checked; the message size still is.
    out, events = run(
        [EHLO + b"MAIL FROM:<a@b.test> SIZE=1000\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
         + b"x" * 20 + b"\r\n.\r\n"],
        config,
    )  # fmt: skip
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "354", "552 5.3.4"]
    assert isinstance(events[-1], DataEnd)
    assert events[-1].size_exceeded


def test_hide_enhanced_status_codes_in_smtp() -> None:
    out, _ = session(
        EHLO + b"FOO\r\n" + MAIL + b"QUIT\r\n", ServerConfig(hide_enhanced_status_codes=True)
    )
    assert replies(out)[2:] == [
        "500 Command not recognized",
        "250 Sender accepted",
        "221 localhost Service closing transmission channel",
    ]
    refused = ServerConnection(ServerConfig(hide_enhanced_status_codes=True, refuse_service=True))
    assert refused.data_to_send() == b"554 localhost No SMTP service here\r\n"


# -- configuration ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_command_line": 511},
        {"max_message_size": 0},
        {"max_message_size": -1},
        {"max_recipients": 0},
        {"max_errors": 0},
        {"max_unauthenticated_commands": 0},
        {"disabled_commands": frozenset({"vrfy"})},
        {"hostname": ""},
        {"hostname": "a b"},
        {"hostname": "mx\r\n250 ok"},
        {"hostname": "a" * 256},
        {"banner": "hi\r\n250 ok"},
        {"banner": "\x1b[31m"},
        {"banner": "x" * 101},
    ],
    ids=lambda kwargs: next(iter(kwargs)) + "=" + repr(next(iter(kwargs.values())))[:20],
)
def test_bad_configuration(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"must|bad|limits"):
        ServerConfig(**kwargs)  # type: ignore[arg-type]


def test_the_longest_configurable_greeting_fits() -> None:
    config = ServerConfig(hostname="h" * 255, banner="b" * 100)
    greeting = ServerConnection(config).data_to_send()
    assert len(greeting) <= 512
    out, _ = run([EHLO + b"HELO c.test\r\nQUIT\r\n"], config)
    assert all(len(line) + 2 <= 512 for line in out.split(b"\r\n"))


def test_state_and_properties() -> None:
    conn = ServerConnection()
    states = [conn.state]
    assert conn.awaiting is None
    assert conn.replies_owed == 0
    assert conn.config == ServerConfig()
    conn.receive_data(EHLO)
    assert conn.next_event() == Hello(command="EHLO", hostname="client.test")
    states.append(conn.state)
    assert states == [S.GREETED, S.READY]
