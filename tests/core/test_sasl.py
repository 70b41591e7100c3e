"""SASL mechanisms (smtpproto._sasl): RFC 4954 §4, RFC 4616, the LOGIN draft, RFC 2195, XOAUTH2, RFC 7628.

Each generator is driven step by step: what it yields is what follows ``334 ``, what it is sent is the client's
next line without CRLF. Base64 is computed here with :mod:`base64`, plus a few literal vectors pinned from
the conformance checklist §4.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from smtpproto._replies import Reply
from smtpproto._sasl import (
    MECHANISMS,
    PLAINTEXT_MECHANISMS,
    AuthRequest,
    Conversation,
    SASLError,
    conversation,
    failure_challenge,
    failure_response_ok,
)

ABORTED = Reply(501, "Authentication aborted", "5.7.0")
BAD_BASE64 = Reply(501, "Cannot decode base64", "5.5.2")
INVALID = Reply(535, "Authentication credentials invalid", "5.7.8")
NO_INITIAL = Reply(501, "CRAM-MD5 takes no initial response", "5.7.0")

TIM_PLAIN = "AHRpbQB0YW5zdGFhZnRhbnN0YWFm"  # base64("\0tim\0tanstaaftanstaaf"), CONFORMANCE §4
RFC2195_NONCE = "1896.697170952"
RFC2195_HOST = "postoffice.reston.mci.net"
RFC2195_CHALLENGE_B64 = "PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+"
RFC2195_RESPONSE_B64 = "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"
XOAUTH2_CURL = "dXNlcj11AWF1dGg9QmVhcmVyIFRPS0VOMTIzAQE="  # user=u^Aauth=Bearer TOKEN123^A^A
OAUTHBEARER_CURL = b"n,a=u,\x01host=127.0.0.1\x01port=2540\x01auth=Bearer TOKEN123\x01\x01"
B64_SAMPLES = ["not_base64!!", "=AAA", "AAA=BBB", "AHRp bQ==", "AAA", "é", "AQ=", "AQ==\t"]


def b64(data: bytes | str) -> str:
    """Base64 of ``data`` (text is UTF-8 encoded first), as a client would send it."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def start(
    mechanism: str,
    initial: str | None = None,
    *,
    nonce: Callable[[], str] = lambda: RFC2195_NONCE,
    hostname: str = RFC2195_HOST,
) -> Conversation:
    return conversation(mechanism, initial, hostname=hostname, nonce=nonce)


def drive(conv: Conversation, lines: Iterable[str]) -> tuple[list[str], AuthRequest]:
    """Run ``conv`` to its end feeding ``lines``; return the challenges it yielded and its AuthRequest.

    Fails if the mechanism asks for more lines than given or finishes with lines left over.
    """
    pending = list(lines)
    challenges: list[str] = []
    result: object = None
    try:
        challenge = next(conv)
        while True:
            challenges.append(challenge)
            assert pending, f"the mechanism wants another line after {challenges!r}"
            challenge = conv.send(pending.pop(0))
    except StopIteration as stop:
        result = stop.value
    assert not pending, f"lines left over: {pending!r}"
    assert isinstance(result, AuthRequest)
    return challenges, result


def failure(conv: Conversation, lines: Iterable[str] = ()) -> Reply:
    """Run ``conv`` expecting a SASLError; return its reply."""
    with pytest.raises(SASLError) as info:
        drive(conv, lines)
    return info.value.reply


def only(mechanism: str, initial: str | None = None, lines: Iterable[str] = ()) -> AuthRequest:
    return drive(start(mechanism, initial), lines)[1]


# --- the module's constants and small types --------------------------------------------------------------------


def test_mechanism_sets() -> None:
    assert {"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"} == MECHANISMS
    assert frozenset({"PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"}) == PLAINTEXT_MECHANISMS


def test_sasl_error_carries_the_reply() -> None:
    error = SASLError(INVALID)
    assert isinstance(error, Exception)
    assert error.reply is INVALID


def test_auth_request_is_frozen_and_repr_hides_secrets() -> None:
    request = only("PLAIN", TIM_PLAIN)
    assert "tanstaaf" not in repr(request)
    assert "tim" in repr(request)
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.username = "root"  # type: ignore[misc]
    token_request = only("XOAUTH2", XOAUTH2_CURL)
    assert "TOKEN123" not in repr(token_request)
    cram = drive(start("CRAM-MD5"), [RFC2195_RESPONSE_B64])[1]
    assert "b913a602" not in repr(cram)


def test_auth_request_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        AuthRequest("PLAIN", "tim")  # type: ignore[call-arg]


# --- AUTH-11: the connection answers 504 for unknown mechanisms; the generator refuses them at once ------------


