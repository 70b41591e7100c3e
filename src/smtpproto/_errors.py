"""Exceptions: protocol errors of either side, and the error an application raises to refuse."""

from __future__ import annotations

from ._replies import Reply

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError", "SMTPError"]


class ProtocolError(Exception):
    """Base class of the errors a :class:`~smtpproto.ServerConnection` raises."""


class LocalProtocolError(ProtocolError):
    """The application broke the protocol, for example by replying twice or when no reply was due."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol beyond recovery.

    The connection has already queued :attr:`reply` (usually a ``421``) before raising, so a driver flushes
    ``data_to_send()`` and closes. ``reply`` is ``None`` where nothing may be said (a malformed PROXY header:
    the peer is not an SMTP client yet).
    """

    def __init__(self, message: str, reply: Reply | None) -> None:
        super().__init__(message)
        self.reply = reply


class SMTPError(Exception):
    """Raised by application code (e.g. an adapter hook) to refuse with a specific reply."""

    def __init__(self, code: int, message: str, enhanced: str | None = None) -> None:
        super().__init__(code, message, enhanced)
        self.reply = Reply(code, message, enhanced)

    def __str__(self) -> str:
        return self.reply.to_bytes().decode("utf-8", "replace").strip()
