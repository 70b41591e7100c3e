"""RFC 5321 DATA and the client going away: conformance checklist §1.7 and §1.8, named by item ID.

Every scenario runs through ``session()`` (whole, byte by byte, split in two everywhere) unless its outcome
depends on how the input is split by nature, or the input is too large for that; then ``run()`` is used.
Expected replies are compared byte for byte where the checklist gives the bytes, else by code and enhanced
code (our texts differ from Postfix's).
"""

from __future__ import annotations

import pytest

from smtpproto import (
    ConnectionClosed,
    DataChunk,
    DataEnd,
    LineEndings,
    LocalProtocolError,
    MailFrom,
    Quit,
    Reply,
    ServerConfig,
    ServerConnection,
)
from smtpproto._data import _find_line_dot

from .helpers import (
    DATA,
    EHLO,
    EHLO_REPLY,
    GREETING,
    MAIL,
    OPEN,
    after_greeting,
    codes,
    message,
    refusing,
    run,
    session,
)

# -- 1.7 DATA, dot-stuffing and the terminator -------------------------------------------------------------


def test_core_70_content_keeps_its_last_crlf() -> None:
    out, events = session(DATA + b"Subject: t\r\n\r\nhello\r\n.\r\n")
    assert out == (
        GREETING
        + EHLO_REPLY
        + b"250 2.1.0 Sender accepted\r\n"
        + b"250 2.1.5 Recipient accepted\r\n"
        + b"354 End data with <CR><LF>.<CR><LF>\r\n"
        + b"250 2.0.0 Message accepted\r\n"
    )
    assert message(events) == b"Subject: t\r\n\r\nhello\r\n"
    assert events[-2:] == [DataChunk(data=b"Subject: t\r\n\r\nhello\r\n"), DataEnd(size=21)]


def test_core_71_unstuffing() -> None:
    out, events = session(DATA + b"..leading\r\n...\r\n.x\r\nend\r\n.\r\n")
    assert after_greeting(out)[-1] == "250 2.0.0"
    assert message(events) == b".leading\r\n..\r\nx\r\nend\r\n"


def test_core_72_empty_message() -> None:
    out, events = session(DATA + b".\r\n")
    assert after_greeting(out)[-2:] == ["354", "250 2.0.0"]
    assert message(events) == b""
    assert events[-1] == DataEnd(size=0)


def test_core_73_terminator_split() -> None:
    whole_out, whole_events = run([DATA + b"hi\r\n.\r\n"])
    out, events = run([DATA, b"hi\r\n", b".", b"\r", b"\n"])
    assert (out, events) == (whole_out, whole_events)
    assert codes(out).count(250) == 4  # EHLO, MAIL, RCPT and the one end of data
    # Every split and byte by byte: session() checks them all.
    assert session(DATA + b"hi\r\n.\r\n") == (whole_out, whole_events)
    # A segment ending in CRLF "." followed by one starting with "x" is a stuffed line, not the end.
    out, events = run([DATA, b"a\r\n.", b"x\r\n.\r\n"])
    assert message(events) == b"a\r\nx\r\n"
    assert codes(out)[-1] == 250


def test_core_74_pipelined_after_the_terminator() -> None:
    out, events = session(DATA + b"hi\r\n.\r\nQUIT\r\n")
    assert out.endswith(
        b"250 2.0.0 Message accepted\r\n221 2.0.0 localhost Service closing transmission channel\r\n"
    )
    assert message(events) == b"hi\r\n"
    assert events[-2:] == [Quit(), ConnectionClosed(transaction_aborted=False)]


def test_core_75_content_that_looks_like_commands() -> None:
    body = b"MAIL FROM:<evil@x>\r\nRCPT TO:<y@x>\r\n"
    out, events = session(DATA + body + b".\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]
    assert message(events) == body
    assert sum(isinstance(event, MailFrom) for event in events) == 1


def test_core_76_eight_bit_and_nul_pass_through() -> None:
    out, events = session(DATA + b"\x00\xff\xfe\r\n.\r\n")
    assert after_greeting(out)[-1] == "250 2.0.0"
    assert message(events) == b"\x00\xff\xfe\r\n"


def test_core_77_lf_dot_lf_does_not_end_data() -> None:
    config = ServerConfig(line_endings=LineEndings.ALLOW)
    out, events = session(DATA + b"a\n.\nb\r\n.\r\n", config)
    assert after_greeting(out)[-2:] == ["354", "250 2.0.0"]
    assert message(events) == b"a\n.\nb\r\n"


@pytest.mark.parametrize(
    "reply",
    [
        Reply(250, "Queued as 1234", "2.0.0"),
        Reply(450, "Mailbox busy"),
        Reply(451, "Local error", "4.3.0"),
        Reply(452, "Insufficient storage", "4.3.1"),
        Reply(550, "Content rejected", "5.7.1"),
        Reply(552, "Too big", "5.3.4"),
        Reply(554, "Transaction failed", "5.6.0"),
    ],
    ids=lambda reply: str(reply.code),
)
def test_core_78_one_reply_after_the_data(reply: Reply) -> None:
    out, _ = session(DATA + b"hi\r\n.\r\n", decide=refusing({}, data_end=reply))
    expected = reply.enhanced or f"{reply.code // 100}.0.0"
    assert after_greeting(out)[-2:] == ["354", f"{reply.code} {expected}"]


def test_core_78_no_second_reply_in_smtp() -> None:
    conn = ServerConnection()
    conn.receive_data(DATA + b"hi\r\n.\r\n")
    event = None
    while not isinstance(event, DataEnd):
        event = conn.next_event()
        if conn.awaiting is not None and not isinstance(event, DataEnd):
            conn.accept()
    conn.send(Reply(250, "ok", "2.0.0"))
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "ok again", "2.0.0"))


