"""AUTH through on_auth: smtplib login (PLAIN, LOGIN, CRAM-MD5), swaks, refusals, and log redaction."""

from __future__ import annotations

import base64
import logging
import smtplib
import subprocess

import pytest

from smtpproto_adapters import Reply, Session, SMTPError

from .clients import RawClient, unverified_context
from .conftest import Recorder
from .test_tls import tool

PASSWORD = "s3cret-Pa55"


class User:
    def __init__(self, name: str) -> None:
        self.name = name


def check_password(auth, session: Session) -> object:
    if auth.username == "boom":
        raise RuntimeError("auth backend down")
    if auth.username == "locked":
        raise SMTPError(454, "Temporary authentication failure", "4.7.0")
    return User(auth.username) if auth.verify_password(PASSWORD) else False


def auth_recorder() -> Recorder:
    rec = Recorder(rules={"on_auth": check_password})
    rec.hooks = (*rec.hooks, "on_auth")
    return rec


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_login_over_starttls(start_server, mechanism) -> None:
    rec = auth_recorder()
    server = start_server(rec, auth_methods=["PLAIN", "LOGIN", "CRAM-MD5"])
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.starttls(context=unverified_context())
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail("a@b.test", ["x@y.test"], b"before auth\r\n")
        assert info.value.smtp_code == 530
        client.user, client.password = "alice", PASSWORD
        code, _ = client.auth(
            mechanism, getattr(client, f"auth_{mechanism.lower().replace('-', '_')}")
        )
        assert code == 235
        assert client.sendmail("a@b.test", ["x@y.test"], b"after auth\r\n") == {}
    rec.wait_closed()
    [stored] = rec.stored
    assert stored.transmission_type == "ESMTPSA"
    session = rec.closed[0]
    assert isinstance(session.user, User)
    assert session.user.name == "alice"
    [(auth, _)] = rec.called("on_auth")
    assert (auth.mechanism, auth.username) == (mechanism, "alice")


@pytest.mark.parametrize(("user", "code"), [("alice-wrong", 535), ("locked", 454), ("boom", 451)])
def test_auth_refusals(start_server, user, code) -> None:
    rec = auth_recorder()
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.starttls(context=unverified_context())
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login(user, "wrong" if user == "alice-wrong" else PASSWORD)
        assert info.value.smtp_code == code
        client.login("alice", PASSWORD)  # the session survives a refusal (or a broken hook)
    rec.wait_closed()
    assert rec.closed[0].user.name == "alice"


def test_on_auth_may_return_a_reply_or_true(start_server) -> None:
    def decide(auth, session: Session) -> object:
        return True if auth.username == "alice" else Reply(535, "Go away", "5.7.8")

    rec = Recorder(rules={"on_auth": decide})
    rec.hooks = (*rec.hooks, "on_auth")
    server = start_server(rec, auth_optional=True)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.starttls(context=unverified_context())
        assert client.sendmail("a@b.test", ["x@y.test"], b"optional\r\n") == {}
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("bob", PASSWORD)
        client.login("alice", PASSWORD)
    rec.wait_closed()
    assert rec.closed[0].user == "alice"  # True stands for the username


def test_no_on_auth_means_no_auth(start_server) -> None:
    server = start_server(allow_insecure_auth=True)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert not client.has_extn("auth")
        client.starttls(context=unverified_context())
        client.ehlo()
        assert not client.has_extn("auth")
        assert client.sendmail("a@b.test", ["x@y.test"], b"no auth needed\r\n") == {}


def test_insecure_auth_only_when_allowed(start_server) -> None:
    strict = start_server(auth_recorder())
    with smtplib.SMTP("127.0.0.1", strict.port) as client:
        client.ehlo()
        assert not client.has_extn("auth")
    lax = start_server(auth_recorder(), allow_insecure_auth=True)
    with smtplib.SMTP("127.0.0.1", lax.port) as client:
        client.login("alice", PASSWORD)


def test_swaks_auth(start_server) -> None:
    rec = auth_recorder()
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
            "--auth",
            "LOGIN",
            "--auth-user",
            "alice",
            "--auth-password",
            PASSWORD,
        ],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode()
    rec.wait_closed()
    assert rec.stored[0].transmission_type == "ESMTPSA"


def test_log_redacts_auth(start_server, caplog) -> None:
    rec = auth_recorder()
    server = start_server(rec, allow_insecure_auth=True)
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    user_b64 = base64.b64encode(b"alice").decode()
    password_b64 = base64.b64encode(PASSWORD.encode()).decode()
    with caplog.at_level(logging.DEBUG, logger="smtpproto_adapters"):
        client = RawClient(server.port)
        client.reply()
        client.expect("EHLO c.test", 250)
        client.expect(f"AUTH PLAIN {token}", 235)
        client.close()
        second = RawClient(server.port)
        second.reply()
        second.expect("EHLO c.test", 250)
        second.expect("AUTH LOGIN", 334)
        second.expect(user_b64, 334)
        second.expect(password_b64, 235)
        second.expect("MAIL FROM:<a@b.test>", 250)
        second.close()
        rec.wait_closed(2)
    text = "\n".join(r.getMessage() for r in caplog.records)
    for secret in (token, PASSWORD, password_b64, user_b64):
        assert secret not in text
    assert "C: AUTH PLAIN ***" in text
    assert "C: AUTH LOGIN" in text
    assert text.count("C: ***") == 2
    assert "C: MAIL FROM:<a@b.test>" in text  # ordinary commands are logged as sent
    assert "S: 235" in text
