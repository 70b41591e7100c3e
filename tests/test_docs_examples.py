"""The code shown in the documentation runs and does what the text around it says.

* docs/driver.md: the complete blocking-socket driver serves real clients on loopback sockets (plain,
  STARTTLS, PROXY header, idle timeout, run as a script), and the recipe's snippets are lines of it.
* docs/tutorial.md: the REPL session is run as a doctest.
* README.md is checked in tests/cli/test_readme.py (its set-up commands, example and links).
* docs/api.md: every name in ``smtpproto.__all__`` has its autodoc entry, once.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import doctest
import io
import ipaddress
import os
import re
import runpy
import select
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import smtpproto

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Seconds any one network step of a test may take before the test fails instead of hanging.
TIMEOUT = 10.0

MESSAGE = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: docs\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line that starts with a dot\r\n"
    b"bye\r\n"
)


def code_blocks(path: Path, language: str) -> list[str]:
    """The bodies of the fenced code blocks of ``language`` in a Markdown file, in order."""
    text = path.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```\n", text, flags=re.DOTALL | re.MULTILINE)


def driver_example() -> str:
    """The complete example of docs/driver.md: the one python block that defines serve()."""
    blocks = [block for block in code_blocks(DOCS / "driver.md", "python") if "def serve(" in block]
    assert len(blocks) == 1, "docs/driver.md must hold exactly one complete example"
    return blocks[0]


def run_code(code: str, directory: Path, name: str) -> dict[str, Any]:
    """Run ``code`` as a module named ``name`` (so not as __main__); return its globals."""
    path = directory / f"{name}.py"
    path.write_text(code, encoding="utf-8")
    return runpy.run_path(str(path), run_name=name)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., None]:
    namespace = run_code(driver_example(), tmp_path_factory.mktemp("driver"), "driver_example")
    return namespace["serve"]  # type: ignore[no-any-return]


@dataclass
class Served:
    """One connection served by the example's serve() in a thread, and what it delivered."""

    port: int
    delivered: list[tuple[str, str, list[str], bytes]] = field(default_factory=list)


@contextlib.contextmanager
def served(serve: Callable[..., None], **options: Any) -> Iterator[Served]:
    """Accept one loopback connection and run ``serve(sock, deliver, **options)`` on it in a thread.

    On exit serve() must have returned within TIMEOUT (the session is over and its socket closed); an
    exception it raised is raised here. The idle timeout defaults to TIMEOUT, so no session outlives a test
    for long even when the test fails half-way.
    """
    options.setdefault("idle", TIMEOUT)
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            listener.settimeout(TIMEOUT)
            result = Served(port=listener.getsockname()[1])

            def deliver(peer: str, sender: str, recipients: list[str], message: bytes) -> None:
                result.delivered.append((peer, sender, list(recipients), message))

            def accept_and_serve() -> None:
                sock, _ = listener.accept()
                serve(sock, deliver, **options)

            future = pool.submit(accept_and_serve)
            yield result
            future.result(TIMEOUT)  # serve()'s own exception, or TimeoutError if it does not return
    finally:
        pool.shutdown(wait=False)


class RawClient:
    """A line-level SMTP client on a plain socket, for what smtplib cannot send."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")

    def reply(self) -> tuple[int, list[str]]:
        """One whole (possibly multi-line) reply: its code and its lines' text."""
        lines = []
        while True:
            line = self.file.readline()
            assert line.endswith(b"\r\n"), f"connection closed inside a reply: {line!r}"
            lines.append(line[4:-2].decode())
            if line[3:4] == b" ":
                return int(line[:3]), lines

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def at_eof(self) -> bool:
        return self.file.read() == b""

    def start_tls(self, context: ssl.SSLContext) -> None:
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname="mx.example")
        self.file = self.sock.makefile("rb")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- docs/driver.md -----------------------------------------------------------------------------------------


def test_driver_snippets_are_lines_of_the_complete_example() -> None:
    example = {line.strip() for line in driver_example().splitlines()}
    snippets = [
        block for block in code_blocks(DOCS / "driver.md", "python") if "def serve(" not in block
    ]
    assert len(snippets) >= 7, "one snippet per step of the recipe"
    for snippet in snippets:
        for line in snippet.splitlines():
            assert not line.strip() or line.strip() in example, (
                f"not in the complete example: {line!r}"
            )


