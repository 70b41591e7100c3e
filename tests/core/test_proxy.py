"""PROXY protocol v1/v2 headers and XCLIENT/XFORWARD arguments (smtpproto._proxy): CONFORMANCE §8 and §9.

PROXY-15 (header timeout), PROXY-17 (no PROXY listener), PROXY-18 (trusted proxies) and XC-01/03/09/10,
XF-04/05/06 are about the connection and its driver, not about parsing, and are tested there.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Literal

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from smtpproto._addresses import xtext_encode
from smtpproto._proxy import (
    MAX_V2_LENGTH,
    V2_SIGNATURE,
    XCLIENT_ATTRIBUTES,
    XFORWARD_ATTRIBUTES,
    ProxyHeader,
    ProxyHeaderError,
    XAttributeError,
    XClient,
    XForward,
    _crc32c,
    parse_xclient,
    parse_xforward,
    read_proxy_header,
)

SMTP = b"EHLO x\r\n"

# --- helpers ------------------------------------------------------------------------------------------


def v2(
    body: bytes = b"",
    tlvs: bytes = b"",
    *,
    ver_cmd: int = 0x21,
    fam: int = 0x11,
    length: int | None = None,
) -> bytes:
    """A v2 header; ``length`` overrides the length field."""
    size = len(body) + len(tlvs) if length is None else length
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + size.to_bytes(2, "big") + body + tlvs


def tlv(kind: int, value: bytes) -> bytes:
    return bytes([kind]) + len(value).to_bytes(2, "big") + value


def inet4(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (
        socket.inet_aton(source)
        + socket.inet_aton(destination)
        + source_port.to_bytes(2, "big")
        + destination_port.to_bytes(2, "big")
    )


def inet6(source: str, destination: str, source_port: int, destination_port: int) -> bytes:
    return (
        ipaddress.IPv6Address(source).packed
        + ipaddress.IPv6Address(destination).packed
        + source_port.to_bytes(2, "big")
        + destination_port.to_bytes(2, "big")
    )


def unix(source: bytes, destination: bytes) -> bytes:
    return source.ljust(108, b"\x00") + destination.ljust(108, b"\x00")


def with_crc(header: bytes) -> bytes:
    """``header`` (whose length field already counts it) followed by a correct CRC32C TLV."""
    blank = header + tlv(0x03, bytes(4))
    return header + tlv(0x03, _crc32c(blank).to_bytes(4, "big"))


def read_whole(data: bytes) -> tuple[ProxyHeader | None, bytearray]:
    buf = bytearray(data)
    return read_proxy_header(buf), buf


def read_all_ways(data: bytes) -> ProxyHeader:
    """Parse ``data`` whole, byte by byte into a growing buffer, and with SMTP bytes after it.

    Every way must give the same header; before the last byte of the header the buffer stays untouched.
    """
    header, buf = read_whole(data)
    assert header is not None
    assert buf == b""
    for trailing in (b"", SMTP):
        buf = bytearray()
        stream = data + trailing
        for index, byte in enumerate(stream):
            buf.append(byte)
            result = read_proxy_header(buf)
            if index < len(data) - 1:
                assert result is None
                assert buf == stream[: index + 1]
            else:
                assert result == header
                assert buf == b""
                buf.extend(stream[index + 1 :])
                break
        assert buf == trailing
    return header


def rejects(data: bytes, **kwargs: int) -> None:
    buf = bytearray(data)
    with pytest.raises(ProxyHeaderError):
        read_proxy_header(buf, **kwargs)
    assert buf == data


def needs_more(data: bytes) -> None:
    buf = bytearray(data)
    assert read_proxy_header(buf) is None
    assert buf == data


# --- PROXY v1 ----------------------------------------------------------------------------------------

V1_TCP4 = b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25\r\n"
FULL_IPV6 = b":".join([b"ffff"] * 8)
V1_WORST = b"PROXY UNKNOWN " + FULL_IPV6 + b" " + FULL_IPV6 + b" 65535 65535\r\n"


def test_proxy_01_v1_tcp4() -> None:
    assert read_all_ways(V1_TCP4) == ProxyHeader(
        version=1,
        command="PROXY",
        family="TCP4",
        source_address="192.0.2.1",
        source_port=4321,
        destination_address="198.51.100.2",
        destination_port=25,
    )


def test_proxy_02_bytes_after_header_stay() -> None:
    header, buf = read_whole(V1_TCP4 + SMTP)
    assert header is not None
    assert header.source_address == "192.0.2.1"
    assert buf == SMTP


def test_proxy_03_v1_tcp6() -> None:
    header = read_all_ways(b"PROXY TCP6 2001:db8::1 2001:DB8:0:0::2 4321 25\r\n")
    assert header.family == "TCP6"
    assert (header.source_address, header.source_port) == ("2001:db8::1", 4321)
    # Addresses come back in ipaddress's normal form.
    assert (header.destination_address, header.destination_port) == ("2001:db8::2", 25)


def test_proxy_03_v1_tcp6_ipv4_mapped() -> None:
    header = read_all_ways(b"PROXY TCP6 ::ffff:192.0.2.1 ::1 0 65535\r\n")
    assert header.source_address == "::ffff:c000:201"
    assert header.destination_port == 65535


@pytest.mark.parametrize(
    "line",
    [b"PROXY UNKNOWN\r\n", V1_WORST, b"PROXY UNKNOWN anything \x00\xff goes here\r\n"],
    ids=["bare", "107-byte worst case", "junk after UNKNOWN"],
)
def test_proxy_04_v1_unknown(line: bytes) -> None:
    assert read_all_ways(line) == ProxyHeader(version=1, command="PROXY", family="UNKNOWN")


def test_proxy_04_worst_case_is_exactly_107_octets() -> None:
    assert len(V1_WORST) == 107


def test_proxy_05_no_crlf_within_107_octets() -> None:
    rejects(b"PROXY UNKNOWN " + b"x" * 200 + b"\r\n")
    # Refused as soon as octet 107 arrives without the CRLF, not later.
    rejects(V1_WORST[:105] + b"xx")
    rejects(V1_WORST[:105] + b"x\r")
    needs_more(V1_WORST[:105] + b"x")
    needs_more(V1_WORST[:106])


@pytest.mark.parametrize(
    "data",
    [
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25\rEHLO x\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25\r\r\n",
        b"PROXY UNKNOWN\n",
        b"PROXY UNKNOWN a\nb\r\n",
        b"PROXY UNKNOWN a\rb\r\n",
    ],
)
def test_proxy_06_bare_cr_or_lf(data: bytes) -> None:
    rejects(data)


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP5 192.0.2.1 198.51.100.2 4321 25\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 25\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 65536\r\n",
        b"PROXY TCP4 192.0.2.01 198.51.100.2 4321 25\r\n",
        b"PROXY TCP4 2001:db8::1 2001:db8::2 4321 25\r\n",
        b"PROXY TCP6 192.0.2.1 198.51.100.2 4321 25\r\n",
        b"PROXY TCP4  192.0.2.1 198.51.100.2 4321 25\r\n",
        b"PROXY TCP4 192.0.2.1  198.51.100.2 4321 25\r\n",
        b"PROXY  TCP4 192.0.2.1 198.51.100.2 4321 25\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25 \r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25 7\r\n",
        b"PROXY TCP4\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 25\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 +4321 25\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 04321 25\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 \r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25x\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 4321 25\r\n",
        b"PROXY TCP4 192.0.2.\xff 198.51.100.2 4321 25\r\n",
        b"PROXY TCP4 256.0.2.1 198.51.100.2 4321 25\r\n",
        b"PROXY tcp4 192.0.2.1 198.51.100.2 4321 25\r\n",
        b"proxy TCP4 192.0.2.1 198.51.100.2 4321 25\r\n",
        b"PROXY UNKNOWNX\r\n",
        b"PROXY UNKNOWN_ 1\r\n",
        b"PROXY\r\n",
        b"PROXY \r\n",
        b"PROXYTCP4 192.0.2.1 198.51.100.2 4321 25\r\n",
    ],
)
def test_proxy_07_v1_bad_fields(line: bytes) -> None:
    rejects(line)


@pytest.mark.parametrize(
    ("prefix", "complete"),
    [
        (b"X", False),
        (b"PROXZ", False),
        (b"PROXY T", True),
        (b"PROXY TCP4", True),
        (b"PROXY TCP5", False),
        (b"PROXY UNK", True),
        (b"PROXY UNKNOWN", True),
        (b"PROXY UNKNOWN stuff", True),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 2", True),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25\r", True),
        (b"PROXY TCP4 192.0.2.01 ", False),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 70000 ", False),
        (b"PROXY TCP4 192.0.2.1 198.51.100.2 4321 25 ", False),
        (b"PROXY TCP4  ", False),
    ],
)
def test_v1_refused_as_soon_as_hopeless(prefix: bytes, complete: bool) -> None:
    """A prefix that can still become a header waits; one that cannot is refused at once."""
    if complete:
        needs_more(prefix)
    else:
        rejects(prefix)


# --- PROXY v2 ----------------------------------------------------------------------------------------

V2_TCP4 = v2(inet4("192.0.2.1", "198.51.100.2", 4321, 25))


def test_proxy_08_v2_tcp4() -> None:
    wire = (
        b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c"
        + socket.inet_aton("192.0.2.1")
        + socket.inet_aton("198.51.100.2")
        + b"\x10\xe1\x00\x19"
    )
    assert wire == V2_TCP4
    assert read_all_ways(V2_TCP4) == ProxyHeader(
        version=2,
        command="PROXY",
        family="TCP4",
        source_address="192.0.2.1",
        source_port=4321,
        destination_address="198.51.100.2",
        destination_port=25,
    )


def test_v2_tcp6_with_tlvs() -> None:
    tlvs = tlv(0x01, b"smtp") + tlv(0x02, b"mx.example") + tlv(0xE0, b"") + tlv(0x20, b"\x01" * 9)
    header = read_all_ways(v2(inet6("2001:db8::1", "2001:db8::2", 65535, 587), tlvs, fam=0x21))
    assert header.family == "TCP6"
    assert (header.source_address, header.source_port) == ("2001:db8::1", 65535)
    assert (header.destination_address, header.destination_port) == ("2001:db8::2", 587)
    assert dict(header.tlvs) == {0x01: b"smtp", 0x02: b"mx.example", 0xE0: b"", 0x20: b"\x01" * 9}
    with pytest.raises(TypeError):
        header.tlvs[0x01] = b"x"  # type: ignore[index]


def test_v2_unix() -> None:
    header = read_all_ways(v2(unix(b"/run/client.sock", b"\x00abstract"), fam=0x31))
    assert header == ProxyHeader(
        version=2,
        command="PROXY",
        family="UNIX",
        source_address="/run/client.sock",
        destination_address="\x00abstract",
    )


@pytest.mark.parametrize(
    ("fam", "body"),
    [
        (0x00, b""),
        (0x00, tlv(0x01, b"h2")),
        (0x12, inet4("192.0.2.1", "198.51.100.2", 53, 53)),
        (0x22, inet6("::1", "::2", 53, 53)),
        (0x32, unix(b"/a", b"/b")),
    ],
    ids=["UNSPEC", "UNSPEC with TLV", "UDP4", "UDP6", "UNIX dgram"],
)
def test_v2_unspec_and_datagram_families_are_unknown(fam: int, body: bytes) -> None:
    """The spec lets a receiver fall back to UNSPEC for valid combinations it does not support."""
    header = read_all_ways(v2(body, fam=fam))
    assert (header.command, header.family, header.source_address, header.source_port) == (
        "PROXY",
        "UNKNOWN",
        None,
        None,
    )
    assert dict(header.tlvs) == ({0x01: b"h2"} if body.startswith(b"\x01") else {})


LOCAL = ProxyHeader(version=2, command="LOCAL", family="UNKNOWN")


@pytest.mark.parametrize(
    "data",
    [
        b"\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00",
        v2(inet4("192.0.2.1", "198.51.100.2", 4321, 25), ver_cmd=0x20, fam=0x11),
        v2(inet4("192.0.2.1", "198.51.100.2", 4321, 25), ver_cmd=0x20, fam=0x00),
        v2(ver_cmd=0x20, fam=0x11),
        v2(b"\x00" * 5, ver_cmd=0x20, fam=0x21),
        v2(b"\x00" * 20, ver_cmd=0x20, fam=0x11),
    ],
    ids=[
        "len 0",
        "TCP4 len 12",
        "UNSPEC with 12 address octets",
        "TCP4 len 0",
        "short block",
        "junk",
    ],
)
def test_proxy_09_v2_local(data: bytes) -> None:
    """LOCAL: the addresses are ignored and ``len`` octets skipped, whatever they hold."""
    assert read_all_ways(data) == LOCAL


def test_proxy_09_v2_local_keeps_well_formed_tlvs() -> None:
    header = read_all_ways(v2(tlv(0x05, b"id-1") + tlv(0x04, b""), ver_cmd=0x20, fam=0x00))
    assert dict(header.tlvs) == {0x05: b"id-1"}
    header = read_all_ways(v2(bytes(12), tlv(0x02, b"sni"), ver_cmd=0x20, fam=0x11))
    assert dict(header.tlvs) == {0x02: b"sni"}
    # Content checks still apply when the TLVs are well formed.
    rejects(v2(tlv(0x05, b"x" * 129), ver_cmd=0x20, fam=0x00))


def test_proxy_10_noop_tlv_skipped() -> None:
    data = v2(inet4("192.0.2.1", "198.51.100.2", 4321, 25), b"\x04\x00\x04abcd")
    assert data[14:16] == b"\x00\x13"
    header = read_all_ways(data)
    assert header.source_address == "192.0.2.1"
    assert dict(header.tlvs) == {}
    # NOOP is padding, so it may repeat.
    assert read_all_ways(v2(bytes(12), tlv(0x04, b"") + tlv(0x04, b"ab"))).tlvs == {}


@pytest.mark.parametrize(
    "data",
    [
        v2(bytes(12), ver_cmd=0x11),
        v2(bytes(12), ver_cmd=0x22),
        v2(bytes(12), ver_cmd=0x31),
        v2(bytes(12), ver_cmd=0x2F),
        v2(bytes(12), fam=0x41),
        v2(bytes(12), fam=0x13),
        v2(bytes(12), fam=0x10),
        v2(bytes(12), fam=0x01),
    ],
    ids=[
        "version 1",
        "command 2",
        "version 3",
        "command 15",
        "family 4",
        "protocol 3",
        "fam 0x10",
        "0x01",
    ],
)
def test_proxy_11_v2_bad_version_command_family(data: bytes) -> None:
    rejects(data)
    # The fixed octets are judged as soon as they arrive.
    rejects(data[:14])


@pytest.mark.parametrize(
    "data",
    [
        v2(bytes(12), b"\x01\x00\x05abc"),
        v2(bytes(12), b"\x01\x00"),
        v2(bytes(12), b"\x01"),
        v2(bytes(12), tlv(0x01, b"a") + b"\x02\x00\x09"),
        v2(bytes(12), tlv(0x01, b"a") + tlv(0x01, b"b")),
        v2(bytes(12), tlv(0x05, b"u" * 129)),
        v2(bytes(12), tlv(0x03, b"\x00\x00\x00\x00")),
        v2(bytes(12), tlv(0x03, b"\x00\x00\x00")),
    ],
    ids=[
        "past len",
        "truncated head",
        "lone type",
        "second past",
        "dup",
        "UNIQUE_ID",
        "crc",
        "crc size",
    ],
)
def test_proxy_12_v2_bad_tlvs(data: bytes) -> None:
    rejects(data)


def test_proxy_12_v2_len_never_satisfied_waits() -> None:
    """A short v2 header waits; the driver's header timeout ends it (PROXY-15)."""
    data = v2(bytes(12), length=100)
    needs_more(data)
    needs_more(data + b"\x01\x00\x10partial")


