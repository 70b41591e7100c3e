"""A bytearray receive buffer with a resumable line search."""

from __future__ import annotations

__all__ = ["ReceiveBuffer"]


class ReceiveBuffer:
    """Bytes received but not yet consumed.

    Line searches remember how far they looked, so a long line arriving in many small pieces is scanned once
    (h11's trick), not once per piece. Any consumption from the front resets the remembered position.
    """

    __slots__ = ("_scanned", "data")

    def __init__(self) -> None:
        #: The raw buffer; readers that consume it directly (the DATA reader) must call :meth:`rescan`.
        self.data = bytearray()
        self._scanned = 0

    def __len__(self) -> int:
        return len(self.data)

    def __bool__(self) -> bool:
        return bool(self.data)

    def append(self, data: bytes) -> None:
        """Add received bytes at the end."""
        self.data += data

    def rescan(self) -> None:
        """Forget the remembered search position (the front of the buffer was consumed elsewhere)."""
        self._scanned = 0

    def take_line(self, terminator: bytes) -> bytes | None:
        """Remove and return the first line without its terminator, or ``None`` if no terminator is here yet."""
        end = self.data.find(terminator, self._scanned)
        if end < 0:
            # A terminator may straddle the end: look again from its possible first byte next time.
            self._scanned = max(0, len(self.data) - len(terminator) + 1)
            return None
        line = bytes(self.data[:end])
        del self.data[: end + len(terminator)]
        self._scanned = 0
        return line

    def discard(self, keep_tail: int = 0) -> int:
        """Drop everything but the last ``keep_tail`` bytes; return how many bytes were dropped."""
        dropped = max(0, len(self.data) - keep_tail)
        del self.data[:dropped]
        self._scanned = 0
        return dropped

    def clear(self) -> None:
        """Drop everything."""
        self.data.clear()
        self._scanned = 0
