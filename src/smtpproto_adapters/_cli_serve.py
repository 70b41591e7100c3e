"""Running one ``smtpproto serve`` process on the chosen backend, until SIGINT or SIGTERM.

Each backend gets the sink handler in its own style (async hooks with a thread offload, or plain hooks),
installs its signal handling *before* listening (so a signal that follows the start-up line is never
lost to the default action), calls ``ready`` with the bound addresses once it listens, and on a signal
runs ``server.close()``, which lets open sessions finish for ``close_timeout`` before it sends them 421.

The backend module is imported by name (``smtpproto_adapters.<backend>``) only when it is chosen, so a
backend whose I/O library is not installed costs nothing until someone asks for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Any, TypeVar

from ._cli_settings import ServeSettings, load_backend
from ._sink_handler import AsyncSinkHandler, BlockingSinkHandler, MessageLog, SinkCore

__all__ = [
    "ListenError",
    "Ready",
    "format_address",
    "listen_error",
    "reserve_port",
    "run_server",
]

T = TypeVar("T")

#: Called once the server listens, with its addresses formatted as ``host:port`` / ``[v6]:port``.
Ready = Callable[[list[str]], None]
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_logger = logging.getLogger("smtpproto_adapters.cli")


class ListenError(Exception):
    """The server could not listen (address in use, unknown host, ...); the message says where."""


def format_address(address: Any) -> str:
    """``127.0.0.1:2525`` or ``[::1]:2525`` from a socket address tuple."""
    host, port = str(address[0]), int(address[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(host: str, port: int, exc: OSError) -> ListenError:
    """The one-line error for a failure to bind ``host``:``port``."""
    if isinstance(exc, socket.gaierror) or not exc.errno or exc.errno < 0:
        reason = exc.strerror or str(exc)
    else:
        # asyncio rewords the error ("error while attempting to bind on address ..."): keep its cause.
        reason = os.strerror(exc.errno)
    return ListenError(f"cannot listen on {format_address((host, port))}: {reason}")


def _addresses(server: Any, settings: ServeSettings) -> list[str]:
    """The addresses ``server`` listens on (from its sockets where it exposes them, else its port)."""
    found = []
    for sock in getattr(server, "sockets", None) or []:
        getsockname = getattr(sock, "getsockname", None)
        if getsockname is not None:
            found.append(format_address(getsockname()))
    return found or [format_address((settings.host, server.port))]


def make_core(settings: ServeSettings, log: MessageLog) -> SinkCore:
    """The sink handler's shared part for ``settings``."""
    return SinkCore(
        settings.sink,
        server_name=settings.options.hostname,
        add_received=settings.add_received,
        users=settings.users,
        log=log,
        logger=_logger,
    )


def run_server(settings: ServeSettings, log: MessageLog, ready: Ready) -> None:
    """Serve until SIGINT/SIGTERM and a graceful close; raises :class:`ListenError`."""
    module = load_backend(settings.backend)
    core = make_core(settings, log)
    if settings.backend == "blocking":
        _run_blocking(module, core, settings, ready)
    elif settings.backend == "trio":
        _run_trio(module, core, settings, ready)
    elif settings.backend == "anyio":
        _run_anyio(module, core, settings, ready)
    elif settings.loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(_serve_asyncio(module, core, settings, ready))
    else:
        asyncio.run(_serve_asyncio(module, core, settings, ready))


# -- asyncio ------------------------------------------------------------------------------------------------


async def _asyncio_offload(function: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` that, when cancelled, still waits for the call to finish.

    asyncio would otherwise abandon the thread, and the handler's clean-up could then touch a message
    writer that the thread is still using.
    """
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        raise


async def _serve_asyncio(
    module: Any, core: SinkCore, settings: ServeSettings, ready: Ready
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in _SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    server = module.SMTPServer(AsyncSinkHandler(core, _asyncio_offload), settings.options)
    try:
        await server.listen(settings.port, settings.host)
    except OSError as exc:
        await server.close()
        raise listen_error(settings.host, settings.port, exc) from None
    ready(_addresses(server, settings))
    await stop.wait()
    _logger.info("signal received: closing")
    await server.close()


# -- trio and anyio -----------------------------------------------------------------------------------------


async def _serve_structured(
    module: Any,
    handler: AsyncSinkHandler,
    settings: ServeSettings,
    ready: Ready,
    start_soon: Callable[..., object],
    signals: AsyncIterator[int],
) -> None:
    """The trio/anyio sequence: listen, serve in a task of the caller's group, close on a signal.

    ``serve_forever`` runs in the group whether the backend accepts there or from ``listen``; either way
    it returns once ``close`` has finished, so the group ends with the server.
    """
    async with module.SMTPServer(handler, settings.options) as server:
        try:
            await server.listen(settings.port, settings.host)
        except OSError as exc:
            raise listen_error(settings.host, settings.port, exc) from None
        ready(_addresses(server, settings))
        start_soon(server.serve_forever)
        async for _ in signals:
            break
        _logger.info("signal received: closing")
        await server.close()


def _run_trio(module: Any, core: SinkCore, settings: ServeSettings, ready: Ready) -> None:
    import trio

    handler = AsyncSinkHandler(core, trio.to_thread.run_sync)

    failed: list[ListenError] = []

    async def main() -> None:
        with trio.open_signal_receiver(*_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:
                # Caught inside the nursery: leaving it, the error would come wrapped in a group.
                try:
                    await _serve_structured(
                        module, handler, settings, ready, nursery.start_soon, signals
                    )
                except ListenError as exc:
                    failed.append(exc)

    trio.run(main)
    if failed:
        raise failed[0]


def _run_anyio(module: Any, core: SinkCore, settings: ServeSettings, ready: Ready) -> None:
    import anyio
    import anyio.to_thread

    handler = AsyncSinkHandler(core, anyio.to_thread.run_sync)

    failed: list[ListenError] = []

    async def main() -> None:
        with anyio.open_signal_receiver(*_SIGNALS) as signals:
            async with anyio.create_task_group() as group:
                try:
                    await _serve_structured(
                        module, handler, settings, ready, group.start_soon, signals
                    )
                except ListenError as exc:
                    failed.append(exc)

    anyio.run(main, backend_options={"use_uvloop": settings.loop == "uvloop"})
    if failed:
        raise failed[0]


# -- blocking -----------------------------------------------------------------------------------------------


def _run_blocking(module: Any, core: SinkCore, settings: ServeSettings, ready: Ready) -> None:
    server = module.SMTPServer(BlockingSinkHandler(core), settings.options)
    closers: list[threading.Thread] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        # close() waits for serve_forever, which runs in this (the main) thread: close from another one.
        _logger.info("signal received: closing")
        closer = threading.Thread(target=server.close, name="smtpproto-close")
        closers.append(closer)
        closer.start()

    previous = {signum: signal.signal(signum, on_signal) for signum in _SIGNALS}
    try:
        try:
            server.listen(settings.port, settings.host)
        except OSError as exc:
            server.close()
            raise listen_error(settings.host, settings.port, exc) from None
        ready(_addresses(server, settings))
        server.serve_forever()
        for closer in closers:
            closer.join()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` with ``SO_REUSEPORT``, not listening: it fixes the port.

    ``--workers`` with ``--port 0`` needs one port for all workers; a bound socket that never listens is
    not part of the kernel's accept group, so it takes no connections away from the workers.
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock
