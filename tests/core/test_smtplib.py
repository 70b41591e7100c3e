"""The core against an independent peer: Python's ``smtplib`` over a real loopback socket (CONVENTIONS §9.16).

The server is the plainest possible driver — one thread, one blocking socket, the loop from ``docs/core.md`` —
so whatever goes wrong here is the core's doing or smtplib's disagreement with it. Every socket has a timeout
and every thread is joined with one, so a bug shows up as a failure, never as a hung suite.
"""

from __future__ import annotations

import email
import email.policy
import smtplib
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage

import pytest

import smtpproto
from smtpproto import (
    NEED_DATA,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    Hello,
    MailFrom,
    Quit,
    RcptTo,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    Verify,
)

TIMEOUT = 5.0
CLIENT = "client.test"  # given to smtplib so that it does not look up our FQDN

Decider = Callable[[smtpproto.Event], Reply | None]


def accept(event: smtpproto.Event) -> Reply | None:
    return None


@dataclass
class Transaction:
    sender: str
    recipients: list[str] = field(default_factory=list)
    data: bytes = b""
    mail_args: dict[str, str | bool] = field(default_factory=dict)


@dataclass
class Server:
    """One connection, served by a thread running the documented driver loop."""

    config: ServerConfig | None = None
    decide: Decider = accept
    events: list[smtpproto.Event] = field(default_factory=list)
    delivered: list[Transaction] = field(default_factory=list)
    error: BaseException | None = None

    def serve(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
            with sock:
                sock.settimeout(TIMEOUT)
                self.loop(sock)
        except (OSError, AssertionError, smtpproto.ProtocolError, RuntimeError) as exc:
            self.error = exc  # re-raised in the test's thread by serving()

    def loop(self, sock: socket.socket) -> None:
        conn = ServerConnection(self.config)
        sock.sendall(conn.data_to_send())
        current: Transaction | None = None
        while True:
            try:
                event = conn.next_event()
            except RemoteProtocolError:
                sock.sendall(conn.data_to_send())
                raise
            if event is NEED_DATA:
                sock.sendall(conn.data_to_send())
                conn.receive_data(sock.recv(65536))
                continue
            assert not isinstance(event, smtpproto.Sentinel), f"unexpected {event!r}"
            self.events.append(event)
            if isinstance(event, ConnectionClosed):
                sock.sendall(conn.data_to_send())
                return
            if isinstance(event, DataChunk):
                assert current is not None
                current.data += event.data
            if conn.awaiting is None:
                continue
            answer = self.decide(event)
            if answer is not None:
                conn.send(answer)
            while conn.awaiting is not None:
                conn.accept()
            accepted = answer is None or answer.code < 400
            if isinstance(event, MailFrom) and accepted:
                current = Transaction(event.address, mail_args=dict(event.args))
            elif isinstance(event, RcptTo) and accepted:
                assert current is not None
                current.recipients.append(event.address)
            elif isinstance(event, DataEnd):
                assert current is not None
                if accepted:
                    self.delivered.append(current)
                current = None


@contextmanager
def serving(
    config: ServerConfig | None = None, decide: Decider = accept
) -> Iterator[tuple[int, Server]]:
    """Run a server for one connection; yield its port and its record; join and re-raise its error."""
    server = Server(config, decide)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(TIMEOUT)
        thread = threading.Thread(target=server.serve, args=(listener,), daemon=True)
        thread.start()
        try:
            yield listener.getsockname()[1], server
        finally:
            thread.join(timeout=2 * TIMEOUT)
    assert not thread.is_alive(), "the server thread did not finish"
    if server.error is not None:
        raise server.error


def event_types(server: Server) -> list[type]:
    return [type(event) for event in server.events if not isinstance(event, DataChunk)]


MESSAGE = (
    b"From: a@example.test\r\n"
    b"To: b@example.test, c@example.test\r\n"
    b"Subject: loopback\r\n"
    b"\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b".\r\n"
    b"8-bit: gr\xc3\xbc\xc3\x9fe \xff\xfe\r\n"
    b"last line\r\n"
)


def test_sendmail_two_recipients_dots_and_8bit() -> None:
    with (
        serving() as (port, server),
        smtplib.SMTP("127.0.0.1", port, local_hostname=CLIENT, timeout=TIMEOUT) as client,
    ):
        refused = client.sendmail(
            "a@example.test",
            ["b@example.test", "c@example.test"],
            MESSAGE,
            mail_options=["BODY=8BITMIME"],
        )
        assert refused == {}
    [message] = server.delivered
    assert message.sender == "a@example.test"
    assert message.recipients == ["b@example.test", "c@example.test"]
    # smtplib dot-stuffed the lines that start with a dot; the core undid exactly that.
    assert message.data == MESSAGE
    assert message.mail_args == {"BODY": "8BITMIME", "SIZE": str(len(MESSAGE))}
    assert event_types(server) == [
        Hello,
        MailFrom,
        RcptTo,
        RcptTo,
        smtpproto.DataStart,
        DataEnd,
        Quit,
        ConnectionClosed,
    ]


def test_send_message_with_an_international_address() -> None:
    # smtplib switches to SMTPUTF8 and BODY=8BITMIME by itself for a non-ASCII address.
    msg = EmailMessage()
    msg["From"] = "a@example.test"
    msg["To"] = "jörg@example.test"
    msg["Subject"] = "Grüße"
    msg.set_content("Grüße\n.leading dot\n", cte="8bit")
    with (
        serving() as (port, server),
        smtplib.SMTP("127.0.0.1", port, local_hostname=CLIENT, timeout=TIMEOUT) as client,
    ):
        assert client.send_message(msg) == {}
    [message] = server.delivered
    assert message.recipients == ["jörg@example.test"]
    assert message.mail_args["SMTPUTF8"] is True
    assert message.mail_args["BODY"] == "8BITMIME"
    received = email.message_from_bytes(message.data, policy=email.policy.default)
    assert received["Subject"] == "Grüße"
    assert received["To"] == "jörg@example.test"
    assert isinstance(received, EmailMessage)
    body = received.get_body()
    assert body is not None
    assert body.get_content().splitlines() == ["Grüße", ".leading dot"]


def test_lmtp() -> None:
    # smtplib.LMTP reads a single reply after DATA, so one recipient keeps it in step with RFC 2033's
    # one-reply-per-recipient rule.
    with (
        serving(ServerConfig(lmtp=True)) as (port, server),
        smtplib.LMTP("127.0.0.1", port, local_hostname=CLIENT, timeout=TIMEOUT) as client,
    ):
        assert client.sendmail("a@example.test", ["b@example.test"], MESSAGE) == {}
        assert client.esmtp_features.keys() >= {"pipelining", "enhancedstatuscodes"}
    [message] = server.delivered
    assert message.recipients == ["b@example.test"]
    assert message.data == MESSAGE
    hello = server.events[0]
    assert isinstance(hello, Hello)
    assert hello.command == "LHLO"
    assert hello.hostname == CLIENT


def test_ehlo_noop_rset_verify_and_quit() -> None:
    with serving(ServerConfig(hostname="mx.test", max_message_size=10_000_000)) as (port, server):
        client = smtplib.SMTP("127.0.0.1", port, local_hostname=CLIENT, timeout=TIMEOUT)
        try:
            code, banner = client.ehlo()
            assert code == 250
            assert banner.startswith(b"mx.test")
            features = client.esmtp_features
            assert features.keys() >= {
                "size",
                "pipelining",
                "8bitmime",
                "smtputf8",
                "enhancedstatuscodes",
                "dsn",
            }
            assert features["size"] == "10000000"
            assert client.has_extn("PIPELINING")
            assert client.noop() == (250, b"2.0.0 OK")
            assert client.rset() == (250, b"2.0.0 Flushed")
            code, text = client.verify("postmaster")
            assert code == 252
            assert text.startswith(b"2.0.0 ")
            assert client.quit()[0] == 221
        finally:
            client.close()
    verify = [event for event in server.events if isinstance(event, Verify)]
    assert verify == [Verify(argument="postmaster")]
    assert event_types(server)[-2:] == [Quit, ConnectionClosed]
    assert server.events[-1] == ConnectionClosed(transaction_aborted=False)


def reject_bad(event: smtpproto.Event) -> Reply | None:
    if isinstance(event, RcptTo) and event.address.startswith("bad"):
        return Reply(550, "No such user here", "5.1.1")
    return None


def test_one_rejected_recipient_is_reported_and_the_rest_delivered() -> None:
    with (
        serving(decide=reject_bad) as (port, server),
        smtplib.SMTP("127.0.0.1", port, local_hostname=CLIENT, timeout=TIMEOUT) as client,
    ):
        refused = client.sendmail(
            "a@example.test", ["bad@example.test", "good@example.test"], MESSAGE
        )
    assert refused == {"bad@example.test": (550, b"5.1.1 No such user here")}
    [message] = server.delivered
    assert message.recipients == ["good@example.test"]
    assert message.data == MESSAGE


def test_all_recipients_rejected() -> None:
    with (
        serving(decide=reject_bad) as (port, server),
        smtplib.SMTP("127.0.0.1", port, local_hostname=CLIENT, timeout=TIMEOUT) as client,
    ):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as info:
            client.sendmail("a@example.test", ["bad1@example.test", "bad2@example.test"], MESSAGE)
        assert info.value.recipients == {
            "bad1@example.test": (550, b"5.1.1 No such user here"),
            "bad2@example.test": (550, b"5.1.1 No such user here"),
        }
        # smtplib sent RSET after the refusal; the session is still usable.
        assert client.noop() == (250, b"2.0.0 OK")
    assert server.delivered == []
    assert smtpproto.DataStart not in event_types(server)


def test_rejected_sender_and_rejected_message() -> None:
    def decide(event: smtpproto.Event) -> Reply | None:
        if isinstance(event, MailFrom) and event.address == "spammer@example.test":
            return Reply(550, "Go away", "5.7.1")
        if isinstance(event, DataEnd):
            return Reply(554, "Content refused", "5.6.0")
        return None

    with (
        serving(decide=decide) as (port, server),
        smtplib.SMTP("127.0.0.1", port, local_hostname=CLIENT, timeout=TIMEOUT) as client,
    ):
        with pytest.raises(smtplib.SMTPSenderRefused) as sender:
            client.sendmail("spammer@example.test", ["b@example.test"], MESSAGE)
        assert sender.value.smtp_code == 550
        with pytest.raises(smtplib.SMTPDataError) as data:
            client.sendmail("a@example.test", ["b@example.test"], MESSAGE)
        assert data.value.smtp_code == 554
        assert data.value.smtp_error == b"5.6.0 Content refused"
    assert server.delivered == []
