"""The PROXY header, XCLIENT and XFORWARD at the connection level: CONFORMANCE §8 and §9.

``test_proxy.py`` covers the parsers byte by byte; here they run inside a ``ServerConnection``: when the
greeting goes out, what a broken header does to the session, and what an accepted XCLIENT or XFORWARD
changes. Not here: PROXY-15 (header timeout) and PROXY-18 (trusted proxies) belong to the driver.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import smtpproto
from smtpproto import (
    NEED_DATA,
    AuthRequest,
    ConnectionClosed,
    Event,
    Hello,
    LocalProtocolError,
    MailFrom,
    ProxyHeader,
    Quit,
    RemoteProtocolError,
    Reply,
    ServerConfig,
    ServerConnection,
    SessionState,
    XClient,
    XForward,
)

from .helpers import Decider, codes, drain, run, session

GREETING = b"220 localhost ESMTP\r\n"
EHLO = b"EHLO client.test\r\n"
NOOP_OK = b"250 2.0.0 OK\r\n"
NOT_ALLOWED = b"550 5.7.0 Not allowed\r\n"

PROXY = ServerConfig(use_proxy=True)
V1 = b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25\r\n"
V1_HEADER = ProxyHeader(
    version=1,
    command="PROXY",
    family="TCP4",
    source_address="192.0.2.1",
    source_port=4321,
    destination_address="198.51.100.2",
    destination_port=25,
)
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
# CONFORMANCE PROXY-08, byte for byte.
V2 = (
    SIGNATURE
    + b"\x21\x11\x00\x0c"
    + socket.inet_aton("192.0.2.1")
    + socket.inet_aton("198.51.100.2")
    + b"\x10\xe1\x00\x19"
)
V2_HEADER = ProxyHeader(
    version=2,
    command="PROXY",
    family="TCP4",
    source_address="192.0.2.1",
    source_port=4321,
    destination_address="198.51.100.2",
    destination_port=25,
)
V2_LOCAL = SIGNATURE + b"\x20\x00\x00\x00"
LOCAL_HEADER = ProxyHeader(version=2, command="LOCAL", family="UNKNOWN")

XC = ServerConfig(use_xclient=True, use_xforward=True)
XCLIENT_LINE = "XCLIENT NAME ADDR PORT PROTO HELO LOGIN REVERSE_NAME DESTADDR DESTPORT"
XFORWARD_LINE = "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE"
XC_02 = (
    b"XCLIENT ADDR=192.0.2.1 NAME=[UNAVAILABLE] PORT=4321 HELO=spoof.test LOGIN=[UNAVAILABLE]\r\n"
)
XF_01 = b"XFORWARD NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP\r\n"
TIM = b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm"


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def v2(body: bytes, *, ver_cmd: int = 0x21, fam: int = 0x11, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return SIGNATURE + bytes([ver_cmd, fam]) + size.to_bytes(2, "big") + body


def first_refusal(conn: ServerConnection, data: bytes) -> RemoteProtocolError | None:
    """Feed ``data`` one byte at a time; return the refusal, if any. Until then, silence."""
    for byte in data:
        conn.receive_data(bytes([byte]))
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            return exc
        assert event is NEED_DATA
        assert conn.data_to_send() == b""
    return None


def keywords(out: bytes) -> list[str]:
    """The capability lines of the last EHLO reply in ``out``."""
    lines = out.decode("ascii").split("\r\n")[:-1]
    end = max(i for i, line in enumerate(lines) if line.startswith("250 "))
    start = end
    while start > 0 and lines[start - 1].startswith("250-"):
        start -= 1
    return [line[4:] for line in lines[start + 1 : end + 1]]


def tail(out: bytes) -> bytes:
    """The output after the greeting and the first EHLO reply."""
    last = out.index(b"\r\n250 ") + 2
    return out[out.index(b"\r\n", last) + 2 :]


def of_type(events: list[Event], kind: type) -> list[Event]:
    return [event for event in events if isinstance(event, kind)]


# --- PROXY header at the connection level ---------------------------------------------------------------


def test_PROXY_01_no_greeting_before_the_header() -> None:
    conn = ServerConnection(PROXY)
    assert conn.data_to_send() == b""
    for byte in V1[:-1]:
        conn.receive_data(bytes([byte]))
        assert conn.next_event() is NEED_DATA
        assert conn.data_to_send() == b""
    conn.receive_data(V1[-1:])
    assert conn.next_event() == V1_HEADER
    # The greeting goes out right after the header, without waiting for the client.
    assert conn.data_to_send() == GREETING
    assert conn.next_event() is NEED_DATA
    assert conn.state is SessionState.GREETED


def test_PROXY_02_smtp_pipelined_with_the_header() -> None:
    for header, event in ((V1, V1_HEADER), (V2, V2_HEADER)):
        out, events = session(header + EHLO + b"NOOP\r\n", PROXY)
        assert out.startswith(GREETING + b"250-localhost Nice to meet you\r\n")
        assert out.endswith(NOOP_OK)
        assert codes(out) == [220, 250, 250]
        assert events == [event, Hello(command="EHLO", hostname="client.test")]


@pytest.mark.parametrize(
    ("header", "event"),
    [
        (V1, V1_HEADER),
        (V2, V2_HEADER),
        (V2_LOCAL, LOCAL_HEADER),
        (b"PROXY UNKNOWN\r\n", ProxyHeader(version=1, command="PROXY", family="UNKNOWN")),
        (
            b"PROXY TCP6 2001:db8::1 2001:db8::2 4321 25\r\n",
            ProxyHeader(
                version=1,
                command="PROXY",
                family="TCP6",
                source_address="2001:db8::1",
                source_port=4321,
                destination_address="2001:db8::2",
                destination_port=25,
            ),
        ),
        (
            v2(V2[16:] + tlv(0x04, b"abcd") + tlv(0x02, b"mx.example")),
            ProxyHeader(
                version=2,
                command="PROXY",
                family="TCP4",
                source_address="192.0.2.1",
                source_port=4321,
                destination_address="198.51.100.2",
                destination_port=25,
                tlvs={0x02: b"mx.example"},
            ),
        ),
    ],
    ids=["v1-tcp4", "v2-tcp4", "v2-local", "v1-unknown", "v1-tcp6", "v2-tlvs"],
)
def test_header_split_at_every_byte(header: bytes, event: ProxyHeader) -> None:
    data = header + EHLO + b"QUIT\r\n"
    whole = run([data], PROXY)
    assert whole[1][0] == event
    assert whole[0].startswith(GREETING)
    assert isinstance(whole[1][-1], ConnectionClosed)
    for cut in range(1, len(data)):
        assert run([data[:cut], data[cut:]], PROXY) == whole, cut
    assert run([data[i : i + 1] for i in range(len(data))], PROXY) == whole


BAD_HEADERS = [
    pytest.param(b"EHLO client.test\r\n", id="PROXY-14-no-header"),
    pytest.param(b"GET / HTTP/1.0\r\n\r\n", id="http"),
    pytest.param(b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n", id="PROXY-05-no-crlf-in-107"),
    pytest.param(b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25\n", id="PROXY-06-bare-lf"),
    pytest.param(b"PROXY TCP5 192.0.2.1 198.51.100.2 4321 25\r\n", id="PROXY-07-tcp5"),
    pytest.param(b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 25\r\n", id="PROXY-07-port"),
    pytest.param(b"PROXY TCP4 192.0.2.01 198.51.100.2 4321 25\r\n", id="PROXY-07-leading-zero"),
    pytest.param(b"PROXY TCP4 2001:db8::1 2001:db8::2 4321 25\r\n", id="PROXY-07-ipv6-in-tcp4"),
    pytest.param(b"PROXY TCP4  192.0.2.1 198.51.100.2 4321 25\r\n", id="PROXY-07-two-spaces"),
    pytest.param(b"PROXY TCP4 192.0.2.1 198.51.100.2 4321\r\n", id="PROXY-07-missing-field"),
    pytest.param(b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n", id="PROXY-07-negative-port"),
    pytest.param(v2(V2[16:], ver_cmd=0x11), id="PROXY-11-version-1"),
    pytest.param(v2(V2[16:], ver_cmd=0x22), id="PROXY-11-command-2"),
    pytest.param(v2(V2[16:], fam=0x41), id="PROXY-11-family"),
    pytest.param(v2(V2[16:], fam=0x13), id="PROXY-11-protocol"),
    pytest.param(v2(V2[16:] + b"\x04\x00\x09abc"), id="PROXY-12-tlv-past-length"),
    pytest.param(v2(V2[16:] + tlv(0x03, b"\0\0\0\0")), id="PROXY-12-bad-crc32c"),
    pytest.param(v2(b"", length=65535), id="PROXY-13-oversized"),
    pytest.param(b"\x16\x03\x01\x00\xf8\x01", id="tls-client-hello"),
]


@pytest.mark.parametrize("data", BAD_HEADERS)
def test_malformed_header_closes_without_a_word(data: bytes) -> None:
    conn = ServerConnection(PROXY)
    assert conn.data_to_send() == b""
    conn.receive_data(data + EHLO)
    with pytest.raises(RemoteProtocolError) as caught:
        conn.next_event()
    # Not an SMTP client (yet): no greeting, no 421, nothing at all.
    assert caught.value.reply is None
    assert conn.data_to_send() == b""
    assert conn.state is SessionState.CLOSED
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    conn.receive_data(EHLO)  # ignored once closed
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("data", BAD_HEADERS)
def test_malformed_header_byte_by_byte_says_nothing_either(data: bytes) -> None:
    conn = ServerConnection(PROXY)
    error = first_refusal(conn, data + EHLO)
    assert error is not None, "a malformed header was never refused"
    assert error.reply is None
    assert conn.data_to_send() == b""


@pytest.mark.parametrize("received", [b"", b"PROXY TCP4 192.0.2.1", V2[:20], SIGNATURE])
def test_eof_before_the_header_closes_without_a_word(received: bytes) -> None:
    conn = ServerConnection(PROXY)
    if received:
        conn.receive_data(received)
        assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed(transaction_aborted=False)
    assert conn.data_to_send() == b""


def test_PROXY_12_length_never_satisfied_waits_silently() -> None:
    conn = ServerConnection(PROXY)
    conn.receive_data(v2(V2[16:], length=100) + EHLO)
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b""


def test_refuse_service_behind_a_proxy_says_554_after_the_header() -> None:
    config = ServerConfig(use_proxy=True, refuse_service=True)
    conn = ServerConnection(config)
    assert conn.data_to_send() == b""
    out, events = session(V1 + EHLO + b"QUIT\r\n", config)
    assert out == (
        b"554 5.7.1 localhost No SMTP service here\r\n"
        b"503 5.5.1 No SMTP service here, only QUIT\r\n"
        b"221 2.0.0 localhost Service closing transmission channel\r\n"
    )
    assert events == [V1_HEADER, Quit(), ConnectionClosed(transaction_aborted=False)]


def test_lmtp_behind_a_proxy() -> None:
    out, events = session(V2 + b"LHLO client.test\r\n", ServerConfig(use_proxy=True, lmtp=True))
    assert out.startswith(b"220 localhost LMTP\r\n250-localhost Nice to meet you\r\n")
    assert events[0] == V2_HEADER


def test_PROXY_17_header_without_use_proxy_is_just_an_unknown_command() -> None:
    out, events = session(V1 + b"NOOP\r\n")
    assert out == GREETING + b"500 5.5.2 Command not recognized\r\n" + NOOP_OK
    assert events == []


# --- PROXY properties -----------------------------------------------------------------------------------

_ports = st.integers(min_value=0, max_value=65535)


def _v1_line(
    src: ipaddress.IPv4Address | ipaddress.IPv6Address, dst_port: int, src_port: int
) -> bytes:
    family = b"TCP4" if src.version == 4 else b"TCP6"
    dst = ipaddress.ip_address("198.51.100.2" if src.version == 4 else "2001:db8::2")
    return b"PROXY %s %s %s %d %d\r\n" % (
        family,
        str(src).encode(),
        str(dst).encode(),
        src_port,
        dst_port,
    )


def _v2_block(
    src: ipaddress.IPv4Address | ipaddress.IPv6Address,
    src_port: int,
    dst_port: int,
    tlvs: bytes,
    local: bool,
) -> bytes:
    body = src.packed * 2 + src_port.to_bytes(2, "big") + dst_port.to_bytes(2, "big")
    fam = 0x11 if src.version == 4 else 0x21
    return v2(body + tlvs, ver_cmd=0x20 if local else 0x21, fam=fam)


_tlvs = st.lists(
    st.tuples(st.sampled_from([0x01, 0x02, 0x04, 0x05, 0x20, 0x30, 0xE0]), st.binary(max_size=20)),
    max_size=3,
    unique_by=lambda item: item[0],
).map(lambda items: b"".join(tlv(kind, value) for kind, value in items))
_headers = st.one_of(
    st.builds(_v1_line, st.ip_addresses(), _ports, _ports),
    st.just(b"PROXY UNKNOWN\r\n"),
    st.builds(_v2_block, st.ip_addresses(), _ports, _ports, _tlvs, st.booleans()),
)
_smtp = st.sampled_from(
    [b"", EHLO, EHLO + b"NOOP\r\n", b"EHLO x\r\nMAIL FROM:<a@b.test>\r\nQUIT\r\n", b"NOOP\r\nNOOP"]
)


@settings(max_examples=200, deadline=None)
@given(
    header=_headers, smtp=_smtp, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6)
)
def test_headers_then_smtp_at_any_split_give_identical_output(
    header: bytes, smtp: bytes, cuts: list[int]
) -> None:
    data = header + smtp
    whole = run([data], PROXY)
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(points)]
    assert run(pieces, PROXY) == whole
    out, events = whole
    assert out.startswith(GREETING)
    assert isinstance(events[0], ProxyHeader)


@settings(max_examples=200, deadline=None)
@given(junk=st.binary(min_size=1, max_size=40))
def test_random_bytes_before_the_greeting(junk: bytes) -> None:
    # Whatever arrives first, the server either waits silently, refuses silently, or greets after a
    # complete header: nothing is ever written before a valid header.
    conn = ServerConnection(PROXY)
    error: RemoteProtocolError | None = None
    for byte in junk:
        conn.receive_data(bytes([byte]))
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            error = exc
            break
        if isinstance(event, ProxyHeader):
            # A header after all: the greeting follows it, and the rest is SMTP.
            assert conn.data_to_send() == GREETING
            return
        assert event is NEED_DATA
        assert conn.data_to_send() == b""
    if error is not None:
        assert error.reply is None
        assert conn.data_to_send() == b""


# --- XCLIENT (CONFORMANCE §9) -------------------------------------------------------------------------


def test_XC_01_unauthorised_peer() -> None:
    out, events = session(EHLO + XC_02 + XF_01, ServerConfig())
    caps = keywords(out)
    assert not any(cap.startswith(("XCLIENT", "XFORWARD")) for cap in caps)
    assert tail(out) == NOT_ALLOWED * 2
    assert events == [Hello(command="EHLO", hostname="client.test")]


def test_each_is_advertised_only_when_enabled() -> None:
    out, _ = session(EHLO, XC)
    assert keywords(out)[-2:] == [XCLIENT_LINE, XFORWARD_LINE]
    out, _ = session(EHLO + XF_01, ServerConfig(use_xclient=True))
    assert keywords(out)[-1] == XCLIENT_LINE
    assert XFORWARD_LINE not in keywords(out)
    assert tail(out) == NOT_ALLOWED
    out, _ = session(EHLO + XC_02, ServerConfig(use_xforward=True))
    assert keywords(out)[-1] == XFORWARD_LINE
    assert XCLIENT_LINE not in keywords(out)
    assert tail(out) == NOT_ALLOWED


def test_disabled_xclient_is_unknown() -> None:
    config = ServerConfig(use_xclient=True, disabled_commands=frozenset({"XCLIENT"}))
    out, _ = session(EHLO + XC_02, config)
    assert XCLIENT_LINE not in keywords(out)
    assert tail(out) == b"500 5.5.2 Command not recognized\r\n"


def test_XC_02_fresh_greeting_and_reset() -> None:
    out, events = session(EHLO + XC_02 + b"MAIL FROM:<a@b.test>\r\n", XC)
    assert tail(out) == GREETING + b"503 5.5.1 Send HELO/EHLO first\r\n"
    assert events[1:] == [
        XClient(
            addr="192.0.2.1",
            name="[UNAVAILABLE]",
            port="4321",
            helo="spoof.test",
            login="[UNAVAILABLE]",
        )
    ]


def test_XC_02_ehlo_again_then_mail() -> None:
    out, events = session(EHLO + XC_02 + EHLO + b"MAIL FROM:<a@b.test>\r\n", XC)
    assert codes(out) == [220, 250, 220, 250, 250]
    assert events[-1] == MailFrom(address="a@b.test")


def test_XC_03_no_more_xclient_or_xforward_after_addr() -> None:
    conn = ServerConnection(XC)
    conn.receive_data(EHLO + XC_02 + EHLO)
    drain(conn)
    out = conn.data_to_send()
    assert not any(cap.startswith(("XCLIENT", "XFORWARD")) for cap in keywords(out))
    conn.receive_data(b"XCLIENT NAME=x.test\r\n" + XF_01)
    assert drain(conn) == []
    assert conn.data_to_send() == NOT_ALLOWED * 2


def test_xclient_without_addr_may_be_repeated() -> None:
    data = EHLO + b"XCLIENT NAME=a.test\r\nXCLIENT PROTO=ESMTP\r\n" + EHLO
    out, events = session(data, XC)
    assert keywords(out)[-2:] == [XCLIENT_LINE, XFORWARD_LINE]
    assert of_type(events, XClient) == [XClient(name="a.test"), XClient(proto="ESMTP")]
    assert codes(out) == [220, 250, 220, 220, 250]


def test_xclient_before_ehlo() -> None:
    out, events = session(XC_02 + EHLO, XC)
    assert codes(out) == [220, 220, 250]
    assert isinstance(events[0], XClient)


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"XCLIENT", "Syntax: XCLIENT attribute=value..."),  # XC-04
        (b"XCLIENT FOO=bar", "Bad XCLIENT attribute name: FOO"),  # XC-05
        (b"XCLIENT ADDR=notanip", "Bad ADDR syntax: notanip"),  # XC-06
        (b"XCLIENT ADDR=[192.0.2.1]", "Bad ADDR syntax: [192.0.2.1]"),
        (b"XCLIENT ADDR=2001:db8::1", "Bad ADDR syntax: 2001:db8::1"),
        (b"XCLIENT PORT=70000", "Bad PORT syntax: 70000"),
        (b"XCLIENT PROTO=FOO", "Bad PROTO syntax: FOO"),
        (b"XCLIENT NAME=a+20b", "Bad NAME syntax: a b"),  # XC-07
        (b"XCLIENT ADDR=192.0.2.1 FOO=bar", "Bad XCLIENT attribute name: FOO"),  # XC-11
        (b"XCLIENT ADDR=192.0.2.1 LOGIN=bob PORT=x", "Bad PORT syntax: x"),
        (b"XCLIENT HELO=a+0Db", "Bad HELO syntax: a?b"),
        (b"XCLIENT ADDR=192.0.2.1 ADDR=192.0.2.2", "Duplicate XCLIENT attribute: ADDR"),
    ],
)
def test_XC_04_to_07_and_11_bad_attributes_apply_nothing(line: bytes, reply: str) -> None:
    out, events = session(EHLO + line + b"\r\nMAIL FROM:<a@b.test>\r\n", XC)
    # 501, no event, no greeting, no reset: the transaction opens as if nothing happened ...
    assert tail(out) == f"501 5.5.4 {reply}\r\n".encode() + b"250 2.1.0 Sender accepted\r\n"
    assert of_type(events, XClient) == []
    # ... no login was applied, and XCLIENT (even with ADDR) is still allowed.
    conn = ServerConnection(XC)
    conn.receive_data(EHLO + line + b"\r\n")
    drain(conn)
    assert conn.authenticated_user is None
    conn.data_to_send()
    conn.receive_data(XC_02)
    assert isinstance(drain(conn)[0], XClient)
    assert conn.data_to_send() == GREETING


@pytest.mark.parametrize(
    ("line", "event"),
    [
        (
            b"XCLIENT ADDR=IPV6:2001:db8::1 NAME=[TEMPUNAVAIL]",
            XClient(addr="2001:db8::1", name="[TEMPUNAVAIL]"),
        ),
        (
            b"xclient addr=ipv6:2001:DB8::1 name=[unavailable]",
            XClient(addr="2001:db8::1", name="[UNAVAILABLE]"),
        ),
    ],
)
def test_XC_08_ipv6_and_case_insensitivity(line: bytes, event: XClient) -> None:
    out, events = session(EHLO + line + b"\r\n", XC)
    assert tail(out) == GREETING
    assert events[1:] == [event]


@pytest.mark.parametrize(
    "opened", [b"MAIL FROM:<a@b.test>\r\n", b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n"]
)
def test_XC_09_XF_04_refused_inside_a_transaction(opened: bytes) -> None:
    out, events = session(EHLO + opened + XC_02 + XF_01, XC)
    assert tail(out).endswith(b"503 5.5.1 Mail transaction in progress\r\n" * 2)
    assert of_type(events, XClient) == of_type(events, XForward) == []


def test_XC_10_over_long_xclient_line() -> None:
    config = ServerConfig(use_xclient=True, max_command_line=512)
    line = b"XCLIENT NAME=" + b"a" * 60 + (b"." + b"b" * 60) * 3 + b" HELO=" + b"h" * 255 + b"\r\n"
    assert len(line) == 519
    out, events = session(EHLO + line + b"NOOP\r\n", config)
    assert tail(out) == b"500 5.5.6 Line too long\r\n" + NOOP_OK
    assert of_type(events, XClient) == []
    # The same attributes are fine where the configured line limit allows them.
    out, events = session(EHLO + line, ServerConfig(use_xclient=True))
    assert tail(out) == GREETING
    assert len(of_type(events, XClient)) == 1


def test_XC_12_login_authenticates() -> None:
    config = ServerConfig(use_xclient=True, secure=True, auth_required=True)
    data = (
        EHLO
        + b"XCLIENT LOGIN=bob\r\n"
        + EHLO
        + b"AUTH PLAIN "
        + TIM
        + b"\r\nMAIL FROM:<a@b.test>\r\n"
    )
    out, events = session(data, config)
    second_ehlo = out.split(GREETING)[2]
    # Authenticated: AUTH is no longer offered or accepted, and MAIL is allowed.
    assert not any(cap.startswith("AUTH") for cap in keywords(second_ehlo))
    assert tail(second_ehlo) == b"503 5.5.1 Already authenticated\r\n250 2.1.0 Sender accepted\r\n"
    assert of_type(events, AuthRequest) == []
    conn = ServerConnection(config)
    conn.receive_data(b"XCLIENT LOGIN=bob\r\n")
    drain(conn)
    assert conn.authenticated_user == "bob"


@pytest.mark.parametrize("line", [b"XCLIENT LOGIN=[UNAVAILABLE]\r\n", b"XCLIENT NAME=a.test\r\n"])
def test_xclient_without_a_login_leaves_the_new_session_anonymous(line: bytes) -> None:
    config = ServerConfig(use_xclient=True, secure=True)
    conn = ServerConnection(config)
    conn.receive_data(EHLO + b"AUTH PLAIN " + TIM + b"\r\n")
    drain(conn)
    assert conn.authenticated_user == "tim"
    conn.receive_data(line)
    drain(conn)
    assert conn.authenticated_user is None


def xdecider(reply: Reply) -> Decider:
    def decide(event: smtpproto.Event) -> Reply | None:
        return reply if isinstance(event, XClient | XForward) else None

    return decide


def test_xclient_and_xforward_refused_by_the_application() -> None:
    out, events = session(
        EHLO + XC_02 + XF_01 + b"MAIL FROM:<a@b.test>\r\n",
        XC,
        xdecider(Reply(550, "Not allowed", "5.7.0")),
    )
    # Nothing changes: no greeting, no reset, and XCLIENT is still allowed later.
    assert tail(out) == NOT_ALLOWED * 2 + b"250 2.1.0 Sender accepted\r\n"
    assert len(of_type(events, XClient)) == len(of_type(events, XForward)) == 1
    # The standard refusal of reject().
    conn = ServerConnection(XC)
    conn.data_to_send()
    conn.receive_data(XC_02)
    assert isinstance(conn.next_event(), XClient)
    conn.reject()
    assert conn.data_to_send() == NOT_ALLOWED
    conn.receive_data(XF_01)
    assert isinstance(conn.next_event(), XForward)
    conn.reject()
    assert conn.data_to_send() == NOT_ALLOWED


def test_xclient_refused_with_421_closes() -> None:
    bye = Reply(421, "Try later", "4.3.0")
    out, events = session(EHLO + XC_02 + b"NOOP\r\n", XC, xdecider(bye))
    assert tail(out) == b"421 4.3.0 Try later\r\n"
    assert events[-1] == ConnectionClosed(transaction_aborted=False)


def test_xclient_decision_takes_no_3xx() -> None:
    conn = ServerConnection(XC)
    conn.receive_data(XC_02)
    assert isinstance(conn.next_event(), XClient)
    with pytest.raises(LocalProtocolError):
        conn.send(Reply(354, "go on"))


def test_xclient_keeps_tls() -> None:
    config = ServerConfig(use_xclient=True, tls_available=True)
    out, _ = run([EHLO + b"STARTTLS\r\n", XC_02 + EHLO], config)
    after = out.split(b"220 2.0.0 Ready to start TLS\r\n")[1]
    assert after.startswith(GREETING)
    caps = keywords(after)
    # Still inside TLS: no STARTTLS, REQUIRETLS kept (and XCLIENT gone after ADDR).
    assert "STARTTLS" not in caps
    assert "REQUIRETLS" in caps
    assert not any(cap.startswith("XCLIENT") for cap in caps)


def test_xclient_addr_still_counts_after_starttls() -> None:
    # [policy]: the core forgets the EHLO name and the login at STARTTLS (TLS-06), but an XCLIENT ADDR
    # keeps XCLIENT/XFORWARD closed: the session still speaks for the forwarded client, not the proxy.
    config = ServerConfig(use_xclient=True, use_xforward=True, tls_available=True)
    out, _ = run([EHLO + XC_02 + b"STARTTLS\r\n", EHLO + XC_02], config)
    after = out.split(b"220 2.0.0 Ready to start TLS\r\n")[1]
    assert not any(cap.startswith(("XCLIENT", "XFORWARD")) for cap in keywords(after))
    assert after.endswith(NOT_ALLOWED)


def test_xclient_in_a_refused_session() -> None:
    out, _ = session(XC_02, ServerConfig(use_xclient=True, refuse_service=True))
    assert out.endswith(b"503 5.5.1 No SMTP service here, only QUIT\r\n")


# --- XFORWARD -------------------------------------------------------------------------------------------


def test_XF_01_accepted() -> None:
    out, events = session(EHLO + XF_01 + XF_01 + b"MAIL FROM:<a@b.test>\r\n", XC)
    assert tail(out) == b"250 2.0.0 OK\r\n" * 2 + b"250 2.1.0 Sender accepted\r\n"
    forwarded = XForward(name="spike.porcupine.org", addr="168.100.189.2", proto="ESMTP")
    assert of_type(events, XForward) == [forwarded, forwarded]


def test_xforward_before_ehlo_does_not_count_as_hello() -> None:
    # [policy]: unlike Node (where XFORWARD HELO= stands in for the greeting), EHLO is still needed.
    out, _ = session(b"XFORWARD HELO=c.test\r\nMAIL FROM:<a@b.test>\r\n", XC)
    assert out == GREETING + b"250 2.0.0 OK\r\n503 5.5.1 Send HELO/EHLO first\r\n"


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"XFORWARD", "Syntax: XFORWARD attribute=value..."),
        (b"XFORWARD FOO=1", "Bad XFORWARD attribute name: FOO"),  # XF-02
        (b"XFORWARD NAME=[TEMPUNAVAIL]", "Bad NAME syntax: [TEMPUNAVAIL]"),  # XF-03
        (b"XFORWARD HELO=a+0Db", "Bad HELO syntax: a?b"),  # XF-07
        (b"XFORWARD SOURCE=X", "Bad SOURCE syntax: X"),
        (b"XFORWARD ADDR=168.100.189.2 FOO=1", "Bad XFORWARD attribute name: FOO"),
    ],
)
def test_XF_02_03_07_bad_attributes(line: bytes, reply: str) -> None:
    out, events = session(EHLO + line + b"\r\n", XC)
    assert tail(out) == f"501 5.5.4 {reply}\r\n".encode()
    assert of_type(events, XForward) == []


def test_XF_06_unauthorised() -> None:
    out, _ = session(EHLO + XF_01, ServerConfig(use_xclient=True))
    assert tail(out) == NOT_ALLOWED
