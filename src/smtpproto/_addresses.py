"""Mail paths (RFC 5321 §4.1.2), address literals (§4.1.3) and xtext parameter values (RFC 3461 §4).

Everything here is a small hand-written scanner or an anchored regular expression without nested
repetition, so every check is linear in the length of its input, whatever a client sends.
"""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Literal

__all__ = [
    "AddressError",
    "is_valid_domain",
    "parse_path",
    "split_path",
    "xtext_decode",
    "xtext_encode",
]

# RFC 5321 §4.5.3.1.1-3 limits, counted in octets of the UTF-8 encoding (RFC 6531 §3.3).
MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256
# RFC 1035 §2.3.4.
MAX_LABEL = 63

_LET_DIG = frozenset(string.ascii_letters + string.digits)
_LDH = _LET_DIG | {"-"}
# RFC 5322 §3.2.3 atext.
_ATEXT = _LET_DIG | frozenset("!#$%&'*+-/=?^_`{|}~")
_DIGITS = frozenset(string.digits)
_HEXDIGITS = frozenset(string.hexdigits)
# Refused even under SMTPUTF8: C0/C1 controls and DEL, invisible characters that let two different
# addresses look the same, and lone surrogates (they have no UTF-8 encoding at all).
_FORBIDDEN_UTF8 = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b\u2060\ufeff\ud800-\udfff]")
# xtext: '!'..'~' except '+' (0x2B) and '=' (0x3D), or '+' and two upper-case hex digits.
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*")
_XTEXT_HEXCHAR = re.compile(r"\+([0-9A-F]{2})")

_Kind = Literal["syntax", "length", "utf8"]


class AddressError(ValueError):
    """Why a path or parameter was refused.

    :attr:`reason` is short English text fit for an SMTP reply; :attr:`kind` tells the connection
    which reply to choose: ``"syntax"`` (bad grammar), ``"length"`` (an RFC 5321 §4.5.3.1 limit was
    exceeded) or ``"utf8"`` (non-ASCII text in a transaction without SMTPUTF8).
    """

    def __init__(self, reason: str, *, kind: _Kind = "syntax") -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind: _Kind = kind


_ATEXT_CLASS = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
#: The everyday dot-atom@hostname mailbox; group 1 is the local part.
SIMPLE_MAILBOX = rf"({_ATEXT_CLASS}+(?:\.{_ATEXT_CLASS}+)*)@{_LABEL}(?:\.{_LABEL})*"
_SIMPLE_PATH_RE = re.compile(f"<{SIMPLE_MAILBOX}>")
_SIMPLE_SPLIT_RE = re.compile(r'<[^<>"]*>')


def split_path(text: str) -> tuple[str, str]:
    """Split a ``MAIL``/``RCPT`` argument into the path and what follows it.

    ``text`` must start with ``<``. Returns ``(path, rest)``: ``path`` runs from the ``<`` to the
    matching ``>`` inclusive, skipping any ``>`` inside a quoted string (with its backslash
    quoted-pairs), so ``<"a>b"@x.test>`` is one path; ``rest`` is everything after the ``>``,
    leading spaces kept.

    :raises AddressError: if ``text`` does not start with ``<`` or has no closing ``>``.
    """
    # Fast path: no quotes in sight, so the first '>' closes the path.
    simple = _SIMPLE_SPLIT_RE.match(text)
    if simple:
        end = simple.end()
        return text[:end], text[end:]
    if not text.startswith("<"):
        raise AddressError("Path must start with '<'")
    quoted = False
    i = 1
    while i < len(text):
        char = text[i]
        if quoted and char == "\\":
            i += 1  # a quoted-pair: the next character is literal, even '"' or '>'
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return text[: i + 1], text[i + 1 :]
        i += 1
    raise AddressError("Path must end with '>'")


