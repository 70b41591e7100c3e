"""SASL mechanisms for RFC 4954 AUTH, each one a small synchronous generator.

A mechanism is a :data:`Conversation`: it yields the base64 payload of each ``334`` challenge, receives the
client's next line, and finally returns an :class:`AuthRequest` for the application to decide on, or raises
:class:`SASLError` carrying the reply the connection must send instead. The module never does I/O, never reads a
clock and never draws randomness: the CRAM-MD5 challenge's unique part comes from an injected ``nonce``.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TypeAlias

from ._replies import Reply

__all__ = [
    "MECHANISMS",
    "PLAINTEXT_MECHANISMS",
    "AuthRequest",
    "Conversation",
    "SASLError",
    "conversation",
    "failure_challenge",
    "failure_response_ok",
]

#: Every mechanism :func:`conversation` implements.
MECHANISMS: frozenset[str] = frozenset({"PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"})
#: Mechanisms that put a password or bearer token on the wire: RFC 4954 §4 wants a configuration that refuses
#: them without TLS.
PLAINTEXT_MECHANISMS: frozenset[str] = MECHANISMS - {"CRAM-MD5"}

_ABORTED = Reply(501, "Authentication aborted", "5.7.0")
_BAD_BASE64 = Reply(501, "Cannot decode base64", "5.5.2")
_INVALID = Reply(535, "Authentication credentials invalid", "5.7.8")
_NO_INITIAL_RESPONSE = Reply(501, "CRAM-MD5 takes no initial response", "5.7.0")

# base64("Username:") and base64("Password:"): clients ignore the prompt text, and this is the form deployed
# servers send.
_LOGIN_USER_PROMPT = "VXNlcm5hbWU6"
_LOGIN_PASSWORD_PROMPT = "UGFzc3dvcmQ6"

# Identities end up in logs and hooks, so they get no control characters at all (an ESC could rewrite a
# terminal); secrets are only refused the characters that could split a line or a C string.
_IDENTITY_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SECRET_FORBIDDEN = re.compile(r"[\x00\r\n]")
_HEX_DIGEST = re.compile(r"[0-9a-f]{32}")
# RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token; the scheme name is case-insensitive (RFC 7628 §3.1).
_BEARER = re.compile(r"[Bb][Ee][Aa][Rr][Ee][Rr] +([A-Za-z0-9._~+/-]+=*)")
_KEY = re.compile(r"[A-Za-z]+")  # RFC 7628 §3.1: key = 1*(ALPHA)
_SASLNAME = re.compile(r"(?:[^=,]|=2C|=3D)+")  # RFC 5801 §4: "," and "=" travel as =2C and =3D
_PORT = re.compile(r"[0-9]{1,5}")
_NUL = re.compile(r"\x00")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthRequest:
    """Event: the client finished a SASL exchange; the application decides (accept → 235, reject → 535).

    Only the fields of the ``mechanism`` used are set. Secrets are left out of ``repr`` so that logging the
    event does not log the password or token.
    """

    mechanism: str
    #: PLAIN authcid, LOGIN user, CRAM-MD5 user, XOAUTH2 ``user=``, OAUTHBEARER GS2 ``a=`` (``""`` if absent).
    username: str
    #: PLAIN and LOGIN: the password in clear.
    password: str | None = field(default=None, repr=False)
    #: PLAIN: the authorisation identity, when the client gave a non-empty one.
    authzid: str | None = None
    #: CRAM-MD5: the challenge text that was sent (not base64), e.g. ``"<1896.697170952@host>"``.
    challenge: str | None = None
    #: CRAM-MD5: the client's HMAC-MD5, 32 lowercase hex digits.
    digest: str | None = field(default=None, repr=False)
    #: XOAUTH2 and OAUTHBEARER: the bearer token.
    token: str | None = field(default=None, repr=False)
    #: OAUTHBEARER ``host=``; RFC 7628 §3.2 wants it rejected when it contradicts the server's own name.
    host: str | None = None
    #: OAUTHBEARER ``port=``.
    port: int | None = None

    def verify_password(self, secret: str) -> bool:
        """Whether ``secret`` is the password that this exchange proves, compared in constant time.

        PLAIN and LOGIN compare the password; CRAM-MD5 recomputes HMAC-MD5(secret, challenge). Always False for
        the token mechanisms, which carry no password. No SASLprep is applied: strings compare as UTF-8.
        """
        if self.password is not None:
            return hmac.compare_digest(self.password.encode("utf-8"), secret.encode("utf-8"))
        if self.challenge is not None and self.digest is not None:
            key, message = secret.encode("utf-8"), self.challenge.encode("utf-8")
            expected = hmac.new(key, message, hashlib.md5).hexdigest()
            return hmac.compare_digest(expected.encode("ascii"), self.digest.encode("utf-8"))
        return False


class SASLError(Exception):
    """The exchange failed before reaching the application; :attr:`reply` is what to send (e.g. 501 5.5.2)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.code, reply.text)
        #: The reply that ends the AUTH command.
        self.reply = reply


