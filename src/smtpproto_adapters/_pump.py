"""The one event→hook pump, shared by every backend.

:func:`run_session` drives one :class:`smtpproto.ServerConnection` over a
:class:`~smtpproto_adapters._transport.Transport`: bytes from the transport go into the core, each event the
core produces becomes a hook call (through the backend's :class:`~smtpproto_adapters._hooks.Runner`), each
hook outcome becomes a reply, and the core's output goes back to the transport. Timeouts, TLS and shutdown
sit at the edges of that loop.

It is written with ``async``/``await`` but awaits nothing except the transport and the runner, so the
blocking backend runs the very same coroutine synchronously with :func:`drive` (its transport and runner
never suspend), and asyncio/anyio/trio simply await it.
"""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import smtpproto
from smtpproto import Reply

from ._hooks import (
    INTERNAL_ERROR,
    Hook,
    Outcome,
    Runner,
    answer,
    call_hook,
    is_accept,
    outcome_of,
)
from ._logging import CommandLog, SessionLogger
from ._proxy_tls import read_header_before_tls
from ._server import ServerState
from ._session import Address, Envelope, Session
from ._stream import MessageReader
from ._transport import ReceiveCommands, ShutdownRequested, Transport, drive

__all__ = ["READ_SIZE", "drive", "run_session"]

#: What a handler that runs a hook (or TLS, or the message) returns: awaited, it says whether the session goes on.
_Turn = Coroutine[Any, Any, bool]

#: How much one receive asks for: large enough for the DATA fast path, small enough to bound memory.
READ_SIZE = 65536
#: How long a reverse DNS lookup may delay the greeting.
REVERSE_LOOKUP_TIMEOUT = 1.5


async def run_session(server: ServerState, transport: Transport, runner: Runner) -> None:
    """Serve one accepted connection from start to close. Never raises an :class:`Exception`."""
    if not server.admit():
        await _refuse(server, transport)
        return
    try:
        await _Pump(server, transport, runner).run()
    finally:
        server.release()


async def _refuse(server: ServerState, transport: Transport) -> None:
    """Turn a client away before any hook runs (``max_clients`` reached, or the server is closing)."""
    try:
        if not server.options.secure:  # a TLS client could not read a plaintext reply anyway
            if server.closing:
                reply = Reply(421, f"{server.hostname} Service shutting down", "4.3.2")
            else:
                text = f"{server.hostname} Too many connected clients, try again in a moment"
                reply = Reply(421, text, "4.7.0")
            await transport.send(reply.to_bytes(enhanced=server.enhanced_codes))
    except OSError:
        pass
    finally:
        await transport.aclose()


