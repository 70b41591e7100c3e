"""The backend-neutral layer without sockets: options → config, the public surface, redaction, drive()."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import smtpproto
import smtpproto_adapters
from smtpproto_adapters import ServerOptions
from smtpproto_adapters._hooks import HookSet, outcome_of
from smtpproto_adapters._logging import CommandLog, SessionLogger
from smtpproto_adapters._options import for_peer, has_trust_lists, peer_trusted, to_config
from smtpproto_adapters._transport import SendGuard, drive

ROOT = Path(__file__).resolve().parents[2]
ADAPTERS = ROOT / "src" / "smtpproto_adapters"


def test_adapters_use_only_the_public_core_api() -> None:
    offenders = []
    for path in sorted(ADAPTERS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.startswith("smtpproto.") and node.module.split(".")[1].startswith(
                    "_"
                ):
                    offenders.append(f"{path.name}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.name}:{node.lineno} import {a.name}"
                    for a in node.names
                    if a.name.startswith("smtpproto._")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "smtpproto"
                and (node.attr.startswith("_") or node.attr not in smtpproto.__all__)
            ):
                offenders.append(f"{path.name}:{node.lineno} smtpproto.{node.attr}")
    assert offenders == []


def test_package_imports_no_backend_library() -> None:
    code = (
        "import sys, smtpproto_adapters; "
        "print(sorted(m for m in ('asyncio', 'trio', 'anyio', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_documented() -> None:
    docs = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
    missing = [name for name in smtpproto_adapters.__all__ if f"`{name}" not in docs]
    assert missing == []
    for field in dataclasses.fields(ServerOptions):
        assert f"`{field.name}`" in docs, field.name


def test_every_option_reaches_its_config_field() -> None:
    options = ServerOptions(
        name="mx.example",
        banner="hi",
        lmtp=True,
        size=1234,
        hide_size=True,
        hide_starttls=True,
        hide_requiretls=True,
        auth_methods=["plain", "cram-md5"],
        auth_optional=False,
        allow_insecure_auth=True,
        disabled_commands=["vrfy"],
        hide_pipelining=True,
        hide_8bitmime=True,
        hide_smtputf8=True,
        hide_enhanced_status_codes=True,
        hide_dsn=True,
        max_recipients=7,
        max_command_line=4096,
        max_errors=5,
        max_unauthenticated_commands=4,
        max_auth_failures=2,
        line_endings=smtpproto.LineEndings.NORMALIZE,
        use_proxy=True,
        use_xclient=True,
        use_xforward=True,
    )
    config = to_config(options, secure=True, tls_available=True, auth=True)
    expected = {
        "hostname": "mx.example",
        "banner": "hi",
        "lmtp": True,
        "max_message_size": 1234,
        "hide_size": True,
        "secure": True,
        "tls_available": True,
        "hide_starttls": True,
        "hide_requiretls": True,
        "auth_methods": ("PLAIN", "CRAM-MD5"),
        "auth_required": True,
        "allow_insecure_auth": True,
        "disabled_commands": frozenset({"VRFY"}),
        "hide_pipelining": True,
        "hide_8bitmime": True,
        "hide_smtputf8": True,
        "hide_enhanced_status_codes": True,
        "hide_dsn": True,
        "max_recipients": 7,
        "max_command_line": 4096,
        "max_errors": 5,
        "max_unauthenticated_commands": 4,
        "max_auth_failures": 2,
        "line_endings": smtpproto.LineEndings.NORMALIZE,
        "use_proxy": True,
        "use_xclient": True,
        "use_xforward": True,
    }
    assert {name: getattr(config, name) for name in expected} == expected
    assert config.nonce_factory is not None
    assert config.nonce_factory() != config.nonce_factory()


def test_config_defaults_and_auth_rules() -> None:
    plain = to_config(ServerOptions(name="mx.test"), secure=False, tls_available=False)
    assert plain.auth_methods == ()
    assert plain.auth_required is False
    assert plain.tls_available is False
    assert plain.secure is False
    assert plain.max_recipients == smtpproto.ServerConfig().max_recipients  # core default kept
    optional = to_config(
        ServerOptions(auth_optional=True), secure=False, tls_available=True, auth=True
    )
    assert optional.auth_methods == ("PLAIN", "LOGIN")
    assert optional.auth_required is False
    assert (
        to_config(ServerOptions(size=0), secure=False, tls_available=False).max_message_size is None
    )


def test_trust_lists_are_decided_per_peer() -> None:
    options = ServerOptions(use_xclient=["10.0.0.1"], use_xforward=["*"])
    config = to_config(options, secure=False, tls_available=False)
    assert for_peer(config, options, "10.0.0.1").use_xclient is True
    assert for_peer(config, options, "::ffff:10.0.0.1").use_xclient is True
    assert for_peer(config, options, "10.0.0.2").use_xclient is False
    assert for_peer(config, options, "10.0.0.2").use_xforward is True
    assert peer_trusted(False, "10.0.0.1") is False


def test_peers_with_the_same_trust_share_one_config() -> None:
    """The core builds its tables once per config object, so equal decisions must not mean a new object."""
    options = ServerOptions(use_xclient=["10.0.0.1", "10.9.9.9"])
    config = to_config(options, secure=False, tls_available=False)
    assert for_peer(config, options, "10.0.0.1") is for_peer(config, options, "10.9.9.9")
    assert for_peer(config, options, "192.0.2.1") is for_peer(config, options, "192.0.2.2")
    assert for_peer(config, options, "10.0.0.1") is not for_peer(config, options, "192.0.2.1")
    assert has_trust_lists(options) is True
    assert has_trust_lists(ServerOptions(use_xclient=True)) is False


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"socket_timeout": 0}, "socket_timeout"),
        ({"close_timeout": -1}, "close_timeout"),
        ({"max_clients": 0}, "max_clients"),
        ({"size": -5}, "size"),
        ({"tls_key": "key.pem"}, "tls_key needs tls_cert"),
        ({"ssl_context": object(), "tls_cert": "cert.pem"}, "either ssl_context"),
    ],
)
def test_bad_options_are_refused(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        ServerOptions(**kwargs)


def test_proxy_with_implicit_tls_is_accepted() -> None:
    # The header is read before the handshake (test_proxy_tls.py); nothing to refuse any more.
    options = ServerOptions(secure=True, use_proxy=["10.0.0.5"])
    assert (options.secure, options.use_proxy) == (True, ["10.0.0.5"])


def test_auth_methods_must_not_be_a_string() -> None:
    with pytest.raises(TypeError):
        ServerOptions(auth_methods="PLAIN")


def _command_log() -> tuple[CommandLog, list[str]]:
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("test.commandlog")
    logger.handlers[:] = [Collect()]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return CommandLog(SessionLogger(logger, "abc")), lines


def test_command_log_redacts_sasl_and_skips_data() -> None:
    log, lines = _command_log()
    log.received(b"EHLO c\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nMAIL FROM:<a@b>\r\n")
    log.sent(b"235 2.7.0 ok\r\n")
    log.received(b"AUTH LOGIN\r\n")
    log.sent(b"334 VXNlcm5hbWU6\r\n")
    log.received(b"YWxp")
    log.received(b"Y2U=\r\n")
    log.sent(b"334 UGFzc3dvcmQ6\r\n")
    log.received(b"c2VjcmV0\r\n")
    log.sent(b"235 2.7.0 ok\r\n")
    log.received(b"DATA\r\nSubject: secret body\r\n")
    log.start_data()
    log.received(b"more body\r\n.\r\n")
    log.end_data(30)
    log.received(b"QUIT\r\n")
    client = [line for line in lines if line.startswith("[abc] C:")]
    assert client == [
        "[abc] C: EHLO c",
        "[abc] C: AUTH PLAIN ***",
        "[abc] C: ***",  # pipelined behind AUTH: redacted to be safe
        "[abc] C: AUTH LOGIN",
        "[abc] C: ***",
        "[abc] C: ***",
        "[abc] C: DATA",
        "[abc] C: <30 bytes of DATA>",
        "[abc] C: QUIT",
    ]
    assert "[abc] S: 334 VXNlcm5hbWU6" in lines


def test_command_log_costs_nothing_when_debug_is_off() -> None:
    log, lines = _command_log()
    logging.getLogger("test.commandlog").setLevel(logging.INFO)
    log = CommandLog(SessionLogger(logging.getLogger("test.commandlog"), "x"))
    log.received(b"EHLO c\r\n")
    log.sent(b"250 ok\r\n")
    assert lines == []


def test_drive_runs_a_non_suspending_coroutine_and_refuses_a_suspending_one() -> None:
    async def plain() -> int:
        return 42

    async def suspends() -> None:
        await asyncio.sleep(0)

    assert drive(plain()) == 42
    with pytest.raises(RuntimeError, match="suspended"):
        drive(suspends())


def test_send_guard_detects_a_second_writer() -> None:
    guard = SendGuard()
    entered, release = threading.Event(), threading.Event()

    def writer() -> None:
        with guard:
            entered.set()
            release.wait(5)

    thread = threading.Thread(target=writer)
    thread.start()
    assert entered.wait(5)
    with pytest.raises(RuntimeError, match="already sending"), guard:
        pass
    release.set()
    thread.join()
    with guard:  # free again
        pass


def test_hook_set_recognises_async_callables() -> None:
    class AsyncCallable:
        async def __call__(self, session: object) -> None:
            return None

    handler = type("H", (), {"on_connect": AsyncCallable()})()
    assert HookSet.from_handler(handler, asynchronous=True).on_connect is not None
    with pytest.raises(TypeError):
        HookSet.from_handler(handler, asynchronous=False)
    with pytest.raises(TypeError, match="not callable"):
        HookSet.from_handler(type("H", (), {"on_close": 3})(), asynchronous=False)


def test_outcomes() -> None:
    reply = smtpproto.Reply(550, "no")
    assert outcome_of(None) is True
    assert outcome_of(True) is True
    assert outcome_of(object()) is True
    assert outcome_of(False) is False
    assert outcome_of(reply) is reply
    assert outcome_of(smtpproto.SMTPError(550, "no")) == reply


def test_the_asyncio_example_in_the_docs_works(capsys) -> None:
    import re
    import smtplib

    from smtpproto_adapters.asyncio import SMTPServer

    docs = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
    example = re.search(r"```python\n(.*?)```", docs, re.DOTALL)
    assert example is not None
    code = example.group(1)
    # "A ten-line example": count the lines that say something (the formatter adds blank ones).
    assert len([line for line in code.splitlines() if line.strip()]) <= 13
    assert code.rstrip().endswith("asyncio.run(main())")
    namespace: dict[str, object] = {}
    runnable = code.rstrip().removesuffix("asyncio.run(main())").replace("2525", "0")
    exec(runnable, namespace)  # noqa: S102 - running the documented example is the point
    servers: list[SMTPServer] = []

    class Recording(SMTPServer):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            servers.append(self)

    namespace["SMTPServer"] = Recording
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(namespace["main"](),))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not (servers and servers[0].sockets) and time.monotonic() < deadline:
            time.sleep(0.01)
        with smtplib.SMTP("127.0.0.1", servers[0].port) as client:
            client.sendmail("a@b.test", ["x@y.test"], b"hello\r\n")
    finally:
        # main() returns once the server is closed, which also ends the loop's run.
        asyncio.run_coroutine_threadsafe(servers[0].close(), loop)
        thread.join(10)
        loop.close()
    assert not thread.is_alive()
    assert "a@b.test" in capsys.readouterr().out
