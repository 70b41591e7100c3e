"""RFC 5321 core conformance: conformance checklist §1.1-§1.4 and §1.9-§1.10, one test (or parameter) per item ID.

The other parts of §1 are in ``test_paths_and_limits.py`` (§1.5, §1.6) and ``test_data_transfer.py``
(§1.7, §1.8).

Every scenario runs through ``session()`` (whole, byte by byte, split in two everywhere) unless its outcome
depends on how the input is split by nature, or the input is too large for that; then ``run()`` is used.
Expected replies are compared byte for byte where the checklist gives the bytes, else by code and enhanced
code (our texts differ from Postfix's).
"""

from __future__ import annotations

import itertools
import re

import pytest

from smtpproto import (
    NEED_DATA,
    Command,
    ConnectionClosed,
    DataEnd,
    DataStart,
    Hello,
    MailFrom,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerConfig,
    ServerConnection,
    Verify,
)

from .helpers import (
    EHLO,
    EHLO_REPLY,
    GREETING,
    MAIL,
    OPEN,
    RCPT,
    after_greeting,
    codes,
    drain,
    message,
    refusing,
    replies,
    run,
    session,
)

# -- 1.1 greeting, refusal, shutdown ------------------------------------------------------------------------


def test_core_01_greeting() -> None:
    conn = ServerConnection()
    assert conn.data_to_send() == GREETING
    # Nothing else before the client speaks.
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""

    named = ServerConnection(ServerConfig(hostname="mx.example.test", banner="Postfix-like"))
    assert named.data_to_send() == b"220 mx.example.test ESMTP Postfix-like\r\n"


def test_core_02_refused_service_waits_for_quit() -> None:
    config = ServerConfig(refuse_service=True, hostname="mx.test")
    conn = ServerConnection(config)
    assert conn.data_to_send() == b"554 5.7.1 mx.test No SMTP service here\r\n"
    # It must not close right after the 554: it waits for the client.
    assert conn.next_event() is NEED_DATA

    out, events = session(
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nNOOP\r\nQUIT\r\nNOOP\r\n", config
    )
    refused = b"503 5.5.1 No SMTP service here, only QUIT\r\n"
    assert out == (
        b"554 5.7.1 mx.test No SMTP service here\r\n"
        + refused * 3
        + b"221 2.0.0 mx.test Service closing transmission channel\r\n"
    )
    assert events == [Quit(), ConnectionClosed(transaction_aborted=False)]


def test_core_02_refused_service_does_not_close_on_pipelined_text() -> None:
    # Text behind a DATA would otherwise end the session (PIPE-05); a refused session opens no transaction
    # and MUST wait for QUIT.
    out, events = run([b"DATA\r\nhello\r\n.\r\nQUIT\r\n"], ServerConfig(refuse_service=True))
    assert after_greeting(out) == ["503 5.5.1", "500 5.5.2", "500 5.5.2", "221 2.0.0"]
    assert events == [Quit(), ConnectionClosed(transaction_aborted=False)]


def test_core_03_421_at_connect_replaces_the_greeting() -> None:
    conn = ServerConnection()
    conn.shutdown(Reply(421, "localhost Too many connections, try again later", "4.7.0"))
    assert conn.data_to_send() == b"421 4.7.0 localhost Too many connections, try again later\r\n"
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    # Close without reading: input is ignored, nothing more is said.
    conn.receive_data(b"EHLO c.test\r\n")
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert conn.data_to_send() == b""


def test_core_03_421_after_the_greeting_follows_it() -> None:
    conn = ServerConnection()
    assert conn.data_to_send() == GREETING
    conn.shutdown(Reply(421, "localhost Too many connections", "4.7.0"))
    assert conn.data_to_send() == b"421 4.7.0 localhost Too many connections\r\n"


