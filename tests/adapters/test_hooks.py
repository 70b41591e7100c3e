"""Every hook's accept and refuse paths, through smtplib and a raw client, on every backend."""

from __future__ import annotations

import logging
import smtplib

import pytest

from smtpproto_adapters import Address, Reply, Session, SMTPError

from .clients import RawClient, wait_until
from .conftest import Backend, Recorder

BODY = b"Subject: test\r\n\r\nHello\r\n.leading dot\r\n"


def test_message_round_trip_and_session_fields(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port, local_hostname="Client.Example") as client:
        refused = client.sendmail("a@b.test", ["x@y.test", "z@y.test"], BODY)
        assert refused == {}
        client.sendmail("", ["x@y.test"], b"second\r\n")
    rec.wait_closed()
    first, second = rec.stored
    assert first.body == BODY
    assert (first.mail_from, first.rcpt_to) == ("a@b.test", ["x@y.test", "z@y.test"])
    assert (first.transaction, second.transaction) == (1, 2)
    assert second.mail_from == ""
    assert second.body == b"second\r\n"
    assert first.transmission_type == "ESMTP"
    assert first.size == len(BODY)
    session: Session = rec.closed[0]
    assert session.remote_address == "127.0.0.1"
    assert session.local_port == server.port
    assert session.remote_port > 0
    assert session.client_hostname == "[127.0.0.1]"
    assert session.opening_command == "EHLO"
    assert session.host_name_appears_as == "client.example"
    assert session.secure is False
    assert session.tls is None
    assert len(session.id) == 16
    [(address, _)] = rec.called("on_mail_from")[:1]
    assert address == Address("a@b.test", {"SIZE": str(len(BODY))})
    assert len(rec.closed) == 1