@pytest.mark.parametrize("mechanism", ["FOO", "plain", "EXTERNAL", ""])
def test_AUTH_11_unknown_mechanism_is_a_programming_error(mechanism: str) -> None:
    with pytest.raises(ValueError, match="unsupported SASL mechanism"):
        start(mechanism)


# --- AUTH-01..04: PLAIN, two-step and initial-response forms ---------------------------------------------------


def test_AUTH_01_02_plain_two_step() -> None:
    conv = start("PLAIN")
    assert next(conv) == ""  # the connection sends "334 " — space, nothing else
    with pytest.raises(StopIteration) as stop:
        conv.send(TIM_PLAIN)
    request = stop.value.value
    assert request == AuthRequest(mechanism="PLAIN", username="tim", password="tanstaaftanstaaf")
    assert request.authzid is None
    assert request.verify_password("tanstaaftanstaaf")


def test_AUTH_03_plain_initial_response_needs_no_challenge() -> None:
    challenges, request = drive(start("PLAIN", TIM_PLAIN), [])
    assert challenges == []
    assert (request.username, request.password) == ("tim", "tanstaaftanstaaf")


def test_AUTH_02_plain_computed_base64_matches_pinned_vector() -> None:
    assert b64(b"\0tim\0tanstaaftanstaaf") == TIM_PLAIN


def test_AUTH_04_wrong_password_is_the_applications_call() -> None:
    request = only("PLAIN", b64("\0tim\0wrong"))
    assert request.password == "wrong"
    assert not request.verify_password("tanstaaftanstaaf")
    assert not only("PLAIN", TIM_PLAIN).verify_password("tanstaaftanstaaF")
    assert not only("PLAIN", TIM_PLAIN).verify_password("")


def test_plain_authzid_is_handed_over() -> None:
    vector = "YWRtaW4AdGltAHRhbnN0YWFmdGFuc3RhYWY="
    assert b64(b"admin\0tim\0tanstaaftanstaaf") == vector
    request = only("PLAIN", vector)
    assert (request.authzid, request.username, request.password) == (
        "admin",
        "tim",
        "tanstaaftanstaaf",
    )


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"tim\0tanstaaftanstaaf", id="one-NUL"),
        pytest.param(b"\0\0pw", id="empty-authcid"),
        pytest.param(b"\0tim\0", id="empty-password"),
        pytest.param(b"a\0b\0c\0d", id="three-NULs"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\0\0", id="only-NULs"),
        pytest.param(b"\xff\0tim\0pw", id="authzid-not-utf8"),
        pytest.param(b"\0t\xc3\0pw", id="authcid-not-utf8"),
        pytest.param(b"\0tim\0\xed\xa0\x80", id="password-surrogate"),
    ],
)
def test_plain_malformed_is_535(message: bytes) -> None:
    assert failure(start("PLAIN", b64(message))) == INVALID
    assert failure(start("PLAIN"), [b64(message)]) == INVALID


def test_plain_255_octet_fields_are_accepted() -> None:
    authzid, user, password = "z" * 255, "é" * 127 + "u", "€" * 85
    assert all(len(f.encode()) == 255 for f in (authzid, user, password))
    request = only("PLAIN", b64(f"{authzid}\0{user}\0{password}"))
    assert (request.authzid, request.username, request.password) == (authzid, user, password)


def test_plain_password_may_hold_tabs_and_spaces() -> None:
    # Only NUL, CR and LF are refused in secrets; identities refuse every control character.
    request = only("PLAIN", b64("\0tim\0 pass\tword "))
    assert request.password == " pass\tword "


# --- AUTH-05: "*" cancels at every step ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "initial", "lines"),
    [
        pytest.param("PLAIN", None, ["*"], id="PLAIN"),
        pytest.param("LOGIN", None, ["*"], id="LOGIN-username"),
        pytest.param("LOGIN", None, [b64("tim"), "*"], id="LOGIN-password"),
        pytest.param("LOGIN", b64("tim"), ["*"], id="LOGIN-password-after-initial"),
        pytest.param("CRAM-MD5", None, ["*"], id="CRAM-MD5"),
        pytest.param("XOAUTH2", None, ["*"], id="XOAUTH2"),
        pytest.param("OAUTHBEARER", None, ["*"], id="OAUTHBEARER"),
        pytest.param("PLAIN", "*", [], id="PLAIN-initial-response"),
        pytest.param("LOGIN", "*", [], id="LOGIN-initial-response"),
    ],
)
def test_AUTH_05_star_aborts(mechanism: str, initial: str | None, lines: list[str]) -> None:
    assert failure(start(mechanism, initial), lines) == ABORTED


def test_AUTH_05_plain_transcript() -> None:
    conv = start("PLAIN")
    assert next(conv) == ""
    with pytest.raises(SASLError) as info:
        conv.send("*")
    assert info.value.reply == ABORTED
    assert info.value.reply.to_bytes() == b"501 5.7.0 Authentication aborted\r\n"