def test_proxy_12_crc32c() -> None:
    assert _crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    good = with_crc(v2(inet4("192.0.2.1", "198.51.100.2", 4321, 25), length=12 + 7))
    assert read_all_ways(good).tlvs[0x03] == good[-4:]
    rejects(good[:-1] + bytes([good[-1] ^ 1]))
    rejects(good[:20] + b"\x00" + good[21:])  # an address octet changed in transit


def test_proxy_12_unique_id_limit() -> None:
    assert read_all_ways(v2(bytes(12), tlv(0x05, b"u" * 128))).tlvs[0x05] == b"u" * 128


def test_proxy_13_v2_length_cap() -> None:
    rejects(v2(length=65535))
    rejects(v2(length=65535)[:16])
    rejects(v2(length=MAX_V2_LENGTH + 1)[:16])
    needs_more(v2(length=MAX_V2_LENGTH)[:16])
    data = v2(bytes(12), tlv(0xE1, b"c" * (MAX_V2_LENGTH - 15)))
    assert read_all_ways(data).tlvs[0xE1] == b"c" * (MAX_V2_LENGTH - 15)
    rejects(v2(bytes(12), tlv(0xE1, b"c" * 100)), max_v2_length=100)


@pytest.mark.parametrize(
    "data",
    [
        v2(bytes(11)),
        v2(bytes(35), fam=0x21),
        v2(bytes(215), fam=0x31),
        v2(bytes(11), fam=0x12),
        v2(bytes(200), fam=0x32),
    ],
)
def test_v2_address_block_too_short(data: bytes) -> None:
    rejects(data)
    rejects(data[:16])  # known from the length field alone


