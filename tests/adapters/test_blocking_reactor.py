"""The blocking server's CommandReactor: one thread answering the commands of parked sessions.

Real socket pairs and real threads; ``consume`` stands in for the pump (see ``ReceiveCommands``).
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

if not hasattr(select, "epoll"):
    pytest.skip("the reactor is for Linux (epoll)", allow_module_level=True)

from smtpproto_adapters._blocking_reactor import CommandReactor, Unsent

Consume = Callable[[bytes], bytes | None]


@pytest.fixture
def reactor() -> Iterator[CommandReactor]:
    reactor = CommandReactor(timeout=5.0)
    yield reactor
    reactor.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    server, client = socket.socketpair()
    client.settimeout(5)
    yield server, client
    server.close()
    client.close()


class Parking:
    """``reactor.park(sock, consume)`` in a thread of its own, as a session thread does it."""

    def __init__(self, reactor: CommandReactor, sock: socket.socket, consume: Consume) -> None:
        self.outcome: tuple[bytes | None, int] | None = None
        self.error: BaseException | None = None
        self.took = 0.0
        self._thread = threading.Thread(target=self._run, args=(reactor, sock, consume))
        self._thread.start()

    def _run(self, reactor: CommandReactor, sock: socket.socket, consume: Consume) -> None:
        started = time.monotonic()
        try:
            self.outcome = reactor.park(sock, consume)
        except BaseException as exc:  # noqa: BLE001  # the test looks at it
            self.error = exc
        self.took = time.monotonic() - started

    def wait(self) -> Parking:
        self._thread.join(10)
        assert not self._thread.is_alive()
        return self

    @property
    def parked(self) -> bool:
        return self._thread.is_alive()


def _receive(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        data += sock.recv(size - len(data))
    return data


def test_the_reactor_answers_until_the_session_is_needed(reactor, pair) -> None:
    server, client = pair
    seen: list[bytes] = []

    def consume(data: bytes) -> bytes | None:
        seen.append(data)
        return None if data == b"HOOK\r\n" else b"250 " + data

    parking = Parking(reactor, server, consume)
    for command in (b"NOOP\r\n", b"RSET\r\n"):
        client.sendall(command)
        assert _receive(client, 4 + len(command)) == b"250 " + command
    assert parking.parked
    client.sendall(b"HOOK\r\n")
    assert parking.wait().outcome == (None, 2)  # handed back, after two chunks answered here
    assert seen == [b"NOOP\r\n", b"RSET\r\n", b"HOOK\r\n"]


def test_a_chunk_sent_before_the_park_is_answered(reactor, pair) -> None:
    server, client = pair
    client.sendall(b"EARLY\r\n")
    assert Parking(reactor, server, lambda data: None).wait().outcome == (None, 0)


def test_end_of_stream_hands_the_session_back(reactor, pair) -> None:
    server, client = pair
    parking = Parking(reactor, server, lambda data: pytest.fail("consumed"))
    time.sleep(0.05)
    client.shutdown(socket.SHUT_WR)
    assert parking.wait().outcome == (b"", 0)


def test_an_error_in_consume_is_raised_by_park(reactor, pair) -> None:
    server, client = pair

    def consume(data: bytes) -> bytes | None:
        raise ValueError(f"cannot take {data!r}")

    parking = Parking(reactor, server, consume)
    client.sendall(b"this")
    assert isinstance(parking.wait().error, ValueError)
    assert str(parking.error) == "cannot take b'this'"


def test_the_idle_timeout_counts_from_the_last_chunk() -> None:
    reactor = CommandReactor(timeout=0.4)
    server, client = socket.socketpair()
    try:
        parking = Parking(reactor, server, lambda data: b"ok")
        time.sleep(0.3)
        client.sendall(b"still here")
        assert client.recv(10) == b"ok"
        assert isinstance(parking.wait().error, TimeoutError)
        assert parking.took >= 0.65
    finally:
        reactor.close()
        server.close()
        client.close()


def test_replies_a_slow_reader_cannot_take_go_back_to_the_session(reactor, pair) -> None:
    server, client = pair
    server.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    # Far more than the socket buffers hold: the reactor must not wait for it.
    big = b"x" * 4_000_000
    parking = Parking(reactor, server, lambda data: big)
    client.sendall(b"NOOP\r\n")
    result, served = parking.wait().outcome or (None, -1)
    assert type(result) is Unsent
    assert 0 < len(result) < len(big)
    assert big.endswith(result)
    assert served == 0


def test_many_sessions_are_served_independently(reactor) -> None:
    pairs = [socket.socketpair() for _ in range(20)]
    try:
        parkings = [
            Parking(reactor, server, lambda data: None if data == b"DONE" else data.upper())
            for server, _ in pairs
        ]
        for round_ in range(3):
            for index, (_, client) in enumerate(pairs):
                client.sendall(f"c{index}r{round_}".encode())
            for index, (_, client) in enumerate(pairs):
                expected = f"C{index}R{round_}".encode()
                assert _receive(client, len(expected)) == expected
        for _, client in pairs:
            client.sendall(b"DONE")
        assert [p.wait().outcome for p in parkings] == [(None, 3)] * len(pairs)
    finally:
        for sockets in pairs:
            for sock in sockets:
                sock.close()


def test_a_closed_reactor_parks_nothing(pair) -> None:
    reactor = CommandReactor(timeout=5.0)
    reactor.close()
    server, _ = pair
    assert reactor.park(server, lambda data: pytest.fail("consumed")) == (b"", 0)
