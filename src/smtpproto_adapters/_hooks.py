"""The hook contract: which hooks exist, how they are called, and how what they do becomes a reply.

A handler is any object; each hook is an optional method on it (``async def`` on the async backends, a plain
method on the blocking one):

=================================== ================================================================
``on_connect(session)``             before the greeting; a refusal is sent instead of the 220 and the
                                    connection closes (default code 554)
``on_secure(session)``              after each TLS handshake (implicit TLS or STARTTLS); a refusal closes
``on_auth(auth, session)``          decide an ``smtpproto.AuthRequest``; return the user object to accept.
                                    Without this hook AUTH is not offered at all
``on_mail_from(address, session)``  decide the sender (:class:`Address`)
``on_rcpt_to(address, session)``    decide a recipient
``on_data(stream, session)``        read the message from ``stream``; return the final reply (LMTP: a list,
                                    one outcome per accepted recipient, or one outcome for all)
``on_close(session)``               the connection is gone (runs once, whatever happened); result ignored
=================================== ================================================================

A hook's *outcome* becomes the reply:

* returning ``None`` or ``True`` (or, for ``on_auth``, any user object) → the standard acceptance;
* returning ``False`` → the standard refusal;
* returning a :class:`smtpproto.Reply` → exactly that reply;
* raising :class:`smtpproto.SMTPError` → its reply;
* raising anything else → ``451 4.3.0`` for the client and an ``error`` log record with the traceback. The
  server and the session go on.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

import smtpproto

from ._logging import SessionLogger
from ._stream import DataStreamError, MessageSource

__all__ = [
    "HOOK_NAMES",
    "INTERNAL_ERROR",
    "HookSet",
    "Outcome",
    "Runner",
    "answer",
    "call_hook",
    "is_accept",
    "outcome_of",
]

HOOK_NAMES = (
    "on_connect",
    "on_secure",
    "on_auth",
    "on_mail_from",
    "on_rcpt_to",
    "on_data",
    "on_close",
)

#: What a hook decided: True = standard accept, False = standard refusal, or an explicit reply.
Outcome: TypeAlias = bool | smtpproto.Reply

#: The reply for a hook that raised something other than SMTPError.
INTERNAL_ERROR = smtpproto.Reply(451, "Internal server error, try again later", "4.3.0")

Hook: TypeAlias = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class HookSet:
    """The hooks a handler provides (``None`` where it has none)."""

    on_connect: Hook | None = None
    on_secure: Hook | None = None
    on_auth: Hook | None = None
    on_mail_from: Hook | None = None
    on_rcpt_to: Hook | None = None
    on_data: Hook | None = None
    on_close: Hook | None = None

    @classmethod
    def from_handler(cls, handler: object, *, asynchronous: bool) -> HookSet:
        """Collect the hooks of ``handler``, checking that each is a coroutine function iff ``asynchronous``.

        The check happens at construction so that a plain function given to an async server (or the reverse)
        fails at once with a clear message, not with a confusing error on the first connection.
        """
        found: dict[str, Hook] = {}
        for name in HOOK_NAMES:
            hook = getattr(handler, name, None)
            if hook is None:
                continue
            if not callable(hook):
                raise TypeError(f"handler.{name} is not callable")
            # An object whose __call__ is async counts as async too.
            call = vars(type(hook)).get("__call__")
            is_async = inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(call)
            if is_async != asynchronous:
                kind = "an async def" if asynchronous else "a plain (non-async) function"
                raise TypeError(f"handler.{name} must be {kind} on this backend")
            found[name] = hook
        return cls(**found)


class Runner(Protocol):
    """How a backend calls hooks and runs blocking helpers, as seen by the shared pump.

    Every method is ``async def``; the blocking backend's never suspend.
    """

    async def call(self, hook: Hook, *args: Any) -> Any:
        """Call ``hook(*args)`` (await it on async backends) and return its result."""
        ...

    def data_stream(self, source: MessageSource) -> Any:
        """The stream object that ``on_data`` receives, reading from ``source``."""
        ...

    async def reverse_lookup(self, address: str, timeout: float) -> str | None:
        """The PTR name of ``address`` within ``timeout`` seconds, or None; must not block an event loop."""
        ...


def outcome_of(result: object) -> Outcome:
    """The decision a hook's return value stands for (see the module docstring).

    An :class:`smtpproto.SMTPError` *instance* stands for its reply, so an LMTP ``on_data`` can return
    ``[True, SMTPError(550, "No such user")]``.
    """
    if isinstance(result, smtpproto.Reply):
        return result
    if isinstance(result, smtpproto.SMTPError):
        return result.reply
    return result is not False


async def call_hook(
    runner: Runner,
    hook: Hook,
    *args: Any,
    logger: SessionLogger,
    name: str,
    on_error: Callable[[], None] | None = None,
) -> tuple[Outcome, object]:
    """Run ``hook`` and return ``(outcome, raw result)``; never raises an :class:`Exception`.

    ``SMTPError`` becomes its reply; any other exception is logged and becomes :data:`INTERNAL_ERROR`
    and counted through ``on_error`` (a stream error raised because the client went away is expected and only
    logged at DEBUG).
    """
    try:
        result = await runner.call(hook, *args)
    except smtpproto.SMTPError as exc:
        return exc.reply, None
    except DataStreamError as exc:
        logger.debug("%s ended with %r", name, exc)
        return INTERNAL_ERROR, None
    except Exception:
        logger.exception("%s raised an exception", name)
        if on_error is not None:
            on_error()
        return INTERNAL_ERROR, None
    return outcome_of(result), result


def is_accept(outcome: Outcome) -> bool:
    """Whether ``outcome`` accepts (standard acceptance or a positive reply)."""
    return outcome.is_positive if isinstance(outcome, smtpproto.Reply) else outcome


def answer(conn: smtpproto.ServerConnection, outcome: Outcome) -> None:
    """Give ``outcome`` to the decision ``conn`` is waiting on."""
    if outcome is True:
        conn.accept()
    elif outcome is False:
        conn.reject()
    else:
        conn.send(outcome)