def test_helo_session_is_smtp(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.helo("client.test")
        client.sendmail("a@b.test", ["x@y.test"], BODY)
    assert rec.stored[0].transmission_type == "SMTP"


def test_unique_session_ids(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    for _ in range(5):
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.noop()
    rec.wait_closed(5)
    assert len({s.id for s in rec.closed}) == 5


@pytest.mark.parametrize(
    ("rule", "code", "text"),
    [
        (False, 554, "mx.test Service not available"),
        (Reply(421, "mx.test Busy, come back later"), 421, "mx.test Busy, come back later"),
        (SMTPError(554, "Go away"), 554, "Go away"),
        (RuntimeError("hook bug"), 421, "mx.test Internal server error, try again later"),
    ],
)
def test_on_connect_refusal_replaces_the_greeting(start_server, rule, code, text) -> None:
    rec = Recorder(rules={"on_connect": rule})
    server = start_server(rec)
    client = RawClient(server.port)
    assert client.reply() == (code, [text])
    assert client.at_eof()
    client.close()
    rec.wait_closed()
    assert [name for name, _ in rec.calls] == ["on_connect", "on_close"]


@pytest.mark.parametrize("rule", [None, True, Reply(250, "fine")])
def test_on_connect_accept(start_server, rule) -> None:
    rec = Recorder(rules={"on_connect": rule})
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        assert client.noop()[0] == 250
    assert len(rec.called("on_connect")) == 1


def test_on_mail_from_refusals_and_recovery(start_server) -> None:
    def decide(address: Address, session: Session) -> object:
        if address.address == "bad@b.test":
            raise SMTPError(553, "Not this sender", "5.1.8")
        if address.address == "reply@b.test":
            return Reply(550, "Replied refusal")
        if address.address == "false@b.test":
            return False
        return None

    rec = Recorder(rules={"on_mail_from": decide})
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.ehlo()
        assert client.mail("bad@b.test") == (553, b"5.1.8 Not this sender")
        code, text = client.mail("reply@b.test")
        assert code == 550
        assert text.endswith(b" Replied refusal")
        code, text = client.mail("false@b.test")
        assert code == 550
        assert text.startswith(b"5.")
        with pytest.raises(smtplib.SMTPSenderRefused) as info:
            client.sendmail("bad@b.test", ["x@y.test"], BODY)
        assert info.value.smtp_code == 553
        client.rset()
        assert client.sendmail("good@b.test", ["x@y.test"], BODY) == {}
    assert [m.mail_from for m in rec.stored] == ["good@b.test"]


def test_on_rcpt_to_refuses_some_recipients(start_server) -> None:
    def decide(address: Address, session: Session) -> object:
        if address.address.startswith("deny"):
            raise SMTPError(550, "No such user")
        return True

    rec = Recorder(rules={"on_rcpt_to": decide})
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        refused = client.sendmail("a@b.test", ["ok@y.test", "deny@y.test"], BODY)
        assert list(refused) == ["deny@y.test"]
        code, text = refused["deny@y.test"]
        assert code == 550
        assert text.endswith(b" No such user")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("a@b.test", ["deny2@y.test"], BODY)
    assert [m.rcpt_to for m in rec.stored] == [["ok@y.test"]]


def test_on_data_refusal_and_custom_reply(start_server) -> None:
    def decide(body: bytes, session: Session) -> object:
        if b"spam" in body:
            raise SMTPError(554, "Looks like spam", "5.7.1")
        return Reply(250, "Queued as ABC123", "2.0.0")

    rec = Recorder(rules={"on_data": decide})
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        with pytest.raises(smtplib.SMTPDataError) as info:
            client.sendmail("a@b.test", ["x@y.test"], b"spam spam\r\n")
        assert info.value.smtp_code == 554
        assert info.value.smtp_error == b"5.7.1 Looks like spam"
        client.mail("a@b.test")
        client.rcpt("x@y.test")
        assert client.data(b"ham\r\n") == (250, b"2.0.0 Queued as ABC123")


@pytest.mark.parametrize("hook", ["on_mail_from", "on_rcpt_to", "on_data"])
def test_hook_exception_is_451_and_the_server_lives(start_server, caplog, hook) -> None:
    rec = Recorder(rules={hook: RuntimeError("boom in the hook")})
    server = start_server(rec)
    with caplog.at_level(logging.ERROR, logger="smtpproto_adapters"):
        client = RawClient(server.port)
        client.reply()
        client.expect("EHLO c.test", 250)
        code, text = client.cmd("MAIL FROM:<a@b.test>")
        if hook != "on_mail_from":
            assert code == 250
            code, text = client.cmd("RCPT TO:<x@y.test>")
        if hook == "on_data":
            assert code == 250
            client.expect("DATA", 354)
            client.send(b"body\r\n.\r\n")
            code, text = client.reply()
        assert (code, text) == (451, ["4.3.0 Internal server error, try again later"])
        client.expect("NOOP", 250)  # the same session goes on
        client.expect("QUIT", 221)
        client.close()
    assert any("boom in the hook" in (r.exc_text or "") for r in caplog.records)
    assert any(hook in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    wait_until(lambda: server.statistics().errors == 1)
    with smtplib.SMTP("127.0.0.1", server.port) as other:  # and new sessions work
        assert other.noop()[0] == 250


def test_on_close_exception_is_logged_only(start_server, caplog) -> None:
    rec = Recorder(rules={"on_close": RuntimeError("close bug")})
    server = start_server(rec)
    with caplog.at_level(logging.ERROR, logger="smtpproto_adapters"):
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", server.port) as client:
                client.noop()
        rec.wait_closed(2)
        wait_until(lambda: server.statistics().errors == 2)
    assert sum("close bug" in (r.exc_text or "") for r in caplog.records) == 2


def test_missing_hooks_accept_everything(start_server) -> None:
    rec = Recorder(hooks=())
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        assert client.sendmail("a@b.test", ["x@y.test"], BODY) == {}
        assert "auth" not in client.esmtp_features
    wait_until(lambda: server.statistics().messages == 1)
    assert server.statistics().bytes == len(BODY)


def test_hooks_must_match_the_backend(backend: Backend) -> None:
    cls = backend.server_class()

    class Wrong:
        if backend.asynchronous:

            def on_mail_from(self, address: Address, session: Session) -> None:
                return None
        else:

            async def on_mail_from(self, address: Address, session: Session) -> None:
                return None

    with pytest.raises(TypeError, match="on_mail_from"):
        cls(Wrong())


def test_a_reply_that_cannot_answer_the_event_becomes_451(start_server, caplog) -> None:
    rec = Recorder(rules={"on_mail_from": Reply(354, "Go ahead")})
    server = start_server(rec)
    with caplog.at_level(logging.ERROR, logger="smtpproto_adapters"):
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.ehlo()
            assert client.mail("a@b.test") == (451, b"4.3.0 Internal server error, try again later")
            assert client.noop()[0] == 250
        wait_until(lambda: server.statistics().errors == 1)
    assert any("does not fit" in r.getMessage() for r in caplog.records)


def test_records_go_to_the_configured_logger(start_server, caplog) -> None:
    logger = logging.getLogger("custom.smtp.test")
    rec = Recorder()
    server = start_server(rec, logger=logger)
    with caplog.at_level(logging.DEBUG, logger="custom.smtp.test"):
        with smtplib.SMTP("127.0.0.1", server.port) as client:
            client.sendmail("a@b.test", ["x@y.test"], BODY)
        rec.wait_closed()
        wait_until(lambda: any("connection closed" in r.getMessage() for r in caplog.records))
    mine = [r for r in caplog.records if r.name == "custom.smtp.test"]
    session_id = rec.closed[0].id
    assert any(
        r.getMessage() == f"[{session_id}] C: mail FROM:<a@b.test> size={len(BODY)}" for r in mine
    )
    assert all(getattr(r, "session_id", None) == session_id for r in mine if "[" in r.getMessage())
    assert not any(
        b"Hello" in r.getMessage().encode() for r in mine
    )  # message content is not logged