@pytest.mark.parametrize(
    "data",
    [b"EHLO c.test\r\n", b"E", b"\x00", b"\r\n\r\n\x00\r\nQUIT\r", b"\r\r", b" PROXY UNKNOWN\r\n"],
)
def test_proxy_14_no_header(data: bytes) -> None:
    rejects(data)


@pytest.mark.parametrize("junk", [b"x", b"\r", b"\r\n", b"P", b"\x00", b"EHLO x\r\n"])
@pytest.mark.parametrize("header", [V1_TCP4, V2_TCP4], ids=["v1", "v2"])
def test_random_bytes_before_header(junk: bytes, header: bytes) -> None:
    rejects(junk + header)


def test_proxy_16_one_byte_per_write() -> None:
    """read_all_ways already feeds byte by byte; this also waits on an empty buffer."""
    needs_more(b"")
    for data in (V1_TCP4, V2_TCP4, V1_WORST):
        assert read_all_ways(data).version in (1, 2)


# --- PROXY properties --------------------------------------------------------------------------------

ports = st.integers(min_value=0, max_value=65535)
trailing = st.binary(max_size=20)


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def v1_tcp_lines() -> st.SearchStrategy[tuple[bytes, ProxyHeader]]:
    def build(src: IPAddress, dst: IPAddress, sport: int, dport: int) -> tuple[bytes, ProxyHeader]:
        family: Literal["TCP4", "TCP6"] = "TCP4" if src.version == 4 else "TCP6"
        # Exploded IPv6 too: the parser must normalise whatever valid spelling it gets.
        src_text = src.exploded if sport % 2 else str(src)
        line = f"PROXY {family} {src_text} {dst} {sport} {dport}\r\n".encode()
        header = ProxyHeader(
            version=1,
            command="PROXY",
            family=family,
            source_address=str(src),
            source_port=sport,
            destination_address=str(dst),
            destination_port=dport,
        )
        return line, header

    return st.one_of(
        st.builds(build, st.ip_addresses(v=4), st.ip_addresses(v=4), ports, ports),
        st.builds(build, st.ip_addresses(v=6), st.ip_addresses(v=6), ports, ports),
    )


