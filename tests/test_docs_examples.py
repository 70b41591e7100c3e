"""The code shown in the documentation runs and does what the text around it says.

* docs/driver.md: the complete blocking-socket driver serves real clients on loopback sockets (plain,
  STARTTLS, PROXY header, idle timeout, run as a script), and the recipe's snippets are lines of it.
* docs/tutorial.md: the REPL session is run as a doctest; every ``smtpproto serve`` command on the page
  is accepted, and each swaks transcript against the sink is replayed with swaks against a real
  ``smtpproto serve`` (the page's server replies must all come, in order); the sink's output line and
  Received header have the page's shape; the handler, LMTP and TLS/AUTH examples run on loopback, driven
  by the page's own client scripts (and swaks), and print exactly what the page shows; the certificate
  comes from the page's openssl command and the users file from the page's ``cat users``.
* docs/tls.md: the core session is a doctest; the STARTTLS + implicit TLS listeners, the SNI example,
  certificate renewal on a live context, client certificates, and the self-signed warnings are real.
* docs/adapters.md: the Node smtp-server table names every Node option.
* README.md is checked in tests/cli/test_readme.py (its set-up commands, example and links).
* docs/api.md: every name in ``smtpproto.__all__`` has its autodoc entry, once.
"""

from __future__ import annotations

import asyncio
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
import shlex
import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
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

    def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None = "mx.example"
    ) -> None:
        self.file.close()
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)
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


def make_certificate(directory: Path, hostname: str = "mx.example") -> tuple[Path, Path]:
    """A self-signed certificate for ``hostname`` and 127.0.0.1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
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
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{hostname}.crt", directory / f"{hostname}.key"
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


# -- running the servers of the docs' examples --------------------------------------------------------------


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """Every top-level fenced code block of a Markdown file, in order: (language, body)."""
    text = path.read_text(encoding="utf-8")
    return re.findall(r"^```(\w*)\n(.*?)^```\n", text, flags=re.DOTALL | re.MULTILINE)


def the_block(path: Path, language: str, *needles: str) -> str:
    """The one ``language`` block of ``path`` that contains every needle."""
    found = [
        body
        for lang, body in fenced_blocks(path)
        if lang == language and all(n in body for n in needles)
    ]
    assert len(found) == 1, f"{path.name}: {len(found)} {language} blocks contain {needles}"
    return found[0]


def block_after(path: Path, language: str, anchor: str) -> str:
    """The first ``language`` block after the block whose body is ``anchor``."""
    blocks = fenced_blocks(path)
    index = [body for _, body in blocks].index(anchor)
    return next(body for lang, body in blocks[index + 1 :] if lang == language)


def console_commands(path: Path) -> list[tuple[str, list[str]]]:
    """The ``$ command`` lines of a page's console blocks, in order, each with the output shown under it."""
    commands: list[tuple[str, list[str]]] = []
    for lang, body in fenced_blocks(path):
        if lang != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            else:
                commands[-1][1].append(line)
    return commands


def console_output(path: Path, command: str) -> list[str]:
    """The output a page shows under ``$ command`` (exactly one such command on the page)."""
    found = [output for shown, output in console_commands(path) if shown == command]
    assert len(found) == 1, f"{path.name}: {len(found)} times '$ {command}'"
    return found[0]


def replace_once(code: str, old: str, new: str) -> str:
    assert code.count(old) == 1, f"expected {old!r} once in the example"
    return code.replace(old, new)


@dataclass
class Example:
    """A documented asyncio example running in a thread: its globals, its servers, what it printed."""

    namespace: dict[str, Any]
    servers: list[Any]
    printed: list[str]