@pytest.mark.parametrize("answer", [None, Reply(554, "no", "5.7.1")], ids=["accepted", "refused"])
def test_core_79_after_the_reply_the_transaction_is_over(answer: Reply | None) -> None:
    out, events = session(
        DATA + b"hi\r\n.\r\nRCPT TO:<z@x.test>\r\n" + MAIL, decide=refusing({}, data_end=answer)
    )
    assert after_greeting(out)[-3:] == [
        "250 2.0.0" if answer is None else "554 5.7.1",
        "503 5.5.1",
        "250 2.1.0",
    ]
    assert isinstance(events[-1], MailFrom)


# -- 1.8 client goes away ----------------------------------------------------------------------------------


def test_core_80_close_after_rcpt() -> None:
    out, events = session(OPEN, eof=True)
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5"]
    assert events[-1] == ConnectionClosed(transaction_aborted=True)
    assert not any(isinstance(event, DataEnd) for event in events)


def test_core_81_close_during_data() -> None:
    out, events = session(DATA + b"Subject: t\r\n\r\npart", eof=True)
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "354"]
    assert events[-1] == ConnectionClosed(transaction_aborted=True)
    assert not any(isinstance(event, DataEnd) for event in events)


def test_core_82_close_right_after_the_terminator() -> None:
    conn = ServerConnection()
    conn.receive_data(DATA + b"hi\r\n.\r\n")
    conn.receive_data(b"")
    events = []
    while True:
        event = conn.next_event()
        events.append(event)
        if isinstance(event, DataEnd):
            break
        if conn.awaiting is not None:
            conn.accept()
    # The message was complete: the application still decides.
    assert conn.awaiting is event
    conn.accept()
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert conn.data_to_send().endswith(b"250 2.0.0 Message accepted\r\n")


def test_core_83_queued_replies_are_finished_after_eof() -> None:
    out, events = session(b"NOOP\r\n" + EHLO + MAIL + b"NOOP", eof=True)
    # Everything complete is answered; the unterminated last line is dropped, never executed.
    assert after_greeting(out) == ["250 2.0.0", "250", "250 2.1.0"]
    assert events[-1] == ConnectionClosed(transaction_aborted=True)


def test_core_84_quit() -> None:
    out, events = session(b"QUIT\r\nNOOP\r\n")
    assert out == GREETING + b"221 2.0.0 localhost Service closing transmission channel\r\n"
    assert events == [Quit(), ConnectionClosed(transaction_aborted=False)]


def test_core_84_quit_inside_a_transaction_aborts_it() -> None:
    _, events = session(OPEN + b"QUIT\r\n")
    assert events[-2:] == [Quit(), ConnectionClosed(transaction_aborted=True)]


@pytest.mark.parametrize(
    "buf",
    [
        b"x" * 5000,  # no dot at all
        b"a.b " * 1500,  # many dots, none at a line start: the 3-byte fallback, no match
        b"a.b " * 1500 + b"\r\n.\r\n",  # ... and a match after the fallback
        b"a.b\r\n" * 3 + b"y" * 5000,  # a few dots, none at a line start, no match
        b"y" * 5000 + b"\r\n.x",  # a match among few dots
        b".\r\n" + b"z" * 5000,  # a dot at the very start is no line start here
        b"a.b\r\n.x",  # short buffers take the 3-byte find directly
        b"",
    ],
    ids=["plain", "prose", "prose-match", "few-dots", "match", "leading-dot", "short", "empty"],
)
def test_the_line_dot_search_finds_what_a_plain_find_finds(buf: bytes) -> None:
    # The search steps through single dots on long buffers (a memchr each), and must still agree with the
    # plain 3-byte find.
    assert _find_line_dot(bytearray(buf)) == buf.find(b"\r\n.")
