"""The EHLO/LHLO capability list, built from the configuration in one stable order."""

from __future__ import annotations

from ._config import ServerConfig
from ._proxy import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES

__all__ = ["capabilities"]


def capabilities(
    config: ServerConfig,
    *,
    secure: bool = False,
    authenticated: bool = False,
    xclient_done: bool = False,
) -> list[str]:
    """The keywords (with parameters) the server advertises after its EHLO/LHLO greeting line.

    Order: PIPELINING, 8BITMIME, SMTPUTF8, SIZE, ENHANCEDSTATUSCODES, DSN, STARTTLS, AUTH, REQUIRETLS,
    XCLIENT, XFORWARD. A ``hide_*`` switch drops its keyword; LMTP always advertises PIPELINING and
    ENHANCEDSTATUSCODES, which RFC 2033 §5 makes mandatory. STARTTLS only before TLS, AUTH only where it
    may be used (over TLS, or with ``allow_insecure_auth``) and not once authenticated, REQUIRETLS only over
    TLS (RFC 8689 §4), XCLIENT/XFORWARD only to trusted peers and not after an XCLIENT changed the address.
    """
    caps: list[str] = []
    if not config.hide_pipelining or config.lmtp:
        caps.append("PIPELINING")
    if not config.hide_8bitmime:
        caps.append("8BITMIME")
    # RFC 6531 §3.1: SMTPUTF8 needs 8BITMIME announced too.
    if not config.hide_smtputf8 and not config.hide_8bitmime:
        caps.append("SMTPUTF8")
    if config.max_message_size is None or config.hide_size:
        caps.append("SIZE")
    else:
        caps.append(f"SIZE {config.max_message_size}")
    if enhanced_codes(config):
        caps.append("ENHANCEDSTATUSCODES")
    if not config.hide_dsn:
        caps.append("DSN")
    if starttls_offered(config, secure=secure) and not config.hide_starttls:
        caps.append("STARTTLS")
    if auth_offered(config, secure=secure) and not authenticated:
        caps.append(" ".join(("AUTH", *config.auth_methods)))
    if secure and not config.hide_requiretls:
        caps.append("REQUIRETLS")
    if config.use_xclient and "XCLIENT" not in config.disabled_commands and not xclient_done:
        caps.append(" ".join(("XCLIENT", *XCLIENT_ATTRIBUTES)))
    if config.use_xforward and "XFORWARD" not in config.disabled_commands and not xclient_done:
        caps.append(" ".join(("XFORWARD", *XFORWARD_ATTRIBUTES)))
    return caps


def starttls_offered(config: ServerConfig, *, secure: bool) -> bool:
    """Whether STARTTLS can be used now (it may still be hidden from the EHLO reply)."""
    return config.tls_available and not secure and "STARTTLS" not in config.disabled_commands


def auth_enabled(config: ServerConfig) -> bool:
    """Whether the server speaks AUTH at all (some mechanism is configured and AUTH is not disabled)."""
    return bool(config.auth_methods) and "AUTH" not in config.disabled_commands


def auth_offered(config: ServerConfig, *, secure: bool) -> bool:
    """Whether AUTH may be used now: over TLS, or in plaintext when explicitly allowed (RFC 4954 §4)."""
    return auth_enabled(config) and (secure or config.allow_insecure_auth)


def enhanced_codes(config: ServerConfig) -> bool:
    """Whether replies carry RFC 3463 enhanced status codes (always in LMTP, RFC 2033 §5)."""
    return config.lmtp or not config.hide_enhanced_status_codes


def smtputf8_offered(config: ServerConfig) -> bool:
    """Whether the SMTPUTF8 extension (and its MAIL parameter) is on."""
    return not config.hide_smtputf8 and not config.hide_8bitmime
