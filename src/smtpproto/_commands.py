"""Command lines: splitting the verb from its argument, and the MAIL/RCPT argument with its parameters."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

from ._addresses import (
    MAX_LOCAL_PART,
    MAX_PATH,
    SIMPLE_MAILBOX,
    AddressError,
    parse_path,
    split_path,
    xtext_decode,
)
from ._replies import Reply

__all__ = ["CommandError", "MailArgument", "parse_mail", "parse_rcpt", "split_command"]

# RFC 5321 §4.1.2 esmtp-keyword and esmtp-value; RFC 6531 §3.3 lets a value carry UTF-8 as well.
_KEYWORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE_RE = re.compile(r"[\x21-\x3c\x3e-\x7e\x80-\U0010ffff]+")
_SIZE_RE = re.compile(r"[0-9]{1,20}")
_NOTIFY_VALUES = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_ORCPT_RE = re.compile(r"([A-Za-z0-9][A-Za-z0-9-]*);(.+)")
_MAX_ENVID = 100  # RFC 3461 §4.4
_MAX_ORCPT = 500  # RFC 3461 §4.2
#: How much of a client's parameter keyword a reply repeats.
_MAX_SHOWN = 40
# The everyday argument, a plain mailbox without parameters, in one match instead of the full parse below
# (the same result: see _simple()). Group 1 is the mailbox, group 2 its local part.
_SIMPLE_MAIL_RE = re.compile(f"[Ff][Rr][Oo][Mm]: *<({SIMPLE_MAILBOX})> *")
_SIMPLE_RCPT_RE = re.compile(f"[Tt][Oo]: *<({SIMPLE_MAILBOX})> *")


class CommandError(Exception):
    """A command was refused; ``reply`` says why. Recoverable: the session stays where it was."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply)
        self.reply = reply


def _syntax(text: str, enhanced: str = "5.5.4", code: int = 501) -> CommandError:
    return CommandError(Reply(code, text, enhanced))


def _shown(text: str) -> str:
    """Client text repeated in a reply: escaped to printable ASCII and cut short, whatever the client sent.

    A keyword may be as long as the command line, and non-ASCII or unprintable characters would make the
    reply line longer than RFC 5321 §4.5.3.1.5 allows (or put control characters on the wire).
    """
    shown = ascii(text)[1:-1]
    return shown if len(shown) <= _MAX_SHOWN else shown[: _MAX_SHOWN - 3] + "..."


def split_command(line: str) -> tuple[str | None, str]:
    """Split a command line into the upper-cased verb and the argument after the first space.

    The verb is ``None`` when the first word is not a plausible verb (letters only), so it is "not recognised".
    """
    verb, _, argument = line.partition(" ")
    # Letters only, ASCII only (str.isalpha() alone admits any script), 1 to 16 of them.
    if not (verb.isascii() and verb.isalpha() and len(verb) <= 16):
        return None, argument
    return verb.upper(), argument


@dataclass(frozen=True, slots=True)
class Extensions:
    """The parameter-carrying extensions in force for a session."""

    size_limit: int | None
    check_size: bool
    eightbitmime: bool
    smtputf8: bool
    dsn: bool
    secure: bool
    #: REQUIRETLS is advertised over TLS (not hidden).
    requiretls: bool
    #: The server speaks AUTH, so the MAIL ``AUTH=`` parameter exists (RFC 4954 §5).
    auth: bool


#: A parsed MAIL or RCPT argument: (address, parameters). A plain tuple: it is built for every command.
MailArgument: TypeAlias = "tuple[str, dict[str, str | bool]]"


def _split_params(text: str) -> dict[str, str | bool]:
    """Parse ``KEY[=VALUE]`` words (RFC 5321 §4.1.2 Mail-parameters), upper-casing the keys."""
    params: dict[str, str | bool] = {}
    for word in text.split(" "):
        if not word:
            continue  # tolerate runs of spaces between parameters
        key, sep, value = word.partition("=")
        if not _KEYWORD_RE.fullmatch(key):
            raise _syntax(f"Bad parameter syntax: {_shown(key)}")
        key = key.upper()
        if key in params:
            raise _syntax(f"Duplicate {_shown(key)} parameter")
        if sep:
            if not value:
                raise _syntax(f"{_shown(key)} parameter requires a value")
            if not _VALUE_RE.fullmatch(value):
                raise _syntax(f"Bad {_shown(key)} parameter syntax")
            params[key] = value
        else:
            params[key] = True
    return params


def _value(params: dict[str, str | bool], key: str) -> str:
    value = params[key]
    if value is True:
        raise _syntax(f"{key} parameter requires a value")
    assert isinstance(value, str)
    return value


def _flag(params: dict[str, str | bool], key: str) -> None:
    if params[key] is not True:
        raise _syntax(f"{key} parameter does not take a value")


def _xtext(params: dict[str, str | bool], key: str, limit: int) -> str:
    """Decode an xtext value; ``limit`` bounds the value as sent, the budget its extension adds to the line."""
    value = _value(params, key)
    if len(value) > limit:
        raise _syntax(f"{key} parameter too long")
    try:
        return xtext_decode(value)
    except ValueError:
        raise _syntax(f"Bad {key} parameter syntax") from None


def _unsupported(key: str) -> CommandError:
    return _syntax(f"Unsupported parameter {_shown(key)}", code=555)