def test_core_03_any_command_may_get_421() -> None:
    # The application answers a command with 421: the reply goes out and the session is over.
    out, events = session(
        EHLO + MAIL + b"NOOP\r\n",
        decide=lambda event: Reply(421, "localhost Shutting down", "4.3.2"),
    )
    assert after_greeting(out) == ["250", "421 4.3.2"]
    assert events == [
        Hello(command="EHLO", hostname="client.test"),
        MailFrom(address="a@b.test"),
        ConnectionClosed(transaction_aborted=False),
    ]


@pytest.mark.parametrize(
    ("before", "aborted"),
    [
        pytest.param(b"", False, id="greeted"),
        pytest.param(EHLO, False, id="ready"),
        pytest.param(EHLO + MAIL, True, id="sender"),
        pytest.param(OPEN, True, id="recipients"),
        pytest.param(OPEN + b"DATA\r\nSubject: t\r\n\r\npart", True, id="data"),
    ],
)
def test_core_04_shutdown(before: bytes, aborted: bool) -> None:
    conn = ServerConnection()
    conn.data_to_send()
    if before:
        conn.receive_data(before)
    events = drain(conn)
    conn.data_to_send()
    conn.shutdown()
    assert conn.data_to_send() == b"421 4.3.2 localhost Service shutting down\r\n"
    assert conn.next_event() == ConnectionClosed(transaction_aborted=aborted)
    # During DATA the message is lost: no DataEnd, ever.
    assert not any(isinstance(event, DataEnd) for event in events)
    # A second shutdown says nothing more.
    conn.shutdown()
    assert conn.data_to_send() == b""


def test_core_04_shutdown_while_a_decision_waits() -> None:
    conn = ServerConnection()
    conn.receive_data(OPEN)
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    conn.shutdown(Reply(421, "localhost Idle timeout", "4.4.2"))
    assert conn.awaiting is None
    assert conn.data_to_send() == GREETING + EHLO_REPLY + b"421 4.4.2 localhost Idle timeout\r\n"
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)


def test_core_05_talk_before_the_greeting_is_answered_after_it() -> None:
    # The policy to refuse early talkers belongs to the driver (it owns the clock); the core loses nothing.
    conn = ServerConnection()
    conn.receive_data(EHLO + b"NOOP\r\n")
    assert drain(conn) == [Hello(command="EHLO", hostname="client.test")]
    assert conn.data_to_send() == GREETING + EHLO_REPLY + b"250 2.0.0 OK\r\n"


# -- 1.2 EHLO / HELO -------------------------------------------------------------------------------------

_KEYWORD_LINE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*(?: [\x21-\x7e]+)*")


def test_core_10_ehlo_reply() -> None:
    out, events = session(EHLO)
    assert out == GREETING + EHLO_REPLY
    assert events == [Hello(command="EHLO", hostname="client.test")]
    lines = out.decode().split("\r\n")[1:-1]
    assert all(line.startswith("250-") for line in lines[:-1])
    assert lines[-1].startswith("250 ")
    for line in lines[1:]:
        assert _KEYWORD_LINE.fullmatch(line[4:]), line


def test_core_11_helo_gets_no_extension_list() -> None:
    out, events = session(b"HELO client.test\r\n")
    assert out == GREETING + b"250 localhost Nice to meet you\r\n"
    assert events == [Hello(command="HELO", hostname="client.test")]
    assert isinstance(events[0], Hello)
    assert not events[0].extended


@pytest.mark.parametrize("line", [b"EHLO\r\n", b"HELO\r\n", b"EHLO \r\n", b"HELO   \r\n"])
def test_core_12_hello_without_a_name(line: bytes) -> None:
    out, events = session(line)
    assert after_greeting(out) == ["501 5.5.4"]
    assert events == []


def test_core_12_failed_ehlo_keeps_the_transaction() -> None:
    # "MUST stay in the same state": the open transaction survives the 501.
    out, events = session(EHLO + MAIL + b"EHLO\r\n" + RCPT)
    assert after_greeting(out) == ["250", "250 2.1.0", "501 5.5.4", "250 2.1.5"]
    assert [type(event) for event in events] == [Hello, MailFrom, RcptTo]


