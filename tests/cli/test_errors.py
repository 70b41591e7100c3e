"""Mistakes on the command line: one clear line on standard error and exit status 2, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from smtpproto_adapters._authfile import load_auth_file

from .conftest import run_cli

# (arguments, a fragment of the one error line); paths are relative to the test's directory.
USAGE_ERRORS = [
    ([], "the following arguments are required: COMMAND"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["serve", "--bogus"], "unrecognized arguments: --bogus"),
    (["serve", "--port", "http"], "argument --port: not a port number: 'http'"),
    (["serve", "--port", "70000"], "argument --port: not a port number: 70000"),
    (["serve", "--size", "lots"], "argument --size: not a size: 'lots'"),
    (["serve", "--workers", "0"], "argument --workers: must be at least 1, not 0"),
    (["serve", "--socket-timeout", "-1"], "argument --socket-timeout: must be a positive"),
    (["serve", "--line-endings", "lf"], "argument --line-endings: invalid choice: 'lf'"),
    (["serve", "--backend", "gevent"], "argument --backend: invalid choice: 'gevent'"),
    (["serve", "--loop", "gevent"], "argument --loop: invalid choice: 'gevent'"),
    (
        ["serve", "--backend", "trio", "--loop", "uvloop"],
        "--loop uvloop needs --backend asyncio or anyio, not trio",
    ),
    (["serve", "--mbox", "m", "--stdout"], "argument --stdout: not allowed with argument --mbox"),
    (["serve", "--auth-file", "missing"], "cannot read the auth file missing: No such file"),
    (["serve", "--auth-file", "bad-users", "--self-signed"], "bad-users, line 2: expected"),
    (["serve", "--auth-file", "empty-users", "--self-signed"], "has no users"),
    (["serve", "--auth-file", "users"], "AUTH is only offered over TLS"),
    (["serve", "--auth-required"], "--auth-required needs --auth-file"),
    (
        ["serve", "--auth-file", "hashed-users", "--self-signed", "--auth-methods", "CRAM-MD5"],
        "CRAM-MD5 needs every password of the auth file in plain text",
    ),
    (
        ["serve", "--auth-file", "users", "--self-signed", "--auth-methods", "PLAIN,XOAUTH2"],
        "XOAUTH2 is not supported with an auth file",
    ),
    (["serve", "--implicit-tls"], "--implicit-tls needs a certificate"),
    (["serve", "--tls-cert", "missing.pem"], "cannot load the TLS certificate missing.pem"),
    (["serve", "--tls-cert", "users"], "cannot load the TLS certificate users"),
    (["serve", "--tls-key", "k.pem"], "--tls-key needs --tls-cert"),
    (["serve", "--self-signed", "--tls-cert", "c.pem"], "not both"),
    (["serve", "--mbox", "no/such/dir/m"], "the directory no/such/dir does not exist"),
    (["serve", "--mbox", "."], "not a regular file"),
    (["serve", "--maildir", "users"], "cannot create the Maildir users"),
    (["serve", "--xclient", ","], "--xclient needs at least one trusted peer address"),
    (["serve", "--xforward", " "], "--xforward needs at least one trusted peer address"),
    (["serve", "--stdout", "--workers", "2"], "--stdout cannot be combined with --workers"),
    (["hash-password", "a:b"], "a user name cannot contain ':'"),
]


@pytest.mark.parametrize(
    ("args", "message"), USAGE_ERRORS, ids=[" ".join(args) or "-" for args, _ in USAGE_ERRORS]
)
def test_usage_error_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "users").write_text("alice:secret\n", encoding="utf-8")
    (tmp_path / "bad-users").write_text("alice:secret\nno colon here\n", encoding="utf-8")
    (tmp_path / "empty-users").write_text("# nobody\n", encoding="utf-8")
    (tmp_path / "hashed-users").write_text(
        "alice:$scrypt$n=2,r=1,p=1$c2FsdA==$" + "A" * 43 + "=\n", encoding="utf-8"
    )
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(("smtpproto: error: ", "smtpproto serve: error: ", "smtpproto hash"))
    assert message in lines[0]
    assert not (tmp_path / "maildir").exists()  # nothing was set up


def test_port_in_use_exits_1_with_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("serve", "--port", str(port), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (
        f"smtpproto serve: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_help_documents_every_flag() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    assert "serve" in top.stdout
    assert "hash-password" in top.stdout
    serve = run_cli("serve", "--help")
    assert serve.returncode == 0
    flags = ["--host", "--port", "--maildir", "--mbox", "--stdout", "--name", "--banner", "--lmtp",
             "--tls-cert", "--tls-key", "--implicit-tls", "--self-signed", "--auth-file",
             "--auth-required", "--allow-insecure-auth", "--auth-methods", "--size",
             "--max-clients", "--max-recipients", "--socket-timeout", "--line-endings",
             "--proxy-protocol", "--backend", "--loop", "--workers", "--log-level",
             "--no-received-header"]  # fmt: skip
    assert [flag for flag in flags if flag not in serve.stdout] == []


def test_hash_password_from_stdin(tmp_path: Path) -> None:
    result = run_cli("hash-password", stdin="correct horse\n")
    assert result.returncode == 0
    hashed = result.stdout.strip()
    assert hashed.startswith("$scrypt$n=16384,r=8,p=1$")
    users = tmp_path / "users"
    users.write_text(f"alice:{hashed}\n", encoding="utf-8")
    loaded = load_auth_file(users)
    assert loaded.check("alice", "correct horse")
    assert not loaded.check("alice", "correct horse\n")
    empty = run_cli("hash-password", stdin="\n")
    assert (empty.returncode, empty.stderr) == (
        2,
        "smtpproto hash-password: error: the password is empty\n",
    )
