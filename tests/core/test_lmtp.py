"""RFC 2033 LMTP at the core: conformance checklist §5, named by item ID (LMTP-10 needs CHUNKING, not offered)."""

from __future__ import annotations

import pytest

from smtpproto import (
    PAUSED,
    ConnectionClosed,
    DataEnd,
    Hello,
    LineEndings,
    LocalProtocolError,
    RcptTo,
    RemoteProtocolError,
    Reply,
    Reset,
    ServerConfig,
    ServerConnection,
)

from .helpers import (
    after_greeting,
    message,
    refusing,
    replies,
    run,
    session,
    session_refused,
    statuses,
)

LMTP = ServerConfig(lmtp=True)
LHLO = b"LHLO client.test\r\n"
LHLO_REPLY = (
    b"250-localhost Nice to meet you\r\n"
    b"250-PIPELINING\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-SIZE\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250 DSN\r\n"
)
THREE_RCPTS = (
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<nobody@y.test>\r\n"
    b"RCPT TO:<z@y.test>\r\nDATA\r\n"
)
BODY = b"Subject: t\r\n\r\nhi\r\n.\r\n"
PER_RECIPIENT = [
    Reply(250, "<x@y.test> delivered", "2.1.5"),
    Reply(452, "<z@y.test> mailbox full", "4.2.2"),
]
NOBODY = {"nobody@y.test": Reply(550, "<nobody@y.test> no such user", "5.1.1")}


def test_lmtp_01_greeting() -> None:
    assert ServerConnection(LMTP).data_to_send() == b"220 localhost LMTP\r\n"


@pytest.mark.parametrize(
    "config",
    [
        LMTP,
        # PIPELINING and ENHANCEDSTATUSCODES are mandatory in LMTP: their hide_* switches do not apply.
        ServerConfig(lmtp=True, hide_pipelining=True, hide_enhanced_status_codes=True),
    ],
    ids=["default", "hidden"],
)
def test_lmtp_02_lhlo_lists_the_mandatory_extensions(config: ServerConfig) -> None:
    out, events = session(LHLO, config)
    assert out == b"220 localhost LMTP\r\n" + LHLO_REPLY
    assert events == [Hello(command="LHLO", hostname="client.test")]
    assert isinstance(events[0], Hello)
    assert events[0].extended


@pytest.mark.parametrize("line", [b"EHLO client.test\r\n", b"HELO client.test\r\n"])
def test_lmtp_03_ehlo_and_helo_are_unknown(line: bytes) -> None:
    out, events = session(line + b"MAIL FROM:<a@b.test>\r\n", LMTP)
    assert after_greeting(out) == ["500 5.5.2", "503 5.5.1"]
    assert events == []


def test_lmtp_03_lhlo_is_unknown_in_smtp() -> None:
    out, _ = session(LHLO)
    assert after_greeting(out) == ["500 5.5.2"]


def test_lmtp_04_mail_before_lhlo() -> None:
    out, _ = session(b"MAIL FROM:<a@b.test>\r\n", LMTP)
    assert after_greeting(out) == ["503 5.5.1"]


def test_lmtp_05_data_without_successful_rcpt() -> None:
    decide = refusing({"x@y.test": Reply(550, "no such user", "5.1.1")})
    out, _ = session(LHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n", LMTP, decide)
    assert after_greeting(out) == ["250", "250 2.1.0", "550 5.1.1", "503 5.5.1"]


def test_lmtp_05_pipelined_text_behind_that_data_still_gets_503() -> None:
    # The synchronization error closes the session, and in LMTP it too is a 503 (RFC 2033 §4.2 MUST).
    decide = refusing({"x@y.test": Reply(550, "no such user", "5.1.1")})
    conn = ServerConnection(LMTP)
    conn.receive_data(
        LHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\nhello\r\n.\r\n"
    )
    conn.next_event()
    conn.next_event()
    conn.accept()
    event = conn.next_event()
    assert isinstance(event, RcptTo)
    conn.send(decide(event))  # type: ignore[arg-type]
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert statuses(conn.data_to_send())[-1] == "503 5.5.0"
    assert info.value.reply is not None
    assert info.value.reply.code == 503


def test_lmtp_06_one_reply_per_accepted_recipient() -> None:
    out, events = session(LHLO + THREE_RCPTS + BODY, LMTP, refusing(NOBODY, PER_RECIPIENT))
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "550 5.1.1", "250 2.1.5", "354",
                                   "250 2.1.5", "452 4.2.2"]  # fmt: skip
    assert replies(out)[-2:] == [
        "250 2.1.5 <x@y.test> delivered",
        "452 4.2.2 <z@y.test> mailbox full",
    ]
    assert message(events) == b"Subject: t\r\n\r\nhi\r\n"


