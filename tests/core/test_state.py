"""The session state machine, exhaustively: every reachable state × every command, in SMTP and in LMTP.

For each pair the connection is driven into the state with real commands, the command line is sent, and the
outcome must be exactly what ``smtpproto._state`` says: a legal transition (``TRANSITIONS``) with the
command's standard reply, or the documented rejection — ``503 5.5.1`` with the text of ``sequence_error``,
``502 5.5.1`` for a verb in ``NOT_IMPLEMENTED``, ``500 5.5.2`` for an unknown verb or a greeting verb of the
other protocol. Never an exception, never silence: exactly one reply per command. Two states are not command
states: in DATA a command line is message text, and after CLOSED nothing is read at all.

The server runs with TLS, plaintext AUTH, XCLIENT and XFORWARD switched on (see ``config_for``), so that
every pair the table allows can really succeed. The Hypothesis random walk (h2's ``test_state_machines``
style) then strings commands together and checks the state and the reply count against the same table after
every step, plus the two irregular rules that live outside it: a second STARTTLS and a second AUTH get 503.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpproto import (
    AuthRequest,
    Command,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataStart,
    Event,
    Hello,
    MailFrom,
    Quit,
    RcptTo,
    Reset,
    ServerConfig,
    ServerConnection,
    SessionState,
    StartTLS,
    Verify,
    XClient,
    XForward,
)
from smtpproto._state import NOT_IMPLEMENTED, TRANSITIONS, sequence_error

from .helpers import codes, drain, merge_chunks, replies

S = SessionState
C = Command

#: A plausible argument for every verb, so that a legal command is also well-formed.
ARGUMENTS: dict[Command, str] = {
    C.HELO: "client.test",
    C.EHLO: "client.test",
    C.LHLO: "client.test",
    C.MAIL: "FROM:<sender@example.test>",
    C.RCPT: "TO:<rcpt@example.test>",
    C.DATA: "",
    C.RSET: "",
    C.NOOP: "",
    C.QUIT: "",
    C.VRFY: "postmaster",
    C.HELP: "",
    C.STARTTLS: "",
    C.AUTH: "PLAIN AHVzZXIAcGFzcw==",
    C.XCLIENT: "NAME=client.test",
    C.XFORWARD: "NAME=client.test",
    C.EXPN: "staff",
    C.TURN: "",
    C.ETRN: "example.test",
    C.ATRN: "example.test",
    C.SEND: "FROM:<sender@example.test>",
    C.SOML: "FROM:<sender@example.test>",
    C.SAML: "FROM:<sender@example.test>",
    C.BDAT: "12 LAST",
}
UNKNOWN = "XYZZY"
#: Every verb the tests send: each Command and one that is no command at all.
VERBS = [c.value for c in Command] + [UNKNOWN]

#: The reply code and the events of each command when it is legal (decisions accepted).
ACCEPTED: dict[Command, tuple[int, tuple[type[Event], ...]]] = {
    C.HELO: (250, (Hello,)),
    C.EHLO: (250, (Hello,)),
    C.LHLO: (250, (Hello,)),
    C.MAIL: (250, (MailFrom,)),
    C.RCPT: (250, (RcptTo,)),
    C.DATA: (354, (DataStart,)),
    C.RSET: (250, (Reset,)),
    C.NOOP: (250, ()),
    C.QUIT: (221, (Quit, ConnectionClosed)),
    C.VRFY: (252, (Verify,)),
    C.HELP: (214, ()),
    C.STARTTLS: (220, (StartTLS,)),
    C.AUTH: (235, (AuthRequest,)),
    # Accepting XCLIENT answers with a fresh 220 greeting (Postfix semantics).
    C.XCLIENT: (220, (XClient,)),
    C.XFORWARD: (250, (XForward,)),
}
#: The commands whose legal form waits for the application's decision.
DECISION_COMMANDS = (C.MAIL, C.RCPT, C.DATA, C.VRFY, C.AUTH, C.XCLIENT, C.XFORWARD)


def command_line(verb: str) -> bytes:
    command = Command.__members__.get(verb)
    argument = ARGUMENTS[command] if command is not None else "now"
    return f"{verb} {argument}\r\n".encode() if argument else f"{verb}\r\n".encode()


def hello_verb(lmtp: bool) -> str:
    return "LHLO" if lmtp else "EHLO"


def path_to(state: SessionState, lmtp: bool) -> list[str]:
    """The verbs that take a fresh connection into ``state`` (REFUSED needs ``refuse_service``)."""
    hello = hello_verb(lmtp)
    return {
        S.GREETED: [],
        S.REFUSED: [],
        S.READY: [hello],
        S.SENDER: [hello, "MAIL"],
        S.RECIPIENTS: [hello, "MAIL", "RCPT"],
        S.DATA: [hello, "MAIL", "RCPT", "DATA"],
        S.CLOSED: ["QUIT"],
    }[state]


def config_for(state: SessionState, lmtp: bool, max_errors: int = 20) -> ServerConfig:
    """Every optional command switched on, so that each pair the table allows can really happen.

    (Without a TLS context STARTTLS gets 454, AUTH in plaintext 538 and XCLIENT from an untrusted peer
    550: refusals by configuration, which are not what this module tests.)
    """
    return ServerConfig(
        lmtp=lmtp,
        refuse_service=state is S.REFUSED,
        tls_available=True,
        allow_insecure_auth=True,
        use_xclient=True,
        use_xforward=True,
        max_errors=max_errors,
    )


def connect_in(state: SessionState, lmtp: bool) -> ServerConnection:
    """A connection driven into ``state`` with real commands, its output so far already taken."""
    conn = ServerConnection(config_for(state, lmtp))
    for verb in path_to(state, lmtp):
        conn.receive_data(command_line(verb))
        drain(conn)
    assert conn.state is state
    conn.data_to_send()
    return conn


def is_unknown(command: Command | None, lmtp: bool) -> bool:
    """Whether the verb is answered as not recognised: no command, or the other protocol's greeting."""
    if command is None:
        return True
    if command in (C.HELO, C.EHLO):
        return lmtp
    return command is C.LHLO and not lmtp