# --- AUTH-06: strict base64 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", B64_SAMPLES)
def test_AUTH_06_bad_base64_initial_response(bad: str) -> None:
    for mechanism in sorted(MECHANISMS - {"CRAM-MD5"}):
        assert failure(start(mechanism, bad)) == BAD_BASE64, mechanism


@pytest.mark.parametrize("bad", B64_SAMPLES)
@pytest.mark.parametrize(
    ("mechanism", "before"),
    [
        ("PLAIN", []),
        ("LOGIN", []),
        ("LOGIN", [b64("tim")]),
        ("CRAM-MD5", []),
        ("XOAUTH2", []),
        ("OAUTHBEARER", []),
    ],
)
def test_AUTH_06_bad_base64_response_line(mechanism: str, before: list[str], bad: str) -> None:
    assert failure(start(mechanism), [*before, bad]) == BAD_BASE64


def test_AUTH_06_reply_bytes() -> None:
    assert failure(start("PLAIN", "=AAA")).to_bytes() == b"501 5.5.2 Cannot decode base64\r\n"


def test_AUTH_06_non_canonical_padding_bits_are_tolerated() -> None:
    # RFC 4648 §3.5 lets decoders accept non-zero pad bits; RFC 4954 only demands the alphabet and "=" rules.
    assert b64("\0u\0p") == "AHUAcA=="
    assert only("PLAIN", "AHUAcB==").password == "p"


# --- AUTH-07: "=" is an empty initial response -----------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"])
def test_AUTH_07_equals_is_empty_not_bad_base64(mechanism: str) -> None:
    # Recognised as empty (so no 501 5.5.2), then the empty message is not valid credentials.
    assert failure(start(mechanism, "=")) == INVALID


@pytest.mark.parametrize("mechanism", ["PLAIN", "XOAUTH2", "OAUTHBEARER"])
def test_AUTH_07_empty_line_after_334_is_an_empty_response(mechanism: str) -> None:
    assert failure(start(mechanism), [""]) == INVALID


def test_equals_is_only_special_as_the_initial_response() -> None:
    # RFC 4954 defines "=" for the initial response only; after a 334 an empty response is an empty line.
    assert failure(start("PLAIN"), ["="]) == BAD_BASE64


# --- AUTH-12: no initial response for the server-first CRAM-MD5 ------------------------------------------------


@pytest.mark.parametrize("initial", ["dGlt", "=", "*", "not base64"])
def test_AUTH_12_cram_md5_initial_response_is_501(initial: str) -> None:
    calls: list[int] = []

    def nonce() -> str:
        calls.append(1)
        return "1.2"

    reply = failure(start("CRAM-MD5", initial, nonce=nonce))
    assert reply == NO_INITIAL
    assert reply.to_bytes() == b"501 5.7.0 CRAM-MD5 takes no initial response\r\n"
    assert calls == []  # no challenge was made up for an exchange that never happens


# --- AUTH-22: no line breaks, NULs or control characters in identities -----------------------------------------


@pytest.mark.parametrize(
    ("mechanism", "initial", "lines"),
    [
        pytest.param("PLAIN", b64(b"\0tim\r\nX\0pw"), [], id="PLAIN-authcid-CRLF"),
        pytest.param("PLAIN", b64(b"\0tim\x1b[2J\0pw"), [], id="PLAIN-authcid-ESC"),
        pytest.param("PLAIN", b64(b"adm\nin\0tim\0pw"), [], id="PLAIN-authzid-LF"),
        pytest.param("PLAIN", b64(b"\0tim\0p\rw"), [], id="PLAIN-password-CR"),
        pytest.param("PLAIN", b64("\0tim\u0085\0pw"), [], id="PLAIN-authcid-NEL"),
        pytest.param("LOGIN", b64(b"tim\r\nX"), [], id="LOGIN-user-CRLF"),
        pytest.param("LOGIN", b64(b"t\0im"), [], id="LOGIN-user-NUL"),
        pytest.param("LOGIN", b64(b"tim"), [b64(b"p\nw")], id="LOGIN-password-LF"),
        pytest.param("LOGIN", b64(b"tim"), [b64(b"p\0w")], id="LOGIN-password-NUL"),
        pytest.param("XOAUTH2", b64(b"user=t\x1bm\x01auth=Bearer T\x01\x01"), [], id="XOAUTH2-ESC"),
        pytest.param("XOAUTH2", b64(b"user=t\rm\x01auth=Bearer T\x01\x01"), [], id="XOAUTH2-CR"),
        pytest.param("OAUTHBEARER", b64(b"n,a=t\nm,\x01auth=Bearer T\x01\x01"), [], id="OB-a-LF"),
        pytest.param("OAUTHBEARER", b64(b"n,a=t\0m,\x01auth=Bearer T\x01\x01"), [], id="OB-a-NUL"),
        pytest.param(
            "OAUTHBEARER",
            b64(b"n,,\x01host=a\r\nb\x01auth=Bearer T\x01\x01"),
            [],
            id="OB-host-CRLF",
        ),
    ],
)
def test_AUTH_22_control_characters_are_535(mechanism: str, initial: str, lines: list[str]) -> None:
    assert failure(start(mechanism, initial), lines) == INVALID


