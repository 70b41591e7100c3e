"""``smtpproto serve`` end to end: a real subprocess, real clients (smtplib and swaks), real files."""

from __future__ import annotations

import os
import re
import shutil
import signal
import smtplib
import socket
import subprocess
from pathlib import Path

import pytest

from .conftest import SMTPPROTO, TIMEOUT, message_files, run_cli, unverified_context

MESSAGE = (
    b"From: alice@example.org\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: exact bytes\r\n"
    b"\r\n"
    b"line one\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b"\r\n"
    b"From the start of a line\r\n"
    b"trailing spaces   \r\n"
    b"caf\xc3\xa9 \xff raw octets\r\n"
)
DATE = rb"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}"
SESSION_ID = rb"[a-z2-7]{16}\.\d+"
BACKENDS = ["asyncio", "anyio", "trio", "blocking"]


def received(helo: str, address: str, protocol: str, recipient: str | None) -> re.Pattern[bytes]:
    """The Received header the server must write, with the id and date left open."""
    line_for = rb"\r\n\tfor <" + re.escape(recipient.encode()) + rb">; " if recipient else rb"; "
    return re.compile(
        rb"Received: from "
        + re.escape(helo.encode())
        + rb" \(\["
        + re.escape(address.encode())
        + rb"\]\)\r\n\tby mx\.test with "
        + protocol.encode()
        + rb" id "
        + SESSION_ID
        + line_for
        + DATE
        + rb"\r\n"
    )


def stored(maildir: Path, count: int = 1) -> list[bytes]:
    """The contents of the ``count`` messages in ``maildir/new`` (exactly that many)."""
    files = message_files(maildir)
    assert len(files) == count, files
    assert list((maildir / "tmp").iterdir()) == []
    return [path.read_bytes() for path in files]


def split_header(data: bytes, body: bytes = MESSAGE) -> bytes:
    """The bytes before ``body``, which must end the stored message exactly."""
    assert data.endswith(body), data[-200:]
    return data[: -len(body)]


def send(port: int, *, tls: str = "", **kwargs: object) -> None:
    """Send MESSAGE from alice to bob with smtplib: plain, ``tls="starttls"`` or ``tls="implicit"``."""
    cls = smtplib.SMTP_SSL if tls == "implicit" else smtplib.SMTP
    extra = {"context": unverified_context()} if tls == "implicit" else {}
    with cls("127.0.0.1", port, local_hostname="client.test", timeout=TIMEOUT, **extra) as client:
        if tls == "starttls":
            client.starttls(context=unverified_context())
        user = kwargs.get("user")
        if user:
            client.login(str(user), str(kwargs["password"]))
        assert client.sendmail("alice@example.org", ["bob@example.net"], MESSAGE) == {}


def swaks(port: int, *flags: str) -> str:
    """Run swaks against the server; it must succeed. Returns its transcript."""
    result = subprocess.run(
        ["swaks", "--server", f"127.0.0.1:{port}", "--helo", "swaks.test", "--from",
         "carol@example.org", "--to", "dave@example.net", "--body", "Hello from swaks",
         "--timeout", "10", *flags],
        capture_output=True, text=True, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


# -- plain SMTP into a Maildir ----------------------------------------------------------------------------


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_message_is_stored_byte_for_byte(serve, tmp_path: Path, backend: str) -> None:
    server = serve("--backend", backend)
    assert server.banner.endswith(f"(SMTP, {backend}, maildir ./maildir)")
    send(server.port)
    line = server.line()
    [data] = stored(tmp_path / "maildir")
    header = split_header(data)
    assert received("client.test", "127.0.0.1", "ESMTP", "bob@example.net").fullmatch(header)
    [path] = message_files(tmp_path / "maildir")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d 127\.0\.0\.1:\d+ from=<alice@example\.org> "
        rf"to=<bob@example\.net> size={len(MESSAGE)} file=maildir/new/{re.escape(path.name)}",
        line,
    )
    assert server.stop() == 0
    assert server.stderr == ""


