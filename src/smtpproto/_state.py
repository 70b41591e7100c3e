"""The session state machine, as data.

Rule 1: everything that decides whether a command may run now, and which state it leads to, lives in this
module. The connection (``_connection.py``) parses, asks this table, and carries out what it says.

States follow the mail transaction of RFC 5321 §3.3::

    GREETED --HELO/EHLO/LHLO--> READY --MAIL--> SENDER --RCPT--> RECIPIENTS --DATA--> DATA --.--> READY

``REFUSED`` is the session of a server that greeted with 554 (only QUIT is served, RFC 5321 §3.1), and
``CLOSED`` follows QUIT, any 421 and the peer's EOF.

MAIL, RCPT and DATA move the session only when the application accepts them: the table gives the state after
an *accepted* command; a refused one leaves the state as it was (RFC 5321 §4.1.4 "MUST stay in the same state").
"""

from __future__ import annotations

import enum

__all__ = ["SEQUENCE_ERRORS", "TRANSITIONS", "Command", "SessionState"]


class SessionState(enum.Enum):
    """Where a session is in the mail transaction."""

    # Members are singletons: identity hashing is correct and, unlike Enum's own __hash__, runs in C,
    # which matters because the connection looks states and commands up in dicts for every command.
    __hash__ = object.__hash__

    #: Greeting sent, no HELO/EHLO/LHLO yet.
    GREETED = "GREETED"
    #: Client identified, no transaction open.
    READY = "READY"
    #: MAIL accepted, no recipient yet.
    SENDER = "SENDER"
    #: At least one RCPT accepted.
    RECIPIENTS = "RECIPIENTS"
    #: Reading the message after 354.
    DATA = "DATA"
    #: Greeted with 554: every implemented command but QUIT gets 503 (unknown ones still 500, EXPN & co. 502).
    REFUSED = "REFUSED"
    #: Session over: nothing further is read or executed.
    CLOSED = "CLOSED"


class Command(enum.Enum):
    """The command verbs the server knows."""

    # Members are singletons: identity hashing is correct and, unlike Enum's own __hash__, runs in C,
    # which matters because the connection looks states and commands up in dicts for every command.
    __hash__ = object.__hash__

    HELO = "HELO"
    EHLO = "EHLO"
    LHLO = "LHLO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    VRFY = "VRFY"
    HELP = "HELP"
    STARTTLS = "STARTTLS"
    AUTH = "AUTH"
    XCLIENT = "XCLIENT"
    XFORWARD = "XFORWARD"
    # Known to SMTP but not implemented here: always 502 5.5.1 (RFC 5321 §4.2.4), never 500.
    EXPN = "EXPN"
    TURN = "TURN"
    ETRN = "ETRN"
    ATRN = "ATRN"
    SEND = "SEND"
    SOML = "SOML"
    SAML = "SAML"
    BDAT = "BDAT"


#: Recognised verbs that this server does not implement (502).
NOT_IMPLEMENTED = frozenset(
    {
        Command.EXPN,
        Command.TURN,
        Command.ETRN,
        Command.ATRN,
        Command.SEND,
        Command.SOML,
        Command.SAML,
        Command.BDAT,
    }
)

#: Commands a site may disable for privacy. RFC 5321 §7.3: a disabled VRFY or EXPN "MUST return a 252
#: response, rather than a code that could be confused with successful or unsuccessful verification".
PRIVACY_COMMANDS = frozenset({Command.VRFY, Command.EXPN})

S = SessionState
C = Command

_OPEN = (S.GREETED, S.READY, S.SENDER, S.RECIPIENTS)

#: (state, command) -> state after the command succeeds. Pairs not listed are out of sequence (503).
TRANSITIONS: dict[tuple[SessionState, Command], SessionState] = {
    # Commands that never change the transaction.
    **{(s, c): s for s in _OPEN for c in (C.NOOP, C.HELP, C.VRFY)},
    # STARTTLS is allowed mid-transaction: the TLS reset (RFC 3207 §4.2) discards the transaction anyway.
    **{(s, C.STARTTLS): S.GREETED for s in _OPEN},
    # XCLIENT starts the session afresh with a new greeting; XFORWARD only annotates it.
    **{(s, C.XCLIENT): S.GREETED for s in (S.GREETED, S.READY)},
    **{(s, C.XFORWARD): s for s in (S.GREETED, S.READY)},
    # HELO/EHLO/LHLO reset the transaction "exactly as if a RSET command had been issued" (RFC 5321 §4.1.4).
    **{(s, c): S.READY for s in _OPEN for c in (C.HELO, C.EHLO, C.LHLO)},
    # RSET clears the transaction but not the client's identity.
    (S.GREETED, C.RSET): S.GREETED,
    **{(s, C.RSET): S.READY for s in _OPEN[1:]},
    **{(s, C.QUIT): S.CLOSED for s in (*_OPEN, S.REFUSED)},
    # RFC 4954 §4: AUTH needs EHLO first and is refused inside a mail transaction.
    (S.READY, C.AUTH): S.READY,
    (S.READY, C.MAIL): S.SENDER,
    (S.SENDER, C.RCPT): S.RECIPIENTS,
    (S.RECIPIENTS, C.RCPT): S.RECIPIENTS,
    (S.RECIPIENTS, C.DATA): S.DATA,
}

#: Why a command is out of sequence, for the 503 reply. Pairs in neither table get a generic text.
SEQUENCE_ERRORS: dict[tuple[SessionState, Command], str] = {
    **{(S.GREETED, c): "Send HELO/EHLO first" for c in (C.MAIL, C.RCPT, C.DATA, C.AUTH)},
    **{
        (s, C.AUTH): "AUTH not permitted during a mail transaction"
        for s in (S.SENDER, S.RECIPIENTS)
    },
    **{
        (s, c): "Mail transaction in progress"
        for s in (S.SENDER, S.RECIPIENTS)
        for c in (C.XCLIENT, C.XFORWARD)
    },
    (S.READY, C.RCPT): "Need MAIL command",
    (S.READY, C.DATA): "Need MAIL command",
    (S.SENDER, C.MAIL): "Nested MAIL command",
    (S.RECIPIENTS, C.MAIL): "Nested MAIL command",
    (S.SENDER, C.DATA): "Need RCPT command (no valid recipients)",
}
GENERIC_SEQUENCE_ERROR = "Bad sequence of commands"
REFUSED_SEQUENCE_ERROR = "No SMTP service here, only QUIT"


def sequence_error(state: SessionState, command: Command) -> str:
    """The text of the 503 reply for an out-of-sequence command."""
    if state is SessionState.REFUSED:
        return REFUSED_SEQUENCE_ERROR
    return SEQUENCE_ERRORS.get((state, command), GENERIC_SEQUENCE_ERROR)