def test_AUTH_22_cram_md5_username_with_cr() -> None:
    digest = "b913a602c7eda7a495b4e6e7334d3890"
    assert failure(start("CRAM-MD5"), [b64(f"t\rim {digest}")]) == INVALID
    assert failure(start("CRAM-MD5"), [b64(f"t\x00im {digest}")]) == INVALID


# --- LOGIN -----------------------------------------------------------------------------------------------------


def test_login_prompts_are_pinned() -> None:
    assert b64("Username:") == "VXNlcm5hbWU6"
    assert b64("Password:") == "UGFzc3dvcmQ6"


def test_login_two_prompts() -> None:
    conv = start("LOGIN")
    assert next(conv) == "VXNlcm5hbWU6"
    assert conv.send(b64("tim")) == "UGFzc3dvcmQ6"
    with pytest.raises(StopIteration) as stop:
        conv.send(b64("tanstaaftanstaaf"))
    request = stop.value.value
    assert request == AuthRequest(mechanism="LOGIN", username="tim", password="tanstaaftanstaaf")
    assert request.verify_password("tanstaaftanstaaf")
    assert not request.verify_password("tanstaaf")


def test_login_initial_response_is_the_username() -> None:
    # smtplib's login() sends "AUTH LOGIN <b64 user>", then the password after "334 UGFzc3dvcmQ6".
    challenges, request = drive(start("LOGIN", "dGlt"), [b64("tanstaaftanstaaf")])
    assert challenges == ["UGFzc3dvcmQ6"]
    assert (request.username, request.password) == ("tim", "tanstaaftanstaaf")


def test_login_utf8_credentials() -> None:
    request = only("LOGIN", b64("jürgen"), [b64("pässwörd€")])
    assert (request.username, request.password) == ("jürgen", "pässwörd€")
    assert request.verify_password("pässwörd€")


def test_login_empty_username_is_535_before_the_password_prompt() -> None:
    conv = start("LOGIN")
    assert next(conv) == "VXNlcm5hbWU6"
    with pytest.raises(SASLError) as info:
        conv.send("")
    assert info.value.reply == INVALID


@pytest.mark.parametrize(
    ("initial", "lines"),
    [
        pytest.param("=", [], id="empty-initial-username"),
        pytest.param(None, [b64("tim"), ""], id="empty-password"),
        pytest.param(None, [b64(b"\xc3"), b64("pw")], id="username-not-utf8"),
        pytest.param(None, [b64("tim"), b64(b"\xff\xfe")], id="password-not-utf8"),
    ],
)
def test_login_invalid_is_535(initial: str | None, lines: list[str]) -> None:
    assert failure(start("LOGIN", initial), lines) == INVALID


# --- CRAM-MD5 --------------------------------------------------------------------------------------------------


def test_cram_md5_rfc2195_vector() -> None:
    conv = start("CRAM-MD5")
    challenge = next(conv)
    assert challenge == RFC2195_CHALLENGE_B64
    assert base64.b64decode(challenge) == b"<1896.697170952@postoffice.reston.mci.net>"
    assert b64("tim b913a602c7eda7a495b4e6e7334d3890") == RFC2195_RESPONSE_B64
    with pytest.raises(StopIteration) as stop:
        conv.send(RFC2195_RESPONSE_B64)
    request = stop.value.value
    assert request == AuthRequest(
        mechanism="CRAM-MD5",
        username="tim",
        challenge="<1896.697170952@postoffice.reston.mci.net>",
        digest="b913a602c7eda7a495b4e6e7334d3890",
    )
    assert request.password is None
    assert request.verify_password("tanstaaftanstaaf")
    assert not request.verify_password("tanstaaftanstaaF")
    assert not request.verify_password("")


def test_cram_md5_nonce_is_drawn_once_and_lazily() -> None:
    nonces = iter(["1.1", "2.2"])
    calls: list[str] = []

    def nonce() -> str:
        calls.append(value := next(nonces))
        return value

    conv = start("CRAM-MD5", nonce=nonce, hostname="mx.example")
    assert calls == []  # nothing happens until the connection steps the generator
    assert base64.b64decode(next(conv)) == b"<1.1@mx.example>"
    assert calls == ["1.1"]


def test_cram_md5_replayed_response_fails_on_a_fresh_challenge() -> None:
    # The answer to the RFC's challenge, replayed against another one, proves nothing.
    challenges, request = drive(start("CRAM-MD5", nonce=lambda: "1897.1"), [RFC2195_RESPONSE_B64])
    assert base64.b64decode(challenges[0]) == b"<1897.1@postoffice.reston.mci.net>"
    assert request.username == "tim"
    assert not request.verify_password("tanstaaftanstaaf")


