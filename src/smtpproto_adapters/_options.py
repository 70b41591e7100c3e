"""ServerOptions: every knob of a server, and their translation into the core's :class:`smtpproto.ServerConfig`.

Options that shape the protocol go to the core; the rest (sockets, TLS material, timeouts, logging) stay
with the driver. Limits left at ``None`` take the core's default, so the defaults live in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import smtpproto

__all__ = [
    "ServerOptions",
    "default_hostname",
    "for_peer",
    "has_trust_lists",
    "peer_trusted",
    "to_config",
]

TrustList = bool | Collection[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerOptions:
    """Everything configurable about an ``SMTPServer``; the same on every backend.

    Build one and pass it to ``SMTPServer(handler, options)``, or pass the fields as keyword arguments
    (``SMTPServer(handler, size=10_000_000)``). ``docs/adapters.md`` maps each field to its Node
    ``smtp-server`` counterpart.
    """

    # -- identity and protocol --
    #: Host name in the greeting and EHLO reply; ``None`` means ``socket.getfqdn()`` (or ``localhost``).
    name: str | None = None
    #: Extra text after ``ESMTP``/``LMTP`` in the greeting.
    banner: str = ""
    #: Speak LMTP (RFC 2033) instead of SMTP.
    lmtp: bool = False

    # -- TLS --
    #: Implicit TLS (port 465 style): the handshake happens before the greeting.
    secure: bool = False
    #: The server's TLS context. Mutually exclusive with ``tls_cert``/``tls_key``.
    ssl_context: ssl.SSLContext | None = None
    #: PEM file with the certificate chain (and the private key, when ``tls_key`` is not given).
    tls_cert: str | os.PathLike[str] | None = None
    #: PEM file with the private key, when it is not in ``tls_cert``.
    tls_key: str | os.PathLike[str] | None = None
    #: Generate a self-signed certificate for ``localhost`` at start-up (needs ``cryptography``).
    self_signed: bool = False
    #: SNI: server name (lower case) -> ``ssl.SSLContext`` used when the client asks for that name.
    sni: Mapping[str, ssl.SSLContext] | None = None
    #: Accept STARTTLS but do not advertise it.
    hide_starttls: bool = False
    #: Do not advertise REQUIRETLS (RFC 8689) on TLS connections.
    hide_requiretls: bool = False

    # -- message and extensions --
    #: Largest message in octets (advertised as ``SIZE``); ``None`` for no limit.
    size: int | None = None
    #: Advertise bare ``SIZE`` and skip the declared-size check at MAIL.
    hide_size: bool = False
    #: Leave PIPELINING out of the EHLO reply.
    hide_pipelining: bool = False
    #: Leave 8BITMIME out of the EHLO reply.
    hide_8bitmime: bool = False
    #: Leave SMTPUTF8 out of the EHLO reply.
    hide_smtputf8: bool = False
    #: Leave ENHANCEDSTATUSCODES out of the EHLO reply and send no enhanced status codes
    #: (LMTP keeps them).
    hide_enhanced_status_codes: bool = False
    #: Leave DSN out of the EHLO reply.
    hide_dsn: bool = False
    #: Commands answered as unknown and left out of EHLO (any case; stored upper case).
    disabled_commands: Collection[str] = frozenset()
    #: How bare CR / LF are handled (SMTP smuggling policy); ``None`` for the core's default (reject).
    line_endings: smtpproto.LineEndings | None = None

    # -- authentication (offered only when the handler has ``on_auth``) --
    #: SASL mechanisms offered, in this order: any of PLAIN, LOGIN, CRAM-MD5, XOAUTH2, OAUTHBEARER.
    auth_methods: Collection[str] = ("PLAIN", "LOGIN")
    #: Offer AUTH but do not require it for MAIL/RCPT/DATA.
    auth_optional: bool = False
    #: Allow AUTH with a plaintext mechanism on an unencrypted connection.
    allow_insecure_auth: bool = False

    # -- limits (None: the core's default) --
    #: Recipients per message; one more gets ``452 4.5.3`` (core default 100).
    max_recipients: int | None = None
    #: Longest command line in octets, CRLF included (core default 2048).
    max_command_line: int | None = None
    #: Client errors before ``421`` and close (core default 20).
    max_errors: int | None = None
    #: Commands allowed before AUTH while AUTH is required (core default 10).
    max_unauthenticated_commands: int | None = None
    #: Failed AUTH attempts before ``421`` and close (core default 3).
    max_auth_failures: int | None = None
    #: Most concurrent sessions; a further client gets ``421 4.7.0`` and is closed, no hooks run.
    max_clients: int | None = None

    # -- proxies: True (every peer), False, or a collection of trusted peer addresses --
    #: Expect a PROXY protocol header (v1 or v2) before SMTP: ``True`` or the trusted peer addresses.
    #: With ``secure`` the header comes before the TLS handshake, in plaintext, as HAProxy sends it.
    use_proxy: TrustList = False
    #: Offer Postfix XCLIENT: ``True`` or the trusted peer addresses.
    use_xclient: TrustList = False
    #: Offer Postfix XFORWARD: ``True`` or the trusted peer addresses.
    use_xforward: TrustList = False

    # -- connection management --
    #: Set ``SO_REUSEPORT`` on listening sockets, so that several processes (``smtpproto serve --workers``)
    #: can listen on one port and the kernel spreads connections among them.
    reuse_port: bool = False
    #: Skip the PTR lookup of the client address; ``client_hostname`` becomes ``[ip]``.
    disable_reverse_lookup: bool = False
    #: Idle seconds (also a stalled DATA transfer or TLS handshake) before ``421 4.4.2`` and close.
    socket_timeout: float = 60.0
    #: Seconds ``close()`` lets sessions finish before sending them ``421 4.3.2``.
    close_timeout: float = 30.0
    #: Where log records go; ``None`` for the ``smtpproto_adapters`` logger.
    logger: logging.Logger | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "disabled_commands", frozenset(c.upper() for c in self.disabled_commands))
        if isinstance(self.auth_methods, str):
            raise TypeError("auth_methods is a collection of mechanism names, not a string")
        set_(self, "auth_methods", tuple(m.upper() for m in self.auth_methods))
        if self.sni is not None:
            set_(self, "sni", {name.lower(): ctx for name, ctx in self.sni.items()})
        if self.ssl_context is not None and (self.tls_cert is not None or self.tls_key is not None):
            raise ValueError("give either ssl_context or tls_cert/tls_key, not both")
        if self.tls_key is not None and self.tls_cert is None:
            raise ValueError("tls_key needs tls_cert")
        if self.socket_timeout <= 0 or self.close_timeout < 0:
            raise ValueError("socket_timeout must be > 0 and close_timeout >= 0")
        if self.max_clients is not None and self.max_clients < 1:
            raise ValueError("max_clients must be at least 1 (or None)")
        if self.size is not None and self.size < 0:
            raise ValueError("size must be >= 0 (or None)")
        if self.reuse_port and not hasattr(socket, "SO_REUSEPORT"):
            raise ValueError("reuse_port: SO_REUSEPORT is not available on this platform")

    def replace(self, **changes: Any) -> ServerOptions:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    @property
    def starttls_enabled(self) -> bool:
        """Whether STARTTLS is on (not disabled), i.e. whether a plaintext listener wants TLS."""
        return "STARTTLS" not in self.disabled_commands

    @property
    def hostname(self) -> str:
        """The server name actually used."""
        return self.name or default_hostname()


def default_hostname() -> str:
    """This machine's fully qualified name if it is usable in a greeting, else ``localhost``."""
    name = socket.getfqdn()
    if not name or any(c in name for c in " \r\n\x00") or not name.isascii():
        return "localhost"
    return name