class _Pump:
    """The state of one session's loop."""

    def __init__(self, server: ServerState, transport: Transport, runner: Runner) -> None:
        self.server = server
        self.options = server.options
        self.hooks = server.hooks
        self.transport = transport
        self.runner = runner
        self.session = Session(
            remote_address=transport.remote_address,
            remote_port=transport.remote_port,
            local_address=transport.local_address,
            local_port=transport.local_port,
            lmtp=server.options.lmtp,
        )
        self.log = SessionLogger(server.logger, self.session.id)
        self.commands = CommandLog(self.log)
        config = server.config_for(transport.remote_address)
        # Implicit TLS behind a proxy: the header comes in plaintext before the ClientHello, so the pump reads
        # it off the connection before the handshake, and the core (fed only decrypted bytes) expects none.
        self.proxy_before_tls = server.options.secure and config.use_proxy
        if self.proxy_before_tls:
            config = dataclasses.replace(config, use_proxy=False)
        self.conn = smtpproto.ServerConnection(config)
        self.hold_output = True  # nothing is written before on_connect has decided
        self.broken = False  # a write failed: never write again
        self.closed_event: smtpproto.ConnectionClosed | None = None
        # Commands that need no hook are answered as they arrive (_consume), but not while the conversation
        # is logged: replies written there bypass _write. A transport with receive_commands (asyncio's; see
        # _transport.ReceiveCommands) runs _consume inside its read callback.
        self.consuming = not self.commands.enabled
        self.receive_commands: ReceiveCommands | None = getattr(transport, "receive_commands", None)
        #: The hook, TLS handshake or message that _consume left for the session's task to run.
        self.pending: _Turn | None = None

    # -- the session ----------------------------------------------------------------------------------

    async def run(self) -> None:
        connected = False
        try:
            self.log.info(
                "connection from %s:%s", self.session.remote_address, self.session.remote_port
            )
            if await self._before_connect():
                connected = True
                if await self._connect():
                    await self._loop()
        except Exception:
            self.server.count("errors")
            self.log.exception("session failed")
        finally:
            if self.pending is not None:  # the task was cancelled before it could run it
                self.pending.close()
            await self.transport.aclose()
            if connected and self.hooks.on_close is not None:
                await self._call(self.hooks.on_close, "on_close", self.session)
            self.log.info("connection closed")

    async def _before_connect(self) -> bool:
        """PROXY header, reverse DNS and implicit TLS: everything before on_connect may run."""
        session = self.session
        if self.proxy_before_tls:
            header = await read_header_before_tls(
                self.transport, self.options.socket_timeout, self.log
            )
            if header is None:
                return False  # malformed header, EOF or timeout: close without a word
            self._apply_proxy(header)
        elif self.conn.config.use_proxy:
            event = await self._next()
            if not isinstance(event, smtpproto.ProxyHeader):
                return False  # malformed header, EOF or timeout: close without a word
            self._apply_proxy(event)
        session.client_hostname = f"[{session.remote_address}]"
        if not self.options.disable_reverse_lookup:
            name = await self.runner.reverse_lookup(session.remote_address, REVERSE_LOOKUP_TIMEOUT)
            if name:
                session.client_hostname = name.rstrip(".").lower()
        if self.options.secure:
            return await self._handshake()
        return True

    def _apply_proxy(self, header: smtpproto.ProxyHeader) -> None:
        """Where every PROXY header reaches the session, whether the core or the pump (implicit TLS) read it."""
        self.session.apply_proxy(header)
        self.log.info(
            "PROXY: client is %s:%s", self.session.remote_address, self.session.remote_port
        )

    async def _connect(self) -> bool:
        """on_connect, and on_secure for implicit TLS; then let the greeting out."""
        if self.hooks.on_connect is not None:
            outcome = await self._call(self.hooks.on_connect, "on_connect", self.session)
            if not is_accept(outcome):
                await self._refuse_session(outcome, "Service not available")
                return False
        if self.session.secure and self.hooks.on_secure is not None:
            outcome = await self._call(self.hooks.on_secure, "on_secure", self.session)
            if not is_accept(outcome):
                await self._refuse_session(outcome, "TLS session refused")
                return False
        self.hold_output = False
        return True

    async def _refuse_session(self, outcome: Outcome, text: str) -> None:
        """Send a connect-time refusal instead of the greeting, then the session ends."""
        self.conn.data_to_send()  # drop the queued greeting
        reply = self._closing_reply(outcome, text)
        await self._write(reply.to_bytes(enhanced=self.server.enhanced_codes))

    def _closing_reply(self, outcome: Outcome, text: str) -> Reply:
        """The reply that ends a session refused by on_connect/on_secure (RFC 5321 §3.1: 554, or 421)."""
        if outcome is INTERNAL_ERROR:
            return Reply(421, f"{self.server.hostname} Internal server error, try again later")
        if isinstance(outcome, Reply):
            return outcome
        return Reply(554, f"{self.server.hostname} {text}")

    async def _loop(self) -> None:
        handlers = _HANDLERS
        while True:
            pending = self.pending
            if pending is not None:  # _consume met an event that needs this task
                self.pending = None
                if not await pending:
                    return
                continue
            event = self._poll()
            if event is smtpproto.NEED_DATA:
                await self._fill(consume=True)
                continue
            if event is self.closed_event:
                await self._flush()
                return
            handler = handlers.get(type(event))
            if handler is None:
                self.log.debug("ignoring event %r", event)
                continue
            # A handler that needs no hook acts at once and returns None; one that runs a hook (or the TLS
            # handshake) returns a coroutine: awaiting it says whether the session goes on.
            pending = handler(self, event)
            if pending is not None and not await pending:
                return

    # -- events -------------------------------------------------------------------------------------------

    def _hello(self, event: smtpproto.Hello) -> None:
        session = self.session
        session.opening_command = event.command
        session.host_name_appears_as = event.hostname.lower()
        session.reset_transaction()

    # MAIL and RCPT without a hook are accepted at once, without a coroutine. That is the hot path, so each
    # handler writes it out: one shared helper taking the hook and a callback cost 2% more instructions per
    # message (pump and core, callgrind). The hook's path is shared: _ask_about.
    def _mail_from(self, event: smtpproto.MailFrom) -> _Turn | None:
        address = Address(event.address, event.args)
        hook = self.hooks.on_mail_from
        if hook is None:
            self.conn.accept()
            self._keep_sender(address)
            return None
        return self._ask_about(address, hook, "on_mail_from", self._keep_sender)

    def _rcpt_to(self, event: smtpproto.RcptTo) -> _Turn | None:
        address = Address(event.address, event.args)
        hook = self.hooks.on_rcpt_to
        if hook is None:
            self.conn.accept()
            self._keep_recipient(address)
            return None
        return self._ask_about(address, hook, "on_rcpt_to", self._keep_recipient)

    async def _ask_about(
        self, address: Address, hook: Hook, name: str, keep: Callable[[Address], None]
    ) -> bool:
        """Ask ``hook``, answer the core, and keep ``address`` if the hook accepted it."""
        outcome = await self._call(hook, name, address, self.session)
        self._answer(outcome)
        if is_accept(outcome):
            keep(address)
        return True

    def _keep_sender(self, address: Address) -> None:
        self.session.envelope = Envelope(mail_from=address)

    def _keep_recipient(self, address: Address) -> None:
        self.session.envelope.rcpt_to.append(address)

    async def _data_start(self, event: smtpproto.DataStart) -> bool:
        self.conn.accept()
        await self._message()  # not through _read_message: one coroutine less per message
        return True

    async def _read_message(self) -> bool:
        """The rest of a DATA that :meth:`_consume` has accepted."""
        await self._message()
        return True

    def _reset(self, event: smtpproto.Reset) -> None:
        self.session.reset_transaction()

    def _verify(self, event: smtpproto.Verify) -> None:
        self.conn.accept()

    def _nothing(self, event: object) -> None:
        """QUIT: the core answered; data events only arrive inside _message."""

    async def _start_tls(self, event: smtpproto.StartTLS) -> bool:
        await self._flush()  # the 220 must go out in plaintext before the handshake
        return await self._handshake()

    async def _auth(self, event: smtpproto.AuthRequest) -> bool:
        await self._authenticate(event)
        return True

    def _xclient(self, event: smtpproto.XClient) -> None:
        self.session.apply_xclient(event)
        self.conn.accept()

    def _xforward(self, event: smtpproto.XForward) -> None:
        self.session.apply_xforward(event)
        self.conn.accept()

    # -- I/O ----------------------------------------------------------------------------------------------

    async def _next(self) -> object:
        """The next event from the core, reading the transport as needed; never NEED_DATA or PAUSED."""
        event = self._poll()
        while event is smtpproto.NEED_DATA:
            await self._fill()
            event = self._poll()
        return event

    def _poll(self) -> object:
        """The next event the core has without reading the transport, or NEED_DATA; never PAUSED."""
        while self.closed_event is None:
            try:
                event = self.conn.next_event()
            except smtpproto.RemoteProtocolError as exc:
                self.log.info("closing: %s", exc)
                if exc.reply is None:
                    self.conn.data_to_send()  # e.g. a bad PROXY header: no reply at all
                continue
            if event is smtpproto.NEED_DATA:
                return event
            if type(event) is smtpproto.ConnectionClosed:
                self.closed_event = event
                break
            if event is smtpproto.PAUSED:
                raise RuntimeError("the core waits for a decision the pump did not make")
            return event
        return self.closed_event

    async def _fill(self, consume: bool = False) -> None:
        """Flush the replies, then feed the core what the client sends next (or end the session).

        With ``consume`` (only _loop, waiting for commands) what arrives goes through :meth:`_consume`, which
        answers the commands that need no hook at once: this returns only once an event needs the loop. A
        transport with ``receive_commands`` runs it itself (asyncio in its read callback); what that returns,
        and everything from other transports, it runs here.
        """
        if not self.hold_output and (replies := self.conn.data_to_send()):
            await self._write(replies)  # _flush, inlined: this runs for every command
        if self.broken:
            self.conn.receive_data(b"")
            return
        consume = consume and self.consuming
        timeout = self.options.socket_timeout
        try:
            while True:
                if consume and self.receive_commands is not None:
                    received = await self.receive_commands(READ_SIZE, timeout, self._consume)
                    if received is None:  # _consume has taken it
                        return
                    data = received
                else:
                    data = await self.transport.receive(READ_SIZE, timeout)
                if not consume or not data:
                    break
                answers = self._consume(data)
                if answers is None:
                    return
                if answers:
                    await self._write(answers)
                    if self.broken:
                        data = b""
                        break
        except TimeoutError:
            self.log.info("idle for %ss: closing", self.options.socket_timeout)
            self.conn.shutdown(
                Reply(421, f"{self.server.hostname} Timeout - closing connection", "4.4.2")
            )
            return
        except ShutdownRequested:
            self.conn.shutdown()  # 421 4.3.2
            return
        except OSError as exc:
            self.log.info("connection lost: %s", exc)
            self.broken = True
            data = b""
        if self.commands.enabled:
            self.commands.received(data)
        self.conn.receive_data(data)

    def _consume(self, data: bytes) -> bytes | None:
        """Do what :meth:`_loop` does with ``data``, synchronously (on asyncio in the transport's read callback).

        Commands that need no hook (HELO, MAIL and RCPT without hooks, RSET, NOOP, …) are answered here, and
        the replies returned to be written at once: on asyncio no task wake-up and no extra turn of the event
        loop per command, elsewhere no round of the loop. Returns None when the loop must run: an event that
        needs a hook, the TLS handshake or the message (left in :attr:`pending`), or the end of the session.
        """
        conn = self.conn
        conn.receive_data(data)
        if self.pending is not None:  # the message, after a DATA answered here: the task reads it
            return None
        handlers = _HANDLERS
        while True:
            event = self._poll()
            if event is smtpproto.NEED_DATA:
                return conn.data_to_send()
            if event is self.closed_event:
                return None
            if type(event) is smtpproto.DataStart and not conn.unprocessed_bytes:
                # The 354 goes out now; the task is woken by the message itself, which it then reads
                # (one wake-up per message instead of two).
                conn.accept()
                self.pending = self._read_message()
                return conn.data_to_send()
            handler = handlers.get(type(event))
            if handler is None:
                self.log.debug("ignoring event %r", event)
                continue
            pending = handler(self, event)
            if pending is not None:
                self.pending = pending
                return None

    async def _flush(self) -> None:
        if not self.hold_output:
            data = self.conn.data_to_send()
            if data:
                await self._write(data)

    async def _write(self, data: bytes) -> None:
        if self.broken:
            return
        if self.commands.enabled:
            self.commands.sent(data)
        try:
            await self.transport.send(data)
        except OSError as exc:
            # The state of a failed write is unknown: never write on this connection again.
            self.log.info("send failed: %s", exc)
            self.broken = True

    async def _handshake(self) -> bool:
        tls = self.server.tls
        if tls is None:  # the core only offers STARTTLS when TLS is available
            raise RuntimeError("TLS requested but no TLS context")
        try:
            info = await self.transport.start_tls(tls.context, self.options.socket_timeout)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.server.count("tls_failures")
            self.log.warning("TLS handshake failed: %s", exc)
            self.broken = True
            return False
        session = self.session
        session.secure, session.tls = True, info
        self.log.info(
            "TLS established: %s %s (SNI %s)", info.protocol, info.cipher, info.servername
        )
        if self.hold_output:  # implicit TLS: on_secure runs in _connect, after on_connect
            return True
        self.conn.tls_established(
            server_name=info.servername, protocol=info.protocol, cipher=info.cipher
        )
        session.reset_identity()  # RFC 3207 §4.2: forget everything said in plaintext
        if self.hooks.on_secure is not None:
            outcome = await self._call(self.hooks.on_secure, "on_secure", session)
            if not is_accept(outcome):
                self.conn.shutdown(self._closing_reply(outcome, "TLS session refused"))
        return True

    # -- hooks --------------------------------------------------------------------------------------------

    async def _call(self, hook: Hook, name: str, *args: object) -> Outcome:
        outcome, _ = await call_hook(
            self.runner, hook, *args, logger=self.log, name=name, on_error=self._hook_failed
        )
        return outcome

    def _hook_failed(self) -> None:
        self.server.count("errors")

    def _answer(self, outcome: Outcome) -> None:
        """Give a hook's outcome to the core; a reply that cannot answer this event becomes a 451."""
        try:
            answer(self.conn, outcome)
        except smtpproto.LocalProtocolError as exc:
            self.server.count("errors")
            self.log.error("a hook's reply %r does not fit: %s", outcome, exc)
            answer(self.conn, INTERNAL_ERROR)

    async def _authenticate(self, auth: smtpproto.AuthRequest) -> None:
        hook = self.hooks.on_auth
        if hook is None:
            self.conn.reject()
            return
        outcome, result = await call_hook(
            self.runner,
            hook,
            auth,
            self.session,
            logger=self.log,
            name="on_auth",
            on_error=self._hook_failed,
        )
        self._answer(outcome)
        if is_accept(outcome):
            plain = result is None or isinstance(result, bool | Reply)
            self.session.user = auth.username if plain else result
            self.log.info("authenticated as %r (%s)", auth.username, auth.mechanism)
        else:
            self.log.info("authentication failed for %r (%s)", auth.username, auth.mechanism)

    # -- DATA ---------------------------------------------------------------------------------------------

    async def _message(self) -> None:
        """The DATA phase: on_data reads the message through a stream; then the final reply (or replies)."""
        source = MessageReader(self._poll, self._fill, self.conn.config.max_message_size, self.log)
        self.commands.start_data()
        result: object = None
        if self.hooks.on_data is None:
            outcome: Outcome = True
        else:
            stream = self.runner.data_stream(source)
            outcome, result = await call_hook(
                self.runner,
                self.hooks.on_data,
                stream,
                self.session,
                logger=self.log,
                name="on_data",
                on_error=self._hook_failed,
            )
        await source.drain()  # whatever the hook left unread is read and discarded
        end = source.end
        if end is None:  # the client went away, timed out, or the server is shutting down
            return
        self.commands.end_data(end.size)
        accepted = False
        if end.refusal is None:
            outcomes = self._final_outcomes(outcome, result)
            for each in outcomes:
                self._answer(each)
            accepted = any(is_accept(each) for each in outcomes)
        self.server.count_message(end.size, accepted)
        self.session.transaction += 1
        self.session.reset_transaction()

    def _final_outcomes(self, outcome: Outcome, result: object) -> list[Outcome]:
        """One outcome per reply the core wants: one in SMTP, one per accepted recipient in LMTP."""
        owed = self.conn.replies_owed
        if isinstance(result, (list, tuple)):  # a tuple is faster than a union here
            if self.options.lmtp and len(result) == owed:
                return [outcome_of(each) for each in result]
            self.server.count("errors")
            self.log.error("on_data returned %d outcomes for %d recipients", len(result), owed)
            return [INTERNAL_ERROR] * owed
        return [outcome] * owed


#: What the session loop does with each kind of event (exact types: events are final classes).
_HANDLERS: dict[type, Callable[[_Pump, Any], _Turn | None]] = {
    smtpproto.Hello: _Pump._hello,
    smtpproto.MailFrom: _Pump._mail_from,
    smtpproto.RcptTo: _Pump._rcpt_to,
    smtpproto.DataStart: _Pump._data_start,
    smtpproto.Reset: _Pump._reset,
    smtpproto.Verify: _Pump._verify,
    smtpproto.Quit: _Pump._nothing,
    smtpproto.DataChunk: _Pump._nothing,
    smtpproto.DataEnd: _Pump._nothing,
    smtpproto.StartTLS: _Pump._start_tls,
    smtpproto.AuthRequest: _Pump._auth,
    smtpproto.XClient: _Pump._xclient,
    smtpproto.XForward: _Pump._xforward,
}