def test_cram_md5_username_may_contain_spaces() -> None:
    digest = "0" * 32
    request = drive(start("CRAM-MD5"), [b64(f"Tim Berners {digest}")])[1]
    assert (request.username, request.digest) == ("Tim Berners", digest)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"tim B913A602C7EDA7A495B4E6E7334D3890", id="uppercase-hex"),
        pytest.param(b"timb913a602c7eda7a495b4e6e7334d3890", id="missing-space"),
        pytest.param(b"tim b913a602c7eda7a495b4e6e7334d389", id="31-digits"),
        pytest.param(b"tim b913a602c7eda7a495b4e6e7334d38900", id="33-digits"),
        pytest.param(b"tim b913a602c7eda7a495b4e6e7334d389g", id="not-hex"),
        pytest.param(b" b913a602c7eda7a495b4e6e7334d3890", id="empty-user"),
        pytest.param(b"tim b913a602c7eda7a495b4e6e7334d3890 ", id="trailing-space"),
        pytest.param(b"", id="empty"),
        pytest.param(b"t\xffm b913a602c7eda7a495b4e6e7334d3890", id="not-utf8"),
    ],
)
def test_cram_md5_malformed_answer_is_535(answer: bytes) -> None:
    assert failure(start("CRAM-MD5"), [b64(answer)]) == INVALID


def test_cram_md5_empty_line_is_535() -> None:
    assert failure(start("CRAM-MD5"), [""]) == INVALID


# --- XOAUTH2 ---------------------------------------------------------------------------------------------------


def test_xoauth2_curl_vector() -> None:
    assert b64(b"user=u\x01auth=Bearer TOKEN123\x01\x01") == XOAUTH2_CURL
    challenges, request = drive(start("XOAUTH2", XOAUTH2_CURL), [])
    assert challenges == []
    assert request == AuthRequest(mechanism="XOAUTH2", username="u", token="TOKEN123")
    assert not request.verify_password("TOKEN123")


def test_xoauth2_two_step() -> None:
    conv = start("XOAUTH2")
    assert next(conv) == ""
    message = b64(
        b"user=someuser@example.com\x01auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\x01\x01"
    )
    with pytest.raises(StopIteration) as stop:
        conv.send(message)
    request = stop.value.value
    assert request.username == "someuser@example.com"
    assert request.token == "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"


@pytest.mark.parametrize(
    ("message", "token"),
    [
        pytest.param(b"user=u\x01auth=bearer tok\x01\x01", "tok", id="scheme-lowercase"),
        pytest.param(b"user=u\x01auth=BEARER  a-b._~+/c==\x01\x01", "a-b._~+/c==", id="b64token"),
        pytest.param(b"auth=Bearer tok\x01user=u\x01\x01", "tok", id="any-order"),
        pytest.param(b"user=u\x01extra=x y\x01auth=Bearer tok\x01\x01", "tok", id="unknown-key"),
    ],
)
def test_xoauth2_accepted_variants(message: bytes, token: str) -> None:
    request = only("XOAUTH2", b64(message))
    assert (request.username, request.token) == ("u", token)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"auth=Bearer T\x01\x01", id="missing-user"),
        pytest.param(b"user=u\x01\x01", id="missing-auth"),
        pytest.param(b"user=\x01auth=Bearer T\x01\x01", id="empty-user"),
        pytest.param(b"user=u\x01auth=Bearer T\x01", id="one-final-ctrl-a"),
        pytest.param(b"user=u\x01auth=Bearer T", id="no-final-ctrl-a"),
        pytest.param(b"user=u\x01auth=Bearer T\x01\x01\x01", id="three-final-ctrl-a"),
        pytest.param(b"user=u\x01\x01auth=Bearer T\x01\x01", id="empty-pair"),
        pytest.param(b"user=u\x01auth=Bearer T\x01auth=Bearer U\x01\x01", id="duplicate-auth"),
        pytest.param(b"user=u\x01authBearer T\x01\x01", id="pair-without-equals"),
        pytest.param(b"user=u\x01=x\x01auth=Bearer T\x01\x01", id="empty-key"),
        pytest.param(b"user=u\x01auth=Basic dTpw\x01\x01", id="basic-scheme"),
        pytest.param(b"user=u\x01auth=Bearer\x01\x01", id="no-token"),
        pytest.param(b"user=u\x01auth=Bearer \x01\x01", id="empty-token"),
        pytest.param(b"user=u\x01auth=BearerT\x01\x01", id="no-space"),
        pytest.param(b"user=u\x01auth=Bearer a b\x01\x01", id="token-with-space"),
        pytest.param(b"user=u\x01auth=Bearer a=b\x01\x01", id="equals-inside-token"),
        pytest.param(b"user=u\xff\x01auth=Bearer T\x01\x01", id="not-utf8"),
        pytest.param(b"\x01", id="bare-ctrl-a"),
    ],
)
def test_xoauth2_malformed_is_535(message: bytes) -> None:
    assert failure(start("XOAUTH2", b64(message))) == INVALID
    assert failure(start("XOAUTH2"), [b64(message)]) == INVALID