#: Yields challenge payloads (already base64, ``""`` for an empty challenge), receives the client's lines
#: (without CRLF), returns the :class:`AuthRequest`.
Conversation: TypeAlias = Generator[str, str, AuthRequest]


def conversation(
    mechanism: str, initial_response: str | None, *, hostname: str, nonce: Callable[[], str]
) -> Conversation:
    """Start the exchange for ``mechanism`` (upper case, one of :data:`MECHANISMS`).

    ``initial_response`` is the text after the mechanism on the AUTH line (None if absent; ``"="`` means an
    empty initial response). Each ``yield`` hands the connection the text to send after ``334 ``; the
    connection sends back the client's next line. The generator returns the :class:`AuthRequest` (as
    ``StopIteration.value``) or raises :class:`SASLError`. Nothing happens until the first ``next()``, so every
    protocol failure, and the call to ``nonce``, comes from a generator step.

    Raises ValueError at once for a mechanism this module does not implement: that is a programming error,
    the connection answers 504 before getting here.
    """
    if mechanism == "PLAIN":
        return _plain(initial_response)
    if mechanism == "LOGIN":
        return _login(initial_response)
    if mechanism == "CRAM-MD5":
        return _cram_md5(initial_response, hostname, nonce)
    if mechanism == "XOAUTH2":
        return _xoauth2(initial_response)
    if mechanism == "OAUTHBEARER":
        return _oauthbearer(initial_response)
    raise ValueError(f"unsupported SASL mechanism: {mechanism!r}")


def failure_challenge(
    mechanism: str, status: str | None = None, scope: str | None = None
) -> str | None:
    """The base64 JSON error challenge for a rejected XOAUTH2 / OAUTHBEARER token; None for other mechanisms.

    The client answers it with an empty line (XOAUTH2) or a single ``\\x01`` (OAUTHBEARER, ``AQ==``), see
    :func:`failure_response_ok`, and the server then ends with 535. ``status`` defaults to ``"401"`` for
    XOAUTH2 (Google's example) and ``"invalid_token"`` for OAUTHBEARER (RFC 7628 §3.2.2 takes an OAuth error
    code there). ``scope`` is included only when given. Keys are sorted, so the output is deterministic.
    """
    if mechanism == "XOAUTH2":
        error = {"status": "401" if status is None else status, "schemes": "bearer"}
    elif mechanism == "OAUTHBEARER":
        error = {"status": "invalid_token" if status is None else status, "schemes": "bearer"}
    else:
        return None
    if scope is not None:
        error["scope"] = scope
    text = json.dumps(error, sort_keys=True, separators=(",", ":"))
    return binascii.b2a_base64(text.encode("ascii"), newline=False).decode("ascii")


def failure_response_ok(mechanism: str, line: str) -> bool:
    """Whether ``line`` is the expected answer to :func:`failure_challenge` (``""`` / ``"AQ=="``)."""
    if mechanism == "XOAUTH2":
        return line == ""
    if mechanism == "OAUTHBEARER":
        return line == "AQ=="
    return False


# --- building blocks -------------------------------------------------------------------------------------------


def _decode(line: str) -> bytes:
    """Strict base64 (RFC 4954 §4): the alphabet only, correct padding, ``=`` only at the end."""
    if line == "*":
        raise SASLError(_ABORTED)
    try:
        return binascii.a2b_base64(line, strict_mode=True)
    except ValueError:  # binascii.Error, and the ValueError for a non-ASCII str
        raise SASLError(_BAD_BASE64) from None


def _response(initial_response: str | None, challenge: str) -> Generator[str, str, bytes]:
    """The client's first response: the initial response if there is one, else the answer to ``challenge``."""
    if initial_response is None:
        return _decode((yield challenge))
    if initial_response == "=":  # RFC 4954 §4: how a zero-length initial response is sent
        return b""
    return _decode(initial_response)