def _path(argument: str, prefix: str) -> tuple[str, str]:
    """Split ``FROM:<path> params`` into the path and the parameter text (spaces after the colon tolerated)."""
    if argument[: len(prefix)].upper() != prefix:
        raise _syntax(f"Syntax: {'MAIL FROM' if prefix == 'FROM:' else 'RCPT TO'}:<address>")
    rest = argument[len(prefix) :].lstrip(" ")
    return split_path(rest)


def _address_error(error: AddressError, enhanced: str, what: str) -> CommandError:
    if error.kind == "utf8":
        # RFC 6531 §3.5: "550 5.6.7" refuses a sender, "553 5.6.7" a recipient.
        code = 550 if what == "Sender" else 553
        return CommandError(
            Reply(code, "Non-ASCII address requires the SMTPUTF8 parameter", "5.6.7")
        )
    if error.kind == "length":
        return CommandError(Reply(501, f"{what} address too long", enhanced))
    return CommandError(Reply(501, f"Bad {what.lower()} address syntax", enhanced))


def _simple(match: re.Match[str] | None) -> MailArgument | None:
    """The result of a :data:`_SIMPLE_MAIL_RE` or :data:`_SIMPLE_RCPT_RE` match, if within the length limits
    (the same checks as the fast path of :func:`parse_path`); ``None`` leaves it to the full parse."""
    if match and len(match[2]) <= MAX_LOCAL_PART and len(match[1]) + 2 <= MAX_PATH:
        return match[1], {}
    return None


def parse_mail(argument: str, ext: Extensions) -> MailArgument:
    """Parse the argument of ``MAIL`` (RFC 5321 §4.1.1.2) and its parameters, or raise :class:`CommandError`."""
    if simple := _simple(_SIMPLE_MAIL_RE.fullmatch(argument)):
        return simple
    try:
        path, rest = _path(argument, "FROM:")
        params = _split_params(rest)
        utf8 = "SMTPUTF8" in params and ext.smtputf8
        address = parse_path(path, null_ok=True, postmaster_ok=False, utf8=utf8)
    except AddressError as exc:
        raise _address_error(exc, "5.1.7", "Sender") from None
    for key in params:
        if key == "SIZE":
            size = _value(params, key)
            if not _SIZE_RE.fullmatch(size):
                raise _syntax("Bad SIZE parameter syntax")
            if ext.check_size and ext.size_limit is not None and int(size) > ext.size_limit:
                raise CommandError(
                    Reply(
                        552, f"Message exceeds fixed maximum message size {ext.size_limit}", "5.3.4"
                    )
                )
        elif key == "BODY" and ext.eightbitmime:
            body = _value(params, key).upper()
            if body == "BINARYMIME":
                raise _unsupported("BODY=BINARYMIME")
            if body not in ("7BIT", "8BITMIME"):
                raise _syntax("BODY parameter must be 7BIT or 8BITMIME")
            params[key] = body
        elif key == "SMTPUTF8" and ext.smtputf8:
            _flag(params, key)
        elif key == "REQUIRETLS" and (ext.requiretls or not ext.secure):
            _flag(params, key)
            if not ext.secure:
                raise CommandError(Reply(530, "REQUIRETLS needs a TLS connection", "5.7.10"))
        elif key == "RET" and ext.dsn:
            ret = _value(params, key).upper()
            if ret not in ("FULL", "HDRS"):
                raise _syntax("RET parameter must be FULL or HDRS")
            params[key] = ret
        elif key == "ENVID" and ext.dsn:
            params[key] = _xtext(params, key, _MAX_ENVID)
        elif key == "AUTH" and ext.auth:
            value = _value(params, key)
            params[key] = value if value == "<>" else _xtext(params, key, 500)
        else:
            raise _unsupported(key)
    return address, params


def parse_rcpt(argument: str, ext: Extensions, *, utf8: bool) -> MailArgument:
    """Parse the argument of ``RCPT`` (RFC 5321 §4.1.1.3); ``utf8`` when the transaction uses SMTPUTF8."""
    if simple := _simple(_SIMPLE_RCPT_RE.fullmatch(argument)):
        return simple
    try:
        path, rest = _path(argument, "TO:")
        params = _split_params(rest)
        address = parse_path(path, null_ok=False, postmaster_ok=True, utf8=utf8)
    except AddressError as exc:
        raise _address_error(exc, "5.1.3", "Recipient") from None
    for key in params:
        if key == "NOTIFY" and ext.dsn:
            values = _value(params, key).upper().split(",")
            if values != ["NEVER"] and (
                len(set(values)) != len(values) or not _NOTIFY_VALUES.issuperset(values)
            ):
                raise _syntax("NOTIFY must be NEVER, or SUCCESS, FAILURE and/or DELAY")
            params[key] = ",".join(values)
        elif key == "ORCPT" and ext.dsn:
            value = _value(params, key)
            if len(value) > _MAX_ORCPT:
                raise _syntax("ORCPT parameter too long")
            match = _ORCPT_RE.fullmatch(value)
            if not match:
                raise _syntax("Bad ORCPT parameter syntax")
            try:
                original = xtext_decode(match[2])
            except ValueError:
                raise _syntax("Bad ORCPT parameter syntax") from None
            params[key] = f"{match[1]};{original}"
        else:
            raise _unsupported(key)
    return address, params