def test_readme_command_and_swaks(serve, tmp_path: Path) -> None:
    # The console script itself, as the README runs it (with a free port instead of 2525).
    server = serve(executable=[SMTPPROTO])
    transcript = swaks(server.port)
    assert "<-  250 2.0.0" in transcript
    assert "from=<carol@example.org> to=<dave@example.net>" in server.line()
    [data] = stored(tmp_path / "maildir")
    assert received("swaks.test", "127.0.0.1", "ESMTP", "dave@example.net").match(data)
    assert b"\r\n\r\nHello from swaks\r\n" in data
    assert server.stop(signal.SIGINT) == 0


def test_many_messages_on_one_connection_and_a_large_one(serve, tmp_path: Path) -> None:
    server = serve("--no-received-header", "--maildir", "box")
    big = b"".join(b".%07d dot-stuffed line of a large message\r\n" % i for i in range(80_000))
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        for body in (MESSAGE, big, MESSAGE):
            assert client.sendmail("alice@example.org", ["b@x.test", "c@x.test"], body) == {}
    lines = [server.line() for _ in range(3)]
    assert all("to=<b@x.test>,<c@x.test>" in line for line in lines)
    contents = stored(tmp_path / "box", 3)
    # Without the trace header the files are exactly the messages (names sort by delivery order).
    assert sorted(contents, key=len) == [MESSAGE, MESSAGE, big]
    assert server.stop() == 0


# -- TLS --------------------------------------------------------------------------------------------------


def test_starttls_with_a_self_signed_certificate(serve, tmp_path: Path) -> None:
    server = serve("--self-signed")
    assert "(SMTP, STARTTLS, asyncio," in server.banner
    send(server.port, tls="starttls")
    transcript = swaks(server.port, "--tls")
    assert "TLS started" in transcript
    first, second = stored(tmp_path / "maildir", 2)
    assert received("client.test", "127.0.0.1", "ESMTPS", "bob@example.net").fullmatch(
        split_header(first)
    )
    assert received("swaks.test", "127.0.0.1", "ESMTPS", "dave@example.net").match(second)
    assert server.stop() == 0


def test_implicit_tls(serve, tmp_path: Path) -> None:
    server = serve("--implicit-tls", "--self-signed")
    assert "(SMTP, implicit TLS," in server.banner
    send(server.port, tls="implicit")
    swaks(server.port, "--tlsc")
    first, second = stored(tmp_path / "maildir", 2)
    assert received("client.test", "127.0.0.1", "ESMTPS", "bob@example.net").fullmatch(
        split_header(first)
    )
    assert b"with ESMTPS" in second
    assert server.stop() == 0


# -- AUTH -------------------------------------------------------------------------------------------------


def test_auth_from_a_file_with_plain_and_scrypt_entries(serve, tmp_path: Path) -> None:
    hashed = run_cli("hash-password", "bob", stdin="bob's secret\n")
    assert hashed.returncode == 0, hashed.stderr
    users = tmp_path / "users"
    users.write_text(f"# test users\nalice:plain pass\n{hashed.stdout}", encoding="utf-8")
    server = serve("--self-signed", "--auth-file", str(users), "--auth-required")
    assert "STARTTLS, AUTH required" in server.banner
    send(server.port, tls="starttls", user="alice", password="plain pass")
    send(server.port, tls="starttls", user="bob", password="bob's secret")
    swaks(server.port, "--tls", "--auth", "LOGIN", "--auth-user", "bob",
          "--auth-password", "bob's secret")  # fmt: skip
    with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        send(server.port, tls="starttls", user="bob", password="wrong")
    assert refused.value.smtp_code == 535
    with pytest.raises(smtplib.SMTPSenderRefused) as unauthenticated:
        send(server.port, tls="starttls")
    assert unauthenticated.value.smtp_code == 530
    contents = stored(tmp_path / "maildir", 3)
    assert all(b"with ESMTPSA" in data for data in contents)
    # A hashed entry cannot answer CRAM-MD5, so it is not offered.
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        client.starttls(context=unverified_context())
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
    assert server.stop() == 0


