"""A real HAProxy with ``send-proxy-v2`` in front of ``smtpproto serve --proxy-protocol``: with
``--workers 2``, and with ``--implicit-tls``.

HAProxy must be installed (``.ci/run`` installs it); without it this test fails rather than skips. The
client connects from 127.0.0.2, so the address the server records can only have come from the PROXY
header: the TCP peer the server sees is HAProxy at 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import TIMEOUT, free_port, message_files, unverified_context

CONFIG = """\
global
    maxconn 256

defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s

frontend smtp_in
    bind 127.0.0.1:{front}
    default_backend smtpproto

backend smtpproto
    server s1 127.0.0.1:{back} send-proxy-v2
"""


def _wait_listening(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert process.poll() is None, process.communicate(timeout=TIMEOUT)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def _haproxy(tmp_path: Path, back: int) -> Iterator[int]:
    """HAProxy with ``send-proxy-v2`` in front of the server at port ``back``; yields its front port."""
    haproxy = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    assert haproxy, "haproxy is not installed (apt-get install haproxy; .ci/run does it)"
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(CONFIG.format(front=front, back=back), encoding="utf-8")
    check = subprocess.run(
        [haproxy, "-c", "-f", str(config)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    proxy = subprocess.Popen(
        [haproxy, "-db", "-f", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_listening(front, proxy)
        yield front
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait(TIMEOUT)
        if proxy.stdout is not None:
            proxy.stdout.close()


def test_haproxy_send_proxy_v2_passes_the_client_address(serve, tmp_path: Path) -> None:
    server = serve("--proxy-protocol", "--workers", "2")
    assert "PROXY protocol" in server.banner
    with _haproxy(tmp_path, server.port) as front:
        for i in range(4):
            with smtplib.SMTP(
                "127.0.0.1",
                front,
                local_hostname="client.test",
                source_address=("127.0.0.2", 0),
                timeout=TIMEOUT,
            ) as client:
                body = b"Subject: via haproxy %d\r\n\r\nhello\r\n" % i
                assert client.sendmail("alice@example.org", ["bob@example.net"], body) == {}
        lines = server.lines_matching(r" from=<alice@example\.org> ", 4)
    # The session saw the original client, not HAProxy's own connection from 127.0.0.1.
    assert all(" 127.0.0.2:" in line for line in lines), lines
    files = message_files(tmp_path / "maildir")
    assert len(files) == 4
    for path in files:
        data = path.read_bytes()
        assert data.startswith(b"Received: from client.test ([127.0.0.2])\r\n"), data[:200]
        assert b"\r\nSubject: via haproxy " in data
    # Without the header a connection is dropped without a word: the listener really expects PROXY.
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as direct:
        direct.sendall(b"EHLO c.test\r\n")
        assert direct.recv(100) == b""
    assert server.stop() == 0


def test_haproxy_in_front_of_implicit_tls(serve, tmp_path: Path) -> None:
    # Port 465 behind a balancer: HAProxy sends the header in plaintext, then passes the client's TLS on.
    server = serve("--proxy-protocol", "--implicit-tls", "--self-signed")
    assert "implicit TLS" in server.banner
    assert "PROXY protocol" in server.banner
    with _haproxy(tmp_path, server.port) as front:
        with smtplib.SMTP_SSL(
            "127.0.0.1",
            front,
            local_hostname="client.test",
            source_address=("127.0.0.2", 0),
            context=unverified_context(),
            timeout=TIMEOUT,
        ) as client:
            assert (
                client.sendmail("alice@example.org", ["bob@example.net"], b"Subject: 465\r\n") == {}
            )
        [line] = server.lines_matching(r" from=<alice@example\.org> ", 1)
    assert " 127.0.0.2:" in line, line
    [path] = message_files(tmp_path / "maildir")
    data = path.read_bytes()
    assert data.startswith(
        b"Received: from client.test ([127.0.0.2])\r\n\tby mx.test with ESMTPS "
    ), data
    # A TLS client straight at the port sends no header: it is dropped without a word, even in TLS.
    direct = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
    with direct, pytest.raises((ssl.SSLError, ConnectionResetError)):  # EOF or reset, no reply
        unverified_context().wrap_socket(direct)
    assert server.stop() == 0