# --- OAUTHBEARER -----------------------------------------------------------------------------------------------


def test_oauthbearer_curl_vector() -> None:
    challenges, request = drive(start("OAUTHBEARER", b64(OAUTHBEARER_CURL)), [])
    assert challenges == []
    assert request == AuthRequest(
        mechanism="OAUTHBEARER", username="u", token="TOKEN123", host="127.0.0.1", port=2540
    )
    assert request.authzid is None
    assert not request.verify_password("TOKEN123")


def test_oauthbearer_two_step_rfc7628_example() -> None:
    conv = start("OAUTHBEARER")
    assert next(conv) == ""
    message = (
        b"n,a=user@example.com,\x01host=server.example.com\x01port=587\x01"
        b"auth=Bearer vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg==\x01\x01"
    )
    with pytest.raises(StopIteration) as stop:
        conv.send(b64(message))
    request = stop.value.value
    assert (request.username, request.host, request.port) == (
        "user@example.com",
        "server.example.com",
        587,
    )
    assert request.token == "vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg=="


@pytest.mark.parametrize(
    ("message", "username", "host", "port"),
    [
        pytest.param(b"n,,\x01auth=Bearer T\x01\x01", "", None, None, id="no-authzid"),
        pytest.param(b"y,,\x01auth=Bearer T\x01\x01", "", None, None, id="flag-y"),
        pytest.param(b"n,a=u,\x01auth=bearer T\x01\x01", "u", None, None, id="scheme-lowercase"),
        pytest.param(b"n,a=u=2Cv=3Dw,\x01auth=Bearer T\x01\x01", "u,v=w", None, None, id="escapes"),
        pytest.param(b"n,a==3D2C,\x01auth=Bearer T\x01\x01", "=2C", None, None, id="escape-order"),
        pytest.param(
            b"n,a=u,\x01x=a\r\nb\x01auth=Bearer T\x01mfa=1\x01\x01", "u", None, None, id="unknown"
        ),
        pytest.param(b"n,,\x01port=0\x01auth=Bearer T\x01\x01", "", None, 0, id="port-0"),
        pytest.param(b"n,,\x01port=65535\x01auth=Bearer T\x01\x01", "", None, 65535, id="port-max"),
        pytest.param(b"n,,\x01host=\x01auth=Bearer T\x01\x01", "", "", None, id="empty-host"),
        pytest.param(
            "n,a=jürgen,\x01host=bücher.example\x01auth=Bearer T\x01\x01".encode(),
            "jürgen",
            "bücher.example",
            None,
            id="utf8",
        ),
    ],
)
def test_oauthbearer_accepted_variants(
    message: bytes, username: str, host: str | None, port: int | None
) -> None:
    request = only("OAUTHBEARER", b64(message))
    assert (request.username, request.token, request.host, request.port) == (
        username,
        "T",
        host,
        port,
    )


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(b"\x01", id="bare-ctrl-a-first"),
        pytest.param(b"p=tls-unique,,\x01auth=Bearer T\x01\x01", id="channel-binding-p"),
        pytest.param(b"x,,\x01auth=Bearer T\x01\x01", id="unknown-flag"),
        pytest.param(b",,\x01auth=Bearer T\x01\x01", id="empty-flag"),
        pytest.param(b"n,\x01auth=Bearer T\x01\x01", id="one-comma"),
        pytest.param(b"n,,auth=Bearer T\x01\x01", id="no-ctrl-a-after-gs2"),
        pytest.param(b"n,u,\x01auth=Bearer T\x01\x01", id="authzid-without-a="),
        pytest.param(b"n,a=,\x01auth=Bearer T\x01\x01", id="empty-saslname"),
        pytest.param(b"n,a=u=41,\x01auth=Bearer T\x01\x01", id="bad-escape"),
        pytest.param(b"n,a=u=,\x01auth=Bearer T\x01\x01", id="dangling-equals"),
        pytest.param(b"n,a=u,\x01host=h\x01\x01", id="missing-auth"),
        pytest.param(b"n,a=u,\x01auth=Basic dTpw\x01\x01", id="basic-scheme"),
        pytest.param(b"n,a=u,\x01auth=Bearer T\x01", id="one-final-ctrl-a"),
        pytest.param(b"n,a=u,\x01\x01", id="no-pairs"),
        pytest.param(b"n,a=u,\x01auth=Bearer T\x01auth=Bearer U\x01\x01", id="duplicate-auth"),
        pytest.param(b"n,a=u,\x01port=x\x01auth=Bearer T\x01\x01", id="port-not-digits"),
        pytest.param(b"n,a=u,\x01port=\x01auth=Bearer T\x01\x01", id="port-empty"),
        pytest.param(b"n,a=u,\x01port=65536\x01auth=Bearer T\x01\x01", id="port-too-big"),
        pytest.param(b"n,a=u,\x01port=123456\x01auth=Bearer T\x01\x01", id="port-six-digits"),
        pytest.param(b"n,a=u,\x01port=-1\x01auth=Bearer T\x01\x01", id="port-negative"),
        pytest.param("n,,\x01port=٣\x01auth=Bearer T\x01\x01".encode(), id="port-arabic-digit"),
        pytest.param(b"n,a=u,\x01host=h\x1bx\x01auth=Bearer T\x01\x01", id="host-ESC"),
        pytest.param(b"n,a=u,\x01a-b=1\x01auth=Bearer T\x01\x01", id="key-not-alpha"),
        pytest.param(b"n,a=u,\x01x=\x00\x01auth=Bearer T\x01\x01", id="NUL-in-value"),
        pytest.param(b"n,a=\xff,\x01auth=Bearer T\x01\x01", id="not-utf8"),
    ],
)
def test_oauthbearer_malformed_is_535(message: bytes) -> None:
    assert failure(start("OAUTHBEARER", b64(message))) == INVALID
    assert failure(start("OAUTHBEARER"), [b64(message)]) == INVALID


