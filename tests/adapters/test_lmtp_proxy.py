"""LMTP (per-recipient replies) and deployments behind proxies (PROXY protocol, XCLIENT, XFORWARD)."""

from __future__ import annotations

import logging
import smtplib

from smtpproto_adapters import Reply, Session, SMTPError

from .clients import RawClient, wait_until
from .conftest import Recorder


def test_lmtp_with_smtplib(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, lmtp=True)
    with smtplib.LMTP("127.0.0.1", server.port) as client:
        assert client.sendmail("a@b.test", ["x@y.test"], b"via lmtp\r\n") == {}
    rec.wait_closed()
    assert rec.stored[0].transmission_type == "LMTP"
    assert rec.closed[0].opening_command == "LHLO"


def _lmtp_transaction(port: int, recipients: list[str]) -> list[tuple[int, list[str]]]:
    client = RawClient(port)
    assert client.reply() == (220, ["mx.test LMTP"])
    client.expect("LHLO c.test", 250)
    client.expect("MAIL FROM:<a@b.test>", 250)
    for rcpt in recipients:
        client.expect(f"RCPT TO:<{rcpt}>", 250)
    client.expect("DATA", 354)
    client.send(b"Subject: lmtp\r\n\r\nfor everyone\r\n.\r\n")
    replies = [client.reply() for _ in recipients]
    client.expect("NOOP", 250)  # nothing extra was sent: the next reply is NOOP's
    client.expect("QUIT", 221)
    client.close()
    return replies


def test_lmtp_one_reply_per_recipient(start_server) -> None:
    def deliver(body: bytes, session: Session) -> list[object]:
        return [True, SMTPError(550, "No such user", "5.1.1"), Reply(452, "Mailbox full", "4.2.2")]

    rec = Recorder(rules={"on_data": deliver})
    server = start_server(rec, lmtp=True)
    replies = _lmtp_transaction(server.port, ["a@y.test", "b@y.test", "c@y.test"])
    assert [code for code, _ in replies] == [250, 550, 452]
    assert replies[1][1] == ["5.1.1 No such user"]
    assert replies[2][1] == ["4.2.2 Mailbox full"]


def test_lmtp_single_outcome_applies_to_all(start_server) -> None:
    rec = Recorder(rules={"on_data": Reply(250, "Delivered", "2.0.0")})
    server = start_server(rec, lmtp=True)
    replies = _lmtp_transaction(server.port, ["a@y.test", "b@y.test"])
    assert replies == [(250, ["2.0.0 Delivered"])] * 2


def test_lmtp_wrong_number_of_outcomes_is_an_error(start_server, caplog) -> None:
    rec = Recorder(rules={"on_data": lambda body, session: [True]})
    server = start_server(rec, lmtp=True)
    with caplog.at_level(logging.ERROR, logger="smtpproto_adapters"):
        replies = _lmtp_transaction(server.port, ["a@y.test", "b@y.test"])
    assert [code for code, _ in replies] == [451, 451]
    assert any("outcomes" in r.getMessage() for r in caplog.records)


def test_proxy_v1_header_sets_the_client_address(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, use_proxy=True)
    client = RawClient(server.port)
    client.send(b"PROXY TCP4 198.51.100.22 203.0.113.7 35646 25\r\n")
    assert client.reply()[0] == 220
    client.expect("EHLO c.test", 250)
    client.expect("QUIT", 221)
    client.close()
    rec.wait_closed()
    [(session,)] = rec.called("on_connect")
    assert (session.remote_address, session.remote_port) == ("198.51.100.22", 35646)
    assert session.client_hostname == "[198.51.100.22]"
    assert session.proxy is not None
    assert (session.proxy.version, session.proxy.family) == (1, "TCP4")
    assert session.proxy.destination_port == 25


def test_bad_proxy_header_closes_without_a_word(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, use_proxy=True)
    client = RawClient(server.port)
    client.send(b"EHLO i-am-not-a-proxy\r\n")
    assert client.rest() == b""
    client.close()
    wait_until(lambda: server.statistics().connections_active == 0)
    assert rec.calls == []


def test_proxy_trust_list(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, use_proxy=["10.9.9.9"], use_xclient=["127.0.0.1"])
    with smtplib.SMTP("127.0.0.1", server.port) as client:  # not a listed proxy: plain SMTP
        client.ehlo()
        assert client.has_extn("xclient")
        assert client.sendmail("a@b.test", ["x@y.test"], b"direct\r\n") == {}


def test_xclient(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, use_xclient=True)
    client = RawClient(server.port)
    client.reply()
    lines = client.expect("EHLO proxy.test", 250)
    assert any(line.startswith("XCLIENT") for line in lines)
    code, _ = client.cmd("XCLIENT ADDR=192.0.2.7 PORT=4242 NAME=client.example LOGIN=carol")
    assert code == 220  # a fresh greeting, as Postfix does
    client.expect("EHLO real-client.test", 250)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("QUIT", 221)
    client.close()
    rec.wait_closed()
    [(_, session)] = rec.called("on_mail_from")
    assert (session.remote_address, session.remote_port) == ("192.0.2.7", 4242)
    assert session.client_hostname == "client.example"
    assert session.user == "carol"
    assert session.xclient["ADDR"] == "192.0.2.7"
    assert session.host_name_appears_as == "real-client.test"


def test_xforward(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, use_xforward=True)
    client = RawClient(server.port)
    client.reply()
    client.expect("EHLO filter.test", 250)
    client.expect("XFORWARD ADDR=192.0.2.8 NAME=[UNAVAILABLE] HELO=orig.test PROTO=ESMTP", 250)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("QUIT", 221)
    client.close()
    rec.wait_closed()
    [(_, session)] = rec.called("on_mail_from")
    assert session.remote_address == "192.0.2.8"
    assert session.client_hostname == "[127.0.0.1]"  # NAME was unavailable
    assert session.host_name_appears_as == "orig.test"
    assert session.xforward == {
        "ADDR": "192.0.2.8",
        "NAME": "[UNAVAILABLE]",
        "HELO": "orig.test",
        "PROTO": "ESMTP",
    }


def test_xclient_not_offered_by_default(start_server) -> None:
    server = start_server()
    client = RawClient(server.port)
    client.reply()
    lines = client.expect("EHLO c.test", 250)
    assert not any(line.startswith(("XCLIENT", "XFORWARD")) for line in lines)
    code, _ = client.cmd("XCLIENT ADDR=192.0.2.7")
    assert code >= 500
    client.close()
