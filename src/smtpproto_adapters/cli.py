"""The ``smtpproto`` command (also ``python -m smtpproto_adapters``).

``smtpproto serve`` runs a mail sink: an SMTP or LMTP server that stores every message it accepts in a
Maildir, an mbox file or on standard output, with TLS, AUTH from a users file, the PROXY protocol and
several worker processes as options. ``smtpproto hash-password`` prints the scrypt form of a password for
that users file. ``smtpproto --help`` and ``smtpproto serve --help`` list every flag; ``docs/cli.md`` is
the reference.

Exit status: 0 after a clean stop, 2 for a usage error (one line on standard error, never a traceback),
1 when the server cannot listen or a worker fails.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
from collections.abc import Sequence

from ._authfile import hash_password
from ._cli_args import UsageError, build_parser
from ._cli_serve import ListenError, run_server
from ._cli_settings import ServeSettings, serve_settings
from ._cli_workers import run_workers
from ._sink_handler import MessageLog

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``smtpproto`` command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "hash-password":
            return _hash_password(args)
        return _serve(args)
    except KeyboardInterrupt:
        # Ctrl-C before the server's own signal handling is in place (or at a password prompt).
        return 130


def _error(command: str, message: str, status: int = 2) -> int:
    print(f"smtpproto {command}: error: {message}", file=sys.stderr, flush=True)
    return status


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = serve_settings(args)
    except UsageError as exc:
        return _error("serve", str(exc))
    logging.basicConfig(
        level=settings.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s smtpproto[%(process)d] %(levelname)s: %(message)s",
    )
    log = MessageLog(sys.stdout.buffer)

    def ready(addresses: list[str]) -> None:
        log.line(f"smtpproto listening on {', '.join(addresses)} ({_describe(settings)})")

    try:
        if settings.workers > 1:
            return 0 if run_workers(settings, log, ready) else 1
        run_server(settings, log, ready)
    except ListenError as exc:
        return _error("serve", str(exc), 1)
    return 0


def _describe(settings: ServeSettings) -> str:
    """What the start-up line says about the server, e.g. ``SMTP, STARTTLS, AUTH, asyncio, maildir ...``."""
    options = settings.options
    parts = ["LMTP" if options.lmtp else "SMTP"]
    if options.secure:
        parts.append("implicit TLS")
    elif options.ssl_context is not None:
        parts.append("STARTTLS")
    if settings.users is not None:
        parts.append("AUTH required" if not options.auth_optional else "AUTH")
    if options.use_proxy:
        parts.append("PROXY protocol")
    parts.append(settings.backend)
    if settings.workers > 1:
        parts.append(f"{settings.workers} workers")
    parts.append(settings.sink_label)
    return ", ".join(parts)


def _hash_password(args: argparse.Namespace) -> int:
    user = (args.user or "").strip()
    if ":" in user:
        return _error("hash-password", "a user name cannot contain ':'")
    if sys.stdin.isatty():
        try:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Again: ") != password:
                return _error("hash-password", "the two passwords differ")
        except EOFError:
            return _error("hash-password", "no password given")
    else:
        # The first line of standard input, without its line ending: `echo secret | smtpproto ...`.
        password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not password:
        return _error("hash-password", "the password is empty")
    hashed = hash_password(password)
    print(f"{user}:{hashed}" if user else hashed)
    return 0
