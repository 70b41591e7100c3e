"""Message sinks for ``smtpproto serve``: a Maildir that never loses mail, an mbox file, and a stream.

All three share one small protocol, :class:`MessageSink`: ``open_message(...)`` returns a
:class:`MessageWriter` that takes the message chunk by chunk (``write``), then either stores it
(``commit``, which returns a description such as the file path) or throws it away (``abort``). Writers
are context managers: leaving the ``with`` block without ``commit`` (or with an exception) aborts.

These classes do blocking file I/O; an async driver should call them from a worker thread if a slow disk
must not stall its event loop. None of them ever holds the whole message in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, Protocol, Self

__all__ = [
    "Maildir",
    "MaildirMessage",
    "Mbox",
    "MboxMessage",
    "MessageSink",
    "MessageWriter",
    "StdoutMessage",
    "StdoutSink",
    "unique_name",
]

_DIR_MODE = 0o700
_FILE_MODE = 0o600
# Attempts at finding a free name in tmp/ before giving up; a clash needs a clock step back plus pid reuse.
_NAME_ATTEMPTS = 100
# Spooled messages for mbox/stdout stay in memory up to this size, then move to an anonymous file.
_SPOOL_MEMORY = 1 << 20
_COPY_BLOCK = 1 << 16


class MessageWriter(Protocol):
    """One message being stored: ``write`` the chunks, then ``commit`` (store) or ``abort`` (discard)."""

    def write(self, data: bytes) -> None:
        """Append ``data`` to the message."""

    def commit(self) -> str:
        """Store the message durably and return a description of where it went (e.g. a file path)."""

    def abort(self) -> None:
        """Discard the message; a no-op once committed or aborted."""

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class MessageSink(Protocol):
    """Where accepted messages go: :class:`Maildir`, :class:`Mbox` or :class:`StdoutSink`."""

    def open_message(
        self,
        *,
        received_header: bytes | None = None,
        mail_from: str = "",
        rcpt_to: Sequence[str] = (),
    ) -> MessageWriter:
        """Start a message; ``received_header`` (if any) is written before the first chunk.

        ``mail_from`` (``""`` for the null sender) and ``rcpt_to`` are the envelope, for sinks that record it.
        """


class _Writer:
    """The writers' shared life cycle (open, then committed or aborted) and context manager."""

    def __init__(self) -> None:
        self._state = "open"

    def _check_open(self) -> None:
        if self._state != "open":
            raise ValueError(f"message already {self._state}")

    def write(self, data: bytes) -> None:
        """Append ``data`` to the message."""
        self._check_open()
        try:
            self._write(data)
        except BaseException:
            self.abort()
            raise

    def commit(self) -> str:
        """Store the message; on failure the message is discarded and the error raised."""
        self._check_open()
        try:
            description = self._commit()
        except BaseException:
            self.abort()
            raise
        self._state = "committed"
        return description

    def abort(self) -> None:
        """Discard the message; a no-op once committed or aborted."""
        if self._state == "open":
            self._state = "aborted"
            self._abort()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _commit(self) -> str:
        raise NotImplementedError

    def _abort(self) -> None:
        raise NotImplementedError


# -- Maildir ---------------------------------------------------------------------------------------------

_counter = itertools.count(1)
_counter_lock = threading.Lock()


def _escaped_hostname() -> str:
    # The Maildir spec escapes the two characters that would break the name: '/' (path) and ':' (info).
    return socket.gethostname().replace("/", r"\057").replace(":", r"\072")


def unique_name() -> str:
    """A Maildir unique name, ``<time>.<pid>_<counter>.<hostname>`` (http://cr.yp.to/proto/maildir.html).

    The counter is per process, so two deliveries in the same second by one process never share a name,
    and processes (``--workers``) differ by pid.
    """
    with _counter_lock:
        count = next(_counter)
    return f"{int(time.time())}.{os.getpid()}_{count}.{_escaped_hostname()}"