def _cram_md5_nonce() -> str:
    # RFC 2195: the challenge's unique part, conventionally "random.timestamp".
    return f"{secrets.randbelow(10**12)}.{int(time.time())}"


def peer_trusted(trust: TrustList, address: str) -> bool:
    """Whether ``address`` is trusted by a ``use_proxy``/``use_xclient``/``use_xforward`` setting.

    A collection lists trusted addresses (``"*"`` for all); an IPv4-mapped IPv6 peer matches its IPv4 form.
    """
    if isinstance(trust, bool):
        return trust
    if "*" in trust:
        return True
    candidates = {address}
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        pass
    else:
        candidates.add(str(ip))
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.add(str(ip.ipv4_mapped))
    return any(c in trust for c in candidates)


def to_config(
    options: ServerOptions, *, secure: bool, tls_available: bool, auth: bool = False
) -> smtpproto.ServerConfig:
    """The core configuration for a listener of ``options``.

    ``secure``: the listener does implicit TLS. ``tls_available``: a TLS context exists, so STARTTLS can be
    offered. ``auth``: the handler has an ``on_auth`` hook; without one AUTH is not offered at all.
    Trust lists (``use_xclient=["10.0.0.1"]``) are decided per peer by :func:`for_peer`.
    """
    methods = tuple(options.auth_methods) if auth else ()
    kwargs: dict[str, Any] = {
        "hostname": options.hostname,
        "banner": options.banner,
        "lmtp": options.lmtp,
        # Node's size=0 means "no limit", as does SIZE 0 in RFC 1870.
        "max_message_size": options.size or None,
        "hide_size": options.hide_size,
        "secure": secure,
        "tls_available": tls_available or secure,
        "hide_starttls": options.hide_starttls,
        "hide_requiretls": options.hide_requiretls,
        "auth_methods": methods,
        "auth_required": bool(methods) and not options.auth_optional,
        "allow_insecure_auth": options.allow_insecure_auth,
        "nonce_factory": _cram_md5_nonce,
        "use_proxy": options.use_proxy is not False,
        "use_xclient": options.use_xclient is not False,
        "use_xforward": options.use_xforward is not False,
        "disabled_commands": frozenset(options.disabled_commands),
        "hide_pipelining": options.hide_pipelining,
        "hide_8bitmime": options.hide_8bitmime,
        "hide_smtputf8": options.hide_smtputf8,
        "hide_enhanced_status_codes": options.hide_enhanced_status_codes,
        "hide_dsn": options.hide_dsn,
    }
    # Limits left at None keep the core's defaults.
    for name in (
        "max_recipients",
        "max_command_line",
        "max_errors",
        "max_unauthenticated_commands",
        "max_auth_failures",
        "line_endings",
    ):
        value = getattr(options, name)
        if value is not None:
            kwargs[name] = value
    return smtpproto.ServerConfig(**kwargs)


