"""RFC 5321 paths, mailboxes and limits: conformance checklist §1.5 and §1.6, named by item ID.

Every scenario runs through ``session()`` (whole, byte by byte, split in two everywhere) unless its outcome
depends on how the input is split by nature, or the input is too large for that; then ``run()`` is used.
Expected replies are compared byte for byte where the checklist gives the bytes, else by code and enhanced
code (our texts differ from Postfix's).
"""

from __future__ import annotations

import pytest

from smtpproto import (
    NEED_DATA,
    DataEnd,
    Hello,
    LineEndings,
    MailFrom,
    RcptTo,
    Reply,
    ServerConfig,
    ServerConnection,
)

from .helpers import (
    EHLO,
    MAIL,
    OPEN,
    after_greeting,
    message,
    replies,
    run,
    session,
)

# -- 1.5 paths, mailboxes and address syntax --------------------------------------------------------------


def test_core_50_null_reverse_path() -> None:
    out, events = session(EHLO + b"MAIL FROM:<>\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0"]
    assert events[1] == MailFrom(address="")


@pytest.mark.parametrize(
    "line", [b"MAIL TO:<a@b.test>\r\n", b"MAIL <a@b.test>\r\n", b"MAIL\r\n", b"MAIL FROM\r\n"]
)
def test_core_36_mail_needs_from(line: bytes) -> None:
    out, events = session(EHLO + line + MAIL + b"RCPT FROM:<x@y.test>\r\nRCPT x@y.test\r\n")
    assert after_greeting(out) == ["250", "501 5.5.4", "250 2.1.0", "501 5.5.4", "501 5.5.4"]
    assert len(events) == 2


