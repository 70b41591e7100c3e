"""The users file behind ``smtpproto serve --auth-file``: ``user:password`` lines, plain or scrypt-hashed.

Format, one entry per line (UTF-8)::

    # comments and blank lines are ignored
    tim:tanstaaftanstaaf
    alice:$scrypt$n=16384,r=8,p=1$<salt, base64>$<hash, base64>

The user name is everything before the first ``:`` (surrounding whitespace removed), the password everything
after it, exactly (so a plain password may contain ``:`` or spaces, but cannot begin with ``$scrypt$``).
:func:`hash_password` produces the hashed form. Passwords compare as UTF-8 without SASLprep, like
:meth:`smtpproto.AuthRequest.verify_password`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AuthFileError", "AuthUsers", "hash_password", "load_auth_file", "parse_auth_lines"]

_SCRYPT_PREFIX = "$scrypt$"
_SCRYPT_FORMAT = re.compile(
    r"\$scrypt\$n=(?P<n>[0-9]+),r=(?P<r>[0-9]+),p=(?P<p>[0-9]+)"
    r"\$(?P<salt>[A-Za-z0-9+/]+=*)\$(?P<hash>[A-Za-z0-9+/]+=*)"
)
# Defaults: the scrypt paper's interactive-login cost (16 MiB, a few tens of milliseconds per check).
_DEFAULT_N = 1 << 14
_DEFAULT_R = 8
_DEFAULT_P = 1
_SALT_BYTES = 16
_HASH_BYTES = 32
# A typo such as n=1048576000 must fail when the file is loaded, not exhaust memory at the first login.
_MAX_SCRYPT_MEMORY = 1 << 30


class AuthFileError(ValueError):
    """The users file is malformed; the message names the file and line number."""


@dataclass(frozen=True, slots=True)
class _Scrypt:
    n: int
    r: int
    p: int
    salt: bytes
    hash: bytes

    @property
    def maxmem(self) -> int:
        # OpenSSL's estimate of what scrypt needs (V and B arrays), plus slack for its bookkeeping.
        return 128 * self.r * (self.n + 2) + 128 * self.r * self.p + (1 << 20)

    def derive(self, password: bytes) -> bytes:
        return hashlib.scrypt(
            password,
            salt=self.salt,
            n=self.n,
            r=self.r,
            p=self.p,
            maxmem=self.maxmem,
            dklen=len(self.hash),
        )


def _b64decode(text: str) -> bytes:
    # Accept the hash with or without '=' padding (other tools strip it).
    return base64.b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4), validate=True)


def _parse_scrypt(text: str) -> _Scrypt:
    """Parse ``$scrypt$n=..,r=..,p=..$salt$hash``; ValueError says what is wrong."""
    match = _SCRYPT_FORMAT.fullmatch(text)
    if not match:
        raise ValueError("malformed scrypt hash (expected $scrypt$n=N,r=R,p=P$<salt>$<hash>)")
    n, r, p = int(match["n"]), int(match["r"]), int(match["p"])
    if n < 2 or n & (n - 1):
        raise ValueError(f"scrypt n={n} is not a power of 2 greater than 1")
    if r < 1 or p < 1:
        raise ValueError("scrypt r and p must be at least 1")
    try:
        salt, digest = _b64decode(match["salt"]), _b64decode(match["hash"])
    except binascii.Error as exc:
        raise ValueError(f"bad base64 in scrypt hash: {exc}") from None
    if len(digest) < 16:
        raise ValueError("scrypt hash shorter than 16 bytes")
    entry = _Scrypt(n, r, p, salt, digest)
    if entry.maxmem > _MAX_SCRYPT_MEMORY:
        raise ValueError(
            f"scrypt parameters need more than {_MAX_SCRYPT_MEMORY >> 20} MiB of memory"
        )
    return entry


def hash_password(
    password: str, *, n: int = _DEFAULT_N, r: int = _DEFAULT_R, p: int = _DEFAULT_P
) -> str:
    """The salted scrypt form of ``password`` for the users file: ``$scrypt$n=...,r=...,p=...$salt$hash``.

    A fresh random salt is drawn each time, so hashing the same password twice gives different strings.
    """
    salt = secrets.token_bytes(_SALT_BYTES)
    entry = _Scrypt(n, r, p, salt, b"\0" * _HASH_BYTES)
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or entry.maxmem > _MAX_SCRYPT_MEMORY:
        raise ValueError(
            "scrypt needs n a power of 2 above 1, r and p of at least 1, at most 1 GiB"
        )
    digest = entry.derive(_encode(password))
    b64 = base64.b64encode
    return f"{_SCRYPT_PREFIX}n={n},r={r},p={p}${b64(salt).decode()}${b64(digest).decode()}"


def _encode(text: str) -> bytes:
    # surrogatepass: a lone surrogate (from undecodable client bytes) must not raise; it can never match
    # an entry read from a valid UTF-8 file, so the check simply fails.
    return text.encode("utf-8", "surrogatepass")


# Stand-ins checked for unknown users, so a miss costs about what a wrong password does.
_DUMMY_PLAIN = secrets.token_hex(16)


class AuthUsers:
    """The users of an auth file: check a password (plain or hashed) or a CRAM-MD5 answer.

    Unknown users go through the same work as known ones (a dummy comparison, and a dummy scrypt run when
    the file holds hashed entries), so response time does not tell whether a user exists.
    """

    def __init__(self, entries: dict[str, str | _Scrypt] | None = None) -> None:
        """Built by :func:`load_auth_file` or :func:`parse_auth_lines`; ``AuthUsers()`` has no users."""
        self._entries: dict[str, str | _Scrypt] = dict(entries or {})
        self._dummy: str | _Scrypt = _DUMMY_PLAIN
        if any(isinstance(entry, _Scrypt) for entry in self._entries.values()):
            self._dummy = _Scrypt(
                _DEFAULT_N,
                _DEFAULT_R,
                _DEFAULT_P,
                secrets.token_bytes(_SALT_BYTES),
                bytes(_HASH_BYTES),
            )

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, username: object) -> bool:
        return username in self._entries

    def check(self, username: str, password: str) -> bool:
        """Whether ``password`` is ``username``'s password, compared in constant time."""
        entry = self._entries.get(username)
        known = entry is not None
        if entry is None:
            entry = self._dummy
        if isinstance(entry, _Scrypt):
            matches = hmac.compare_digest(entry.derive(_encode(password)), entry.hash)
        else:
            matches = hmac.compare_digest(_encode(password), _encode(entry))
        return known and matches

    def check_cram_md5(self, username: str, challenge: str, digest: str) -> bool:
        """Whether ``digest`` is hex HMAC-MD5 of ``challenge`` keyed with ``username``'s password (RFC 2195).

        CRAM-MD5 needs the password itself, so users stored as a hash always fail; offer CRAM-MD5 only when
        the file has plain-text entries.
        """
        entry = self._entries.get(username)
        known = isinstance(entry, str)
        secret = entry if isinstance(entry, str) else _DUMMY_PLAIN
        expected = hmac.new(_encode(secret), _encode(challenge), hashlib.md5).hexdigest()
        matches = hmac.compare_digest(expected.encode("ascii"), _encode(digest.lower()))
        return known and matches

    @property
    def all_plain(self) -> bool:
        """True when every entry is plain text, i.e. CRAM-MD5 can work for every user."""
        return all(isinstance(entry, str) for entry in self._entries.values())


