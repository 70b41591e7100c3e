"""The adapter suite's fixtures: one parametrised ``backend``, a server running in a background thread, and
handlers whose behaviour each test sets with plain (sync) rules, so every test runs unchanged on every backend.

Adding a backend is one line in :data:`BACKENDS`.
"""

from __future__ import annotations

import hashlib
import importlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from smtpproto_adapters import Session

from .clients import make_certificate, wait_until


@dataclass(frozen=True)
class Backend:
    """How to run one backend's SMTPServer in a thread: its module, and the event loop (None = blocking)."""

    name: str
    module: str
    loop: str | None
    #: Passed to ``anyio.run`` as ``backend_options``.
    loop_options: tuple[tuple[str, Any], ...] = ()

    @property
    def asynchronous(self) -> bool:
        return self.loop is not None

    def server_class(self) -> Any:
        return importlib.import_module(self.module).SMTPServer


BACKENDS = {
    # asyncio in debug mode: a call into the loop from a wrong thread raises instead of racing.
    "asyncio": Backend("asyncio", "smtpproto_adapters.asyncio", "asyncio", (("debug", True),)),
    "blocking": Backend("blocking", "smtpproto_adapters.blocking", loop=None),
    "trio": Backend("trio", "smtpproto_adapters.trio", "trio"),
    # The anyio backend under both of anyio's event loops.
    "anyio": Backend("anyio", "smtpproto_adapters.anyio", "asyncio", (("debug", True),)),
    "anyio+trio": Backend("anyio+trio", "smtpproto_adapters.anyio", "trio"),
}

#: What every test server gets unless the test says otherwise: fast, deterministic, quiet.
DEFAULT_OPTIONS: dict[str, Any] = {
    "name": "mx.test",
    "disable_reverse_lookup": True,
    "self_signed": True,
    "socket_timeout": 10.0,
    "close_timeout": 1.0,
}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> Backend:
    return BACKENDS[request.param]


# -- handlers ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pause:
    """A rule result that makes the hook wait (without blocking an event loop), then return ``then``."""

    seconds: float = 0.0
    until: threading.Event | None = None
    then: Any = None


@dataclass
class Stored:
    """One message as on_data saw it."""

    mail_from: str | None
    rcpt_to: list[str]
    body: bytes
    transaction: int
    transmission_type: str
    size: int


@dataclass
class Recorder:
    """Behaviour (rules) and observations of a test handler, independent of the backend.

    A rule is a value returned by the hook, an exception raised by it, or a callable producing either.
    ``read`` is how on_data reads the stream: ``"all"``, ``"never"``, ``("chunks", delay)`` (iterate, sleeping
    after each chunk), ``("digest", delay)`` (the same, keeping only a SHA-256: the stored body is its hex),
    ``("first", n)`` or ``("sized", n)`` (read(n) repeatedly); it may also be a callable of the session.
    ``progress`` records ``(stream.size, stream.size_exceeded)`` after each chunk when iterating.
    """

    rules: dict[str, Any] = field(default_factory=dict)
    read: Any = "all"
    hooks: tuple[str, ...] = (
        "on_connect",
        "on_secure",
        "on_mail_from",
        "on_rcpt_to",
        "on_data",
        "on_close",
    )
    stored: list[Stored] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    closed: list[Session] = field(default_factory=list)
    data_errors: list[BaseException] = field(default_factory=list)
    progress: list[tuple[int, bool]] = field(default_factory=list)
    data_started: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def decide(self, name: str, *args: Any) -> Any:
        with self.lock:
            self.calls.append((name, args))
        rule = self.rules.get(name)
        if isinstance(rule, BaseException):
            raise rule
        if callable(rule) and not isinstance(rule, type):
            return rule(*args)
        return rule

    def called(self, name: str) -> list[Any]:
        with self.lock:
            return [args for hook, args in self.calls if hook == name]

    def mode(self, session: Session) -> Any:
        return self.read(session) if callable(self.read) else self.read

    def finish(self, body: bytes, stream: Any, session: Session) -> Any:
        env = session.envelope
        with self.lock:
            self.stored.append(
                Stored(
                    mail_from=env.mail_from.address if env.mail_from else None,
                    rcpt_to=[a.address for a in env.rcpt_to],
                    body=body,
                    transaction=session.transaction,
                    transmission_type=session.transmission_type,
                    size=stream.size,
                )
            )
        return self.decide("on_data", body, session)

    def wait_closed(self, count: int = 1, timeout: float = 5.0) -> None:
        wait_until(lambda: len(self.closed) >= count, timeout, f"{count} on_close call(s)")


