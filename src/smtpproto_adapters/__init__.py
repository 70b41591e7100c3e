"""Servers that run :mod:`smtpproto` on real I/O, with one hook API on every backend.

Pick a backend by importing its ``SMTPServer``:

* :mod:`smtpproto_adapters.asyncio` — asyncio (hooks are ``async def``);
* :mod:`smtpproto_adapters.trio` — trio (hooks are ``async def``);
* :mod:`smtpproto_adapters.anyio` — anyio, under its asyncio or trio backend (hooks are ``async def``);
* :mod:`smtpproto_adapters.blocking` — plain sockets, a thread per connection (hooks are plain functions).

This package itself imports no backend library; the names below are shared by all backends.
"""

from smtpproto import Reply, SMTPError

from ._options import ServerOptions
from ._server import Statistics
from ._session import Address, Envelope, ProxyInfo, Session, TLSInfo
from ._stream import (
    AsyncDataStream,
    BlockingDataStream,
    DataStreamError,
    MessageAborted,
    MessageRefused,
)

__all__ = [
    "Address",
    "AsyncDataStream",
    "BlockingDataStream",
    "DataStreamError",
    "Envelope",
    "MessageAborted",
    "MessageRefused",
    "ProxyInfo",
    "Reply",
    "SMTPError",
    "ServerOptions",
    "Session",
    "Statistics",
    "TLSInfo",
]
