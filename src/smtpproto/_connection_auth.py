"""AUTH (RFC 4954) for ServerConnection: the SASL exchange, its response lines, and the answer to it.

:class:`_AuthMixin` is one of the bases of :class:`~smtpproto.ServerConnection` (see
``_connection_base.py``); the mechanisms themselves are in ``_sasl.py``.
"""

from __future__ import annotations

from typing import Literal

from ._connection_base import _AGAIN, _Again, _ConnectionBase, _ReadResult
from ._events import AuthRequest
from ._extensions import auth_offered
from ._replies import Reply
from ._sasl import Conversation, SASLError, conversation, failure_challenge, failure_response_ok
from ._state import SessionState

__all__: list[str] = []


def _no_nonce() -> str:  # pragma: no cover - ServerConfig refuses CRAM-MD5 without a nonce_factory
    raise RuntimeError("CRAM-MD5 needs ServerConfig.nonce_factory")


class _AuthMixin(_ConnectionBase):
    """The AUTH command of ServerConnection."""

    # Annotations only: ServerConnection.__init__ sets them.
    _auth_failures: int
    _sasl: Conversation | None
    _auth_refusal: Reply | None
    _sasl_mechanism: str

    def _auth(self, argument: str, after: SessionState) -> _ReadResult:
        # RFC 5321 §4.1.1: trailing white space is tolerated, not taken for an empty initial response.
        # Anything after the mechanism is the initial response, so one with a space in it is bad base64
        # (501 5.5.2, CONFORMANCE AUTH-06) rather than an extra argument.
        name, space, initial = argument.rstrip(" ").partition(" ")
        if not name:
            return self._error(Reply(501, "Syntax: AUTH mechanism [initial-response]", "5.5.4"))
        if self._user is not None:
            return self._error(Reply(503, "Already authenticated", "5.5.1"))
        if not auth_offered(self.config, secure=self._secure):
            return self._error(
                Reply(538, "Encryption required for requested authentication mechanism", "5.7.11")
            )
        # ASCII only: str.upper() maps some non-ASCII letters (such as U+0131) onto ASCII ones.
        mechanism = name.upper() if name.isascii() else name
        if mechanism not in self.config.auth_methods:
            return self._error(Reply(504, "Unrecognized authentication type", "5.5.4"))
        self._sasl = conversation(
            mechanism,
            initial if space else None,
            hostname=self.config.hostname,
            nonce=self.config.nonce_factory or _no_nonce,
        )
        return self._sasl_step(None)

    def _sasl_step(self, line: str | None) -> _ReadResult:
        sasl = self._sasl
        assert sasl is not None
        try:
            challenge = next(sasl) if line is None else sasl.send(line)
        except StopIteration as done:
            self._end_sasl()
            request: AuthRequest = done.value
            return self._decide(request, self._state)
        except SASLError as exc:
            self._end_sasl()
            if exc.reply.code == 535:
                return self._auth_failure(exc.reply)
            return self._error(exc.reply)
        self._challenge(challenge)
        self._reader = self._read_auth_line
        return _AGAIN

    def _challenge(self, payload: str) -> None:
        # RFC 4954 §4: continue-req = "334" SP [base64] CRLF — the space stays even when the payload is
        # empty, whatever Reply does with empty text. The payload is base64 (ASCII) from _sasl.py.
        self._out.append(b"334 " + payload.encode("ascii") + b"\r\n")

    def _end_sasl(self) -> None:
        self._sasl = None
        self._reader = self._read_command

    def _read_auth_line(self) -> _ReadResult:
        line = self._take_auth_line()
        return line if line is None or line is _AGAIN else self._sasl_step(line)

    def _take_auth_line(self) -> str | Literal[_Again.AGAIN] | None:
        """The next SASL response line, or None; an over-long one ends the exchange with 500 5.5.6."""
        line = self._buffer.take_line(self._line_end)
        if line is None:
            if len(self._buffer) > self.config.max_auth_line:
                # Leave the exchange; the command reader discards the rest of the line and answers 500.
                self._end_sasl()
                self._auth_refusal = None
                self._buffer.discard(keep_tail=1 if self._buffer.data.endswith(b"\r") else 0)
                self._discarding_line = True
            return None
        if len(line) + len(self._line_end) > self.config.max_auth_line:
            # The same line arrived whole: same answer as above, so the split of the input cannot matter.
            self._end_sasl()
            self._auth_refusal = None
            return self._error(Reply(500, "Line too long", "5.5.6"))
        if self._line_end == b"\n" and line.endswith(b"\r"):
            line = line[:-1]
        return line.decode(
            "ascii", "replace"
        )  # SASL lines are base64; anything else is refused as such

    def _auth_failure(self, reply: Reply) -> _ReadResult:
        self._auth_failures += 1
        if self._auth_failures > self.config.max_auth_failures:
            self._fail(Reply(421, "Too many authentication failures", "4.7.0"))
        return self._queue_again(reply)

    def _answer_auth(self, event: AuthRequest, reply: Reply, accepted: bool) -> None:
        if accepted:
            self._user = event.username
            self._queue(reply)
            return
        if reply.code == 421:
            # RFC 5321 §3.8: the server is closing the channel; no error challenge, nothing more is read.
            self._queue(reply)
            self._close()
            return
        self._auth_failures += 1
        if self._auth_failures > self.config.max_auth_failures:
            self._fatal_after_send(Reply(421, "Too many authentication failures", "4.7.0"))
            return
        challenge = failure_challenge(event.mechanism)
        if challenge is None:
            self._queue(reply)
            return
        # XOAUTH2 / OAUTHBEARER: the error travels as a 334 challenge; the client acknowledges it with one
        # line, and only then does the final refusal go out.
        self._challenge(challenge)
        self._auth_refusal = reply
        self._sasl_mechanism = event.mechanism
        self._reader = self._read_auth_refusal_ack

    def _read_auth_refusal_ack(self) -> _ReadResult:
        line = self._take_auth_line()
        if line is None or line is _AGAIN:
            return line
        refusal, self._auth_refusal = self._auth_refusal, None
        assert refusal is not None
        self._reader = self._read_command
        if line == "*":
            return self._queue_again(Reply(501, "Authentication aborted", "5.7.0"))
        if not failure_response_ok(self._sasl_mechanism, line):
            return self._error(refusal)
        return self._queue_again(refusal)
