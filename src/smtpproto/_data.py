"""The DATA reader: finds the end of a message body and undoes dot-stuffing, incrementally and fast.

The body of a DATA command (RFC 5321 §4.1.1.4) ends with ``CRLF "." CRLF``; the first CRLF ends the last
line and belongs to the content. Every line that starts with a dot loses that dot (§4.5.2), whatever
follows it. Only a CRLF on the wire ends a line for both rules, so none of the SMTP-smuggling lookalikes
(``LF "." LF``, ``CR "." CR``, ``CRLF "." CR CRLF``, ``CRLF NUL "." CRLF``, ...) ends a message.

A bare LF is an LF not preceded by CR; a bare CR is a CR not followed by LF (so ``CR CR LF`` holds one bare
CR). :attr:`DotReader.bare_line_ending` records whether the content had any, under every policy. Under
``REJECT`` and ``ALLOW`` they pass through unchanged and start no new line.

Decisions for ``NORMALIZE`` (each bare CR and bare LF becomes CRLF):

* The position after a repaired line ending is a line start, so a dot there is removed like any stuffed
  dot: ``a LF ".x"`` gives ``a CRLF "x"``, and a lone dot line is emptied, so ``a LF "." LF b`` gives
  ``a CRLF CRLF b``.
* A repaired line ending never starts the end-of-data marker: only ``CRLF "." CRLF`` as sent ends the
  message, the same wire rule as the other policies, so all three agree on where a message ends.
* ``CR CR LF`` is a bare CR and then a CRLF, so two line ends; ``CRLF "." CR CRLF`` is a line holding a
  stuffed dot and a bare CR, which becomes an empty line and then another empty line.

The reader works on large regions with C-speed bytes methods and never loops over lines in Python: a
region that needs no unstuffing is copied out once, one that does is fixed with a single
``replace(CRLF ".", CRLF)`` (outside NORMALIZE a stuffed dot always follows a CRLF), and NORMALIZE
rewrites a region only when it actually holds a bare line ending. Bytes are held back only at the end of
the buffer, and only those that start a CRLF or the marker (or, under NORMALIZE, a bare LF), so every
region starts and ends where no rule looks across its edge.
"""

from __future__ import annotations

from io import IncrementalNewlineDecoder

from ._config import LineEndings

__all__ = ["DotReader"]

_CR = 0x0D
_LF = 0x0A
_DOT = 0x2E
#: Dots that are not at a line start tolerated by the memchr search before it switches to a 3-byte search.
_DOT_MISSES = 8
#: Below this size the 3-byte find is cheaper than stepping through dots in Python (a small message's
#: headers alone hold several: host names, dates).
_SHORT_BUFFER = 4096


def _find_line_dot(buf: bytearray) -> int:
    """Return the index of the first ``CRLF "."`` in ``buf``, or -1.

    A single-byte find is a memchr, several times faster than a 3-byte find, and bulk message data (base64,
    most text lines' starts) rarely has dots; prose full of dots falls back to the 3-byte find quickly.
    """
    if len(buf) < _SHORT_BUFFER:
        return buf.find(b"\r\n.")
    i = buf.find(b".")
    misses = 0
    while i >= 0:
        if i >= 2 and buf[i - 1] == _LF and buf[i - 2] == _CR:
            return i - 2
        misses += 1
        if misses == _DOT_MISSES:
            # The dot at i is not after a CRLF, so no match starts at or before it.
            return buf.find(b"\r\n.", i + 1)
        i = buf.find(b".", i + 1)
    return -1


def _normalize(content: bytes) -> bytes:
    """Turn every bare CR and bare LF into CRLF and unstuff the dots that then start a line."""
    # Collapse CRLF to LF first, so that a CRLF is not doubled and CR CR LF yields two line ends.
    lf_only = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return lf_only.replace(b"\n", b"\r\n").replace(b"\r\n.", b"\r\n")


