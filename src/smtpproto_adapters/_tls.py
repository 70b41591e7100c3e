"""TLS material: the server's SSLContext, SNI selection, and a self-signed certificate when none is given.

``cryptography`` is imported only when a certificate has to be generated, so a server with its own
certificate (or without TLS) never needs it.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
import tempfile
import threading
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from ._options import ServerOptions

__all__ = [
    "TLSSetup",
    "capture_servername",
    "self_signed_context",
    "self_signed_pem",
    "server_context",
]

_SSLObject = ssl.SSLObject | ssl.SSLSocket

# The SNI callback also reports the name here, for backends whose TLS stream does not expose its SSLObject
# (trio.SSLStream). The callback runs synchronously inside the handshake, so it sees the context of the task
# or thread that drives that handshake.
_SERVERNAME_SINK: ContextVar[list[str] | None] = ContextVar("smtpproto_servername", default=None)


@contextmanager
def capture_servername() -> Iterator[list[str]]:
    """Collect the SNI name of a handshake driven by the current task inside the block.

    The yielded list gets the (lower-cased) name once the client sends one; it stays empty without SNI.
    """
    sink: list[str] = []
    token = _SERVERNAME_SINK.set(sink)
    try:
        yield sink
    finally:
        _SERVERNAME_SINK.reset(token)


def server_context(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str] | None = None
) -> ssl.SSLContext:
    """A server-side context with modern defaults (TLS 1.2+) and the given PEM certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    return context


def self_signed_pem(hostname: str = "localhost") -> tuple[bytes, bytes]:
    """A fresh ECDSA P-256 key and a one-year self-signed certificate for ``hostname``, as PEM.

    The certificate also names 127.0.0.1 and ::1, so clients that check addresses accept it once trusted.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def self_signed_context(hostname: str = "localhost") -> ssl.SSLContext:
    """A server context holding a freshly generated self-signed certificate (see :func:`self_signed_pem`)."""
    cert_pem, key_pem = self_signed_pem(hostname)
    # load_cert_chain only reads files; the key file lives for a moment in a private directory.
    with tempfile.TemporaryDirectory(prefix="smtpproto-") as tmp:
        path = os.path.join(tmp, "self-signed.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key_pem + cert_pem)
        return server_context(path)


class TLSSetup:
    """The TLS side of one server: its default context, SNI selection, and the SNI name of each handshake.

    An ``sni_callback`` is installed on the default context (chaining any callback it already had): it
    records the name the client asked for and switches to ``sni[name]`` when there is one.
    """

    def __init__(
        self, context: ssl.SSLContext, sni: Mapping[str, ssl.SSLContext] | None = None
    ) -> None:
        self.context = context
        self._sni = dict(sni or {})
        self._names: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()  # handshakes of the blocking backend run in many threads
        previous = context.sni_callback

        # typeshed says SSLObject and str; at run time it is the SSLSocket or SSLObject, and None without SNI.
        def select(obj: ssl.SSLObject, servername: str, ctx: ssl.SSLContext) -> int | None:
            if servername:
                name = servername.lower()
                with self._lock:
                    self._names[obj] = name
                sink = _SERVERNAME_SINK.get()
                if sink is not None:
                    sink.append(name)
                if name in self._sni:
                    obj.context = self._sni[name]
            if previous is not None:
                return previous(obj, servername, ctx)
            return None

        context.sni_callback = select

    def servername(self, ssl_object: _SSLObject) -> str | None:
        """The SNI name the client sent during the handshake of ``ssl_object`` (None if it sent none)."""
        with self._lock:
            return self._names.pop(ssl_object, None)

    @classmethod
    def from_options(cls, options: ServerOptions, logger: logging.Logger) -> TLSSetup | None:
        """The TLS setup ``options`` ask for, or None when the server speaks plaintext only.

        TLS is wanted for implicit TLS and whenever STARTTLS is not disabled. Without a certificate a
        self-signed one is generated (with a warning unless ``self_signed`` asked for it); when STARTTLS was
        only wanted by default and ``cryptography`` is missing, the server runs without TLS and says so.
        """
        if options.ssl_context is not None:
            context = options.ssl_context
        elif options.tls_cert is not None:
            context = server_context(options.tls_cert, options.tls_key)
        elif options.secure or options.self_signed or options.starttls_enabled:
            try:
                context = self_signed_context("localhost")
            except ImportError:
                if options.secure or options.self_signed:
                    raise RuntimeError(
                        "TLS needs a certificate: pass ssl_context or tls_cert, "
                        "or install 'cryptography' to generate a self-signed one"
                    ) from None
                logger.warning(
                    "STARTTLS not offered: no certificate given and 'cryptography' is not installed"
                )
                return None
            if not options.self_signed:
                logger.warning(
                    "no TLS certificate configured: using a generated self-signed certificate for "
                    "'localhost' (pass ssl_context/tls_cert, or self_signed=True to silence this)"
                )
        else:
            return None
        return cls(context, options.sni)
