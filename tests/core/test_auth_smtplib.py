"""AUTH against Python's own ``smtplib.login()`` over a real loopback socket (PLAIN, LOGIN, CRAM-MD5).

smtplib is an independent client: it picks the mechanism from the EHLO line, sends ``AUTH PLAIN <ir>``,
``AUTH LOGIN <b64 user>`` (an initial response, CONFORMANCE §4 LOGIN) and the RFC 2195 CRAM-MD5 answer, and
checks the replies itself. The server is a thread running the plain driver loop around the core; there is
no TLS in the core tests, so ``allow_insecure_auth=True``. Every socket has a timeout and every thread is
joined with one.
"""

from __future__ import annotations

import itertools
import smtplib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from smtpproto import (
    NEED_DATA,
    AuthRequest,
    ConnectionClosed,
    ProtocolError,
    RemoteProtocolError,
    ServerConfig,
    ServerConnection,
)

TIMEOUT = 5.0
SECRET = "secret"


@dataclass
class Server:
    """One connection on a loopback socket, served by a thread; records what it saw."""

    config: ServerConfig
    listener: socket.socket = field(init=False)
    thread: threading.Thread = field(init=False)
    requests: list[AuthRequest] = field(default_factory=list)
    received: bytearray = field(default_factory=bytearray)
    error: Exception | None = None

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def port(self) -> int:
        port: int = self.listener.getsockname()[1]
        return port

    def _serve(self) -> None:
        try:
            sock, _ = self.listener.accept()
            with sock:
                sock.settimeout(TIMEOUT)
                self._loop(sock)
        except (OSError, AssertionError, ProtocolError, RuntimeError) as exc:  # for the test thread
            self.error = exc

    def _loop(self, sock: socket.socket) -> None:
        conn = ServerConnection(self.config)
        sock.sendall(conn.data_to_send())
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                sock.sendall(conn.data_to_send())
                return
            if event is NEED_DATA:
                sock.sendall(conn.data_to_send())
                data = sock.recv(65536)
                self.received += data
                conn.receive_data(data)
                continue
            if isinstance(event, ConnectionClosed):
                sock.sendall(conn.data_to_send())
                return
            if isinstance(event, AuthRequest):
                self.requests.append(event)
                # The application holds the secret: the core only hands over what proves it.
                if event.verify_password(SECRET):
                    conn.accept()
                else:
                    conn.reject()
            elif conn.awaiting is not None:
                conn.accept()


@contextmanager
def serving(mechanism: str) -> Iterator[Server]:
    nonces = itertools.count(1)
    config = ServerConfig(
        hostname="mx.test",
        auth_methods=(mechanism,),
        allow_insecure_auth=True,
        nonce_factory=lambda: f"{next(nonces)}.1700000000",
    )
    server = Server(config)
    server.thread.start()
    try:
        yield server
    finally:
        server.thread.join(TIMEOUT)
        server.listener.close()
        assert not server.thread.is_alive(), "the server thread did not finish"
    if server.error is not None:
        raise server.error


def client(server: Server) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", server.port, local_hostname="client.test", timeout=TIMEOUT)


MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5"]


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_smtplib_login(mechanism: str) -> None:
    with serving(mechanism) as server:
        smtp = client(server)
        try:
            smtp.ehlo()
            assert smtp.has_extn("auth")
            assert smtp.esmtp_features["auth"].strip() == mechanism
            code, text = smtp.login("user", SECRET)
            assert (code, text) == (235, b"2.7.0 Authentication successful")
            # Once authenticated, a transaction goes through on the same connection.
            smtp.sendmail("a@b.test", ["x@y.test"], b"Subject: t\r\n\r\nhi\r\n")
        finally:
            smtp.quit()
    assert [request.mechanism for request in server.requests] == [mechanism]
    assert server.requests[0].username == "user"


def test_smtplib_login_sends_an_initial_response() -> None:
    with serving("LOGIN") as server:
        smtp = client(server)
        try:
            smtp.login("user", SECRET)
        finally:
            smtp.quit()
    # base64("user"): the username rides on the AUTH line, and the one prompt left is Password:.
    assert b"AUTH LOGIN dXNlcg==\r\n" in server.received


def test_smtplib_cram_md5_answers_our_challenge() -> None:
    with serving("CRAM-MD5") as server:
        smtp = client(server)
        try:
            smtp.login("user", SECRET)
        finally:
            smtp.quit()
    (request,) = server.requests
    assert request.challenge == "<1.1700000000@mx.test>"
    assert request.digest is not None
    assert len(request.digest) == 32


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_smtplib_wrong_password(mechanism: str) -> None:
    with serving(mechanism) as server:
        smtp = client(server)
        try:
            with pytest.raises(smtplib.SMTPAuthenticationError) as caught:
                smtp.login("user", "wrong")
            assert caught.value.smtp_code == 535
            assert caught.value.smtp_error == b"5.7.8 Authentication credentials invalid"
            # The session survives a failed attempt.
            assert smtp.noop() == (250, b"2.0.0 OK")
        finally:
            smtp.quit()
    assert len(server.requests) == 1
    assert not server.requests[0].verify_password(SECRET)
