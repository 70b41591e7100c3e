"""A PROXY header in front of implicit TLS (``use_proxy`` with ``secure``), as HAProxy sends it to port 465.

The header comes in plaintext and the TLS handshake right after it. The clients here put the header and
the ClientHello into one write, so the server's first read holds both: the driver must take exactly the
header off the connection and leave every octet of the ClientHello to the handshake.
"""

from __future__ import annotations

import ipaddress
import random
import select
import smtplib
import struct
import time

import pytest

import smtpproto
from smtpproto_adapters._proxy_tls import receive_proxy_header, safe_read_size
from smtpproto_adapters._transport import drive

from .clients import MemoryTLSClient, RawClient, client_hello, unverified_context, wait_until
from .conftest import Recorder

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
BODY = b"Subject: proxied\r\n\r\nover TLS\r\n"


def v1(
    source: str = "198.51.100.22",
    destination: str = "203.0.113.7",
    ports: tuple[int, int] = (35646, 465),
) -> bytes:
    family = "TCP4" if ipaddress.ip_address(source).version == 4 else "TCP6"
    return f"PROXY {family} {source} {destination} {ports[0]} {ports[1]}\r\n".encode()


def v2(
    source: str,
    destination: str,
    ports: tuple[int, int],
    tlvs: tuple[tuple[int, bytes], ...] = (),
    command: int = 0x21,
) -> bytes:
    """A v2 header for TCP over IPv4 or IPv6 (``command`` 0x20 is LOCAL), with TLVs after the addresses."""
    src, dst = ipaddress.ip_address(source), ipaddress.ip_address(destination)
    family = 0x11 if src.version == 4 else 0x21
    body = src.packed + dst.packed + struct.pack("!HH", *ports)
    for kind, value in tlvs:
        body += struct.pack("!BH", kind, len(value)) + value
    return V2_SIGNATURE + bytes([command, family]) + struct.pack("!H", len(body)) + body


# name -> (header, the client address the session must see (None: the real peer), its port)
HEADERS = {
    "v1": (v1(), "198.51.100.22", 35646),
    "v2": (
        v2("2001:db8::7", "2001:db8::1", (50123, 465), tlvs=((0x02, b"mx.test"),)),
        "2001:db8::7",
        50123,
    ),
    "v1-unknown": (b"PROXY UNKNOWN\r\n", None, None),
    "v2-local": (v2("192.0.2.1", "192.0.2.2", (1, 2), command=0x20), None, None),
}


def _send_message(client: RawClient) -> None:
    client.expect("EHLO c.test", 250)
    client.expect("MAIL FROM:<a@b.test>", 250)
    client.expect("RCPT TO:<x@y.test>", 250)
    client.expect("DATA", 354)
    client.send(BODY + b".\r\n")
    assert client.reply()[0] == 250
    client.expect("QUIT", 221)


@pytest.mark.parametrize("kind", list(HEADERS))
def test_header_and_client_hello_in_one_write(start_server, kind: str) -> None:
    header, address, port = HEADERS[kind]
    rec = Recorder()
    server = start_server(rec, secure=True, use_proxy=True)
    client = MemoryTLSClient(server.port, header)
    assert client.reply()[0] == 220
    _send_message(client)
    client.close()
    rec.wait_closed()
    [stored] = rec.stored
    assert (stored.body, stored.transmission_type) == (BODY, "ESMTPS")
    assert [name for name, _ in rec.calls][:2] == ["on_connect", "on_secure"]
    [(session,)] = rec.called("on_connect")
    assert session.secure
    assert session.proxy is not None
    assert session.proxy.version == (2 if kind.startswith("v2") else 1)
    if address is None:  # health checks: the balancer's own address stays
        assert session.remote_address == "127.0.0.1"
    else:
        assert (session.remote_address, session.remote_port) == (address, port)
        assert session.client_hostname == f"[{address}]"
    if kind == "v2":
        assert dict(session.proxy.tlvs) == {0x02: b"mx.test"}
    stats = server.statistics()
    assert (stats.tls_failures, stats.errors) == (0, 0)


@pytest.mark.parametrize(
    "prefix",
    [
        b"",  # a TLS client connecting straight to the port: its ClientHello is no header
        b"PROXY TCP4 198.51.100.400 203.0.113.7 1 2\r\n",
        V2_SIGNATURE + b"\x21\x11\xff\xff",  # announces 64 KiB: refused before any of it is read
        b"PROXY TCP4 198.51.100.22 203.0.113.7 1 2\n",  # bare LF
    ],
    ids=["no-header", "bad-v1-address", "oversized-v2", "bare-lf"],
)
def test_bad_header_closes_without_a_word(start_server, prefix: bytes) -> None:
    rec = Recorder()
    server = start_server(rec, secure=True, use_proxy=True)
    client = RawClient(server.port)
    client.send(prefix + client_hello())
    assert client.rest() == b""
    client.close()
    wait_until(lambda: server.statistics().connections_active == 0)
    assert rec.calls == []
    assert server.statistics().tls_failures == 0  # no handshake was even tried


def test_stalled_header_is_closed_after_socket_timeout(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, secure=True, use_proxy=True, socket_timeout=0.5)
    client = RawClient(server.port)
    start = time.monotonic()
    client.send(b"PROXY TCP4 198.51.100.22 ")
    assert client.rest() == b""
    assert 0.4 <= time.monotonic() - start < 5.0
    client.close()
    assert rec.calls == []


