"""``smtpproto serve``'s arguments checked and turned into :class:`ServeSettings`.

Everything that can be checked before listening is checked here — contradicting flags, the users file,
the certificate, the sink's path, the backend's availability — so that a mistake is one line and exit
status 2 (:class:`~smtpproto_adapters._cli_args.UsageError`), not a traceback or a half-started server.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import smtpproto

from ._authfile import AuthFileError, AuthUsers, load_auth_file
from ._cli_args import UsageError
from ._maildir import Maildir, Mbox, MessageSink, StdoutSink
from ._options import ServerOptions
from ._tls import self_signed_context, server_context

__all__ = ["AUTH_FILE_METHODS", "ServeSettings", "load_backend", "serve_settings"]

#: The mechanisms a users file can check (the token mechanisms need an OAuth server, not a file).
AUTH_FILE_METHODS = ("PLAIN", "LOGIN", "CRAM-MD5")


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything ``smtpproto serve`` needs, checked."""

    host: str
    port: int
    backend: str
    #: The event loop under the asyncio/anyio backends: ``asyncio`` or ``uvloop``.
    loop: str
    workers: int
    log_level: str
    options: ServerOptions
    sink: MessageSink
    #: How the sink is named in the start-up line, e.g. ``maildir ./maildir``.
    sink_label: str
    add_received: bool
    users: AuthUsers | None


