"""What a trusted front end says about the real client: PROXY protocol headers and Postfix XCLIENT/XFORWARD.

PROXY v1/v2 follows HAProxy's ``doc/proxy-protocol.txt``; XCLIENT and XFORWARD follow Postfix's
``XCLIENT_README`` and ``XFORWARD_README``. Only parsing lives here: who is trusted, timeouts and what the
session does with the result belong to the connection and its driver.
"""

from __future__ import annotations

import ipaddress
import string
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ._addresses import is_valid_domain, xtext_decode

__all__ = [
    "MAX_V2_LENGTH",
    "V1_MAX_LENGTH",
    "V2_SIGNATURE",
    "XCLIENT_ATTRIBUTES",
    "XFORWARD_ATTRIBUTES",
    "ProxyHeader",
    "ProxyHeaderError",
    "XAttributeError",
    "XClient",
    "XForward",
    "parse_xclient",
    "parse_xforward",
    "read_proxy_header",
]

Family = Literal["TCP4", "TCP6", "UNIX", "UNKNOWN"]

#: The v1 line limit, CRLF included: ``PROXY UNKNOWN`` with two full IPv6 addresses and two 5-digit ports.
V1_MAX_LENGTH = 107
#: The 12 octets that open a v2 header.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Default cap on the v2 length field (the octets after the 16-byte fixed part): a pending socket must not
#: make us buffer 64 KiB just because the field says so.
MAX_V2_LENGTH = 4096

_V1_PREFIX = b"PROXY "
_V1_FAMILIES = (b"TCP4", b"TCP6", b"UNKNOWN")
# fam/transport byte -> (family, address block size). Datagram transports cannot carry SMTP, and the spec
# lets a receiver that does not support a valid combination fall back to UNSPEC, so they become UNKNOWN.
_V2_FAMILIES: dict[int, tuple[Family, int]] = {
    0x00: ("UNKNOWN", 0),
    0x11: ("TCP4", 12),
    0x12: ("UNKNOWN", 12),
    0x21: ("TCP6", 36),
    0x22: ("UNKNOWN", 36),
    0x31: ("UNIX", 216),
    0x32: ("UNKNOWN", 216),
}
_TLV_CRC32C = 0x03
_TLV_NOOP = 0x04
_TLV_UNIQUE_ID = 0x05
_MAX_UNIQUE_ID = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyHeader:
    """Event: the PROXY protocol header that a load balancer sent before SMTP began.

    ``family`` is ``UNKNOWN`` for v1 ``PROXY UNKNOWN``, for v2 ``LOCAL`` (whatever family it names, which
    the spec says to ignore), for v2 ``UNSPEC`` and for v2 datagram transports; the addresses and ports
    are then ``None`` and the real socket endpoints apply. Addresses are in :mod:`ipaddress`'s normal
    form (``2001:db8::1``); for ``UNIX`` they are the socket paths with their NUL padding removed
    (decoded as UTF-8 with ``surrogateescape``) and the ports are ``None``. ``tlvs`` maps each v2 TLV type
    to its raw value, without ``NOOP`` padding; it is empty for v1.
    """

    version: int
    command: Literal["PROXY", "LOCAL"]
    family: Family
    source_address: str | None = None
    source_port: int | None = None
    destination_address: str | None = None
    destination_port: int | None = None
    tlvs: Mapping[int, bytes] = field(default_factory=lambda: MappingProxyType({}))


class ProxyHeaderError(Exception):
    """The header is malformed, oversized or missing; the connection must close without a greeting."""


