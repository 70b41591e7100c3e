"""A small SMTP/LMTP load client for the paths Postfix's ``smtp-source`` cannot take.

Run from the project root: ``.venv/bin/python benchmarks/loadgen.py PORT [options]``. It opens ``--sessions``
concurrent sessions to 127.0.0.1:PORT (``--host`` to change), and sends ``--messages`` messages in all, at
most ``--per-connection`` on each connection before it says QUIT and reconnects. Each message is ``--size``
octets of content (headers and 76-character lines, none starting with a dot) to ``--recipients``
recipients. With pipelining (the default) MAIL, every RCPT and DATA go out in one write, and the body with
its final dot in a second write once the 354 came back (RFC 2920: the body waits for the 354); with
``--no-pipelining`` every command waits for its reply, as ``smtp-source`` does. ``--lmtp`` speaks LHLO
and expects one reply per recipient after the body; ``--starttls`` upgrades each connection (certificate
checks off) before the first message.

It prints one JSON object: messages, recipients, octets, errors, seconds (from the first connect to the
last reply), msgs_per_s and mib_per_s. The exit status is 1 if any reply was not the expected one.

The client is one process with an asyncio Protocol per session and no per-line Python work beyond
counting reply lines; it runs on uvloop when that is installed (``--loop asyncio`` to avoid it), so it can
push well past what a Python server takes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

LINE = 76


class ReplyError(Exception):
    """A reply other than the one the client expected."""


@dataclass
class Job:
    """What to send, shared by every session; ``remaining`` counts the messages not yet started."""

    host: str
    port: int
    remaining: int
    per_connection: int
    recipients: int
    lmtp: bool
    pipelining: bool
    tls: ssl.SSLContext | None
    envelope: bytes
    commands: list[bytes]
    body: bytes
    timeout: float


@dataclass
class Result:
    messages: int = 0
    recipients: int = 0
    octets: int = 0
    connections: int = 0
    errors: int = 0
    first_error: str = ""
    seconds: float = 0.0
    msgs_per_s: float = 0.0
    mib_per_s: float = 0.0


def make_body(size: int) -> bytes:
    """``size`` octets of message (headers, then lines of ``LINE`` characters), CRLF "." CRLF added."""
    head = b"From: <load@bench.test>\r\nTo: <sink@bench.test>\r\nSubject: load\r\n\r\n"
    line = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 3)[:LINE] + b"\r\n"
    content = (head + line * (size // len(line) + 1))[: max(size - 2, 0)]
    if content.endswith(b"\r"):
        content = content[:-1] + b"x"
    return content + b"\r\n.\r\n"


def make_envelope(recipients: int) -> tuple[bytes, list[bytes]]:
    mail = b"MAIL FROM:<load@bench.test>\r\n"
    rcpts = [b"RCPT TO:<rcpt%d@bench.test>\r\n" % i for i in range(recipients)]
    return mail + b"".join(rcpts) + b"DATA\r\n", [mail, *rcpts, b"DATA\r\n"]


class Connection(asyncio.Protocol):
    """Counts complete replies (a line whose fourth octet is not '-') and wakes the session."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.want = 1  # the greeting
        self.codes: list[bytes] = []
        self.waiter: asyncio.Future[list[bytes]] = loop.create_future()
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while self.want:
            eol = buf.find(b"\n")
            if eol < 0:
                return
            if buf[3:4] != b"-":
                self.codes.append(bytes(buf[:3]))
                self.want -= 1
            del buf[: eol + 1]
        if not self.waiter.done():
            self.waiter.set_result(self.codes)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"connection lost: {exc}"))

    def eof_received(self) -> bool:
        return False

    async def replies(self) -> list[bytes]:
        return await self.waiter

    async def send(self, data: bytes, count: int) -> list[bytes]:
        """Write ``data`` and wait for ``count`` complete replies."""
        self.want = count
        self.codes = []
        self.waiter = self.loop.create_future()
        assert self.transport is not None
        self.transport.write(data)
        return await self.waiter


