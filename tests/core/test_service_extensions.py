"""Service extensions at the core: conformance checklist §6.1 SIZE, §6.2 8BITMIME, §6.3 SMTPUTF8, §6.5 enhanced
status codes, §6.6 DSN and §6.7 REQUIRETLS (plaintext sessions), named by item ID.

SIZE-12 needs CHUNKING (not offered); RTLS-05 needs a TLS session.
"""

from __future__ import annotations

import re

import pytest

from smtpproto import (
    DataEnd,
    Event,
    MailFrom,
    RcptTo,
    Reply,
    ServerConfig,
    ServerConnection,
    Verify,
)

from .helpers import (
    DATA,
    EHLO,
    MAIL,
    after_greeting,
    drain,
    message,
    refusing,
    replies,
    run,
    session,
    session_refused,
    statuses,
)


def capabilities(config: ServerConfig | None = None) -> list[str]:
    out, _ = run([EHLO], config)
    return [line[4:] for line in out.decode().split("\r\n")[2:-1]]


def mail(params: str, config: ServerConfig | None = None) -> tuple[list[str], list[Event]]:
    """The status of ``MAIL FROM:<a@b.test> params`` and the events after EHLO."""
    out, events = session(EHLO + f"MAIL FROM:<a@b.test> {params}\r\n".encode(), config)
    return after_greeting(out)[1:], events[1:]


def rcpt(params: str, config: ServerConfig | None = None) -> tuple[list[str], list[Event]]:
    """The status of ``RCPT TO:<x@y.test> params`` after an accepted MAIL, and the events after it."""
    out, events = session(EHLO + MAIL + f"RCPT TO:<x@y.test> {params}\r\n".encode(), config)
    return after_greeting(out)[2:], events[2:]


# -- 6.1 SIZE --------------------------------------------------------------------------------------------

LIMITED = ServerConfig(max_message_size=10240000)


def test_size_01_advertised() -> None:
    assert "SIZE 10240000" in capabilities(LIMITED)
    # No limit, or the number hidden: a bare SIZE (no fixed maximum is advertised).
    assert "SIZE" in capabilities()
    assert "SIZE" in capabilities(ServerConfig(max_message_size=100, hide_size=True))
    # "SIZE 0" would mean "no limit" (RFC 1870 §4): a limit of 0 is refused outright.
    with pytest.raises(ValueError, match="max_message_size"):
        ServerConfig(max_message_size=0)


def test_size_02_declared_size_over_the_limit() -> None:
    assert mail("SIZE=999999999", LIMITED) == (["552 5.3.4"], [])
    assert mail("SIZE=10240000", LIMITED) == (
        ["250 2.1.0"],
        [MailFrom(address="a@b.test", args={"SIZE": "10240000"})],
    )


def test_size_03_no_space_now_is_the_applications_answer() -> None:
    decide = refusing({"a@b.test": Reply(452, "Insufficient system storage", "4.3.1")})
    out, _ = session(EHLO + b"MAIL FROM:<a@b.test> SIZE=1000\r\n", LIMITED, decide)
    assert after_greeting(out) == ["250", "452 4.3.1"]


@pytest.mark.parametrize(
    "params",
    [
        "SIZE=abc",
        "SIZE=",
        "SIZE=-1",
        "SIZE=1e3",
        "SIZE= 1",
        "SIZE=" + "9" * 21,
        "SIZE=99999999999999999999999",
        "SIZE=100 SIZE=200",
        "size=1 SIZE=2",
    ],
    ids=[
        "abc",
        "empty",
        "negative",
        "exponent",
        "space",
        "21-digits",
        "SIZE-05",
        "SIZE-06",
        "case",
    ],
)
def test_size_04_05_06_bad_size_syntax(params: str) -> None:
    assert mail(params, LIMITED) == (["501 5.5.4"], [])


def test_size_05_twenty_digits_over_two_to_the_64() -> None:
    assert mail("SIZE=99999999999999999999", LIMITED) == (["552 5.3.4"], [])
    # Without a limit the value is only syntax.
    assert mail("SIZE=99999999999999999999")[0] == ["250 2.1.0"]


@pytest.mark.parametrize(
    "config",
    [
        ServerConfig(),
        ServerConfig(hide_size=True, max_message_size=5),
        ServerConfig(lmtp=True),
        ServerConfig(
            hide_pipelining=True,
            hide_8bitmime=True,
            hide_smtputf8=True,
            hide_enhanced_status_codes=True,
            hide_dsn=True,
        ),
    ],
    ids=["default", "hide-size", "lmtp", "all-hidden"],
)
def test_size_07_size_is_always_advertised_so_never_555(config: ServerConfig) -> None:
    hello = b"LHLO c.test\r\n" if config.lmtp else EHLO
    out, _ = run([hello], config)
    assert re.search(rb"250[ -]SIZE", out)
    out, _ = run([hello + b"MAIL FROM:<a@b.test> SIZE=3\r\n"], config)
    assert out.split(b"\r\n")[-2].startswith(b"250")


def test_size_08_an_oversized_message_is_read_to_the_end_then_refused() -> None:
    config = ServerConfig(max_message_size=100)
    body = b"x" * 78 + b"\r\n"
    out, events = session_refused(DATA + body * 3 + b".\r\nNOOP\r\n", config)
    # No reply before the terminator; then 552 and the session goes on.
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "354", "552 5.3.4", "250 2.0.0"]
    [end] = [event for event in events if isinstance(event, DataEnd)]
    assert end == DataEnd(
        size=240,
        size_exceeded=True,
        refusal=Reply(552, "Message exceeds fixed maximum message size 100", "5.3.4"),
    )
    # Nothing past the limit was ever handed out.
    assert len(message(events)) <= 100


def test_size_08_memory_stays_flat() -> None:
    conn = ServerConnection(ServerConfig(max_message_size=1000))
    conn.receive_data(DATA)
    drain(conn)
    for _ in range(200):
        conn.receive_data(b"y" * 4000 + b"\r\n")
        assert drain(conn) == []  # nothing past the limit is handed out
        assert len(conn._buffer) < 8  # only a possible start of the terminator is held back
    conn.receive_data(b".\r\n")
    [end] = drain(conn)
    assert isinstance(end, DataEnd)
    assert end.size == 200 * 4002
    assert end.size_exceeded
    assert statuses(conn.data_to_send())[-2:] == ["354", "552 5.3.4"]


def test_size_09_the_declared_size_never_ends_the_data() -> None:
    out, events = session(
        EHLO + b"MAIL FROM:<a@b.test> SIZE=4\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
        b"0123456789012345678\r\n.\r\n"
    )
    assert after_greeting(out)[-2:] == ["354", "250 2.0.0"]
    assert message(events) == b"0123456789012345678\r\n"


def test_size_10_more_than_declared_but_within_the_limit() -> None:
    body = (b"z" * 98 + b"\r\n") * 50
    out, events = run(
        [
            EHLO
            + b"MAIL FROM:<a@b.test> SIZE=100\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
            + body
            + b".\r\n"
        ],
        ServerConfig(max_message_size=10000),
    )
    # [policy] accepted.
    assert after_greeting(out)[-1] == "250 2.0.0"
    assert events[-1] == DataEnd(size=5000)


def test_size_11_one_recipient_cannot_take_it() -> None:
    decide = refusing({"x@y.test": Reply(452, "Mailbox full", "4.2.2")})
    out, _ = session(
        EHLO + b"MAIL FROM:<a@b.test> SIZE=5000\r\nRCPT TO:<x@y.test>\r\n", decide=decide
    )
    assert after_greeting(out) == ["250", "250 2.1.0", "452 4.2.2"]


# -- 6.2 8BITMIME ----------------------------------------------------------------------------------------


def test_8bit_01_advertised() -> None:
    assert "8BITMIME" in capabilities()


