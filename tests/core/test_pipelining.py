"""RFC 2920 PIPELINING at the core: conformance checklist §2, named by item ID.

PIPE-04 and PIPE-11 (slow hooks, back-pressure) are adapter tests, PIPE-09/10 need AUTH and PIPE-12 needs
CHUNKING; they are not here.
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
    MailFrom,
    RcptTo,
    RemoteProtocolError,
    Reply,
    Reset,
    ServerConnection,
)

from .helpers import (
    EHLO,
    EHLO_REPLY,
    GREETING,
    after_greeting,
    drain,
    message,
    refusing,
    replies,
    run,
    session,
)

RELAY_DENIED = Reply(554, "<x@elsewhere.test>: Relay access denied", "5.7.1")
PIPE_01 = (
    b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nRCPT TO:<x@pf.test>\r\n"
    b"RCPT TO:<bad\r\nDATA\r\nSubject: t\r\n\r\nhi\r\n.\r\nRSET\r\nNOOP\r\n"
)
PIPE_01_DECIDER = refusing(
    {"x@elsewhere.test": RELAY_DENIED}, data_end=Reply(250, "Ok: queued as 4Xz", "2.0.0")
)


def test_pipe_01_replies_in_order() -> None:
    out, events = session(PIPE_01, decide=PIPE_01_DECIDER)
    assert after_greeting(out) == [
        "250",
        "250 2.1.0",
        "554 5.7.1",
        "250 2.1.5",
        "501 5.1.3",
        "354",
        "250 2.0.0",
        "250 2.0.0",
        "250 2.0.0",
    ]
    assert replies(out)[7] == "250 2.0.0 Ok: queued as 4Xz"
    assert events == [
        Hello(command="EHLO", hostname="c.test"),
        MailFrom(address="a@b.test"),
        RcptTo(address="x@elsewhere.test"),
        RcptTo(address="x@pf.test"),
        DataStart(),
        DataChunk(data=b"Subject: t\r\n\r\nhi\r\n"),
        DataEnd(size=len(b"Subject: t\r\n\r\nhi\r\n")),
        Reset(),
    ]


def test_pipe_02_replies_are_flushed_when_input_runs_dry() -> None:
    conn = ServerConnection()
    conn.receive_data(EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n")
    assert isinstance(conn.next_event(), Hello)
    # Waiting for the application: what is decided so far can go out already.
    assert isinstance(conn.next_event(), MailFrom)
    assert conn.next_event() is PAUSED
    assert conn.data_to_send() == GREETING + EHLO_REPLY
    conn.accept()
    assert isinstance(conn.next_event(), RcptTo)
    conn.accept()
    # The input is used up: both replies are there without any further input.
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"250 2.1.0 Sender accepted\r\n250 2.1.5 Recipient accepted\r\n"


def test_pipe_03_one_byte_per_write() -> None:
    whole = run([PIPE_01], decide=PIPE_01_DECIDER)
    bytewise = run([PIPE_01[i : i + 1] for i in range(len(PIPE_01))], decide=PIPE_01_DECIDER)
    assert bytewise == whole


PIPE_05 = (
    b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n"
    b"MAIL FROM:<evil@b.test>\r\nRCPT TO:<x@pf.test>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n"
)


def test_pipe_05_text_behind_a_failing_data_is_never_run() -> None:
    # One write, as the checklist sends it: the DATA that cannot succeed has text behind it.
    out, events = run([EHLO + PIPE_05], decide=refusing({"x@elsewhere.test": RELAY_DENIED}))
    assert after_greeting(out) == ["250", "250 2.1.0", "554 5.7.1", "554 5.5.0"]
    assert events == [
        Hello(command="EHLO", hostname="client.test"),
        MailFrom(address="a@b.test"),
        RcptTo(address="x@elsewhere.test"),
        ConnectionClosed(transaction_aborted=False),  # the stand-in drain() records for the error
    ]


def test_pipe_05_the_error_is_raised_at_once() -> None:
    conn = ServerConnection()
    conn.data_to_send()
    conn.receive_data(EHLO + PIPE_05)
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    conn.accept()
    assert isinstance(conn.next_event(), RcptTo)
    conn.reject()
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply == Reply(
        554, "SMTP protocol synchronization error (text pipelined after DATA)", "5.5.0"
    )
    assert conn.data_to_send().endswith(info.value.reply.to_bytes())
    # The sender's transaction was open: it is aborted, and nothing more is read.
    assert conn.next_event() == ConnectionClosed(transaction_aborted=True)
    assert conn.data_to_send() == b""


def test_pipe_06_no_recipients_no_message() -> None:
    decide = refusing({"x@elsewhere.test": RELAY_DENIED})
    out, events = session(
        EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n", decide=decide
    )
    assert after_greeting(out)[-1] == "503 5.5.1"
    # The client ignores the 503 and sends an empty message: it is an unknown command, not a message.
    conn = ServerConnection()
    conn.receive_data(EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@elsewhere.test>\r\nDATA\r\n")
    events = drain(conn, decide)
    conn.receive_data(b".\r\n")
    events += drain(conn, decide)
    assert after_greeting(conn.data_to_send())[-2:] == ["503 5.5.1", "500 5.5.2"]
    assert not any(isinstance(event, DataStart | DataChunk | DataEnd) for event in events)


def test_pipe_07_nothing_after_quit() -> None:
    out, events = session(b"QUIT\r\nNOOP\r\n")
    assert after_greeting(out) == ["221 2.0.0"]
    assert events[-1] == ConnectionClosed(transaction_aborted=False)


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        pytest.param(EHLO + b"MAIL FROM:<a@b.test>\r\n", ["250", "250 2.1.0"], id="ehlo-mail"),
        pytest.param(b"NOOP\r\nNOOP\r\n", ["250 2.0.0", "250 2.0.0"], id="noop-noop"),
        pytest.param(
            b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\n", ["250", "250 2.1.0"], id="helo-mail"
        ),
    ],
)
def test_pipe_08_a_sync_point_not_last_is_answered_in_order(
    group: bytes, expected: list[str]
) -> None:
    # [policy] lenient: every command of the group is answered, in order; none is dropped.
    out, _ = run([group])
    assert after_greeting(out) == expected


def test_pipe_08_pipelining_after_the_dot() -> None:
    out, events = session(
        EHLO
        + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
        + b"hi\r\n.\r\nMAIL FROM:<b@b.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n"
    )
    assert after_greeting(out) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "250 2.1.0",
        "250 2.1.5",
        "354",
    ]
    assert message(events) == b"hi\r\n"
    assert events[-1] == DataStart()


def test_unprocessed_bytes_counts_what_the_client_sent_ahead() -> None:
    conn = ServerConnection()
    conn.data_to_send()
    assert conn.unprocessed_bytes == 0
    rcpt, data = b"RCPT TO:<x@y.test>\r\n", b"DATA\r\n"
    body = b"Subject: early\r\n\r\nsent before the 354\r\n.\r\n"
    conn.receive_data(EHLO + b"MAIL FROM:<a@b.test>\r\n" + rcpt + data + body + b"NOOP")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    assert conn.unprocessed_bytes == len(rcpt + data + body + b"NOOP")
    conn.accept()
    assert isinstance(conn.next_event(), RcptTo)
    conn.accept()
    assert isinstance(conn.next_event(), DataStart)
    # The client sent its message without waiting for the 354: a driver must not wait for it now.
    assert conn.unprocessed_bytes == len(body + b"NOOP")
    conn.accept()
    assert isinstance(conn.next_event(), DataChunk)
    assert isinstance(conn.next_event(), DataEnd)
    conn.accept()
    assert conn.next_event() is NEED_DATA
    assert conn.unprocessed_bytes == len(b"NOOP")  # an incomplete line waits for its end


def test_unprocessed_bytes_is_zero_when_every_command_is_handled() -> None:
    conn = ServerConnection()
    conn.receive_data(EHLO + b"MAIL FROM:<a@b.test>\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    assert conn.unprocessed_bytes == 0
    conn.accept()
    assert conn.next_event() is NEED_DATA
    assert conn.unprocessed_bytes == 0