@pytest.mark.parametrize(
    "name", ["[192.0.2.1]", "[IPv6:2001:db8::1]", "[IPv6:::1]", "c.test", "localhost"]
)
def test_core_13_address_literals_in_ehlo(name: str) -> None:
    out, events = session(b"EHLO " + name.encode() + b"\r\n")
    assert after_greeting(out) == ["250"]
    assert events == [Hello(command="EHLO", hostname=name)]


def test_core_14_trailing_words_after_the_ehlo_name() -> None:
    out, events = session(b"EHLO client.test some trailing words\r\n")
    assert after_greeting(out) == ["250"]
    assert events == [Hello(command="EHLO", hostname="client.test")]


def test_core_15_underscore_accepted_in_ehlo_not_in_paths() -> None:
    out, events = session(
        b"EHLO a_b.test\r\nMAIL FROM:<x@a_b.test>\r\n" + MAIL + b"RCPT TO:<x@a_b.test>\r\n"
    )
    assert after_greeting(out) == ["250", "501 5.1.7", "250 2.1.0", "501 5.1.3"]
    assert events[0] == Hello(command="EHLO", hostname="a_b.test")


def test_core_16_the_ehlo_name_is_not_checked_against_anything() -> None:
    # The core has no client address to compare with; any well-formed name is welcome.
    out, _ = session(b"EHLO mail.google.com\r\n" + MAIL + RCPT + b"DATA\r\nhi\r\n.\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]


def test_core_17_ehlo_resets_the_transaction() -> None:
    out, events = session(EHLO + MAIL + b"EHLO c.test\r\n" + RCPT)
    assert after_greeting(out) == ["250", "250 2.1.0", "250", "503 5.5.1"]
    assert replies(out)[-1] == "503 5.5.1 Need MAIL command"
    assert [type(event) for event in events] == [Hello, MailFrom, Hello]


def test_core_18_case_insensitive_commands_as_smtplib_sends_them() -> None:
    out, events = session(
        b"ehlo c.test\r\nmail FROM:<Smith@b.test> size=18\r\nrcpt TO:<x@y.test>\r\ndata\r\n"
        b"Subject: t\r\n\r\nhi\r\n.\r\nMail From:<a@b.test> body=8bitmime\r\nquit\r\n"
    )
    assert after_greeting(out) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "354",
        "250 2.0.0",
        "250 2.1.0",
        "221 2.0.0",
    ]
    # The local part is kept byte for byte; parameter names come upper-cased, values as sent.
    assert events[1] == MailFrom(address="Smith@b.test", args={"SIZE": "18"})
    assert events[2] == RcptTo(address="x@y.test")
    assert events[6] == MailFrom(address="a@b.test", args={"BODY": "8BITMIME"})


# -- 1.3 sequencing and 503 ------------------------------------------------------------------------------


def test_core_20_mail_before_ehlo() -> None:
    out, events = session(MAIL)
    assert out == GREETING + b"503 5.5.1 Send HELO/EHLO first\r\n"
    assert events == []


@pytest.mark.parametrize(
    ("line", "status"),
    [
        (b"NOOP\r\n", "250 2.0.0"),
        (b"RSET\r\n", "250 2.0.0"),
        (b"VRFY x\r\n", "252 2.0.0"),
        (b"HELP\r\n", "214 2.0.0"),
        (b"EXPN x\r\n", "502 5.5.1"),
    ],
)
def test_core_21_commands_allowed_before_ehlo(line: bytes, status: str) -> None:
    out, _ = session(line)
    assert after_greeting(out) == [status]


def test_core_22_rcpt_without_mail() -> None:
    out, events = session(EHLO + b"RCPT TO:<x@y.test>\r\n")
    assert after_greeting(out) == ["250", "503 5.5.1"]
    assert [type(event) for event in events] == [Hello]


