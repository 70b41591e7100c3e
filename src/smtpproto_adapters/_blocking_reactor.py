"""One thread that answers the blocking server's hook-less commands for every session waiting for its client.

Each blocking session has a thread of its own, and each ``recv()`` and ``send()`` of that thread releases the
GIL: with many busy sessions every release is a hand-off to another thread (a futex wake-up and a context
switch or two), and a client that waits for each reply (SMTP without PIPELINING, LMTP with several
recipients) costs two of them per command. Instead, a session that waits for commands parks its socket here
(:meth:`CommandReactor.park`), and its thread sleeps: the reactor reads each chunk the client sends, has the
session's pump take it (``consume``, see ``_transport.ReceiveCommands``) and sends the replies itself,
until the pump needs the session's thread (a hook, the message, STARTTLS, the end), the client goes away, the
idle timeout passes or a send would block; then it hands the session back. Hooks still run in the session's
thread, as before.

Linux only (``epoll``), for plaintext sessions; see :mod:`smtpproto_adapters.blocking`.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import threading
import time
from collections.abc import Callable

from ._blocking_pool import leave_signals_to_the_main_thread
from ._pump import READ_SIZE

__all__ = ["CommandReactor", "Unsent"]

#: The reactor's reads and sends never wait (the module imports everywhere; it runs on Linux only).
_NO_WAIT = socket.MSG_DONTWAIT if hasattr(socket, "MSG_DONTWAIT") else 0


class _Parked:
    """A session waiting here: its socket and consumer, its deadline, and what it gets back."""

    __slots__ = ("consume", "deadline", "error", "fd", "handed_back", "result", "served", "sock")

    def __init__(
        self, sock: socket.socket, consume: Callable[[bytes], bytes | None], deadline: float
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.consume = consume
        self.deadline = deadline
        #: What park() returns: None (taken by consume), b"" (end of stream), or Unsent replies.
        self.result: bytes | None = None
        self.error: BaseException | None = None
        #: How many chunks the reactor answered while the session stayed parked.
        self.served = 0
        #: Released by the reactor when the session may go on (acquired once at creation).
        self.handed_back = threading.Lock()
        self.handed_back.acquire()


class Unsent(bytes):
    """Replies the reactor could not send without blocking: the session's thread sends them."""