tlv_maps = st.dictionaries(
    st.integers(min_value=0, max_value=255).filter(lambda kind: kind not in (0x03, 0x04, 0x05)),
    st.binary(max_size=40),
    max_size=5,
)


def raw_tlvs(tlvs: dict[int, bytes]) -> bytes:
    return b"".join(tlv(kind, value) for kind, value in tlvs.items())


def v2_tcp(
    src: IPAddress, dst: IPAddress, sport: int, dport: int, tlvs: dict[int, bytes]
) -> tuple[bytes, ProxyHeader]:
    body = src.packed + dst.packed + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
    family: Literal["TCP4", "TCP6"] = "TCP4" if src.version == 4 else "TCP6"
    header = ProxyHeader(
        version=2,
        command="PROXY",
        family=family,
        source_address=str(src),
        source_port=sport,
        destination_address=str(dst),
        destination_port=dport,
        tlvs=tlvs,
    )
    return v2(body, raw_tlvs(tlvs), fam=0x11 if src.version == 4 else 0x21), header


def v2_unix(src: str, dst: str, tlvs: dict[int, bytes]) -> tuple[bytes, ProxyHeader]:
    header = ProxyHeader(
        version=2,
        command="PROXY",
        family="UNIX",
        source_address=src,
        destination_address=dst,
        tlvs=tlvs,
    )
    return v2(unix(src.encode(), dst.encode()), raw_tlvs(tlvs), fam=0x31), header