def test_core_23_data_without_rcpt() -> None:
    out, events = session(EHLO + MAIL + b"DATA\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "503 5.5.1"]
    assert replies(out)[-1] == "503 5.5.1 Need RCPT command (no valid recipients)"
    assert not any(isinstance(event, DataStart) for event in events)


def test_core_24_data_after_every_rcpt_was_refused() -> None:
    decide = refusing({"x@example.test": Reply(550, "No such user", "5.1.1")})
    out, events = session(OPEN + b"DATA\r\n", decide=decide)
    assert after_greeting(out) == ["250", "250 2.1.0", "550 5.1.1", "503 5.5.1"]
    assert not any(isinstance(event, DataStart) for event in events)


def test_core_25_nested_mail_keeps_the_first_sender() -> None:
    out, events = session(
        EHLO + MAIL + b"MAIL FROM:<other@b.test>\r\n" + RCPT + b"DATA\r\nhi\r\n.\r\n"
    )
    assert after_greeting(out) == ["250", "250 2.1.0", "503 5.5.1", "250 2.1.5", "354", "250 2.0.0"]
    assert "503 5.5.1 Nested MAIL command" in replies(out)
    assert [event for event in events if isinstance(event, MailFrom)] == [
        MailFrom(address="a@b.test")
    ]


def test_core_26_data_without_mail() -> None:
    out, _ = session(EHLO + b"DATA\r\n")
    assert after_greeting(out) == ["250", "503 5.5.1"]


def test_core_27_a_503_leaves_the_transaction_as_it_was() -> None:
    out, events = session(
        OPEN + b"MAIL FROM:<b@b.test>\r\nHELO\r\nFOO\r\n" + b"DATA\r\nhi\r\n.\r\n"
    )
    assert after_greeting(out) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "503 5.5.1",
        "501 5.5.4",
        "500 5.5.2",
        "354",
        "250 2.0.0",
    ]
    assert message(events) == b"hi\r\n"


def test_core_28_rset_ends_the_transaction() -> None:
    out, events = session(EHLO + MAIL + b"RSET\r\n" + RCPT)
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.0.0", "503 5.5.1"]
    assert events[-1] == Reset()


# -- 1.4 which error for which mistake -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "status"),
    [
        pytest.param(b"FOO bar\r\n", "500 5.5.2", id="CORE-30"),
        pytest.param(b"\r\n", "500 5.5.2", id="CORE-31"),
        pytest.param(b"NO\x00OP\r\n", "500 5.5.2", id="CORE-32"),
        pytest.param(b"EXPN staff\r\n", "502 5.5.1", id="CORE-33-EXPN"),
        pytest.param(b"TURN\r\n", "502 5.5.1", id="CORE-33-TURN"),
        pytest.param(b"SEND FROM:<a@b.test>\r\n", "502 5.5.1", id="CORE-33-SEND"),
        pytest.param(b"SOML FROM:<a@b.test>\r\n", "502 5.5.1", id="CORE-33-SOML"),
        pytest.param(b"SAML FROM:<a@b.test>\r\n", "502 5.5.1", id="CORE-33-SAML"),
        pytest.param(b"ETRN example.test\r\n", "502 5.5.1", id="CORE-33-ETRN"),
        pytest.param(b"ATRN example.test\r\n", "502 5.5.1", id="CORE-33-ATRN"),
        pytest.param(b"RSET x\r\n", "501 5.5.4", id="CORE-34-RSET"),
        pytest.param(b"QUIT x\r\n", "501 5.5.4", id="CORE-34-QUIT"),
        pytest.param(b"NOOP anything at all\r\n", "250 2.0.0", id="CORE-35"),
        pytest.param(b"NOOP \xff\xfe\r\n", "250 2.0.0", id="CORE-35-undecodable"),
        pytest.param(b"MAIL FROM:a@b.test\r\n", "501 5.1.7", id="CORE-36"),
        pytest.param(b"MAIL FROM:<a@b.test> FOO=bar\r\n", "555 5.5.4", id="CORE-38"),
        pytest.param(b"MAIL FROM:<a@b.test> SIZE\r\n", "501 5.5.4", id="CORE-41"),
        pytest.param(b"HELP BOGUS\r\n", "504 5.5.4", id="CORE-42"),
        pytest.param(b"VRFY\r\n", "501 5.5.4", id="CORE-43"),
    ],
)
def test_core_30_to_43_error_codes(line: bytes, status: str) -> None:
    out, events = session(EHLO + line + b"NOOP\r\n")
    # The error is answered, and the session goes on (a 500 must never close it, CORE-30).
    assert after_greeting(out) == ["250", status, "250 2.0.0"]
    assert [type(event) for event in events] == [Hello]


