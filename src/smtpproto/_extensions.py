"""The EHLO/LHLO capability list, built from the configuration in one stable order."""

from __future__ import annotations

from ._config import ServerConfig

__all__ = ["capabilities"]


def capabilities(config: ServerConfig) -> list[str]:
    """The keywords (with parameters) the server advertises after its EHLO/LHLO greeting line.

    Order: PIPELINING, 8BITMIME, SMTPUTF8, SIZE, ENHANCEDSTATUSCODES, DSN. A ``hide_*`` switch drops its
    keyword; LMTP always advertises PIPELINING and ENHANCEDSTATUSCODES, which RFC 2033 §5 makes mandatory.
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
    return caps


def enhanced_codes(config: ServerConfig) -> bool:
    """Whether replies carry RFC 3463 enhanced status codes (always in LMTP, RFC 2033 §5)."""
    return config.lmtp or not config.hide_enhanced_status_codes


def smtputf8_offered(config: ServerConfig) -> bool:
    """Whether the SMTPUTF8 extension (and its MAIL parameter) is on."""
    return not config.hide_smtputf8 and not config.hide_8bitmime