def _fsync_dir(path: Path) -> None:
    """Make a directory's entries (a rename, a new file) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Maildir:
    """A Maildir at ``path`` (``tmp/``, ``new/``, ``cur/`` are created, mode 0o700, on first use).

    A message is written to ``tmp/<unique name>``, flushed and fsynced, renamed into ``new/``, and ``new/``
    is fsynced, so when :meth:`deliver` or :meth:`MaildirMessage.commit` returns the message survives a
    crash. If anything fails the file in ``tmp/`` is removed and the error raised: ``new/`` never holds a
    partial message.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._ready = False

    def _ensure(self) -> None:
        """Create the directories once, and make their creation durable too."""
        if self._ready:
            return
        created_root = not self.path.is_dir()
        os.makedirs(self.path, mode=_DIR_MODE, exist_ok=True)
        for sub in ("tmp", "new", "cur"):
            os.makedirs(self.path / sub, mode=_DIR_MODE, exist_ok=True)
        _fsync_dir(self.path)
        if created_root:
            _fsync_dir(self.path.resolve().parent)
        self._ready = True

    def open_message(
        self,
        *,
        received_header: bytes | None = None,
        mail_from: str = "",
        rcpt_to: Sequence[str] = (),
    ) -> MaildirMessage:
        """Start a message in ``tmp/``; write chunks to it, then ``commit()`` to move it into ``new/``.

        The envelope (``mail_from``, ``rcpt_to``) is accepted for the :class:`MessageSink` protocol and not
        stored: a Maildir file holds the message only.
        """
        self._ensure()
        return MaildirMessage(self, received_header)

    def deliver(self, chunks: Iterable[bytes], *, received_header: bytes | None = None) -> Path:
        """Store a message given as chunks (consumed one at a time) and return its path in ``new/``."""
        with self.open_message(received_header=received_header) as message:
            for chunk in chunks:
                message.write(chunk)
            return Path(message.commit())


class MaildirMessage(_Writer):
    """A message being written into a :class:`Maildir`'s ``tmp/``; see :meth:`Maildir.open_message`."""

    def __init__(self, maildir: Maildir, received_header: bytes | None) -> None:
        super().__init__()
        self._maildir = maildir
        #: The file in ``new/`` once committed.
        self.path: Path | None = None
        tmp_dir = maildir.path / "tmp"
        for _ in range(_NAME_ATTEMPTS):
            self._name = unique_name()
            self._tmp_path = tmp_dir / self._name
            try:
                # O_EXCL: never write into a file another delivery owns, even if names ever clashed.
                fd = os.open(
                    self._tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE
                )
            except FileExistsError:
                continue
            break
        else:
            raise FileExistsError(f"no free name in {tmp_dir}")
        try:
            self._file: IO[bytes] = os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            os.unlink(self._tmp_path)
            raise
        if received_header:
            self.write(received_header)

    def _write(self, data: bytes) -> None:
        self._file.write(data)

    def _commit(self) -> str:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        new_path = self._maildir.path / "new" / self._name
        os.rename(self._tmp_path, new_path)
        try:
            _fsync_dir(new_path.parent)
        except BaseException:
            # The rename is not known to be durable, so the caller will report failure (and the client
            # retry): take the message back out rather than risk a copy the client was told was refused.
            # (Gone already if a mail reader moved it to cur/: a duplicate beats a loss.)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(new_path)
            raise
        self.path = new_path
        return str(new_path)

    def _abort(self) -> None:
        # A failing flush on close does not matter: the file is being removed. It is gone already
        # when the failure came after the rename.
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._tmp_path)


# -- Spooling writers (mbox, stream) ---------------------------------------------------------------------