def test_core_33_advertised_capabilities_never_get_500_or_502() -> None:
    config = ServerConfig(tls_available=True, allow_insecure_auth=True)
    out, _ = run([EHLO], config)
    keywords = [line[4:].split(" ")[0] for line in out.decode().split("\r\n")[2:-1]]
    # The capabilities that are also commands.
    verbs = [keyword for keyword in keywords if keyword in Command.__members__]
    assert verbs == ["STARTTLS", "AUTH"]
    for line in (b"STARTTLS\r\n", b"AUTH PLAIN\r\n"):
        out, _ = run([EHLO + line], config)
        assert codes(out)[-1] not in (500, 502), line


def test_core_34_data_with_an_argument() -> None:
    out, events = session(OPEN + b"DATA x\r\nDATA\r\nhi\r\n.\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "501 5.5.4", "354", "250 2.0.0"]
    assert sum(isinstance(event, DataStart) for event in events) == 1


def test_core_37_space_after_the_colon_is_tolerated() -> None:
    # [policy]: this implementation accepts what Postfix accepts; the path itself is still strict.
    out, events = session(EHLO + b"MAIL FROM: <a@b.test>\r\nRCPT TO:  <x@y.test>\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5"]
    assert events[1:] == [MailFrom(address="a@b.test"), RcptTo(address="x@y.test")]


def test_core_39_unknown_rcpt_parameter() -> None:
    out, _ = session(EHLO + MAIL + b"RCPT TO:<x@y.test> FOO=bar\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "555 5.5.4"]


def test_core_40_a_parameter_the_application_cannot_accept_now() -> None:
    decide = refusing({"a@b.test": Reply(455, "Cannot accommodate SIZE now", "4.5.4")})
    out, events = session(EHLO + b"MAIL FROM:<a@b.test> SIZE=100\r\n" + RCPT, decide=decide)
    assert after_greeting(out) == ["250", "455 4.5.4", "503 5.5.1"]
    assert events[1] == MailFrom(address="a@b.test", args={"SIZE": "100"})


def test_core_42_help_on_a_known_command() -> None:
    out, _ = session(b"HELP mail\r\nHELP\r\nHELP XYZZY please\r\nHELP EXPN\r\nHELP LHLO\r\n")
    # Unknown, unimplemented (502) and other-protocol verbs have no help.
    assert after_greeting(out) == ["214 2.0.0", "214 2.0.0", "504 5.5.4", "504 5.5.4", "504 5.5.4"]
    assert replies(out)[1].startswith("214 2.0.0 MAIL: ")


# -- 1.9 VRFY, EXPN, HELP, NOOP, RSET ----------------------------------------------------------------------


def test_core_90_vrfy() -> None:
    out, events = session(b"VRFY someone\r\n")
    assert out == (
        GREETING + b"252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"
    )
    assert events == [Verify(argument="someone")]


@pytest.mark.parametrize(
    "reply",
    [
        Reply(250, "Jane Doe <jane@example.test>", "2.1.5"),
        Reply(251, "User not local; will forward", "2.1.5"),
        Reply(550, "No such user", "5.1.1"),
        Reply(551, "User not local", "5.1.6"),
        Reply(553, "Mailbox name not allowed", "5.1.3"),
    ],
    ids=lambda reply: str(reply.code),
)
def test_core_90_the_application_really_verifies(reply: Reply) -> None:
    out, _ = session(b"VRFY jane\r\n", decide=lambda event: reply)
    assert after_greeting(out) == [f"{reply.code} {reply.enhanced}"]


def test_core_91_disabled_vrfy_answers_252() -> None:
    config = ServerConfig(disabled_commands=frozenset({"VRFY"}))
    out, events = session(b"VRFY someone\r\nVRFY\r\n", config)
    assert after_greeting(out) == ["252 2.0.0", "252 2.0.0"]
    assert events == []  # nothing is looked up


def test_core_92_expn() -> None:
    out, _ = session(b"EXPN list\r\n")
    assert after_greeting(out) == ["502 5.5.1"]
    config = ServerConfig(disabled_commands=frozenset({"EXPN"}))
    out, _ = session(b"EXPN list\r\n", config)
    assert after_greeting(out) == ["252 2.0.0"]


def test_core_93_help() -> None:
    out, _ = session(b"HELP\r\n")
    assert out == GREETING + b"214 2.0.0 See RFC 5321 for the commands of SMTP\r\n"


@pytest.mark.parametrize(
    "before", [b"", EHLO, EHLO + MAIL, OPEN], ids=["greeted", "ready", "sender", "recipients"]
)
def test_core_94_rset_at_any_time(before: bytes) -> None:
    out, events = session(before + b"RSET\r\nRSET\r\nNOOP\r\n")
    assert after_greeting(out)[-3:] == ["250 2.0.0", "250 2.0.0", "250 2.0.0"]
    assert replies(out)[-2] == "250 2.0.0 Flushed"
    assert events[-2:] == [Reset(), Reset()]


# -- 1.10 reply format -------------------------------------------------------------------------------------

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -])[^\r\n]*\r\n")


