"""Per-session logging, with the client's command lines at DEBUG and secrets redacted.

Redaction is the point of this module: ``AUTH PLAIN dXNlcgB1c2VyAHNlY3JldA==`` carries a password in
base64, and so does every line a client sends while a SASL exchange runs. They are logged as
``AUTH PLAIN ***`` and ``***``. Message data is never logged, only its size.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

__all__ = ["REDACTED", "CommandLog", "SessionLogger"]

REDACTED = "***"
# A command line is at most a few KiB; a runaway partial line is not worth keeping for the log.
_MAX_PARTIAL = 4096


class SessionLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes every record with the session id and puts it in ``record.session_id``."""

    def __init__(self, logger: logging.Logger, session_id: str) -> None:
        super().__init__(logger, {"session_id": session_id})

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("session_id", self.session_id)
        kwargs["extra"] = extra
        return f"[{self.session_id}] {msg}", kwargs

    @property
    def session_id(self) -> str:
        """The id of the session this adapter logs for."""
        assert self.extra is not None
        return str(self.extra["session_id"])


class CommandLog:
    """Logs what the client and the server say, line by line, at DEBUG.

    The driver shows it every chunk it receives (:meth:`received`) and sends (:meth:`sent`). It follows the
    conversation just enough to know which lines are secret: the arguments of ``AUTH``, and every client line
    while the server's last reply was a ``334`` challenge (or could still be, because the client pipelined
    behind its AUTH). Lines between ``DATA`` and the end of the message are not logged at all.
    It costs nothing when DEBUG is off for the logger.
    """

    def __init__(self, logger: SessionLogger) -> None:
        self._logger = logger
        self.enabled = logger.isEnabledFor(logging.DEBUG)
        self._partial = b""
        self._sasl = False  # inside an AUTH exchange: redact every client line
        self._data = False  # inside DATA: log nothing but the size
        self._data_bytes = 0

    def start_data(self) -> None:
        """The server accepted DATA: what follows is message content."""
        self._data = True
        self._data_bytes = 0

    def end_data(self, size: int) -> None:
        """The message ended; log its size instead of its lines."""
        if self._data and self.enabled:
            self._logger.debug("C: <%d bytes of DATA>", size)
        self._data = False
        self._partial = b""

    def received(self, data: bytes) -> None:
        """The client sent ``data``."""
        if not self.enabled or self._data:
            return
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()[-_MAX_PARTIAL:]
        for raw in lines:
            line = raw.rstrip(b"\r").decode("utf-8", "replace")
            self._logger.debug("C: %s", self._redact(line))
            if line[:5].upper() in ("DATA", "DATA "):
                # What the client pipelined behind DATA is probably the message: keep it out of the log.
                self._partial = b""
                break

    def sent(self, data: bytes) -> None:
        """The server sent ``data`` (whole replies)."""
        if not self.enabled:
            return  # the SASL state only serves redaction, which only runs when logging
        for raw in data.split(b"\r\n"):
            if len(raw) >= 4 and raw[3:4] == b" ":  # the last line of a reply decides
                self._sasl = raw.startswith(b"334")
            if raw:
                self._logger.debug("S: %s", raw.decode("utf-8", "replace"))

    def _redact(self, line: str) -> str:
        if self._sasl:
            return REDACTED
        verb, _, rest = line.partition(" ")
        if verb.upper() == "AUTH":
            # Until the server answers, every following line may belong to this exchange.
            self._sasl = True
            mechanism = rest.split(" ", 1)[0]
            return f"{verb} {mechanism} {REDACTED}" if " " in rest.strip() else line
        return line