def parse_path(path: str, *, null_ok: bool, postmaster_ok: bool, utf8: bool) -> str:
    """Validate a path in angle brackets (RFC 5321 §4.1.2) and return its mailbox.

    The result has no angle brackets and no source route (``<@a.test,@b.test:x@y.test>`` gives
    ``x@y.test``); the local part is returned as written, quotes and all. ``<>`` gives ``""`` when
    ``null_ok`` (a reverse-path), and ``<postmaster>`` in any case and without a domain is returned
    as written when ``postmaster_ok`` (a forward-path, §4.5.1).

    ``utf8`` (the transaction used SMTPUTF8) allows non-ASCII characters in atoms, quoted strings
    and U-label domain labels (RFC 6531 §3.3); without it any non-ASCII character is refused with
    ``kind="utf8"``, even if the path is malformed in other ways too.

    :raises AddressError: with ``kind="utf8"``, then ``"syntax"``, then ``"length"``, in that order.
    """
    # Fast path for the everyday dot-atom@hostname mailbox; anything else takes the full grammar below.
    simple = _SIMPLE_PATH_RE.fullmatch(path)
    if simple and simple.end(1) <= MAX_LOCAL_PART + 1 and len(path) <= MAX_PATH:
        return path[1:-1]
    _check_charset(path, utf8=utf8)
    if len(path) < 2 or path[0] != "<" or path[-1] != ">":
        raise AddressError("Path must be enclosed in '<' and '>'")
    inner = path[1:-1]
    if not inner:
        if null_ok:
            return ""
        raise AddressError("Null path not allowed here")
    # isascii() first: str.lower() maps a few non-ASCII letters onto ASCII ones.
    if postmaster_ok and inner.isascii() and inner.lower() == "postmaster":
        return inner
    mailbox = _strip_route(inner)
    at = _local_part_end(mailbox)
    local_part, domain = mailbox[:at], mailbox[at + 1 :]
    if not _is_domain(domain):
        raise AddressError("Bad domain syntax")
    if _octets(local_part) > MAX_LOCAL_PART:
        raise AddressError("Local part too long", kind="length")
    if _octets(domain) > MAX_DOMAIN:
        raise AddressError("Domain too long", kind="length")
    if _octets(path) > MAX_PATH:
        raise AddressError("Path too long", kind="length")
    return mailbox


def is_valid_domain(text: str, *, utf8: bool = False) -> bool:
    """Whether ``text`` is a domain or address literal as allowed in a mailbox (also for ``EHLO``).

    ``utf8`` allows U-labels. The RFC 5321 255-octet limit applies; a trailing dot is not allowed.
    """
    try:
        _check_charset(text, utf8=utf8)
    except AddressError:
        return False
    return _is_domain(text) and _octets(text) <= MAX_DOMAIN


def xtext_decode(value: str) -> str:
    """Decode an RFC 3461 §4 xtext value (``ENVID``, ``ORCPT``): ``+XX`` is the octet with hex XX.

    Other characters must be printable ASCII ``!``..``~`` other than ``+`` and ``=``, and the hex
    digits must be upper case, as the RFC's grammar says.

    :raises ValueError: on any other character, a malformed ``+`` escape, or an escape for an octet
        outside ASCII.
    """
    if not _XTEXT.fullmatch(value):
        raise ValueError(f"not valid xtext: {value!r}")
    decoded = _XTEXT_HEXCHAR.sub(lambda match: chr(int(match[1], 16)), value)
    if not decoded.isascii():
        # Octets are not text; RFC 6533 has its own encodings for UTF-8 addresses.
        raise ValueError(f"xtext encodes a non-ASCII octet: {value!r}")
    return decoded


def xtext_encode(value: str) -> str:
    """Encode ASCII text as RFC 3461 xtext: ``+``, ``=`` and all but ``!``..``~`` become ``+XX``.

    :raises ValueError: if ``value`` is not ASCII.
    """
    if not value.isascii():
        raise ValueError(f"only ASCII text can be encoded as xtext: {value!r}")
    return "".join(
        char if "!" <= char <= "~" and char not in "+=" else f"+{ord(char):02X}" for char in value
    )


def _check_charset(text: str, *, utf8: bool) -> None:
    """Refuse non-ASCII without SMTPUTF8, and characters that are never acceptable with it."""
    if not utf8:
        if not text.isascii():
            raise AddressError("Non-ASCII address requires SMTPUTF8", kind="utf8")
    elif _FORBIDDEN_UTF8.search(text):
        raise AddressError("Bad character in address")


