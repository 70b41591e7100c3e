"""The trio server's plain-socket path: one watchdog task times out every connection's waits.

Each wait moves its connection to the end of the watchdog's order, and the watchdog sleeps until the first
deadline; these tests check that a connection busy in a hook does not hold the others back and that every
wait gets its own full ``socket_timeout`` (a client that never reads its replies: test_command_path).
"""

from __future__ import annotations

import time

import pytest

from .clients import RawClient
from .conftest import BACKENDS, Pause, Recorder

pytestmark = pytest.mark.parametrize("backend", [BACKENDS["trio"]], ids=["trio"])

TIMEOUT = 0.6
TIMED_OUT = (421, ["4.4.2 mx.test Timeout - closing connection"])


def _greeted(port: int) -> RawClient:
    client = RawClient(port)
    assert client.reply()[0] == 220
    return client


def test_each_wait_times_out_after_its_own_socket_timeout(start_server) -> None:
    rec = Recorder(rules={"on_mail_from": Pause(TIMEOUT * 2)})
    server = start_server(rec, socket_timeout=TIMEOUT)
    busy = _greeted(server.port)
    busy.expect("EHLO c.test", 250)
    busy.send(b"MAIL FROM:<a@b.test>\r\n")  # first in the watchdog's order, then inside a hook
    first = _greeted(server.port)
    time.sleep(TIMEOUT / 3)
    second = _greeted(server.port)
    time.sleep(TIMEOUT / 3)
    first_active = time.monotonic()
    first.expect("NOOP", 250)  # first's new wait starts after second's

    assert second.reply() == TIMED_OUT
    second_timed_out = time.monotonic()
    assert first.reply() == TIMED_OUT
    first_timed_out = time.monotonic()
    assert first_timed_out - first_active >= TIMEOUT * 0.9
    assert first_timed_out - second_timed_out >= TIMEOUT / 6
    assert busy.reply()[0] == 250  # a hook's work is no wait: no timeout while it lasts
    hook_done = time.monotonic()
    assert busy.reply() == TIMED_OUT
    assert time.monotonic() - hook_done >= TIMEOUT * 0.9
    for client in (busy, first, second):
        assert client.at_eof()
        client.close()
    rec.wait_closed(3)
