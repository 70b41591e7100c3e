"""Coverage-guided fuzzing of the server connection with atheris.

The invariant, for ANY bytes a client may send, fed whole and in two pieces, under every configuration
drawn below:

* ``next_event()`` returns an event, ``NEED_DATA`` or ``PAUSED``, or raises ``RemoteProtocolError``
  (with its reply, if any, already queued) — nothing else, ever;
* every byte the server writes is a well-formed reply line: three digits from 200–599, a space or a
  hyphen, printable text, CRLF;
* the receive buffer never holds more than the configured caps plus the piece just fed.

Run: ``.venv/bin/python tests/fuzz/fuzz_server.py -runs=1000000`` (atheris/libFuzzer options apply; a
directory argument keeps a corpus). ``tests/fuzz/test_fuzz_smoke.py`` runs it briefly in the test suite.
``--unguided COUNT SEED`` instead feeds the same invariant COUNT seeded inputs spliced from the dictionary
(:func:`random_inputs`), without coverage guidance: that also runs where atheris cannot be installed (it is
built for x86_64 and CPython < 3.13).
"""

from __future__ import annotations

import contextlib
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

try:
    import atheris
except ImportError:  # no coverage guidance here: random_inputs() is the fallback
    atheris = None

with atheris.instrument_imports() if atheris else contextlib.nullcontext():
    import smtpproto
    from smtpproto import (
        NEED_DATA,
        PAUSED,
        ConnectionClosed,
        LineEndings,
        RemoteProtocolError,
        ServerConfig,
        ServerConnection,
        StartTLS,
    )

_REPLY_LINE = re.compile(rb"[2-5][0-9][0-9][ -][\x20-\x7e\x80-\xff]*\r\n")
_CONFIGS = [
    ServerConfig(),
    ServerConfig(lmtp=True, max_message_size=64),
    ServerConfig(line_endings=LineEndings.NORMALIZE, tls_available=True, allow_insecure_auth=True),
    ServerConfig(
        line_endings=LineEndings.ALLOW,
        secure=True,
        auth_methods=("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER"),
        nonce_factory=lambda: "1.2",
        auth_required=True,
    ),
    ServerConfig(use_proxy=True, use_xclient=True, use_xforward=True, refuse_service=False),
    ServerConfig(refuse_service=True, max_errors=3),
]
# The largest line-like buffer any reader may hold: AUTH lines, PROXY v2 headers, command lines.
_CAP = max(12288, 4096 + 16, max(config.max_command_line for config in _CONFIGS)) + 8


def _drive(conn: ServerConnection) -> bool:
    """Run the connection until it needs data; return False once it is closed."""
    while True:
        try:
            event = conn.next_event()
        except RemoteProtocolError as exc:
            fatal_reply = exc.reply
            if fatal_reply is not None and fatal_reply.code < 400:
                raise AssertionError(f"a fatal error with a positive reply: {fatal_reply}") from exc
            return False
        if event is NEED_DATA:
            return True
        if event is PAUSED:
            assert conn.awaiting is not None, "PAUSED with nothing to decide"
            conn.accept()
            continue
        assert isinstance(event, smtpproto.Event.__args__)  # type: ignore[attr-defined]
        if isinstance(event, ConnectionClosed):
            return False
        if isinstance(event, StartTLS):
            conn.tls_established(server_name="fuzz", protocol="TLSv1.3", cipher="NONE")
        if conn.awaiting is not None:
            conn.accept()


def _check_output(data: bytes) -> None:
    position = 0
    while position < len(data):
        match = _REPLY_LINE.match(data, position)
        assert match is not None, (
            f"malformed reply bytes at {position}: {data[position : position + 80]!r}"
        )
        position = match.end()


def test_one_input(data: bytes) -> None:
    """The libFuzzer entry point: the first byte picks a configuration and a split point."""
    if not data:
        return
    config = _CONFIGS[data[0] % len(_CONFIGS)]
    payload = data[1:]
    cut = (data[0] * 7) % (len(payload) + 1)
    conn = ServerConnection(config)
    output = [conn.data_to_send()]
    pieces = [piece for piece in (payload[:cut], payload[cut:]) if piece]
    for piece in [*pieces, b""]:  # b"" is the client closing
        conn.receive_data(piece)
        alive = _drive(conn)
        assert len(conn._buffer) <= _CAP + len(piece), "receive buffer above its caps"
        output.append(conn.data_to_send())
        if not alive:
            break
    _check_output(b"".join(output))


def dictionary_tokens(path: Path) -> list[bytes]:
    """The quoted tokens of a libFuzzer dictionary file (``"..."`` with ``\\xNN`` escapes)."""
    tokens = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith('"') and line.endswith('"') and len(line) >= 2:
            tokens.append(line[1:-1].encode("latin-1").decode("unicode_escape").encode("latin-1"))
    return tokens


def random_inputs(tokens: list[bytes], count: int, seed: int) -> Iterator[bytes]:
    """``count`` reproducible inputs: dictionary tokens and random bytes spliced together, then mutated."""
    rng = random.Random(seed)
    for _ in range(count):
        parts = [bytes([rng.randrange(256)])]  # the configuration and split byte
        for _ in range(rng.randrange(1, 24)):
            if rng.random() < 0.8:
                parts.append(rng.choice(tokens))
            else:
                parts.append(rng.randbytes(rng.randrange(1, 16)))
        data = bytearray(b"".join(parts))
        for _ in range(rng.randrange(3)):  # a few point mutations
            if len(data) > 1:
                data[rng.randrange(1, len(data))] = rng.randrange(256)
        yield bytes(data)


def main() -> None:
    if sys.argv[1:2] == ["--unguided"]:
        # ``--unguided COUNT SEED``: no atheris needed.
        count, seed = int(sys.argv[2]), int(sys.argv[3])
        tokens = dictionary_tokens(Path(__file__).with_name("smtp.dict"))
        for data in random_inputs(tokens, count, seed):
            test_one_input(data)
        print(f"Done {count} unguided runs", file=sys.stderr)
        return
    if atheris is None:
        raise SystemExit("atheris is not installed: run with --unguided COUNT SEED instead")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
