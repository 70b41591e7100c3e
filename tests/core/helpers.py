"""Test helpers for driving a ServerConnection: an auto-answering loop and the whole/byte-wise/trailing check."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import smtpproto
from smtpproto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataChunk,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    StartTLS,
)

Decider = Callable[[smtpproto.Event], Reply | list[Reply] | None]


def accept_all(event: smtpproto.Event) -> None:
    """The default decider: accept everything."""


def drain(conn: ServerConnection, decide: Decider = accept_all) -> list[smtpproto.Event]:
    """Run next_event until NEED_DATA or the end, answering decisions with ``decide`` (None = accept).

    Returns the events seen; a RemoteProtocolError is recorded as the event list's last element.
    """
    events: list[smtpproto.Event] = []
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError:
            events.append(ConnectionClosed(transaction_aborted=False))
            return events
        if event is NEED_DATA:
            return events
        assert event is not PAUSED, "PAUSED without a pending decision"
        events.append(event)
        if isinstance(event, ConnectionClosed):
            return events
        if isinstance(event, StartTLS):
            # Stands in for the driver's handshake: later input counts as decrypted TLS data.
            conn.tls_established(server_name="mx.test", protocol="TLSv1.3", cipher="TEST")
        if conn.awaiting is not None:
            answer = decide(event)
            if answer is None:
                while conn.awaiting is not None:
                    conn.accept()
            elif isinstance(answer, Reply):
                conn.send(answer)
            else:
                for reply in answer:
                    conn.send(reply)


def merge_chunks(events: Iterable[smtpproto.Event]) -> list[smtpproto.Event]:
    """Join consecutive DataChunk events, so event lists compare independently of how input was split."""
    merged: list[smtpproto.Event] = []
    for event in events:
        if isinstance(event, DataChunk) and merged and isinstance(merged[-1], DataChunk):
            merged[-1] = DataChunk(data=merged[-1].data + event.data)
        else:
            merged.append(event)
    return merged


def run(
    pieces: Iterable[bytes],
    config: ServerConfig | None = None,
    decide: Decider = accept_all,
    *,
    eof: bool = False,
) -> tuple[bytes, list[smtpproto.Event]]:
    """Feed ``pieces`` one at a time into a fresh connection; return (all output, merged events)."""
    conn = ServerConnection(config)
    out = [conn.data_to_send()]
    events: list[smtpproto.Event] = []
    for piece in pieces:
        if events and isinstance(events[-1], ConnectionClosed):
            break
        conn.receive_data(piece)
        events += drain(conn, decide)
        out.append(conn.data_to_send())
    if eof and not (events and isinstance(events[-1], ConnectionClosed)):
        conn.receive_data(b"")
        events += drain(conn, decide)
        out.append(conn.data_to_send())
    return b"".join(out), merge_chunks(events)


def session(
    data: bytes,
    config: ServerConfig | None = None,
    decide: Decider = accept_all,
    *,
    eof: bool = False,
) -> tuple[bytes, list[smtpproto.Event]]:
    """Run ``data`` whole, byte by byte, and in two halves at every eighth split; assert all agree."""
    whole = run([data], config, decide, eof=eof)
    bytewise = run([data[i : i + 1] for i in range(len(data))], config, decide, eof=eof)
    assert bytewise == whole, "byte-at-a-time input changed the outcome"
    for cut in range(1, len(data), 8):
        assert run([data[:cut], data[cut:]], config, decide, eof=eof) == whole, f"split at {cut}"
    return whole


def replies(output: bytes) -> list[str]:
    """Split server output into replies, each as 'code enhanced text' of its last line."""
    lines = output.decode("utf-8").split("\r\n")
    assert lines[-1] == "", "output must end with CRLF"
    return [line for line in lines[:-1] if line[3:4] == " "]


def codes(output: bytes) -> list[int]:
    """The reply codes, one per reply (multi-line replies count once)."""
    return [int(line[:3]) for line in replies(output)]


GREETING_AND_EHLO = b"EHLO client.test\r\n"


_STATUS_RE = re.compile(r"(\d{3}) ([245]\.\d{1,3}\.\d{1,3})(?= )")


def statuses(output: bytes) -> list[str]:
    """The status of each reply: 'code enhanced' (e.g. '250 2.1.0'), or the code alone when it has none."""
    result = []
    for line in replies(output):
        match = _STATUS_RE.match(line)
        result.append(f"{match[1]} {match[2]}" if match else line[:3])
    return result


def refusing(refusals: dict[str, Reply], data_end: Reply | list[Reply] | None = None) -> Decider:
    """A decider that answers MAIL/RCPT for the addresses in ``refusals`` with their reply, DataEnd with
    ``data_end`` (if given), and accepts everything else. Stateless, so ``session()`` can rerun it."""

    def decide(event: smtpproto.Event) -> Reply | list[Reply] | None:
        if isinstance(event, smtpproto.MailFrom | smtpproto.RcptTo):
            return refusals.get(event.address)
        if isinstance(event, smtpproto.DataEnd):
            return data_end
        return None

    return decide


#: What a default ServerConfig() says, byte for byte.
GREETING = b"220 localhost ESMTP\r\n"
EHLO = b"EHLO client.test\r\n"
EHLO_REPLY = (
    b"250-localhost Nice to meet you\r\n"
    b"250-PIPELINING\r\n"
    b"250-8BITMIME\r\n"
    b"250-SMTPUTF8\r\n"
    b"250-SIZE\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250 DSN\r\n"
)
MAIL = b"MAIL FROM:<a@b.test>\r\n"
RCPT = b"RCPT TO:<x@example.test>\r\n"
#: EHLO, MAIL and one accepted RCPT: a transaction ready for DATA.
OPEN = EHLO + MAIL + RCPT
#: ... and DATA: what follows is the message.
DATA = OPEN + b"DATA\r\n"


def after_greeting(out: bytes) -> list[str]:
    """The statuses (see :func:`statuses`) of the replies after the greeting."""
    result = statuses(out)
    assert result[0] in ("220", "554 5.7.1"), "the greeting comes first"
    return result[1:]


def message(events: list[smtpproto.Event]) -> bytes:
    """The message content the application saw, all DataChunks joined."""
    return b"".join(event.data for event in events if isinstance(event, DataChunk))


def session_refused(
    data: bytes,
    config: ServerConfig | None = None,
    decide: Decider = accept_all,
    *,
    eof: bool = False,
) -> tuple[bytes, list[smtpproto.Event]]:
    """:func:`session` for input whose message the connection refuses itself (``DataEnd.refusal``).

    How much of such a message was handed out as DataChunks before the refusal depends on the split (the
    application discards them), so only the output and the other events must agree. Returns the whole run.
    """

    def without_chunks(result: tuple[bytes, list[smtpproto.Event]]) -> object:
        return result[0], [event for event in result[1] if not isinstance(event, DataChunk)]

    whole = run([data], config, decide, eof=eof)
    bytewise = run([data[i : i + 1] for i in range(len(data))], config, decide, eof=eof)
    assert without_chunks(bytewise) == without_chunks(whole), (
        "byte-at-a-time input changed the outcome"
    )
    for cut in range(1, len(data), 8):
        split = run([data[:cut], data[cut:]], config, decide, eof=eof)
        assert without_chunks(split) == without_chunks(whole), f"split at {cut}"
    return whole
