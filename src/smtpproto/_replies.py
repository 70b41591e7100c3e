"""The one object applications send: :class:`Reply`, and how replies become bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Reply"]

_ENHANCED_RE = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")
# RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets with its CRLF. Code, separator, an enhanced code
# of up to 11 octets and CRLF leave 496; keep a margin.
MAX_TEXT_LINE = 480
# Control characters (C0, DEL, C1) could end the reply early, forge another or upset terminals and logs.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True, slots=True)
class Reply:
    """An SMTP reply: a three-digit ``code``, one or more lines of ``text`` and an optional enhanced code.

    ``text`` is a single line or a tuple of lines (a multi-line reply). Validation happens here, at the trust
    boundary, so an application can never put a second reply on the wire: codes must be 200–599, text may
    not contain control characters (CR, LF, NUL, ESC, ...) and must fit a 512-octet reply line, and
    ``enhanced`` (RFC 3463, e.g. ``"5.1.1"``) must agree with the code's class.

    ``enhanced=None`` on a 2xx/4xx/5xx reply lets the connection fill in a default from the code when
    enhanced status codes are enabled.
    """

    code: int
    text: str | tuple[str, ...] = ""
    enhanced: str | None = None
    # The wire form with and without the enhanced code, rendered once: most replies a server sends are the
    # same few constant objects.
    _wire: tuple[bytes, bytes] = field(
        init=False, repr=False, compare=False, hash=False, default=(b"", b"")
    )

    def __post_init__(self) -> None:
        if type(self.code) is not int or not 200 <= self.code <= 599:
            raise ValueError(f"reply code must be an int in 200..599, not {self.code!r}")
        lines = (self.text,) if isinstance(self.text, str) else self.text
        if not lines:
            raise ValueError("a multi-line reply needs at least one line")
        for line in lines:
            if not isinstance(line, str):
                raise TypeError(f"reply text lines must be str, not {type(line).__name__}")
            if _CONTROL_RE.search(line):
                raise ValueError(
                    f"reply text may not contain control characters (CR, LF or NUL, ...): {line!r}"
                )
            if len(line) > MAX_TEXT_LINE // 4 and len(line.encode("utf-8")) > MAX_TEXT_LINE:
                raise ValueError(f"reply text lines are limited to {MAX_TEXT_LINE} octets (UTF-8)")
        if self.enhanced is not None:
            if not _ENHANCED_RE.fullmatch(self.enhanced):
                raise ValueError(f"not an enhanced status code: {self.enhanced!r}")
            if self.code // 100 == 3:
                raise ValueError("3xx replies carry no enhanced status code (RFC 2034 §4)")
            if self.enhanced[0] != str(self.code)[0]:
                raise ValueError(
                    f"enhanced code {self.enhanced} disagrees with reply code {self.code}"
                )
        object.__setattr__(self, "_wire", (self._render(True), self._render(False)))

    @property
    def lines(self) -> tuple[str, ...]:
        """The text as a tuple of lines."""
        return (self.text,) if isinstance(self.text, str) else self.text

    @property
    def is_positive(self) -> bool:
        """True for 2xx and 3xx replies."""
        return self.code < 400

    def to_bytes(self, *, enhanced: bool = True) -> bytes:
        """Render the reply as it goes on the wire; ``enhanced=False`` leaves the enhanced code out."""
        return self._wire[0 if enhanced else 1]

    def _render(self, enhanced: bool) -> bytes:
        code = str(self.code)
        prefix = f"{self.enhanced} " if enhanced and self.enhanced else ""
        lines = self.lines
        last = len(lines) - 1
        out = []
        for i, line in enumerate(lines):
            text = f"{prefix}{line}"
            # RFC 5321 §4.2: a space must be followed by text, so an empty last line is the bare code;
            # but RFC 4954 §4 spells an empty SASL challenge "334 " with its space.
            sep = "-" if i != last else (" " if text or self.code == 334 else "")
            out.append(f"{code}{sep}{text}\r\n")
        return "".join(out).encode("utf-8")