def _octets(text: str) -> int:
    """Length in octets once UTF-8 encoded (``text`` has passed :func:`_check_charset`)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _strip_route(inner: str) -> str:
    """Check and drop an A-d-l source route (``@a.test,@b.test:``); RFC 5321 §4.1.1.3 ignores it."""
    if not inner.startswith("@"):
        return inner
    # At-domain allows no address literal, so the first ':' is the one that ends the route.
    route, colon, mailbox = inner.partition(":")
    if not colon:
        raise AddressError("Bad source route")
    for hop in route.split(","):
        if not (hop.startswith("@") and _is_domain_name(hop[1:])):
            raise AddressError("Bad source route")
    return mailbox


def _local_part_end(mailbox: str) -> int:
    """Check the local part of ``mailbox`` and return the index of the ``@`` that follows it."""
    if mailbox.startswith('"'):
        end = _quoted_string_end(mailbox)
    else:
        end = mailbox.find("@")
        if end < 0:
            end = len(mailbox)
        # Dot-string: atoms of atext (or any non-ASCII character under SMTPUTF8) joined by dots.
        for atom in mailbox[:end].split("."):
            if not atom or not all(char in _ATEXT or not char.isascii() for char in atom):
                raise AddressError("Bad address syntax")
    if end == len(mailbox):
        raise AddressError("Address has no domain")
    if mailbox[end] != "@":
        raise AddressError("Bad address syntax")
    return end


def _quoted_string_end(text: str) -> int:
    """Return the index just after the RFC 5321 Quoted-string at the start of ``text``."""
    i = 1
    while i < len(text):
        char = text[i]
        if char == '"':
            return i + 1
        if char == "\\":
            # quoted-pairSMTP: a backslash and one printable ASCII character, even under RFC 6531.
            i += 1
            if i == len(text) or not " " <= text[i] <= "~":
                raise AddressError("Bad address syntax")
        elif not (" " <= char <= "~" or not char.isascii()):
            raise AddressError("Bad address syntax")
        i += 1
    raise AddressError("Unterminated quoted string in address")


def _is_domain(text: str) -> bool:
    """Domain / address-literal syntax, without the overall length limit."""
    if text.startswith("["):
        return text.endswith("]") and _is_address_literal(text[1:-1])
    return _is_domain_name(text)


def _is_domain_name(text: str) -> bool:
    """sub-domain *("." sub-domain); an empty label also rules out a leading or trailing dot."""
    return all(_is_label(label) for label in text.split("."))


def _is_label(label: str) -> bool:
    """An LDH label, or under SMTPUTF8 a U-label (any script's letters, marks, digits; hyphens)."""
    if not label or label[0] == "-" or label[-1] == "-" or _octets(label) > MAX_LABEL:
        return False
    # Non-ASCII only arrives here under SMTPUTF8; spaces, symbols and punctuation (such as the
    # ideographic full stop, which IDNA treats as a dot) are not valid in an IDNA label.
    return all(
        char in _LDH or (not char.isascii() and unicodedata.category(char)[0] in "LMN")
        for char in label
    )


def _is_address_literal(content: str) -> bool:
    """IPv4 or IPv6 literal. General literals need a registered tag and none but IPv6 exist."""
    tag, colon, address = content.partition(":")
    if not colon:
        return _is_ipv4(content)
    return tag.isascii() and tag.lower() == "ipv6" and _is_ipv6(address)


def _is_ipv4(text: str) -> bool:
    """Four Snum: 1-3 ASCII digits with a value of at most 255."""
    parts = text.split(".")
    return len(parts) == 4 and all(
        1 <= len(part) <= 3 and _DIGITS.issuperset(part) and int(part) <= 255 for part in parts
    )


def _is_ipv6(text: str) -> bool:
    """RFC 5321 §4.1.3 IPv6-full / IPv6-comp / IPv6v4-full / IPv6v4-comp.

    Stricter than :mod:`ipaddress` where the RFC is: a ``::`` form may hold at most six groups (four
    with a trailing IPv4 part) besides the ones it elides, and there are no zone ids.
    """
    if "." in text:
        head, colon, ipv4 = text.rpartition(":")
        if not colon or not _is_ipv4(ipv4):
            return False
        # The IPv4 part fills two groups; two stand-ins keep the group arithmetic below uniform.
        text = head + ":0:0"
    halves = text.split("::")
    if len(halves) > 2:
        return False
    groups = [group for half in halves if half for group in half.split(":")]
    if not all(1 <= len(group) <= 4 and _HEXDIGITS.issuperset(group) for group in groups):
        return False
    return len(groups) <= 6 if len(halves) == 2 else len(groups) == 8
