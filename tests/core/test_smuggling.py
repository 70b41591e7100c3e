"""SMTP smuggling at the core: conformance checklist §7, named by item ID.

SMUG-06 concerns BDAT, which is not offered (see ``test_smug_06_bdat_is_not_offered``); SMUG-08 concerns a
client role that does not exist yet.
"""

from __future__ import annotations

import pytest

from smtpproto import (
    ConnectionClosed,
    DataEnd,
    DataStart,
    Event,
    LineEndings,
    MailFrom,
    Quit,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
)

from .helpers import DATA, EHLO, after_greeting, message, run, session, session_refused

#: The SEC Consult scanner's end-of-data look-alikes (inbound list, outbound additions, older ones).
SEQUENCES = [
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
]
SMUGGLED = (
    b"MAIL FROM:<smug@b.test>\r\nRCPT TO:<x@example.test>\r\nDATA\r\n"
    b"Subject: smuggled\r\n\r\nx\r\n.\r\n"
)
HAS_BARE = {seq: seq != b"\r\n\x00.\r\n" for seq in SEQUENCES}


def template(seq: bytes) -> bytes:
    return b"Subject: t\r\n\r\nline1" + seq + SMUGGLED


@pytest.mark.parametrize("policy", list(LineEndings), ids=lambda policy: policy.value)
@pytest.mark.parametrize("seq", SEQUENCES, ids=repr)
def test_smug_01_02_03_one_message_one_reply(seq: bytes, policy: LineEndings) -> None:
    config = ServerConfig(line_endings=policy)
    # SMUG-03: session() feeds it whole, byte by byte and split everywhere, with the same outcome.
    refused = policy is LineEndings.REJECT and HAS_BARE[seq]
    out, events = (session_refused if refused else session)(
        DATA + template(seq) + b"QUIT\r\n", config
    )
    # SMUG-01: exactly one reply to the whole block, then 221.
    assert after_greeting(out) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "550 5.5.2" if refused else "250 2.0.0",
        "221 2.0.0",
    ]
    # SMUG-02: one sender, one end of data, and the smuggled text is part of the one message.
    assert [event for event in events if isinstance(event, MailFrom)] == [
        MailFrom(address="a@b.test")
    ]
    [end] = [event for event in events if isinstance(event, DataEnd)]
    assert events[-2:] == [Quit(), ConnectionClosed(transaction_aborted=False)]
    if refused:
        assert end.refusal is not None
        assert end.refusal.code == 550
    else:
        assert end.refusal is None
        content = message(events)
        assert content.startswith(b"Subject: t\r\n\r\nline1")
        assert b"MAIL FROM:<smug@b.test>\r\n" in content
        assert content.endswith(b"Subject: smuggled\r\n\r\nx\r\n")
        if policy is LineEndings.NORMALIZE:
            # Every line ending is CRLF; only a lone repaired "." line may have lost its dot.
            assert b"\r" not in content.replace(b"\r\n", b"")
            assert b"\n" not in content.replace(b"\r\n", b"")
        elif policy is LineEndings.ALLOW:
            assert (
                content
                == b"Subject: t\r\n\r\nline1" + seq.replace(b"\r\n.", b"\r\n") + SMUGGLED[:-3]
            )


def test_smug_01_the_refusal_reply() -> None:
    out, _ = session_refused(DATA + template(b"\n.\n") + b"QUIT\r\n")
    assert b"550 5.5.2 Bare CR or LF in message data (possible SMTP smuggling)\r\n" in out


@pytest.mark.parametrize("line", [b"EHLO c.test\n", b"NOOP\n", b"NOOP\rRSET"])
def test_smug_04_bare_line_endings_in_commands_are_refused(line: bytes) -> None:
    out, events = session(line + b"\r\nQUIT\r\n")
    # A bare CR or LF never ends a command line: the whole line is refused, once.
    assert after_greeting(out) == ["500 5.5.2", "221 2.0.0"]
    assert events == [Quit(), ConnectionClosed(transaction_aborted=False)]


def test_smug_04_a_bare_lf_does_not_end_a_command_line() -> None:
    out, events = session(b"NOOP\nNOOP\n")
    assert after_greeting(out) == []
    assert events == []


@pytest.mark.parametrize(
    "policy", [LineEndings.NORMALIZE, LineEndings.ALLOW], ids=lambda p: p.value
)
def test_smug_04_lf_ends_command_lines_when_allowed(policy: LineEndings) -> None:
    out, _ = session(b"EHLO c.test\nNOOP\nNOOP\r\n", ServerConfig(line_endings=policy))
    assert after_greeting(out) == ["250", "250 2.0.0", "250 2.0.0"]


@pytest.mark.parametrize("policy", list(LineEndings), ids=lambda policy: policy.value)
def test_smug_05_the_nul_line_is_content(policy: LineEndings) -> None:
    out, events = session(
        DATA + b"a\r\n\x00.\r\nMAIL FROM:<smug@b.test>\r\n.\r\n", ServerConfig(line_endings=policy)
    )
    assert after_greeting(out)[-2:] == ["354", "250 2.0.0"]
    assert message(events) == b"a\r\n\x00.\r\nMAIL FROM:<smug@b.test>\r\n"


def test_smug_06_bdat_is_not_offered() -> None:
    out, _ = session(EHLO + b"BDAT 3 LAST\r\n")
    assert b"CHUNKING" not in out
    assert after_greeting(out) == ["250", "502 5.5.1"]


def refuse_data(event: Event) -> Reply | None:
    return Reply(451, "try later", "4.3.0") if isinstance(event, DataStart) else None


PIPELINED = b"MAIL FROM:<smug@b.test>\r\nRCPT TO:<x@pf.test>\r\nDATA\r\nhello\r\n.\r\n"


def test_smug_07_refused_data_with_text_behind_it_closes() -> None:
    # The application refuses DATA while the client already sent what it meant as the message.
    out, events = run(
        [DATA + PIPELINED],
        decide=refuse_data,
    )
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "554 5.5.0"]
    assert [event for event in events if isinstance(event, MailFrom)] == [
        MailFrom(address="a@b.test")
    ]
    assert not any(isinstance(event, DataEnd) for event in events)


def test_smug_07_the_error_surfaces_at_the_next_event() -> None:
    conn = ServerConnection()
    conn.receive_data(DATA + PIPELINED)
    while not isinstance(conn.awaiting, DataStart):
        conn.next_event()
        if conn.awaiting is not None and not isinstance(conn.awaiting, DataStart):
            conn.accept()
    conn.reject()
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    assert info.value.reply is not None
    assert info.value.reply.code == 554
    assert conn.next_event() == ConnectionClosed(transaction_aborted=True)


def test_smug_07_refused_data_with_nothing_behind_it_keeps_the_session() -> None:
    out, events = run([DATA, b"RSET\r\n"], decide=refuse_data)
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "451 4.3.0", "250 2.0.0"]
    assert not isinstance(events[-1], ConnectionClosed)
