"""The blocking backend's connection threads: one thread per connection, kept for the next connection.

Starting a thread costs a handshake with the new thread (``Thread.start`` waits until it runs, which under
the GIL means a switch) and the kernel a stack mapping; with one message per connection that was a large
share of the server's CPU. Here a thread that finished its connection waits a while for the next one
instead of exiting. Each connection still has a thread to itself for its whole life.

:class:`AcceptingPool` (Linux): idle threads wait in ``accept()`` themselves. :class:`ThreadPool`
(elsewhere): an accept loop hands each connection to an idle thread.
"""

from __future__ import annotations

import queue
import signal
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["AcceptingPool", "ThreadPool", "leave_signals_to_the_main_thread"]

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


class AcceptingPool(Generic[T]):
    """Leader/follower threads for one listener: idle threads wait in ``accept()`` themselves.

    The kernel wakes one waiting thread per connection, and that thread serves it: no accept loop, and no
    hand-off from it to a pool thread (a selector wait, a queue put and a thread wake-up per connection,
    about a fifth of the server's CPU with one message per connection). Before serving, the thread makes
    sure that another one waits in ``accept()``, starting one if none does. ``accept()`` returns None when
    it got nothing: its timeout ran out (the caller bounds it by :data:`IDLE_SECONDS`), it failed, or
    :meth:`close` ended it. :data:`MAX_IDLE` and :data:`IDLE_SECONDS` apply as in :class:`ThreadPool`, but
    one thread always waits, until :meth:`close`.
    """

    def __init__(
        self, accept: Callable[[], T | None], work: Callable[[T], None], name: str
    ) -> None:
        self._accept = accept
        self._work = work
        self._name = name
        self._lock = threading.Lock()
        self._all_out = threading.Condition(self._lock)
        #: Threads in accept(), or on their way to it.
        self._waiting = 0
        self._closed = False

    def start(self) -> None:
        """Start the first waiting thread."""
        with self._lock:
            self._waiting += 1
        if not self._start_thread():
            raise RuntimeError("cannot start the first accepting thread")

    def close(self, wake: Callable[[], None]) -> None:
        """Stop accepting: ``wake()`` must end every wait in ``accept()``, present and future.

        Returns once no thread is in ``accept()`` (so the listener may be closed); threads still serving
        exit when they finish.
        """
        with self._lock:
            self._closed = True
        wake()
        with self._lock:
            self._all_out.wait_for(lambda: self._waiting == 0)

    def _start_thread(self) -> bool:
        """Start a thread that was already counted in ``_waiting``; on failure, uncount it."""
        try:
            threading.Thread(target=self._run, name=self._name, daemon=True).start()
        except (
            RuntimeError
        ):  # "can't start new thread": serve on; the next free thread accepts again
            self._leave()
            return False
        return True

    def _leave(self) -> None:
        """A thread counted in ``_waiting`` will not (or no longer) wait in accept()."""
        with self._lock:
            self._waiting -= 1
            self._all_out.notify_all()

    def _run(self) -> None:
        leave_signals_to_the_main_thread()
        while True:
            try:
                item = self._accept()
            except BaseException:
                self._leave()  # or close() would wait for this thread forever
                raise
            with self._lock:
                if item is None:
                    # Closed, or idle for IDLE_SECONDS while another thread waits too: leave. The last one
                    # stays, or nobody would accept.
                    if self._closed or self._waiting > 1:
                        self._waiting -= 1
                        self._all_out.notify_all()
                        return
                    continue
                self._waiting -= 1
                follower = self._waiting == 0 and not self._closed
                if follower:
                    self._waiting += 1
            if follower:
                self._start_thread()
            self._work(item)
            with self._lock:
                if self._closed or self._waiting >= MAX_IDLE:
                    return
                self._waiting += 1
