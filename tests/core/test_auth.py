"""AUTH at the connection level (RFC 4954 and the SASL mechanisms): CONFORMANCE §4, PIPE-09/10.

``test_sasl.py`` checks each mechanism's generator on its own; here every flow runs through a whole
``ServerConnection`` and the exact bytes on the wire are compared. "Over TLS" means ``secure=True`` (an
implicitly secure session); the switch from plaintext to TLS is in ``test_starttls.py``.

Not here: AUTH-08 (EXTERNAL is not implemented, so never offered).
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import smtpproto
from smtpproto import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    ConnectionClosed,
    Event,
    Hello,
    LineEndings,
    LocalProtocolError,
    MailFrom,
    Quit,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    SessionState,
)

from .helpers import Decider, codes, drain, run, session

EHLO = b"EHLO client.test\r\n"
SECURE = ServerConfig(secure=True)
# RFC 2195's credentials; TIM = base64("\0tim\0tanstaaftanstaaf").
PASSWORD = "tanstaaftanstaaf"
TIM = b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm"
TIM_REQUEST = AuthRequest(mechanism="PLAIN", username="tim", password=PASSWORD)
WRONG = b"AHRpbQB3cm9uZw=="  # base64("\0tim\0wrong")

OK = b"235 2.7.0 Authentication successful\r\n"
INVALID = b"535 5.7.8 Authentication credentials invalid\r\n"
ABORTED = b"501 5.7.0 Authentication aborted\r\n"
BAD_BASE64 = b"501 5.5.2 Cannot decode base64\r\n"
NOOP_OK = b"250 2.0.0 OK\r\n"
TOO_MANY = b"421 4.7.0 Too many authentication failures\r\n"
LOGIN_USER = b"334 VXNlcm5hbWU6\r\n"
LOGIN_PASSWORD = b"334 UGFzc3dvcmQ6\r\n"
XOAUTH2_ERROR = b"334 eyJzY2hlbWVzIjoiYmVhcmVyIiwic3RhdHVzIjoiNDAxIn0=\r\n"
OAUTHBEARER_ERROR = b"334 eyJzY2hlbWVzIjoiYmVhcmVyIiwic3RhdHVzIjoiaW52YWxpZF90b2tlbiJ9\r\n"

# RFC 2195 §2: the challenge <1896.697170952@postoffice.reston.mci.net> and tim's answer to it.
RFC2195_HOST = "postoffice.reston.mci.net"
RFC2195_CHALLENGE = b"PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
RFC2195_RESPONSE = b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
# curl --sasl-ir (observed): user=u, token TOKEN123.
XOAUTH2_CURL = b"dXNlcj11AWF1dGg9QmVhcmVyIFRPS0VOMTIzAQE="
# RFC 7628 §4.1's example initial response.
OAUTHBEARER_RFC = base64.b64encode(
    b"n,a=user@example.com,\x01host=server.example.com\x01port=587\x01"
    b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
)

ALL_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER")


def rfc2195_nonce() -> str:
    return "1896.697170952"


EVERYTHING = ServerConfig(
    secure=True,
    hostname=RFC2195_HOST,
    auth_methods=ALL_MECHANISMS,
    nonce_factory=rfc2195_nonce,
)


def b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def tail(out: bytes) -> bytes:
    """The output after the greeting and the first EHLO reply."""
    last = out.index(b"\r\n250 ") + 2
    return out[out.index(b"\r\n", last) + 2 :]


def keywords(out: bytes) -> list[str]:
    """The capability lines of the first EHLO reply in ``out``."""
    lines = out.decode("ascii").split("\r\n")
    first = next(i for i, line in enumerate(lines) if line.startswith("250"))
    caps = []
    for line in lines[first + 1 :]:
        caps.append(line[4:])
        if line.startswith("250 "):
            break
    return caps


def auth_lines(out: bytes) -> list[str]:
    return [keyword for keyword in keywords(out) if keyword.split(" ")[0] == "AUTH"]


STANDARD_REFUSAL = Reply(535, "Authentication credentials invalid", "5.7.8")


def checking(secret: str = PASSWORD) -> Decider:
    """Accept an AuthRequest whose password (or CRAM-MD5 digest) proves ``secret``; accept all else."""

    def decide(event: Event) -> Reply | None:
        if isinstance(event, AuthRequest) and not event.verify_password(secret):
            return STANDARD_REFUSAL
        return None

    return decide


def refusing_auth(reply: Reply = STANDARD_REFUSAL) -> Decider:
    def decide(event: Event) -> Reply | None:
        return reply if isinstance(event, AuthRequest) else None

    return decide


def auth_requests(events: list[Event]) -> list[AuthRequest]:
    return [event for event in events if isinstance(event, AuthRequest)]


def connect(config: ServerConfig = SECURE) -> ServerConnection:
    conn = ServerConnection(config)
    conn.data_to_send()
    conn.receive_data(EHLO)
    drain(conn)
    conn.data_to_send()
    return conn


def step(conn: ServerConnection, data: bytes) -> Event | smtpproto.Sentinel:
    """Feed ``data`` and return the first thing next_event() says."""
    conn.receive_data(data)
    return conn.next_event()


# --- advertising (AUTH-14, AUTH-21) ------------------------------------------------------------------


def test_AUTH_14_not_advertised_in_plaintext_and_538() -> None:
    for config in (ServerConfig(), ServerConfig(tls_available=True)):
        out, events = session(EHLO + b"AUTH PLAIN " + TIM + b"\r\nNOOP\r\n", config)
        assert auth_lines(out) == []
        assert tail(out) == (
            b"538 5.7.11 Encryption required for requested authentication mechanism\r\n" + NOOP_OK
        )
        assert events == [Hello(command="EHLO", hostname="client.test")]


@pytest.mark.parametrize("mechanism", [*ALL_MECHANISMS, "FOO"])
def test_AUTH_14_every_mechanism_is_refused_in_plaintext(mechanism: str) -> None:
    # The 538 comes before the mechanism is even looked at: nothing about the list leaks in clear.
    config = ServerConfig(auth_methods=ALL_MECHANISMS, nonce_factory=rfc2195_nonce)
    out, _ = session(EHLO + f"AUTH {mechanism}\r\n".encode(), config)
    assert tail(out) == b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"


def test_allow_insecure_auth_offers_and_accepts_in_plaintext() -> None:
    config = ServerConfig(allow_insecure_auth=True)
    out, events = session(EHLO + b"AUTH PLAIN " + TIM + b"\r\n", config)
    assert auth_lines(out) == ["AUTH PLAIN LOGIN"]
    assert tail(out) == OK
    assert auth_requests(events) == [TIM_REQUEST]


def test_advertised_over_tls_with_the_configured_methods_in_order() -> None:
    config = ServerConfig(
        secure=True, auth_methods=("XOAUTH2", "CRAM-MD5", "PLAIN"), nonce_factory=rfc2195_nonce
    )
    out, _ = session(EHLO, config)
    assert auth_lines(out) == ["AUTH XOAUTH2 CRAM-MD5 PLAIN"]
    # Default: PLAIN and LOGIN.
    out, _ = session(EHLO, SECURE)
    assert b"250-AUTH PLAIN LOGIN\r\n" in out


def test_not_advertised_once_authenticated() -> None:
    out, _ = session(EHLO + b"AUTH PLAIN " + TIM + b"\r\n" + EHLO, SECURE)
    first, second = out.split(OK)
    assert auth_lines(first) == ["AUTH PLAIN LOGIN"]
    assert auth_lines(second) == []
    assert second.startswith(b"250-localhost Nice to meet you\r\n")


@pytest.mark.parametrize(
    "config",
    [
        ServerConfig(secure=True, auth_methods=()),
        ServerConfig(secure=True, disabled_commands=frozenset({"AUTH"})),
    ],
    ids=["no-methods", "disabled"],
)
def test_no_auth_at_all(config: ServerConfig) -> None:
    out, _ = session(EHLO + b"AUTH PLAIN " + TIM + b"\r\n", config)
    assert auth_lines(out) == []
    assert tail(out) == b"500 5.5.2 Command not recognized\r\n"


def test_AUTH_21_offered_only_after_starttls() -> None:
    config = ServerConfig(tls_available=True)
    out, events = run(
        [EHLO + b"AUTH PLAIN " + TIM + b"\r\nSTARTTLS\r\n", EHLO + b"AUTH PLAIN " + TIM + b"\r\n"],
        config,
    )
    before, after = out.split(b"220 2.0.0 Ready to start TLS\r\n")
    assert auth_lines(before) == []
    assert before.endswith(
        b"538 5.7.11 Encryption required for requested authentication mechanism\r\n"
    )
    assert auth_lines(after) == ["AUTH PLAIN LOGIN"]
    assert after.endswith(OK)
    assert auth_requests(events) == [TIM_REQUEST]


# --- PLAIN (AUTH-01..04, AUTH-07, AUTH-22) -------------------------------------------------------------


def test_AUTH_01_02_plain_two_step() -> None:
    out, events = session(EHLO + b"AUTH PLAIN\r\n" + TIM + b"\r\n", SECURE)
    # "334 " with its space and nothing else, then the 235.
    assert tail(out) == b"334 \r\n" + OK
    assert auth_requests(events) == [TIM_REQUEST]


def test_AUTH_03_plain_initial_response() -> None:
    out, events = session(EHLO + b"AUTH PLAIN " + TIM + b"\r\nMAIL FROM:<a@b.test>\r\n", SECURE)
    assert tail(out) == OK + b"250 2.1.0 Sender accepted\r\n"
    assert auth_requests(events) == [TIM_REQUEST]
    conn = connect()
    conn.receive_data(b"AUTH PLAIN " + TIM + b"\r\n")
    drain(conn)
    assert conn.authenticated_user == "tim"


def test_mechanism_name_is_case_insensitive_and_trailing_space_is_tolerated() -> None:
    out, _ = session(EHLO + b"auth plain " + TIM + b"\r\n", SECURE)
    assert tail(out) == OK
    # RFC 5321 §4.1.1: trailing white space is not an (empty) initial response.
    out, _ = session(EHLO + b"AUTH PLAIN \r\n" + TIM + b"\r\n", SECURE)
    assert tail(out) == b"334 \r\n" + OK


def test_non_ascii_mechanism_names_do_not_fold_onto_ascii() -> None:
    # "PLA\u0131N".upper() == "PLAIN": a Unicode case fold must not select a mechanism.
    out, events = session(EHLO + "AUTH PLA\u0131N ".encode() + TIM + b"\r\n", SECURE)
    assert tail(out) == b"504 5.5.4 Unrecognized authentication type\r\n"
    assert auth_requests(events) == []


def test_AUTH_04_wrong_password_is_535() -> None:
    out, events = session(EHLO + b"AUTH PLAIN " + WRONG + b"\r\nNOOP\r\n", SECURE, checking())
    assert tail(out) == INVALID + NOOP_OK
    assert auth_requests(events) == [
        AuthRequest(mechanism="PLAIN", username="tim", password="wrong")
    ]


def test_AUTH_04_default_reject_is_535_5_7_8() -> None:
    conn = connect()
    event = step(conn, b"AUTH PLAIN " + WRONG + b"\r\n")
    assert isinstance(event, AuthRequest)
    assert conn.next_event() is PAUSED
    conn.reject()
    assert conn.data_to_send() == INVALID
    assert conn.authenticated_user is None
    assert conn.next_event() is NEED_DATA


def test_reject_without_enhanced_code_gets_5_7_8() -> None:
    out, _ = session(
        EHLO + b"AUTH PLAIN " + WRONG + b"\r\n", SECURE, refusing_auth(Reply(535, "No"))
    )
    assert tail(out) == b"535 5.7.8 No\r\n"


def test_auth_request_takes_no_3xx_reply() -> None:
    conn = connect()
    assert isinstance(step(conn, b"AUTH PLAIN " + TIM + b"\r\n"), AuthRequest)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(334, "more"))
    conn.accept()
    assert conn.data_to_send() == OK


def test_plain_authzid_reaches_the_application() -> None:
    # curl --sasl-authzid admin (CONFORMANCE §4 PLAIN).
    out, events = session(EHLO + b"AUTH PLAIN YWRtaW4AdGltAHRhbnN0YWFmdGFuc3RhYWY=\r\n", SECURE)
    assert tail(out) == OK
    assert auth_requests(events) == [
        AuthRequest(mechanism="PLAIN", username="tim", password=PASSWORD, authzid="admin")
    ]


@pytest.mark.parametrize(
    "message",
    [b"tim\0tanstaaftanstaaf", b"\0\0pw", b"\0tim\0", b"a\0b\0c\0d", b"\0tim\xff\0pw"],
)
def test_plain_malformed_is_535_without_an_event(message: bytes) -> None:
    out, events = session(EHLO + b"AUTH PLAIN " + b64(message) + b"\r\n", SECURE)
    assert tail(out) == INVALID
    assert auth_requests(events) == []


@pytest.mark.parametrize(
    ("mechanism", "lines"),
    [
        ("PLAIN", [b64(b"\0tim\r\nX\0pw")]),
        ("PLAIN", [b64(b"\0tim\0pw\nX")]),
        ("PLAIN", [b64(b"x\x1b[2J\0tim\0pw")]),
        ("LOGIN", [b64(b"tim\x00")]),  # refused at once, before the password prompt
        ("LOGIN", [b64(b"tim"), b64(b"p\r\nw")]),
    ],
)
def test_AUTH_22_control_characters_never_reach_the_application(
    mechanism: str, lines: list[bytes]
) -> None:
    data = EHLO + f"AUTH {mechanism}\r\n".encode() + b"".join(line + b"\r\n" for line in lines)
    out, events = session(data, SECURE)
    assert tail(out).endswith(INVALID)
    assert auth_requests(events) == []


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"])
def test_AUTH_07_equals_is_an_empty_initial_response(mechanism: str) -> None:
    # [rec] recognised as empty (not "cannot decode"), which these mechanisms then refuse.
    out, events = session(EHLO + f"AUTH {mechanism} =\r\n".encode(), EVERYTHING)
    assert tail(out) == INVALID
    assert auth_requests(events) == []


# --- cancel, bad base64, syntax (AUTH-05, AUTH-06, AUTH-12) -------------------------------------------


@pytest.mark.parametrize(
    "exchange",
    [
        b"AUTH PLAIN\r\n*\r\n",
        b"AUTH PLAIN *\r\n",
        b"AUTH LOGIN\r\n*\r\n",
        b"AUTH LOGIN\r\ndGlt\r\n*\r\n",
        b"AUTH LOGIN dGlt\r\n*\r\n",
        b"AUTH CRAM-MD5\r\n*\r\n",
        b"AUTH XOAUTH2\r\n*\r\n",
        b"AUTH OAUTHBEARER\r\n*\r\n",
    ],
)
def test_AUTH_05_star_cancels_with_501_and_the_session_goes_on(exchange: bytes) -> None:
    data = EHLO + exchange + b"NOOP\r\nAUTH PLAIN " + TIM + b"\r\n"
    out, events = session(data, EVERYTHING)
    assert tail(out).endswith(ABORTED + NOOP_OK + OK)
    assert auth_requests(events) == [TIM_REQUEST]


def test_AUTH_05_plain_transcript() -> None:
    out, _ = session(EHLO + b"AUTH PLAIN\r\n*\r\n", SECURE)
    assert tail(out) == b"334 \r\n" + ABORTED


@pytest.mark.parametrize("bad", [b"not_base64!!", b"=AAA", b"AAA=BBB", b"AHRp bQ==", b"AHRp\tbQ=="])
def test_AUTH_06_bad_base64_initial_response(bad: bytes) -> None:
    out, events = session(EHLO + b"AUTH PLAIN " + bad + b"\r\nNOOP\r\n", SECURE)
    assert tail(out) == BAD_BASE64 + NOOP_OK
    assert auth_requests(events) == []


@pytest.mark.parametrize("bad", [b"not_base64!!", b"=AAA", b"AAA=BBB", b"AHRp bQ==", b"\xff\xfe"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"])
def test_AUTH_06_bad_base64_response_line(mechanism: str, bad: bytes) -> None:
    out, _ = session(EHLO + f"AUTH {mechanism}\r\n".encode() + bad + b"\r\nNOOP\r\n", EVERYTHING)
    assert tail(out).endswith(BAD_BASE64 + NOOP_OK)


@pytest.mark.parametrize("line", [b"AUTH\r\n", b"AUTH \r\n", b"AUTH  PLAIN\r\n"])
def test_auth_without_a_mechanism_is_501(line: bytes) -> None:
    out, _ = session(EHLO + line, SECURE)
    assert tail(out) == b"501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"


def test_AUTH_12_initial_response_to_cram_md5_is_501_5_7_0() -> None:
    out, events = session(EHLO + b"AUTH CRAM-MD5 dGlt\r\n", EVERYTHING)
    assert tail(out) == b"501 5.7.0 CRAM-MD5 takes no initial response\r\n"
    assert auth_requests(events) == []


# --- sequencing (AUTH-09, AUTH-10, AUTH-11, AUTH-20) ------------------------------------------------------


def test_AUTH_09_second_auth_is_503() -> None:
    out, events = session(
        EHLO + b"AUTH PLAIN\r\n" + TIM + b"\r\nAUTH PLAIN " + TIM + b"\r\n", SECURE
    )
    assert tail(out) == b"334 \r\n" + OK + b"503 5.5.1 Already authenticated\r\n"
    assert len(auth_requests(events)) == 1


def test_AUTH_10_auth_inside_a_transaction_is_503() -> None:
    out, events = session(EHLO + b"MAIL FROM:<a@b.test>\r\nAUTH PLAIN " + TIM + b"\r\n", SECURE)
    assert tail(out) == (
        b"250 2.1.0 Sender accepted\r\n503 5.5.1 AUTH not permitted during a mail transaction\r\n"
    )
    assert auth_requests(events) == []


def test_AUTH_10_also_after_a_recipient() -> None:
    data = EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nAUTH PLAIN\r\n"
    out, _ = session(data, SECURE)
    assert tail(out).endswith(b"503 5.5.1 AUTH not permitted during a mail transaction\r\n")


@pytest.mark.parametrize("mechanism", [b"FOO", b"CRAM-MD5", b"XOAUTH2", b"GSSAPI", b"EXTERNAL"])
def test_AUTH_11_mechanism_not_offered_is_504(mechanism: bytes) -> None:
    out, _ = session(EHLO + b"AUTH " + mechanism + b"\r\nNOOP\r\n", SECURE)
    assert tail(out) == b"504 5.5.4 Unrecognized authentication type\r\n" + NOOP_OK


def test_AUTH_20_auth_before_ehlo_is_503() -> None:
    for config in (SECURE, ServerConfig()):
        out, events = session(b"AUTH PLAIN " + TIM + b"\r\n", config)
        assert out == b"220 localhost ESMTP\r\n503 5.5.1 Send HELO/EHLO first\r\n"
        assert events == []


def test_auth_in_a_refused_session_is_503() -> None:
    out, _ = session(b"AUTH PLAIN " + TIM + b"\r\n", ServerConfig(secure=True, refuse_service=True))
    assert out.endswith(b"503 5.5.1 No SMTP service here, only QUIT\r\n")


# --- LOGIN, PIPE-09, PIPE-10 -----------------------------------------------------------------------------


def test_login_two_step_transcript() -> None:
    out, events = session(EHLO + b"AUTH LOGIN\r\ndGlt\r\ndGFuc3RhYWZ0YW5zdGFhZg==\r\n", SECURE)
    assert tail(out) == LOGIN_USER + LOGIN_PASSWORD + OK
    assert auth_requests(events) == [
        AuthRequest(mechanism="LOGIN", username="tim", password=PASSWORD)
    ]


def test_login_initial_response_is_the_username() -> None:
    # What smtplib.login() sends (AUTH LOGIN <b64 user>), and curl with --sasl-ir.
    out, events = session(EHLO + b"AUTH LOGIN dGlt\r\ndGFuc3RhYWZ0YW5zdGFhZg==\r\n", SECURE)
    assert tail(out) == LOGIN_PASSWORD + OK
    assert auth_requests(events)[0].username == "tim"


def test_PIPE_09_mail_pipelined_after_auth_initial_response() -> None:
    # Run with auth_required as well: the MAIL in the same write must see the new authentication.
    for config in (SECURE, ServerConfig(secure=True, auth_required=True)):
        out, events = session(EHLO + b"AUTH PLAIN AHUAcA==\r\nMAIL FROM:<a@b.test>\r\n", config)
        assert tail(out) == OK + b"250 2.1.0 Sender accepted\r\n"
        assert auth_requests(events) == [AuthRequest(mechanism="PLAIN", username="u", password="p")]
        assert events[-1] == MailFrom(address="a@b.test")


def test_PIPE_10_pipelined_lines_are_sasl_responses() -> None:
    out, events = session(EHLO + b"AUTH LOGIN\r\ndQ==\r\ncA==\r\n", SECURE)
    assert tail(out) == LOGIN_USER + LOGIN_PASSWORD + OK
    assert auth_requests(events) == [AuthRequest(mechanism="LOGIN", username="u", password="p")]


def test_command_looking_lines_inside_the_exchange_are_never_commands() -> None:
    # Whatever the line says, while the exchange runs it is a SASL response: "QUIT" is valid base64
    # for three octets that are not UTF-8, so the username is refused.
    out, events = session(EHLO + b"AUTH LOGIN\r\nQUIT\r\nNOOP\r\n", SECURE)
    assert tail(out) == LOGIN_USER + INVALID + NOOP_OK
    out, events = session(EHLO + b"AUTH LOGIN\r\nQUIT now\r\nNOOP\r\n", SECURE)
    assert tail(out) == LOGIN_USER + BAD_BASE64 + NOOP_OK
    assert not any(isinstance(event, Quit) for event in events)


def test_eof_inside_the_exchange() -> None:
    out, events = session(EHLO + b"AUTH LOGIN\r\ndGlt\r\n", SECURE, eof=True)
    assert tail(out) == LOGIN_USER + LOGIN_PASSWORD
    assert events[-1] == ConnectionClosed(transaction_aborted=False)
    assert auth_requests(events) == []


@pytest.mark.parametrize("policy", [LineEndings.NORMALIZE, LineEndings.ALLOW])
def test_sasl_lines_with_lf_line_endings(policy: LineEndings) -> None:
    config = ServerConfig(secure=True, line_endings=policy)
    for data in (b"AUTH PLAIN\r\n" + TIM + b"\r\n", b"AUTH PLAIN\n" + TIM + b"\n"):
        out, events = session(EHLO + data, config)
        assert tail(out) == b"334 \r\n" + OK
        assert auth_requests(events) == [TIM_REQUEST]


# --- CRAM-MD5 -------------------------------------------------------------------------------------------


def test_cram_md5_rfc2195_vector() -> None:
    out, events = session(
        EHLO + b"AUTH CRAM-MD5\r\n" + RFC2195_RESPONSE + b"\r\n", EVERYTHING, checking()
    )
    assert tail(out) == b"334 " + RFC2195_CHALLENGE + b"\r\n" + OK
    (request,) = auth_requests(events)
    assert request == AuthRequest(
        mechanism="CRAM-MD5",
        username="tim",
        challenge="<1896.697170952@postoffice.reston.mci.net>",
        digest="b913a602c7eda7a495b4e6e7334d3890",
    )
    assert request.verify_password(PASSWORD)


def test_cram_md5_wrong_secret_is_535() -> None:
    out, _ = session(
        EHLO + b"AUTH CRAM-MD5\r\n" + RFC2195_RESPONSE + b"\r\n", EVERYTHING, checking("nope")
    )
    assert tail(out) == b"334 " + RFC2195_CHALLENGE + b"\r\n" + INVALID


def test_cram_md5_replay_against_a_fresh_challenge_fails() -> None:
    nonces = iter(["1", "2"])
    config = ServerConfig(
        secure=True,
        hostname=RFC2195_HOST,
        auth_methods=("CRAM-MD5",),
        nonce_factory=lambda: next(nonces),
    )
    out, events = run(
        [EHLO + b"AUTH CRAM-MD5\r\n" + RFC2195_RESPONSE + b"\r\n"], config, checking()
    )
    challenge = b64(b"<1@postoffice.reston.mci.net>")
    assert tail(out) == b"334 " + challenge + b"\r\n" + INVALID
    assert auth_requests(events)[0].challenge == "<1@postoffice.reston.mci.net>"
    # Each AUTH draws a fresh nonce.
    out, _ = run([EHLO + b"AUTH CRAM-MD5\r\n"], config)
    assert out.endswith(b"334 " + b64(b"<2@postoffice.reston.mci.net>") + b"\r\n")


# --- XOAUTH2 and OAUTHBEARER -------------------------------------------------------------------------------


def test_xoauth2_initial_response_success() -> None:
    out, events = session(EHLO + b"AUTH XOAUTH2 " + XOAUTH2_CURL + b"\r\n", EVERYTHING)
    assert tail(out) == OK
    assert auth_requests(events) == [
        AuthRequest(mechanism="XOAUTH2", username="u", token="TOKEN123")
    ]


def test_xoauth2_two_step_success() -> None:
    out, _ = session(EHLO + b"AUTH XOAUTH2\r\n" + XOAUTH2_CURL + b"\r\n", EVERYTHING)
    assert tail(out) == b"334 \r\n" + OK


def test_xoauth2_failure_flow() -> None:
    data = EHLO + b"AUTH XOAUTH2 " + XOAUTH2_CURL + b"\r\n\r\nNOOP\r\n"
    out, events = session(data, EVERYTHING, refusing_auth())
    # 334 + base64 JSON, the client's empty line, then the 535; ! the empty line is no command (no 500).
    assert tail(out) == XOAUTH2_ERROR + INVALID + NOOP_OK
    assert base64.b64decode(XOAUTH2_ERROR[4:-2]) == b'{"schemes":"bearer","status":"401"}'
    assert len(auth_requests(events)) == 1


def test_xoauth2_failure_cancelled_with_star() -> None:
    data = EHLO + b"AUTH XOAUTH2 " + XOAUTH2_CURL + b"\r\n*\r\nNOOP\r\n"
    out, _ = session(data, EVERYTHING, refusing_auth())
    assert tail(out) == XOAUTH2_ERROR + ABORTED + NOOP_OK


def test_xoauth2_failure_with_an_unexpected_ack_still_ends_in_the_refusal() -> None:
    data = EHLO + b"AUTH XOAUTH2 " + XOAUTH2_CURL + b"\r\nAQ==\r\nNOOP\r\n"
    out, _ = session(data, EVERYTHING, refusing_auth())
    assert tail(out) == XOAUTH2_ERROR + INVALID + NOOP_OK


def test_xoauth2_failure_ack_counts_as_an_error_when_unexpected() -> None:
    # max_errors=1: the odd acknowledgement is a client error, the expected one is not.
    config = ServerConfig(
        secure=True, auth_methods=("XOAUTH2",), max_errors=1, max_auth_failures=10
    )
    out, _ = session(
        EHLO + b"AUTH XOAUTH2 " + XOAUTH2_CURL + b"\r\n\r\nNOOP\r\n", config, refusing_auth()
    )
    assert tail(out) == XOAUTH2_ERROR + INVALID + NOOP_OK
    out, events = session(
        EHLO + b"AUTH XOAUTH2 " + XOAUTH2_CURL + b"\r\nx\r\nNOOP\r\n", config, refusing_auth()
    )
    # The 421 takes the place of the refusal.
    assert (
        tail(out) == XOAUTH2_ERROR + b"421 4.7.0 localhost Too many errors, closing connection\r\n"
    )
    assert isinstance(events[-1], ConnectionClosed)


def test_xoauth2_failure_with_the_applications_reply() -> None:
    temporary = Reply(454, "Temporary authentication failure", "4.7.0")
    data = EHLO + b"AUTH XOAUTH2 " + XOAUTH2_CURL + b"\r\n\r\n"
    out, _ = session(data, EVERYTHING, refusing_auth(temporary))
    assert tail(out) == XOAUTH2_ERROR + b"454 4.7.0 Temporary authentication failure\r\n"


def test_oauthbearer_success() -> None:
    out, events = session(EHLO + b"AUTH OAUTHBEARER " + OAUTHBEARER_RFC + b"\r\n", EVERYTHING)
    assert tail(out) == OK
    assert auth_requests(events) == [
        AuthRequest(
            mechanism="OAUTHBEARER",
            username="user@example.com",
            token="vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
            host="server.example.com",
            port=587,
        )
    ]


def test_oauthbearer_failure_flow() -> None:
    data = EHLO + b"AUTH OAUTHBEARER " + OAUTHBEARER_RFC + b"\r\nAQ==\r\nNOOP\r\n"
    out, _ = session(data, EVERYTHING, refusing_auth())
    assert tail(out) == OAUTHBEARER_ERROR + INVALID + NOOP_OK
    assert base64.b64decode(OAUTHBEARER_ERROR[4:-2]) == (
        b'{"schemes":"bearer","status":"invalid_token"}'
    )


def test_oauthbearer_failure_cancelled_with_star() -> None:
    data = EHLO + b"AUTH OAUTHBEARER\r\n" + OAUTHBEARER_RFC + b"\r\n*\r\nNOOP\r\n"
    out, _ = session(data, EVERYTHING, refusing_auth())
    assert tail(out) == b"334 \r\n" + OAUTHBEARER_ERROR + ABORTED + NOOP_OK


# --- 421 from the application -----------------------------------------------------------------------------


@pytest.mark.parametrize("initial", [b"AUTH PLAIN " + TIM, b"AUTH XOAUTH2 " + XOAUTH2_CURL])
def test_421_answer_closes_the_session(initial: bytes) -> None:
    # RFC 5321 §3.8: a 421 closes the channel, even as the answer to AUTH (and without XOAUTH2's 334).
    bye = Reply(421, "Service not available", "4.3.0")
    out, events = session(EHLO + initial + b"\r\nNOOP\r\n", EVERYTHING, refusing_auth(bye))
    assert tail(out) == b"421 4.3.0 Service not available\r\n"
    assert events[-1] == ConnectionClosed(transaction_aborted=False)


# --- failure limit (AUTH-18) -----------------------------------------------------------------------------


def test_AUTH_18_three_failures_then_421() -> None:
    conn = connect()
    for _ in range(3):
        assert isinstance(step(conn, b"AUTH PLAIN " + WRONG + b"\r\n"), AuthRequest)
        conn.reject()
        assert conn.data_to_send() == INVALID
        # ! Still connected after the third failure.
        assert conn.state is SessionState.READY
    assert isinstance(step(conn, b"AUTH PLAIN " + WRONG + b"\r\nNOOP\r\n"), AuthRequest)
    conn.reject()
    assert conn.data_to_send() == TOO_MANY
    assert conn.state is SessionState.CLOSED
    with pytest.raises(RemoteProtocolError) as caught:
        conn.next_event()
    assert caught.value.reply == Reply(421, "Too many authentication failures", "4.7.0")
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert conn.data_to_send() == b""


def test_AUTH_18_malformed_credentials_count_too() -> None:
    malformed = b"AUTH PLAIN " + b64(b"tim\0pw") + b"\r\n"
    conn = connect()
    conn.receive_data(malformed * 3)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == INVALID * 3
    conn.receive_data(malformed + b"NOOP\r\n")
    with pytest.raises(RemoteProtocolError) as caught:
        conn.next_event()
    assert caught.value.reply is not None
    assert caught.value.reply.code == 421
    assert conn.data_to_send() == TOO_MANY


def test_AUTH_18_mixed_failures_and_the_xoauth2_flow() -> None:
    config = ServerConfig(secure=True, auth_methods=("PLAIN", "XOAUTH2"))
    data = (
        EHLO
        + b"AUTH PLAIN "
        + WRONG
        + b"\r\nAUTH PLAIN "
        + b64(b"tim\0pw")
        + b"\r\nAUTH XOAUTH2 "
        + XOAUTH2_CURL
        + b"\r\n\r\nAUTH XOAUTH2 "
        + XOAUTH2_CURL
        + b"\r\n\r\n"
    )
    out, events = session(data, config, checking())
    # The fourth failure gets the 421 at once, not the XOAUTH2 error challenge.
    assert tail(out) == INVALID + INVALID + XOAUTH2_ERROR + INVALID + TOO_MANY
    assert events[-1] == ConnectionClosed(transaction_aborted=False)


def test_cancel_and_bad_base64_are_not_authentication_failures() -> None:
    data = EHLO + b"AUTH PLAIN *\r\n" * 2 + b"AUTH PLAIN !\r\n" * 2 + b"AUTH PLAIN " + TIM + b"\r\n"
    out, _ = session(data, SECURE)
    assert tail(out) == ABORTED * 2 + BAD_BASE64 * 2 + OK


def test_max_auth_failures_zero() -> None:
    out, events = session(
        EHLO + b"AUTH PLAIN " + WRONG + b"\r\n",
        ServerConfig(secure=True, max_auth_failures=0),
        checking(),
    )
    assert tail(out) == TOO_MANY
    assert events[-1] == ConnectionClosed(transaction_aborted=False)


def test_AUTH_19_temporary_failure_passes_through() -> None:
    temporary = Reply(454, "Temporary authentication failure", "4.7.0")
    out, _ = session(EHLO + b"AUTH PLAIN " + TIM + b"\r\n", SECURE, refusing_auth(temporary))
    assert tail(out) == b"454 4.7.0 Temporary authentication failure\r\n"


# --- over-long SASL lines (AUTH-13) ---------------------------------------------------------------------


def test_AUTH_13_long_line_in_one_write() -> None:
    out, events = run([EHLO + b"AUTH PLAIN\r\n" + b"A" * 20_000 + b"\r\nNOOP\r\n"], SECURE)
    assert tail(out) == b"334 \r\n500 5.5.6 Line too long\r\n" + NOOP_OK
    assert auth_requests(events) == []


def test_AUTH_13_long_line_in_pieces() -> None:
    pieces = [EHLO + b"AUTH PLAIN\r\n", *[b"A" * 1000] * 20, b"\r\nNOOP\r\n"]
    out, events = run(pieces, SECURE)
    assert tail(out) == b"334 \r\n500 5.5.6 Line too long\r\n" + NOOP_OK
    assert auth_requests(events) == []


def test_AUTH_13_any_split_gives_the_same_answer() -> None:
    config = ServerConfig(secure=True, max_auth_line=512)
    for size in (509, 510):  # + CRLF: 511 and 512 octets, at the limit
        out, _ = session(EHLO + b"AUTH PLAIN\r\n" + b"A" * size + b"\r\nNOOP\r\n", config)
        assert tail(out) == b"334 \r\n" + BAD_BASE64 + NOOP_OK, size
    for size in (511, 600):
        out, _ = session(EHLO + b"AUTH PLAIN\r\n" + b"A" * size + b"\r\nNOOP\r\n", config)
        assert tail(out) == b"334 \r\n500 5.5.6 Line too long\r\n" + NOOP_OK, size


def test_AUTH_13_memory_is_bounded() -> None:
    conn = connect()
    conn.receive_data(b"AUTH PLAIN\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"334 \r\n"
    chunk = b"A" * 4096
    for _ in range(256):  # 1 MiB without a line end
        conn.receive_data(chunk)
        assert conn.next_event() is NEED_DATA
        assert len(conn._buffer) <= conn.config.max_auth_line + len(chunk)
    assert conn.data_to_send() == b""
    conn.receive_data(b"\r\nNOOP\r\n")
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"500 5.5.6 Line too long\r\n" + NOOP_OK


def test_AUTH_13_no_part_of_the_long_line_runs_as_a_command() -> None:
    # The end of the over-long line looks like a command; it is still part of that line.
    pieces = [EHLO + b"AUTH PLAIN\r\n", b"A" * 13_000, b"QUIT\r\nNOOP\r\n"]
    out, events = run(pieces, SECURE)
    assert tail(out) == b"334 \r\n500 5.5.6 Line too long\r\n" + NOOP_OK
    assert not any(isinstance(event, Quit) for event in events)
    mail = b"MAIL FROM:<a@b.test> " + b"X" * 13_000
    out, events = run([EHLO + b"AUTH PLAIN\r\n" + mail + b"\r\nNOOP\r\n"], SECURE)
    assert tail(out) == b"334 \r\n500 5.5.6 Line too long\r\n" + NOOP_OK
    assert not any(isinstance(event, MailFrom) for event in events)


@pytest.mark.parametrize("whole", [True, False])
def test_AUTH_13_long_acknowledgement_of_an_xoauth2_error(whole: bool) -> None:
    start = EHLO + b"AUTH XOAUTH2 " + XOAUTH2_CURL + b"\r\n"
    long_line = b"A" * 13_000
    pieces = [start + long_line + b"\r\nNOOP\r\n"] if whole else [start, long_line, b"\r\nNOOP\r\n"]
    out, _ = run(pieces, EVERYTHING, refusing_auth())
    # The 500 ends the AUTH; the 535 it was waiting to send is dropped.
    assert tail(out) == XOAUTH2_ERROR + b"500 5.5.6 Line too long\r\n" + NOOP_OK


# --- auth_required (AUTH-15) and the unauthenticated-command limit ------------------------------------------


REQUIRED = ServerConfig(secure=True, auth_required=True)


def test_AUTH_15_mail_rcpt_data_vrfy_need_authentication() -> None:
    data = EHLO + b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nVRFY x\r\nDATA\r\n"
    out, events = session(data, REQUIRED)
    assert tail(out) == b"530 5.7.0 Authentication required\r\n" * 4
    assert events == [Hello(command="EHLO", hostname="client.test")]


def test_AUTH_15_other_commands_still_work() -> None:
    data = (
        b"HELO client.test\r\n"
        + EHLO
        + b"NOOP\r\nRSET\r\nHELP\r\nAUTH PLAIN "
        + TIM
        + b"\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nQUIT\r\n"
    )
    out, events = session(data, REQUIRED)
    assert codes(out) == [220, 250, 250, 250, 250, 214, 235, 250, 250, 221]
    assert isinstance(events[-1], ConnectionClosed)


def test_AUTH_15_mail_before_ehlo_is_still_a_sequence_error() -> None:
    # [policy], as Node: "send HELO/EHLO first" is checked before authentication.
    out, _ = session(b"MAIL FROM:<a@b.test>\r\n", REQUIRED)
    assert out.endswith(b"503 5.5.1 Send HELO/EHLO first\r\n")


def test_AUTH_15_data_with_pipelined_text_is_a_sync_error_first() -> None:
    # Text behind a DATA that cannot succeed is never run as commands, authenticated or not. One write:
    # what counts is the text already buffered behind the DATA (CONFORMANCE PIPE-05).
    out, events = run([EHLO + b"DATA\r\nMAIL FROM:<a@b.test>\r\n"], REQUIRED)
    assert tail(out) == (
        b"554 5.5.0 SMTP protocol synchronization error (text pipelined after DATA)\r\n"
    )
    assert isinstance(events[-1], ConnectionClosed)


def test_AUTH_16_auth_mail_parameter_from_an_unauthenticated_client() -> None:
    data = (
        EHLO
        + b"MAIL FROM:<e=mc2@example.com> AUTH=e+3Dmc2@example.com\r\nRSET\r\n"
        + b"MAIL FROM:<john+@example.org> AUTH=<>\r\n"
    )
    out, events = session(data, ServerConfig())
    assert (
        tail(out)
        == b"250 2.1.0 Sender accepted\r\n250 2.0.0 Flushed\r\n250 2.1.0 Sender accepted\r\n"
    )
    mails = [event for event in events if isinstance(event, MailFrom)]
    assert mails == [
        MailFrom(address="e=mc2@example.com", args={"AUTH": "e=mc2@example.com"}),
        MailFrom(address="john+@example.org", args={"AUTH": "<>"}),
    ]


@pytest.mark.parametrize("value", [b"a+zz", b"a+2", b"a=b", b"a+3d"])
def test_AUTH_17_bad_xtext_in_the_auth_parameter(value: bytes) -> None:
    out, events = session(EHLO + b"MAIL FROM:<a@b.test> AUTH=" + value + b"\r\n", ServerConfig())
    assert tail(out) == b"501 5.5.4 Bad AUTH parameter syntax\r\n"
    assert not any(isinstance(event, MailFrom) for event in events)


def test_unauthenticated_command_limit() -> None:
    config = ServerConfig(secure=True, auth_required=True, max_unauthenticated_commands=3)
    out, events = session(EHLO + b"NOOP\r\nNOOP\r\nNOOP\r\n", config)
    # The command that reaches the limit is answered 421 and nothing after it is read (as Node).
    assert tail(out) == NOOP_OK + b"421 4.7.0 Too many unauthenticated commands\r\n"
    assert events[-1] == ConnectionClosed(transaction_aborted=False)


def test_unauthenticated_command_limit_skips_auth_and_sasl_lines() -> None:
    config = ServerConfig(secure=True, auth_required=True, max_unauthenticated_commands=3)
    failing = b"AUTH LOGIN\r\ndGlt\r\nd3Jvbmc=\r\n"  # LOGIN tim / wrong, two continuation lines
    out, _ = session(
        EHLO + failing * 2 + b"NOOP\r\nAUTH PLAIN " + TIM + b"\r\n" + b"NOOP\r\n" * 5,
        config,
        checking(),
    )
    assert tail(out) == (LOGIN_USER + LOGIN_PASSWORD + INVALID) * 2 + NOOP_OK + OK + NOOP_OK * 5


def test_no_unauthenticated_limit_without_auth_required() -> None:
    config = ServerConfig(secure=True, max_unauthenticated_commands=2)
    out, _ = session(EHLO + b"NOOP\r\n" * 5, config)
    assert tail(out) == NOOP_OK * 5


# --- robustness -----------------------------------------------------------------------------------------------

_decisions = st.sampled_from(
    [
        None,
        Reply(535, "Authentication credentials invalid", "5.7.8"),
        Reply(454, "Temporary authentication failure", "4.7.0"),
        Reply(421, "Closing", "4.3.0"),
        Reply(250, "Fine"),
    ]
)
_sasl_lines = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"", b"*", b"=", b"AQ==", TIM, XOAUTH2_CURL, RFC2195_RESPONSE, b"dGlt", b"QUIT"]
    ),
    st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", max_size=40).map(
        str.encode
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mechanism=st.sampled_from([*ALL_MECHANISMS, "FOO", "plain"]),
    initial=st.one_of(st.none(), _sasl_lines),
    lines=st.lists(_sasl_lines, max_size=5),
    decision=_decisions,
)
def test_random_sasl_lines_only_produce_replies_and_events(
    mechanism: str, initial: bytes | None, lines: list[bytes], decision: Reply | None
) -> None:
    head = f"AUTH {mechanism}".encode() + (b"" if initial is None else b" " + initial)
    data = EHLO + head + b"\r\n" + b"".join(line + b"\r\n" for line in lines) + b"NOOP\r\n"
    # session() itself fails on any exception other than RemoteProtocolError, and on any dependence
    # on how the input is split.
    out, events = session(data, EVERYTHING, refusing_auth(decision) if decision else checking())
    text = out.decode("ascii")
    assert text.endswith("\r\n")
    for line in text.split("\r\n")[:-1]:
        assert line[:3].isdigit(), line
        assert line[3] in " -", line
        assert not line.startswith(("334-",)), "a challenge is a single line"
    assert all(
        isinstance(event, Hello | AuthRequest | ConnectionClosed | MailFrom | Quit)
        for event in events
    )
    requests = auth_requests(events)
    assert len(requests) <= 1 + len(lines)
