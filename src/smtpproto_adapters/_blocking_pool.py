"""The blocking backend's connection threads: one thread per connection, kept for the next connection.

Starting a thread costs the accept loop a handshake with the new thread (``Thread.start`` waits until it
runs, which under the GIL means a switch) and the kernel a stack mapping; with one message per connection
that was a large share of the server's CPU. Here a thread that finished its connection waits a while for
the next one instead of exiting. Each connection still has a thread to itself for its whole life.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["ThreadPool", "leave_signals_to_the_main_thread"]

T = TypeVar("T")

#: How long an idle thread waits for another connection before it exits.
IDLE_SECONDS = 30.0
#: At most this many threads wait idle; one that finishes beyond that exits at once.
MAX_IDLE = 64


def leave_signals_to_the_main_thread() -> None:
    """Block every signal in the calling (helper) thread.

    Signals for the process must reach the main thread: delivered to a helper thread, they would leave the
    main thread asleep in its accept loop's select(), their Python handler never run.
    """
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())


class ThreadPool(Generic[T]):
    """Runs ``work(item)`` for each :meth:`submit`, each in a thread of its own, reusing idle threads.

    Unbounded: a submit that finds no idle thread starts one (admission limits are the server's job).
    """

    def __init__(self, work: Callable[[T], None], name: str) -> None:
        self._work = work
        self._name = name
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Threads waiting on the queue minus items queued for them: never negative, so every queued item
        # has a thread that will take it.
        self._idle = 0
        self._closed = False

    def submit(self, item: T) -> None:
        """Hand ``item`` to an idle thread, or to a new one."""
        with self._lock:
            reuse = self._idle > 0 and not self._closed
            if reuse:
                self._idle -= 1
        if reuse:
            self._queue.put(item)
        else:
            threading.Thread(target=self._run, args=(item,), name=self._name, daemon=True).start()

    def close(self) -> None:
        """Let the idle threads exit; threads still working exit when they finish (idempotent)."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, 0
        for _ in range(idle):
            self._queue.put(None)

    def _run(self, item: T | None) -> None:
        leave_signals_to_the_main_thread()
        while item is not None:
            self._work(item)
            item = self._next()

    def _next(self) -> T | None:
        """The next item for this thread, or None when it should exit."""
        with self._lock:
            if self._closed or self._idle >= MAX_IDLE:
                return None
            self._idle += 1
        while True:
            try:
                return self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nothing was queued for this thread: leave
                        self._idle -= 1
                        return None
                # A submit counted on this thread and is about to put its item: take it.