class Accumulator:
    """Collects the chunks of a message (or only their digest) and the stream's progress."""

    def __init__(self, digest_only: bool) -> None:
        self.digest = hashlib.sha256() if digest_only else None
        self.parts: list[bytes] = []

    def add(self, chunk: bytes, stream: Any, rec: Recorder) -> None:
        if self.digest is not None:
            self.digest.update(chunk)
        else:
            self.parts.append(chunk)
        rec.progress.append((stream.size, stream.size_exceeded))

    def result(self) -> bytes:
        if self.digest is not None:
            return self.digest.hexdigest().encode()
        return b"".join(self.parts)


def linux_only_mode(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, switch: str, linux_mode: str
) -> str:
    """For a fixture parametrized over two ways the blocking backend works: set its module flag ``switch`` to
    whether ``request.param`` is ``linux_mode`` (a way it has on Linux only, skipped elsewhere)."""
    from smtpproto_adapters import blocking

    mode: str = request.param
    if mode == linux_mode and not getattr(blocking, switch):
        pytest.skip(f"{linux_mode} is for Linux")
    monkeypatch.setattr(blocking, switch, mode == linux_mode)
    return mode


def _sync_wait(result: Any) -> Any:
    if isinstance(result, Pause):
        if result.until is not None:
            result.until.wait(10)
        time.sleep(result.seconds)
        return result.then
    return result


async def _async_wait(result: Any) -> Any:
    if isinstance(result, Pause):
        if result.until is not None:
            with anyio.fail_after(10):
                while not result.until.is_set():
                    await anyio.sleep(0.005)
        await anyio.sleep(result.seconds)
        return result.then
    return result


def sync_handler(rec: Recorder) -> object:
    """A handler with plain hooks (the blocking backend) that follows ``rec``."""

    def on_data(stream: Any, session: Session) -> Any:
        rec.data_started.set()
        mode = rec.mode(session)
        try:
            if mode == "never":
                return _sync_wait(rec.decide("on_data", b"", session))
            if isinstance(mode, tuple) and mode[0] == "first":
                return _sync_wait(rec.finish(stream.read(mode[1]), stream, session))
            if isinstance(mode, tuple) and mode[0] == "sized":
                parts = []
                while part := stream.read(mode[1]):
                    parts.append(part)
                return _sync_wait(rec.finish(b"".join(parts), stream, session))
            if isinstance(mode, tuple) and mode[0] in ("chunks", "digest"):
                acc = Accumulator(mode[0] == "digest")
                for chunk in stream:
                    acc.add(chunk, stream, rec)
                    time.sleep(mode[1])
                return _sync_wait(rec.finish(acc.result(), stream, session))
            return _sync_wait(rec.finish(stream.read(), stream, session))
        except Exception as exc:
            rec.data_errors.append(exc)
            rec.progress.append((stream.size, stream.size_exceeded))
            raise

    def on_connect(session: Session) -> Any:
        return _sync_wait(rec.decide("on_connect", session))

    def on_secure(session: Session) -> Any:
        return _sync_wait(rec.decide("on_secure", session))

    def on_auth(auth: Any, session: Session) -> Any:
        return _sync_wait(rec.decide("on_auth", auth, session))

    def on_mail_from(address: Any, session: Session) -> Any:
        return _sync_wait(rec.decide("on_mail_from", address, session))

    def on_rcpt_to(address: Any, session: Session) -> Any:
        return _sync_wait(rec.decide("on_rcpt_to", address, session))

    def on_close(session: Session) -> Any:
        rec.closed.append(session)
        return _sync_wait(rec.decide("on_close", session))

    hooks = {
        f.__name__: f
        for f in (on_connect, on_secure, on_auth, on_mail_from, on_rcpt_to, on_data, on_close)
    }
    return SimpleNamespace(**{name: hooks[name] for name in rec.hooks})


def async_handler(rec: Recorder) -> object:
    """The same behaviour as :func:`sync_handler`, with ``async def`` hooks (any async backend)."""

    async def on_connect(session: Session) -> Any:
        return await _async_wait(rec.decide("on_connect", session))

    async def on_secure(session: Session) -> Any:
        return await _async_wait(rec.decide("on_secure", session))

    async def on_auth(auth: Any, session: Session) -> Any:
        return await _async_wait(rec.decide("on_auth", auth, session))

    async def on_mail_from(address: Any, session: Session) -> Any:
        return await _async_wait(rec.decide("on_mail_from", address, session))

    async def on_rcpt_to(address: Any, session: Session) -> Any:
        return await _async_wait(rec.decide("on_rcpt_to", address, session))

    async def on_data(stream: Any, session: Session) -> Any:
        rec.data_started.set()
        mode = rec.mode(session)
        try:
            if mode == "never":
                return await _async_wait(rec.decide("on_data", b"", session))
            if isinstance(mode, tuple) and mode[0] == "first":
                return await _async_wait(rec.finish(await stream.read(mode[1]), stream, session))
            if isinstance(mode, tuple) and mode[0] == "sized":
                parts = []
                while part := await stream.read(mode[1]):
                    parts.append(part)
                return await _async_wait(rec.finish(b"".join(parts), stream, session))
            if isinstance(mode, tuple) and mode[0] in ("chunks", "digest"):
                acc = Accumulator(mode[0] == "digest")
                async for chunk in stream:
                    acc.add(chunk, stream, rec)
                    await anyio.sleep(mode[1])
                return await _async_wait(rec.finish(acc.result(), stream, session))
            return await _async_wait(rec.finish(await stream.read(), stream, session))
        except Exception as exc:
            rec.data_errors.append(exc)
            rec.progress.append((stream.size, stream.size_exceeded))
            raise

    async def on_close(session: Session) -> Any:
        rec.closed.append(session)
        return await _async_wait(rec.decide("on_close", session))

    hooks = {
        f.__name__: f
        for f in (on_connect, on_secure, on_auth, on_mail_from, on_rcpt_to, on_data, on_close)
    }
    return SimpleNamespace(**{name: hooks[name] for name in rec.hooks})