@pytest.mark.parametrize(
    ("params", "value"),
    [("BODY=8BITMIME", "8BITMIME"), ("BODY=7BIT", "7BIT"), ("body=8bitmime", "8BITMIME")],
)
def test_8bit_02_body_values(params: str, value: str) -> None:
    assert mail(params) == (["250 2.1.0"], [MailFrom(address="a@b.test", args={"BODY": value})])


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ("BODY=9BIT", "501 5.5.4"),
        ("BODY=BINARYMIME", "555 5.5.4"),
        ("BODY", "501 5.5.4"),
        ("BODY=7BIT BODY=8BITMIME", "501 5.5.4"),
    ],
    ids=["8BIT-03-9BIT", "8BIT-03-BINARYMIME", "no-value", "8BIT-04"],
)
def test_8bit_03_04_bad_body(params: str, status: str) -> None:
    assert mail(params) == ([status], [])


def test_8bit_05_eight_bit_data_passes_unchanged() -> None:
    body = b"caf\xc3\xa9 \xff\xfe \x80\r\n"
    for params in (b"", b" BODY=7BIT"):
        out, events = session(
            EHLO
            + b"MAIL FROM:<a@b.test>"
            + params
            + b"\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
            + body
            + b".\r\n"
        )
        assert after_greeting(out)[-1] == "250 2.0.0"
        assert message(events) == body


def test_8bit_hidden() -> None:
    config = ServerConfig(hide_8bitmime=True)
    caps = capabilities(config)
    # SMTPUTF8 needs 8BITMIME (RFC 6531 §3.1), so it goes too; BODY and SMTPUTF8 become unknown.
    assert "8BITMIME" not in caps
    assert "SMTPUTF8" not in caps
    assert mail("BODY=8BITMIME", config) == (["555 5.5.4"], [])
    assert mail("SMTPUTF8", config) == (["555 5.5.4"], [])


# -- 6.3 SMTPUTF8 ----------------------------------------------------------------------------------------


def test_utf8_01_advertised_without_parameter_and_with_8bitmime() -> None:
    caps = capabilities()
    assert "SMTPUTF8" in caps
    assert "8BITMIME" in caps


def test_utf8_02_utf8_addresses_with_smtputf8() -> None:
    out, events = session(
        EHLO
        + b"MAIL FROM:<\xc3\xa9@b.test> SMTPUTF8\r\n"
        + b"RCPT TO:<\xc3\xa9@example.test>\r\n"
        + b"RCPT TO:<j\xc3\xb6rg@b\xc3\xbccher.example>\r\n"
        + b"VRFY <\xc3\xa9@example.test> SMTPUTF8\r\n"
    )
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "252 2.0.0"]
    assert events[1:] == [
        MailFrom(address="é@b.test", args={"SMTPUTF8": True}),
        RcptTo(address="é@example.test"),
        RcptTo(address="jörg@bücher.example"),
        Verify(argument="<é@example.test> SMTPUTF8"),
    ]


def test_utf8_03_utf8_addresses_without_smtputf8() -> None:
    out, _ = session(
        EHLO + b"MAIL FROM:<\xc3\xa9@b.test>\r\n" + MAIL + b"RCPT TO:<\xc3\xa9@example.test>\r\n"
    )
    assert after_greeting(out) == ["250", "550 5.6.7", "250 2.1.0", "553 5.6.7"]


def test_utf8_04_smtputf8_takes_no_value() -> None:
    assert mail("SMTPUTF8=yes") == (["501 5.5.4"], [])


@pytest.mark.parametrize(
    "raw", [b"\xff\xfe@b.test", b"\xc0\xaf@b.test", b"\xed\xa0\x80@b.test", b"\xc3@b.test"]
)
def test_utf8_05_invalid_utf8_even_with_smtputf8(raw: bytes) -> None:
    out, events = session(
        EHLO
        + b"MAIL FROM:<" + raw + b"> SMTPUTF8\r\n"
        + b"MAIL FROM:<a@b.test> SMTPUTF8\r\n"
        + b"RCPT TO:<" + raw + b">\r\n"
    )  # fmt: skip
    assert after_greeting(out) == ["250", "501 5.1.7", "250 2.1.0", "501 5.1.3"]
    assert len(events) == 2


def test_utf8_06_smtputf8_when_not_advertised() -> None:
    config = ServerConfig(hide_smtputf8=True)
    assert "SMTPUTF8" not in capabilities(config)
    assert mail("SMTPUTF8", config) == (["555 5.5.4"], [])
    out, _ = session(EHLO + b"MAIL FROM:<\xc3\xa9@b.test>\r\n", config)
    assert after_greeting(out) == ["250", "550 5.6.7"]