def read_proxy_header(buf: bytearray, *, max_v2_length: int = MAX_V2_LENGTH) -> ProxyHeader | None:
    """Parse a PROXY v1 or v2 header at the front of ``buf``, transactionally.

    Returns ``None``, leaving ``buf`` untouched, while the header is incomplete. On success removes
    exactly the header's octets from ``buf`` (what follows belongs to SMTP and stays) and returns it.
    A v2 header whose length field exceeds ``max_v2_length`` is refused.

    :raises ProxyHeaderError: as soon as the octets can no longer become a valid header; ``buf`` is
        then left as it was.
    """
    if not buf:
        return None
    if buf[0] == _V1_PREFIX[0]:
        result = _read_v1(bytes(buf[:V1_MAX_LENGTH]))
    elif buf[0] == V2_SIGNATURE[0]:
        result = _read_v2(buf, max_v2_length)
    else:
        # No guessing (the spec forbids it): a listener that expects PROXY gets PROXY or nothing.
        raise ProxyHeaderError("connection does not start with a PROXY protocol header")
    if result is None:
        return None
    header, size = result
    del buf[:size]
    return header


def _read_v1(head: bytes) -> tuple[ProxyHeader, int] | None:
    """The v1 text line; ``head`` is at most the first 107 octets of the buffer."""
    if not head.startswith(_V1_PREFIX[: len(head)]):
        raise ProxyHeaderError("not a PROXY protocol v1 header")
    end = head.find(b"\r\n")
    line = head[:end] if end >= 0 else head.removesuffix(b"\r")
    if b"\r" in line or b"\n" in line:
        raise ProxyHeaderError("PROXY v1 line must end with CRLF, not with a bare CR or LF")
    if end < 0 and len(head) >= V1_MAX_LENGTH:
        raise ProxyHeaderError("PROXY v1 line has no CRLF within 107 octets")
    if len(line) < len(_V1_PREFIX):
        return None
    fields = line[len(_V1_PREFIX) :].split(b" ")
    family = fields[0]
    if end < 0 and len(fields) == 1:
        # The family word may still be growing; refuse it once it cannot become one we know.
        if not any(known.startswith(family) for known in _V1_FAMILIES):
            raise ProxyHeaderError("unknown PROXY v1 protocol family")
        return None
    if family not in _V1_FAMILIES:
        raise ProxyHeaderError("unknown PROXY v1 protocol family")
    values: list[str | int] = []
    # The spec says the rest of an UNKNOWN line is to be ignored, whatever it holds.
    if family != b"UNKNOWN":
        if len(fields) > 5 or (end >= 0 and len(fields) < 5):
            raise ProxyHeaderError("PROXY v1 line needs exactly four fields after the family")
        # Until the CRLF arrives the last field may still grow, so only the ones before it are judged.
        complete = fields[1:] if end >= 0 else fields[1:-1]
        values = [
            _v1_address(family, raw) if i < 2 else _v1_port(raw) for i, raw in enumerate(complete)
        ]
    if end < 0:
        return None
    if not values:
        return ProxyHeader(version=1, command="PROXY", family="UNKNOWN"), end + 2
    source, destination, source_port, destination_port = values
    header = ProxyHeader(
        version=1,
        command="PROXY",
        family="TCP4" if family == b"TCP4" else "TCP6",
        source_address=str(source),
        source_port=int(source_port),
        destination_address=str(destination),
        destination_port=int(destination_port),
    )
    return header, end + 2


def _v1_address(family: bytes, raw: bytes) -> str:
    try:
        text = raw.decode("ascii")
        if "%" in text:
            raise ValueError("zone ids are not addresses on the wire")
        kind = ipaddress.IPv4Address if family == b"TCP4" else ipaddress.IPv6Address
        # ipaddress refuses leading zeros in IPv4 octets, the ambiguity the spec rules out.
        return str(kind(text))
    except ValueError:
        raise ProxyHeaderError(f"bad {family.decode()} address in PROXY v1 line") from None


def _v1_port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or (raw[0] == 0x30 and raw != b"0") or int(raw) > 65535:
        raise ProxyHeaderError("bad port in PROXY v1 line")
    return int(raw)


