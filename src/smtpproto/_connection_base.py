"""What the parts of ServerConnection share: the reader's result type, and the state and helpers its mixins use.

:class:`~smtpproto.ServerConnection` (``_connection.py``: the public API, command dispatch, the mail
transaction and DATA) inherits AUTH from ``_connection_auth.py`` and PROXY/XCLIENT/XFORWARD from
``_connection_proxy.py``. Both mixins derive from :class:`_ConnectionBase`, which declares — for the type
checker only — the attributes and methods of ServerConnection they use; ``ServerConnection.__init__``
initialises all the state. Neither this module nor the mixins import ``_connection.py`` at runtime.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Literal, NoReturn, TypeAlias

from ._config import ServerConfig
from ._events import Event
from ._receivebuffer import ReceiveBuffer
from ._replies import Reply
from ._state import SessionState

if TYPE_CHECKING:
    from ._connection import DecisionEvent

__all__: list[str] = []


class _Again(enum.Enum):
    """Marker: a reader made progress without producing an event; run it again."""

    AGAIN = "AGAIN"


# Tested with ``is``: isinstance() against an Enum class takes the slow __instancecheck__ path.
_AGAIN: Final = _Again.AGAIN
_ReadResult: TypeAlias = "Event | Literal[_Again.AGAIN] | None"


class _ConnectionBase:
    """The attributes and helpers of ServerConnection that its mixins use (declarations only)."""

    # Annotations only: ServerConnection.__init__ sets them.
    _buffer: ReceiveBuffer
    _out: list[bytes]
    _line_end: bytes
    _secure: bool
    _state: SessionState
    _reader: Callable[[], _ReadResult]
    _user: str | None
    _discarding_line: bool

    if TYPE_CHECKING:

        @property
        def config(self) -> ServerConfig: ...

        def _read_command(self) -> _ReadResult: ...

        def _greeting(self) -> Reply: ...

        def _queue(self, reply: Reply) -> None: ...

        def _queue_again(self, reply: Reply) -> Literal[_Again.AGAIN]: ...

        def _error(self, reply: Reply) -> Literal[_Again.AGAIN]: ...

        def _decide(
            self, event: DecisionEvent, on_accept: SessionState, replies: int = 1
        ) -> DecisionEvent: ...

        def _close(self) -> None: ...

        def _fail(self, reply: Reply) -> NoReturn: ...

        def _fatal_after_send(self, reply: Reply) -> None: ...

        def _end_transaction(self, state: SessionState) -> None: ...