def test_oauthbearer_bare_ctrl_a_first_is_AQ() -> None:
    assert b64(b"\x01") == "AQ=="
    assert failure(start("OAUTHBEARER", "AQ==")) == INVALID


# --- failure challenge for the token mechanisms ----------------------------------------------------------------


def decode_json(challenge: str | None) -> object:
    assert challenge is not None
    return json.loads(base64.b64decode(challenge, validate=True))


def test_failure_challenge_xoauth2() -> None:
    challenge = failure_challenge("XOAUTH2")
    assert decode_json(challenge) == {"status": "401", "schemes": "bearer"}
    # Keys sorted, no spaces: the bytes are fixed.
    assert challenge == b64('{"schemes":"bearer","status":"401"}')
    with_scope = failure_challenge("XOAUTH2", "401", "https://mail.google.com/")
    assert with_scope == b64(
        '{"schemes":"bearer","scope":"https://mail.google.com/","status":"401"}'
    )


def test_failure_challenge_oauthbearer() -> None:
    assert decode_json(failure_challenge("OAUTHBEARER")) == {
        "status": "invalid_token",
        "schemes": "bearer",
    }
    challenge = failure_challenge("OAUTHBEARER", status="invalid_token", scope="mail")
    assert challenge == b64('{"schemes":"bearer","scope":"mail","status":"invalid_token"}')
    assert decode_json(failure_challenge("OAUTHBEARER", "403")) == {
        "status": "403",
        "schemes": "bearer",
    }


def test_failure_challenge_escapes_json() -> None:
    challenge = failure_challenge("XOAUTH2", 'a"b', "sc\u00f6pe")
    assert decode_json(challenge) == {"status": 'a"b', "schemes": "bearer", "scope": "sc\u00f6pe"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "FOO"])
def test_failure_challenge_none_for_other_mechanisms(mechanism: str) -> None:
    assert failure_challenge(mechanism) is None
    assert not failure_response_ok(mechanism, "")
    assert not failure_response_ok(mechanism, "AQ==")


@pytest.mark.parametrize(
    ("mechanism", "line", "ok"),
    [
        ("XOAUTH2", "", True),
        ("XOAUTH2", "AQ==", False),
        ("XOAUTH2", "*", False),
        ("XOAUTH2", "=", False),
        ("XOAUTH2", " ", False),
        ("OAUTHBEARER", "AQ==", True),
        ("OAUTHBEARER", "", False),
        ("OAUTHBEARER", "AQ", False),
        ("OAUTHBEARER", "*", False),
        ("OAUTHBEARER", "AR==", False),
    ],
)
def test_failure_response_ok(mechanism: str, line: str, ok: bool) -> None:
    assert failure_response_ok(mechanism, line) is ok


# --- properties ------------------------------------------------------------------------------------------------

# Pieces that steer random messages into the deeper branches of every parser.
FRAGMENTS = st.sampled_from(
    [b"\x00", b"\x01", b",", b"=", b" ", b"n,", b"a=", b"user=", b"auth=", b"Bearer ", b"host=",
     b"port=", b"9", b"tim", b"b913a602c7eda7a495b4e6e7334d3890", b"\r\n", b"\xff", "é".encode()]
)  # fmt: skip
PAYLOADS = st.lists(FRAGMENTS | st.binary(max_size=6), max_size=10).map(b"".join)
LINES = st.one_of(st.text(max_size=40), PAYLOADS.map(b64), st.sampled_from(["*", "=", ""]))