def test_driver_delivers_a_message(serve: Callable[..., None]) -> None:
    with (
        served(serve) as session,
        smtplib.SMTP("127.0.0.1", session.port, timeout=TIMEOUT) as client,
    ):
        assert client.ehlo()[0] == 250
        assert client.mail("alice@example.org")[0] == 250
        assert client.rcpt("bob@example.net")[0] == 250
        assert client.rcpt("carol@example.net")[0] == 250
        assert client.data(MESSAGE) == (250, b"2.0.0 Queued")
        assert client.verify("bob")[0] == 252
    assert session.delivered == [
        ("127.0.0.1", "alice@example.org", ["bob@example.net", "carol@example.net"], MESSAGE)
    ]


def test_driver_pipelined_session_gets_its_replies_in_order(serve: Callable[..., None]) -> None:
    with served(serve) as session:
        client = RawClient(session.port)
        try:
            assert client.reply() == (220, ["mx.example ESMTP"])
            client.send(
                b"EHLO client.example\r\nMAIL FROM:<>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"
            )
            assert client.reply()[0] == 250
            assert client.reply() == (250, ["2.1.0 Sender accepted"])
            assert client.reply() == (250, ["2.1.5 Recipient accepted"])
            assert client.reply()[0] == 354
            client.send(b"Hi\r\n.\r\nQUIT\r\n")
            assert client.reply() == (250, ["2.0.0 Queued"])
            assert client.reply()[0] == 221
            assert client.at_eof()
        finally:
            client.close()
    assert session.delivered == [("127.0.0.1", "", ["bob@example.net"], b"Hi\r\n")]


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for mx.example and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mx.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("mx.example"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "mx.example.crt", directory / "mx.example.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def tls_contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context that trusts exactly the server's certificate)."""
    cert_path, key_path = make_certificate(tmp_path)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def test_driver_starttls(
    serve: Callable[..., None], tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls_contexts
    with (
        served(serve, tls=server_context) as session,
        smtplib.SMTP("127.0.0.1", session.port, timeout=TIMEOUT) as client,
    ):
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.starttls(context=client_context)[0] == 220
        assert isinstance(client.sock, ssl.SSLSocket)
        client.ehlo()
        assert not client.has_extn("starttls")  # the session started over, inside TLS
        # AUTH is offered inside TLS; the example refuses every decision it does not know.
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.login("alice", "secret")
        assert refused.value.smtp_code == 535
        client.sendmail("alice@example.org", ["bob@example.net"], MESSAGE)
    assert session.delivered == [("127.0.0.1", "alice@example.org", ["bob@example.net"], MESSAGE)]


def test_driver_starttls_never_runs_plaintext_pipelined_behind_it(
    serve: Callable[..., None], tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    server_context, client_context = tls_contexts
    with served(serve, tls=server_context) as session:
        client = RawClient(session.port)
        try:
            assert client.reply()[0] == 220
            # An attacker in the middle appends a command to the client's STARTTLS (CVE-2011-0411).
            client.send(b"EHLO client.example\r\nSTARTTLS\r\nMAIL FROM:<mallory@example.org>\r\n")
            assert client.reply()[0] == 250
            assert client.reply() == (220, ["2.0.0 Ready to start TLS"])
            client.start_tls(client_context)
            client.send(b"EHLO client.example\r\n")
            assert client.reply()[0] == 250
            client.send(b"RCPT TO:<bob@example.net>\r\n")
            assert client.reply() == (503, ["5.5.1 Need MAIL command"])  # MAIL never ran
            client.send(b"QUIT\r\n")
            assert client.reply()[0] == 221
        finally:
            client.close()
    assert session.delivered == []


def test_driver_proxy_header_carries_the_bytes_behind_it(serve: Callable[..., None]) -> None:
    with served(serve, proxy=True) as session:
        client = RawClient(session.port)
        try:
            # Header and the first command in one write: the command must not be lost.
            client.send(b"PROXY TCP4 192.0.2.1 198.51.100.1 40000 25\r\nEHLO client.example\r\n")
            assert client.reply() == (220, ["mx.example ESMTP"])
            assert client.reply()[0] == 250
            client.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
            assert [client.reply()[0] for _ in range(3)] == [250, 250, 354]
            client.send(b"Hi\r\n.\r\nQUIT\r\n")
            assert [client.reply()[0] for _ in range(2)] == [250, 221]
        finally:
            client.close()
    assert session.delivered == [("192.0.2.1", "a@example.org", ["b@example.net"], b"Hi\r\n")]


def test_driver_bad_proxy_header_closes_without_a_word(serve: Callable[..., None]) -> None:
    with served(serve, proxy=True) as session:
        client = RawClient(session.port)
        try:
            client.send(b"EHLO client.example\r\n")
            assert client.at_eof()
        finally:
            client.close()
    assert session.delivered == []


def test_driver_idle_timeout_says_421_and_closes(serve: Callable[..., None]) -> None:
    with served(serve, idle=0.2) as session:
        client = RawClient(session.port)
        try:
            assert client.reply()[0] == 220
            client.send(b"EHLO client.example\r\nMAIL FROM:<a@example.org>\r\n")
            assert client.reply()[0] == 250
            assert client.reply()[0] == 250
            started = time.monotonic()
            assert client.reply() == (421, ["4.4.2 mx.example Timeout"])
            assert time.monotonic() - started < TIMEOUT / 2
            assert client.at_eof()
        finally:
            client.close()
    assert session.delivered == []


def unused_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range.

    Outside that range a connection attempt made while the server is still starting can never connect to
    itself (a TCP simultaneous open onto its own source port), which would hang waiting for a greeting.
    """
    low = 32768
    with contextlib.suppress(OSError, ValueError, IndexError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    first = low - 1 - os.getpid() % 4096  # concurrent test runs start at different ports
    for port in range(first, max(first - 256, 1024), -1):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port below the ephemeral range")


def test_driver_runs_as_a_script(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(driver_example(), encoding="utf-8")
    port = unused_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with subprocess.Popen(
        [sys.executable, str(script), str(port)], stdout=subprocess.PIPE, env=env
    ) as server:
        try:
            with smtplib.SMTP(timeout=TIMEOUT) as client:
                deadline = time.monotonic() + TIMEOUT
                while True:  # until the script listens
                    try:
                        greeting = client.connect("127.0.0.1", port)
                        break
                    except ConnectionRefusedError:
                        assert server.poll() is None, "the script exited"
                        assert time.monotonic() < deadline, "the script never listened"
                        time.sleep(0.05)
                assert greeting == (220, b"mx.example ESMTP")
                client.sendmail("alice@example.org", ["bob@example.net"], MESSAGE)
            assert server.stdout is not None
            ready, _, _ = select.select([server.stdout], [], [], TIMEOUT)
            assert ready, "the script printed nothing"
            line = server.stdout.readline().decode()
        finally:
            server.kill()
    assert line == f"127.0.0.1: <alice@example.org> -> bob@example.net: {len(MESSAGE)} octets\n"


# -- docs/tutorial.md ---------------------------------------------------------------------------------------


def test_tutorial_session_is_real() -> None:
    blocks = code_blocks(DOCS / "tutorial.md", "pycon")
    parser = doctest.DocTestParser()
    test = parser.get_doctest("\n".join(blocks), {}, "tutorial", str(DOCS / "tutorial.md"), 0)
    assert len(test.examples) >= 30, "the tutorial's REPL session was not found"
    # The printed replies end in CRLF, which a terminal shows as the page does; "..." on the page stands
    # for text it leaves out (the rest of an error message).
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    report = io.StringIO()
    result = runner.run(test, out=report.write)
    assert result.failed == 0, report.getvalue()


# -- docs/api.md --------------------------------------------------------------------------------------------


def test_api_page_documents_every_public_name() -> None:
    text = (DOCS / "api.md").read_text(encoding="utf-8")
    documented = re.findall(
        r"^\.\. (?:auto)?(?:class|exception|data|function):: (?:smtpproto\.)?(\w+)$",
        text,
        re.MULTILINE,
    )
    assert len(documented) == len(set(documented)), "a name is documented twice"
    assert sorted(documented) == sorted(smtpproto.__all__)