def serve_settings(args: argparse.Namespace) -> ServeSettings:
    """Check ``serve``'s arguments and build its settings; raises :class:`UsageError`."""
    load_backend(args.backend)
    _check_loop(args.loop, args.backend)
    context = _tls_context(args)
    users, methods = _auth(args, tls=context is not None)
    xclient = _peers("--xclient", args.xclient)
    xforward = _peers("--xforward", args.xforward)
    if args.stdout and args.workers > 1:
        # Each worker writes whole messages, but two workers' messages could interleave on one pipe.
        raise UsageError("--stdout cannot be combined with --workers")
    sink, label = _sink(args)
    try:
        options = ServerOptions(
            name=args.name,
            banner=args.banner,
            lmtp=args.lmtp,
            secure=args.implicit_tls,
            ssl_context=context,
            # Without a certificate the library would make one up and warn; the CLI offers no STARTTLS.
            disabled_commands=() if context is not None else ("STARTTLS",),
            size=args.size,
            line_endings=smtpproto.LineEndings(args.line_endings) if args.line_endings else None,
            auth_methods=methods,
            auth_optional=not args.auth_required,
            allow_insecure_auth=args.allow_insecure_auth,
            max_recipients=args.max_recipients,
            max_clients=args.max_clients,
            use_proxy=args.proxy_protocol,
            use_xclient=xclient or False,
            use_xforward=xforward or False,
            disable_reverse_lookup=args.no_reverse_lookup,
            socket_timeout=args.socket_timeout,
            close_timeout=args.close_timeout,
            reuse_port=args.workers > 1,
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None
    return ServeSettings(
        host=args.host,
        port=args.port,
        backend=args.backend,
        loop=args.loop,
        workers=args.workers,
        log_level=args.log_level,
        options=options,
        sink=sink,
        sink_label=label,
        add_received=not args.no_received_header,
        users=users,
    )


def load_backend(name: str) -> object:
    """The module of backend ``name``; :class:`UsageError` when it (or its I/O library) is missing."""
    try:
        return importlib.import_module(f"smtpproto_adapters.{name}")
    except ImportError as exc:
        hint = f" (pip install 'smtpproto[{name}]')" if name in ("anyio", "trio") else ""
        raise UsageError(f"backend {name!r} is not available: {exc}{hint}") from None


def _check_loop(loop: str, backend: str) -> None:
    """``--loop uvloop`` needs an asyncio-based backend and uvloop itself."""
    if loop == "asyncio":
        return
    if backend not in ("asyncio", "anyio"):
        raise UsageError(f"--loop {loop} needs --backend asyncio or anyio, not {backend}")
    try:
        importlib.import_module(loop)
    except ImportError as exc:
        raise UsageError(f"--loop {loop} is not available: {exc} (pip install {loop})") from None


def _peers(flag: str, value: str | None) -> tuple[str, ...]:
    """The trusted peers of ``--xclient``/``--xforward`` (empty when the flag was not given)."""
    peers = tuple(p.strip() for p in (value or "").split(",") if p.strip())
    if value is not None and not peers:
        raise UsageError(f"{flag} needs at least one trusted peer address")
    return peers


def _reason(exc: BaseException) -> str:
    """An OSError's reason without the repeated file name (``No such file or directory``)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context asked for (built now, so a bad file fails before listening), or None."""
    if args.tls_key and not args.tls_cert:
        raise UsageError("--tls-key needs --tls-cert")
    if args.self_signed and args.tls_cert:
        raise UsageError("give --tls-cert or --self-signed, not both")
    if args.tls_cert:
        try:
            return server_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            files = args.tls_cert + (f" / {args.tls_key}" if args.tls_key else "")
            raise UsageError(f"cannot load the TLS certificate {files}: {_reason(exc)}") from None
    if args.self_signed:
        try:
            return self_signed_context("localhost")
        except ImportError:
            raise UsageError(
                "--self-signed needs the 'cryptography' package (pip install 'smtpproto[tls]')"
            ) from None
    if args.implicit_tls:
        raise UsageError("--implicit-tls needs a certificate: --tls-cert FILE or --self-signed")
    return None


def _auth(args: argparse.Namespace, *, tls: bool) -> tuple[AuthUsers | None, tuple[str, ...]]:
    """The users file and the mechanisms to offer (none without a file)."""
    if not args.auth_file:
        for flag in ("auth_required", "allow_insecure_auth", "auth_methods"):
            if getattr(args, flag):
                raise UsageError(f"--{flag.replace('_', '-')} needs --auth-file")
        return None, ()
    try:
        users = load_auth_file(args.auth_file)
    except AuthFileError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot read the auth file {args.auth_file}: {_reason(exc)}") from None
    if not len(users):
        raise UsageError(f"the auth file {args.auth_file} has no users")
    if not tls and not args.allow_insecure_auth:
        raise UsageError(
            "AUTH is only offered over TLS: add --tls-cert FILE or --self-signed "
            "(or --allow-insecure-auth to send passwords in clear text)"
        )
    if args.auth_methods is None:
        methods = ("PLAIN", "LOGIN", "CRAM-MD5") if users.all_plain else ("PLAIN", "LOGIN")
        return users, methods
    chosen: list[str] = []
    for name in re.split(r"[\s,]+", args.auth_methods.upper()):
        if not name or name in chosen:
            continue
        if name not in AUTH_FILE_METHODS:
            raise UsageError(
                f"--auth-methods: {name} is not supported with an auth file "
                f"(choose from {', '.join(AUTH_FILE_METHODS)})"
            )
        if name == "CRAM-MD5" and not users.all_plain:
            raise UsageError(
                "--auth-methods: CRAM-MD5 needs every password of the auth file in plain text"
            )
        chosen.append(name)
    if not chosen:
        raise UsageError("--auth-methods: no mechanism given")
    return users, tuple(chosen)


def _sink(args: argparse.Namespace) -> tuple[MessageSink, str]:
    """The sink asked for, checked now so that a bad path fails before listening."""
    if args.stdout:
        return StdoutSink(), "standard output"
    if args.mbox:
        path = Path(args.mbox)
        if path.exists():
            if not path.is_file():
                raise UsageError(f"--mbox {path}: not a regular file")
            try:
                with path.open("ab"):
                    pass
            except OSError as exc:
                raise UsageError(f"--mbox {path}: {_reason(exc)}") from None
        elif not path.resolve().parent.is_dir():
            raise UsageError(f"--mbox {path}: the directory {path.parent} does not exist")
        return Mbox(path), f"mbox {path}"
    path = Path(args.maildir or "maildir")
    try:
        for sub in ("tmp", "new", "cur"):
            os.makedirs(path / sub, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create the Maildir {path}: {_reason(exc)}") from None
    return Maildir(path), f"maildir {args.maildir or './maildir'}"
