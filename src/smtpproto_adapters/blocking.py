"""SMTPServer on plain sockets: a thread per connection, no event loop.

The shared async pump runs synchronously here (see ``smtpproto_adapters._transport.drive``): the
transport below and the hook runner are ``async def`` functions that never suspend. Hooks are plain
functions and run in the connection's thread. That thread is kept for a later connection once this one
ends, and on Linux it accepts that connection itself (see ``smtpproto_adapters._blocking_pool``), so
``threading.local`` data can outlive a session.

Usage::

    with SMTPServer(handler, size=10_000_000) as server:
        server.listen(2525)
        server.serve_forever()          # until server.close() is called from another thread
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import selectors
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from . import _blocking_pool
from ._blocking_pool import AcceptingPool, ThreadPool, leave_signals_to_the_main_thread
from ._blocking_reactor import CommandReactor, Unsent
from ._hooks import Hook
from ._options import ServerOptions
from ._pump import run_session
from ._server import ServerState, Statistics, build_options
from ._session import TLSInfo
from ._stream import BlockingStream, MessageSource
from ._transport import SendGuard, ShutdownRequested, drive, tls_info

__all__ = ["SMTPServer"]

#: After close_timeout and the 421, how long sessions still inside a hook get before their sockets are shut.
_HOOK_GRACE = 5.0

#: Plain sockets wait in recv() itself, bounded by SO_RCVTIMEO/SO_SNDTIMEO, and shutdown(SHUT_RD) wakes an
#: idle one at close. Each wait is then one syscall (one release of the GIL) instead of three: a selector,
#: the poll() of a socket timeout, the recv(). Linux only: elsewhere the kernel's timeout options and
#: shutdown wake-ups differ, so sockets wait in a selector with the server's wake-up socket, as TLS ones do.
_WAIT_IN_RECV = sys.platform.startswith("linux")

#: Session threads wait in accept() on the listening socket themselves (leader/follower, see
#: ``AcceptingPool``), ended by the listener's SO_RCVTIMEO and by shutdown() at close. Linux only, for those
#: two: elsewhere the calling thread accepts in a selector loop and hands each connection to a ThreadPool.
_ACCEPT_IN_SESSION_THREADS = sys.platform.startswith("linux")

#: A plaintext session waiting for commands parks its socket in the server's CommandReactor, whose one thread
#: answers every hook-less command (see ``_blocking_reactor``). Linux only (epoll), as waiting in recv() is.
_COMMANDS_IN_REACTOR = sys.platform.startswith("linux")

#: After a park in which the reactor answered fewer than two chunks (the client pipelines), how many
#: command waits the session does in its own thread before it parks again.
_WAITS_BETWEEN_PARKS = 256

#: How much one recv() under TLS takes off the kernel's buffer: several 16 KiB records at once.
_TLS_READ_SIZE = 65536


class _Wakeup:
    """A flag that can also wake a selector (a socketpair that becomes readable once set)."""

    def __init__(self) -> None:
        self.flag = threading.Event()
        self._lock = threading.Lock()
        self._pair: tuple[socket.socket, socket.socket] | None = None

    def fileobj(self) -> socket.socket:
        with self._lock:
            if self._pair is None:  # created on first use, so an unused server holds no sockets
                self._pair = socket.socketpair()
                self._pair[0].setblocking(False)
                if self.flag.is_set():
                    self._pair[1].send(b"!")
            return self._pair[0]

    def set(self) -> None:
        with self._lock:
            if not self.flag.is_set():
                self.flag.set()
                if self._pair is not None:
                    self._pair[1].send(b"!")

    def close(self) -> None:
        with self._lock:
            if self._pair is not None:
                for sock in self._pair:
                    sock.close()


class SMTPServer:
    """An SMTP/LMTP server on blocking sockets and threads. Hooks are plain methods of ``handler``.

    ``SMTPServer(handler, options=None, **option_overrides)``; see
    :class:`~smtpproto_adapters.ServerOptions` for the options.
    """

    def __init__(
        self, handler: object, options: ServerOptions | None = None, **option_overrides: Any
    ) -> None:
        self._state = ServerState(
            handler, build_options(options, option_overrides), asynchronous=False
        )
        self._listeners: list[socket.socket] = []
        self._lock = threading.Lock()
        #: Notified (under _lock) each time a session ends.
        self._session_ended = threading.Condition(self._lock)
        #: Open sessions, and the thread serving each (None until a thread took it).
        self._sessions: dict[_SocketTransport, threading.Thread | None] = {}
        #: The accept loop's threads (not on Linux, where the session threads accept themselves).
        self._pool: ThreadPool[_SocketTransport] | None = None
        self._stop_accepting = _Wakeup()
        self._kill = _Wakeup()
        self._closed = threading.Event()
        self._accept_loop_done = threading.Event()
        self._close_started = False
        self._serving = False
        self._resolver = concurrent.futures.ThreadPoolExecutor(
            4, "smtpproto-dns", initializer=leave_signals_to_the_main_thread
        )
        self._runner = _Runner(self._resolver)
        self._reactor = (
            CommandReactor(self._state.options.socket_timeout)
            if _COMMANDS_IN_REACTOR and _WAIT_IN_RECV
            else None
        )

    @property
    def options(self) -> ServerOptions:
        """The options in effect."""
        return self._state.options

    @property
    def sockets(self) -> list[socket.socket]:
        """The listening sockets."""
        return list(self._listeners)

    @property
    def port(self) -> int:
        """The port of the first listening socket (useful after ``listen(0)``)."""
        if not self._listeners:
            raise RuntimeError("not listening")
        return int(self._listeners[0].getsockname()[1])

    def statistics(self) -> Statistics:
        """A snapshot of the server's counters."""
        return self._state.statistics()

    def listen(self, port: int = 0, host: str = "127.0.0.1") -> None:
        """Bind and listen on ``host``:``port`` (port 0 picks a free one). May be repeated."""
        if self._state.closing:
            raise RuntimeError("the server is closed")
        family, _, _, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        listener = socket.create_server(
            address[:2], family=family, backlog=1024, reuse_port=self.options.reuse_port
        )
        self._listeners.append(listener)
        self._state.logger.info("listening on %s", listener.getsockname())

    def serve_forever(self) -> None:
        """Serve connections until :meth:`close` is called (from another thread).

        On Linux the session threads accept the connections themselves and the calling thread only waits,
        free for signal handlers; elsewhere it runs the accept loop.
        """
        if not self._listeners:
            raise RuntimeError("call listen() first")
        with self._lock:
            closing = self._close_started
            self._serving = not closing
        if closing:  # close() won the race: nothing to serve
            self._closed.wait()
            return
        try:
            if _ACCEPT_IN_SESSION_THREADS:
                self._accept_in_session_threads()
            else:
                self._accept_loop()
        finally:
            # Also when a signal handler raised: no thread may go on accepting, nor close() wait for this.
            self._stop_accepting.set()
            self._close_listeners()
            self._accept_loop_done.set()
        self._closed.wait()

    def _accept_loop(self) -> None:
        pool = self._pool = ThreadPool(self._serve, "smtpproto-session")
        with selectors.DefaultSelector() as selector:
            for listener in self._listeners:
                listener.setblocking(False)
                selector.register(listener, selectors.EVENT_READ)
            selector.register(self._stop_accepting.fileobj(), selectors.EVENT_READ)
            while not self._stop_accepting.flag.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._stop_accepting.fileobj():
                        break
                    transport = self._accept(key.fileobj)  # type: ignore[arg-type]
                    if transport is not None:
                        pool.submit(transport)

    def _accept_in_session_threads(self) -> None:
        pools: list[tuple[socket.socket, AcceptingPool[_SocketTransport]]] = []
        try:
            for listener in self._listeners:
                # Blocking, and SO_RCVTIMEO bounds an idle thread's accept(). Accepted sockets inherit the
                # option, but the transport sets its own.
                listener.setblocking(True)
                timeval = _timeval(_blocking_pool.IDLE_SECONDS)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
                accept = functools.partial(self._accept, listener)
                pool = AcceptingPool(accept, self._serve, "smtpproto-session")
                pools.append((listener, pool))
                pool.start()
            self._stop_accepting.flag.wait()
        finally:
            self._stop_accepting.set()  # so that _accept takes the shutdown for what it is
            for listener, pool in pools:
                # shutdown() ends every wait in accept() (EINVAL), and any later one at once. Closing the
                # socket would not, and must wait until no thread is in accept() with its descriptor.
                pool.close(functools.partial(_shutdown, listener))

    def _accept(self, listener: socket.socket) -> _SocketTransport | None:
        try:
            sock, peer = listener.accept()
        except (BlockingIOError, InterruptedError):
            # Another thread or a reset connection got there first, or an idle thread's SO_RCVTIMEO ran out.
            return None
        except OSError as exc:  # e.g. EMFILE: log and keep serving
            if self._stop_accepting.flag.is_set():
                return None  # the listener was shut down (EINVAL)
            self._state.logger.error("accept failed: %s", exc)
            time.sleep(0.05)
            return None
        if sock.gettimeout() is not None:  # only with a socket.setdefaulttimeout()
            sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            transport = _SocketTransport(sock, peer, self)
        except OSError as exc:  # the client is already gone
            self._state.logger.info("connection lost before it started: %s", exc)
            sock.close()
            return None
        with self._lock:
            self._sessions[transport] = None
            if self._kill.flag.is_set():
                transport.wake()
        return transport

    def _serve(self, transport: _SocketTransport) -> None:
        with self._lock:
            self._sessions[transport] = threading.current_thread()
        try:
            drive(run_session(self._state, transport, self._runner))
        finally:
            with self._lock:
                del self._sessions[transport]
                self._session_ended.notify_all()

    def close(self) -> None:
        """Stop accepting, let sessions finish for ``close_timeout``, then send them 421 and close.

        Safe to call from any thread, and more than once; returns when the server is closed.
        """
        with self._lock:
            started, self._close_started = self._close_started, True
            serving = self._serving
        if started:
            self._closed.wait()
            return
        self._state.closing = True
        self._stop_accepting.set()
        if not serving:
            self._close_listeners()
        self._join(self._state.options.close_timeout)
        # Idle sessions get their 421 4.3.2 now: the flag (and the wake-up socket, for the sessions that wait
        # in a selector) first, then the sessions waiting in recv() are woken.
        self._kill.set()
        with self._lock:
            for transport in self._sessions:
                transport.wake()
        self._join(_HOOK_GRACE)
        with self._lock:
            stuck = list(self._sessions)
        for transport in stuck:
            transport.abort()
        self._resolver.shutdown(wait=False, cancel_futures=True)
        if serving:
            # Closing the wake-up socket before the accept loop saw it would swallow the wake-up.
            self._accept_loop_done.wait()
        if self._pool is not None:  # read once the accept loop is over: it creates the pool
            self._pool.close()
        if self._reactor is not None:
            self._reactor.close()
        self._stop_accepting.close()
        self._kill.close()
        self._closed.set()
        self._state.logger.info("server closed")

    def _join(self, timeout: float) -> None:
        """Wait up to ``timeout`` for every session to end (but the caller's own, if a hook called close())."""
        me = threading.current_thread()
        with self._lock:
            self._session_ended.wait_for(
                lambda: all(thread is me for thread in self._sessions.values()), timeout
            )

    def _close_listeners(self) -> None:
        for listener in self._listeners:
            listener.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Runner:
    """Hooks run in the connection's thread; reverse DNS in a small pool so that it can time out."""

    def __init__(self, resolver: concurrent.futures.ThreadPoolExecutor) -> None:
        self._resolver = resolver

    async def call(self, hook: Hook, *args: Any) -> Any:
        return hook(*args)

    def data_stream(self, source: MessageSource) -> BlockingStream:
        return BlockingStream(source)

    async def reverse_lookup(self, address: str, timeout: float) -> str | None:
        try:
            future = self._resolver.submit(socket.getnameinfo, (address, 0), socket.NI_NAMEREQD)
            host, _ = future.result(timeout)
        except (OSError, TimeoutError, UnicodeError, RuntimeError):
            return None
        return str(host)