def for_peer(
    config: smtpproto.ServerConfig, options: ServerOptions, address: str
) -> smtpproto.ServerConfig:
    """``config`` with the proxy trust switches decided for the peer at ``address``."""
    lists = [n for n in _TRUST_SWITCHES if _is_list(getattr(options, n))]
    if not lists:
        return config
    trusted = {name: peer_trusted(getattr(options, name), address) for name in lists}
    return _with_trust(
        config,
        trusted.get("use_proxy", config.use_proxy),
        trusted.get("use_xclient", config.use_xclient),
        trusted.get("use_xforward", config.use_xforward),
    )


@functools.lru_cache(maxsize=64)
def _with_trust(
    config: smtpproto.ServerConfig, use_proxy: bool, use_xclient: bool, use_xforward: bool
) -> smtpproto.ServerConfig:
    # One config object per combination of trust decisions (at most eight per server), not one per
    # connection: the core works out its tables once per config object.
    return dataclasses.replace(
        config, use_proxy=use_proxy, use_xclient=use_xclient, use_xforward=use_xforward
    )


def has_trust_lists(options: ServerOptions) -> bool:
    """Whether any proxy trust switch is a list, to be decided per peer by :func:`for_peer`."""
    return any(_is_list(getattr(options, name)) for name in _TRUST_SWITCHES)


_TRUST_SWITCHES = ("use_proxy", "use_xclient", "use_xforward")


def _is_list(trust: TrustList) -> bool:
    return not isinstance(trust, bool)