def test_lmtp_07_duplicate_recipients_get_a_reply_each() -> None:
    rcpts = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
    out, _ = session(LHLO + rcpts + BODY, LMTP)
    assert after_greeting(out)[-3:] == ["354", "250 2.0.0", "250 2.0.0"]


def test_lmtp_08_rset_after_the_dot_waits_for_every_reply() -> None:
    out, _ = session(LHLO + THREE_RCPTS + BODY + b"RSET\r\n", LMTP, refusing(NOBODY, PER_RECIPIENT))
    assert after_greeting(out)[-4:] == ["354", "250 2.1.5", "452 4.2.2", "250 2.0.0"]
    assert replies(out)[-1] == "250 2.0.0 Flushed"


def start_lmtp_data(recipients: int) -> tuple[ServerConnection, DataEnd]:
    """An LMTP connection at the end of a message to ``recipients`` accepted recipients."""
    conn = ServerConnection(LMTP)
    rcpts = b"".join(f"RCPT TO:<r{i}@y.test>\r\n".encode() for i in range(recipients))
    conn.receive_data(LHLO + b"MAIL FROM:<a@b.test>\r\n" + rcpts + b"DATA\r\n" + BODY + b"RSET\r\n")
    while True:
        event = conn.next_event()
        if isinstance(event, DataEnd):
            return conn, event
        if conn.awaiting is not None:
            conn.accept()


def test_lmtp_09_more_replies_than_recipients() -> None:
    conn, event = start_lmtp_data(2)
    assert conn.awaiting is event
    assert conn.replies_owed == 2
    conn.accept()
    conn.send(Reply(250, "ok", "2.0.0"))
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "one too many", "2.0.0"))
    with pytest.raises(LocalProtocolError):
        conn.accept()


def test_lmtp_09_fewer_replies_than_recipients_hold_the_session() -> None:
    conn, event = start_lmtp_data(3)
    conn.data_to_send()
    conn.accept()
    # One reply out of three: the session waits, the pipelined RSET is not run.
    assert conn.replies_owed == 2
    assert conn.awaiting is event
    assert conn.next_event() is PAUSED
    assert statuses(conn.data_to_send()) == ["250 2.0.0"]
    conn.reject()
    conn.reject(452, "mailbox full", "4.2.2")
    assert conn.replies_owed == 0
    conn.next_event()  # the RSET
    assert statuses(conn.data_to_send()) == ["554 5.7.1", "452 4.2.2", "250 2.0.0"]


def test_lmtp_11_every_reply_has_an_enhanced_code() -> None:
    # Replies the application gives without one get a default: the standard reply's, else the class's.
    decide = refusing(
        {"nobody@y.test": Reply(550, "no such user")},
        data_end=[Reply(250, "delivered"), Reply(451, "try later")],
    )
    config = ServerConfig(lmtp=True, hide_enhanced_status_codes=True)
    out, _ = session(LHLO + THREE_RCPTS + BODY + b"NOOP\r\nFOO\r\nQUIT\r\n", config, decide)
    assert after_greeting(out) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "550 5.1.1",  # the enhanced code of the standard refusal with the same code
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "451 4.0.0",
        "250 2.0.0",
        "500 5.5.2",
        "221 2.0.0",
    ]


def test_lmtp_12_client_closes_while_the_replies_are_written() -> None:
    conn, _ = start_lmtp_data(2)
    conn.receive_data(b"")
    conn.accept()
    conn.accept()
    # What the application accepted stays accepted: the transaction was complete. The RSET that was
    # already received still runs.
    assert conn.next_event() == Reset()
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert statuses(conn.data_to_send())[-3:] == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]


def test_lmtp_refusals_are_repeated_per_recipient() -> None:
    rcpts = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n"
    too_big = ServerConfig(lmtp=True, max_message_size=4)
    out, events = session_refused(LHLO + rcpts + BODY, too_big)
    assert after_greeting(out)[-3:] == ["354", "552 5.3.4", "552 5.3.4"]
    assert isinstance(events[-1], DataEnd)
    assert events[-1].refusal == Reply(552, "Message exceeds fixed maximum message size 4", "5.3.4")

    out, events = session_refused(LHLO + rcpts + b"a\nb\r\n.\r\n", LMTP)
    assert after_greeting(out)[-3:] == ["354", "550 5.5.2", "550 5.5.2"]
    assert isinstance(events[-1], DataEnd)
    assert events[-1].refusal is not None


def test_lmtp_with_bare_line_endings_allowed() -> None:
    config = ServerConfig(lmtp=True, line_endings=LineEndings.ALLOW)
    rcpts = b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n"
    out, events = run([LHLO + rcpts + b"a\nb\r\n.\r\n"], config)
    assert after_greeting(out)[-3:] == ["354", "250 2.0.0", "250 2.0.0"]
    assert message(events) == b"a\nb\r\n"