def rejection(state: SessionState, command: Command | None, lmtp: bool) -> str | None:
    """The documented rejection of ``command`` in ``state`` (a command state), or None when it is legal.

    Only the code and enhanced code are fixed for 500 and 502; the 503 text comes from ``sequence_error``.
    """
    if is_unknown(command, lmtp):
        return "500 5.5.2 "
    assert command is not None
    if command in NOT_IMPLEMENTED:
        return "502 5.5.1 "
    if (state, command) not in TRANSITIONS:
        return f"503 5.5.1 {sequence_error(state, command)}"
    return None


def send_line(conn: ServerConnection, verb: str) -> tuple[bytes, list[Event]]:
    conn.receive_data(command_line(verb))
    events = drain(conn)
    return conn.data_to_send(), events


def test_arguments_cover_every_command() -> None:
    # A new Command member must get an argument (and so a place in the exhaustive test) here.
    assert set(ARGUMENTS) == set(Command)
    assert set(ACCEPTED) == set(Command) - NOT_IMPLEMENTED
    assert UNKNOWN not in Command.__members__


def test_transition_table_only_names_command_states() -> None:
    # DATA and CLOSED read no commands, and REFUSED serves only QUIT.
    for (state, command), after in TRANSITIONS.items():
        assert state not in (S.DATA, S.CLOSED)
        assert state is not S.REFUSED or (command is C.QUIT and after is S.CLOSED)
        assert command not in NOT_IMPLEMENTED


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("state", list(SessionState), ids=lambda s: s.name)
def test_every_command_in_every_state(state: SessionState, verb: str, lmtp: bool) -> None:
    conn = connect_in(state, lmtp)
    command = Command.__members__.get(verb)
    out, events = send_line(conn, verb)

    if state is S.CLOSED:
        # Nothing is read or executed after QUIT: no reply, and the session stays over.
        assert out == b""
        assert events == [ConnectionClosed(transaction_aborted=False)]
        assert conn.state is S.CLOSED
        return

    if state is S.DATA:
        # Inside DATA a command line is message text: no reply, and it comes back as the message.
        assert out == b""
        assert all(isinstance(event, DataChunk) for event in events)
        during = conn.state
        conn.receive_data(b".\r\n")
        events += drain(conn)
        merged = merge_chunks(events)
        assert merged[0] == DataChunk(data=command_line(verb))
        assert isinstance(merged[1], DataEnd)
        assert len(merged) == 2
        assert codes(conn.data_to_send()) == [250]
        assert (during, conn.state) == (S.DATA, S.READY)
        return

    expected = rejection(state, command, lmtp)
    if expected is not None:
        [reply] = replies(out)
        assert reply.startswith(expected)
        if expected.startswith("503"):
            assert reply == expected
        assert events == []
        assert conn.state is state, "a rejected command must leave the state as it was"
        return

    assert command is not None
    code, event_types = ACCEPTED[command]
    assert codes(out) == [code]
    assert tuple(type(event) for event in events) == event_types
    assert conn.state is TRANSITIONS[state, command]
    assert conn.awaiting is None
    # drain() completed the TLS handshake after StartTLS, as a driver would.
    assert conn.secure is (command is C.STARTTLS)


