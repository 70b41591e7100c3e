"""Quick end-to-end sanity figure: messages per second through each backend with smtplib.

Run from the project root: ``.venv/bin/python benchmarks/smtplib_quick.py [N] [backend ...]``. For each backend
(asyncio, blocking, trio, anyio on asyncio, anyio on trio) it starts a server in-process (in a background
thread), sends N small messages (default 2000) over ONE smtplib connection and prints msgs/s. The client runs
in the same process, so the figure includes smtplib's own cost; it is a sanity check, not the real benchmark.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import smtplib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from smtpproto_adapters import AsyncDataStream, BlockingDataStream, Session

BODY = b"Subject: benchmark\r\n\r\n" + b"x" * 1000 + b"\r\n"
OPTIONS: dict[str, Any] = {
    "name": "bench.test",
    "disable_reverse_lookup": True,
    "disabled_commands": ["STARTTLS"],  # no certificate generation: only the SMTP path is measured
}


class AsyncSink:
    async def on_data(self, stream: AsyncDataStream, session: Session) -> None:
        async for _ in stream:
            pass


class BlockingSink:
    def on_data(self, stream: BlockingDataStream, session: Session) -> None:
        for _ in stream:
            pass


def run_asyncio() -> tuple[int, Callable[[], None]]:
    from smtpproto_adapters.asyncio import SMTPServer

    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        server = SMTPServer(AsyncSink(), **OPTIONS)
        await server.listen(0)
        box["server"], box["loop"] = server, asyncio.get_running_loop()
        ready.set()
        await server.serve_forever()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    ready.wait()

    def stop() -> None:
        asyncio.run_coroutine_threadsafe(box["server"].close(), box["loop"]).result()
        thread.join()

    return box["server"].port, stop


def run_blocking() -> tuple[int, Callable[[], None]]:
    from smtpproto_adapters.blocking import SMTPServer

    server = SMTPServer(BlockingSink(), **OPTIONS)
    server.listen(0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.close()
        thread.join()

    return server.port, stop


def run_in_portal(module: str, anyio_backend: str) -> tuple[int, Callable[[], None]]:
    """The SMTPServer of ``module`` in an anyio blocking portal: an event loop of ``anyio_backend`` in a thread.

    For the trio backend the portal's loop is trio itself, so the server runs exactly as under ``trio.run``.
    """
    from anyio.from_thread import start_blocking_portal

    server_class = importlib.import_module(module).SMTPServer
    portal_cm = start_blocking_portal(anyio_backend)
    portal = portal_cm.__enter__()
    server = server_class(AsyncSink(), **OPTIONS)
    portal.call(server.listen, 0)
    serving = portal.start_task_soon(server.serve_forever)

    def stop() -> None:
        portal.call(server.close)
        serving.result()
        portal_cm.__exit__(None, None, None)

    return server.port, stop


BACKENDS: dict[str, Callable[[], tuple[int, Callable[[], None]]]] = {
    "asyncio": run_asyncio,
    "blocking": run_blocking,
    "trio": functools.partial(run_in_portal, "smtpproto_adapters.trio", "trio"),
    "anyio": functools.partial(run_in_portal, "smtpproto_adapters.anyio", "asyncio"),
    "anyio+trio": functools.partial(run_in_portal, "smtpproto_adapters.anyio", "trio"),
}


def measure(name: str, count: int) -> float:
    port, stop = BACKENDS[name]()
    try:
        with smtplib.SMTP("127.0.0.1", port) as client:
            client.sendmail("a@b.test", ["x@y.test"], BODY)  # warm up
            started = time.perf_counter()
            for _ in range(count):
                client.sendmail("a@b.test", ["x@y.test"], BODY)
            elapsed = time.perf_counter() - started
    finally:
        stop()
    return count / elapsed


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    names = sys.argv[2:] or list(BACKENDS)
    for name in names:
        rate = measure(name, count)
        print(
            f"{name:11s} {rate:8.0f} msgs/s  ({count} x {len(BODY)} B over one smtplib connection)"
        )


if __name__ == "__main__":
    main()
