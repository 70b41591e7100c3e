"""Unit tests of the small core modules: replies, configuration, the receive buffer, capabilities, events and
errors. Each is tested on its own, without a connection, except where the connection is what fills it in."""

from __future__ import annotations

import dataclasses
import typing
from types import MappingProxyType
from typing import Any

import pytest

from smtpproto import (
    NEED_DATA,
    PAUSED,
    ConnectionClosed,
    DataChunk,
    DataEnd,
    DataStart,
    Event,
    Hello,
    LineEndings,
    LocalProtocolError,
    MailFrom,
    ProtocolError,
    Quit,
    RcptTo,
    RemoteProtocolError,
    Reply,
    Reset,
    Sentinel,
    ServerConfig,
    ServerConnection,
    SMTPError,
    Verify,
)
from smtpproto._events import (
    new_data_chunk,
    new_data_end,
    new_data_start,
    new_mail_from,
    new_rcpt_to,
)
from smtpproto._extensions import capabilities, enhanced_codes, smtputf8_offered
from smtpproto._proxy import XCLIENT_ATTRIBUTES, XFORWARD_ATTRIBUTES
from smtpproto._receivebuffer import ReceiveBuffer

from .helpers import replies

# -- Reply ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [200, 250, 354, 421, 599])
def test_reply_accepts_codes_200_to_599(code: int) -> None:
    assert Reply(code, "ok").code == code


@pytest.mark.parametrize("code", [0, 199, 600, 1000, -250, True, 250.0, "250"])
def test_reply_rejects_other_codes(code: Any) -> None:
    with pytest.raises(ValueError, match="reply code"):
        Reply(code, "text")