def v2_headers() -> st.SearchStrategy[tuple[bytes, ProxyHeader]]:
    paths = st.text(st.characters(min_codepoint=1, max_codepoint=0x7E), min_size=1, max_size=108)
    return st.one_of(
        st.builds(v2_tcp, st.ip_addresses(v=4), st.ip_addresses(v=4), ports, ports, tlv_maps),
        st.builds(v2_tcp, st.ip_addresses(v=6), st.ip_addresses(v=6), ports, ports, tlv_maps),
        st.builds(v2_unix, paths, paths, tlv_maps),
    )


@given(case=st.one_of(v1_tcp_lines(), v2_headers()), trailing=trailing, data=st.data())
def test_well_formed_headers_round_trip_at_any_split(
    case: tuple[bytes, ProxyHeader], trailing: bytes, data: st.DataObject
) -> None:
    raw, expected = case
    stream = raw + trailing
    split = data.draw(st.integers(min_value=0, max_value=len(stream)))
    buf = bytearray(stream[:split])
    if split < len(raw):
        assert read_proxy_header(buf) is None
        assert buf == stream[:split]
    buf.extend(stream[split:])
    assert read_proxy_header(buf) == expected
    assert buf == trailing


arbitrary = st.one_of(
    st.binary(max_size=300),
    st.binary(max_size=120).map(lambda tail: b"PROXY " + tail),
    st.binary(max_size=120).map(lambda tail: V2_SIGNATURE + tail),
    st.binary(max_size=60).map(lambda tail: V2_SIGNATURE + b"\x21\x11\x00" + tail),
    st.binary(max_size=60).map(lambda tail: V2_SIGNATURE + b"\x20\x00\x00" + tail),
)


@given(arbitrary)
def test_arbitrary_bytes_only_raise_proxy_header_error(raw: bytes) -> None:
    buf = bytearray(raw)
    try:
        header = read_proxy_header(buf)
    except ProxyHeaderError:
        assert buf == raw
        return
    if header is None:
        assert buf == raw
        return
    consumed = len(raw) - len(buf)
    assert consumed > 0
    assert raw[consumed:] == buf
    # The header ended exactly there: one octet less is still incomplete.
    assert read_proxy_header(bytearray(raw[: consumed - 1])) is None