class DotReader:
    """Reads one DATA body (RFC 5321 §4.1.1.4, §4.5.2) incrementally from the front of a bytearray.

    Create one per message, right after the ``354`` reply, and pass it the connection's receive buffer
    each time bytes have been appended to it. The result does not depend on how the input is split.
    """

    __slots__ = ("_at_start", "_finished", "_newlines", "_normalize", "bare_line_ending", "policy")

    def __init__(self, policy: LineEndings) -> None:
        #: How bare CR and LF are handled (see :class:`LineEndings`).
        self.policy = policy
        #: True once a bare CR or bare LF was seen in the content: repaired under ``NORMALIZE``, passed
        #: through under ``ALLOW``, and under ``REJECT`` the caller refuses the message.
        self.bare_line_ending = False
        self._normalize = policy is LineEndings.NORMALIZE
        # The first line has no CRLF before it in the buffer, so its dot rules are applied separately.
        self._at_start = True
        self._finished = False
        # Its C scan classifies every CR and LF (CRLF, bare CR, bare LF) in one pass: about half the
        # cost of a 3-byte find, where counting b"\n", b"\r" and b"\r\n" would cost twice a find.
        self._newlines = IncrementalNewlineDecoder(None, translate=False)

    def reset(self) -> None:
        """Start over for the next message, as a new reader with the same policy would."""
        self.bare_line_ending = False
        self._at_start = True
        self._finished = False

    def read(self, buf: bytearray) -> tuple[bytes, bool]:
        """Consume from the front of ``buf`` everything that can be decided now; return (content, finished).

        ``content`` is the unstuffed message bytes decided by this call (possibly ``b""``). ``finished`` is
        True when the end-of-data marker has been consumed; the bytes after it stay in ``buf`` untouched.
        A few bytes that cannot be decided yet (a possible start of the marker or of a stuffed line, such as
        a trailing ``CR``, ``CRLF``, ``CRLF "."`` or ``CRLF "." CR``) are left in ``buf`` for the next call,
        so at most four bytes are ever held back. Calling it again after it finished raises RuntimeError.
        """
        if self._finished:
            raise RuntimeError("the end-of-data marker was already read")
        if not buf:
            return b"", False
        if self._at_start:
            if buf[0] == _DOT:
                if buf.startswith(b".\r\n"):
                    del buf[:3]
                    self._finished = True
                    return b"", True
                if len(buf) == 1 or (len(buf) == 2 and buf[1] == _CR):
                    return b"", False  # may still be the end of an empty message
                del buf[0]  # the first line is stuffed
            self._at_start = False

        line_dot = _find_line_dot(buf)
        # The first terminator cannot come before the first CRLF ".".
        end = buf.find(b"\r\n.\r\n", line_dot) if line_dot >= 0 else -1
        if end >= 0:
            cut = end + 2
            consumed = end + 5
            self._finished = True
        else:
            cut = consumed = len(buf) - self._undecided(buf)
            if not cut:
                return b"", False
        if cut == len(buf):
            content = bytes(buf)
        elif consumed == len(buf):
            # The marker ends the buffer (the usual last read): drop it in place, copy the rest once.
            del buf[cut:]
            content = bytes(buf)
        else:
            # Through a memoryview the slice is copied once, not twice (bytearray slice, then bytes).
            with memoryview(buf) as view:
                content = view[:cut].tobytes()
        del buf[:consumed]

        if self._normalize or not self.bare_line_ending:
            newlines = self._newlines
            newlines.reset()
            # latin-1 maps each byte to one code point, so the scan sees exactly the bytes.
            newlines.decode(content.decode("latin-1"), True)
            if newlines.newlines not in (None, "\r\n"):
                self.bare_line_ending = True
                if self._normalize:
                    return _normalize(content), self._finished
        if 0 <= line_dot < cut - 2:
            content = content.replace(b"\r\n.", b"\r\n")
        return content, self._finished

    def _undecided(self, buf: bytearray) -> int:
        """How many bytes at the end of ``buf`` (non-empty) depend on bytes not received yet."""
        last = buf[-1]
        if last == _CR:
            # A CR may become CRLF, and CRLF "." CR may become the end-of-data marker.
            return 4 if buf.endswith(b"\r\n.\r") else 1
        if last == _DOT:
            return 3 if buf.endswith(b"\r\n.") else 0
        if last == _LF:
            if len(buf) >= 2 and buf[-2] == _CR:
                return 2
            # A repaired LF starts a line, whose dot must go if one comes next.
            return 1 if self._normalize else 0
        return 0