def test_trickled_header_gets_socket_timeout_in_all(start_server) -> None:
    # One octet every 0.1 s never lets a single read wait long, yet the whole header must be in within
    # socket_timeout: the 47 octets would take 4.7 s.
    server = start_server(Recorder(), secure=True, use_proxy=True, socket_timeout=1.0)
    client = RawClient(server.port)
    start = time.monotonic()
    for octet in v1():
        if select.select([client.sock], [], [], 0)[0]:  # EOF (or a reset): the server gave up
            break
        try:
            client.send(bytes([octet]))
        except OSError:
            break
        time.sleep(0.1)
    assert client.rest() == b""
    assert 0.9 <= time.monotonic() - start < 3.5
    client.close()


def test_close_ends_a_session_waiting_for_its_header(start_server) -> None:
    server = start_server(Recorder(), secure=True, use_proxy=True, close_timeout=0.2)
    client = RawClient(server.port)
    client.send(b"PROXY TCP4 ")
    wait_until(lambda: server.statistics().connections_active == 1)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 3.0  # not socket_timeout (10 s), nor the 5 s hook grace
    assert client.rest() == b""
    client.close()


def test_only_listed_peers_send_a_header(start_server) -> None:
    rec = Recorder()
    server = start_server(rec, secure=True, use_proxy=["10.9.9.9"])
    with smtplib.SMTP_SSL("127.0.0.1", server.port, context=unverified_context()) as client:
        assert client.sendmail("a@b.test", ["x@y.test"], BODY) == {}
    rec.wait_closed()
    [(session,)] = rec.called("on_connect")
    assert (session.remote_address, session.proxy) == ("127.0.0.1", None)
    listed = start_server(rec, secure=True, use_proxy=["127.0.0.1"])
    client = MemoryTLSClient(listed.port, v1())
    assert client.reply()[0] == 220
    _send_message(client)
    client.close()
    rec.wait_closed(2)
    assert rec.closed[1].remote_address == "198.51.100.22"


# -- reading a header and not one octet more (no server needed) ---------------------------------------

TAIL = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"  # how a ClientHello begins


def _read(stream: bytes, most: int | None = None) -> tuple[smtpproto.ProxyHeader, bytes, int]:
    """Read a header from ``stream``, each read getting at most ``most`` octets: (header, rest, reads)."""
    position = reads = 0

    async def receive(max_bytes: int, timeout: float | None) -> bytes:
        nonlocal position, reads
        reads += 1
        take = max_bytes if most is None else min(max_bytes, most)
        chunk = stream[position : position + take]
        position += len(chunk)
        return chunk

    header = drive(receive_proxy_header(receive, 5.0))
    return header, stream[position:], reads


def _valid_headers() -> list[bytes]:
    """Headers of every shape, the shortest and longest of each, and a few hundred random ones."""
    rng = random.Random(2033)
    longest6 = ":".join(["ffff"] * 8)
    headers = [
        b"PROXY UNKNOWN\r\n",
        f"PROXY UNKNOWN {longest6} {longest6} 65535 65535\r\n".encode(),  # 107 octets, the limit
        v1("0.0.0.0", "0.0.0.0", (0, 0)),
        v1("255.255.255.255", "255.255.255.255", (65535, 65535)),
        v1("::", "::", (0, 0)),
        v1(longest6, longest6, (65535, 65535)),
        v2("192.0.2.1", "192.0.2.2", (1, 2)),
        v2("2001:db8::1", "::", (0, 25), tlvs=((0x05, b"u" * 128), (0x04, b""))),
        v2("192.0.2.1", "192.0.2.2", (1, 2), command=0x20),
        V2_SIGNATURE + b"\x20\x00\x00\x00",  # LOCAL, no addresses at all
        V2_SIGNATURE + b"\x21\x31\x00\xd8" + b"/run/a.sock".ljust(108, b"\0") + bytes(108),
    ]
    for _ in range(300):
        bits = rng.choice([32, 128])
        make = ipaddress.IPv4Address if bits == 32 else ipaddress.IPv6Address
        # Biased towards short text: many zero groups, small octets, short ports.
        source, destination = (
            str(make(rng.getrandbits(bits) & rng.getrandbits(bits))) for _ in range(2)
        )
        ports = (rng.choice([0, 7, 80, rng.randrange(65536)]), rng.randrange(65536))
        headers.append(
            v1(source, destination, ports) if rng.random() < 0.5 else v2(source, destination, ports)
        )
    return headers


@pytest.mark.parametrize("most", [None, 1, 3], ids=["whole-reads", "one-octet-reads", "3-octet"])
def test_no_read_reaches_past_the_header(most: int | None) -> None:
    for header in _valid_headers():
        got, rest, _ = _read(header + TAIL, most)
        assert rest == TAIL, header
        assert got == smtpproto.read_proxy_header(bytearray(header))


def test_a_header_takes_few_reads() -> None:
    assert _read(v1() + TAIL)[2] <= 6  # not one read per octet
    assert _read(HEADERS["v2"][0] + TAIL)[2] == 3  # 15, the 16th, then exactly the announced rest


def test_safe_read_size_never_passes_a_crlf_still_to_come() -> None:
    assert safe_read_size(b"") == 15
    assert safe_read_size(b"PROXY UNKNOWN\r") == 1
    assert safe_read_size(b"PROXY UNKNOWN x") == 2
    assert safe_read_size(b"PROXY TCP4 1.2.3.4 5.6.7.8 9 1\r") == 1
    # After "PROXY TCP4 198.": the rest of an address (3), " 0.0.0.0", " 0", " 0" and CRLF.
    assert safe_read_size(b"PROXY TCP4 198.") == 3 + 8 + 2 + 2 + 2
    assert safe_read_size(V2_SIGNATURE + b"\x21\x11\x00\x0c") == 12


def test_connection_ending_inside_the_header_is_a_header_error() -> None:
    with pytest.raises(smtpproto.ProxyHeaderError, match="closed before"):
        _read(b"PROXY TCP4 1.2.3.4 ")