class _SocketTransport:
    """The pump's Transport over a blocking socket; TLS runs in memory over that same socket.

    A plain socket on Linux stays in blocking mode with the kernel's SO_RCVTIMEO/SO_SNDTIMEO as its
    timeouts: a receive is a single recv() that the idle timeout ends with EAGAIN and the server's close
    ends with EOF (see :meth:`wake`). Elsewhere it waits in a selector on the socket and the server's
    wake-up socket, then reads under a socket timeout.

    TLS is an ``ssl.SSLObject`` over memory BIOs, not an ``SSLSocket``: the socket keeps waiting as above,
    one recv() fetches every record the kernel holds, and OpenSSL decrypts them from memory. An SSLSocket
    cannot wait in recv() (CPython retries SSL_read forever on a blocking socket), so it needed the
    selector, a socket timeout's poll() and a recv() per record header and body.
    """

    def __init__(self, sock: socket.socket, peer: Any, server: SMTPServer) -> None:
        self._sock = sock
        self._server = server
        self._kill = server._kill
        self._guard = SendGuard()
        self.remote_address, self.remote_port = _address(peer)
        self.local_address, self.local_port = _address(sock.getsockname())
        self._send_timeout = server.options.socket_timeout
        self._reactor = server._reactor
        #: How many more command waits happen in this thread, not in the reactor (see receive_commands).
        self._waits_here = 0
        #: Serialises wake() with start_tls() and aclose(): never shut down a socket that was closed (its
        #: descriptor may belong to a new connection by then) or one in a TLS handshake.
        self._lock = threading.Lock()
        self._closed = False
        self._handshaking = False
        self._selector: selectors.BaseSelector | None = None
        #: What SO_RCVTIMEO is, while the socket waits in recv().
        self._recv_timeout: float | None = None
        #: The socket's own (Python) timeout, while it waits in a selector.
        self._sock_timeout: float | None = None
        #: After start_tls: the TLS connection and its two memory BIOs (records in, records out).
        self._tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        #: Whether OpenSSL holds no decrypted bytes that a read() would return (see receive()).
        self._tls_drained = False
        if _WAIT_IN_RECV:
            try:
                self._set_recv_timeout(self._send_timeout)
                timeval = _timeval(self._send_timeout)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
            except OSError:  # a struct timeval this build does not take (EINVAL): no harm done
                self._recv_timeout = None
                self._wait_in_selector()
        else:
            self._wait_in_selector()

    def _wait_in_selector(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._sock, selectors.EVENT_READ)
        selector.register(self._kill.fileobj(), selectors.EVENT_READ)
        self._selector = selector
        # The socket's own timeout bounds a send to a client that never reads (and leaves blocking mode).
        self._set_sock_timeout(self._send_timeout)

    def _set_recv_timeout(self, timeout: float | None) -> None:
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout))
        self._recv_timeout = timeout

    def _set_sock_timeout(self, timeout: float | None) -> None:
        if timeout != self._sock_timeout:
            self._sock.settimeout(timeout)
            self._sock_timeout = timeout

    async def receive(self, max_bytes: int, timeout: float | None) -> bytes:
        if self._kill.flag.is_set():
            raise ShutdownRequested
        tls = self._tls
        if tls is None:
            return self._receive_raw(max_bytes, timeout)
        while True:
            # Each SSL_read releases the GIL, a costly hand-off among busy session threads: skip the one that
            # could only fail, when OpenSSL has no decrypted bytes left and no record is waiting in memory.
            if not self._tls_drained or self._incoming.pending:
                try:
                    data = tls.read(max_bytes)
                except ssl.SSLWantReadError:  # no whole record in memory: fetch more
                    self._tls_drained = True
                except ssl.SSLZeroReturnError:  # the client's close_notify
                    return b""
                else:
                    # A short read ends OpenSSL's record: it reads records from the BIO one by one.
                    self._tls_drained = len(data) < max_bytes
                    if self._outgoing.pending:  # e.g. a TLS 1.3 KeyUpdate's answer
                        self._send_raw(self._outgoing.read())
                    return data
            records = self._receive_raw(_TLS_READ_SIZE, timeout)
            if not records:  # EOF without close_notify: an end of stream, as SSLSocket takes it
                return b""
            self._incoming.write(records)

    def _receive_raw(self, max_bytes: int, timeout: float | None) -> bytes:
        kill = self._kill.flag
        sock = self._sock
        if self._selector is None:
            if timeout != self._recv_timeout:
                self._set_recv_timeout(timeout)
            try:
                data = sock.recv(max_bytes)
            except BlockingIOError:  # SO_RCVTIMEO ran out
                if kill.is_set():
                    raise ShutdownRequested from None
                raise TimeoutError from None
            if kill.is_set():  # wake() ends the recv() with EOF
                raise ShutdownRequested
            return data
        # Wait for data, the idle timeout, or the server's shutdown signal, whichever comes first.
        ready = self._selector.select(timeout)
        if kill.is_set():
            raise ShutdownRequested
        if not ready:
            raise TimeoutError
        self._set_sock_timeout(timeout)
        return sock.recv(max_bytes)

    async def receive_commands(
        self, max_bytes: int, timeout: float | None, consume: Callable[[bytes], bytes | None]
    ) -> bytes | None:
        """Wait for commands in the server's reactor, which runs ``consume`` (see ReceiveCommands).

        TLS sessions, and sockets that wait in a selector, receive here instead: the pump consumes that.
        """
        reactor = self._reactor
        if (
            reactor is None
            or self._tls is not None
            or self._selector is not None
            or timeout != reactor.timeout
            or self._waits_here
        ):
            if self._waits_here:
                self._waits_here -= 1
            return await self.receive(max_bytes, timeout)
        kill = self._kill.flag
        while True:
            if kill.is_set():
                raise ShutdownRequested
            try:
                result, served = reactor.park(self._sock, consume)
            except TimeoutError:
                if kill.is_set():
                    raise ShutdownRequested from None
                raise
            if type(result) is Unsent:
                # The client reads slowly: wait for it here, under SO_SNDTIMEO, then park again.
                with self._guard:
                    self._send_raw(result)
                continue
            if result == b"" and kill.is_set():  # wake() ends the wait with EOF
                raise ShutdownRequested
            if served < 2:
                # A client that pipelines sends its commands in one chunk: parking costs more system calls
                # than it saves hand-offs. Wait in this thread for a while, then try again.
                self._waits_here = _WAITS_BETWEEN_PARKS
            return result

    async def receive_before_tls(self, max_bytes: int, timeout: float | None) -> bytes:
        # A plain socket's recv(n) takes at most n octets off the kernel's buffer and nothing is buffered
        # here, so everything after them is still there for the handshake.
        return await self.receive(max_bytes, timeout)

    async def send(self, data: bytes) -> None:
        with self._guard:
            if self._tls is not None:
                self._tls.write(data)  # never blocks: the records go to memory
                data = self._outgoing.read()
            self._send_raw(data)

    def _send_raw(self, data: bytes) -> None:
        if self._selector is not None:  # else SO_SNDTIMEO bounds it
            self._set_sock_timeout(self._send_timeout)
        self._sock.sendall(data)

    async def start_tls(self, context: ssl.SSLContext, timeout: float | None) -> TLSInfo:
        with self._lock:  # wake() leaves the socket alone until the handshake is over
            self._handshaking = True
        tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        try:
            while True:
                try:
                    tls.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    pass
                if self._outgoing.pending:
                    self._send_raw(self._outgoing.read())
                records = self._handshake_receive(timeout)
                if records:
                    self._incoming.write(records)
                else:  # the next do_handshake() raises the SSLEOFError
                    self._incoming.write_eof()
            if self._outgoing.pending:  # the last flight, and TLS 1.3 session tickets
                self._send_raw(self._outgoing.read())
        finally:
            with self._lock:
                self._handshaking = False
        self._tls = tls
        setup = self._server._state.tls
        return tls_info(tls, setup.servername(tls) if setup else None)

    def _handshake_receive(self, timeout: float | None) -> bytes:
        """A recv() under ``timeout`` that the server's close does not cut short (as before TLS was up)."""
        if self._selector is None:
            if timeout != self._recv_timeout:
                self._set_recv_timeout(timeout)
            try:
                return self._sock.recv(_TLS_READ_SIZE)
            except BlockingIOError:  # SO_RCVTIMEO ran out
                raise TimeoutError("TLS handshake timed out") from None
        self._set_sock_timeout(timeout)
        return self._sock.recv(_TLS_READ_SIZE)

    async def aclose(self) -> None:
        with self._lock:
            self._closed = True
        if self._selector is not None:
            self._selector.close()
        if self._tls is not None:
            # Our close_notify, into memory; the client's is not awaited (that is the SSLWantReadError).
            with contextlib.suppress(OSError, ValueError):
                self._tls.unwrap()
        if self._outgoing.pending:
            # The close_notify, or the alert of a failed handshake or record: sent if the socket takes it now.
            with contextlib.suppress(OSError):
                self._sock.setblocking(False)
                self._sock.send(self._outgoing.read())
        self._sock.close()

    def wake(self) -> None:
        """End a wait in recv() with EOF, once the server's kill flag is set (from close())."""
        with self._lock:
            if self._selector is None and not self._closed and not self._handshaking:
                # Only the read side: the 421 still goes out.
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RD)

    def abort(self) -> None:
        """Unblock a stuck thread (from close()): shut the socket down under it."""
        with self._lock, contextlib.suppress(OSError):
            if not self._closed:
                self._sock.shutdown(socket.SHUT_RDWR)


def _timeval(timeout: float | None) -> bytes:
    """``timeout`` as the struct timeval of SO_RCVTIMEO/SO_SNDTIMEO (zero: no timeout)."""
    if timeout is None:
        return struct.pack("@ll", 0, 0)
    seconds = int(timeout)
    micros = max(int((timeout - seconds) * 1_000_000), 0 if seconds else 1)
    return struct.pack("@ll", seconds, micros)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _address(sockaddr: Any) -> tuple[str, int]:
    return str(sockaddr[0]), int(sockaddr[1])