#: The legal pairs whose command waits for a decision.
DECISION_PAIRS = sorted(
    (pair for pair in TRANSITIONS if pair[1] in DECISION_COMMANDS),
    key=lambda pair: (pair[0].name, pair[1].name),
)


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
@pytest.mark.parametrize(("state", "command"), DECISION_PAIRS, ids=lambda value: value.name)
def test_refused_decision_keeps_the_state(
    state: SessionState, command: Command, lmtp: bool
) -> None:
    # RFC 5321 §4.1.4: a refused command leaves the session where it was.
    conn = connect_in(state, lmtp)
    conn.receive_data(command_line(command.value))
    event = conn.next_event()
    assert conn.awaiting is event
    conn.reject()
    out = conn.data_to_send()
    assert len(codes(out)) == 1
    assert codes(out)[0] >= 500
    assert conn.state is state
    assert drain(conn) == []


def test_quit_inside_a_transaction_aborts_it() -> None:
    conn = connect_in(S.RECIPIENTS, lmtp=False)
    out, events = send_line(conn, "QUIT")
    assert codes(out) == [221]
    assert events == [Quit(), ConnectionClosed(transaction_aborted=True)]


# -- random walk ------------------------------------------------------------------------------------------

#: ``.`` ends a message in DATA and is an unknown command everywhere else.
WALK_VERBS = [*VERBS, "."]


def walk_line(verb: str) -> bytes:
    return b".\r\n" if verb == "." else command_line(verb)


@dataclass
class Model:
    """What the table says the session looks like, plus the two flags of the irregular rules."""

    lmtp: bool
    state: SessionState
    recipients: int = 0
    #: After STARTTLS: a second STARTTLS gets 503 "TLS already active" (RFC 3207 §4).
    secure: bool = False
    #: After AUTH: a second AUTH gets 503 "Already authenticated" (RFC 4954 §4).
    authenticated: bool = False

    def step(self, verb: str) -> list[int]:
        """Advance the model by one line; return the reply codes the server must send for it."""
        if self.state is S.CLOSED:
            return []
        if self.state is S.DATA:
            if verb != ".":
                return []
            owed = self.recipients if self.lmtp else 1
            self.state, self.recipients = S.READY, 0
            return [250] * owed
        command = Command.__members__.get(verb)
        refused = rejection(self.state, command, self.lmtp)
        if refused is not None:
            return [int(refused[:3])]
        assert command is not None
        if (command is C.STARTTLS and self.secure) or (command is C.AUTH and self.authenticated):
            return [503]
        self.state = TRANSITIONS[self.state, command]
        if command is C.RCPT:
            self.recipients += 1
        elif self.state in (S.GREETED, S.READY, S.SENDER):
            self.recipients = 0
        if command is C.STARTTLS:
            # RFC 3207 §4.2: the handshake forgets everything, the authentication included.
            self.secure, self.authenticated = True, False
        elif command is C.AUTH:
            self.authenticated = True
        elif command is C.XCLIENT:
            self.authenticated = False  # XCLIENT without LOGIN= leaves the new session anonymous
        return [ACCEPTED[command][0]]


@settings(max_examples=300, deadline=None)
@given(
    lmtp=st.booleans(),
    refuse=st.integers(0, 9).map(lambda n: n == 0),
    verbs=st.lists(st.sampled_from(WALK_VERBS), max_size=40),
)
def test_random_walk_follows_the_table(lmtp: bool, refuse: bool, verbs: list[str]) -> None:
    state = S.REFUSED if refuse else S.GREETED
    conn = ServerConnection(config_for(state, lmtp, max_errors=1000))
    greeting = conn.data_to_send()
    assert codes(greeting) == [554 if refuse else 220]
    assert conn.state is state
    model = Model(lmtp=lmtp, state=state)
    for verb in verbs:
        conn.receive_data(walk_line(verb))
        events = drain(conn)
        expected = model.step(verb)
        assert codes(conn.data_to_send()) == expected, f"after {verb!r}"
        assert conn.state is model.state, f"after {verb!r}"
        assert conn.secure is model.secure
        assert (conn.authenticated_user is not None) is model.authenticated
        assert conn.awaiting is None
        if model.state is S.CLOSED:
            assert isinstance(events[-1], ConnectionClosed)
