"""The reply table of the reference server (Node's smtp-server), row by row, for what the core does itself.

Each row asserts the basic reply code of the reference and our enhanced code; the texts are ours. Rows about
AUTH, STARTTLS, XCLIENT/XFORWARD and PROXY belong to those features' tests; rows about the driver (too many
clients, talking before the greeting, exceptions in hooks, onConnect) to the adapters'. Where this core
deliberately differs from the reference, the row says so and asserts our behaviour:

* a command line over the limit gets ``500 5.5.6`` and the session goes on (the reference: 421 and close);
* EHLO/HELO with more than one word is accepted (CONFORMANCE CORE-14), only a missing name is a 501;
* the unknown-command limit counts every client error (``max_errors``, default 20), not only unknown verbs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from smtpproto import NEED_DATA, RemoteProtocolError, Reply, ServerConfig, ServerConnection

from .helpers import (
    DATA,
    EHLO,
    MAIL,
    OPEN,
    after_greeting,
    refusing,
    run,
    session,
    session_refused,
    statuses,
)

LMTP = ServerConfig(lmtp=True)
LHLO = b"LHLO c.test\r\n"
TWO_RCPTS = LHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nRCPT TO:<z@y.test>\r\nDATA\r\n"
Decide = Callable[..., Reply | list[Reply] | None]
ACCEPT: Decide = refusing({})

ROWS = [
    # id, config, input, decider, statuses of the replies after the greeting
    ("unknown-command", None, b"XYZZY\r\n", ACCEPT, ["500 5.5.2"]),
    ("disabled-command", ServerConfig(disabled_commands=frozenset({"HELP"})), b"HELP\r\n", ACCEPT,
     ["500 5.5.2"]),
    ("empty-line", None, b"\r\n", ACCEPT, ["500 5.5.2"]),
    ("sendmail-jokes", None, b"WIZ\r\nSHELL\r\nKILL\r\n", ACCEPT, ["500 5.5.2"] * 3),
    ("helo-in-lmtp", LMTP, b"HELO c.test\r\nEHLO c.test\r\n", ACCEPT, ["500 5.5.2"] * 2),
    ("before-helo", None, MAIL + b"RCPT TO:<x@y.test>\r\nDATA\r\n", ACCEPT, ["503 5.5.1"] * 3),
    ("before-lhlo", LMTP, MAIL, ACCEPT, ["503 5.5.1"]),
    ("auth-required", ServerConfig(auth_required=True), EHLO + MAIL, ACCEPT, ["250", "530 5.7.0"]),
    ("ehlo-ok", None, EHLO, ACCEPT, ["250"]),
    ("helo-ok", None, b"HELO c.test\r\n", ACCEPT, ["250"]),
    ("ehlo-no-argument", None, b"EHLO\r\nLHLO\r\n", ACCEPT, ["501 5.5.4", "500 5.5.2"]),
    ("lhlo-no-argument", LMTP, b"LHLO\r\n", ACCEPT, ["501 5.5.4"]),
    ("helo-no-argument", None, b"HELO\r\n", ACCEPT, ["501 5.5.4"]),
    ("hello-too-long", None, b"EHLO " + b"a" * 256 + b"\r\n", ACCEPT, ["501 5.5.4"]),
    ("hello-control-char", None, b"HELO a\x01b\r\nEHLO a\x7fb\r\n", ACCEPT, ["501 5.5.4"] * 2),
    ("quit", None, b"QUIT\r\n", ACCEPT, ["221 2.0.0"]),
    ("noop", None, b"NOOP\r\nNOOP x y\r\n", ACCEPT, ["250 2.0.0"] * 2),
    ("rset", None, b"RSET\r\n", ACCEPT, ["250 2.0.0"]),
    ("help", None, b"HELP\r\nHELP DATA\r\n", ACCEPT, ["214 2.0.0"] * 2),
    ("vrfy", None, b"VRFY someone\r\n", ACCEPT, ["252 2.0.0"]),
    ("vrfy-no-argument", None, b"VRFY\r\nVRFY  \r\n", ACCEPT, ["501 5.5.4"] * 2),
    ("mail-ok", None, EHLO + MAIL, ACCEPT, ["250", "250 2.1.0"]),
    ("mail-bad-address", None, EHLO + b"MAIL FROM:<a@>\r\n", ACCEPT, ["250", "501 5.1.7"]),
    ("mail-nested", None, EHLO + MAIL + MAIL, ACCEPT, ["250", "250 2.1.0", "503 5.5.1"]),
    ("mail-size-syntax", None, EHLO + b"MAIL FROM:<a@b.test> SIZE=1k\r\n", ACCEPT,
     ["250", "501 5.5.4"]),
    ("mail-size-over", ServerConfig(max_message_size=100), EHLO + b"MAIL FROM:<a@b.test> SIZE=101\r\n",
     ACCEPT, ["250", "552 5.3.4"]),
    ("duplicate-parameter", None, EHLO + b"MAIL FROM:<a@b.test> BODY=7BIT BODY=7BIT\r\n" + MAIL
     + b"RCPT TO:<x@y.test> NOTIFY=NEVER NOTIFY=NEVER\r\n", ACCEPT,
     ["250", "501 5.5.4", "250 2.1.0", "501 5.5.4"]),
    ("parameter-without-value", None, EHLO + b"".join(
        b"MAIL FROM:<a@b.test> " + key + b"\r\n" for key in (b"BODY", b"SIZE", b"RET", b"ENVID")
    ) + MAIL + b"RCPT TO:<x@y.test> NOTIFY\r\nRCPT TO:<x@y.test> ORCPT\r\n", ACCEPT,
     ["250", *["501 5.5.4"] * 4, "250 2.1.0", "501 5.5.4", "501 5.5.4"]),
    ("body-value", None, EHLO + b"MAIL FROM:<a@b.test> BODY=BINARY\r\n", ACCEPT,
     ["250", "501 5.5.4"]),
    ("smtputf8-value", None, EHLO + b"MAIL FROM:<a@b.test> SMTPUTF8=1\r\n", ACCEPT,
     ["250", "501 5.5.4"]),
    ("requiretls-plaintext", None, EHLO + b"MAIL FROM:<a@b.test> REQUIRETLS\r\n", ACCEPT,
     ["250", "530 5.7.10"]),
    ("requiretls-value", None, EHLO + b"MAIL FROM:<a@b.test> REQUIRETLS=1\r\n", ACCEPT,
     ["250", "501 5.5.4"]),
    ("ret-value", None, EHLO + b"MAIL FROM:<a@b.test> RET=ALL\r\n", ACCEPT, ["250", "501 5.5.4"]),
    ("on-mail-from-error", None, EHLO + MAIL, refusing({"a@b.test": Reply(550, "Go away")}),
     ["250", "550 5.7.1"]),
    ("rcpt-ok", None, OPEN, ACCEPT, ["250", "250 2.1.0", "250 2.1.5"]),
    ("rcpt-bad-address", None, EHLO + MAIL + b"RCPT TO:<x@>\r\nRCPT TO:<>\r\n", ACCEPT,
     ["250", "250 2.1.0", "501 5.1.3", "501 5.1.3"]),
    ("rcpt-before-mail", None, EHLO + b"RCPT TO:<x@y.test>\r\n", ACCEPT, ["250", "503 5.5.1"]),
    ("notify-value", None, EHLO + MAIL + b"RCPT TO:<x@y.test> NOTIFY=SOMETIMES\r\n", ACCEPT,
     ["250", "250 2.1.0", "501 5.5.4"]),
    ("notify-never-combined", None, EHLO + MAIL + b"RCPT TO:<x@y.test> NOTIFY=NEVER,DELAY\r\n",
     ACCEPT, ["250", "250 2.1.0", "501 5.5.4"]),
    ("orcpt-no-type", None, EHLO + MAIL + b"RCPT TO:<x@y.test> ORCPT=x@y.test\r\n", ACCEPT,
     ["250", "250 2.1.0", "501 5.5.4"]),
    ("on-rcpt-to-error", None, OPEN, refusing({"x@example.test": Reply(550, "Unknown user")}),
     ["250", "250 2.1.0", "550 5.1.1"]),
    ("max-recipients", ServerConfig(max_recipients=1), OPEN + b"RCPT TO:<y@example.test>\r\n",
     ACCEPT, ["250", "250 2.1.0", "250 2.1.5", "452 4.5.3"]),
    ("data-before-rcpt", None, EHLO + MAIL + b"DATA\r\n", ACCEPT, ["250", "250 2.1.0", "503 5.5.1"]),
    ("data-accepted", None, DATA, ACCEPT, ["250", "250 2.1.0", "250 2.1.5", "354"]),
    ("message-accepted", None, DATA + b"hi\r\n.\r\n", ACCEPT,
     ["250", "250 2.1.0", "250 2.1.5", "354", "250 2.0.0"]),
    ("message-accepted-lmtp", LMTP, TWO_RCPTS + b"hi\r\n.\r\n", ACCEPT,
     ["250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354", "250 2.0.0", "250 2.0.0"]),
    ("on-data-error", None, DATA + b"hi\r\n.\r\n", refusing({}, Reply(450, "Try again")),
     ["250", "250 2.1.0", "250 2.1.5", "354", "450 4.0.0"]),
    ("on-data-error-lmtp", LMTP, TWO_RCPTS + b"hi\r\n.\r\n",
     refusing({}, [Reply(450, "Try again")] * 2),
     ["250", "250 2.1.0", "250 2.1.5", "250 2.1.5", "354", "450 4.0.0", "450 4.0.0"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("config", "data", "decide", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in ROWS],
)
def test_reference_reply_codes(
    config: ServerConfig | None, data: bytes, decide: Decide, expected: list[str]
) -> None:
    out, _ = session(data, config, decide)
    assert after_greeting(out) == expected


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        pytest.param(ServerConfig(max_message_size=4), ["552 5.3.4"], id="oversized"),
        pytest.param(
            ServerConfig(max_message_size=4, lmtp=True), ["552 5.3.4"] * 2, id="oversized-lmtp"
        ),
    ],
)
def test_reference_oversized_message(config: ServerConfig, expected: list[str]) -> None:
    data = (TWO_RCPTS if config.lmtp else DATA) + b"hello\r\n.\r\n"
    out, _ = session_refused(data, config)
    assert after_greeting(out)[-len(expected) - 1 :] == ["354", *expected]


@pytest.mark.parametrize(
    ("config", "greeting"),
    [
        (ServerConfig(), b"220 localhost ESMTP\r\n"),
        (ServerConfig(banner="hello there"), b"220 localhost ESMTP hello there\r\n"),
        (ServerConfig(lmtp=True, hostname="mx.test"), b"220 mx.test LMTP\r\n"),
    ],
)
def test_reference_greeting(config: ServerConfig, greeting: bytes) -> None:
    assert ServerConnection(config).data_to_send() == greeting


@pytest.mark.parametrize(
    "reply",
    [
        pytest.param(None, id="server-closing"),
        pytest.param(
            Reply(421, "localhost Timeout - closing connection", "4.4.2"), id="idle-timeout"
        ),
        pytest.param(Reply(421, "localhost Too many connected clients", "4.7.0"), id="max-clients"),
    ],
)
def test_reference_421_from_the_driver(reply: Reply | None) -> None:
    conn = ServerConnection()
    if reply is None or reply.enhanced != "4.7.0":
        conn.data_to_send()  # these come after the greeting; too many clients comes instead of it
    conn.shutdown(reply)
    assert statuses(conn.data_to_send()) == [f"421 {reply.enhanced if reply else '4.3.2'}"]


@pytest.mark.parametrize(
    ("config", "data", "expected"),
    [
        pytest.param(None, b"GET / HTTP/1.1\r\n", ["421 4.7.0"], id="http-request"),
        pytest.param(
            ServerConfig(max_errors=10), b"XYZZY\r\n" * 10, ["500 5.5.2"] * 9 + ["421 4.7.0"],
            id="too-many-unrecognized",
        ),
        pytest.param(
            ServerConfig(auth_required=True, max_unauthenticated_commands=10), b"NOOP\r\n" * 10,
            ["250 2.0.0"] * 9 + ["421 4.7.0"], id="too-many-unauthenticated",
        ),
    ],
)  # fmt: skip
def test_reference_421_and_close(
    config: ServerConfig | None, data: bytes, expected: list[str]
) -> None:
    conn = ServerConnection(config)
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError):
        pump(conn)
    assert after_greeting(conn.data_to_send()) == expected


def pump(conn: ServerConnection) -> None:
    """Process everything buffered (no decisions are expected)."""
    while conn.next_event() is not NEED_DATA:
        assert conn.awaiting is None


def test_reference_command_line_too_long_differs() -> None:
    # The reference answers 421 and closes; this core refuses the line and goes on.
    out, _ = run([b"NOOP " + b"x" * 16384 + b"\r\nNOOP\r\n"])
    assert after_greeting(out) == ["500 5.5.6", "250 2.0.0"]