def test_core_51_null_forward_path() -> None:
    out, _ = session(EHLO + MAIL + b"RCPT TO:<>\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "501 5.1.3"]


@pytest.mark.parametrize(
    "path", ["<Postmaster>", "<postmaster>", "<POSTMASTER>", "<postmaster@served.test>"]
)
def test_core_52_postmaster(path: str) -> None:
    out, events = session(EHLO + MAIL + f"RCPT TO:{path}\r\n".encode())
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5"]
    assert events[-1] == RcptTo(address=path[1:-1])


def test_core_52_postmaster_without_domain_is_no_sender() -> None:
    out, _ = session(EHLO + b"MAIL FROM:<postmaster>\r\n")
    assert after_greeting(out) == ["250", "501 5.1.7"]


def test_core_53_source_routes_are_accepted_and_ignored() -> None:
    out, events = session(
        EHLO
        + b"MAIL FROM:<@a.test:u@b.test>\r\n"
        + b"RCPT TO:<@hosta.test,@hostb.test:x@example.test>\r\n"
    )
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5"]
    assert events[1:] == [MailFrom(address="u@b.test"), RcptTo(address="x@example.test")]


@pytest.mark.parametrize("path", ["<@:x@y.test>", "<@a.test x@y.test>", "<@a.test,x@y.test>"])
def test_core_53_malformed_source_routes(path: str) -> None:
    out, _ = session(EHLO + MAIL + f"RCPT TO:{path}\r\n".encode())
    assert after_greeting(out) == ["250", "250 2.1.0", "501 5.1.3"]


GOOD_LITERALS = [
    "x@[127.0.0.1]",
    "x@[IPv6:2001:db8::1]",
    "x@[IPv6:::1]",
    "x@[IPv6:::ffff:192.0.2.1]",
    "x@[IPv6:1:2:3:4:5:6:7:8]",
]
BAD_LITERALS = [
    "x@[300.0.0.1]",
    "x@[1.2.3]",
    "x@[1.2.3.4.5]",
    "x@[IPv6:1::2::3]",
    "x@[IPv6:1:2:3:4:5:6:7:8:9]",
    "x@[IPv6:12345::]",
    "x@[IPv6:::1.2.3.4.5]",
    "x@[ipv6::1]",
    "x@[a\\b]",
    "x@[tag:content]",
]


def mail_and_rcpt(address: str) -> bytes:
    return f"MAIL FROM:<{address}>\r\nRSET\r\n{MAIL.decode()}RCPT TO:<{address}>\r\n".encode()


@pytest.mark.parametrize("address", GOOD_LITERALS)
def test_core_54_address_literals_accepted(address: str) -> None:
    out, events = session(EHLO + mail_and_rcpt(address))
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.0.0", "250 2.1.0", "250 2.1.5"]
    assert events[1] == MailFrom(address=address)
    assert events[-1] == RcptTo(address=address)


@pytest.mark.parametrize("address", BAD_LITERALS)
def test_core_54_address_literals_refused(address: str) -> None:
    out, _ = session(EHLO + mail_and_rcpt(address))
    assert after_greeting(out) == ["250", "501 5.1.7", "250 2.0.0", "250 2.1.0", "501 5.1.3"]


@pytest.mark.parametrize(
    "address",
    [
        '"a b"@example.test',
        '"a\\"b"@x.test',
        '"a\\\\b"@x.test',
        '"Joe\\,Smith"@x.test',
        '""@x.test',
    ],
)
def test_core_55_quoted_local_parts_accepted(address: str) -> None:
    out, events = session(EHLO + mail_and_rcpt(address))
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.0.0", "250 2.1.0", "250 2.1.5"]
    # Handed over as written; deciding that "abc"@x and abc@x are one mailbox is the application's.
    assert events[-1] == RcptTo(address=address)


@pytest.mark.parametrize(
    "address", [b'"a"b"@x.test', b'"unterminated@x.test', b'"a\x01"@x.test', b'"a\x80"@x.test']
)
def test_core_55_bad_quoted_local_parts(address: bytes) -> None:
    out, events = session(EHLO + MAIL + b"RCPT TO:<" + address + b">\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "501 5.1.3"]
    assert not any(isinstance(event, RcptTo) for event in events)


@pytest.mark.parametrize("address", ["a..b@x.test", ".a@x.test", "a.@x.test"])
def test_core_56_bad_dot_strings(address: str) -> None:
    out, _ = session(EHLO + mail_and_rcpt(address))
    assert after_greeting(out) == ["250", "501 5.1.7", "250 2.0.0", "250 2.1.0", "501 5.1.3"]


def test_core_56_every_atext_special() -> None:
    address = "!#$%&'*+-/=?^_`{|}~@x.test"
    out, events = session(EHLO + mail_and_rcpt(address))
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.0.0", "250 2.1.0", "250 2.1.5"]
    assert events[-1] == RcptTo(address=address)


@pytest.mark.parametrize(
    "address",
    [
        "x@-a.test",
        "x@a-.test",
        "x@a..test",
        "x@.test",
        "x@a_b.test",
        "x@" + "a" * 64 + ".test",
        "x@" + ".".join(["a" * 63] * 4) + ".test",
    ],
    ids=[
        "leading-hyphen",
        "trailing-hyphen",
        "empty-label",
        "leading-dot",
        "underscore",
        "label-64",
        "domain-over-255",
    ],
)
def test_core_57_bad_domains(address: str) -> None:
    out, _ = session(EHLO + mail_and_rcpt(address))
    assert after_greeting(out) == ["250", "501 5.1.7", "250 2.0.0", "250 2.1.0", "501 5.1.3"]


def test_core_58_non_ascii_without_smtputf8() -> None:
    out, events = session(
        EHLO + b"MAIL FROM:<\xc3\xa9@b.test>\r\n" + MAIL + b"RCPT TO:<\xc3\xa9@example.test>\r\n"
    )
    # RFC 6531 §3.5: 550 5.6.7 for a sender, 553 5.6.7 for a recipient.
    assert after_greeting(out) == ["250", "550 5.6.7", "250 2.1.0", "553 5.6.7"]
    assert events[1:] == [MailFrom(address="a@b.test")]


@pytest.mark.parametrize("raw", [b"\xff@b.test", b"\xc3@b.test", b"a@b\xfe.test"])
def test_core_58_undecodable_bytes_never_reach_the_application(raw: bytes) -> None:
    out, events = session(
        EHLO + b"MAIL FROM:<" + raw + b">\r\n" + MAIL + b"RCPT TO:<" + raw + b">\r\n"
    )
    assert after_greeting(out) == ["250", "501 5.1.7", "250 2.1.0", "501 5.1.3"]
    assert events[1:] == [MailFrom(address="a@b.test")]


@pytest.mark.parametrize("path", [b"<a b@x.test>", b"< a@x.test>", b"<a@x.test >"])
def test_core_59_spaces_inside_the_path(path: bytes) -> None:
    out, _ = session(EHLO + MAIL + b"RCPT TO:" + path + b"\r\n")
    assert after_greeting(out) == ["250", "250 2.1.0", "501 5.1.3"]


# -- 1.6 limits ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "terminator"),
    [
        pytest.param(policy, terminator, id=f"{policy.value}-{name}")
        for policy in LineEndings
        for terminator, name in ((b"\r\n", "crlf"), (b"\n", "lf"))
        # Under REJECT a bare LF never ends a command line (test_smuggling, SMUG-04).
        if not (policy is LineEndings.REJECT and terminator == b"\n")
    ],
)
def test_core_60_a_512_octet_command_line(policy: LineEndings, terminator: bytes) -> None:
    config = ServerConfig(max_command_line=512, line_endings=policy)
    exact = b"NOOP " + b"x" * (512 - 5 - len(terminator)) + terminator
    over = b"NOOP " + b"x" * (513 - 5 - len(terminator)) + terminator
    assert len(exact) == 512
    out, _ = run([exact + over + b"NOOP" + terminator], config)
    assert after_greeting(out) == ["250 2.0.0", "500 5.5.6", "250 2.0.0"]


def test_core_60_long_lines_are_refused_with_bounded_memory() -> None:
    config = ServerConfig(max_command_line=512)
    conn = ServerConnection(config)
    conn.data_to_send()
    conn.receive_data(b"NOOP ")
    for _ in range(100):
        conn.receive_data(b"x" * 1000)
        assert conn.next_event() is NEED_DATA
        # Memory stays bounded by the limit while the runaway line goes on.
        assert len(conn._buffer) <= 512 + 1000
    conn.receive_data(b"\r\nNOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"500 5.5.6 Line too long\r\n250 2.0.0 OK\r\n"


def test_core_60_the_default_limit() -> None:
    assert ServerConfig().max_command_line == 2048
    exact = b"NOOP " + b"x" * (2048 - 7) + b"\r\n"
    out, _ = run([exact + b"NOOP " + b"x" * 2042 + b"\r\n"])
    assert after_greeting(out) == ["250 2.0.0", "500 5.5.6"]


def test_core_61_every_parameter_at_its_maximum() -> None:
    local = "l" * 64
    domain = ".".join(["d" * 63, "d" * 63, "d" * 61])  # 189 octets: the path is 256 octets
    path = f"<{local}@{domain}>"
    assert len(path) == 256
    mail = f"MAIL FROM:{path} SIZE={'9' * 20} BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID={'e' * 100}\r\n"
    rcpt = f"RCPT TO:{path} NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;{'o' * 493}\r\n"
    # Without AUTH offered the MAIL line stays under 512 octets; the DSN parameters take RCPT past it.
    assert len(rcpt) > 512
    out, events = run([EHLO + mail.encode() + rcpt.encode()])
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5"]
    assert events[1] == MailFrom(
        address=f"{local}@{domain}",
        args={
            "SIZE": "9" * 20,
            "BODY": "8BITMIME",
            "SMTPUTF8": True,
            "RET": "HDRS",
            "ENVID": "e" * 100,
        },
    )
    assert events[2] == RcptTo(
        address=f"{local}@{domain}",
        args={"NOTIFY": "SUCCESS,FAILURE,DELAY", "ORCPT": "rfc822;" + "o" * 493},
    )


def test_core_63_local_part_length() -> None:
    out, events = session(
        EHLO + MAIL + f"RCPT TO:<{'a' * 64}@x.test>\r\nRCPT TO:<{'a' * 65}@x.test>\r\n".encode()
    )
    # [policy]: 65 octets and more are refused.
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "501 5.1.3"]
    assert events[-1] == RcptTo(address="a" * 64 + "@x.test")


def test_core_64_domain_length() -> None:
    # A 255-octet domain is valid where no path limit applies: in EHLO.
    domain = ".".join(["a" * 63] * 4)
    assert len(domain) == 255
    out, events = session(f"EHLO {domain}\r\nEHLO {domain}b\r\n".encode())
    assert after_greeting(out) == ["250", "501 5.5.4"]
    assert events == [Hello(command="EHLO", hostname=domain)]
    # In a path the 256-octet path limit (CORE-65) leaves at most 251 octets for the domain.
    longest = ".".join(["a" * 63] * 3 + ["a" * 59])
    assert len(longest) == 251
    out, _ = session(EHLO + MAIL + f"RCPT TO:<x@{longest}>\r\nRCPT TO:<x@{domain}>\r\n".encode())
    assert after_greeting(out) == ["250", "250 2.1.0", "250 2.1.5", "501 5.1.3"]


def test_core_65_path_length() -> None:
    local = "a" * 64
    domain = ".".join(["b" * 63, "b" * 63, "b" * 61])
    assert len(f"<{local}@{domain}>") == 256
    out, _ = session(
        EHLO
        + f"MAIL FROM:<{local}@{domain}>\r\nMAIL FROM:<{local}@{domain}b>\r\n".encode()
        + f"RCPT TO:<{local}@{domain}>\r\nRCPT TO:<{local}@{domain}b>\r\n".encode()
    )
    assert after_greeting(out) == ["250", "250 2.1.0", "503 5.5.1", "250 2.1.5", "501 5.1.3"]
    out, _ = session(EHLO + f"MAIL FROM:<{local}@{domain}b>\r\n".encode())
    assert after_greeting(out) == ["250", "501 5.1.7"]


def test_core_66_one_hundred_recipients() -> None:
    rcpts = b"".join(f"RCPT TO:<r{i}@example.test>\r\n".encode() for i in range(101))
    out, events = run([EHLO + MAIL + rcpts + b"DATA\r\nhi\r\n.\r\n"])
    assert after_greeting(out) == [
        "250",
        "250 2.1.0",
        *["250 2.1.5"] * 100,
        "452 4.5.3",
        "354",
        "250 2.0.0",
    ]
    assert sum(isinstance(event, RcptTo) for event in events) == 100
    assert events[-1] == DataEnd(size=4)


def test_core_66_a_configured_recipient_limit() -> None:
    config = ServerConfig(max_recipients=2)
    rcpts = b"RCPT TO:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nRCPT TO:<c@x.test>\r\n"
    out, _ = session(EHLO + MAIL + rcpts + b"DATA\r\nhi\r\n.\r\n", config)
    assert after_greeting(out) == [
        "250",
        "250 2.1.0",
        "250 2.1.5",
        "250 2.1.5",
        "452 4.5.3",
        "354",
        "250 2.0.0",
    ]
    assert replies(out)[-3] == "452 4.5.3 Too many recipients"


def test_core_67_text_lines() -> None:
    line = b"x" * 998 + b"\r\n"
    stuffed = b".." + b"y" * 997 + b"\r\n"
    huge = b"z" * 20000 + b"\r\n"  # [policy] longer lines are accepted
    out, events = run([OPEN + b"DATA\r\n" + line + stuffed + huge + b".\r\n"])
    assert after_greeting(out)[-2:] == ["354", "250 2.0.0"]
    assert message(events) == line + b"." + b"y" * 997 + b"\r\n" + huge


def test_core_68_a_64_kib_message() -> None:
    body = (b"0123456789abcdef" * 63 + b"0123456789abcd\r\n") * 64
    assert len(body) == 64 * 1024
    out, events = run([OPEN + b"DATA\r\n" + body + b".\r\n"])
    assert after_greeting(out)[-2:] == ["354", "250 2.0.0"]
    assert message(events) == body
    assert events[-1] == DataEnd(size=len(body))


def test_core_69_reply_lines_stay_short() -> None:
    # Parameter keywords as long as the command line allows, or of wide characters, are quoted short.
    keyword = "K" * 1900
    out, _ = session(
        EHLO
        + f"MAIL FROM:<a@b.test> {keyword}=1\r\n".encode()
        + f"MAIL FROM:<a@b.test> {keyword[:900]} {keyword[:900]}\r\n".encode()
        + f"MAIL FROM:<a@b.test> {chr(0x10FFFF) * 40}\r\n".encode()
        + f"MAIL FROM:<a@b.test> {keyword}=\r\n".encode()
        + f"MAIL FROM:<a@b.test> {keyword}=\x7f\r\n".encode()
    )
    assert after_greeting(out) == [
        "250",
        "555 5.5.4",
        "501 5.5.4",
        "501 5.5.4",
        "501 5.5.4",
        "501 5.5.4",
    ]
    for line in out.split(b"\r\n")[:-1]:
        assert len(line) + 2 <= 512
        assert line.isascii()
        assert all(32 <= byte < 127 for byte in line)
    with pytest.raises(ValueError, match="limited"):
        Reply(550, "x" * 481)