class _SpooledWriter(_Writer):
    """Collects the message in an anonymous spool file; the sink copies it to its target on commit.

    Spooling keeps the target (a locked mbox, a shared terminal) untouched while a slow client is still
    sending, and makes ``abort`` free.
    """

    def __init__(self, received_header: bytes | None) -> None:
        super().__init__()
        # Closed by commit or abort, not by a with block: the writer outlives this call.
        self._spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY)  # noqa: SIM115
        self.size = 0
        self._last = b""
        if received_header:
            self.write(received_header)

    def _write(self, data: bytes) -> None:
        if data:
            self._spool.write(data)
            self.size += len(data)
            self._last = data[-1:]

    def _chunks(self) -> Iterable[bytes]:
        self._spool.seek(0)
        while block := self._spool.read(_COPY_BLOCK):
            yield block

    def _abort(self) -> None:
        self._spool.close()


# mboxrd: a line of '>'s followed by "From " gets one more '>'; readers remove one.
_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)
# The start of a line that could still turn out to be '>*From ' when more bytes arrive.
_FROM_PREFIX = re.compile(rb"(>*)(F(?:r(?:o(?:m)?)?)?)?")


class _MboxrdEncoder:
    """Streaming CRLF → LF conversion and mboxrd ``>From `` quoting, whatever the chunk boundaries."""

    def __init__(self) -> None:
        self._cr = False  # a CR ended the last chunk: it may be the first half of a CRLF
        # Bytes at the start of the current line that may still become '>*From ' (at most "From");
        # None when the current line is known not to be a From line.
        self._head: bytes | None = b""
        self.ends_with_newline = True  # nothing written yet counts as "at a line start"

    def feed(self, data: bytes) -> bytes:
        """Encode a chunk; some trailing bytes may be held back until the next chunk or :meth:`finish`."""
        if self._cr:
            data = b"\r" + data
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        return self._quote(data.replace(b"\r\n", b"\n"))

    def finish(self) -> bytes:
        """The held-back bytes, then a newline if the message did not end with one."""
        # The held CR came last in the input, after the held line start.
        out = (self._head or b"") + (b"\r" if self._cr else b"")
        self._cr = False
        self._head = None
        if out:
            self.ends_with_newline = out.endswith(b"\n")
        return out if self.ends_with_newline else out + b"\n"

    def _quote(self, data: bytes) -> bytes:
        if not data:
            return b""
        if self._head is None:
            newline = data.find(b"\n")
            if newline < 0:
                self.ends_with_newline = False
                return data
            prefix, data = data[: newline + 1], data[newline + 1 :]
        else:
            prefix, data = b"", self._head + data
        last_newline = data.rfind(b"\n")
        complete, tail = data[: last_newline + 1], data[last_newline + 1 :]
        out = prefix + _FROM_LINE.sub(rb">\1", complete)
        match = _FROM_PREFIX.fullmatch(tail)
        if match:
            # Emit the '>'s now (one more may go in front of any of them later, same result) and hold
            # only the partial "From", so the held bytes stay tiny even for a line of a million '>'s.
            out += match.group(1)
            self._head = match.group(2) or b""
        else:
            out += _FROM_LINE.sub(rb">\1", tail)
            self._head = None
        if out:
            self.ends_with_newline = out.endswith(b"\n")
        return out


def _from_line_sender(mail_from: str) -> bytes:
    # The From_ line is split on spaces by readers: keep the sender a single printable token.
    sender = "".join(c if c.isprintable() and not c.isspace() else "_" for c in mail_from)
    return (sender or "MAILER-DAEMON").encode("utf-8", "surrogatepass")


