"""What every backend's SMTPServer shares: options, hooks, TLS, the core config, admission and counters.

A backend's ``SMTPServer`` owns one :class:`ServerState` and only adds its I/O: listening sockets, an accept
loop, a :class:`~smtpproto_adapters._transport.Transport` per connection, a
:class:`~smtpproto_adapters._hooks.Runner`, and the wake-up of idle sessions at shutdown. It then calls
:func:`smtpproto_adapters._pump.run_session` for each connection.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import smtpproto

from ._hooks import HookSet
from ._options import ServerOptions, for_peer, has_trust_lists, to_config
from ._tls import TLSSetup

__all__ = ["ServerState", "Statistics", "build_options"]

_DEFAULT_LOGGER = logging.getLogger("smtpproto_adapters")


@dataclass(frozen=True, slots=True, kw_only=True)
class Statistics:
    """A snapshot of a server's counters (``server.statistics()``)."""

    #: Sessions open now.
    connections_active: int
    #: Sessions accepted since the server started (refused ones not included).
    connections_total: int
    #: Connections turned away by ``max_clients`` (or because the server was closing).
    connections_refused: int
    #: Messages accepted (a 2xx reply after DATA; in LMTP, counted once if any recipient accepted).
    messages: int
    #: Octets of message data received (after dot-unstuffing), accepted or not.
    bytes: int
    #: Hook exceptions and unexpected session failures (each also logged at ERROR).
    errors: int
    #: TLS handshakes that failed (each also logged).
    tls_failures: int


def build_options(options: ServerOptions | None, overrides: dict[str, Any]) -> ServerOptions:
    """``options`` with keyword overrides applied (the SMTPServer constructor's two ways of configuring)."""
    base = options if options is not None else ServerOptions()
    return base.replace(**overrides) if overrides else base


class ServerState:
    """The backend-neutral half of an ``SMTPServer``. Thread-safe: the blocking backend shares it."""

    def __init__(self, handler: object, options: ServerOptions, *, asynchronous: bool) -> None:
        self.handler = handler
        self.options = options
        self.hooks = HookSet.from_handler(handler, asynchronous=asynchronous)
        self.logger = options.logger or _DEFAULT_LOGGER
        self.hostname = options.hostname
        if options.name is None:
            self.options = options = options.replace(name=self.hostname)
        self.tls = TLSSetup.from_options(options, self.logger)
        self.config = to_config(
            options,
            secure=options.secure,
            tls_available=self.tls is not None,
            auth=self.hooks.on_auth is not None,
        )
        self._trust_lists = has_trust_lists(options)
        #: Set by close(): no new sessions are admitted.
        self.closing = False
        self._lock = threading.Lock()
        self._active = 0
        self._counts = dict.fromkeys(
            ("total", "refused", "messages", "bytes", "errors", "tls_failures"), 0
        )

    @property
    def enhanced_codes(self) -> bool:
        """Whether replies carry enhanced status codes (always in LMTP, RFC 2033 §5)."""
        return self.options.lmtp or not self.options.hide_enhanced_status_codes

    def config_for(self, remote_address: str) -> smtpproto.ServerConfig:
        """The core config for a client at ``remote_address`` (trust lists decided for that peer)."""
        if not self._trust_lists:
            return self.config
        return for_peer(self.config, self.options, remote_address)

    def admit(self) -> bool:
        """Count a new session in, unless ``max_clients`` is reached or the server is closing."""
        limit = self.options.max_clients
        with self._lock:
            if self.closing or (limit is not None and self._active >= limit):
                self._counts["refused"] += 1
                return False
            self._active += 1
            self._counts["total"] += 1
            return True

    def release(self) -> None:
        """An admitted session ended."""
        with self._lock:
            self._active -= 1

    def count(self, name: str, amount: int = 1) -> None:
        """Add to one of the counters (``messages``, ``bytes``, ``errors``, ``tls_failures``)."""
        with self._lock:
            self._counts[name] += amount

    def count_message(self, size: int, accepted: bool) -> None:
        """One finished DATA transaction: its ``size`` in bytes, and a message if ``accepted`` (one lock)."""
        with self._lock:
            counts = self._counts
            counts["bytes"] += size
            if accepted:
                counts["messages"] += 1

    @property
    def active(self) -> int:
        """Sessions open now."""
        return self._active

    def statistics(self) -> Statistics:
        """A consistent snapshot of the counters."""
        with self._lock:
            c = self._counts
            return Statistics(
                connections_active=self._active,
                connections_total=c["total"],
                connections_refused=c["refused"],
                messages=c["messages"],
                bytes=c["bytes"],
                errors=c["errors"],
                tls_failures=c["tls_failures"],
            )