def _read_v2(buf: bytearray, max_length: int) -> tuple[ProxyHeader, int] | None:
    """The v2 binary header; each fixed octet is judged as soon as it has arrived."""
    if not V2_SIGNATURE.startswith(bytes(buf[: len(V2_SIGNATURE)])):
        raise ProxyHeaderError("not a PROXY protocol v2 header")
    if len(buf) > 12 and (buf[12] >> 4 != 2 or buf[12] & 0x0F > 1):
        raise ProxyHeaderError("PROXY v2 header has a bad version or command")
    if len(buf) > 13 and buf[13] not in _V2_FAMILIES:
        raise ProxyHeaderError("PROXY v2 header has a bad address family or transport")
    if len(buf) < 16:
        return None
    length = int.from_bytes(buf[14:16], "big")
    if length > max_length:
        raise ProxyHeaderError("PROXY v2 header is longer than allowed")
    is_proxy = buf[12] & 0x0F == 1
    family, block = _V2_FAMILIES[buf[13]]
    if is_proxy and length < block:
        raise ProxyHeaderError("PROXY v2 address block is shorter than its family needs")
    total = 16 + length
    if len(buf) < total:
        return None
    data = bytes(buf[:total])
    # LOCAL (health checks) ignores the addresses but must still skip them; TLVs follow them.
    tlvs = _v2_tlvs(data, 16 + block if length >= block else total, strict=is_proxy)
    body = data[16 : 16 + block]
    source = destination = None
    source_port = destination_port = None
    if not is_proxy:
        family = "UNKNOWN"
    elif family == "UNIX":
        source, destination = _unix_path(body[:108]), _unix_path(body[108:])
    elif family != "UNKNOWN":
        size = 4 if family == "TCP4" else 16
        raw_source, raw_destination, source_port, destination_port = struct.unpack(
            f"!{size}s{size}sHH", body
        )
        source = str(ipaddress.ip_address(raw_source))
        destination = str(ipaddress.ip_address(raw_destination))
    header = ProxyHeader(
        version=2,
        command="PROXY" if is_proxy else "LOCAL",
        family=family,
        source_address=source,
        source_port=source_port,
        destination_address=destination,
        destination_port=destination_port,
        tlvs=tlvs,
    )
    return header, total


def _unix_path(raw: bytes) -> str:
    # Only trailing padding goes, so an abstract-namespace name keeps its leading NUL.
    return raw.rstrip(b"\x00").decode("utf-8", "surrogateescape")


def _v2_tlvs(data: bytes, start: int, *, strict: bool) -> Mapping[int, bytes]:
    """TLVs from ``start`` to the end of ``data`` (the whole header); they must fill it exactly.

    Not ``strict`` (LOCAL), a region that is not a TLV sequence is skipped with no TLVs: the spec says a
    receiver must accept LOCAL and discard its block, and senders differ on what they put there.
    """
    spans = []
    pos = start
    while pos + 3 <= len(data):
        end = pos + 3 + int.from_bytes(data[pos + 1 : pos + 3], "big")
        spans.append((data[pos], pos + 3, end))
        pos = end
    if pos != len(data):  # a truncated TLV head, or a value that runs past the header's length
        if not strict:
            return MappingProxyType({})
        raise ProxyHeaderError("PROXY v2 TLVs do not exactly fill the header")
    tlvs: dict[int, bytes] = {}
    for kind, value_start, end in spans:
        if kind == _TLV_NOOP:
            continue
        if kind in tlvs:
            # A mapping cannot hold both, and letting one silently win invites disagreement.
            raise ProxyHeaderError(f"duplicate TLV 0x{kind:02x} in PROXY v2 header")
        tlvs[kind] = value = data[value_start:end]
        if kind == _TLV_CRC32C and (
            len(value) != 4
            or _crc32c(data[:value_start] + bytes(4) + data[end:]) != int.from_bytes(value, "big")
        ):
            raise ProxyHeaderError("PROXY v2 header fails its CRC32C check")
        if kind == _TLV_UNIQUE_ID and len(value) > _MAX_UNIQUE_ID:
            raise ProxyHeaderError("PROXY v2 UNIQUE_ID is longer than 128 octets")
    return MappingProxyType(tlvs)