@pytest.mark.parametrize(
    "text",
    [
        "a\r\n250 forged",
        "bare\rCR",
        "bare\nLF",
        "nul\x00",
        ("fine", "second\r\nline"),
        ("first\n", "fine"),
        ("fine", "\x00"),
    ],
)
def test_reply_rejects_cr_lf_and_nul_in_any_line(text: str | tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Reply(250, text)


def test_reply_text_shape() -> None:
    with pytest.raises(ValueError, match="at least one line"):
        Reply(250, ())
    with pytest.raises(TypeError, match="must be str"):
        Reply(250, ("ok", b"bytes"))  # type: ignore[arg-type]
    assert Reply(250, "x" * 480).text == "x" * 480
    assert Reply(250, "\u00e9" * 240).text == "\u00e9" * 240  # 480 octets in UTF-8
    with pytest.raises(ValueError, match="480 octets"):
        Reply(250, "x" * 481)
    with pytest.raises(ValueError, match="480 octets"):
        Reply(250, ("ok", "\u00e9" * 241))
    for control in ("\x1b[2J", "\x7f", "\x01", "\x85", "\t"):
        with pytest.raises(ValueError, match="control characters"):
            Reply(550, f"a{control}b")


@pytest.mark.parametrize(
    "enhanced", ["5.1", "5.1.1.1", "5.1.", "5..1", "x.1.1", "5.1000.1", " 5.1.1"]
)
def test_reply_rejects_malformed_enhanced_codes(enhanced: str) -> None:
    with pytest.raises(ValueError, match="enhanced status code"):
        Reply(550, "no", enhanced)


@pytest.mark.parametrize(("code", "enhanced"), [(250, "5.0.0"), (550, "4.0.0"), (451, "2.0.0")])
def test_reply_enhanced_class_must_agree_with_the_code(code: int, enhanced: str) -> None:
    with pytest.raises(ValueError, match="disagrees"):
        Reply(code, "text", enhanced)


@pytest.mark.parametrize(("code", "enhanced"), [(250, "2.1.5"), (452, "4.5.3"), (554, "5.999.999")])
def test_reply_enhanced_codes_that_agree(code: int, enhanced: str) -> None:
    assert Reply(code, "text", enhanced).enhanced == enhanced


@pytest.mark.parametrize("enhanced", ["2.0.0", "3.0.0", "5.0.0"])
def test_reply_3xx_takes_no_enhanced_code(enhanced: str) -> None:
    # RFC 2034 §4: 3xx replies carry no enhanced code, whatever its class ("3" is no class at all).
    with pytest.raises(ValueError, match="enhanced"):
        Reply(354, "go ahead", enhanced)
    assert Reply(354, "go ahead").to_bytes() == b"354 go ahead\r\n"


def test_reply_renders_single_and_multi_line() -> None:
    assert Reply(250, "ok").to_bytes() == b"250 ok\r\n"
    assert Reply(250, ("a", "b")).to_bytes() == b"250-a\r\n250 b\r\n"
    assert Reply(250, ("a", "b", "c")).to_bytes() == b"250-a\r\n250-b\r\n250 c\r\n"
    assert Reply(250, ("only",)).to_bytes() == b"250 only\r\n"


def test_reply_puts_the_enhanced_code_on_every_line() -> None:
    reply = Reply(550, ("first", "second"), "5.1.1")
    assert reply.to_bytes() == b"550-5.1.1 first\r\n550 5.1.1 second\r\n"
    assert reply.to_bytes(enhanced=False) == b"550-first\r\n550 second\r\n"
    assert Reply(250, "ok", "2.0.0").to_bytes(enhanced=False) == b"250 ok\r\n"


def test_reply_with_empty_text_is_a_bare_code() -> None:
    # RFC 5321 §4.2: Reply-code [ SP textstring ] CRLF, and a textstring has at least one character, so an
    # empty last line is "250" CRLF; a space with nothing after it is not a reply line. (An empty middle
    # line, Reply-code "-" [ textstring ] CRLF, is fine.)
    assert Reply(250).to_bytes() == b"250\r\n"
    assert Reply(250, ("a", "")).to_bytes() == b"250-a\r\n250\r\n"
    assert Reply(250, ("", "b")).to_bytes() == b"250-\r\n250 b\r\n"


def test_reply_encodes_utf8_text() -> None:
    assert Reply(250, "grüße").to_bytes() == "250 grüße\r\n".encode()


def test_reply_accessors_and_immutability() -> None:
    reply = Reply(250, ("a", "b"), "2.0.0")
    assert reply.lines == ("a", "b")
    assert Reply(250, "a").lines == ("a",)
    assert reply.is_positive
    assert Reply(354, "go").is_positive
    assert not Reply(421, "bye").is_positive
    assert Reply(250, "a") == Reply(250, "a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        reply.code = 550  # type: ignore[misc]


# -- ServerConfig ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_command_line": 511}, "max_command_line"),
        ({"max_command_line": 0}, "max_command_line"),
        ({"max_message_size": -1}, "max_message_size"),
        # RFC 1870 §4: "SIZE 0" would advertise no limit at all.
        ({"max_message_size": 0}, "max_message_size"),
        ({"max_recipients": 0}, "at least 1"),
        ({"max_errors": 0}, "at least 1"),
        ({"max_unauthenticated_commands": 0}, "at least 1"),
        ({"disabled_commands": frozenset({"vrfy"})}, "upper case"),
        ({"hostname": ""}, "hostname"),
        ({"hostname": "mx example"}, "hostname"),
        ({"hostname": "mx\r\n250 forged"}, "hostname"),
        ({"hostname": "mx\n"}, "hostname"),
        ({"hostname": "mx\x00"}, "hostname"),
        ({"hostname": "m" * 256}, "hostname"),
        ({"banner": "hi\r\n250 forged"}, "banner"),
        ({"banner": "x" * 101}, "banner"),
        ({"auth_methods": ("PLAIN", "KERBEROS_V4")}, "unknown SASL"),
        ({"auth_methods": ("CRAM-MD5",)}, "nonce_factory"),
        ({"max_auth_failures": -1}, "max_auth_failures"),
        ({"max_auth_line": 511}, "max_auth_line"),
    ],
)
def test_config_validation_errors(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(**kwargs)


def test_config_boundaries_and_shape() -> None:
    assert ServerConfig(max_command_line=512).max_command_line == 512
    assert ServerConfig(max_message_size=1).max_message_size == 1
    assert ServerConfig(hostname="m" * 255, banner="x" * 100).banner == "x" * 100
    assert ServerConfig(auth_methods=()).auth_methods == ()
    assert ServerConfig(auth_methods=("CRAM-MD5",), nonce_factory=lambda: "1.2").nonce_factory
    assert ServerConfig().max_message_size is None
    assert ServerConfig(disabled_commands=frozenset({"VRFY"})).disabled_commands == {"VRFY"}
    assert ServerConfig().line_endings is LineEndings.REJECT
    config = ServerConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lmtp = True  # type: ignore[misc]
    with pytest.raises(TypeError):
        ServerConfig("mx.example")  # type: ignore[call-arg]


# -- ReceiveBuffer ---------------------------------------------------------------------------------------------


def test_receive_buffer_takes_lines_across_pieces() -> None:
    buf = ReceiveBuffer()
    assert not buf
    assert buf.take_line(b"\r\n") is None
    buf.append(b"NO")
    buf.append(b"OP\r")
    assert buf.take_line(b"\r\n") is None
    buf.append(b"\nRSET\r\nQU")
    assert len(buf) == 14
    assert buf.take_line(b"\r\n") == b"NOOP"
    assert buf.take_line(b"\r\n") == b"RSET"
    assert buf.take_line(b"\r\n") is None
    assert bytes(buf.data) == b"QU"
    assert buf
    buf.append(b"IT\r\n")
    assert buf.take_line(b"\r\n") == b"QUIT"
    assert not buf
    assert len(buf) == 0


def test_receive_buffer_single_byte_terminator_and_empty_lines() -> None:
    buf = ReceiveBuffer()
    buf.append(b"\na\n\n")
    assert buf.take_line(b"\n") == b""
    assert buf.take_line(b"\n") == b"a"
    assert buf.take_line(b"\n") == b""
    assert buf.take_line(b"\n") is None


def test_receive_buffer_resumes_its_scan() -> None:
    # The search starts where the last one left off (less a terminator's length - 1), not at the front:
    # a terminator written behind that point by someone else is not seen until rescan().
    buf = ReceiveBuffer()
    buf.append(b"abcd")
    assert buf.take_line(b"\r\n") is None
    buf.data[0:2] = b"\r\n"  # behind the remembered position (3 = 4 - 2 + 1)
    buf.append(b"e\r\n")
    assert buf.take_line(b"\r\n") == b"\r\ncde"

    buf.append(b"wxyz")
    assert buf.take_line(b"\r\n") is None
    buf.data[0:2] = b"\r\n"
    buf.rescan()
    assert buf.take_line(b"\r\n") == b""
    assert bytes(buf.data) == b"yz"


def test_receive_buffer_finds_a_terminator_split_at_the_remembered_position() -> None:
    buf = ReceiveBuffer()
    for byte in b"NOOP\r":
        buf.append(bytes([byte]))
        assert buf.take_line(b"\r\n") is None
    buf.append(b"\n")
    assert buf.take_line(b"\r\n") == b"NOOP"


def test_receive_buffer_discard_keeps_the_tail() -> None:
    buf = ReceiveBuffer()
    buf.append(b"abcdef")
    assert buf.discard(keep_tail=2) == 4
    assert bytes(buf.data) == b"ef"
    assert buf.discard(keep_tail=10) == 0
    assert bytes(buf.data) == b"ef"
    assert buf.discard() == 2
    assert not buf

    buf.append(b"xxxx")
    assert buf.take_line(b"\r\n") is None
    assert buf.discard(keep_tail=1) == 3
    buf.append(
        b"\r\n"
    )  # the remembered position was reset: the terminator right after the tail is found
    assert buf.take_line(b"\r\n") == b"x"


def test_receive_buffer_clear() -> None:
    buf = ReceiveBuffer()
    buf.append(b"abc")
    assert buf.take_line(b"\r\n") is None
    buf.clear()
    assert len(buf) == 0
    buf.append(b"\r\n")
    assert buf.take_line(b"\r\n") == b""


# -- capabilities --------------------------------------------------------------------------------------------

ALL_CAPS = ["PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE", "ENHANCEDSTATUSCODES", "DSN"]


def test_capabilities_default_order() -> None:
    assert capabilities(ServerConfig()) == ALL_CAPS
    assert capabilities(ServerConfig(max_message_size=1000)) == [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "SIZE 1000",
        "ENHANCEDSTATUSCODES",
        "DSN",
    ]
    assert capabilities(ServerConfig(max_message_size=1))[3] == "SIZE 1"


#: Every extension a peer can be offered, in the documented order.
OPTIONAL: dict[str, Any] = {
    "tls_available": True,
    "allow_insecure_auth": True,
    "use_xclient": True,
    "use_xforward": True,
}
XCLIENT = " ".join(("XCLIENT", *XCLIENT_ATTRIBUTES))
XFORWARD = " ".join(("XFORWARD", *XFORWARD_ATTRIBUTES))


def test_capabilities_full_order() -> None:
    config = ServerConfig(**OPTIONAL)
    assert capabilities(config) == [*ALL_CAPS, "STARTTLS", "AUTH PLAIN LOGIN", XCLIENT, XFORWARD]
    # Inside TLS: no STARTTLS, and REQUIRETLS (RFC 8689 §4) comes after AUTH.
    assert capabilities(config, secure=True) == [
        *ALL_CAPS,
        "AUTH PLAIN LOGIN",
        "REQUIRETLS",
        XCLIENT,
        XFORWARD,
    ]
    assert capabilities(config, authenticated=True, xclient_done=True) == [*ALL_CAPS, "STARTTLS"]


def test_capabilities_only_offer_what_may_be_used() -> None:
    # AUTH only over TLS unless explicitly allowed in plaintext (RFC 4954 §4), in the configured order.
    assert capabilities(ServerConfig()) == ALL_CAPS
    secure = ServerConfig(auth_methods=("LOGIN", "PLAIN"))
    assert capabilities(secure, secure=True)[-2:] == ["AUTH LOGIN PLAIN", "REQUIRETLS"]
    assert "AUTH" not in " ".join(capabilities(ServerConfig(auth_methods=()), secure=True))
    disabled = ServerConfig(
        disabled_commands=frozenset({"AUTH", "STARTTLS", "XCLIENT", "XFORWARD"})
    )
    assert capabilities(dataclasses.replace(disabled, **OPTIONAL)) == ALL_CAPS


@pytest.mark.parametrize(
    ("switch", "gone"),
    [
        ("hide_pipelining", ["PIPELINING"]),
        ("hide_8bitmime", ["8BITMIME", "SMTPUTF8"]),  # RFC 6531 §3.1: no SMTPUTF8 without 8BITMIME
        ("hide_smtputf8", ["SMTPUTF8"]),
        ("hide_enhanced_status_codes", ["ENHANCEDSTATUSCODES"]),
        ("hide_dsn", ["DSN"]),
        ("hide_starttls", ["STARTTLS"]),
        ("hide_requiretls", ["REQUIRETLS"]),
    ],
)
def test_each_hide_switch_drops_its_keyword(switch: str, gone: list[str]) -> None:
    # secure=True for REQUIRETLS, which is only offered inside TLS; STARTTLS is offered before it.
    everything = [*ALL_CAPS, "STARTTLS", "AUTH PLAIN LOGIN", XCLIENT, XFORWARD]
    config = ServerConfig(**OPTIONAL, **{switch: True})  # type: ignore[arg-type]
    assert capabilities(config) == [cap for cap in everything if cap not in gone]
    inside_tls = [*ALL_CAPS, "AUTH PLAIN LOGIN", "REQUIRETLS", XCLIENT, XFORWARD]
    assert capabilities(config, secure=True) == [cap for cap in inside_tls if cap not in gone]


def test_hide_size_keeps_size_without_its_number() -> None:
    assert capabilities(ServerConfig(hide_size=True)) == ALL_CAPS
    assert capabilities(ServerConfig(hide_size=True, max_message_size=1000)) == ALL_CAPS


def test_lmtp_always_advertises_pipelining_and_enhanced_codes() -> None:
    # RFC 2033 §5 makes both mandatory for LMTP.
    every_switch: dict[str, Any] = {
        "hide_pipelining": True,
        "hide_8bitmime": True,
        "hide_smtputf8": True,
        "hide_enhanced_status_codes": True,
        "hide_dsn": True,
    }
    assert capabilities(ServerConfig(lmtp=True, **every_switch)) == [
        "PIPELINING",
        "SIZE",
        "ENHANCEDSTATUSCODES",
    ]
    assert capabilities(ServerConfig(**every_switch)) == ["SIZE"]
    assert enhanced_codes(ServerConfig(lmtp=True, hide_enhanced_status_codes=True))
    assert not enhanced_codes(ServerConfig(hide_enhanced_status_codes=True))
    assert not smtputf8_offered(ServerConfig(hide_8bitmime=True))
    assert smtputf8_offered(ServerConfig())


def test_ehlo_reply_lists_the_capabilities_in_order() -> None:
    conn = ServerConnection(ServerConfig(hostname="mx.test", max_message_size=5000, hide_dsn=True))
    conn.receive_data(b"EHLO c.test\r\n")
    assert isinstance(conn.next_event(), Hello)
    greeting, ehlo = conn.data_to_send().split(b"\r\n", 1)
    assert greeting == b"220 mx.test ESMTP"
    assert ehlo == (
        b"250-mx.test Nice to meet you\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
        b"250-SIZE 5000\r\n250 ENHANCEDSTATUSCODES\r\n"
    )


def test_hidden_enhanced_codes_leave_replies_plain() -> None:
    conn = ServerConnection(ServerConfig(hide_enhanced_status_codes=True))
    conn.receive_data(b"NOOP\r\nXYZZY\r\n")
    assert conn.next_event() is NEED_DATA
    assert replies(conn.data_to_send())[1:] == ["250 OK", "500 Command not recognized"]


# -- events ----------------------------------------------------------------------------------------------------

EVENTS = [
    Hello(command="EHLO", hostname="c.test"),
    MailFrom(address="a@b.test"),
    RcptTo(address="x@y.test", args=MappingProxyType({"NOTIFY": "NEVER"})),
    DataStart(),
    DataChunk(data=b"body"),
    DataEnd(size=4),
    Reset(),
    Verify(argument="postmaster"),
    Quit(),
    ConnectionClosed(),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_events_are_frozen_and_slotted(event: object) -> None:
    cls = type(event)
    assert "__slots__" in vars(cls)
    assert not hasattr(event, "__dict__")
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(event, field.name, None)
    with pytest.raises((dataclasses.FrozenInstanceError, AttributeError, TypeError)):
        event.extra = 1  # type: ignore[attr-defined]
    assert not hasattr(event, "extra")
    assert event == dataclasses.replace(event)  # type: ignore[type-var]


@pytest.mark.parametrize("cls", typing.get_args(Event), ids=lambda cls: cls.__name__)
def test_every_event_class_is_a_frozen_slotted_keyword_only_dataclass(cls: type) -> None:
    # Class-level, so that an event added later (AUTH, PROXY, ...) is covered without an instance here.
    assert dataclasses.is_dataclass(cls)
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    assert params.frozen
    assert "__slots__" in vars(cls)
    assert all(field.kw_only for field in dataclasses.fields(cls))
    assert vars(cls).get("__doc__"), f"{cls.__name__} has no docstring"


@pytest.mark.parametrize(
    ("cls", "args"),
    [
        (Hello, ("EHLO", "c.test")),
        (MailFrom, ("a@b.test",)),
        (RcptTo, ("x@y.test",)),
        (DataChunk, (b"x",)),
        (DataEnd, (4,)),
        (Verify, ("x",)),
        (ConnectionClosed, (True,)),
    ],
)
def test_events_are_keyword_only(cls: type, args: tuple[object, ...]) -> None:
    with pytest.raises(TypeError):
        cls(*args)


def test_event_defaults() -> None:
    mail = MailFrom(address="")
    assert dict(mail.args) == {}
    with pytest.raises(TypeError):
        mail.args["SIZE"] = "1"  # type: ignore[index]
    assert DataEnd(size=0) == DataEnd(size=0, size_exceeded=False, refusal=None)
    assert ConnectionClosed().transaction_aborted is False
    assert Hello(command="EHLO", hostname="c").extended
    assert Hello(command="LHLO", hostname="c").extended
    assert not Hello(command="HELO", hostname="c").extended


def test_the_fast_event_constructors_build_the_same_events() -> None:
    # The connection builds the transaction events without their dataclass __init__ (see _events.py).
    args = MappingProxyType({"SIZE": "10"})
    refusal = Reply(552, "Too big", "5.3.4")
    pairs = [
        (new_mail_from("a@b.test", args), MailFrom(address="a@b.test", args=args)),
        (new_rcpt_to("x@y.test", args), RcptTo(address="x@y.test", args=args)),
        (new_data_start(), DataStart()),
        (new_data_chunk(b"body"), DataChunk(data=b"body")),
        (new_data_end(4, True, refusal), DataEnd(size=4, size_exceeded=True, refusal=refusal)),
    ]
    for fast, slow in pairs:
        assert type(fast) is type(slow)
        assert fast == slow
        assert repr(fast) == repr(slow)
        for field in dataclasses.fields(slow):
            assert getattr(fast, field.name) is getattr(slow, field.name)
            with pytest.raises(dataclasses.FrozenInstanceError):
                setattr(fast, field.name, None)


def test_sentinels() -> None:
    assert repr(NEED_DATA) == "NEED_DATA"
    assert repr(PAUSED) == "PAUSED"
    assert NEED_DATA is Sentinel.NEED_DATA
    assert PAUSED is Sentinel.PAUSED
    assert list(Sentinel) == [NEED_DATA, PAUSED]


# -- errors ----------------------------------------------------------------------------------------------------


def test_smtp_error_carries_its_reply() -> None:
    error = SMTPError(550, "No such user", "5.1.1")
    assert error.reply == Reply(550, "No such user", "5.1.1")
    assert str(error) == "550 5.1.1 No such user"
    assert error.args == (550, "No such user", "5.1.1")
    plain = SMTPError(451, "Try again later")
    assert plain.reply == Reply(451, "Try again later")
    assert str(plain) == "451 Try again later"
    assert not isinstance(error, ProtocolError)


@pytest.mark.parametrize(
    ("code", "message", "enhanced", "match"),
    [
        (700, "no", None, "reply code"),
        (550, "a\r\n250 forged", None, "CR, LF or NUL"),
        (550, "no", "4.0.0", "disagrees"),
    ],
)
def test_smtp_error_validates_like_reply(
    code: int, message: str, enhanced: str | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        SMTPError(code, message, enhanced)


def test_remote_protocol_error_carries_its_reply() -> None:
    reply = Reply(421, "Too many errors", "4.7.0")
    error = RemoteProtocolError("too many errors", reply)
    assert error.reply is reply
    assert str(error) == "too many errors"
    assert isinstance(error, ProtocolError)


def test_remote_protocol_error_reply_is_the_queued_one() -> None:
    conn = ServerConnection(ServerConfig(max_errors=2))
    conn.data_to_send()
    conn.receive_data(b"XYZZY\r\nXYZZY\r\nNOOP\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_event()
    reply = info.value.reply
    assert reply is not None
    assert reply.code == 421
    assert reply.enhanced == "4.7.0"
    out = conn.data_to_send()
    assert out.endswith(reply.to_bytes())
    assert [line[:3] for line in replies(out)] == ["500", "421"]
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)


def test_local_protocol_error() -> None:
    conn = ServerConnection()
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(250, "ok"))
    with pytest.raises(LocalProtocolError):
        conn.accept()
    assert isinstance(LocalProtocolError("x"), ProtocolError)
