"""The objects handed to hooks: the session, its envelope and addresses, TLS and proxy details.

These are plain typed records (no ``__getattr__`` forwarding): what the server knows about a connection is a
field here, filled in by the pump as the conversation goes on.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import smtpproto

__all__ = ["Address", "Envelope", "ProxyInfo", "Session", "TLSInfo", "new_session_id"]

_NO_ARGS: Mapping[str, str | bool] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Address:
    """A MAIL FROM or RCPT TO address: ``address`` (``""`` for the null sender) and its parameters.

    ``args`` maps upper-case parameter names to values (``True`` for a flag such as ``SMTPUTF8``).
    """

    address: str
    args: Mapping[str, str | bool] = field(default_factory=lambda: _NO_ARGS)


@dataclass(slots=True)
class Envelope:
    """The mail transaction so far: the accepted sender and the accepted recipients, in RCPT order."""

    mail_from: Address | None = None
    rcpt_to: list[Address] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TLSInfo:
    """What a finished TLS handshake negotiated.

    ``servername`` is the SNI name the client asked for (``None`` if it sent none), ``protocol`` the version
    (``"TLSv1.3"``) and ``cipher`` the cipher suite name (``"TLS_AES_256_GCM_SHA384"``).
    """

    servername: str | None
    protocol: str
    cipher: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyInfo:
    """The PROXY protocol header a trusted load balancer sent before SMTP began (HAProxy v1 or v2).

    Addresses and ports are ``None`` for ``UNKNOWN``/``LOCAL`` headers; ``tlvs`` holds the raw v2 TLVs.
    """

    version: int
    command: str
    family: str
    source_address: str | None = None
    source_port: int | None = None
    destination_address: str | None = None
    destination_port: int | None = None
    tlvs: Mapping[int, bytes] = field(default_factory=lambda: MappingProxyType({}))


#: Each of the 256 octet values to one of the 32 base32 digits (value mod 32: every digit equally likely).
_BASE32_DIGITS = bytes(b"abcdefghijklmnopqrstuvwxyz234567"[i % 32] for i in range(256))


def new_session_id() -> str:
    """A random 16-character session id (lower-case base32), unique enough to correlate log lines."""
    # 80 random bits, as base32 of 10 random octets has, without base64.b32encode's per-call Python work.
    return secrets.token_bytes(16).translate(_BASE32_DIGITS).decode("ascii")


@dataclass(slots=True, kw_only=True)
class Session:
    """One client connection, as the hooks see it. The same object lives for the whole connection.

    Put your own per-connection state in :attr:`data`; the other fields are kept up to date by the server.
    """

    #: Unique id of the connection, also used in log records.
    id: str = field(default_factory=new_session_id)
    #: The client's address and port (from the PROXY header or XCLIENT/XFORWARD when those are in use).
    remote_address: str = ""
    #: The client's port (see ``remote_address``).
    remote_port: int = 0
    #: The address and port the client connected to.
    local_address: str = ""
    #: The port the client connected to.
    local_port: int = 0
    #: The client's reverse-DNS name, or ``[ip]`` when there is none or reverse lookup is disabled.
    client_hostname: str = ""
    #: ``"HELO"``, ``"EHLO"`` or ``"LHLO"`` once the client introduced itself.
    opening_command: str | None = None
    #: The (lower-cased) name the client gave in HELO/EHLO/LHLO.
    host_name_appears_as: str | None = None
    #: The current mail transaction.
    envelope: Envelope = field(default_factory=Envelope)
    #: What ``on_auth`` returned for the authenticated user (the username if it returned ``None``/``True``).
    user: Any = None
    #: 1-based number of the current mail transaction on this connection.
    transaction: int = 1
    #: True once the connection is encrypted (implicit TLS or after STARTTLS).
    secure: bool = False
    #: The TLS details, once the connection is encrypted.
    tls: TLSInfo | None = None
    #: The PROXY protocol header, when ``use_proxy`` is on.
    proxy: ProxyInfo | None = None
    #: Attributes of the last XCLIENT command (upper-case names, as sent).
    xclient: dict[str, str] = field(default_factory=dict)
    #: Attributes of the last XFORWARD command (upper-case names, as sent).
    xforward: dict[str, str] = field(default_factory=dict)
    #: True when the server speaks LMTP.
    lmtp: bool = False
    #: Free for the application: anything the hooks want to keep for this connection.
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def transmission_type(self) -> str:
        """The ``with`` clause of a Received header: ``SMTP``/``ESMTP``/``LMTP``, then ``S`` (TLS), ``A`` (auth).

        For example ``ESMTPSA`` for an EHLO session over TLS with an authenticated user (RFC 3848).
        """
        kind = "ESMTP" if self.opening_command == "EHLO" else "SMTP"
        if self.lmtp:
            kind = "LMTP"
        return kind + ("S" if self.secure else "") + ("A" if self.user is not None else "")

    def reset_transaction(self) -> None:
        """Forget the open mail transaction (RSET, HELO/EHLO, end of a message)."""
        self.envelope = Envelope()

    def reset_identity(self) -> None:
        """Forget what the client said before TLS started (RFC 3207 §4.2): greeting, user, transaction."""
        self.opening_command = None
        self.host_name_appears_as = None
        self.user = None
        self.reset_transaction()

    # -- what trusted front ends say about the client ---------------------------------------------------------

    def apply_proxy(self, header: smtpproto.ProxyHeader) -> None:
        """Take the client's address from a PROXY header (kept in :attr:`proxy`)."""
        self.proxy = ProxyInfo(
            version=header.version,
            command=header.command,
            family=header.family,
            source_address=header.source_address,
            source_port=header.source_port,
            destination_address=header.destination_address,
            destination_port=header.destination_port,
            tlvs=header.tlvs,
        )
        if header.source_address is not None and header.family in ("TCP4", "TCP6"):
            self.remote_address = header.source_address
            self.remote_port = header.source_port or 0

    def apply_xclient(self, event: smtpproto.XClient) -> None:
        """Apply an accepted XCLIENT: the session starts over, as for a new client (Postfix semantics)."""
        names = ("name", "addr", "port", "proto", "helo", "login")
        self.xclient.update({n.upper(): v for n in names if (v := getattr(event, n)) is not None})
        self.reset_identity()
        if event.addr is not None and _available(event.addr):
            self.remote_address = event.addr
            self.client_hostname = f"[{event.addr}]"
        self._apply_common(event.name, event.port)
        if event.login is not None and _available(event.login):
            self.user = event.login

    def apply_xforward(self, event: smtpproto.XForward) -> None:
        """Apply an accepted XFORWARD: the original client's details, as a content filter saw them."""
        names = ("name", "addr", "port", "proto", "helo", "ident", "source")
        self.xforward.update({n.upper(): v for n in names if (v := getattr(event, n)) is not None})
        if event.addr is not None and _available(event.addr):
            self.remote_address = event.addr
        self._apply_common(event.name, event.port)
        if event.helo is not None and _available(event.helo):
            self.host_name_appears_as = event.helo.lower()

    def _apply_common(self, name: str | None, port: str | None) -> None:
        if port is not None and port.isdigit():
            self.remote_port = int(port)
        if name is not None and _available(name):
            self.client_hostname = name


def _available(value: str) -> bool:
    """False for empty values and Postfix's ``[UNAVAILABLE]`` / ``[TEMPUNAVAIL]``."""
    return bool(value) and value not in ("[UNAVAILABLE]", "[TEMPUNAVAIL]")