class Mbox:
    """An mbox file in the mboxrd variant, appended to under an exclusive ``flock``.

    Each message is preceded by a ``From <sender> <asctime>`` line and followed by an empty line; body
    lines matching ``>*From `` get one more ``>``. Line endings are stored as LF (the mbox convention),
    so CRLF in the message becomes LF. The message is spooled while it arrives and appended on
    :meth:`MboxMessage.commit`, then fsynced; if appending fails the file is truncated back, so a
    partial message never stays in the mbox. ``flock`` only excludes other ``flock`` users (procmail,
    mutt with flock enabled, other ``smtpproto`` workers), not programs that rely on dot-locking alone.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def open_message(
        self,
        *,
        received_header: bytes | None = None,
        mail_from: str = "",
        rcpt_to: Sequence[str] = (),
    ) -> MboxMessage:
        """Start a message; ``mail_from`` goes in the ``From `` line (``MAILER-DAEMON`` if empty)."""
        return MboxMessage(self, received_header, mail_from)


class MboxMessage(_SpooledWriter):
    """A message on its way into an :class:`Mbox`; see :meth:`Mbox.open_message`."""

    def __init__(self, mbox: Mbox, received_header: bytes | None, mail_from: str) -> None:
        self._mbox = mbox
        self._mail_from = mail_from
        self._encoder = _MboxrdEncoder()
        super().__init__(received_header)

    def _write(self, data: bytes) -> None:
        super()._write(self._encoder.feed(data))

    def _commit(self) -> str:
        super()._write(self._encoder.finish())
        date = time.asctime(time.gmtime()).encode("ascii")
        separator = b"From " + _from_line_sender(self._mail_from) + b" " + date + b"\n"
        path = self._mbox.path
        created = not path.exists()
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            start = os.fstat(fd).st_size
            try:
                # A previous writer (or an editor) may have left no blank line: a From line must follow one.
                ending = os.pread(fd, 2, start - 2) if start >= 2 else os.pread(fd, start, 0)
                gap = (
                    b""
                    if start == 0 or ending == b"\n\n"
                    else (b"\n" if ending.endswith(b"\n") else b"\n\n")
                )
                _write_all(fd, gap + separator)
                for block in self._chunks():
                    _write_all(fd, block)
                _write_all(fd, b"\n")
                os.fsync(fd)
            except BaseException:
                # Cut the partial message off again; if even that fails, the original error is the news.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                raise
        finally:
            os.close(fd)  # also releases the flock
        if created:
            _fsync_dir(path.resolve().parent)
        self._spool.close()
        return str(path)


def _write_all(fd: int, data: bytes) -> None:
    """os.write may write less than asked (signals, quotas): loop until all of ``data`` is out."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class StdoutSink:
    """Writes each message, after a one-line separator, to a binary stream (default ``sys.stdout.buffer``).

    Messages are spooled and written whole on commit, under a lock, so concurrent sessions never
    interleave. The separator reads ``----- message <n> from <sender> to <rcpts> (<size> bytes) -----``.
    """

    def __init__(self, stream: BinaryIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        self._lock = threading.Lock()
        self._count = 0

    def open_message(
        self,
        *,
        received_header: bytes | None = None,
        mail_from: str = "",
        rcpt_to: Sequence[str] = (),
    ) -> StdoutMessage:
        """Start a message; the envelope goes in the separator line."""
        return StdoutMessage(self, received_header, mail_from, rcpt_to)


class StdoutMessage(_SpooledWriter):
    """A message on its way to a :class:`StdoutSink`'s stream; see :meth:`StdoutSink.open_message`."""

    def __init__(
        self,
        sink: StdoutSink,
        received_header: bytes | None,
        mail_from: str,
        rcpt_to: Sequence[str],
    ) -> None:
        self._sink = sink
        self._mail_from = mail_from
        self._rcpt_to = list(rcpt_to)
        super().__init__(received_header)

    def _commit(self) -> str:
        sink = self._sink
        recipients = ",".join(f"<{r}>" for r in self._rcpt_to)
        with sink._lock:
            sink._count += 1
            label = f"message {sink._count}"
            line = (
                f"----- {label} from <{self._mail_from}> to {recipients} ({self.size} bytes) -----"
            )
            # The envelope is client-supplied: keep the separator a single line whatever it contains.
            line = "".join(c if c.isprintable() else "?" for c in line) + "\n"
            sink.stream.write(line.encode("utf-8", "surrogatepass"))
            for block in self._chunks():
                sink.stream.write(block)
            if self._last not in (b"", b"\n"):
                sink.stream.write(b"\n")
            sink.stream.flush()
        self._spool.close()
        return f"<stdout> {label}"
