"""ServerConfig: everything that shapes a session's behaviour, fixed for the life of a connection."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from ._sasl import MECHANISMS

__all__ = ["LineEndings", "ServerConfig"]


class LineEndings(enum.Enum):
    """What to do with a bare CR or bare LF, in command lines and in message data.

    Bare line endings are how SMTP smuggling works: two servers that disagree on where a line (and so the
    message) ends can be made to see a second, forged message.
    """

    #: Only CRLF ends a line. A command line with a bare CR or LF gets ``500 5.5.2``; a message with one is read
    #: to its real ``CRLF.CRLF`` terminator and then refused with ``550 5.5.2``.
    REJECT = "reject"
    #: A bare LF or CR in message data is turned into CRLF; a bare LF also ends a command line (a bare CR
    #: stays part of it). Only ``CRLF.CRLF`` ends DATA.
    NORMALIZE = "normalize"
    #: Bare CR and LF pass through as message content (a bare LF also ends a command line). Only ``CRLF.CRLF``
    #: ends DATA. This is what most servers do, and it hands the ambiguity on to whoever relays the message.
    ALLOW = "allow"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """The configuration of one server session. Immutable; share one instance between connections."""

    #: The name the server gives in its greeting and EHLO reply.
    hostname: str = "localhost"
    #: Extra text after ``ESMTP`` (or ``LMTP``) in the greeting.
    banner: str = ""
    #: Speak LMTP (RFC 2033): LHLO instead of HELO/EHLO, one reply per recipient after DATA.
    lmtp: bool = False
    #: Greet with ``554`` and refuse every command but QUIT (RFC 5321 §3.1).
    refuse_service: bool = False

    #: Largest message accepted, in octets after dot-unstuffing; ``None`` for no limit.
    max_message_size: int | None = None
    #: Longest command line, in octets with its CRLF (RFC 5321 allows 512; extensions add to it).
    max_command_line: int = 2048
    #: Most recipients per message; further RCPTs get ``452 4.5.3`` (RFC 5321 demands at least 100).
    max_recipients: int = 100
    #: Client errors (unknown commands, syntax and sequence errors) before ``421 4.7.0`` and close.
    max_errors: int = 20
    #: Commands allowed before authenticating when ``auth_required``; then ``421 4.7.0`` and close.
    max_unauthenticated_commands: int = 10
    #: How bare CR and LF are handled in commands and data.
    line_endings: LineEndings = LineEndings.REJECT

    #: STARTTLS may be offered: the driver holds a TLS context (RFC 3207).
    tls_available: bool = False
    #: The session starts inside TLS (implicit TLS, the port-465 style of RFC 8314).
    secure: bool = False
    #: Accept STARTTLS but leave it out of the EHLO reply.
    hide_starttls: bool = False
    #: Leave REQUIRETLS (RFC 8689) out of the EHLO reply on TLS sessions.
    hide_requiretls: bool = False

    #: SASL mechanisms offered, in the order advertised; empty means no AUTH at all.
    auth_methods: tuple[str, ...] = ("PLAIN", "LOGIN")
    #: MAIL, RCPT, DATA and VRFY need a successful AUTH first (``530 5.7.0``).
    auth_required: bool = False
    #: Offer and accept AUTH without TLS (otherwise AUTH is not advertised and gets ``538 5.7.11``).
    allow_insecure_auth: bool = False
    #: Failed AUTH attempts answered ``535`` before the next failure ends the session with ``421 4.7.0``.
    max_auth_failures: int = 3
    #: Longest SASL response line in octets (RFC 4954 §4 calls 12,288 sufficient); over it: ``500 5.5.6``.
    max_auth_line: int = 12288
    #: Returns a fresh unique string (e.g. ``"1896.697170952"``) for CRAM-MD5 challenges. The core never
    #: reads a clock or a random source itself; required when CRAM-MD5 is offered.
    nonce_factory: Callable[[], str] | None = field(default=None, repr=False)

    #: Expect a PROXY protocol v1/v2 header before the greeting (behind HAProxy and friends).
    use_proxy: bool = False
    #: Offer Postfix's XCLIENT to this peer (only for trusted proxies).
    use_xclient: bool = False
    #: Offer Postfix's XFORWARD to this peer (only for trusted content filters).
    use_xforward: bool = False

    #: Commands (upper case) answered as unknown and dropped from the EHLO reply, e.g. ``{"VRFY"}``.
    disabled_commands: frozenset[str] = frozenset()
    hide_pipelining: bool = False
    hide_8bitmime: bool = False
    hide_smtputf8: bool = False
    hide_enhanced_status_codes: bool = False
    hide_dsn: bool = False
    #: Advertise ``SIZE`` without a number (the declared SIZE is then not checked at MAIL).
    hide_size: bool = False

    def __post_init__(self) -> None:
        if self.max_command_line < 512:
            raise ValueError("max_command_line must be at least 512 (RFC 5321 §4.5.3.1.4)")
        if self.max_message_size is not None and self.max_message_size < 1:
            # RFC 1870 §4: "SIZE 0" in the EHLO reply means no limit at all, so 0 cannot mean "nothing".
            raise ValueError("max_message_size must be >= 1, or None for no limit")
        if self.max_recipients < 1 or self.max_errors < 1 or self.max_unauthenticated_commands < 1:
            raise ValueError("limits must be at least 1")
        unknown = set(self.auth_methods) - MECHANISMS
        if unknown:
            raise ValueError(
                f"unknown SASL mechanisms {sorted(unknown)}; known: {sorted(MECHANISMS)}"
            )
        if "CRAM-MD5" in self.auth_methods and self.nonce_factory is None:
            raise ValueError("CRAM-MD5 needs a nonce_factory")
        if self.max_auth_failures < 0 or self.max_auth_line < 512:
            raise ValueError("max_auth_failures must be >= 0 and max_auth_line >= 512")
        if any(c != c.upper() for c in self.disabled_commands):
            raise ValueError("disabled_commands must be upper case")
        if any(c in self.hostname for c in " \r\n\x00") or not self.hostname:
            raise ValueError(f"bad hostname {self.hostname!r}")
        if len(self.hostname) > 255:
            raise ValueError("hostname must be at most 255 characters (RFC 5321 §4.5.3.1.2)")
        if not self.banner.isprintable() or len(self.banner) > 100:
            # The greeting is one reply line (RFC 5321 §4.5.3.1.5); no control characters on the wire.
            raise ValueError(
                f"banner must be printable text of at most 100 characters: {self.banner!r}"
            )
