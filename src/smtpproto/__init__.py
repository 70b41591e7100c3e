"""smtpproto: a sans-I/O SMTP and LMTP server protocol engine.

The core is a pure state machine — :class:`ServerConnection` — that turns the bytes a client sends into
events and the application's replies into bytes. It imports only the standard library.
"""

from ._config import LineEndings, ServerConfig
from ._connection import ServerConnection, TLSDetails
from ._errors import LocalProtocolError, ProtocolError, RemoteProtocolError, SMTPError
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataStart,
    Event,
    Hello,
    MailFrom,
    ProxyHeader,
    Quit,
    RcptTo,
    Reset,
    Sentinel,
    StartTLS,
    Verify,
    XClient,
    XForward,
)
from ._proxy import ProxyHeaderError, read_proxy_header
from ._replies import Reply
from ._state import Command, SessionState
from ._version import __version__

__all__ = [
    "NEED_DATA",
    "PAUSED",
    "AuthRequest",
    "Command",
    "ConnectionClosed",
    "DataChunk",
    "DataEnd",
    "DataStart",
    "Event",
    "Hello",
    "LineEndings",
    "LocalProtocolError",
    "MailFrom",
    "ProtocolError",
    "ProxyHeader",
    "ProxyHeaderError",
    "Quit",
    "RcptTo",
    "RemoteProtocolError",
    "Reply",
    "Reset",
    "SMTPError",
    "Sentinel",
    "ServerConfig",
    "ServerConnection",
    "SessionState",
    "StartTLS",
    "TLSDetails",
    "Verify",
    "XClient",
    "XForward",
    "__version__",
    "read_proxy_header",
]