def _crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), which zlib lacks; bit by bit is fast enough for a header of a few KiB."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


# --- XCLIENT / XFORWARD -----------------------------------------------------------------------------

_UNAVAILABLE = "[UNAVAILABLE]"
_TEMPUNAVAIL = "[TEMPUNAVAIL]"


@dataclass(frozen=True, slots=True, kw_only=True)
class XClient:
    """Event: XCLIENT (Postfix) — the trusted peer overrides what the session knows about the client.

    Each field is ``None`` when not given. Values are xtext-decoded text; the special values come back
    as the upper-case literals ``"[UNAVAILABLE]"`` and ``"[TEMPUNAVAIL]"`` (accepted for every attribute
    but ``PROTO``, as Postfix does). ``addr``/``destaddr`` are IP addresses in :mod:`ipaddress` form
    without the ``IPV6:`` prefix; ``port``/``destport`` are decimal strings without leading zeros (``str``,
    so that the special values fit); ``proto`` is ``"SMTP"`` or ``"ESMTP"``.
    """

    name: str | None = None
    addr: str | None = None
    port: str | None = None
    proto: str | None = None
    helo: str | None = None
    login: str | None = None
    reverse_name: str | None = None
    destaddr: str | None = None
    destport: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class XForward:
    """Event: XFORWARD (Postfix) — a trusted content filter passes on the original client's details.

    As :class:`XClient`, but only ``"[UNAVAILABLE]"`` is special. ``proto`` is the up-stream protocol
    name as sent (such as ``ESMTPSA`` or ``QMQP``); ``source`` is ``"LOCAL"`` or ``"REMOTE"``.
    """

    name: str | None = None
    addr: str | None = None
    port: str | None = None
    proto: str | None = None
    helo: str | None = None
    ident: str | None = None
    source: str | None = None


class XAttributeError(ValueError):
    """An XCLIENT or XFORWARD argument is refused as a whole; ``reason`` is the text for a 501 reply."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_Check = Callable[[str], str | None]  # the value to keep, or None when the value is bad

_DIGITS = frozenset(string.digits)
# Characters that Postfix "neuters" before a value reaches a Received header or a log, plus whitespace
# and controls: refused here, since quietly rewriting a value would hide what the peer sent.
_HEADER_SAFE = frozenset(chr(code) for code in range(0x21, 0x7F)) - set('<>()\\";@')
_PRINTABLE = frozenset(chr(code) for code in range(0x20, 0x7F))


def parse_xclient(argument: str) -> XClient:
    """Parse the argument of ``XCLIENT``: ``1*( SP name "=" xtext )``, all or nothing.

    :raises XAttributeError: for no attribute, an unknown or repeated one, a missing ``=``, bad xtext,
        or a decoded value that its attribute does not allow.
    """
    return XClient(**_parse("XCLIENT", argument, _XCLIENT_CHECKS))


def parse_xforward(argument: str) -> XForward:
    """Parse the argument of ``XFORWARD``: ``1*( SP name "=" xtext )``, all or nothing.

    :raises XAttributeError: as :func:`parse_xclient`.
    """
    return XForward(**_parse("XFORWARD", argument, _XFORWARD_CHECKS))


def _parse(command: str, argument: str, checks: Mapping[str, _Check]) -> dict[str, str]:
    words = [word for word in argument.split(" ") if word]  # runs of spaces are tolerated
    if not words:
        raise XAttributeError(f"Syntax: {command} attribute=value...")
    values: dict[str, str] = {}
    for word in words:
        name, equals, raw = word.partition("=")
        # ASCII first: str.upper() maps some non-ASCII letters (such as U+017F) onto ASCII ones.
        key = name.upper() if name.isascii() else name
        if key not in checks:
            raise XAttributeError(f"Bad {command} attribute name: {_shown(name)}")
        if not equals:
            raise XAttributeError(f"Bad {command} attribute syntax: {_shown(word)}")
        if key.lower() in values:
            raise XAttributeError(f"Duplicate {command} attribute: {key}")
        try:
            decoded = xtext_decode(raw)
        except ValueError:
            raise XAttributeError(f"Bad {key} syntax: {_shown(raw)}") from None
        value = checks[key](decoded)
        if value is None:
            raise XAttributeError(f"Bad {key} syntax: {_shown(decoded)}")
        values[key.lower()] = value
    return values


def _shown(text: str) -> str:
    """A value made safe to echo in a reply: decoded xtext may hold CR, LF or other controls."""
    shown = "".join(char if char in _PRINTABLE else "?" for char in text[:64])
    return shown + "..." if len(text) > 64 else shown


def _special(check: _Check, *specials: str) -> _Check:
    def checked(value: str) -> str | None:
        return value.upper() if value.upper() in specials else check(value)

    return checked


def _hostname(value: str) -> str | None:
    # A hostname, not an address literal, and not all digits (Postfix refuses "numeric" hostnames too).
    # Underscores do occur in real PTR names and Postfix's valid_hostname() lets them pass like letters.
    if value.startswith("[") or not is_valid_domain(value.replace("_", "a")):
        return None
    return None if all(label.isdigit() for label in value.split(".")) else value


def _address(value: str) -> str | None:
    try:
        if value[:5].upper() == "IPV6:":
            return None if "%" in value else str(ipaddress.IPv6Address(value[5:]))
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        return None


def _port(value: str) -> str | None:
    ok = 1 <= len(value) <= 5 and _DIGITS.issuperset(value) and int(value) <= 65535
    return str(int(value)) if ok else None


def _one_of(*choices: str) -> _Check:
    return lambda value: value.upper() if value.upper() in choices else None


def _text(allowed: frozenset[str], limit: int = 255) -> _Check:
    return lambda value: value if 1 <= len(value) <= limit and allowed.issuperset(value) else None


_BOTH = (_UNAVAILABLE, _TEMPUNAVAIL)
_XCLIENT_CHECKS: dict[str, _Check] = {
    "NAME": _special(_hostname, *_BOTH),
    "ADDR": _special(_address, *_BOTH),
    "PORT": _special(_port, *_BOTH),
    "PROTO": _one_of("SMTP", "ESMTP"),
    "HELO": _special(_text(_HEADER_SAFE), *_BOTH),
    # A SASL login name may be an address and may hold spaces; it only has to be printable.
    "LOGIN": _special(_text(_PRINTABLE), *_BOTH),
    "REVERSE_NAME": _special(_hostname, *_BOTH),
    "DESTADDR": _special(_address, *_BOTH),
    "DESTPORT": _special(_port, *_BOTH),
}
_XFORWARD_CHECKS: dict[str, _Check] = {
    "NAME": _special(_hostname, _UNAVAILABLE),
    "ADDR": _special(_address, _UNAVAILABLE),
    "PORT": _special(_port, _UNAVAILABLE),
    # XFORWARD_README: an SMTP or non-SMTP protocol name of up to 64 characters.
    "PROTO": _special(_text(_HEADER_SAFE, 64), _UNAVAILABLE),
    "HELO": _special(_text(_HEADER_SAFE), _UNAVAILABLE),
    "IDENT": _special(_text(_HEADER_SAFE), _UNAVAILABLE),
    "SOURCE": _special(_one_of("LOCAL", "REMOTE"), _UNAVAILABLE),
}
#: XCLIENT attribute names (Postfix's set), in the order to advertise them in EHLO.
XCLIENT_ATTRIBUTES: tuple[str, ...] = tuple(_XCLIENT_CHECKS)
#: XFORWARD attribute names, in the order to advertise them in EHLO.
XFORWARD_ATTRIBUTES: tuple[str, ...] = tuple(_XFORWARD_CHECKS)