class CommandReactor:
    """The reactor thread (started on the first :meth:`park`, stopped by :meth:`close`).

    Every park has the same idle ``timeout`` (the server's), so the session that has waited longest since its
    last command is always the first in :attr:`_parked`: one timer, no heap.
    """

    def __init__(self, timeout: float) -> None:
        #: The idle timeout of every wait here.
        self.timeout = timeout
        self._lock = threading.Lock()
        #: Parked sessions by descriptor, the longest idle first.
        self._parked: collections.OrderedDict[int, _Parked] = collections.OrderedDict()
        # Made with the thread, at the first park: a server that never serves holds no descriptors for them.
        self._epoll: select.epoll
        self._wakeup_read: socket.socket
        self._wakeup_write: socket.socket
        self._thread: threading.Thread | None = None
        self._closed = False
        self._waiting_forever = False  # the reactor waits with no deadline: park() must wake it

    def park(
        self, sock: socket.socket, consume: Callable[[bytes], bytes | None]
    ) -> tuple[bytes | None, int]:
        """Wait (in the calling session thread) until the reactor hands the session back.

        Returns what ended the wait — None when ``consume`` took a chunk and needs the session's thread,
        ``b""`` at the end of the stream (also once the reactor is closed), or :class:`Unsent` replies that
        the caller must send and then park again — and how many chunks the reactor answered before that.
        Raises :class:`TimeoutError` after :attr:`timeout` seconds without a chunk, and whatever reading the
        socket or ``consume`` raised.
        """
        parked = _Parked(sock, consume, time.monotonic() + self.timeout)
        with self._lock:
            if self._closed:
                return b"", 0
            if self._thread is None:
                self._start()
            self._parked[parked.fd] = parked
            wake, self._waiting_forever = self._waiting_forever, False
        try:  # level-triggered: a chunk that is already there is reported at once
            self._epoll.register(parked.fd, select.EPOLLIN)
        except OSError:
            with self._lock:
                del self._parked[parked.fd]
            raise
        if wake:  # its first deadline: the reactor must wait no longer than that
            with contextlib.suppress(OSError):
                self._wakeup_write.send(b"!")
        parked.handed_back.acquire()
        if parked.error is not None:
            raise parked.error
        return parked.result, parked.served

    def close(self) -> None:
        """Stop the thread. Every session must have been handed back (the server's close() makes sure)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(OSError):
            self._wakeup_write.send(b"!")
        thread.join()
        self._epoll.close()
        self._wakeup_read.close()
        self._wakeup_write.close()

    def _start(self) -> None:
        """The epoll set, the wake-up socket pair and the thread; under _lock."""
        self._epoll = select.epoll()
        self._wakeup_read, self._wakeup_write = socket.socketpair()
        self._wakeup_read.setblocking(False)
        self._epoll.register(self._wakeup_read.fileno(), select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name="smtpproto-commands", daemon=True)
        self._thread.start()

    # -- the reactor thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        leave_signals_to_the_main_thread()
        epoll, wakeup = self._epoll, self._wakeup_read.fileno()
        parked_by_fd = self._parked
        while True:
            with self._lock:
                if self._closed:
                    break
                timeout = self._next_timeout()
            for fd, _ in epoll.poll(timeout):
                if fd == wakeup:
                    with contextlib.suppress(OSError):
                        self._wakeup_read.recv(4096)
                    continue
                parked = parked_by_fd.get(fd)
                if parked is not None:
                    self._serve(parked)
            self._expire()
        with self._lock:
            stranded = list(parked_by_fd.values())
        for parked in stranded:  # not expected: close() runs after every session ended
            self._hand_back(parked, result=b"")

    def _next_timeout(self) -> float | None:
        """Seconds until the first deadline, or None (and park() wakes the reactor); under _lock."""
        for parked in self._parked.values():
            return max(parked.deadline - time.monotonic(), 0.0)
        self._waiting_forever = True
        return None

    def _serve(self, parked: _Parked) -> None:
        """Read what the client sent and let the session's pump answer it, or hand the session back."""
        sock = parked.sock
        try:
            data = sock.recv(READ_SIZE, _NO_WAIT)
        except BlockingIOError:
            return
        except OSError as exc:
            self._hand_back(parked, error=exc)
            return
        if not data:
            self._hand_back(parked, result=b"")
            return
        try:
            answers = parked.consume(data)
        except Exception as exc:  # noqa: BLE001  # the session's thread raises it
            self._hand_back(parked, error=exc)
            return
        if answers is None:
            self._hand_back(parked, result=None)
            return
        if answers:
            try:
                sent = sock.send(answers, _NO_WAIT)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                self._hand_back(parked, error=exc)
                return
            if sent < len(answers):  # the client reads slowly: its own thread waits for that
                self._hand_back(parked, result=Unsent(answers[sent:]))
                return
        parked.served += 1
        with self._lock:  # the idle timeout counts from the last command
            parked.deadline = time.monotonic() + self.timeout
            if self._parked.get(parked.fd) is parked:
                self._parked.move_to_end(parked.fd)

    def _expire(self) -> None:
        now = time.monotonic()
        expired = []
        with self._lock:
            for parked in self._parked.values():
                if parked.deadline > now:
                    break
                expired.append(parked)
        for parked in expired:
            self._hand_back(parked, error=TimeoutError())

    def _hand_back(
        self, parked: _Parked, *, result: bytes | None = None, error: BaseException | None = None
    ) -> None:
        with self._lock:
            if self._parked.get(parked.fd) is not parked:
                return
            del self._parked[parked.fd]
        with contextlib.suppress(OSError):
            self._epoll.unregister(parked.fd)
        parked.result, parked.error = result, error
        parked.handed_back.release()