def test_cram_md5_is_offered_when_every_password_is_plain(serve, tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("carol:tanstaaf\n", encoding="utf-8")
    server = serve("--auth-file", str(users), "--allow-insecure-auth")
    transcript = swaks(server.port, "--auth", "CRAM-MD5", "--auth-user", "carol",
                       "--auth-password", "tanstaaf")  # fmt: skip
    assert "<-  235 " in transcript
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("carol", "wrong")  # smtplib picks CRAM-MD5 first
    # --auth-required was not given: unauthenticated mail is accepted too.
    send(server.port)
    assert [b"with ESMTPA" in data for data in stored(tmp_path / "maildir", 2)] == [True, False]
    assert server.stop() == 0


# -- LMTP, limits -----------------------------------------------------------------------------------------


def test_lmtp(serve, tmp_path: Path) -> None:
    server = serve("--lmtp")
    assert "(LMTP, asyncio," in server.banner
    # smtplib's LMTP reads a single reply after DATA: one recipient. swaks handles one reply each.
    with smtplib.LMTP("127.0.0.1", server.port, local_hostname="client.test") as client:
        assert client.sendmail("alice@example.org", ["bob@example.net"], MESSAGE) == {}
    transcript = swaks(server.port, "--protocol", "LMTP", "--to", "a@x.test,b@x.test")
    assert transcript.count("<-  250 2.0.0 Message accepted") == 2
    first, second = stored(tmp_path / "maildir", 2)
    assert received("client.test", "127.0.0.1", "LMTP", "bob@example.net").fullmatch(
        split_header(first)
    )
    # Two recipients: the trace header names neither of them (RFC 5321 §7.2).
    assert received("swaks.test", "127.0.0.1", "LMTP", None).match(second)
    assert server.stop() == 0


def test_size_limit(serve, tmp_path: Path) -> None:
    server = serve("--size", "1K")
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 8  # 600 octets: two are too many
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "1024"
        # Declared up front (smtplib sends SIZE=): refused at MAIL FROM.
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            client.sendmail("a@x.test", ["b@x.test"], big * 2)
        assert declared.value.smtp_code == 552
        # Not declared: the message is read to its end, then refused, and nothing is kept.
        client.rset()
        assert client.mail("a@x.test")[0] == 250
        assert client.rcpt("b@x.test")[0] == 250
        code, text = client.data(big * 2)
        assert (code, text[:5]) == (552, b"5.3.4")
        # The connection goes on, and a message within the limit is stored.
        assert client.sendmail("a@x.test", ["b@x.test"], big) == {}
    [data] = stored(tmp_path / "maildir")
    assert data.endswith(big)
    assert server.stop() == 0


def test_max_recipients(serve) -> None:
    server = serve("--max-recipients", "2")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
        client.ehlo()
        client.mail("a@x.test")
        assert [client.rcpt(f"r{i}@x.test")[0] for i in range(3)] == [250, 250, 452]
    assert server.stop() == 0


# -- other sinks --------------------------------------------------------------------------------------------


def test_mbox(serve, tmp_path: Path) -> None:
    server = serve("--mbox", "mail.mbox", "--no-received-header")
    assert server.banner.endswith("mbox mail.mbox)")
    send(server.port)
    send(server.port)
    lines = [server.line() for _ in range(2)]
    assert all(line.endswith(" file=mail.mbox") for line in lines)
    text = (tmp_path / "mail.mbox").read_bytes()
    # mboxrd: LF line endings, a From_ line before each message, '>From ' quoting, a blank line after.
    body = MESSAGE.replace(b"\r\n", b"\n").replace(b"\nFrom the", b"\n>From the")
    entry = rb"From alice@example\.org \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\n" + re.escape(body)
    assert re.fullmatch(entry + rb"\n" + entry + rb"\n", text), text
    assert server.stop() == 0


def test_stdout(serve, tmp_path: Path) -> None:
    server = serve("--stdout")
    assert server.banner.endswith("standard output)")
    send(server.port)
    [line] = server.lines_matching(r" from=<alice@example\.org> ", 1)
    assert line.endswith(" file=<stdout> message 1")
    raw = server.raw.split(b"\n", 1)[1]  # after the start-up line
    separator = "----- message 1 from <alice@example.org> to <bob@example.net> ({} bytes) -----\n"
    head, rest = raw.split(b"\n", 1)
    message = rest[: rest.index(line.encode())]
    assert head.decode() + "\n" == separator.format(len(message))
    assert received("client.test", "127.0.0.1", "ESMTP", "bob@example.net").fullmatch(
        split_header(message)
    )
    assert server.stop() == 0
    assert not (tmp_path / "maildir").exists()


# -- no mail lost -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["asyncio", "anyio"])
def test_uvloop_serves_a_message(serve, tmp_path: Path, backend: str) -> None:
    pytest.importorskip("uvloop")
    server = serve("--backend", backend, "--loop", "uvloop")
    send(server.port)
    server.line()
    [data] = stored(tmp_path / "maildir")
    assert data.endswith(MESSAGE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_store_failure_answers_451_and_leaves_no_file(serve, tmp_path: Path, backend: str) -> None:
    server = serve("--backend", backend)
    maildir = tmp_path / "maildir"
    send(server.port)
    server.line()
    # Root ignores permissions, so break the Maildir for real: new/ becomes a regular file, and the
    # rename out of tmp/ fails after the whole message was written and fsynced there.
    shutil.rmtree(maildir / "new")
    (maildir / "new").write_bytes(b"not a directory")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server.port)
    assert refused.value.smtp_code == 451
    assert refused.value.smtp_error.startswith(b"4.3.0 ")
    assert list((maildir / "tmp").iterdir()) == []
    assert (maildir / "new").read_bytes() == b"not a directory"
    assert "could not store the message" in server.wait_for_stderr("could not store the message")
    # Repaired, the same server stores again.
    (maildir / "new").unlink()
    (maildir / "new").mkdir()
    send(server.port)
    assert "from=<alice@example.org>" in server.line()
    assert len(stored(maildir)) == 1
    assert server.stop() == 0


# -- processes and signals --------------------------------------------------------------------------------


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_two_workers_share_the_port(serve, tmp_path: Path, backend: str) -> None:
    server = serve("--workers", "2", "--no-received-header", "--backend", backend)
    assert "2 workers" in server.banner
    workers = _children(server.process.pid)
    assert len(workers) == 2
    count = 24
    for i in range(count):  # a new connection each: the kernel spreads them over the workers
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            client.sendmail("a@x.test", [f"r{i}@x.test"], b"Subject: %d\r\n\r\nbody\r\n" % i)
    lines = server.lines_matching(r" from=<a@x\.test> ", count)
    assert sorted(re.findall(r"to=<r(\d+)@", "\n".join(lines)), key=int) == [
        str(i) for i in range(count)
    ]
    files = message_files(tmp_path / "maildir")
    assert len(files) == count
    # Maildir names hold the pid of the process that stored the message: both workers served.
    assert {int(path.name.split(".")[1].split("_")[0]) for path in files} == workers
    # SIGTERM to the parent only: it forwards the signal, waits for the workers, exits cleanly.
    assert server.stop(signal.SIGTERM) == 0
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


def test_a_worker_dying_at_start_up_stops_the_server(serve) -> None:
    server = serve("--workers", "2")
    victim = min(_children(server.process.pid))
    os.kill(victim, signal.SIGKILL)
    # Dead within seconds of its start: restarting it would only loop, so the parent gives up.
    assert server.wait() == 1
    assert f"worker {victim} exited with status -9" in server.stderr
    assert "stopping instead of restarting" in server.stderr


@pytest.mark.parametrize("backend", ["anyio", "blocking"])
def test_workers_stop_on_ctrl_c(serve, backend: str) -> None:
    server = serve("--workers", "2", "--backend", backend)
    assert (
        len(_children(server.process.pid)) == 2
    )  # both bound the port: SO_REUSEPORT on this backend
    for _ in range(4):
        with smtplib.SMTP("127.0.0.1", server.port, timeout=TIMEOUT) as client:
            assert client.noop()[0] == 250
    # Ctrl-C in a terminal signals the whole foreground process group.
    assert server.stop(signal.SIGINT, group=True) == 0
    assert "Traceback" not in server.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_while_idle_exits_0(serve, backend: str) -> None:
    server = serve("--backend", backend)
    assert server.stop(signal.SIGTERM) == 0
    assert server.stderr == ""
    assert server.raw.count(b"\n") == 1  # the start-up line only


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_closes_open_sessions_gracefully(serve, backend: str) -> None:
    server = serve("--backend", backend, "--close-timeout", "0.5")
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"220 ")
        sock.sendall(b"EHLO c.test\r\n")
        while reader.readline()[3:4] == b"-":
            pass
        server.process.send_signal(signal.SIGTERM)
        # The idle session is told, then closed; the server then exits cleanly.
        assert reader.readline().startswith(b"421 4.3.2 ")
        assert reader.read() == b""
    assert server.wait() == 0
