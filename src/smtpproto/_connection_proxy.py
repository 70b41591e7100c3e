"""PROXY, XCLIENT and XFORWARD for ServerConnection: what a trusted proxy says about the real client.

:class:`_ProxyMixin` is one of the bases of :class:`~smtpproto.ServerConnection` (see
``_connection_base.py``); the parsers are in ``_proxy.py``.
"""

from __future__ import annotations

from ._connection_base import _ConnectionBase, _ReadResult
from ._errors import RemoteProtocolError
from ._events import XClient
from ._proxy import (
    ProxyHeaderError,
    XAttributeError,
    parse_xclient,
    parse_xforward,
    read_proxy_header,
)
from ._replies import Reply
from ._state import SessionState

__all__: list[str] = []

_NOT_ALLOWED = Reply(550, "Not allowed", "5.7.0")


class _ProxyMixin(_ConnectionBase):
    """The PROXY header reader and the XCLIENT and XFORWARD commands of ServerConnection."""

    # Annotations only: ServerConnection.__init__ sets it.
    _xclient_addr: bool

    def _read_proxy(self) -> _ReadResult:
        try:
            header = read_proxy_header(self._buffer.data)
        except ProxyHeaderError as exc:
            self._state = SessionState.CLOSED
            # Not an SMTP client (yet): nothing is said, the connection just closes.
            raise RemoteProtocolError(f"bad PROXY header: {exc}", None) from None
        if header is None:
            return None
        self._buffer.rescan()
        self._reader = self._read_command
        self._queue(self._greeting())
        return header

    def _xclient(self, argument: str, after: SessionState) -> _ReadResult:
        if not self.config.use_xclient or self._xclient_addr:
            return self._queue_again(_NOT_ALLOWED)
        try:
            event = parse_xclient(argument)
        except XAttributeError as exc:
            return self._error(Reply(501, exc.reason, "5.5.4"))
        return self._decide(event, after)

    def _apply_xclient(self, event: XClient) -> None:
        # Postfix semantics: the session starts over with a new greeting, as if the client had just connected.
        self._xclient_addr = self._xclient_addr or event.addr is not None
        special = (None, "[UNAVAILABLE]", "[TEMPUNAVAIL]")
        self._user = event.login if event.login not in special else None
        self._end_transaction(SessionState.GREETED)
        self._queue(self._greeting())

    def _xforward(self, argument: str, after: SessionState) -> _ReadResult:
        if not self.config.use_xforward or self._xclient_addr:
            return self._queue_again(_NOT_ALLOWED)
        try:
            event = parse_xforward(argument)
        except XAttributeError as exc:
            return self._error(Reply(501, exc.reason, "5.5.4"))
        return self._decide(event, after)