def _text(data: bytes, forbidden: re.Pattern[str] = _SECRET_FORBIDDEN) -> str:
    """Decoded octets as UTF-8 text with none of the ``forbidden`` characters, or 535."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SASLError(_INVALID) from None
    _check(text, forbidden)
    return text


def _check(text: str, forbidden: re.Pattern[str]) -> str:
    if forbidden.search(text):
        raise SASLError(_INVALID)
    return text


def _kvpairs(text: str) -> dict[str, str]:
    """``*(key "=" value kvsep) kvsep`` (RFC 7628 §3.1, also XOAUTH2's framing) as a dict; a repeated key is
    refused rather than guessing which one the client meant."""
    if not text.endswith("\x01\x01"):
        raise SASLError(_INVALID)
    pairs: dict[str, str] = {}
    for item in text[:-2].split("\x01"):
        key, sep, value = item.partition("=")
        if not sep or not _KEY.fullmatch(key) or key in pairs:
            raise SASLError(_INVALID)
        pairs[key] = value
    return pairs


def _bearer_token(pairs: dict[str, str]) -> str:
    match = _BEARER.fullmatch(pairs.get("auth", ""))
    if match is None:
        raise SASLError(_INVALID)
    return match.group(1)


# --- the mechanisms --------------------------------------------------------------------------------------------


def _plain(initial_response: str | None) -> Conversation:
    """RFC 4616: ``[authzid] NUL authcid NUL passwd``, authcid and passwd non-empty."""
    fields = (yield from _response(initial_response, "")).split(b"\x00")
    if len(fields) != 3 or not fields[1] or not fields[2]:
        raise SASLError(_INVALID)
    authzid = _text(fields[0], _IDENTITY_FORBIDDEN)
    return AuthRequest(
        mechanism="PLAIN",
        username=_text(fields[1], _IDENTITY_FORBIDDEN),
        password=_text(fields[2]),
        authzid=authzid or None,
    )


def _login(initial_response: str | None) -> Conversation:
    """draft-murchison-sasl-login; an initial response is the username (what smtplib sends)."""
    username = _text(
        (yield from _response(initial_response, _LOGIN_USER_PROMPT)), _IDENTITY_FORBIDDEN
    )
    if not username:  # nothing to look up: fail now rather than ask for a password
        raise SASLError(_INVALID)
    password = _text(_decode((yield _LOGIN_PASSWORD_PROMPT)))
    if not password:  # RFC 4616 forbids an empty PLAIN password; LOGIN gets the same rule
        raise SASLError(_INVALID)
    return AuthRequest(mechanism="LOGIN", username=username, password=password)


def _cram_md5(
    initial_response: str | None, hostname: str, nonce: Callable[[], str]
) -> Conversation:
    """RFC 2195: a ``<unique@host>`` challenge, answered by ``user SP hex(HMAC-MD5(secret, challenge))``."""
    if initial_response is not None:  # RFC 4954 §4: the server speaks first in this mechanism
        raise SASLError(_NO_INITIAL_RESPONSE)
    challenge = f"<{nonce()}@{hostname}>"
    encoded = binascii.b2a_base64(challenge.encode("utf-8"), newline=False).decode("ascii")
    answer = _text(_decode((yield encoded)))
    # The digest has a fixed shape, so the last space splits even a username that contains spaces.
    username, sep, digest = answer.rpartition(" ")
    if not sep or not username or not _HEX_DIGEST.fullmatch(digest):
        raise SASLError(_INVALID)
    _check(username, _IDENTITY_FORBIDDEN)
    return AuthRequest(mechanism="CRAM-MD5", username=username, challenge=challenge, digest=digest)


def _xoauth2(initial_response: str | None) -> Conversation:
    """Google's XOAUTH2: ``user={User} ^A auth=Bearer {Token} ^A ^A``; unknown keys are ignored."""
    pairs = _kvpairs(_text((yield from _response(initial_response, ""))))
    username = _check(pairs.get("user", ""), _IDENTITY_FORBIDDEN)
    if not username:
        raise SASLError(_INVALID)
    return AuthRequest(mechanism="XOAUTH2", username=username, token=_bearer_token(pairs))


def _oauthbearer(initial_response: str | None) -> Conversation:
    """RFC 7628: a GS2 header (``n,a=user,``), then ``^A``-separated key=value pairs ending ``^A ^A``."""
    # RFC 7628 §3.1 lets values carry CR and LF; the fields kept are checked one by one below.
    text = _text((yield from _response(initial_response, "")), _NUL)
    parts = text.split(",", 2)
    # Channel binding: "n" (client does not support it) and "y" (thinks the server does not) are fine, since
    # this mechanism is never advertised with "-PLUS"; "p=" asks for binding that OAUTHBEARER cannot do.
    if len(parts) != 3 or parts[0] not in ("n", "y") or not parts[2].startswith("\x01"):
        raise SASLError(_INVALID)
    username = ""
    if parts[1]:
        if not parts[1].startswith("a=") or not _SASLNAME.fullmatch(parts[1][2:]):
            raise SASLError(_INVALID)
        username = parts[1][2:].replace("=2C", ",").replace("=3D", "=")
    _check(username, _IDENTITY_FORBIDDEN)
    pairs = _kvpairs(parts[2][1:])
    token = _bearer_token(pairs)
    host = pairs.get("host")
    if host is not None:
        _check(host, _IDENTITY_FORBIDDEN)
    port = pairs.get("port")
    if port is not None and (not _PORT.fullmatch(port) or int(port) > 65535):
        raise SASLError(_INVALID)
    return AuthRequest(
        mechanism="OAUTHBEARER",
        username=username,
        token=token,
        host=host,
        port=None if port is None else int(port),
    )
