"""Throughput of the DATA reader against a bare ``bytes.find(b"\\r\\n.")`` over the same 64 KiB chunks.

Run from the project root: ``PYTHONPATH=src python benchmarks/data_reader.py [megabytes]``.

Two bodies of 76-character CRLF lines, neither with a dot at a line start: base64 (the bulk of any large
message, an attachment) and prose with a full stop in most lines (where dots are too common for the
reader's memchr shortcut). Each round feeds every chunk through a fresh reader the way a connection does
(append to one bytearray, read until nothing more comes), then ends with CRLF "." CRLF. The figures are
medians of five rounds.
"""

from __future__ import annotations

import base64
import random
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial

from smtpproto._config import LineEndings
from smtpproto._data import DotReader

CHUNK = 64 * 1024
LINE = 76
ROUNDS = 5
WORDS = (
    b"the message was sent to all of them. Please reply before noon, thanks. "
    b"Our meeting is moved to room four; bring the report. It runs late again. "
).split(b" ")


def base64_lines(size: int, rng: random.Random) -> bytes:
    """About ``size`` bytes of base64 in 76-character lines, with no final CRLF."""
    encoded = base64.b64encode(rng.randbytes(size * 3 // 4))
    return b"\r\n".join(encoded[i : i + LINE] for i in range(0, len(encoded), LINE))


def text_lines(size: int, rng: random.Random) -> bytes:
    """About ``size`` bytes of prose in 76-character lines (no line starts with a dot), no final CRLF."""
    lines = []
    total = 0
    while total < size:
        line = b""
        while len(line) < LINE:
            line += rng.choice(WORDS) + b" "
        line = line[:LINE].replace(b" .", b" x")
        if line.startswith(b"."):
            line = b"x" + line[1:]
        lines.append(line)
        total += LINE + 2
    return b"\r\n".join(lines)


def feed(chunks: list[bytes], policy: LineEndings) -> int:
    """Push every chunk through a new reader, end the message, and return the content length."""
    reader = DotReader(policy)
    buf = bytearray()
    size = 0
    for chunk in chunks:
        buf += chunk
        while True:
            content, finished = reader.read(buf)
            size += len(content)
            if not content:
                break
    buf += b"\r\n.\r\n"
    finished = False
    while not finished:
        content, finished = reader.read(buf)
        size += len(content)
    return size


def baseline(chunks: list[bytes]) -> int:
    """The reference scan: one ``find(b"\\r\\n.")`` per chunk."""
    hits = 0
    for chunk in chunks:
        hits += chunk.find(b"\r\n.") >= 0
    return hits


def seconds(run: Callable[[], object]) -> float:
    """The wall time of one call of ``run``."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench(name: str, body: bytes) -> None:
    """Print MB/s for the baseline and each policy, and each policy's ratio to the baseline.

    The rounds interleave the baseline and the policies, and a ratio is taken within each round before
    the median, so a shared machine that speeds up or slows down mid-run skews the ratios little.
    """
    chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
    for policy in LineEndings:
        assert feed(chunks, policy) == len(body) + 2, "the reader lost or added bytes"
    megabytes = len(body) / 1e6
    base_times: list[float] = []
    times: dict[LineEndings, list[float]] = {policy: [] for policy in LineEndings}
    for _ in range(ROUNDS):
        base_times.append(seconds(partial(baseline, chunks)))
        for policy in LineEndings:
            times[policy].append(seconds(partial(feed, chunks, policy)))
    print(f"{name}: {len(chunks)} chunks of 64 KiB, {megabytes:.1f} MB, median of {ROUNDS} rounds")
    print(f"  {'find(CRLF .) baseline':24} {megabytes / statistics.median(base_times):8.0f} MB/s")
    for policy in LineEndings:
        speed = megabytes / statistics.median(times[policy])
        ratio = statistics.median(b / t for b, t in zip(base_times, times[policy], strict=True))
        print(f"  {'DotReader ' + policy.name:24} {speed:8.0f} MB/s   ratio {ratio:.2f}")


def main() -> None:
    """Benchmark both bodies; the optional argument is the size of each in MB (default 4)."""
    size = int(float(sys.argv[1]) * 1e6) if len(sys.argv) > 1 else 4_000_000
    rng = random.Random(5321)
    bench("base64 lines", base64_lines(size, rng))
    bench("prose lines", text_lines(size, rng))


if __name__ == "__main__":
    main()