def test_core_95_reply_format() -> None:
    decide = refusing({"x@example.test": Reply(550, ("No such user", "here or anywhere"), "5.1.1")})
    out, _ = session(OPEN + b"FOO\r\nVRFY x\r\nHELP\r\nRSET\r\nDATA\r\n", decide=decide)
    lines = out.splitlines(keepends=True)
    codes_seen = []
    for line in lines:
        match = _REPLY_LINE.fullmatch(line)
        assert match, line
        codes_seen.append((match[1], match[2]))
    # Every line of a multi-line reply has the same code; only its last line has a space.
    for (code, sep), (next_code, _) in itertools.pairwise(codes_seen):
        if sep == b"-":
            assert code == next_code
    assert b"550-5.1.1 No such user\r\n550 5.1.1 here or anywhere\r\n" in out


@pytest.mark.parametrize(
    "text", ["no\r\n250 2.1.0 ok", "no\n250 ok", "no\r250 ok", "no\x00", ("fine", "no\r\n250 ok")]
)
def test_core_96_reply_injection_is_refused(text: str | tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Reply(550, text)


def test_core_97_exactly_one_reply_per_command() -> None:
    commands = [
        b"NOOP",
        b"EHLO c.test",
        b"FOO",
        b"MAIL FROM:<a@b.test>",
        b"MAIL FROM:<a@b.test>",
        b"RCPT TO:<>",
        b"RCPT TO:<x@y.test>",
        b"VRFY x",
        b"HELP",
        b"EXPN x",
        b"RSET",
        b"HELO c.test",
        b"QUIT x",
        b"DATA",
    ]
    out, _ = session(b"".join(command + b"\r\n" for command in commands))
    assert len(replies(out)) == 1 + len(commands)