# --- XCLIENT -----------------------------------------------------------------------------------------


def test_attribute_lists() -> None:
    assert XCLIENT_ATTRIBUTES[:6] == ("NAME", "ADDR", "PORT", "PROTO", "HELO", "LOGIN")
    assert set(XCLIENT_ATTRIBUTES) == {f.upper() for f in XClient.__slots__}
    assert XFORWARD_ATTRIBUTES == ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
    assert set(XFORWARD_ATTRIBUTES) == {f.upper() for f in XForward.__slots__}


def test_xc_02_xclient_accepted() -> None:
    parsed = parse_xclient(
        "ADDR=192.0.2.1 NAME=[UNAVAILABLE] PORT=4321 HELO=spoof.test LOGIN=[UNAVAILABLE]"
    )
    assert parsed == XClient(
        addr="192.0.2.1",
        name="[UNAVAILABLE]",
        port="4321",
        helo="spoof.test",
        login="[UNAVAILABLE]",
    )


def test_xc_04_no_attributes() -> None:
    for argument in ("", "   "):
        with pytest.raises(XAttributeError) as info:
            parse_xclient(argument)
        assert info.value.reason == "Syntax: XCLIENT attribute=value..."
        assert str(info.value) == info.value.reason


def test_xc_05_unknown_attribute() -> None:
    with pytest.raises(XAttributeError, match=r"^Bad XCLIENT attribute name: FOO$"):
        parse_xclient("FOO=bar")


@pytest.mark.parametrize(
    ("argument", "reason"),
    [
        ("ADDR=notanip", "Bad ADDR syntax: notanip"),
        ("ADDR=[192.0.2.1]", "Bad ADDR syntax: [192.0.2.1]"),
        ("ADDR=2001:db8::1", "Bad ADDR syntax: 2001:db8::1"),
        ("PORT=70000", "Bad PORT syntax: 70000"),
        ("PROTO=FOO", "Bad PROTO syntax: FOO"),
    ],
)
def test_xc_06_bad_values(argument: str, reason: str) -> None:
    with pytest.raises(XAttributeError) as info:
        parse_xclient(argument)
    assert info.value.reason == reason


def test_xc_07_values_decoded_before_validation() -> None:
    with pytest.raises(XAttributeError) as info:
        parse_xclient("NAME=a+20b")
    assert info.value.reason == "Bad NAME syntax: a b"


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        (
            "ADDR=IPV6:2001:db8::1 NAME=[TEMPUNAVAIL]",
            XClient(addr="2001:db8::1", name="[TEMPUNAVAIL]"),
        ),
        (
            "addr=ipv6:2001:DB8:0::1 name=[unavailable]",
            XClient(addr="2001:db8::1", name="[UNAVAILABLE]"),
        ),
        ("Addr=IPv6:::ffff:192.0.2.1", XClient(addr="::ffff:c000:201")),
    ],
)
def test_xc_08_case_insensitive(argument: str, expected: XClient) -> None:
    assert parse_xclient(argument) == expected


def test_xc_11_all_or_nothing() -> None:
    with pytest.raises(XAttributeError, match="FOO"):
        parse_xclient("ADDR=192.0.2.1 FOO=bar")
    with pytest.raises(XAttributeError, match="PORT"):
        parse_xclient("ADDR=192.0.2.1 NAME=ok.test PORT=x")


def test_xc_12_login() -> None:
    assert parse_xclient("LOGIN=bob") == XClient(login="bob")


XCLIENT_ACCEPTED = [
    ("NAME=mail.example.com", XClient(name="mail.example.com")),
    ("NAME=localhost", XClient(name="localhost")),
    ("NAME=host_1.example", XClient(name="host_1.example")),
    ("NAME=123.example", XClient(name="123.example")),
    ("ADDR=0.0.0.0 PORT=0", XClient(addr="0.0.0.0", port="0")),
    ("PORT=65535", XClient(port="65535")),
    ("PORT=00025", XClient(port="25")),
    ("PORT=[TEMPUNAVAIL] ADDR=[UNAVAILABLE]", XClient(port="[TEMPUNAVAIL]", addr="[UNAVAILABLE]")),
    ("PROTO=esmtp", XClient(proto="ESMTP")),
    ("PROTO=SMTP", XClient(proto="SMTP")),
    ("HELO=[192.0.2.1]", XClient(helo="[192.0.2.1]")),
    ("HELO=[tempunavail]", XClient(helo="[TEMPUNAVAIL]")),
    ("LOGIN=bob+40example.com", XClient(login="bob@example.com")),
    ("LOGIN=bob+20smith", XClient(login="bob smith")),
    ("  NAME=a.test   ADDR=192.0.2.1  ", XClient(name="a.test", addr="192.0.2.1")),
    (
        "REVERSE_NAME=r.test DESTADDR=IPV6:::1 DESTPORT=587",
        XClient(reverse_name="r.test", destaddr="::1", destport="587"),
    ),
    ("HELO=" + "h" * 255, XClient(helo="h" * 255)),
]


