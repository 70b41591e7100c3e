"""``smtpproto serve --workers N``: N processes sharing one port with ``SO_REUSEPORT``, and their supervisor.

The parent checks the arguments, fixes the port (a bound, never-listening ``SO_REUSEPORT`` socket, so that
``--port 0`` gives every worker the same port), forks the workers and waits until each one listens, then
prints the start-up line. Each worker is a complete single-process server (``reuse_port`` is on in its
options), and the kernel spreads new connections among them. The parent serves nothing itself: it forwards
SIGINT/SIGTERM to the workers, restarts a worker that dies unexpectedly, and exits once all of them have.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import select
import signal
import sys
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from ._cli_serve import ListenError, Ready, format_address, listen_error, reserve_port, run_server
from ._cli_settings import ServeSettings
from ._sink_handler import MessageLog

__all__ = ["run_workers"]

#: How long the workers get to start listening.
_START_TIMEOUT = 30.0
#: A worker that dies sooner than this after its start is not restarted: it would only die again.
_MIN_UPTIME = 5.0
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_logger = logging.getLogger("smtpproto_adapters.cli")


def _worker(settings: ServeSettings, log: MessageLog, ready_fd: int) -> None:
    """A worker process: a normal server that reports on ``ready_fd`` once it listens."""
    # Until the backend installs its own handling, a signal simply ends the worker (nothing is open yet).
    for signum in _SIGNALS:
        signal.signal(signum, signal.SIG_DFL)

    def ready(addresses: list[str]) -> None:
        os.write(ready_fd, b"!")

    try:
        run_server(settings, log, ready)
    except ListenError as exc:
        print(f"smtpproto serve: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


class _Supervisor:
    """The parent's side: start the workers, wait until they listen, forward signals, reap and restart."""

    def __init__(self, settings: ServeSettings, log: MessageLog) -> None:
        self.settings = settings
        self.log = log
        self.parent = os.getpid()
        self.context = multiprocessing.get_context("fork")
        self.workers: dict[BaseProcess, float] = {}  # process -> start time
        self.stopping = False
        self.failed = False
        self.ready_r, self.ready_w = os.pipe()

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.parent:
            return  # a worker between fork and resetting its handlers: it is told by the parent anyway
        self.stop()

    def stop(self) -> None:
        self.stopping = True
        for process in self.workers:
            if process.pid is not None and process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)

    def spawn(self) -> None:
        # Whatever the parent still buffers would be written twice, once by each process.
        sys.stdout.flush()
        sys.stderr.flush()
        process = self.context.Process(
            target=_worker, args=(self.settings, self.log, self.ready_w), name="smtpproto-worker"
        )
        process.start()
        self.workers[process] = time.monotonic()

    def wait_ready(self) -> bool:
        """Wait until every worker listens; False if one died first or time ran out."""
        deadline = time.monotonic() + _START_TIMEOUT
        count = 0
        while count < len(self.workers):
            if self.stopping or any(p.exitcode is not None for p in self.workers):
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _logger.error("the workers did not start listening within %ss", _START_TIMEOUT)
                return False
            readable, _, _ = select.select([self.ready_r], [], [], min(remaining, 0.1))
            if readable:
                count += len(os.read(self.ready_r, 64))
        return True

    def supervise(self) -> None:
        """Until every worker is gone: reap them, and replace one that died on its own."""
        while self.workers:
            sentinels = {p.sentinel: p for p in self.workers}
            waitable: list[int] = [*sentinels, self.ready_r]
            for ready in multiprocessing.connection.wait(waitable):
                if ready == self.ready_r:
                    os.read(self.ready_r, 64)  # a restarted worker is listening
                    continue
                assert isinstance(ready, int)
                process = sentinels[ready]
                process.join()
                started = self.workers.pop(process)
                if self.stopping:
                    if process.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT):
                        self.failed = True
                    continue
                uptime = time.monotonic() - started
                _logger.error("worker %s exited with status %s", process.pid, process.exitcode)
                if uptime < _MIN_UPTIME:
                    _logger.error("it ran only %.1fs: stopping instead of restarting", uptime)
                    self.failed = True
                    self.stop()
                else:
                    self.spawn()

    def run(self, ready: Ready) -> bool:
        previous = {signum: signal.signal(signum, self.on_signal) for signum in _SIGNALS}
        try:
            for _ in range(self.settings.workers):
                self.spawn()
            if self.wait_ready():
                ready([format_address((self.settings.host, self.settings.port))])
            elif not self.stopping:
                self.failed = True
                self.stop()
            self.supervise()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self.ready_r)
            os.close(self.ready_w)
        return not self.failed


def run_workers(settings: ServeSettings, log: MessageLog, ready: Ready) -> bool:
    """Run ``settings.workers`` worker processes until a signal; False if a worker failed.

    Raises :class:`ListenError` when the port cannot be bound.
    """
    try:
        reservation = reserve_port(settings.host, settings.port)
    except OSError as exc:
        raise listen_error(settings.host, settings.port, exc) from None
    with reservation:
        if settings.port == 0:
            # The workers bind the address and port the reservation got, so they all share that port.
            host, port = reservation.getsockname()[:2]
            settings = dataclasses.replace(settings, host=str(host), port=int(port))
        return _Supervisor(settings, log).run(ready)
