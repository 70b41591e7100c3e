"""Test-side helpers: a raw SMTP client for what smtplib cannot do, certificates, polling."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Flood:
    """Sends ``data`` on ``sock`` from a thread, never reading: until all is sent or the server gives up."""

    def __init__(self, sock: socket.socket, data: bytes) -> None:
        self._sock = sock
        self._data = data
        #: Set when all of ``data`` went out (the server kept reading).
        self.sent_all = threading.Event()
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):  # the server gave up on the connection
            self._sock.sendall(self._data)
            self.sent_all.set()

    def join(self) -> None:
        self._thread.join(10)


class RawClient:
    """A line-level SMTP client: send exactly what a test wants, read replies one at a time."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
        self.sock: socket.socket = socket.create_connection((host, port), timeout)
        self._file = self.sock.makefile("rb")

    def reply(self) -> tuple[int, list[str]]:
        """The next reply: its code and the text of each line (without code and separator)."""
        lines: list[bytes] = []
        while True:
            line = self._file.readline()
            if not line:
                raise EOFError(f"connection closed after {lines!r}")
            lines.append(line)
            if line[3:4] != b"-":
                text = [raw[4:].decode("utf-8").rstrip("\r\n") for raw in lines]
                return int(line[:3]), text

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str) -> tuple[int, list[str]]:
        self.send(line.encode("utf-8") + b"\r\n")
        return self.reply()

    def expect(self, line: str, code: int) -> list[str]:
        got, text = self.cmd(line)
        assert got == code, f"{line!r}: expected {code}, got {got} {text}"
        return text

    def at_eof(self) -> bool:
        """True when the server closed the connection (waits up to the socket timeout)."""
        try:
            return self._file.read(1) == b""
        except ConnectionResetError:
            return True

    def rest(self) -> bytes:
        """Everything the server still sends until it closes the connection."""
        chunks = []
        try:
            while chunk := self._file.read1(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks)

    def start_tls(self, context: ssl.SSLContext, server_hostname: str | None = None) -> None:
        self._file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
        self._file = self.sock.makefile("rb")

    def close(self) -> None:
        self._file.close()
        self.sock.close()


class MemoryTLSClient(RawClient):
    """An implicit-TLS client that sends ``prefix`` (a PROXY header) and its ClientHello in one write.

    The handshake runs over :class:`ssl.MemoryBIO`, so the test, not the socket layer, decides what goes
    into each write: the server's first read gets the header and the ClientHello together. After the
    handshake it is a :class:`RawClient` whose lines travel inside TLS.
    """

    def __init__(self, port: int, prefix: bytes, host: str = "127.0.0.1", timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout)
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = unverified_context().wrap_bio(self._incoming, self._outgoing)
        try:
            with contextlib.suppress(ssl.SSLWantReadError):
                self.tls.do_handshake()  # produces the ClientHello, then wants the server's answer
            self.sock.sendall(prefix + self._outgoing.read())
            self._run(self.tls.do_handshake)
        except BaseException:
            self.sock.close()
            raise
        self._pending = b""
        self._file = self  # RawClient reads replies with self._file.readline()

    def _run(self, method: Callable[..., Any], *args: Any) -> Any:
        """Call an SSLObject method until it completes, moving TLS records to and from the socket."""
        while True:
            try:
                result = method(*args)
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(65536)
                if not data:
                    raise EOFError("connection closed inside TLS") from None
                self._incoming.write(data)
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        if data := self._outgoing.read():
            self.sock.sendall(data)

    def readline(self) -> bytes:
        """The next decrypted line (CRLF included), or what is left (``b""``) once the server closed."""
        while b"\n" not in self._pending:
            try:
                self._pending += self._run(self.tls.read, 65536)
            except (EOFError, ssl.SSLZeroReturnError, ConnectionResetError):
                line, self._pending = self._pending, b""
                return line
        line, newline, self._pending = self._pending.partition(b"\n")
        return line + newline

    def send(self, data: bytes) -> None:
        self._run(self.tls.write, data)

    def close(self) -> None:
        self.sock.close()


def client_hello() -> bytes:
    """The first flight of a TLS client: what a server that expects a PROXY header must never take for one."""
    tls = unverified_context().wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def before_handshake(port: int) -> RawClient:
    """A client greeted, through EHLO and STARTTLS: what it sends next belongs to the TLS handshake."""
    client = RawClient(port)
    assert client.reply()[0] == 220
    client.expect("EHLO c.test", 250)
    client.expect("STARTTLS", 220)
    return client


def starttls_client(port: int, *, strict_eof: bool = False) -> RawClient:
    """A client greeted, through EHLO, STARTTLS and the handshake, and greeted again inside TLS.

    ``strict_eof``: a close without the server's close_notify is an error, not an end of stream.
    """
    client = before_handshake(port)
    client.start_tls(unverified_context())
    if strict_eof:
        assert isinstance(client.sock, ssl.SSLSocket)
        client.sock.suppress_ragged_eofs = False
    client.expect("EHLO c.test", 250)
    return client


def make_certificate(directory: Path, common_name: str) -> tuple[Path, Path]:
    """A self-signed RSA certificate for ``common_name`` (written by the tests, not by the code under test)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(common_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{common_name}.crt"
    key_path = directory / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def certificate_common_name(der: bytes) -> str:
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