@pytest.mark.parametrize(("argument", "expected"), XCLIENT_ACCEPTED)
def test_xclient_accepted(argument: str, expected: XClient) -> None:
    assert parse_xclient(argument) == expected


XCLIENT_REFUSED = [
    ("NAME", "Bad XCLIENT attribute syntax: NAME"),
    ("FOO", "Bad XCLIENT attribute name: FOO"),
    ("=x", "Bad XCLIENT attribute name: "),
    ("NAME=a.test name=b.test", "Duplicate XCLIENT attribute: NAME"),
    ("NAME=", "Bad NAME syntax: "),
    ("NAME=a+2", "Bad NAME syntax: a+2"),
    ("NAME=a+2b", "Bad NAME syntax: a+2b"),
    ("NAME=caf\u00e9.test", "Bad NAME syntax: caf?.test"),
    ("NAME=192.0.2.1", "Bad NAME syntax: 192.0.2.1"),
    ("NAME=[192.0.2.1]", "Bad NAME syntax: [192.0.2.1]"),
    ("NAME=-a.test", "Bad NAME syntax: -a.test"),
    ("ADDR=192.0.2.01", "Bad ADDR syntax: 192.0.2.01"),
    ("ADDR=IPV6:fe80::1+25eth0", "Bad ADDR syntax: IPV6:fe80::1%eth0"),
    ("ADDR=IPV6:192.0.2.1", "Bad ADDR syntax: IPV6:192.0.2.1"),
    ("ADDR=", "Bad ADDR syntax: "),
    ("PORT=", "Bad PORT syntax: "),
    ("PORT=-1", "Bad PORT syntax: -1"),
    ("PORT=+2B25", "Bad PORT syntax: +25"),
    ("PORT=123456", "Bad PORT syntax: 123456"),
    ("PORT=\u0663", "Bad PORT syntax: ?"),
    ("PROTO=[UNAVAILABLE]", "Bad PROTO syntax: [UNAVAILABLE]"),
    ("PROTO=LMTP", "Bad PROTO syntax: LMTP"),
    ("HELO=a<b", "Bad HELO syntax: a<b"),
    ("HELO=a+20b", "Bad HELO syntax: a b"),
    ("HELO=a+0D+0AMAIL", "Bad HELO syntax: a??MAIL"),
    ("HELO=" + "h" * 256, "Bad HELO syntax: " + "h" * 64 + "..."),
    ("LOGIN=", "Bad LOGIN syntax: "),
    ("LOGIN=a+00b", "Bad LOGIN syntax: a?b"),
    ("LOGIN=a+7Fb", "Bad LOGIN syntax: a?b"),
    ("IDENT=x", "Bad XCLIENT attribute name: IDENT"),
    ("\u017fOURCE=LOCAL", "Bad XCLIENT attribute name: ?OURCE"),
    ("NAME=ok.test\x00", "Bad NAME syntax: ok.test?"),
]


@pytest.mark.parametrize(("argument", "reason"), XCLIENT_REFUSED)
def test_xclient_refused(argument: str, reason: str) -> None:
    with pytest.raises(XAttributeError) as info:
        parse_xclient(argument)
    assert info.value.reason == reason
    assert "\r" not in reason
    assert "\n" not in reason


# --- XFORWARD ----------------------------------------------------------------------------------------


def test_xf_01_xforward_accepted() -> None:
    assert parse_xforward("NAME=spike.porcupine.org ADDR=168.100.189.2 PROTO=ESMTP") == XForward(
        name="spike.porcupine.org", addr="168.100.189.2", proto="ESMTP"
    )


def test_xf_02_unknown_attribute() -> None:
    with pytest.raises(XAttributeError) as info:
        parse_xforward("FOO=1")
    assert info.value.reason == "Bad XFORWARD attribute name: FOO"


def test_xf_03_no_tempunavail() -> None:
    with pytest.raises(XAttributeError) as info:
        parse_xforward("NAME=[TEMPUNAVAIL]")
    assert info.value.reason == "Bad NAME syntax: [TEMPUNAVAIL]"


def test_xf_07_decoded_control_character() -> None:
    with pytest.raises(XAttributeError) as info:
        parse_xforward("HELO=a+0Db")
    assert info.value.reason == "Bad HELO syntax: a?b"


