"""The servers that ``e2e.py`` measures, one per process: each reads every message to its end and drops it.

Run from the project root: ``.venv/bin/python benchmarks/servers.py KIND [--loop asyncio|uvloop] [--lmtp] [--cert PEM
--key PEM] [--port N]``. It listens on 127.0.0.1 (port 0 picks a free one), prints ``READY <port>`` once it
accepts connections, and serves until it is killed. KIND is one of:

* ``asyncio``, ``blocking``, ``trio``, ``anyio`` — ``smtpproto_adapters.<KIND>.SMTPServer`` with a handler whose
  ``on_data`` iterates the message stream to its end and keeps nothing (anyio on asyncio, or on trio with
  ``--anyio-backend trio``);
* ``sink`` — a bare ``asyncio.Protocol`` that answers each command with a fixed reply and scans DATA for the
  final dot (no per-line work): the ceiling for a Python server on asyncio;
* ``aiosmtpd`` — aiosmtpd's ``SMTP``/``LMTP`` protocol with a ``handle_DATA`` that drops the content (aiosmtpd
  has read the whole message into memory by then, as it always does).

Every server answers STARTTLS only when given ``--cert``/``--key``, and then with the same kind of context
(``ssl.create_default_context(Purpose.CLIENT_AUTH)``). ``--loop uvloop`` (or ``--uvloop``) runs the asyncio-based kinds on uvloop.
The module imports only what its server needs, so peak RSS compares servers, not harness code.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

HOST = "127.0.0.1"
NAME = "bench.test"
END = b"\r\n.\r\n"


def announce(port: int) -> None:
    sys.stdout.write(f"READY {port}\n")
    sys.stdout.flush()


# -- smtpproto's servers ------------------------------------------------------------------------------


class AsyncSink:
    async def on_data(self, stream: Any, session: Any) -> None:
        async for _chunk in stream:
            pass


class BlockingSink:
    def on_data(self, stream: Any, session: Any) -> None:
        for _chunk in stream:
            pass


def options(lmtp: bool, context: ssl.SSLContext | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"name": NAME, "disable_reverse_lookup": True, "lmtp": lmtp}
    if context is None:
        opts["disabled_commands"] = ["STARTTLS"]
    else:
        opts["ssl_context"] = context
    return opts


async def serve_smtpproto(
    module: str, port: int, lmtp: bool, context: ssl.SSLContext | None
) -> None:
    """asyncio, trio and anyio: the same code, only the import differs."""
    server_class = __import__(f"smtpproto_adapters.{module}", fromlist=["SMTPServer"]).SMTPServer
    server = server_class(AsyncSink(), **options(lmtp, context))
    await server.listen(port, HOST)
    announce(server.port)
    await server.serve_forever()


def serve_blocking(port: int, lmtp: bool, context: ssl.SSLContext | None) -> None:
    from smtpproto_adapters.blocking import SMTPServer

    server = SMTPServer(BlockingSink(), **options(lmtp, context))
    server.listen(port, HOST)
    announce(server.port)
    server.serve_forever()


# -- the bare asyncio.Protocol sink ---------------------------------------------------------------------


class Sink(asyncio.Protocol):
    """Just enough SMTP/LMTP for the load tools: fixed replies, pipelining, STARTTLS, per-recipient LMTP."""

    def __init__(self, lmtp: bool, context: ssl.SSLContext | None) -> None:
        self.lmtp = lmtp
        self.context = context
        self.transport: asyncio.Transport | None = None
        self.pending = b""  # a partial command line, or (in DATA) the last octets seen
        self.in_data = False
        self.recipients = 0
        self.tls = False
        self.upgrading: list[bytes] | None = None  # data that came before start_tls() returned

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no asyncio.Transport
        kind = b"LMTP" if self.lmtp else b"ESMTP"
        transport.write(b"220 " + NAME.encode() + b" " + kind + b" sink\r\n")

    def data_received(self, data: bytes) -> None:
        if self.upgrading is not None:
            # Decrypted data can arrive before start_tls() hands over the new transport.
            self.upgrading.append(data)
            return
        if self.pending and not self.in_data:
            data = self.pending + data
            self.pending = b""
        self.commands(data)

    def message_end(self, data: bytes, start: int) -> int:
        """The index just past CRLF "." CRLF in ``data[start:]`` (with what came before), else -1."""
        tail = self.pending
        if tail:
            self.pending = b""
            end = (tail + data[start : start + 4]).find(END)
            if end >= 0:
                return start + end + 5 - len(tail)
        end = data.find(END, start)
        if end >= 0:
            return end + 5
        self.pending = data[-4:] if len(data) - start >= 4 else (tail + data[start:])[-4:]
        return -1

    def commands(self, data: bytes) -> None:
        out: list[bytes] = []
        pos = 0
        size = len(data)
        transport = self.transport
        assert transport is not None
        while pos < size:
            if self.in_data:
                pos = self.message_end(data, pos)
                if pos < 0:
                    break
                self.in_data = False
                out.append(b"250 2.0.0 Ok\r\n" * (self.recipients if self.lmtp else 1))
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                self.pending = data[pos:]
                break
            verb = data[pos : pos + 4].upper()
            pos = eol + 1
            if verb == b"MAIL":
                self.recipients = 0
                out.append(b"250 2.1.0 Ok\r\n")
            elif verb == b"RCPT":
                self.recipients += 1
                out.append(b"250 2.1.5 Ok\r\n")
            elif verb == b"DATA":
                out.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                self.in_data = True
                self.pending = b"\r\n"  # the CRLF that ended DATA: an empty message is ".\r\n"
            elif verb in (b"EHLO", b"LHLO"):
                out.append(self.ehlo())
            elif verb == b"HELO":
                out.append(b"250 " + NAME.encode() + b"\r\n")
            elif verb in (b"RSET", b"NOOP"):
                out.append(b"250 2.0.0 Ok\r\n")
            elif verb == b"QUIT":
                out.append(b"221 2.0.0 Bye\r\n")
                transport.write(b"".join(out))
                transport.close()
                return
            elif verb == b"STAR" and self.context is not None and not self.tls:
                out.append(b"220 2.0.0 Ready to start TLS\r\n")
                transport.write(b"".join(out))
                transport.pause_reading()  # the ClientHello must reach the TLS layer, not us
                self.upgrading = []
                asyncio.get_running_loop().create_task(self.start_tls())
                return
            else:
                out.append(b"500 5.5.2 Command not recognized\r\n")
        if out:
            transport.write(b"".join(out))

    def ehlo(self) -> bytes:
        lines = [NAME, "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"]
        if self.context is not None and not self.tls:
            lines.append("STARTTLS")
        return (
            "".join(f"250-{x}\r\n" for x in lines[:-1]).encode() + f"250 {lines[-1]}\r\n".encode()
        )

    async def start_tls(self) -> None:
        transport = self.transport
        assert transport is not None
        assert self.context is not None
        try:
            new = await asyncio.get_running_loop().start_tls(
                transport, self, self.context, server_side=True
            )
        except (OSError, ssl.SSLError):
            transport.abort()
            return
        if new is None:
            transport.abort()
            return
        self.transport = new  # type: ignore[assignment]
        self.tls = True
        early, self.upgrading = self.upgrading or [], None
        if early:
            self.data_received(b"".join(early))


async def serve_sink(port: int, lmtp: bool, context: ssl.SSLContext | None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sink(lmtp, context), HOST, port, backlog=1024)
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


# -- aiosmtpd -------------------------------------------------------------------------------------------


async def serve_aiosmtpd(port: int, lmtp: bool, context: ssl.SSLContext | None) -> None:
    from aiosmtpd.lmtp import LMTP
    from aiosmtpd.smtp import SMTP

    class Drop:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            # The whole message is in envelope.content already; LMTP wants one reply per recipient.
            return "\r\n".join(["250 2.0.0 Ok"] * (len(envelope.rcpt_tos) if lmtp else 1))

    protocol = LMTP if lmtp else SMTP
    handler = Drop()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: protocol(
            handler, hostname=NAME, data_size_limit=None, tls_context=context, loop=loop
        ),
        HOST,
        port,
        backlog=1024,
    )
    announce(server.sockets[0].getsockname()[1])
    await server.serve_forever()


# -- main -----------------------------------------------------------------------------------------------

ASYNCIO_KINDS: dict[
    str, Callable[[int, bool, ssl.SSLContext | None], Coroutine[Any, Any, None]]
] = {
    "asyncio": lambda port, lmtp, ctx: serve_smtpproto("asyncio", port, lmtp, ctx),
    "sink": serve_sink,
    "aiosmtpd": serve_aiosmtpd,
}
KINDS = [*ASYNCIO_KINDS, "blocking", "trio", "anyio"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lmtp", action="store_true")
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop"],
        default="asyncio",
        help="event loop of the asyncio-based kinds (asyncio, anyio, sink, aiosmtpd)",
    )
    parser.add_argument("--uvloop", action="store_true", help="the same as --loop uvloop")
    parser.add_argument(
        "--anyio-backend",
        choices=["asyncio", "trio"],
        default="asyncio",
        help="the event loop anyio runs on (kind anyio only)",
    )
    parser.add_argument("--cert", help="PEM certificate: offer STARTTLS")
    parser.add_argument("--key", help="PEM private key for --cert")
    args = parser.parse_args(argv)
    args.uvloop = args.uvloop or args.loop == "uvloop"

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    if args.kind == "blocking":
        serve_blocking(args.port, args.lmtp, context)
    elif args.kind == "trio":
        import trio

        trio.run(serve_smtpproto, "trio", args.port, args.lmtp, context)
    elif args.kind == "anyio":
        import anyio

        anyio.run(
            serve_smtpproto,
            "anyio",
            args.port,
            args.lmtp,
            context,
            backend=args.anyio_backend,
            backend_options={"use_uvloop": args.uvloop} if args.anyio_backend == "asyncio" else {},
        )
    else:
        factory = asyncio.new_event_loop
        if args.uvloop:
            import uvloop

            factory = uvloop.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(ASYNCIO_KINDS[args.kind](args.port, args.lmtp, context))


if __name__ == "__main__":
    main()