@given(
    mechanism=st.sampled_from(sorted(MECHANISMS)),
    initial=st.none() | LINES,
    lines=st.lists(LINES, max_size=4),
    nonce=st.text(max_size=10),
    hostname=st.text(max_size=10),
)
def test_property_every_step_yields_returns_or_raises_sasl_error(
    mechanism: str, initial: str | None, lines: list[str], nonce: str, hostname: str
) -> None:
    conv = conversation(mechanism, initial, hostname=hostname, nonce=lambda: nonce)
    feed = iter(lines)
    outcome: object = None
    try:
        step = next(conv)
        while True:
            assert isinstance(step, str)
            step.encode("ascii")  # a base64 challenge, safe to put after "334 "
            line = next(feed, None)
            if line is None:
                return  # still waiting for the client: a legal state
            step = conv.send(line)
    except StopIteration as stop:
        outcome = stop.value
    except SASLError as error:
        outcome = error
    if isinstance(outcome, SASLError):
        assert outcome.reply.code in (501, 535)
        return
    assert isinstance(outcome, AuthRequest)
    assert outcome.mechanism == mechanism
    for value in (outcome.username, outcome.authzid, outcome.host):
        assert value is None or not any(c in value for c in "\x00\r\n")
    for secret in (outcome.password, outcome.token):
        assert secret is None or not any(c in secret for c in "\x00\r\n")


def utf8_at_most(octets: int) -> Callable[[str], str]:
    def cut(text: str) -> str:
        return text.encode("utf-8")[:octets].decode("utf-8", "ignore")

    return cut


PRINTABLE = st.characters(exclude_categories=("Cc", "Cs", "Co", "Cn", "Zl", "Zp", "Cf"))
FIELD = st.text(PRINTABLE, max_size=255).map(utf8_at_most(255))


@given(authzid=FIELD, user=FIELD.filter(bool), password=FIELD.filter(bool), two_step=st.booleans())
def test_property_plain_round_trip(authzid: str, user: str, password: str, two_step: bool) -> None:
    message = b64(f"{authzid}\0{user}\0{password}")
    conv = start("PLAIN", None if two_step else message)
    challenges, request = drive(conv, [message] if two_step else [])
    assert challenges == ([""] if two_step else [])
    assert (request.authzid, request.username, request.password) == (
        authzid or None,
        user,
        password,
    )
    assert request.verify_password(password)
    assert not request.verify_password(password + "x")


# HMAC zero-pads short keys, so "pw" and "pw\0" are the same key (test below); passwords hold no NUL anyway.
SECRET = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=64)


@given(
    secret=SECRET,
    other=SECRET,
    user=st.text(PRINTABLE, min_size=1, max_size=20),
    nonce=st.from_regex(r"[0-9]{1,10}\.[0-9]{1,10}", fullmatch=True),
)
def test_property_cram_md5_verifies_exactly_the_right_secret(
    secret: str, other: str, user: str, nonce: str
) -> None:
    conv = start("CRAM-MD5", nonce=lambda: nonce, hostname="mx.example")
    challenge = base64.b64decode(next(conv)).decode()
    assert challenge == f"<{nonce}@mx.example>"
    digest = hmac.new(secret.encode(), challenge.encode(), hashlib.md5).hexdigest()
    with pytest.raises(StopIteration) as stop:
        conv.send(b64(f"{user} {digest}"))
    request = stop.value.value
    assert (request.username, request.digest, request.challenge) == (user, digest, challenge)
    assert request.verify_password(secret)
    assert request.verify_password(other) is (other == secret)


@given(secret=SECRET, other=SECRET)
def test_property_cram_md5_rejects_any_other_secret(secret: str, other: str) -> None:
    assume(other != secret)
    challenge = "<1.2@mx.example>"
    digest = hmac.new(secret.encode(), challenge.encode(), hashlib.md5).hexdigest()
    request = AuthRequest(mechanism="CRAM-MD5", username="u", challenge=challenge, digest=digest)
    assert request.verify_password(secret)
    assert not request.verify_password(other)


def test_cram_md5_hmac_key_padding_is_inherent() -> None:
    # RFC 2104 pads the key with zeros to the block size: a secret and the same secret followed by NULs give
    # the same digest. Only someone who knows the secret can exploit that, and no password holds a NUL.
    challenge = "<1.2@mx.example>"
    digest = hmac.new(b"pw", challenge.encode(), hashlib.md5).hexdigest()
    request = AuthRequest(mechanism="CRAM-MD5", username="u", challenge=challenge, digest=digest)
    assert request.verify_password("pw")
    assert request.verify_password("pw\0")
    assert not request.verify_password("pw ")