XFORWARD_ACCEPTED = [
    ("PROTO=ESMTPSA", XForward(proto="ESMTPSA")),
    ("PROTO=qmqp", XForward(proto="qmqp")),
    ("PROTO=" + "P" * 64, XForward(proto="P" * 64)),
    ("SOURCE=local", XForward(source="LOCAL")),
    ("SOURCE=REMOTE IDENT=4ZxYq51234", XForward(source="REMOTE", ident="4ZxYq51234")),
    ("HELO=[IPv6:2001:db8::1]", XForward(helo="[IPv6:2001:db8::1]")),
    ("ADDR=IPV6:2001:db8::1 PORT=25", XForward(addr="2001:db8::1", port="25")),
    (
        " ".join(f"{name}=[UNAVAILABLE]" for name in XFORWARD_ATTRIBUTES).replace(
            "NAME=[UN", "NAME=[un"
        ),
        XForward(**{name.lower(): "[UNAVAILABLE]" for name in XFORWARD_ATTRIBUTES}),
    ),
]


@pytest.mark.parametrize(("argument", "expected"), XFORWARD_ACCEPTED)
def test_xforward_accepted(argument: str, expected: XForward) -> None:
    assert parse_xforward(argument) == expected


XFORWARD_REFUSED = [
    ("", "Syntax: XFORWARD attribute=value..."),
    ("LOGIN=bob", "Bad XFORWARD attribute name: LOGIN"),
    ("NAME=a.test NAME=a.test", "Duplicate XFORWARD attribute: NAME"),
    ("SOURCE", "Bad XFORWARD attribute syntax: SOURCE"),
    ("ADDR=[TEMPUNAVAIL]", "Bad ADDR syntax: [TEMPUNAVAIL]"),
    ("PORT=[TEMPUNAVAIL]", "Bad PORT syntax: [TEMPUNAVAIL]"),
    ("ADDR=2001:db8::1", "Bad ADDR syntax: 2001:db8::1"),
    ("SOURCE=INTERNAL", "Bad SOURCE syntax: INTERNAL"),
    ("PROTO=" + "P" * 65, "Bad PROTO syntax: " + "P" * 64 + "..."),
    ("PROTO=E+20SMTP", "Bad PROTO syntax: E SMTP"),
    ("IDENT=a(b)", "Bad IDENT syntax: a(b)"),
    ("IDENT=a+22b", 'Bad IDENT syntax: a"b'),
    ("IDENT=a@b", "Bad IDENT syntax: a@b"),
    ("IDENT=a;b", "Bad IDENT syntax: a;b"),
    ("IDENT=a+5Cb", "Bad IDENT syntax: a\\b"),
    ("HELO=a+09b", "Bad HELO syntax: a?b"),
    ("HELO=", "Bad HELO syntax: "),
    ("NAME=a..test", "Bad NAME syntax: a..test"),
    ("NAME=123.45", "Bad NAME syntax: 123.45"),
]


@pytest.mark.parametrize(("argument", "reason"), XFORWARD_REFUSED)
def test_xforward_refused(argument: str, reason: str) -> None:
    with pytest.raises(XAttributeError) as info:
        parse_xforward(argument)
    assert info.value.reason == reason


printable = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)


@given(ident=printable)
@example(ident="[TEMPUNAVAIL]")  # special in XCLIENT only: in XFORWARD's free text it is just text
@example(ident="[unavailable]")
def test_xforward_ident_round_trips_xtext(ident: str) -> None:
    argument = f"IDENT={xtext_encode(ident)}"
    if set(ident) & set('<>()\\";@'):
        with pytest.raises(XAttributeError, match=r"^Bad IDENT syntax: "):
            parse_xforward(argument)
    else:
        special = ident.upper() == "[UNAVAILABLE]"
        assert parse_xforward(argument).ident == (ident.upper() if special else ident)


@given(argument=st.text(max_size=80))
def test_arbitrary_arguments_only_raise_x_attribute_error(argument: str) -> None:
    for parse in (parse_xclient, parse_xforward):
        try:
            parse(argument)
        except XAttributeError as error:
            reason = error.reason
        else:
            continue
        assert reason.isprintable()
        assert reason.isascii()


@given(st.one_of(arbitrary, st.one_of(v1_tcp_lines(), v2_headers()).map(lambda case: case[0])))
def test_verdict_never_changes_as_bytes_arrive(raw: bytes) -> None:
    """Once a prefix is refused every longer one is; once a header is complete it stays the same."""
    verdict: ProxyHeader | type[ProxyHeaderError] | None = None
    for end in range(len(raw) + 1):
        try:
            result: ProxyHeader | type[ProxyHeaderError] | None = read_proxy_header(
                bytearray(raw[:end])
            )
        except ProxyHeaderError:
            result = ProxyHeaderError
        assert verdict is None or result == verdict
        verdict = result
