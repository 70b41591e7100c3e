"""The handler behind ``smtpproto serve``: every accepted message goes into a sink, and none is lost.

``on_data`` streams the message into the sink's writer while it arrives (never holding it whole), commits
it — for a Maildir that is fsync, rename into ``new/`` and fsync of the directory — and only then lets the
250 go out. If storing fails the writer is aborted, so no partial file is left, and the client gets
``451 4.3.0`` and will retry. A ``Received:`` trace header (RFC 5321 §4.4) is written before the message
unless turned off.

The sinks do blocking file I/O. The async handler hands every such call to a worker thread through an
``offload`` function supplied by the backend's runner (``asyncio.to_thread``, ``trio.to_thread.run_sync``,
...), so a slow disk never stalls the event loop; the blocking handler calls the sink directly, from the
connection's own thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, BinaryIO

import smtpproto

from ._authfile import AuthUsers
from ._maildir import MessageSink, MessageWriter, StdoutSink
from ._received import received_header
from ._session import Session
from ._stream import AsyncDataStream, BlockingDataStream, DataStreamError

__all__ = [
    "STORE_FAILED",
    "AsyncSinkHandler",
    "BlockingSinkHandler",
    "MessageLog",
    "Offload",
    "SinkCore",
]

#: ``offload(function, *args)``: run a blocking call in a worker thread and return its result.
Offload = Callable[..., Awaitable[Any]]

#: The reply when a message could not be stored: temporary, so the client keeps it and retries.
STORE_FAILED = smtpproto.Reply(451, "Could not store the message, try again later", "4.3.0")

# The async handler gathers small chunks up to this size before a write: one thread hop per 64 KiB
# rather than one per network read, while memory stays bounded whatever the message size.
_WRITE_BATCH = 64 * 1024


def _printable(text: str) -> str:
    """``text`` with anything that could break a log line (controls, line separators) as ``?``."""
    return "".join(c if c.isprintable() else "?" for c in text)


class MessageLog:
    """Writes the one line per stored message to a binary stream (stdout), whole and flushed at once.

    :attr:`lock` serialises the lines; the ``--stdout`` sink shares it so that a line never lands in the
    middle of a message being written to the same stream.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def line(self, text: str) -> None:
        """Write ``text`` (made printable) and a newline."""
        data = (_printable(text) + "\n").encode("utf-8", "surrogatepass")
        with self.lock:
            self.write_unlocked(data)

    def write_unlocked(self, data: bytes) -> None:
        """Write and flush ``data``; the caller holds :attr:`lock`."""
        self.stream.write(data)
        self.stream.flush()


class SinkCore:
    """What both handlers share: the sink, the trace header, the users file and the per-message line.

    Every method does blocking work and is called from a thread that may block.
    """

    def __init__(
        self,
        sink: MessageSink,
        *,
        server_name: str,
        add_received: bool,
        users: AuthUsers | None,
        log: MessageLog,
        logger: logging.Logger,
    ) -> None:
        self.sink = sink
        self.server_name = server_name
        self.add_received = add_received
        #: The users of ``--auth-file``; None when AUTH is not offered.
        self.users = users
        self.log = log
        self.logger = logger
        # The stdout sink writes messages to the stream the log lines go to: commit under the same lock.
        self._commit_lock = log.lock if isinstance(sink, StdoutSink) else None

    def check_auth(self, auth: smtpproto.AuthRequest) -> bool:
        """Whether ``auth`` proves a password of the users file (PLAIN, LOGIN or CRAM-MD5)."""
        users = self.users
        if users is None:
            return False
        if auth.authzid is not None and auth.authzid != auth.username:
            return False  # acting as someone else (a PLAIN authzid) is not something the file can grant
        if auth.mechanism == "CRAM-MD5" and auth.challenge is not None and auth.digest is not None:
            return users.check_cram_md5(auth.username, auth.challenge, auth.digest)
        if auth.password is not None:
            return users.check(auth.username, auth.password)
        return False

    def trace_header(self, session: Session) -> bytes:
        """The ``Received:`` header for the message of ``session``'s current transaction."""
        recipients = session.envelope.rcpt_to
        return received_header(
            helo=session.host_name_appears_as,
            client_hostname=session.client_hostname,
            client_address=session.remote_address,
            server_name=self.server_name,
            protocol=session.transmission_type,
            queue_id=f"{session.id}.{session.transaction}",
            # RFC 5321 §7.2: naming one of several recipients would disclose it to the others.
            recipient=recipients[0].address if len(recipients) == 1 else None,
            when=datetime.now().astimezone(),
        )

    def open(self, session: Session) -> MessageWriter:
        """Start storing the message of ``session``'s current transaction."""
        envelope = session.envelope
        return self.sink.open_message(
            received_header=self.trace_header(session) if self.add_received else None,
            mail_from=envelope.mail_from.address if envelope.mail_from else "",
            rcpt_to=[r.address for r in envelope.rcpt_to],
        )

    def commit(self, writer: MessageWriter, session: Session, size: int) -> str:
        """Store the message durably, then write its line; returns where it went."""
        if self._commit_lock is None:
            where = writer.commit()
        else:
            with self._commit_lock:
                where = writer.commit()
        envelope = session.envelope
        sender = envelope.mail_from.address if envelope.mail_from else ""
        recipients = ",".join(f"<{r.address}>" for r in envelope.rcpt_to)
        host = session.remote_address
        client = (
            f"[{host}]:{session.remote_port}" if ":" in host else f"{host}:{session.remote_port}"
        )
        when = datetime.now().astimezone().isoformat(timespec="seconds")
        try:
            self.log.line(
                f"{when} {client} from=<{sender}> to={recipients} size={size} file={where}"
            )
        except OSError as exc:
            # The message is stored: a closed stdout must not turn that into a 451 and a duplicate.
            self.logger.warning(
                "[%s] stored %s but could not print its line: %s", session.id, where, exc
            )
        return where

    def store_failed(self, session: Session, exc: BaseException) -> smtpproto.Reply:
        """Log a failure to store and return the temporary refusal for the client."""
        self.logger.error("[%s] could not store the message: %s", session.id, exc)
        return STORE_FAILED