def test_utf8_07_refusal_after_the_data() -> None:
    decide = refusing({}, data_end=Reply(554, "UTF-8 headers not deliverable here", "5.6.9"))
    out, _ = session(DATA + b"Subject: \xc3\xa9\r\n\r\nx\r\n.\r\n", decide=decide)
    assert after_greeting(out)[-1] == "554 5.6.9"


# -- 6.5 enhanced status codes ---------------------------------------------------------------------------

_ENHANCED = re.compile(r"[245]\.\d{1,3}\.\d{1,3} ")
ESC_SESSION = (
    b"NOOP\r\nEHLO c.test\r\nHELO c.test\r\nEHLO\r\nFOO\r\nEXPN x\r\nHELP\r\nVRFY x\r\n"
    b"MAIL FROM:<a@b.test> SIZE=99 FOO=1\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\n"
    b"RCPT TO:<nobody@y.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<>\r\nDATA\r\nhi\r\n.\r\n"
    b"RSET x\r\nRSET\r\nSTARTTLS\r\nQUIT\r\n"
)
ESC_DECIDER = refusing({"nobody@y.test": Reply(550, "No such user")}, data_end=Reply(250, "queued"))


def test_esc_01_every_2xx_4xx_5xx_reply_has_a_code() -> None:
    out, _ = session(ESC_SESSION, decide=ESC_DECIDER)
    lines = out.decode().split("\r\n")[:-1]
    ehlo_or_helo = {"250-localhost Nice to meet you", "250 localhost Nice to meet you"}
    in_ehlo = False
    for line in lines[1:]:
        if line in ehlo_or_helo:
            in_ehlo = line.startswith("250-")
            continue
        if in_ehlo:
            in_ehlo = line.startswith("250-")
            continue
        if line.startswith("354"):
            assert not _ENHANCED.match(line[4:]), line
            continue
        assert _ENHANCED.match(line[4:]), line
        # ESC-02: the class agrees with the reply code.
        assert line[4] == line[0], line
    # The greeting and the HELO/EHLO replies carry none; 3xx never.
    assert lines[0] == "220 localhost ESMTP"
    assert "354 End data with <CR><LF>.<CR><LF>" in lines


def test_esc_02_multi_line_refusals_repeat_the_code() -> None:
    decide = refusing({"x@y.test": Reply(550, ("No such user here", "nor anywhere else"), "5.1.1")})
    out, _ = session(EHLO + MAIL + b"RCPT TO:<x@y.test>\r\n", decide=decide)
    assert out.endswith(b"550-5.1.1 No such user here\r\n550 5.1.1 nor anywhere else\r\n")
    # The enhanced code must agree with the reply code: refused at the trust boundary.
    with pytest.raises(ValueError, match="disagrees"):
        Reply(500, "no", "2.1.0")
    with pytest.raises(ValueError, match="3xx"):
        Reply(354, "go ahead", "2.0.0")


def test_esc_03_hidden() -> None:
    config = ServerConfig(hide_enhanced_status_codes=True)
    assert "ENHANCEDSTATUSCODES" not in capabilities(config)
    out, _ = session(ESC_SESSION, config, ESC_DECIDER)
    for line in out.decode().split("\r\n")[:-1]:
        assert not _ENHANCED.match(line[4:]), line
    assert "550 No such user" in replies(out)
    assert "503 Nested MAIL command" in replies(out)


# -- 6.6 DSN ---------------------------------------------------------------------------------------------


def test_dsn_advertised() -> None:
    assert "DSN" in capabilities()


def test_dsn_01_ret_and_envid() -> None:
    assert mail("RET=HDRS ENVID=QQ314159") == (
        ["250 2.1.0"],
        [MailFrom(address="a@b.test", args={"RET": "HDRS", "ENVID": "QQ314159"})],
    )
    assert mail("ENVID=a+2Bb RET=full BODY=8BITMIME SIZE=100")[1] == [
        MailFrom(
            address="a@b.test",
            args={"ENVID": "a+b", "RET": "FULL", "BODY": "8BITMIME", "SIZE": "100"},
        )
    ]