def recording_server_class(servers: list[Any]) -> type:
    """The asyncio SMTPServer, recording each instance in ``servers``."""
    from smtpproto_adapters.asyncio import SMTPServer

    class RecordingSMTPServer(SMTPServer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            servers.append(self)

    return RecordingSMTPServer


@contextlib.contextmanager
def running_main(
    main: Callable[[], Coroutine[Any, Any, None]], servers: list[Any], count: int = 1
) -> Iterator[None]:
    """Run ``main()`` on an event loop in a thread until ``count`` servers listen; close them on exit."""
    loop = asyncio.new_event_loop()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(main())
        except Exception as exc:  # noqa: BLE001 - reported in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (len(servers) == count and all(server.sockets for server in servers)):
            assert thread.is_alive(), f"main() ended early: {errors}"
            assert time.monotonic() < deadline, "the example did not start listening"
            time.sleep(0.01)
        yield
    finally:
        if thread.is_alive():
            # main() returns once its servers are closed, and that stops the loop: the futures of these
            # close() calls may never be resolved, so wait for the thread, not for them.
            for server in servers:
                asyncio.run_coroutine_threadsafe(server.close(), loop)
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "main() did not return once its servers were closed"
        loop.close()
    assert errors == []


@contextlib.contextmanager
def running_example(code: str, count: int = 1) -> Iterator[Example]:
    """Run a documented asyncio server example (ports already replaced by 0) until the test is done.

    The example's ``SMTPServer`` records the servers it makes and its ``print`` records lines, so that
    the test knows the ports and sees the output; ``if __name__ == "__main__"`` stays false.
    """
    namespace: dict[str, Any] = {"__name__": "docs_example"}
    exec(compile(code, "<docs example>", "exec"), namespace)  # noqa: S102 - running the docs is the point
    example = Example(namespace, [], [])
    namespace["SMTPServer"] = recording_server_class(example.servers)
    namespace["print"] = lambda *args: example.printed.append(" ".join(map(str, args)))
    with running_main(namespace["main"], example.servers, count):
        yield example


def run_client(code: str) -> list[str]:
    """Run a documented client script; return the lines it printed."""
    printed: list[str] = []
    namespace: dict[str, Any] = {"__name__": "docs_client"}
    namespace["print"] = lambda *args: printed.append(" ".join(map(str, args)))
    exec(compile(code, "<docs client>", "exec"), namespace)  # noqa: S102
    return printed


def without_asyncio_run(code: str) -> str:
    """An example that ends in ``asyncio.run(main())``, without that line (the test runs main)."""
    assert code.rstrip().endswith("\nasyncio.run(main())")
    return code.rstrip().removesuffix("asyncio.run(main())")


def wait_for(predicate: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- docs/tutorial.md: the sink, the handler, TLS and AUTH ---------------------------------------------------

TUTORIAL = DOCS / "tutorial.md"
SWAKS_REPLY = re.compile(r"^<[-~*][ *] ")


def tool(name: str) -> str:
    """The path of a client tool the page uses; its absence is a failure (.ci/run installs it)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (.ci/run installs it)")
    return path


def tutorial_certificate(directory: Path) -> None:
    """Make cert.pem and key.pem in ``directory`` with the tutorial's own openssl command."""
    [command] = [c for c, _ in console_commands(TUTORIAL) if c.startswith("openssl req ")]
    args = shlex.split(command)
    subprocess.run([tool("openssl"), *args[1:]], cwd=directory, check=True, capture_output=True)
    assert (directory / "cert.pem").is_file()
    assert (directory / "key.pem").is_file()


def tutorial_users(directory: Path) -> None:
    """Write the users file the tutorial shows (its hash must be of the tutorial's password)."""
    users = console_output(TUTORIAL, "cat users")
    (directory / "users").write_text("\n".join(users) + "\n", encoding="utf-8")


def is_subsequence(wanted: list[str], lines: list[str]) -> bool:
    remaining = iter(lines)
    return all(any(line == want for line in remaining) for want in wanted)


def test_tutorial_cli_commands_are_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from smtpproto_adapters._authfile import load_auth_file
    from smtpproto_adapters._cli_args import build_parser
    from smtpproto_adapters._cli_settings import serve_settings

    monkeypatch.chdir(tmp_path)
    tutorial_certificate(tmp_path)
    tutorial_users(tmp_path)
    assert load_auth_file(tmp_path / "users").check("alice", "correct horse battery staple")
    serves = [
        c.split("smtpproto ", 1)[1]
        for c, _ in console_commands(TUTORIAL)
        if re.search(r"(^|/)smtpproto serve", c)
    ]
    assert len(serves) == 5
    for line in serves:
        settings = serve_settings(build_parser().parse_args(shlex.split(line)))
        assert settings is not None


def swaks_transcripts() -> list[tuple[list[str], str, list[str]]]:
    """(smtpproto serve flags, swaks command, reply lines shown) for each swaks run against the sink."""
    runs = []
    flags: list[str] | None = None
    for command, output in console_commands(TUTORIAL):
        if re.search(r"(^|/)smtpproto serve", command):
            flags = shlex.split(command.split("smtpproto serve", 1)[1])
        elif command.startswith("python "):
            flags = None  # a handler of the tutorial's own serves the next ones
        elif command.startswith("swaks ") and flags is not None:
            runs.append((flags, command, [line for line in output if SWAKS_REPLY.match(line)]))
    return runs


@pytest.mark.parametrize("run", swaks_transcripts(), ids=lambda run: " ".join(run[0]) or "default")
def test_tutorial_swaks_transcripts_are_real(
    run: tuple[list[str], str, list[str]], tmp_path: Path
) -> None:
    from .cli.conftest import Serve

    flags, command, shown = run
    assert shown, "a transcript shows the server's replies"
    tutorial_certificate(tmp_path)
    tutorial_users(tmp_path)
    port_flag = flags.index("--port") if "--port" in flags else None
    if port_flag is not None:
        flags = flags[:port_flag] + flags[port_flag + 2 :]
    server = Serve(["--port", "0", *flags], tmp_path)
    try:
        documented_port = re.search(r"--server 127\.0\.0\.1:(\d+)", command)
        assert documented_port
        args = shlex.split(command.replace(documented_port[0], f"--server 127.0.0.1:{server.port}"))
        swaks = subprocess.run(
            [tool("swaks"), *args[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        replies = [line.rstrip() for line in swaks.stdout.splitlines() if SWAKS_REPLY.match(line)]
        # The page shows its machine's name for the server; normalise whatever name it has here.
        greeting = re.compile(r"^<[-~*][ *] 220 (\S+) ESMTP", re.MULTILINE)
        [actual_name] = greeting.findall("\n".join(replies))
        shown_name = next(iter(greeting.findall("\n".join(shown))), "localhost")
        replies = [line.replace(actual_name, shown_name) for line in replies]
        assert is_subsequence(shown, replies), f"{swaks.stdout}\n{swaks.stderr}"
    finally:
        server.kill()


def test_tutorial_sink_stores_what_the_page_shows(tmp_path: Path) -> None:
    from .cli.conftest import Serve, message_files

    [swaks_command] = [c for c, _ in console_commands(TUTORIAL) if c.startswith("swaks ")][:1]
    server = Serve(["--port", "0"], tmp_path)
    try:
        args = shlex.split(swaks_command.replace("127.0.0.1:2525", f"127.0.0.1:{server.port}"))
        subprocess.run([tool("swaks"), *args[1:]], capture_output=True, timeout=TIMEOUT, check=True)
        line = server.line()
    finally:
        server.kill()
    shown_line = the_block(TUTORIAL, "text", " from=<alice@example.org> to=<bob@example.net> ")
    # Times, ports, sizes and file names vary, and the file name ends in this machine's name.
    pattern = re.sub(r"\d+", r"\\d+", re.escape(shown_line.strip()))
    pattern = pattern.removesuffix(r"\.vm") + r"\.\S+"
    assert re.fullmatch(pattern, line), (pattern, line)
    [stored] = message_files(tmp_path / "maildir")
    shown_file = console_output(TUTORIAL, f"cat maildir/new/{shown_line.rsplit('/', 1)[1].strip()}")
    received = stored.read_bytes().decode().split("\r\n")[:3]
    assert [line.split(" ")[0] for line in received] == [
        line.split(" ")[0] for line in shown_file[:3]
    ]
    assert re.fullmatch(r"Received: from \S+ \(\S+ \[127\.0\.0\.1\]\)", received[0])
    assert re.fullmatch(r"\tby \S+ with ESMTP id [a-z0-9]{16}\.1", received[1])
    assert received[2].startswith("\tfor <bob@example.net>; ")


def handler_example() -> str:
    return the_block(TUTORIAL, "python", "class Handler:", "async def on_rcpt_to(")


def test_tutorial_handler_example(caplog: pytest.LogCaptureFixture) -> None:
    code = replace_once(handler_example(), "listen(2525)", "listen(0)")
    client = the_block(TUTORIAL, "python", "import smtplib", '"127.0.0.1", 2525')
    with running_example(code) as example:
        port = example.servers[0].port
        printed = run_client(client.replace("2525", str(port)))
        wait_for(lambda: len(example.printed) == 2)
    # What the page says the server printed, and the client.
    started = console_output(TUTORIAL, "python mailboxes.py")
    assert started[0] in caplog.messages  # the warning about the generated certificate
    assert example.printed[0] == started[1].replace("2525", str(port))
    assert example.printed[1:] == block_after(TUTORIAL, "text", client).splitlines()
    assert printed == console_output(TUTORIAL, "python client.py")
    mailboxes = example.namespace["MAILBOXES"]
    assert mailboxes == {
        "bob@example.net": [b"Subject: Hello\r\n\r\nHi Bob!\r\n"],
        "carol@example.net": [],
    }


def test_tutorial_lmtp_handler() -> None:
    lmtp = the_block(TUTORIAL, "python", "class LMTPHandler(Handler):")
    constructor = re.search(r"`(SMTPServer\(LMTPHandler\(\)[^`]*)`", TUTORIAL.read_text())
    assert constructor, "the page says how to serve LMTPHandler"
    code = handler_example().replace("\n\nasync def main", "\n" + lmtp + "\n\nasync def main")
    code = replace_once(
        code, 'SMTPServer(Handler(), name="mx.example", size=1_000_000)', constructor[1]
    )
    code = replace_once(code, "listen(2525)", "listen(0)")
    [(command, output)] = [(c, o) for c, o in console_commands(TUTORIAL) if "--protocol LMTP" in c]
    with running_example(code) as example:
        [server] = example.servers
        args = shlex.split(command.replace("127.0.0.1:2424", f"127.0.0.1:{server.port}"))
        swaks = subprocess.run(
            [tool("swaks"), *args[1:]], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    replies = [line.rstrip() for line in swaks.stdout.splitlines() if SWAKS_REPLY.match(line)]
    assert replies == [line for line in output if SWAKS_REPLY.match(line)]
    assert len(example.namespace["MAILBOXES"]["bob@example.net"]) == 1
    assert example.namespace["MAILBOXES"]["carol@example.net"] == []


def submission_example() -> str:
    return the_block(TUTORIAL, "python", "async def on_auth(", "auth.verify_password(")


def test_tutorial_tls_and_auth_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    tutorial_certificate(tmp_path)
    code = replace_once(submission_example(), "listen(2587)", "listen(0)")
    client = the_block(TUTORIAL, "python", "client.login(", '"localhost", 2587')
    with running_example(code) as example:
        [server] = example.servers
        printed = run_client(client.replace("2587", str(server.port)))
        wait_for(lambda: len(example.printed) == 1)
        # What the text promises: no AUTH before TLS, and no mail without it.
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as plain:
            plain.ehlo()
            assert plain.has_extn("starttls")
            assert not plain.has_extn("auth")
            plain.starttls(context=ssl.create_default_context(cafile="cert.pem"))
            plain.ehlo()
            assert plain.has_extn("auth")
            assert plain.mail("alice@example.org")[0] == 530
    assert printed == console_output(TUTORIAL, "python submission_client.py")
    assert example.printed == block_after(TUTORIAL, "text", client).splitlines()


# -- docs/tls.md ----------------------------------------------------------------------------------------------

TLS_PAGE = DOCS / "tls.md"


def test_tls_page_core_session_is_real() -> None:
    blocks = code_blocks(TLS_PAGE, "pycon")
    test = doctest.DocTestParser().get_doctest("\n".join(blocks), {}, "tls", str(TLS_PAGE), 0)
    assert len(test.examples) >= 10
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    assert runner.run(test, out=report.write).failed == 0, report.getvalue()


def test_tls_page_starttls_and_implicit_listeners(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tutorial_certificate(tmp_path)  # the page uses the tutorial's cert.pem for localhost
    code = without_asyncio_run(the_block(TLS_PAGE, "python", "secure=True, **tls"))
    code = replace_once(code, 'listen(587, "0.0.0.0")', 'listen(0, "127.0.0.1")')
    code = replace_once(code, 'listen(465, "0.0.0.0")', 'listen(0, "127.0.0.1")')
    client = the_block(TLS_PAGE, "python", "smtplib.SMTP_SSL(")
    with running_example(code, count=2) as example:
        starttls, implicit = (server.port for server in example.servers)
        client = replace_once(client, '"localhost", 587', f'"localhost", {starttls}')
        client = replace_once(client, '"localhost", 465', f'"localhost", {implicit}')
        run_client(client)
        wait_for(lambda: len(example.printed) == 2)
    shown = block_after(TLS_PAGE, "text", the_block(TLS_PAGE, "python", "smtplib.SMTP_SSL("))
    expected = shown.replace("port 587", f"port {starttls}").replace("port 465", f"port {implicit}")
    assert example.printed == expected.splitlines()


def peer_common_name(sock: ssl.SSLSocket) -> str:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    [attribute] = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
        NameOID.COMMON_NAME
    )
    return str(attribute.value)


def starttls_peer(port: int, server_hostname: str | None) -> str:
    """STARTTLS with ``server_hostname`` as SNI; the common name of the certificate the server chose."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    client = RawClient(port)
    try:
        assert client.reply()[0] == 220
        client.send(b"EHLO client.example\r\nSTARTTLS\r\n")
        assert client.reply()[0] == 250
        assert client.reply()[0] == 220
        client.start_tls(context, server_hostname)
        assert isinstance(client.sock, ssl.SSLSocket)
        name = peer_common_name(client.sock)
        client.send(b"QUIT\r\n")
        assert client.reply()[0] == 221
        return name
    finally:
        client.close()


def test_tls_page_sni(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for hostname in ("mx.example", "mail.example.org"):
        cert, _ = make_certificate(tmp_path, hostname)
        cert.rename(tmp_path / f"{hostname}.pem")
    code = without_asyncio_run(the_block(TLS_PAGE, "python", "sni={"))
    code = replace_once(code, "listen(2525)", "listen(0)")
    with running_example(code) as example:
        [server] = example.servers
        names = ["mail.example.org", "mx.example", "other.example", None]
        peers = [starttls_peer(server.port, name) for name in names]
        wait_for(lambda: len(example.printed) == len(names))
    assert peers == ["mail.example.org", "mx.example", "mx.example", "mx.example"]
    shown = block_after(
        TLS_PAGE, "text", the_block(TLS_PAGE, "console", "-servername other.example")
    )
    # Server name and protocol as the page shows them; the cipher suite depends on the OpenSSL build.
    fields = re.compile(r"servername=(.*?), protocol='(.*?)'")
    assert [fields.search(line).groups() for line in example.printed] == [  # type: ignore[union-attr]
        fields.search(line).groups()  # type: ignore[union-attr]
        for line in shown.splitlines()
    ]


def test_tls_page_certificate_renewal_and_client_certificates(tmp_path: Path) -> None:
    old_cert, old_key = make_certificate(tmp_path, "old.example")
    new_cert, new_key = make_certificate(tmp_path, "new.example")
    client_cert, client_key = make_certificate(tmp_path, "client.example")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(old_cert, old_key)
    servers: list[Any] = []
    server_class = recording_server_class(servers)

    async def main() -> None:
        async with server_class(object(), ssl_context=context) as server:
            await server.listen(0)
            await server.serve_forever()

    with running_main(main, servers):
        [server] = servers
        assert starttls_peer(server.port, None) == "old.example"
        context.load_cert_chain(new_cert, new_key)  # "call context.load_cert_chain(...) again"
        assert starttls_peer(server.port, None) == "new.example"
        # Client certificates: verify_mode and load_verify_locations on the same context.
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(client_cert)
        with pytest.raises((ssl.SSLError, OSError, AssertionError)):
            starttls_peer(server.port, None)  # no client certificate: the handshake fails
        with_certificate = ssl.create_default_context(cafile=str(new_cert))
        with_certificate.check_hostname = False
        with_certificate.load_cert_chain(client_cert, client_key)
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            client.starttls(context=with_certificate)
            client.sendmail("alice@example.org", ["bob@example.net"], MESSAGE)
        wait_for(lambda: server.statistics().tls_failures == 1)


def test_tls_page_self_signed_warnings(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from smtpproto_adapters.asyncio import SMTPServer

    warning = the_block(TLS_PAGE, "text", "self-signed certificate").strip()
    SMTPServer(object())
    assert caplog.messages == [warning]
    caplog.clear()
    SMTPServer(object(), self_signed=True)
    assert caplog.messages == []
    # Without cryptography: the page quotes the warning, and explicit TLS refuses to start.
    monkeypatch.setitem(sys.modules, "cryptography", None)
    SMTPServer(object())
    quoted = re.search(r"says so:\n  `([^`]+)`", TLS_PAGE.read_text(encoding="utf-8"))
    assert quoted
    assert caplog.messages == [quoted[1]]
    with pytest.raises(RuntimeError):
        SMTPServer(object(), self_signed=True)


# -- docs/adapters.md: the Node smtp-server table ------------------------------------------------------------

#: Every option of Node's smtp-server (its documented options).
NODE_OPTIONS = (
    "name",
    "banner",
    "heloResponse",
    "lmtp",
    "component",
    "logger",
    "hidePIPELINING",
    "hide8BITMIME",
    "hideSMTPUTF8",
    "hideENHANCEDSTATUSCODES",
    "hideDSN",
    "hideREQUIRETLS",
    "hideSTARTTLS",
    "size",
    "hideSize",
    "rejectOversized",
    "authMethods",
    "authOptional",
    "allowInsecureAuth",
    "authRequiredMessage",
    "maxAllowedUnauthenticatedCommands",
    "onAuth",
    "disabledCommands",
    "session.disabledCommands",
    "maxClients",
    "maxRecipients",
    "maxCommandLength",
    "socketTimeout",
    "closeTimeout",
    "lenientAddressParsing",
    "disableReverseLookup",
    "resolver",
    "secure",
    "needsUpgrade",
    "secured",
    "key",
    "cert",
    "ca",
    "pfx",
    "passphrase",
    "ciphers",
    "minVersion",
    "honorCipherOrder",
    "dhparam",
    "ecdhCurve",
    "sessionIdContext",
    "requestCert",
    "rejectUnauthorized",
    "NPNProtocols",
    "session",
    "requestOCSP",
    "sniOptions",
    "SNICallback",
    "updateSecureContext",
    "useProxy",
    "ignoredHosts",
    "useXClient",
    "useXForward",
    "onConnect",
    "onSecure",
    "onMailFrom",
    "onRcptTo",
    "onData",
    "onClose",
    "allowHalfOpen",
    "pauseOnConnect",
    "keepAlive",
)


def test_adapters_page_maps_every_node_option() -> None:
    text = (DOCS / "adapters.md").read_text(encoding="utf-8")
    table = text[text.index("## Coming from Node") :].split("\n## ", 1)[0]
    first_column = {
        name
        for row in table.splitlines()
        if row.startswith("| `")
        for name in re.findall(r"`([\w.]+)(?:\(\))?`", row.split(" | ")[0])
    }
    assert [name for name in NODE_OPTIONS if name not in first_column] == []
