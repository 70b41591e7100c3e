"""The DATA path: the stream given to on_data, draining, disconnects, size limits, concurrency, memory."""

from __future__ import annotations

import hashlib
import os
import smtplib
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from smtpproto import LineEndings
from smtpproto_adapters import MessageAborted, MessageRefused

from .clients import RawClient, wait_until
from .conftest import Recorder

DOTTY = b"Subject: dots\r\n\r\n.\r\n..\r\n.leading\r\nmiddle . dot\r\n.\r\nend\r\n"


@pytest.mark.parametrize("read", ["all", ("sized", 7), ("chunks", 0), ("first", 10**9)])
def test_stream_reads_give_the_unstuffed_message(start_server, read) -> None:
    rec = Recorder(read=read)
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@b.test", ["x@y.test"], DOTTY)
    assert [m.body for m in rec.stored] == [DOTTY]


def test_partial_read_returns_exactly_n_bytes(start_server) -> None:
    rec = Recorder(read=("first", 10))
    server = start_server(rec)
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        client.sendmail("a@b.test", ["x@y.test"], DOTTY)
        client.sendmail("a@b.test", ["x@y.test"], b"second message\r\n")
    assert [m.body for m in rec.stored] == [DOTTY[:10], b"second message\r\n"[:10]]


def test_unread_message_is_drained_and_the_session_goes_on(start_server) -> None:
    # The first message is never read; its rest must be discarded, not taken for commands.
    rec = Recorder(read=lambda session: "never" if session.transaction == 1 else "all")
    server = start_server(rec)
    first = b"MAIL FROM:<evil@b.test>\r\n" * 2000 + b"RSET\r\n"
    with smtplib.SMTP("127.0.0.1", server.port) as client:
        assert client.sendmail("a@b.test", ["x@y.test"], first) == {}
        client.sendmail("a@b.test", ["x@y.test"], b"second\r\n")
    assert [m.body for m in rec.stored] == [b"second\r\n"]
    assert [a.address for a, _ in rec.called("on_mail_from")] == ["a@b.test", "a@b.test"]
    wait_until(lambda: server.statistics().bytes == len(first) + len(b"second\r\n"))
    assert server.statistics().messages == 2


def test_client_disconnecting_mid_data(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    client = RawClient(server.port)
    client.reply()
    client.expect("EHLO c.test", 250)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    client.send(b"Subject: cut\r\n\r\npart of a message\r\n")
    assert rec.data_started.wait(5)
    client.close()
    rec.wait_closed()
    assert len(rec.data_errors) == 1
    assert isinstance(rec.data_errors[0], MessageAborted)
    assert rec.stored == []
    time.sleep(0.05)
    assert len(rec.closed) == 1  # on_close ran exactly once
    with smtplib.SMTP("127.0.0.1", server.port) as other:  # the server lives
        assert other.sendmail("a@b.test", ["x@y.test"], b"ok\r\n") == {}
    assert server.statistics().errors == 0


def test_oversized_message_is_refused_by_the_core(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, size=1000)
    client = RawClient(server.port)
    client.reply()
    text = client.expect("EHLO c.test", 250)
    assert "SIZE 1000" in text
    client.expect("MAIL FROM:<a@b.test>", 250)  # no SIZE= declared, so the limit bites after DATA
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    client.send(b"x" * 3000 + b"\r\n.\r\n")
    code, lines = client.reply()
    assert code == 552
    assert lines[0].startswith("5.3.4")
    client.expect("QUIT", 221)
    client.close()
    rec.wait_closed()
    assert rec.stored == []
    [error] = rec.data_errors
    assert isinstance(error, MessageRefused)
    assert error.reply.code == 552


def test_size_exceeded_is_visible_while_reading(start_server) -> None:
    rec = Recorder(read=("chunks", 0))
    server = start_server(rec, size=100_000, line_endings=LineEndings.ALLOW)
    client = RawClient(server.port)
    client.reply()
    client.expect("EHLO c.test", 250)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    client.send((b"y" * 998 + b"\r\n") * 60)  # 60 000 octets: within the limit
    # (the core may hold back the last few octets: they could start the terminator)
    wait_until(lambda: rec.progress and rec.progress[-1][0] >= 59_990, what="first part read")
    assert rec.progress[-1][1] is False
    client.send((b"z" * 998 + b"\r\n") * 60 + b".\r\n")
    code, _ = client.reply()
    assert code == 552
    client.close()
    rec.wait_closed()
    assert not any(exceeded for size, exceeded in rec.progress if size <= 100_000)
    assert rec.progress[-1] == (120_000, True)  # as the stream raised: the whole size, and exceeded
    [error] = rec.data_errors
    assert isinstance(error, MessageRefused)


def test_200_concurrent_clients_all_messages_intact(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, max_clients=500)
    clients, per_client = 200, 3

    def send(index: int) -> list[str]:
        digests = []
        with smtplib.SMTP("127.0.0.1", server.port, timeout=30) as client:
            for n in range(per_client):
                body = (
                    b"Subject: %d-%d\r\n\r\n" % (index, n)
                    + os.urandom(2000).hex().encode()
                    + b"\r\n"
                )
                client.sendmail(f"s{index}@b.test", [f"r{n}@y.test"], body)
                digests.append(hashlib.sha256(body).hexdigest())
        return digests

    with ThreadPoolExecutor(clients) as pool:
        sent = [d for digests in pool.map(send, range(clients)) for d in digests]
    rec.wait_closed(clients, timeout=30)
    stored = sorted(hashlib.sha256(m.body).hexdigest() for m in rec.stored)
    assert stored == sorted(sent)
    assert len(stored) == clients * per_client
    stats = server.statistics()
    assert stats.messages == clients * per_client
    assert stats.connections_total == clients
    assert stats.errors == 0


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def test_20mb_message_to_a_slow_reader_keeps_memory_bounded(start_server) -> None:
    size = 20 * 1024 * 1024
    line = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-0123456789\r\n"
    block = line * 800  # about 60 KiB
    rec = Recorder(read=("digest", 0.002))  # a slow reader that keeps nothing but a digest
    server = start_server(rec)
    baseline = _rss_kib()
    peak = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_kib())
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    digest = hashlib.sha256()
    sent = 0
    try:
        client = RawClient(server.port, timeout=60)
        client.reply()
        client.expect("EHLO c.test", 250)
        client.expect("MAIL FROM:<a@b.test>", 250)
        client.expect("RCPT TO:<x@y.test>", 250)
        client.expect("DATA", 354)
        while sent < size:
            client.send(block)
            digest.update(block)
            sent += len(block)
        client.send(b".\r\n")
        assert client.reply()[0] == 250
        client.expect("QUIT", 221)
        client.close()
    finally:
        done.set()
        sampler.join()
    growth_mib = (peak[0] - baseline) / 1024
    assert growth_mib < 8, f"RSS grew by {growth_mib:.1f} MiB for a {size >> 20} MiB message"
    [stored] = rec.stored
    assert stored.body == digest.hexdigest().encode()
    assert stored.size == sent
    assert len(rec.progress) > 100  # it really was read piece by piece