@pytest.mark.parametrize(
    "params",
    [
        pytest.param("RET=FOO", id="DSN-02"),
        pytest.param("RET=HDRS RET=FULL", id="DSN-03"),
        pytest.param("RET", id="no-value"),
        pytest.param("ENVID=abc\x01", id="DSN-04-control"),
        pytest.param("ENVID=a+2", id="DSN-04-short-escape"),
        pytest.param("ENVID=a+zz", id="DSN-04-lower-hex"),
        pytest.param("ENVID=a=b", id="DSN-04-equals"),
        pytest.param("ENVID=" + "e" * 101, id="DSN-04-101-chars"),
        pytest.param("ENVID=" + "+41" * 34, id="DSN-04-102-chars-encoded"),
        pytest.param("ENVID=a+C3+A9", id="non-ascii-escape"),
    ],
)
def test_dsn_02_03_04_bad_mail_parameters(params: str) -> None:
    assert mail(params) == (["501 5.5.4"], [])


@pytest.mark.parametrize(
    ("params", "value"),
    [
        ("NOTIFY=SUCCESS,FAILURE,DELAY", "SUCCESS,FAILURE,DELAY"),
        ("NOTIFY=NEVER", "NEVER"),
        ("notify=success", "SUCCESS"),
    ],
)
def test_dsn_05_notify(params: str, value: str) -> None:
    assert rcpt(params) == (["250 2.1.5"], [RcptTo(address="x@y.test", args={"NOTIFY": value})])


@pytest.mark.parametrize(
    "params",
    [
        "NOTIFY=NEVER,SUCCESS",
        "NOTIFY=FOO",
        "NOTIFY=",
        "NOTIFY=SUCCESS NOTIFY=DELAY",
        "NOTIFY=SUCCESS,SUCCESS",
        "NOTIFY",
    ],
)
def test_dsn_06_bad_notify(params: str) -> None:
    assert rcpt(params) == (["501 5.5.4"], [])


def test_dsn_07_orcpt() -> None:
    assert rcpt("ORCPT=rfc822;x+40example.test") == (
        ["250 2.1.5"],
        [RcptTo(address="x@y.test", args={"ORCPT": "rfc822;x@example.test"})],
    )
    longest = "ORCPT=rfc822;" + "o" * 493
    assert rcpt(longest)[0] == ["250 2.1.5"]


@pytest.mark.parametrize(
    "params",
    [
        "ORCPT=bogus",
        "ORCPT=rfc822;a+ZZb@c",
        "ORCPT=rfc822;" + "o" * 494,
        "ORCPT=;x",
        "ORCPT=rfc822;x ORCPT=rfc822;y",
    ],
    ids=["no-type", "bad-hex", "501-chars", "empty-type", "twice"],
)
def test_dsn_08_bad_orcpt(params: str) -> None:
    assert rcpt(params) == (["501 5.5.4"], [])


@pytest.mark.parametrize(
    ("command", "params"),
    [
        ("MAIL", "RET=HDRS"),
        ("MAIL", "ENVID=x"),
        ("RCPT", "NOTIFY=NEVER"),
        ("RCPT", "ORCPT=rfc822;x@y.test"),
    ],
)
def test_dsn_09_dsn_parameters_when_dsn_is_hidden(command: str, params: str) -> None:
    config = ServerConfig(hide_dsn=True)
    assert "DSN" not in capabilities(config)
    result = mail(params, config) if command == "MAIL" else rcpt(params, config)
    assert result == (["555 5.5.4"], [])


# -- 6.7 REQUIRETLS (plaintext) ---------------------------------------------------------------------------


def test_rtls_01_not_advertised_in_plaintext() -> None:
    assert "REQUIRETLS" not in capabilities()


def test_rtls_02_03_requiretls_in_plaintext_is_refused() -> None:
    # RTLS-02 [rec] 530 5.7.10 (never 250 in clear); it is not advertised either (RTLS-03).
    assert mail("REQUIRETLS") == (["530 5.7.10"], [])


def test_rtls_04_requiretls_takes_no_value() -> None:
    assert mail("REQUIRETLS=yes") == (["501 5.5.4"], [])