def check(codes: list[bytes], expected: list[bytes], what: str) -> None:
    if codes != expected:
        raise ReplyError(f"{what}: got {[c.decode() for c in codes]}")


async def session(job: Job, result: Result) -> None:
    loop = asyncio.get_running_loop()
    hello = b"LHLO" if job.lmtp else b"EHLO"
    final = [b"250"] * (job.recipients if job.lmtp else 1)
    envelope_ok = [b"250"] * (1 + job.recipients) + [b"354"]
    while job.remaining > 0:
        transport, conn = await loop.create_connection(lambda: Connection(loop), job.host, job.port)
        result.connections += 1
        try:
            check(await conn.replies(), [b"220"], "greeting")
            check(await conn.send(hello + b" load.bench.test\r\n", 1), [b"250"], "EHLO")
            if job.tls is not None:
                check(await conn.send(b"STARTTLS\r\n", 1), [b"220"], "STARTTLS")
                new = await loop.start_tls(transport, conn, job.tls, server_hostname="localhost")
                assert new is not None
                conn.transport = transport = new  # type: ignore[assignment]
                check(await conn.send(hello + b" load.bench.test\r\n", 1), [b"250"], "EHLO")
            sent = 0
            while sent < job.per_connection and job.remaining > 0:
                job.remaining -= 1
                sent += 1
                if job.pipelining:
                    codes = await conn.send(job.envelope, 2 + job.recipients)
                else:
                    codes = []
                    for command in job.commands:
                        codes += await conn.send(command, 1)
                        if codes[-1][:1] not in b"23":
                            break
                check(codes, envelope_ok, "MAIL/RCPT/DATA")
                check(await conn.send(job.body, len(final)), final, "end of data")
                result.messages += 1
                result.recipients += job.recipients
                result.octets += len(job.body) - 3
            check(await conn.send(b"QUIT\r\n", 1), [b"221"], "QUIT")
        except (ReplyError, ConnectionError, ssl.SSLError) as exc:
            result.errors += 1
            result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
            if result.errors > 100:
                job.remaining = 0
        finally:
            transport.close()


async def run(job: Job, sessions: int) -> Result:
    result = Result()
    started = time.perf_counter()
    tasks = [asyncio.create_task(session(job, result)) for _ in range(sessions)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), job.timeout)
    except TimeoutError:
        result.errors += 1
        result.first_error = result.first_error or f"timed out after {job.timeout} s"
    except OSError as exc:
        result.errors += 1
        result.first_error = result.first_error or f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - started
    if result.seconds > 0:
        result.msgs_per_s = result.messages / result.seconds
        result.mib_per_s = result.octets / result.seconds / 2**20
    return result


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name in ("uvloop", "auto"):
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise
        else:
            return uvloop.new_event_loop  # type: ignore[no-any-return]
    return asyncio.new_event_loop


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--per-connection", type=int, default=100)
    parser.add_argument("--size", type=int, default=1024, help="message octets (default 1024)")
    parser.add_argument("--recipients", type=int, default=1)
    parser.add_argument("--lmtp", action="store_true")
    parser.add_argument("--starttls", action="store_true")
    parser.add_argument("--no-pipelining", dest="pipelining", action="store_false")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    parser.add_argument("--timeout", type=float, default=120.0, help="give up after this many s")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tls = None
    if args.starttls:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    envelope, commands = make_envelope(args.recipients)
    job = Job(
        host=args.host,
        port=args.port,
        remaining=args.messages,
        per_connection=args.per_connection,
        recipients=args.recipients,
        lmtp=args.lmtp,
        pipelining=args.pipelining,
        tls=tls,
        envelope=envelope,
        commands=commands,
        body=make_body(args.size),
        timeout=args.timeout,
    )
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        result = runner.run(run(job, min(args.sessions, args.messages) or 1))
    json.dump(asdict(result), sys.stdout)
    sys.stdout.write("\n")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