def parse_auth_lines(lines: Iterable[str], *, source: str = "<auth file>") -> AuthUsers:
    """Parse the lines of an auth file (see the module docstring); :class:`AuthFileError` names the line."""
    entries: dict[str, str | _Scrypt] = {}
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.removesuffix("\n").removesuffix(
            "\r"
        )  # the line ending only: the rest is the password
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        username, sep, password = line.partition(":")
        username = username.strip()
        if not sep:
            raise AuthFileError(f"{source}, line {number}: expected user:password (no ':' found)")
        if not username:
            raise AuthFileError(f"{source}, line {number}: empty user name")
        if username in entries:
            raise AuthFileError(
                f"{source}, line {number}: user {username!r} already defined on line "
                f"{first_seen[username]}"
            )
        if not password:
            raise AuthFileError(f"{source}, line {number}: empty password for {username!r}")
        if password.startswith(_SCRYPT_PREFIX):
            try:
                entries[username] = _parse_scrypt(password)
            except ValueError as exc:
                raise AuthFileError(f"{source}, line {number}: {exc}") from None
        else:
            entries[username] = password
        first_seen[username] = number
    return AuthUsers(entries)


def load_auth_file(path: str | os.PathLike[str]) -> AuthUsers:
    """Read and parse an auth file.

    Raises :class:`AuthFileError` for a malformed line or non-UTF-8 text, :class:`OSError` when the file
    cannot be read.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # tolerate the BOM some editors write
    except UnicodeDecodeError as exc:
        number = data.count(b"\n", 0, exc.start) + 1
        raise AuthFileError(f"{path}, line {number}: not valid UTF-8") from None
    # Split on LF only: str.splitlines would also split on form feeds and Unicode separators that are
    # legitimately part of a password.
    return parse_auth_lines(text.split("\n"), source=str(path))
