"""The anyio server's sessions when anyio runs on trio: the trio server's bare-socket connections.

anyio's trio ``SocketStream`` adds a resource guard and its own error translation to every trio socket
call, and the anyio server then needs a cancel scope per wait or a watchdog task per connection; anyio's
task group adds a task handle to every task it starts. Under trio the anyio server therefore accepts
stdlib sockets itself and serves each as the trio server does (:func:`smtpproto_adapters.trio.serve_socket`):
a :class:`~smtpproto_adapters._trio_connection.Connection` on the bare socket, in a trio nursery, with one
:class:`~smtpproto_adapters._trio_connection.Watchdog` task for the whole server.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import trio
from anyio.abc import SocketListener, TaskStatus

from ._hooks import Runner
from ._server import ServerState
from ._trio_connection import Connection, Watchdog
from .trio import accept_sockets, serve_socket

__all__ = ["TrioSessions"]


class TrioSessions:
    """The sessions of one anyio server on trio: their nursery, the watchdog, and the accept loops."""

    def __init__(
        self,
        state: ServerState,
        runner: Runner,
        started: Callable[[Connection], None],
        ended: Callable[[Connection], None],
    ) -> None:
        self._state = state
        self._runner = runner
        self._started = started
        self._ended = ended
        self.watchdog = Watchdog(state.options.socket_timeout)
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: TaskStatus[None]) -> None:
        """Start (in anyio's sessions task group) the nursery the sessions run in, with the watchdog.

        A nursery of its own inside anyio's task group, rather than in its place: anyio's task group turns
        the cancellation of ``serve_forever`` into one plain ``Cancelled``, where a trio nursery raises a
        group of them. The nursery closes once the watchdog (see ``watchdog.scope``) and every session end.
        """
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.watchdog.run)
            task_status.started()

    async def accept(self, listener: SocketListener, sock: socket.socket) -> None:
        """Accept connections on ``listener`` (whose stdlib socket is ``sock``) until cancelled."""
        nursery = self._nursery
        assert nursery is not None
        state, runner, watchdog = self._state, self._runner, self.watchdog
        # kill() comes for every session at once: it cancels the whole nursery (see serve_socket).
        scope = nursery.cancel_scope
        started, ended = self._started, self._ended

        def start(client: socket.socket) -> None:
            try:
                nursery.start_soon(
                    serve_socket, client, state, runner, scope, watchdog, started, ended
                )
            except RuntimeError:  # the nursery closed: serve_forever was cancelled meanwhile
                client.close()

        async with listener:
            await accept_sockets(sock, state, start)
