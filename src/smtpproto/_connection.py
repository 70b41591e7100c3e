"""ServerConnection: one SMTP/LMTP session seen from the server, as a pure state machine.

Bytes go in with :meth:`ServerConnection.receive_data`, events come out of :meth:`ServerConnection.next_event`,
replies go in with :meth:`ServerConnection.send` and bytes come out of :meth:`ServerConnection.data_to_send`.
Nothing here touches a socket, a clock or a thread.

This module holds the public API, command dispatch, the mail transaction and DATA; AUTH comes from
``_connection_auth.py`` and PROXY/XCLIENT/XFORWARD from ``_connection_proxy.py``, as mixins (see
``_connection_base.py``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal, NoReturn, TypeAlias

from ._commands import CommandError, Extensions, parse_mail, parse_rcpt, split_command
from ._config import LineEndings, ServerConfig
from ._connection_auth import _AuthMixin
from ._connection_base import _AGAIN, _Again, _ReadResult
from ._connection_proxy import _NOT_ALLOWED, _ProxyMixin
from ._data import DotReader
from ._errors import LocalProtocolError, RemoteProtocolError
from ._events import (
    NEED_DATA,
    PAUSED,
    AuthRequest,
    ConnectionClosed,
    DataEnd,
    DataStart,
    Event,
    Hello,
    MailFrom,
    Quit,
    RcptTo,
    Reset,
    Sentinel,
    StartTLS,
    Verify,
    XClient,
    XForward,
    new_data_chunk,
    new_data_end,
    new_data_start,
    new_mail_from,
    new_rcpt_to,
)
from ._extensions import (
    auth_enabled,
    capabilities,
    enhanced_codes,
    smtputf8_offered,
    starttls_offered,
)
from ._receivebuffer import ReceiveBuffer
from ._replies import Reply
from ._state import (
    NOT_IMPLEMENTED,
    PRIVACY_COMMANDS,
    TRANSITIONS,
    Command,
    SessionState,
    sequence_error,
)

__all__ = ["ServerConnection", "TLSDetails"]

_S = SessionState
# States as module globals: on Python 3.11 reading an Enum class attribute runs EnumType.__getattr__, about
# ten times the cost of a global, and the state is checked several times per command.
_GREETED, _READY, _CLOSED, _REFUSED = _S.GREETED, _S.READY, _S.CLOSED, _S.REFUSED
_TRANSACTION_STATES = frozenset({_S.SENDER, _S.RECIPIENTS, _S.DATA})
_HTTP_RE = re.compile(
    r"(?i)(?:GET|HEAD|POST|PUT|DELETE|OPTIONS|TRACE|CONNECT|PATCH) \S+ HTTP/\d(?:\.\d)?"
)
_HOSTNAME_BAD_RE = re.compile(r"[\x00-\x20\x7f-\x9f\u200b\u2060\ufeff]")

DecisionEvent: TypeAlias = (
    MailFrom | RcptTo | DataStart | DataEnd | Verify | AuthRequest | XClient | XForward
)
_Handler: TypeAlias = "Callable[[ServerConnection, str, SessionState], _ReadResult]"
# RFC 4954 §6: with authentication required, these get 530 until AUTH succeeds.
_NEEDS_AUTH = frozenset({Command.MAIL, Command.RCPT, Command.DATA, Command.VRFY})

_CANNOT_VERIFY = "Cannot VRFY user, but will accept message and attempt delivery"
_HELP = "See RFC 5321 for the commands of SMTP"

# The standard answers of each decision event: (accept, reject).
_STANDARD_REPLIES: dict[type[DecisionEvent], tuple[Reply, Reply]] = {
    MailFrom: (Reply(250, "Sender accepted", "2.1.0"), Reply(550, "Sender rejected", "5.7.1")),
    RcptTo: (Reply(250, "Recipient accepted", "2.1.5"), Reply(550, "Mailbox unavailable", "5.1.1")),
    DataStart: (
        Reply(354, "End data with <CR><LF>.<CR><LF>"),
        Reply(554, "Transaction failed", "5.5.0"),
    ),
    DataEnd: (Reply(250, "Message accepted", "2.0.0"), Reply(554, "Message refused", "5.7.1")),
    Verify: (
        Reply(252, _CANNOT_VERIFY, "2.0.0"),
        Reply(550, "Mailbox unavailable", "5.1.1"),
    ),
    AuthRequest: (
        Reply(235, "Authentication successful", "2.7.0"),
        Reply(535, "Authentication credentials invalid", "5.7.8"),
    ),
    # Accepting XCLIENT answers with a fresh greeting instead (Postfix semantics).
    XClient: (Reply(220, "XCLIENT accepted"), _NOT_ALLOWED),
    XForward: (Reply(250, "OK", "2.0.0"), _NOT_ALLOWED),
}

#: The wire forms of the standard accept replies of the mail transaction events (see accept()).
_TRANSACTION_ACCEPTS: dict[type[DecisionEvent], tuple[bytes, bytes]] = {
    kind: _STANDARD_REPLIES[kind][0]._wire for kind in (MailFrom, RcptTo, DataStart, DataEnd)
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSDetails:
    """What the driver reported about the TLS layer (see :meth:`ServerConnection.tls_established`)."""

    server_name: str | None = None
    protocol: str | None = None
    cipher: str | None = None


class _ConfigTables:
    """What depends on a ServerConfig alone, worked out once per config rather than once per connection:
    the extensions before TLS, the verb table, the disabled privacy commands, and the constant replies
    every session sends (greeting, HELO, QUIT; EHLO per combination of the flags it depends on, filled in
    as sessions first need them)."""

    __slots__ = (
        "config",
        "ehlo",
        "extensions",
        "greeting",
        "helo",
        "privacy_disabled",
        "quit",
        "routes",
        "verbs",
    )

    def __init__(
        self,
        config: ServerConfig,
        extensions: Extensions,
        verbs: dict[str, Command],
        privacy_disabled: frozenset[Command],
        greeting: Reply,
    ) -> None:
        self.config = config  # kept so that id(config) stays unique while the entry exists
        self.extensions = extensions
        self.verbs = verbs
        self.privacy_disabled = privacy_disabled
        self.greeting = greeting
        # RFC 5321 §3.2: never the extension list to HELO; RFC 2034 §4: no enhanced code on HELO/EHLO.
        self.helo = Reply(250, f"{config.hostname} Nice to meet you")
        self.quit = Reply(221, f"{config.hostname} Service closing transmission channel", "2.0.0")
        #: EHLO/LHLO replies by (secure, authenticated, XCLIENT done).
        self.ehlo: dict[tuple[bool, bool, bool], Reply] = {}
        #: The hot path of dispatch: by state, each verb that goes straight to its handler, with the state
        #: after it. Left out, for the full checks of _dispatch: NOOP, disabled and unimplemented commands,
        #: and those out of sequence in that state.
        self.routes: dict[SessionState, dict[str, tuple[_Handler, SessionState]]] = {
            state: {
                verb: (ServerConnection._HANDLERS[command], after)
                for verb, command in verbs.items()
                if command in ServerConnection._HANDLERS
                and command not in privacy_disabled
                and (after := TRANSITIONS.get((state, command))) is not None
            }
            for state in SessionState
        }


#: _ConfigTables by id(ServerConfig); bounded, since a server may derive a config per client.
_PER_CONFIG: dict[int, _ConfigTables] = {}
_PER_CONFIG_MAX = 256


class ServerConnection(_AuthMixin, _ProxyMixin):
    """The server side of one SMTP or LMTP session.

    The greeting is queued as soon as the connection is made; send it with :meth:`data_to_send`. Then loop:
    call :meth:`next_event`; on :data:`NEED_DATA` flush :meth:`data_to_send` and feed :meth:`receive_data`;
    on a decision event (:class:`MailFrom`, :class:`RcptTo`, :class:`DataStart`, :class:`DataEnd`,
    :class:`Verify`) answer with :meth:`send`, :meth:`accept` or :meth:`reject`; on
    :class:`ConnectionClosed` flush and close. A :class:`RemoteProtocolError` from :meth:`next_event` means
    the peer broke the protocol beyond repair: its reply is already queued — flush and close.
    """

    def __init__(self, config: ServerConfig | None = None) -> None:
        self.config: Final = config if config is not None else ServerConfig()
        cfg = self.config
        self._buffer = ReceiveBuffer()
        self._out: list[bytes] = []
        self._flushed = False  # whether data_to_send() has handed out any bytes
        self._enhanced = enhanced_codes(cfg)
        self._wire_form = 0 if self._enhanced else 1  # index into Reply._wire
        self._line_end = b"\r\n" if cfg.line_endings is LineEndings.REJECT else b"\n"
        self._secure = cfg.secure
        self._tls: TLSDetails | None = None
        self._tls_pending = False
        self._reject_bare = cfg.line_endings is LineEndings.REJECT
        # What depends on the config alone is worked out once per config, not once per connection.
        tables = _PER_CONFIG.get(id(cfg))
        if tables is None or tables.config is not cfg:
            tables = _ConfigTables(
                cfg, self._make_extensions(), *self._verbs_for_config(), self._greeting()
            )
            if len(_PER_CONFIG) >= _PER_CONFIG_MAX:
                _PER_CONFIG.clear()
            _PER_CONFIG[id(cfg)] = tables
        self._tables = tables
        self._extensions = tables.extensions
        self._verbs = tables.verbs
        self._routes = tables.routes
        self._auth_required = cfg.auth_required
        self._privacy_disabled = tables.privacy_disabled
        self._reader: Callable[[], _ReadResult] = (
            self._read_proxy if cfg.use_proxy else self._read_command
        )
        self._state = _REFUSED if cfg.refuse_service else _GREETED
        self._eof = False
        self._aborted = False
        self._fatal: RemoteProtocolError | None = None
        # The decision waiting for the application, how many replies it still needs, and where an
        # accepted answer leads.
        self._awaiting: DecisionEvent | None = None
        self._replies_owed = 0
        self._on_accept = self._state
        # Counters for the limits.
        self._errors = 0
        self._unauthenticated_commands = 0
        self._user = None
        # The state of the mixins (declared there): AUTH (_AuthMixin), XCLIENT (_ProxyMixin).
        self._auth_failures = 0
        self._sasl = None
        self._auth_refusal = None
        self._sasl_mechanism = ""
        self._xclient_addr = False
        self._discarding_line = False
        # The open transaction.
        self._transaction_utf8 = False
        self._recipients = 0
        self._dot: DotReader | None = None
        self._data_size = 0
        self._data_finished = False

        if not cfg.use_proxy:  # behind a proxy the greeting waits for the PROXY header
            self._queue(tables.greeting)

    def _verbs_for_config(self) -> tuple[dict[str, Command], frozenset[Command]]:
        """The verbs a session knows (looked up by the verb's text on every command line), and the privacy
        commands that are disabled."""
        cfg = self.config
        verbs = {command.value: command for command in Command if self._enabled(command)}
        privacy_disabled = frozenset(
            command for command in PRIVACY_COMMANDS if command.value in cfg.disabled_commands
        )
        return verbs, privacy_disabled

    # -- public API ---------------------------------------------------------------------------------------

    @property
    def state(self) -> SessionState:
        """Where the session is in the mail transaction."""
        return self._state

    @property
    def awaiting(self) -> DecisionEvent | None:
        """The decision event waiting for the application's reply, if any."""
        return self._awaiting

    @property
    def secure(self) -> bool:
        """Whether the session runs inside TLS (implicit, or after STARTTLS)."""
        return self._secure

    @property
    def tls(self) -> TLSDetails | None:
        """What the driver reported in :meth:`tls_established`, if STARTTLS happened."""
        return self._tls

    @property
    def authenticated_user(self) -> str | None:
        """The username of the successful AUTH (or XCLIENT LOGIN), else ``None``."""
        return self._user

    @property
    def replies_owed(self) -> int:
        """How many replies the awaited decision still needs (LMTP's DataEnd needs one per recipient)."""
        return self._replies_owed

    @property
    def unprocessed_bytes(self) -> int:
        """How many received octets :meth:`next_event` has not turned into events yet.

        Non-zero after an event means the client has already sent more (pipelined commands, or a message that
        did not wait for the 354): a driver that answers an event and would then wait for the client must call
        :meth:`next_event` first.
        """
        return len(self._buffer.data)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the client; ``b""`` means the client closed its side."""
        if self._eof:
            if data:
                raise RuntimeError("received data after the end of the stream")
            return
        if not data:
            self._eof = True
        elif self._state is not _CLOSED and not self._tls_pending:
            # Nothing is read after QUIT or a 421, and plaintext that arrives while STARTTLS is being set up
            # must never run inside the TLS session (CVE-2011-0411). This is ReceiveBuffer.append() without
            # the call, since it runs for every read.
            self._buffer.data += data

    def data_to_send(self) -> bytes:
        """The bytes to write to the client now (possibly empty)."""
        out = self._out
        if not out:
            return b""
        self._flushed = True
        data = b"".join(out)
        out.clear()
        return data

    def next_event(self) -> Event | Literal[Sentinel.NEED_DATA, Sentinel.PAUSED]:
        """Process buffered input up to the next event.

        Returns an event, :data:`PAUSED` while a decision waits for the application, or :data:`NEED_DATA`
        when every buffered byte is processed. Raises :class:`RemoteProtocolError` (with its reply queued)
        when the session must end because of the peer.
        """
        if self._fatal is not None:
            error, self._fatal = self._fatal, None
            raise error
        if self._awaiting is not None or self._tls_pending:
            return PAUSED
        while self._state is not _CLOSED:
            result = self._reader()
            if result is _AGAIN:
                continue
            if result is not None:
                return result
            if not self._eof:
                return NEED_DATA
            # The peer is gone: whatever is half-received is dropped, never executed.
            self._aborted = self._state in _TRANSACTION_STATES
            self._state = _CLOSED
        return ConnectionClosed(transaction_aborted=self._aborted)

    def send(self, reply: Reply) -> None:
        """Answer the decision event that is waiting (see :attr:`awaiting`)."""
        event = self._awaiting
        if event is None:
            raise LocalProtocolError("no reply is due: wait for a decision event")
        # Exact type checks: events are final classes, and this runs for every reply (the hot path).
        kind = type(event)
        code = reply.code
        accepted = code < 400
        if kind is DataStart:
            if accepted and code != 354:
                raise LocalProtocolError("DataStart takes 354 (accept) or a 4xx/5xx reply")
            if not accepted and self._buffer:
                # The client sent text behind a DATA that is now refused: it would run as commands
                # (SMUG-07).
                self._sync_error()
                return
        elif 300 <= code < 400:
            raise LocalProtocolError(f"a 3xx reply does not answer {kind.__name__}")
        if reply.enhanced is None:
            reply = self._with_enhanced(reply, event)
        self._answer(event, kind, reply, accepted)

    def _answer(
        self, event: DecisionEvent, kind: type[DecisionEvent], reply: Reply, accepted: bool
    ) -> None:
        """Carry out ``reply`` (checked, enhanced code filled in) to the waiting ``event`` of type ``kind``."""
        self._replies_owed -= 1
        if not self._replies_owed:
            self._awaiting = None
        if isinstance(event, AuthRequest):
            self._answer_auth(event, reply, accepted)
            return
        if accepted and isinstance(event, XClient):
            self._apply_xclient(event)
            return
        self._out.append(reply._wire[self._wire_form])
        if reply.code == 421:
            # RFC 5321 §3.8: a 421 says the server is closing the channel; nothing more is read.
            self._close()
            return
        if accepted:
            if kind is RcptTo:
                self._recipients += 1
            elif isinstance(event, MailFrom):
                self._transaction_utf8 = event.args.get("SMTPUTF8") is True
        if self._replies_owed:
            return
        if kind is DataEnd:
            self._end_transaction(_READY)
        elif accepted and kind is not Verify:
            self._state = self._on_accept
            if kind is DataStart:
                self._start_data()

    def tls_established(
        self,
        *,
        server_name: str | None = None,
        protocol: str | None = None,
        cipher: str | None = None,
    ) -> None:
        """Tell the connection that the TLS handshake after :class:`StartTLS` succeeded.

        The session starts over as RFC 3207 §4.2 requires: no EHLO, no authentication, no transaction;
        STARTTLS is neither offered nor accepted again, and REQUIRETLS becomes available.
        """
        if not self._tls_pending:
            raise LocalProtocolError("tls_established() without a StartTLS event")
        self._tls_pending = False
        self._secure = True
        self._tls = TLSDetails(server_name=server_name, protocol=protocol, cipher=cipher)
        self._extensions = self._make_extensions()
        self._buffer.clear()
        self._user = None
        self._end_transaction(_GREETED)

    def accept(self) -> None:
        """Answer the waiting decision with its standard positive reply (e.g. ``250 2.1.0``, ``354``)."""
        event = self._awaiting
        if event is None:
            raise LocalProtocolError("no reply is due: wait for a decision event")
        kind = type(event)
        wire = _TRANSACTION_ACCEPTS.get(kind)
        if wire is None or self._replies_owed != 1:
            # send()'s checks pass for the standard reply, and it needs no enhanced code filled in (it
            # has one, or is a 354, or is XCLIENT's, which a fresh greeting replaces).
            self._answer(event, kind, _STANDARD_REPLIES[kind][0], True)
            return
        # The hot path, for the events of every mail transaction: what _answer() does for them.
        self._awaiting = None
        self._replies_owed = 0
        self._out.append(wire[self._wire_form])
        if kind is DataEnd:
            self._end_transaction(_READY)
            return
        self._state = self._on_accept
        if kind is RcptTo:
            self._recipients += 1
        elif kind is DataStart:
            self._start_data()
        else:
            assert isinstance(event, MailFrom)
            self._transaction_utf8 = event.args.get("SMTPUTF8") is True

    def reject(
        self, code: int | None = None, text: str | None = None, enhanced: str | None = None
    ) -> None:
        """Answer the waiting decision with a refusal; the defaults are the event's standard one."""
        standard = _STANDARD_REPLIES[type(self._require_awaiting())][1]
        if code is not None and code < 400:
            raise LocalProtocolError(f"reject() takes a 4xx or 5xx code, not {code}")
        code = standard.code if code is None else code
        if text is None:
            text = standard.text if isinstance(standard.text, str) else standard.text[0]
        if enhanced is None and code == standard.code:
            enhanced = standard.enhanced
        self.send(Reply(code, text, enhanced))

    def shutdown(self, reply: Reply | None = None) -> None:
        """End the session from the server's side (shutdown, idle timeout): queue a 421 and close.

        Any decision still waiting is dropped, and an open transaction counts as aborted.
        """
        if self._state is _CLOSED:
            return
        if self._tls_pending:
            # The 220 to STARTTLS is the last reply queued. Still here, it is replaced by the 421; once
            # taken, the client speaks TLS, and a plaintext reply would only garble its handshake: the
            # session ends without one.
            if self._out:
                self._out.pop()
                self._queue(reply or self._shutdown_reply())
            self._tls_pending = False
            self._close()
            return
        if not self._flushed and len(self._out) == 1:
            # Nothing was sent yet, not even the greeting: the 421 takes its place (too busy at
            # connect, RFC 5321 §3.8; CONFORMANCE CORE-03).
            self._out.clear()
        self._queue(reply or self._shutdown_reply())
        self._close()

    def _shutdown_reply(self) -> Reply:
        return Reply(421, f"{self.config.hostname} Service shutting down", "4.3.2")

    # -- output -------------------------------------------------------------------------------------------

    def _greeting(self) -> Reply:
        cfg = self.config
        if cfg.refuse_service:
            return Reply(554, f"{cfg.hostname} No SMTP service here", "5.7.1")
        return Reply(220, f"{cfg.hostname} {'LMTP' if cfg.lmtp else 'ESMTP'} {cfg.banner}".rstrip())

    def _make_extensions(self) -> Extensions:
        cfg = self.config
        return Extensions(
            size_limit=cfg.max_message_size,
            check_size=not cfg.hide_size,
            eightbitmime=not cfg.hide_8bitmime,
            smtputf8=smtputf8_offered(cfg),
            dsn=not cfg.hide_dsn,
            secure=self._secure,
            requiretls=not cfg.hide_requiretls,
            auth=auth_enabled(cfg),
        )

    def _queue(self, reply: Reply) -> None:
        self._out.append(reply._wire[self._wire_form])

    def _with_enhanced(self, reply: Reply, event: DecisionEvent) -> Reply:
        if reply.enhanced is not None or reply.code // 100 == 3:
            return reply
        accept, reject = _STANDARD_REPLIES[type(event)]
        klass = reply.code // 100
        if klass == 2:
            enhanced = accept.enhanced
        elif reply.code == reject.code:
            enhanced = reject.enhanced
        else:
            enhanced = f"{klass}.0.0"
        return Reply(reply.code, reply.text, enhanced)

    def _require_awaiting(self) -> DecisionEvent:
        if self._awaiting is None:
            raise LocalProtocolError("no reply is due: wait for a decision event")
        return self._awaiting

    def _decide(
        self, event: DecisionEvent, on_accept: SessionState, replies: int = 1
    ) -> DecisionEvent:
        self._awaiting = event
        self._replies_owed = replies
        self._on_accept = on_accept
        return event

    def _error(self, reply: Reply) -> Literal[_Again.AGAIN]:
        """Answer a client mistake, counting it against the error limit."""
        self._errors += 1
        if self._errors >= self.config.max_errors:
            self._fail(
                Reply(421, f"{self.config.hostname} Too many errors, closing connection", "4.7.0")
            )
        self._queue(reply)
        return _AGAIN

    def _close(self) -> None:
        """End the session: drop any waiting decision; an open transaction counts as aborted."""
        self._aborted = self._state in _TRANSACTION_STATES
        self._awaiting = None
        self._replies_owed = 0
        self._state = _CLOSED

    def _fail(self, reply: Reply) -> NoReturn:
        """End the session because of the peer: queue ``reply`` and raise."""
        self._queue(reply)
        self._close()
        raise RemoteProtocolError(str(reply.text), reply)

    def _fatal_after_send(self, reply: Reply) -> None:
        """End the session from inside :meth:`send`: the error surfaces at the next :meth:`next_event`."""
        self._queue(reply)
        self._close()
        self._fatal = RemoteProtocolError(str(reply.text), reply)

    @staticmethod
    def _sync_reply(code: int = 554) -> Reply:
        """The reply to text pipelined behind a DATA that is refused (CONFORMANCE PIPE-05, SMUG-07)."""
        return Reply(
            code, "SMTP protocol synchronization error (text pipelined after DATA)", "5.5.0"
        )

    def _sync_error(self) -> None:
        self._fatal_after_send(self._sync_reply())

    # -- command mode -------------------------------------------------------------------------------------

    def _read_command(self) -> _ReadResult:
        if not self._buffer.data:
            return None  # the common case after each command: everything is consumed
        line_end = self._line_end
        line = self._buffer.take_line(line_end)
        limit = self.config.max_command_line
        if line is None:
            if len(self._buffer) > limit:
                # Bound memory while a runaway line goes on; keep a CR that may start the CRLF.
                self._buffer.discard(keep_tail=1 if self._buffer.data.endswith(b"\r") else 0)
                self._discarding_line = True
            return None
        # The length on the wire with the terminator (before a lone LF, a CR is still part of ``line``).
        if self._discarding_line or len(line) + len(line_end) > limit:
            self._discarding_line = False
            return self._error(Reply(500, "Line too long", "5.5.6"))
        is_ascii = line.isascii()
        text = line.decode("ascii") if is_ascii else line.decode("utf-8", "surrogateescape")
        # CR and LF are looked for in the text, where they decode to themselves: ``in`` on bytes first tries
        # its operand as an int, at the cost of a formatted TypeError each time.
        if self._reject_bare:
            if "\n" in text or "\r" in text:
                return self._error(Reply(500, "Bare CR or LF in command line", "5.5.2"))
        elif text.endswith("\r"):
            text = text[:-1]  # the CR of a CRLF, when LF alone ends lines
        if is_ascii:
            # The hot path: a verb that may run now, and no authentication pending, goes straight to its
            # handler; everything else (and any non-ASCII line) takes the full checks of _dispatch.
            verb, _, argument = text.partition(" ")
            route = self._routes[self._state].get(verb.upper())
            if route is not None and not (self._auth_required and self._user is None):
                return route[0](self, argument, route[1])
        return self._dispatch(text)

    def _dispatch(self, line: str) -> _ReadResult:
        verb, argument = split_command(line)
        command = self._verbs.get(verb) if verb else None
        if command is None:
            if _HTTP_RE.fullmatch(line):
                self._fail(Reply(421, "HTTP requests not allowed", "4.7.0"))
            return self._error(Reply(500, "Command not recognized", "5.5.2"))
        if command in self._privacy_disabled:
            # VRFY or EXPN disabled for privacy (see _enabled): RFC 5321 §7.3 demands 252.
            return self._queue_again(Reply(252, _CANNOT_VERIFY, "2.0.0"))
        if command in NOT_IMPLEMENTED:
            return self._error(Reply(502, f"{command.value} not implemented", "5.5.1"))
        if self.config.auth_required and self._user is None and command is not Command.AUTH:
            self._unauthenticated_commands += 1
            if self._unauthenticated_commands >= self.config.max_unauthenticated_commands:
                self._fail(Reply(421, "Too many unauthenticated commands", "4.7.0"))
        after = TRANSITIONS.get((self._state, command))
        # RFC 4954 §6 (CONFORMANCE AUTH-15): after HELO/EHLO, MAIL, RCPT, DATA and VRFY get 530 until AUTH
        # succeeds, ahead of RCPT's and DATA's "need MAIL" (reached only by authenticating anyway).
        needs_auth = command in _NEEDS_AUTH and self.config.auth_required and self._user is None
        if after is None:
            if command is Command.DATA and self._buffer and self._state is not _REFUSED:
                # Text pipelined behind a DATA that cannot succeed would run as commands (PIPE-05,
                # SMUG-07). In LMTP a DATA without recipients MUST get 503 (RFC 2033 §4.2). A refused
                # session can open no transaction, and must wait for QUIT (RFC 5321 §3.1).
                self._fail(self._sync_reply(503 if self.config.lmtp else 554))
            if needs_auth and self._state is _READY:
                return self._queue_again(Reply(530, "Authentication required", "5.7.0"))
            return self._error(Reply(503, sequence_error(self._state, command), "5.5.1"))
        if needs_auth:
            return self._queue_again(Reply(530, "Authentication required", "5.7.0"))
        if command is Command.NOOP:
            return self._queue_again(
                Reply(250, "OK", "2.0.0")
            )  # RFC 5321 §4.1.1.9: arguments ignored
        if not argument.isascii() and _has_surrogates(argument):
            enhanced = {Command.MAIL: "5.1.7", Command.RCPT: "5.1.3"}.get(command, "5.5.2")
            return self._error(Reply(501, "Invalid UTF-8 in command", enhanced))
        return self._HANDLERS[command](self, argument, after)

    def _enabled(self, command: Command) -> bool:
        if command.value in self.config.disabled_commands:
            return command in PRIVACY_COMMANDS
        if command in (Command.HELO, Command.EHLO):
            return not self.config.lmtp
        if command is Command.LHLO:
            return self.config.lmtp
        if command is Command.AUTH:
            return auth_enabled(self.config)
        return True

    def _no_argument(self, argument: str, command: str) -> Reply | None:
        return _no_argument_reply(command) if argument else None

    def _hello(self, command: str, argument: str) -> _ReadResult:
        hostname = argument.strip(" ").split(" ", 1)[0]
        if not hostname:
            return self._error(Reply(501, f"Syntax: {command} hostname", "5.5.4"))
        if len(hostname) > 255 or _HOSTNAME_BAD_RE.search(hostname):
            return self._error(Reply(501, "Bad hostname syntax", "5.5.4"))
        self._end_transaction(_READY)
        tables = self._tables
        if command == "HELO":
            reply = tables.helo
        else:
            flags = (self._secure, self._user is not None, self._xclient_addr)
            cached = tables.ehlo.get(flags)
            if cached is None:
                caps = capabilities(
                    self.config, secure=flags[0], authenticated=flags[1], xclient_done=flags[2]
                )
                cached = tables.ehlo[flags] = Reply(250, (tables.helo.lines[0], *caps))
            reply = cached
        self._out.append(reply.to_bytes())  # no enhanced code on HELO/EHLO (RFC 2034 §4)
        return Hello(command=command, hostname=hostname)

    def _helo(self, argument: str, after: SessionState) -> _ReadResult:
        return self._hello("HELO", argument)

    def _ehlo(self, argument: str, after: SessionState) -> _ReadResult:
        return self._hello("EHLO", argument)

    def _lhlo(self, argument: str, after: SessionState) -> _ReadResult:
        return self._hello("LHLO", argument)

    def _mail(self, argument: str, after: SessionState) -> _ReadResult:
        try:
            address, args = parse_mail(argument, self._extensions)
        except CommandError as exc:
            return self._refuse(exc.reply)
        return self._decide(new_mail_from(address, MappingProxyType(args)), after)

    def _rcpt(self, argument: str, after: SessionState) -> _ReadResult:
        try:
            address, args = parse_rcpt(argument, self._extensions, utf8=self._transaction_utf8)
        except CommandError as exc:
            return self._refuse(exc.reply)
        if self._recipients >= self.config.max_recipients:
            self._queue(Reply(452, "Too many recipients", "4.5.3"))
            return _AGAIN
        return self._decide(new_rcpt_to(address, MappingProxyType(args)), after)

    def _refuse(self, reply: Reply) -> Literal[_Again.AGAIN]:
        # Syntax errors count against the error limit; policy refusals (552 size, 530, 553) do not.
        return self._error(reply) if reply.code in (500, 501) else self._queue_again(reply)

    def _queue_again(self, reply: Reply) -> Literal[_Again.AGAIN]:
        self._queue(reply)
        return _AGAIN

    def _data(self, argument: str, after: SessionState) -> _ReadResult:
        if argument:  # tested here rather than with _no_argument(): DATA comes with every message
            return self._error(_no_argument_reply("DATA"))
        return self._decide(new_data_start(), after)

    def _rset(self, argument: str, after: SessionState) -> _ReadResult:
        if error := self._no_argument(argument, "RSET"):
            return self._error(error)
        self._end_transaction(after)
        self._queue(Reply(250, "Flushed", "2.0.0"))
        return Reset()

    def _quit(self, argument: str, after: SessionState) -> _ReadResult:
        if error := self._no_argument(argument, "QUIT"):
            return self._error(error)
        self._queue(self._tables.quit)
        self._aborted = self._state in _TRANSACTION_STATES
        self._state = _CLOSED
        return Quit()

    def _vrfy(self, argument: str, after: SessionState) -> _ReadResult:
        if not argument.strip(" "):
            return self._error(Reply(501, "Syntax: VRFY address", "5.5.4"))
        return self._decide(Verify(argument=argument.strip(" ")), after)

    def _help(self, argument: str, after: SessionState) -> _ReadResult:
        topic = argument.strip(" ").split(" ", 1)[0].upper()
        if not topic:
            return self._queue_again(Reply(214, _HELP, "2.0.0"))
        command = Command.__members__.get(topic)
        if command is None or not self._enabled(command) or command in NOT_IMPLEMENTED:
            # RFC 5321 §4.2.3 "504 Command parameter not implemented" (CONFORMANCE CORE-42).
            return self._queue_again(Reply(504, "No help on that topic", "5.5.4"))
        return self._queue_again(Reply(214, f"{command.value}: {_HELP}", "2.0.0"))

    def _starttls(self, argument: str, after: SessionState) -> _ReadResult:
        if error := self._no_argument(argument, "STARTTLS"):
            return self._error(error)
        if self._secure:
            return self._error(Reply(503, "TLS already active", "5.5.1"))
        if not starttls_offered(self.config, secure=False):
            return self._queue_again(Reply(454, "TLS not available", "4.7.0"))
        self._queue(Reply(220, "Ready to start TLS", "2.0.0"))
        # Whatever the client pipelined after STARTTLS was sent in plaintext and must never be executed
        # inside the TLS session (CVE-2011-0411, CVE-2024-34083).
        self._buffer.clear()
        self._tls_pending = True
        self._end_transaction(after)
        return StartTLS()

    _HANDLERS: Final[dict[Command, _Handler]] = {
        Command.HELO: _helo,
        Command.EHLO: _ehlo,
        Command.LHLO: _lhlo,
        Command.MAIL: _mail,
        Command.RCPT: _rcpt,
        Command.DATA: _data,
        Command.RSET: _rset,
        Command.QUIT: _quit,
        Command.VRFY: _vrfy,
        Command.HELP: _help,
        Command.STARTTLS: _starttls,
        Command.AUTH: _AuthMixin._auth,
        Command.XCLIENT: _ProxyMixin._xclient,
        Command.XFORWARD: _ProxyMixin._xforward,
    }

    # -- data mode ----------------------------------------------------------------------------------------

    def _start_data(self) -> None:
        # One reader per connection, reset for each message: cheaper than a new one each time.
        if self._dot is None:
            self._dot = DotReader(self.config.line_endings)
        else:
            self._dot.reset()
        self._data_size = 0
        self._data_finished = False
        self._reader = self._read_data

    def _read_data(self) -> _ReadResult:
        dot = self._dot
        assert dot is not None
        if self._data_finished:
            return self._end_data(dot)
        content, self._data_finished = dot.read(self._buffer.data)
        if content:
            self._data_size += len(content)
            if not self._data_refused(dot):
                return new_data_chunk(content)
        if self._data_finished:
            return self._end_data(dot)
        return _AGAIN if content else None

    def _data_refused(self, dot: DotReader) -> bool:
        limit = self.config.max_message_size
        return (limit is not None and self._data_size > limit) or (
            dot.bare_line_ending and self._reject_bare
        )

    def _end_data(self, dot: DotReader) -> DataEnd:
        self._buffer.rescan()
        self._reader = self._read_command
        limit = self.config.max_message_size
        exceeded = limit is not None and self._data_size > limit
        refusal = None
        if exceeded:
            refusal = Reply(552, f"Message exceeds fixed maximum message size {limit}", "5.3.4")
        elif dot.bare_line_ending and self._reject_bare:
            refusal = Reply(550, "Bare CR or LF in message data (possible SMTP smuggling)", "5.5.2")
        replies = self._recipients if self.config.lmtp else 1
        event = new_data_end(self._data_size, exceeded, refusal)
        if refusal is None:
            self._decide(event, _READY, replies)
            return event
        for _ in range(replies):
            self._queue(refusal)
        self._end_transaction(_READY)
        return event

    def _end_transaction(self, state: SessionState) -> None:
        self._state = state
        self._recipients = 0
        self._transaction_utf8 = False


def _no_argument_reply(command: str) -> Reply:
    return Reply(501, f"Syntax: {command} (no arguments)", "5.5.4")


def _has_surrogates(text: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in text)
