"""Core throughput: the DATA path and whole pipelined transactions, through the public API only.

Run from the project root: ``.venv/bin/python benchmarks/core.py``. Prints two figures, each measured in the
same run as its baseline so machine noise cancels out of the ratio:

(a) DATA path MB/s through ``receive_data``/``next_event`` over 64 KiB chunks of 76-character lines, against
    a bare ``bytes.find(b"\\r\\n.")`` scan of the same chunks (goal: ratio >= 0.7);
(b) complete 1 KiB transactions per second with the client's commands pipelined (goal: >= 20,000/s).

Each figure is the median of five rounds, timed in process CPU time (so other load on the machine
distorts it less than wall time would).
"""

from __future__ import annotations

import base64
import random
import statistics
import time

from smtpproto import NEED_DATA, DataChunk, DataEnd, ServerConfig, ServerConnection

CHUNK = 64 * 1024
ROUNDS = 5


def message_chunks(megabytes: int) -> list[bytes]:
    """``megabytes`` MiB of base64 in 76-character CRLF lines, cut into 64 KiB chunks."""
    rng = random.Random(1)
    encoded = base64.b64encode(rng.randbytes(megabytes * 1024 * 1024 * 3 // 4))
    body = b"\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76)) + b"\r\n"
    return [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]


def baseline(chunks: list[bytes]) -> float:
    """Seconds for a bare ``bytes.find(b"\\r\\n.")`` over every chunk."""
    start = time.process_time()
    for chunk in chunks:
        chunk.find(b"\r\n.")
    return time.process_time() - start


def open_data(conn: ServerConnection) -> None:
    """Bring ``conn`` into DATA mode."""
    conn.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n")
    while (event := conn.next_event()) is not NEED_DATA:
        if conn.awaiting is not None:
            conn.accept()
    assert event is NEED_DATA
    conn.data_to_send()


def data_path(chunks: list[bytes]) -> float:
    """Seconds to push every chunk through a connection in DATA mode and see the DataChunk events."""
    conn = ServerConnection(ServerConfig())
    open_data(conn)
    received = 0
    start = time.process_time()
    for chunk in chunks:
        conn.receive_data(chunk)
        while (event := conn.next_event()) is not NEED_DATA:
            assert isinstance(event, DataChunk)
            received += len(event.data)
    elapsed = time.process_time() - start
    conn.receive_data(b".\r\n")
    assert isinstance(conn.next_event(), DataChunk | DataEnd)
    assert received > 0
    return elapsed


def transactions(count: int) -> float:
    """Seconds for ``count`` complete 1 KiB transactions, each sent as one pipelined write."""
    body = (b"x" * 74 + b"\r\n") * 13 + b"y" * 48 + b"\r\n"  # 1 KiB of text
    transaction = (
        b"MAIL FROM:<sender@example.org> SIZE=1024\r\nRCPT TO:<rcpt@example.net>\r\nDATA\r\n"
        + body
        + b".\r\n"
    )
    conn = ServerConnection(ServerConfig())
    conn.receive_data(b"EHLO client.example\r\n")
    conn.next_event()
    start = time.process_time()
    for _ in range(count):
        conn.receive_data(transaction)
        while (event := conn.next_event()) is not NEED_DATA:
            if conn.awaiting is not None:
                conn.accept()
        conn.data_to_send()
    elapsed = time.process_time() - start
    assert event is NEED_DATA
    return elapsed


def main() -> None:
    chunks = message_chunks(32)
    megabytes = sum(map(len, chunks)) / 1e6
    base = statistics.median(baseline(chunks) for _ in range(ROUNDS))
    ours = statistics.median(data_path(chunks) for _ in range(ROUNDS))
    print(f"(a) DATA path: {megabytes / ours:,.0f} MB/s through the connection, ")
    print(
        f"    bytes.find baseline {megabytes / base:,.0f} MB/s, ratio {base / ours:.2f} (goal >= 0.7)"
    )
    count = 20_000
    seconds = statistics.median(transactions(count) for _ in range(ROUNDS))
    print(
        f"(b) pipelined 1 KiB transactions: {count / seconds:,.0f}/s on one core (goal >= 20,000/s)"
    )


if __name__ == "__main__":
    main()
