"""STARTTLS and implicit TLS: smtplib, openssl s_client, swaks and curl; SNI; failed handshakes."""

from __future__ import annotations

import logging
import shutil
import smtplib
import socket
import ssl
import struct
import subprocess
import time

import pytest

from smtpproto_adapters import SMTPError

from .clients import (
    MemoryTLSClient,
    RawClient,
    before_handshake,
    certificate_common_name,
    unverified_context,
    wait_until,
)
from .conftest import Certificates, Recorder

BODY = b"Subject: tls\r\n\r\nover TLS\r\n"


def tool(name: str) -> str:
    """The path of a client tool the suite drives; its absence is a failure, not a skip."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (.ci/run installs it)")
    return path


def test_starttls_with_smtplib(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.starttls(context=unverified_context())[0] == 220
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.sendmail("a@b.test", ["x@y.test"], BODY) == {}
    rec.wait_closed()
    [stored] = rec.stored
    assert stored.body == BODY
    assert stored.transmission_type == "ESMTPS"
    [(session,)] = rec.called("on_secure")
    assert session.secure
    assert session.tls.protocol.startswith("TLSv1.")
    assert session.tls.cipher
    assert session.tls.servername is None


def test_plaintext_pipelined_after_starttls_is_dropped(start_server) -> None:
    server = start_server()
    client = RawClient(server.port)
    client.reply()
    client.expect("EHLO c.test", 250)
    client.send(b"STARTTLS\r\nNOOP\r\nMAIL FROM:<injected@b.test>\r\n")
    assert client.reply()[0] == 220
    client.start_tls(unverified_context())
    # Had the pump fed the plaintext leftovers on, their replies would come first.
    code, lines = client.cmd("EHLO c.test")
    assert code == 250
    assert lines[0].startswith("mx.test")
    client.expect("RCPT TO:<x@y.test>", 503)  # no MAIL ever ran
    client.expect("QUIT", 221)
    client.close()


def test_implicit_tls_with_smtp_ssl(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, secure=True)
    with smtplib.SMTP_SSL("127.0.0.1", server.port, context=unverified_context()) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        assert client.sendmail("a@b.test", ["x@y.test"], BODY) == {}
    rec.wait_closed()
    assert rec.stored[0].transmission_type == "ESMTPS"
    hooks = [name for name, _ in rec.calls]
    assert hooks[:2] == ["on_connect", "on_secure"]
    assert hooks.count("on_secure") == 1


def test_failed_implicit_handshake_is_logged_and_closed(start_server, caplog) -> None:
    rec = Recorder()
    server = start_server(rec, secure=True)
    with caplog.at_level(logging.WARNING, logger="smtpproto_adapters"):
        client = RawClient(server.port)
        client.send(b"EHLO this is not TLS\r\n" * 10)
        rest = client.rest()
        client.close()
        assert rest[:1] in (b"", b"\x15")
        wait_until(lambda: server.statistics().tls_failures == 1)
    # The session is over, not stuck waiting for a loss its transport reports elsewhere.
    wait_until(lambda: server.statistics().connections_active == 0, what="the session to end")
    assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)
    assert rec.calls == []  # no hook ran for it
    with smtplib.SMTP_SSL("127.0.0.1", server.port, context=unverified_context()) as ok:
        assert ok.noop()[0] == 250
    assert server.statistics().errors == 0


def test_a_client_reset_during_the_handshake_ends_the_session(start_server) -> None:
    # Load balancers' health checks do this. The session must end at once, not hang until close().
    server = start_server(Recorder(), secure=True)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    sock.sendall(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(20)
    )  # a ClientHello, cut short
    time.sleep(0.2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # with SO_LINGER 0: a reset, not a FIN
    wait_until(lambda: server.statistics().tls_failures == 1, what="the failed handshake")
    wait_until(lambda: server.statistics().connections_active == 0, what="the session to end")
    with smtplib.SMTP_SSL("127.0.0.1", server.port, context=unverified_context()) as ok:
        assert ok.noop()[0] == 250


def test_failed_starttls_handshake_is_logged_and_closed(start_server, caplog) -> None:
    rec = Recorder()
    server = start_server(rec)
    with caplog.at_level(logging.WARNING, logger="smtpproto_adapters"):
        client = RawClient(server.port)
        client.reply()
        client.expect("EHLO c.test", 250)
        client.expect("STARTTLS", 220)
        client.send(b"\x16\x03\x01\x00\x05garbage that is no ClientHello\r\n")
        rest = client.rest()  # at most a TLS alert record, never an SMTP reply
        client.close()
        assert rest[:1] in (b"", b"\x15")
        rec.wait_closed()
    assert server.statistics().tls_failures == 1
    wait_until(lambda: server.statistics().connections_active == 0, what="the session to end")
    assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)
    assert rec.called("on_secure") == []


def test_on_secure_refusal_closes(start_server) -> None:
    rec = Recorder(rules={"on_secure": SMTPError(554, "TLS client refused", "5.7.1")})
    server = start_server(rec)
    client = RawClient(server.port)
    client.reply()
    client.expect("EHLO c.test", 250)
    client.expect("STARTTLS", 220)
    client.start_tls(unverified_context())
    assert client.reply() == (554, ["5.7.1 TLS client refused"])
    assert client.at_eof()
    client.close()
    rec.wait_closed()


def test_on_secure_refusal_on_implicit_tls(start_server) -> None:
    rec = Recorder(rules={"on_secure": False})
    server = start_server(rec, secure=True)
    with pytest.raises(smtplib.SMTPConnectError) as info:
        smtplib.SMTP_SSL("127.0.0.1", server.port, context=unverified_context())
    assert info.value.smtp_code == 554
    rec.wait_closed()


def _peer_name(port: int, server_hostname: str | None) -> tuple[str, RawClient]:
    client = RawClient(port)
    client.reply()
    client.expect("EHLO c.test", 250)
    client.expect("STARTTLS", 220)
    client.start_tls(unverified_context(), server_hostname=server_hostname)
    assert isinstance(client.sock, ssl.SSLSocket)
    der = client.sock.getpeercert(binary_form=True)
    assert der is not None
    return certificate_common_name(der), client


def test_certificate_files_and_sni(start_server, certificates: Certificates) -> None:
    sni_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sni_context.load_cert_chain(certificates.sni_cert, certificates.sni_key)
    rec = Recorder()
    server = start_server(
        rec,
        self_signed=False,
        tls_cert=str(certificates.cert),
        tls_key=str(certificates.key),
        sni={"SNI.test": sni_context},
    )
    for asked, presented in [
        (None, "localhost"),
        ("sni.test", "sni.test"),
        ("other.test", "localhost"),
    ]:
        name, client = _peer_name(server.port, asked)
        assert name == presented, asked
        client.expect("EHLO c.test", 250)
        client.expect("QUIT", 221)
        client.close()
    rec.wait_closed(3)
    names = [session.tls.servername for (session,) in rec.called("on_secure")]
    assert names == [None, "sni.test", "other.test"]


def test_self_signed_certificate_warning(start_server, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="smtpproto_adapters"):
        quiet = start_server(self_signed=True)
        assert not any("self-signed" in r.getMessage() for r in caplog.records)
        noisy = start_server(self_signed=False)
        assert any("self-signed" in r.getMessage() for r in caplog.records)
    for server in (quiet, noisy):
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.starttls(context=unverified_context())
            assert client.noop()[0] == 250


def test_no_tls_when_starttls_is_disabled(start_server, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="smtpproto_adapters"):
        server = start_server(self_signed=False, disabled_commands=["STARTTLS"])
    assert caplog.records == []
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert not client.has_extn("starttls")


def test_hide_starttls_still_accepts_it(start_server) -> None:
    server = start_server(hide_starttls=True)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert not client.has_extn("starttls")
        client.esmtp_features["starttls"] = ""
        assert client.starttls(context=unverified_context())[0] == 220


def test_openssl_s_client_starttls(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    script = (
        b"EHLO s-client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
        b"Subject: s_client\r\n\r\nhello\r\n.\r\nQUIT\r\n"
    )
    result = subprocess.run(
        [
            tool("openssl"),
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            f"127.0.0.1:{server.port}",
            "-servername",
            "mx.test",
            "-brief",
            "-ign_eof",
        ],
        input=script,
        capture_output=True,
        timeout=20,
        check=False,
    )
    output = result.stdout.decode() + result.stderr.decode()
    assert "CONNECTION ESTABLISHED" in output
    assert "250 2.0.0" in output
    assert "221 2.0.0" in output
    rec.wait_closed()
    assert rec.stored[0].body == b"Subject: s_client\r\n\r\nhello\r\n"
    [(session,)] = rec.called("on_secure")
    assert session.tls.servername == "mx.test"


def test_swaks_starttls(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    result = subprocess.run(
        [
            tool("swaks"),
            "--server",
            f"127.0.0.1:{server.port}",
            "--from",
            "a@b.test",
            "--to",
            "x@y.test",
            "--tls",
            "--body",
            "hello from swaks",
            "--header",
            "Subject: swaks",
        ],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
    rec.wait_closed()
    [stored] = rec.stored
    assert stored.transmission_type == "ESMTPS"
    assert b"Subject: swaks" in stored.body
    assert b"hello from swaks" in stored.body


@pytest.mark.parametrize("use_tls", [False, True])
def test_curl(start_server, tmp_path, use_tls) -> None:
    rec = Recorder()
    server = start_server(rec)
    message = tmp_path / "message.txt"
    message.write_bytes(b"Subject: curl\r\n\r\n.starts with a dot\r\nhello from curl\r\n")
    tls_flags = ["--ssl-reqd", "-k"] if use_tls else []
    result = subprocess.run(
        [
            tool("curl"),
            "-sS",
            *tls_flags,
            "--url",
            f"smtp://127.0.0.1:{server.port}",
            "--mail-from",
            "a@b.test",
            "--mail-rcpt",
            "x@y.test",
            "-T",
            str(message),
        ],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
    rec.wait_closed()
    [stored] = rec.stored
    assert stored.body == message.read_bytes()
    assert stored.transmission_type == ("ESMTPS" if use_tls else "ESMTP")


def test_tls_records_that_arrive_together_or_in_pieces(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, secure=True)
    client = MemoryTLSClient(server.port, b"")
    assert client.reply()[0] == 220
    # Three records in one TCP write: the later two are served from memory, without a recv().
    for line in (b"EHLO c.test\r\n", b"NOOP\r\n", b"NOOP\r\n"):
        client.tls.write(line)
    client.sock.sendall(client._outgoing.read())
    assert client.reply()[0] == 250
    assert [client.reply()[0] for _ in range(2)] == [250, 250]
    # One record cut in two writes: the first recv() brings half a record, the next one the rest.
    client.tls.write(b"NOOP\r\n")
    record = client._outgoing.read()
    client.sock.sendall(record[:4])
    time.sleep(0.2)
    client.sock.sendall(record[4:])
    assert client.reply()[0] == 250
    client.expect("QUIT", 221)
    client.close()
    rec.wait_closed()


def test_a_command_in_the_same_write_as_the_handshake_finished(start_server) -> None:
    # The client's last handshake flight and its first command arrive in one read: the command must be
    # answered, not left in the TLS layer until the client sends more.
    rec = Recorder()
    server = start_server(rec)
    plain = before_handshake(server.port)
    sock = plain.sock
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = unverified_context().wrap_bio(incoming, outgoing)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            sock.sendall(outgoing.read())
            incoming.write(sock.recv(65536))
    tls.write(b"NOOP\r\n")
    sock.sendall(outgoing.read())  # the client's Finished (TLS 1.3) and the NOOP together
    replies = b""
    while b"\r\n" not in replies:
        try:
            replies += tls.read(65536)
        except ssl.SSLWantReadError:
            incoming.write(sock.recv(65536))
    assert replies.startswith(b"250 ")
    plain.close()
    rec.wait_closed()


def test_a_failed_handshake_still_sends_its_alert(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    client = before_handshake(server.port)
    client.send(b"\x16\x03\x01\x00\x05garbage that is no ClientHello\r\n")
    assert client.rest()[:1] == b"\x15"  # OpenSSL's alert record goes out before the close
    client.close()
    rec.wait_closed()
    assert server.statistics().tls_failures == 1