class AsyncSinkHandler:
    """The hooks for the async backends; blocking sink calls go through ``offload``.

    ``offload`` must not abandon a call when the task is cancelled (trio's and anyio's ``run_sync`` do not
    by default; wrap ``asyncio.to_thread`` so that it waits): a writer must never be used by two threads.
    """

    def __init__(self, core: SinkCore, offload: Offload) -> None:
        self._core = core
        self._offload = offload
        if core.users is not None:
            # Only with a users file: a handler without on_auth makes the server not offer AUTH at all.
            self.on_auth = self._on_auth

    async def _on_auth(self, auth: smtpproto.AuthRequest, session: Session) -> bool:
        # scrypt costs tens of milliseconds of CPU: too long to run on the event loop.
        return bool(await self._offload(self._core.check_auth, auth))

    async def on_data(self, stream: AsyncDataStream, session: Session) -> smtpproto.Reply | bool:
        """Stream the message into the sink; accept only once it is stored."""
        core = self._core
        try:
            writer: MessageWriter = await self._offload(core.open, session)
        except OSError as exc:
            return core.store_failed(session, exc)
        try:
            pending = bytearray()
            async for chunk in stream:
                pending += chunk
                if len(pending) >= _WRITE_BATCH:
                    await self._offload(writer.write, bytes(pending))
                    pending.clear()
            if pending:
                await self._offload(writer.write, bytes(pending))
            await self._offload(core.commit, writer, session, stream.size)
        except DataStreamError:
            # Refused by the core (already answered) or the client went away: keep nothing. Checked
            # before OSError because MessageAborted is a ConnectionError.
            await self._offload(writer.abort)
            raise
        except OSError as exc:
            await self._offload(writer.abort)
            return core.store_failed(session, exc)
        except BaseException:
            writer.abort()  # cancelled at shutdown: just remove the file in tmp/, without awaiting
            raise
        return True


class BlockingSinkHandler:
    """The hooks for the blocking backend: the sink is called directly from the connection's thread."""

    def __init__(self, core: SinkCore) -> None:
        self._core = core
        if core.users is not None:
            self.on_auth = self._on_auth

    def _on_auth(self, auth: smtpproto.AuthRequest, session: Session) -> bool:
        return self._core.check_auth(auth)

    def on_data(self, stream: BlockingDataStream, session: Session) -> smtpproto.Reply | bool:
        """Stream the message into the sink; accept only once it is stored."""
        core = self._core
        try:
            writer = core.open(session)
        except OSError as exc:
            return core.store_failed(session, exc)
        with writer:  # leaving without a commit aborts: no partial file stays
            try:
                for chunk in stream:
                    writer.write(chunk)
                core.commit(writer, session, stream.size)
            except DataStreamError:
                raise
            except OSError as exc:
                return core.store_failed(session, exc)
        return True