# -- running servers ----------------------------------------------------------------------------------


class RunningServer:
    """An SMTPServer listening in a background thread; its loop (if any) runs in that thread too."""

    def __init__(
        self, backend: Backend, handler: object, host: str, options: dict[str, Any]
    ) -> None:
        self.backend = backend
        self.server: Any = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.closed = threading.Event()
        cls = backend.server_class()
        target = self._run_async if backend.asynchronous else self._run_blocking
        self._thread = threading.Thread(
            target=target, args=(cls, handler, host, options), daemon=True
        )
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("server did not start")
        if self._error is not None:
            raise self._error

    def _run_blocking(self, cls: Any, handler: object, host: str, options: dict[str, Any]) -> None:
        try:
            self.server = cls(handler, **options)
            self.server.listen(0, host)
        except (OSError, ValueError, TypeError, RuntimeError) as exc:  # relayed to the test
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        closer = threading.Thread(target=self._close_blocking, daemon=True)
        closer.start()
        self.server.serve_forever()
        closer.join()
        self.closed.set()

    def _close_blocking(self) -> None:
        self._stop.wait()
        self.server.close()

    def _run_async(self, cls: Any, handler: object, host: str, options: dict[str, Any]) -> None:
        async def main() -> None:
            try:
                self.server = cls(handler, **options)
                await self.server.listen(0, host)
            except (OSError, ValueError, TypeError, RuntimeError) as exc:  # relayed to the test
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.server.serve_forever)
                while not self._stop.is_set():
                    await anyio.sleep(0.01)
                await self.server.close()
            self.closed.set()

        assert self.backend.loop is not None
        anyio.run(main, backend=self.backend.loop, backend_options=dict(self.backend.loop_options))

    @property
    def port(self) -> int:
        return int(self.server.port)

    def statistics(self) -> Any:
        return self.server.statistics()

    def begin_close(self) -> None:
        """Ask the server to close (returns at once; see :attr:`closed`)."""
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise RuntimeError("server thread did not finish")


@pytest.fixture
def start_server(backend: Backend) -> Iterator[Callable[..., RunningServer]]:
    """``start_server(recorder=None, host="127.0.0.1", **options) -> RunningServer``; stopped after the test."""
    running: list[RunningServer] = []

    def start(
        rec: Recorder | None = None, host: str = "127.0.0.1", **options: Any
    ) -> RunningServer:
        rec = rec if rec is not None else Recorder()
        handler = async_handler(rec) if backend.asynchronous else sync_handler(rec)
        server = RunningServer(backend, handler, host, {**DEFAULT_OPTIONS, **options})
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@dataclass(frozen=True)
class Certificates:
    cert: Path
    key: Path
    sni_cert: Path
    sni_key: Path


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    directory = tmp_path_factory.mktemp("certs")
    cert, key = make_certificate(directory, "localhost")
    sni_cert, sni_key = make_certificate(directory, "sni.test")
    return Certificates(cert, key, sni_cert, sni_key)


@pytest.fixture(scope="session", autouse=True)
def no_blocking_calls_in_event_loops() -> Iterator[None]:
    """Any blocking call that smtpproto makes inside a running asyncio loop raises (blockbuster).

    It covers the asyncio backend and the anyio backend on asyncio; blockbuster cannot see a trio loop, and the
    blocking backend runs no loop. A session whose code blocks ends with the error logged and no reply, so
    the test fails on the reply it waits for.
    """
    from blockbuster import blockbuster_ctx

    with blockbuster_ctx(["smtpproto", "smtpproto_adapters"]) as buster:
        # Building a server may read certificate files or generate a self-signed one: once, at start-up.
        for function in buster.functions.values():
            function.can_block_in("smtpproto_adapters/_tls.py", "from_options")
        yield
