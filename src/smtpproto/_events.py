"""Events: what a :class:`~smtpproto.ServerConnection` tells its driver, one object per thing that happened.

Events are frozen, slotted, keyword-only dataclasses; they are built complete by the connection and are not
meant to be subclassed. The SASL, PROXY and XCLIENT/XFORWARD events are defined beside their parsers (``_sasl.py``,
``_proxy.py``) and re-exported here. Events marked *decision* wait for the application's reply (``conn.send(Reply)``,
``conn.accept()`` or ``conn.reject()``); the others are informational — the connection has already answered.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeAlias

from ._proxy import ProxyHeader, XClient, XForward
from ._replies import Reply
from ._sasl import AuthRequest

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthRequest",
    "ConnectionClosed",
    "DataChunk",
    "DataEnd",
    "DataStart",
    "Event",
    "Hello",
    "MailFrom",
    "ProxyHeader",
    "Quit",
    "RcptTo",
    "Reset",
    "Sentinel",
    "StartTLS",
    "Verify",
    "XClient",
    "XForward",
]


class Sentinel(enum.Enum):
    """The two non-event answers of :meth:`~smtpproto.ServerConnection.next_event`."""

    #: Every buffered byte has been processed: flush ``data_to_send()`` and feed more with ``receive_data``.
    NEED_DATA = "NEED_DATA"
    #: Nothing more can happen until the application acts (replies to a decision event).
    PAUSED = "PAUSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Literal[Sentinel.NEED_DATA] = Sentinel.NEED_DATA
PAUSED: Literal[Sentinel.PAUSED] = Sentinel.PAUSED

_EMPTY: Mapping[str, str | bool] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Hello:
    """The client introduced itself (HELO, EHLO or LHLO). Informational: the connection answered 250.

    The session is reset as by RSET (RFC 5321 §4.1.4).
    """

    command: str
    hostname: str

    @property
    def extended(self) -> bool:
        """True for EHLO and LHLO (the client speaks ESMTP)."""
        return self.command != "HELO"


@dataclass(frozen=True, slots=True, kw_only=True)
class MailFrom:
    """*Decision.* The client opens a transaction. ``address`` is ``""`` for the null sender ``<>``.

    ``args`` holds the MAIL parameters with upper-case keys: flags (``SMTPUTF8``, ``REQUIRETLS``) map to
    ``True``, others to their value (xtext already decoded for ``ENVID`` and ``AUTH``).
    """

    address: str
    args: Mapping[str, str | bool] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class RcptTo:
    """*Decision.* The client names a recipient. ``args`` as for :class:`MailFrom` (``ORCPT`` decoded)."""

    address: str
    args: Mapping[str, str | bool] = field(default_factory=lambda: _EMPTY)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataStart:
    """*Decision.* The client sent DATA with at least one accepted recipient; accept to answer ``354``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DataChunk:
    """A piece of the message, dot-unstuffed. Pieces are as large as the input allows; join them in order."""

    data: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class DataEnd:
    """The message is complete: ``size`` octets (after unstuffing) were received.

    *Decision* when ``refusal`` is ``None``: reply once (SMTP) or once per accepted recipient (LMTP).
    When ``refusal`` is set the connection has already refused the message with it (size limit exceeded, or
    bare line endings under the ``reject`` policy) — discard whatever chunks were delivered and do not reply.
    """

    size: int
    size_exceeded: bool = False
    refusal: Reply | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Reset:
    """The client sent RSET; any open transaction is gone. Informational."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Verify:
    """*Decision.* VRFY: accepting answers ``252`` (cannot verify, will try); reply 250/251/550 to really verify."""

    argument: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Quit:
    """The client sent QUIT; ``221`` is queued and the connection is closing. Informational."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTLS:
    """The client asked for TLS and ``220 2.0.0`` is queued. Informational, but the driver must act.

    Flush ``data_to_send()``, run the server-side TLS handshake, then call
    :meth:`~smtpproto.ServerConnection.tls_established`; until then ``next_event()`` returns ``PAUSED``.
    Everything the client sent after the STARTTLS line in plaintext has been discarded (CVE-2011-0411) —
    feed only bytes decrypted after the handshake.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    """The session is over: flush ``data_to_send()`` and close the socket.

    ``transaction_aborted`` is True when the peer went away inside a mail transaction (nothing of it may be
    delivered).
    """

    transaction_aborted: bool = False


#: Any event :meth:`~smtpproto.ServerConnection.next_event` can return (the sentinels aside).
Event: TypeAlias = (
    Hello
    | MailFrom
    | RcptTo
    | DataStart
    | DataChunk
    | DataEnd
    | Reset
    | Verify
    | Quit
    | StartTLS
    | AuthRequest
    | ProxyHeader
    | XClient
    | XForward
    | ConnectionClosed
)


# -- private fast constructors ---------------------------------------------------------------------------
# The connection builds the events of every mail transaction through these. A frozen dataclass's generated
# __init__ goes through type.__call__ with keywords and sets each field with object.__setattr__, several
# times the cost of setting the slots directly; the objects are the same (same class, same fields).

_new = object.__new__


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None]:
    """The ``__set__`` of the slot behind a field: it bypasses the frozen ``__setattr__``."""
    setter: Callable[[Any, Any], None] = vars(cls)[name].__set__
    return setter


_MAIL_ADDRESS = _slot_setter(MailFrom, "address")
_MAIL_ARGS = _slot_setter(MailFrom, "args")
_RCPT_ADDRESS = _slot_setter(RcptTo, "address")
_RCPT_ARGS = _slot_setter(RcptTo, "args")
_CHUNK_DATA = _slot_setter(DataChunk, "data")
_END_SIZE = _slot_setter(DataEnd, "size")
_END_SIZE_EXCEEDED = _slot_setter(DataEnd, "size_exceeded")
_END_REFUSAL = _slot_setter(DataEnd, "refusal")


def new_mail_from(address: str, args: Mapping[str, str | bool]) -> MailFrom:
    """``MailFrom(address=address, args=args)``, faster."""
    event = _new(MailFrom)
    _MAIL_ADDRESS(event, address)
    _MAIL_ARGS(event, args)
    return event


def new_rcpt_to(address: str, args: Mapping[str, str | bool]) -> RcptTo:
    """``RcptTo(address=address, args=args)``, faster."""
    event = _new(RcptTo)
    _RCPT_ADDRESS(event, address)
    _RCPT_ARGS(event, args)
    return event


def new_data_start() -> DataStart:
    """``DataStart()``, faster."""
    return _new(DataStart)


def new_data_chunk(data: bytes) -> DataChunk:
    """``DataChunk(data=data)``, faster."""
    event = _new(DataChunk)
    _CHUNK_DATA(event, data)
    return event


def new_data_end(size: int, size_exceeded: bool, refusal: Reply | None) -> DataEnd:
    """``DataEnd(size=size, size_exceeded=size_exceeded, refusal=refusal)``, faster."""
    event = _new(DataEnd)
    _END_SIZE(event, size)
    _END_SIZE_EXCEEDED(event, size_exceeded)
    _END_REFUSAL(event, refusal)
    return event
