"""The ``Received:`` trace header (RFC 5321 §4.4) that ``smtpproto serve`` puts in front of stored messages.

Every field is text somebody else chose (the client's HELO name, its reverse-DNS name, the recipient), so
each is sanitised before it goes in: no CR, LF or other control character survives, and nothing can end
the header early or start a forged one.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from email.utils import format_datetime

__all__ = ["received_header"]

_MAX_LINE = 78
# RFC 5321 caps a domain at 255 octets and a path at 256: longer client text is cut so the longest
# possible line (one unbreakable word) stays far below the 998-character limit of RFC 5322.
_MAX_WORD = 256
# Characters that carry structure inside a Received header: comments, the date separator, quoting.
_TOKEN_SPECIALS = frozenset("();\\")


def _clean(text: str, *, allow_space: bool = False) -> str:
    """Replace what could break or reshape the header with ``?``, and cap the length.

    Non-printable characters (controls, CR, LF, Unicode line separators, surrogates), whitespace (which
    would split one token into several; plain spaces survive with ``allow_space``) and the structural
    specials all become ``?``.
    """

    def keep(c: str) -> bool:
        if c == " ":
            return allow_space
        return c.isprintable() and not c.isspace() and c not in _TOKEN_SPECIALS

    cleaned = "".join(c if keep(c) else "?" for c in text)
    if len(cleaned) > _MAX_WORD:
        cleaned = cleaned[: _MAX_WORD - 3] + "..."
    return cleaned or "?"


def _address_literal(address: str) -> str:
    """``[192.0.2.1]`` or ``[IPv6:2001:db8::1]`` (RFC 5321 §4.1.3); other text is cleaned and bracketed."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"[{_clean(address)}]" if address else "[unknown]"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"[{ip.ipv4_mapped}]"
        return f"[IPv6:{ip}]"
    return f"[{ip}]"


def received_header(
    *,
    helo: str | None,
    client_hostname: str | None,
    client_address: str,
    server_name: str,
    protocol: str,
    queue_id: str | None,
    recipient: str | None,
    when: datetime,
) -> bytes:
    r"""Build a ``Received:`` header, CRLF-terminated, folded to lines of at most 78 characters if possible.

    ``helo`` is the name the client gave in HELO/EHLO/LHLO (``None`` if it gave none: the address literal
    stands in); ``client_hostname`` its reverse-DNS name (``None``, ``""`` or a bracketed literal when
    unknown); ``client_address`` its IP address; ``protocol`` the ``with`` keyword (``ESMTPSA``, ``LMTP``,
    ... — see ``Session.transmission_type``); ``queue_id`` the ``id`` clause; ``recipient`` the ``for``
    clause, which should only be given when the message has exactly one recipient (RFC 5321 §7.2);
    ``when`` a timezone-aware time. For example::

        Received: from client.example (mail.client.example [192.0.2.1])\r\n
        \tby mx.example with ESMTPS id 1a2b3c\r\n
        \tfor <user@mx.example>; Mon, 01 Jan 2024 12:00:00 +0000\r\n

    The result is UTF-8 (a non-ASCII name or recipient arrives only in an SMTPUTF8 session).
    """
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("when must be a timezone-aware datetime")
    literal = _address_literal(client_address)
    hostname = client_hostname if client_hostname and not client_hostname.startswith("[") else None
    tcp_info = f"({_clean(hostname)} {literal})" if hostname else f"({literal})"
    date = format_datetime(when)

    # Each line is a list of clauses, each clause a list of words that are kept together when they fit.
    line_from = [["Received:", "from", _clean(helo) if helo else literal], tcp_info.split(" ")]
    line_by = [["by", _clean(server_name)], ["with", _clean(protocol)]]
    if queue_id:
        line_by.append(["id", _clean(queue_id)])
    if recipient is not None:
        line_for = [["for", f"<{_clean(recipient, allow_space=True)}>;"], date.split(" ")]
        lines = [line_from, line_by, line_for]
    else:
        line_by[-1][-1] += ";"
        line_by.append(date.split(" "))
        lines = [line_from, line_by]

    out: list[str] = []
    for clauses in lines:
        out.extend(_fold(clauses, first=not out))
    return "\r\n\t".join(out).encode("utf-8") + b"\r\n"


def _fold(clauses: list[list[str]], *, first: bool) -> list[str]:
    """Pack clauses into physical lines of at most 78 characters where possible.

    Every physical line but the header's first starts with a TAB (counted as one character). A clause
    that does not fit on the current line starts a new one; only a clause longer than a whole line is
    folded between its words.
    """
    lines: list[str] = []
    words: list[str] = []  # on the current line

    def fits(text: str) -> bool:
        room = _MAX_LINE - (0 if first and not lines else 1)
        used = len(" ".join(words)) + 1 if words else 0
        return used + len(text) <= room

    def new_line() -> None:
        lines.append(" ".join(words))
        words.clear()

    for clause in clauses:
        whole = " ".join(clause)
        if fits(whole):
            words.append(whole)
            continue
        if words:
            new_line()
        if fits(whole) or any(len(word) > _MAX_LINE - 1 for word in clause):
            # Fits a line of its own, or holds a word too long for any line: folding cannot help.
            words.append(whole)
            continue
        for word in clause:
            if words and not fits(word):
                new_line()
            words.append(word)
    new_line()
    return lines
