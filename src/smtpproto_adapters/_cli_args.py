"""The ``smtpproto`` argument parser: every flag, its help text and its value checks.

A bad value or an unknown flag is reported by :class:`Parser` as one line and exit status 2; checks that
need more than one flag, or a file, live in :mod:`smtpproto_adapters._cli_settings`.
"""

from __future__ import annotations

import argparse
import re
from typing import NoReturn

import smtpproto
from smtpproto import __version__

__all__ = ["BACKENDS", "LOG_LEVELS", "LOOPS", "Parser", "UsageError", "build_parser"]

#: The ``--backend`` choices; each is the module ``smtpproto_adapters.<name>``, imported only when chosen.
BACKENDS = ("asyncio", "anyio", "trio", "blocking")
#: The ``--loop`` choices: the event loop under the asyncio and anyio backends.
LOOPS = ("asyncio", "uvloop")
LOG_LEVELS = ("debug", "info", "warning", "error")
_SIZE = re.compile(r"([0-9]+)\s*([KMG]?)I?B?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


class UsageError(Exception):
    """A mistake on the command line or in a file it names; the message is the one line shown."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are a single line (argparse prints the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` and exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _size(text: str) -> int:
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 1000000, 512K, 25M)")
    return int(match[1]) * _UNITS[match[2].upper()]


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"not a port number: {value} (0-65535; 0 picks a free one)"
        )
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


_DESCRIPTION = """\
smtpproto: an SMTP and LMTP server toolkit for Python.
'smtpproto serve' runs a mail sink that stores every message it accepts;
'smtpproto hash-password' makes password hashes for its --auth-file."""

_SERVE_DESCRIPTION = """\
Listen for SMTP (or LMTP) and store every accepted message: in a Maildir
(default ./maildir), an mbox file or on standard output. A message is answered
250 only once it is durably stored; a failure to store is answered 451 4.3.0
and leaves no partial file. A Received: header is added at the top.

Standard output gets one line when listening starts and one line per stored
message (time, client, sender, recipients, size, file). SIGINT or SIGTERM
stops the server gracefully. Exit status: 0 after a clean stop, 2 for a usage
error, 1 for any other failure (e.g. the port is in use)."""

_SERVE_EPILOG = """\
examples:
  smtpproto serve                       a sink on 127.0.0.1:2525 into ./maildir
  smtpproto serve --self-signed --auth-file users
                                        STARTTLS, AUTH checked against a file
  smtpproto serve --port 2465 --implicit-tls --tls-cert cert.pem --tls-key key.pem
  smtpproto serve --lmtp --port 2424 --mbox mail.mbox
  smtpproto serve --host 0.0.0.0 --port 25 --workers 4 --proxy-protocol
                                        four processes behind HAProxy send-proxy-v2

users file (--auth-file): one 'user:password' per line, or 'user:$scrypt$...'
as printed by 'smtpproto hash-password'; lines starting with '#' are comments.
See docs/cli.md and docs/deployment.md for more."""


def build_parser() -> Parser:
    """The ``smtpproto`` parser with its ``serve`` and ``hash-password`` commands."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = Parser(prog="smtpproto", description=_DESCRIPTION, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"smtpproto {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = commands.add_parser(
        "serve",
        help="run an SMTP/LMTP server that stores every message it accepts",
        description=_SERVE_DESCRIPTION,
        epilog=_SERVE_EPILOG,
        formatter_class=fmt,
    )
    _add_serve_arguments(serve)
    hasher = commands.add_parser(
        "hash-password",
        help="print the scrypt hash of a password, for a line of the --auth-file",
        description="Read a password (the first line of standard input, or asked for twice on a "
        "terminal) and print its salted scrypt hash; with USER, print the whole 'USER:hash' line.",
        formatter_class=fmt,
    )
    hasher.add_argument("user", nargs="?", metavar="USER", help="print 'USER:<hash>'")
    return parser


def _add_serve_arguments(serve: argparse.ArgumentParser) -> None:
    net = serve.add_argument_group("listening")
    net.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default %(default)s)"
    )
    net.add_argument(
        "--port", type=_port, default=2525, help="port (default %(default)s; 0 picks a free one)"
    )
    net.add_argument(
        "--name", help="server name in the greeting and EHLO (default: this host's FQDN)"
    )
    net.add_argument("--banner", default="", help="text after ESMTP/LMTP in the greeting")
    net.add_argument("--lmtp", action="store_true", help="speak LMTP (RFC 2033) instead of SMTP")

    storage = serve.add_argument_group("storage (one of --maildir, --mbox, --stdout)")
    store = storage.add_mutually_exclusive_group()
    store.add_argument(
        "--maildir", metavar="DIR", help="store into this Maildir (default ./maildir; created)"
    )
    store.add_argument("--mbox", metavar="FILE", help="append to this mbox file (mboxrd, locked)")
    store.add_argument(
        "--stdout", action="store_true", help="write each message to standard output"
    )
    storage.add_argument(
        "--no-received-header",
        action="store_true",
        help="store messages exactly as received, without a Received: trace header",
    )

    tls = serve.add_argument_group("TLS (STARTTLS is offered only with a certificate)")
    tls.add_argument("--tls-cert", metavar="PEM", help="certificate chain (may hold the key too)")
    tls.add_argument("--tls-key", metavar="PEM", help="private key, if not in --tls-cert")
    tls.add_argument(
        "--self-signed",
        action="store_true",
        help="generate a self-signed certificate for localhost (needs 'cryptography')",
    )
    tls.add_argument(
        "--implicit-tls",
        action="store_true",
        help="TLS from the first byte (port 465 style) instead of STARTTLS",
    )

    auth = serve.add_argument_group("authentication")
    auth.add_argument(
        "--auth-file", metavar="FILE", help="offer AUTH, checked against this users file"
    )
    auth.add_argument(
        "--auth-required", action="store_true", help="refuse mail from unauthenticated clients"
    )
    auth.add_argument(
        "--allow-insecure-auth",
        action="store_true",
        help="offer AUTH on unencrypted connections too (passwords in clear text!)",
    )
    auth.add_argument(
        "--auth-methods",
        metavar="LIST",
        help="comma-separated mechanisms: PLAIN, LOGIN, CRAM-MD5 "
        "(default PLAIN,LOGIN, plus CRAM-MD5 when every password in the file is plain text)",
    )

    limits = serve.add_argument_group("limits")
    limits.add_argument(
        "--size", type=_size, metavar="BYTES", help="largest message (e.g. 25M); default no limit"
    )
    limits.add_argument(
        "--max-clients", type=_count, metavar="N", help="concurrent connections (per worker)"
    )
    limits.add_argument("--max-recipients", type=_count, metavar="N", help="recipients per message")
    limits.add_argument(
        "--socket-timeout",
        type=_seconds,
        default=60.0,
        metavar="SECONDS",
        help="idle time before a client is dropped (default %(default)s)",
    )
    limits.add_argument(
        "--close-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, how long open sessions may go on (default %(default)s)",
    )
    limits.add_argument(
        "--line-endings",
        choices=[policy.value for policy in smtpproto.LineEndings],
        help="bare CR/LF (SMTP smuggling): reject (default), normalize to CRLF, or allow",
    )

    proxies = serve.add_argument_group("proxies")
    proxies.add_argument(
        "--proxy-protocol",
        action="store_true",
        help="every connection starts with a PROXY v1/v2 header (HAProxy send-proxy-v2)",
    )
    proxies.add_argument(
        "--xclient",
        metavar="PEERS",
        help="accept XCLIENT (nginx mail proxy, Postfix) from these comma-separated addresses",
    )
    proxies.add_argument(
        "--xforward",
        metavar="PEERS",
        help="accept XFORWARD (Postfix content filters) from these comma-separated addresses",
    )
    proxies.add_argument(
        "--no-reverse-lookup", action="store_true", help="do not look up client host names"
    )

    run = serve.add_argument_group("running")
    run.add_argument(
        "--backend", choices=BACKENDS, default="asyncio", help="I/O backend (default %(default)s)"
    )
    run.add_argument(
        "--loop",
        choices=LOOPS,
        default="asyncio",
        help="event loop of the asyncio and anyio backends (default %(default)s)",
    )
    run.add_argument(
        "--workers",
        type=_count,
        default=1,
        metavar="N",
        help="processes sharing the port with SO_REUSEPORT (default %(default)s)",
    )
    run.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="log to standard error from this level (default %(default)s)",
    )
