"""Message sinks (smtpproto_adapters._maildir): Maildir without mail loss, mboxrd, and the stdout sink.

The failure tests check the one promise that matters: whatever goes wrong, ``new/`` (or the mbox) never
holds a partial message, and nothing is left behind in ``tmp/``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import os
import re
import resource
import signal
import socket
import sys
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpproto_adapters import _maildir
from smtpproto_adapters._maildir import (
    Maildir,
    Mbox,
    MessageSink,
    StdoutSink,
    unique_name,
)

HEADER = b"Received: from client.example ([192.0.2.1])\r\n\tby mx.example with ESMTP; x\r\n"
BODY = [b"Subject: hi\r\n", b"\r\n", b"line one\r\n", b"line two\r\n"]
FROM_LINE = re.compile(rb"From (\S+) [A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}\n")


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def assert_nothing_stored(md: Maildir, already: Sequence[str] = ()) -> None:
    """No new message in new/ or cur/, no leftover in tmp/."""
    assert names(md.path / "new") == sorted(already)
    assert names(md.path / "cur") == []
    if (md.path / "tmp").is_dir():
        assert names(md.path / "tmp") == []


class Boom(Exception):
    pass


# -- Maildir: layout, content, names ---------------------------------------------------------------------


def test_directories_created_on_first_use_with_mode_700(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        md = Maildir(tmp_path / "a" / "maildir")
        assert not md.path.exists()  # nothing happens until a message comes
        md.deliver(BODY, received_header=None)
    finally:
        os.umask(old_umask)
    for directory in (md.path, md.path / "tmp", md.path / "new", md.path / "cur"):
        assert directory.is_dir()
        assert directory.stat().st_mode & 0o777 == 0o700


def test_existing_maildir_is_used_as_is(tmp_path: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (tmp_path / sub).mkdir()
    (tmp_path / "cur" / "old:2,S").write_bytes(b"old")
    path = Maildir(tmp_path).deliver([b"x"], received_header=None)
    assert path.parent == tmp_path / "new"
    assert (tmp_path / "cur" / "old:2,S").read_bytes() == b"old"


def test_deliver_stores_header_then_chunks_byte_for_byte(tmp_path: Path) -> None:
    md = Maildir(tmp_path / "md")
    path = md.deliver(iter(BODY), received_header=HEADER)
    assert isinstance(path, Path)
    assert path.parent == md.path / "new"
    assert path.read_bytes() == HEADER + b"".join(BODY)
    assert path.stat().st_mode & 0o777 == 0o600
    assert names(md.path / "tmp") == []
    assert names(md.path / "cur") == []


@pytest.mark.parametrize("header", [None, b""])
def test_deliver_without_header(tmp_path: Path, header: bytes | None) -> None:
    path = Maildir(tmp_path).deliver([b"a", b"", b"b\r\n"], received_header=header)
    assert path.read_bytes() == b"ab\r\n"


def test_empty_message(tmp_path: Path) -> None:
    assert Maildir(tmp_path).deliver([], received_header=None).read_bytes() == b""


def test_deliver_keeps_bytes_exact(tmp_path: Path) -> None:
    """No line-ending conversion, no dot handling: the sink stores what it is given."""
    data = [b".\r\n", b"..x\n", b"\r", b"\nFrom \x00\xff", bytes(range(256))]
    path = Maildir(tmp_path).deliver(data, received_header=None)
    assert path.read_bytes() == b"".join(data)


def test_unique_name_follows_the_maildir_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "host/with:colons:")
    before = int(time.time())
    name = unique_name()
    after = int(time.time())
    match = re.fullmatch(r"(\d+)\.(\d+)_(\d+)\.(.*)", name)
    assert match is not None, name
    assert before <= int(match[1]) <= after
    assert int(match[2]) == os.getpid()
    assert match[4] == r"host\057with\072colons\072"
    # The counter goes up within the process.
    later = re.fullmatch(r"\d+\.\d+_(\d+)\..*", unique_name())
    assert later is not None
    assert int(later[1]) > int(match[3])


def test_delivered_file_is_named_by_the_unique_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "mx:1")
    path = Maildir(tmp_path).deliver([b"x"], received_header=None)
    assert re.fullmatch(rf"\d+\.{os.getpid()}_\d+\.mx\\0721", path.name), path.name


def test_names_are_unique_across_many_deliveries_and_threads(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    paths: list[Path] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for i in range(50):
            path = md.deliver([f"{n}-{i}".encode()], received_header=None)
            with lock:
                paths.append(path)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({p.name for p in paths}) == 400
    assert len(names(md.path / "new")) == 400
    contents = {p.read_bytes() for p in paths}
    assert contents == {f"{n}-{i}".encode() for n in range(8) for i in range(50)}


def test_taken_name_in_tmp_is_skipped_not_overwritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    md = Maildir(tmp_path)
    md.deliver([b"first"], received_header=None)  # creates the directories
    (md.path / "tmp" / "taken").write_bytes(b"someone else's")
    candidates = iter(["taken", "free"])
    monkeypatch.setattr(_maildir, "unique_name", lambda: next(candidates))
    path = md.deliver([b"mine"], received_header=None)
    assert path == md.path / "new" / "free"
    assert path.read_bytes() == b"mine"
    assert (md.path / "tmp" / "taken").read_bytes() == b"someone else's"


# -- Maildir: the incremental API ------------------------------------------------------------------------


def test_open_message_writes_incrementally_and_commits(tmp_path: Path) -> None:
    md = Maildir(tmp_path / "md")
    with md.open_message(received_header=HEADER) as msg:
        # The message exists only in tmp/ until commit.
        assert len(names(md.path / "tmp")) == 1
        for chunk in BODY:
            msg.write(chunk)
        assert names(md.path / "new") == []
        description = msg.commit()
    assert msg.path is not None
    assert description == str(msg.path)
    assert msg.path.parent == md.path / "new"
    assert msg.path.read_bytes() == HEADER + b"".join(BODY)
    assert names(md.path / "tmp") == []


def test_committed_message_rejects_more_writes_and_survives_abort(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    msg = md.open_message()
    msg.write(b"x")
    msg.commit()
    with pytest.raises(ValueError, match="committed"):
        msg.write(b"y")
    with pytest.raises(ValueError, match="committed"):
        msg.commit()
    msg.abort()  # must not remove delivered mail
    assert msg.path is not None
    assert msg.path.read_bytes() == b"x"


def test_leaving_the_block_without_commit_discards(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    with md.open_message(received_header=HEADER) as msg:
        msg.write(b"half a message")
    assert_nothing_stored(md)
    with pytest.raises(ValueError, match="aborted"):
        msg.write(b"more")
    with pytest.raises(ValueError, match="aborted"):
        msg.commit()


def test_exception_in_the_block_discards(tmp_path: Path) -> None:
    md = Maildir(tmp_path)

    def write_then_fail() -> None:
        with md.open_message() as msg:
            msg.write(b"half")
            raise Boom

    with pytest.raises(Boom):
        write_then_fail()
    assert_nothing_stored(md)


def test_explicit_abort_discards_and_is_idempotent(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    msg = md.open_message()
    msg.write(b"half")
    msg.abort()
    msg.abort()
    assert_nothing_stored(md)


# -- Maildir: failures never leave a partial message -----------------------------------------------------


def test_chunk_iterator_failing_midway(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    seen_in_tmp: list[str] = []

    def chunks() -> Iterator[bytes]:
        yield b"Subject: x\r\n\r\n"
        yield b"part of the body\r\n"
        seen_in_tmp.extend(names(md.path / "tmp"))  # the partial file really exists at this point
        raise Boom

    with pytest.raises(Boom):
        md.deliver(chunks(), received_header=HEADER)
    assert len(seen_in_tmp) == 1
    assert_nothing_stored(md)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exceptions_also_clean_up(tmp_path: Path, exc: type[BaseException]) -> None:
    """Cancellation (CancelledError is a BaseException) must not leave a file behind either."""
    md = Maildir(tmp_path)

    def chunks() -> Iterator[bytes]:
        yield b"part"
        raise exc

    with pytest.raises(exc):
        md.deliver(chunks(), received_header=None)
    assert_nothing_stored(md)


def test_file_fsync_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = Maildir(tmp_path)
    msg = md.open_message(received_header=HEADER)
    msg.write(b"body\r\n")

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "simulated I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="simulated"):
        msg.commit()
    monkeypatch.undo()
    assert_nothing_stored(md)


def test_directory_fsync_failure_takes_the_message_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename happened but is not durable: the caller reports failure, so the file must go."""
    md = Maildir(tmp_path)
    msg = md.open_message()
    msg.write(b"body\r\n")
    real_fsync = os.fsync
    calls: list[int] = []

    def fsync_failing_second(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 2:  # the first is the file, the second the new/ directory
            raise OSError(errno.EIO, "simulated directory fsync error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_second)
    with pytest.raises(OSError, match="directory"):
        msg.commit()
    monkeypatch.undo()
    assert len(calls) == 2
    assert msg.path is None
    assert_nothing_stored(md)


def test_rename_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = Maildir(tmp_path)

    def failing_rename(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "simulated rename error")

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(OSError, match="rename"):
        md.deliver(BODY, received_header=HEADER)
    monkeypatch.undo()
    assert_nothing_stored(md)


def test_unwritable_tmp(tmp_path: Path) -> None:
    """A read-only tmp/; as root chmod does not stop writes, so tmp/ is replaced by a plain file instead."""
    md = Maildir(tmp_path)
    first = md.deliver([b"first"], received_header=None)
    tmp_dir = md.path / "tmp"
    tmp_dir.chmod(0o500)
    try:
        probe = tmp_dir / "probe"
        try:
            probe.write_bytes(b"")
        except PermissionError:
            writable = False
        else:
            writable = True  # running as root (or with CAP_DAC_OVERRIDE)
            probe.unlink()
        if writable:
            tmp_dir.chmod(0o700)
            tmp_dir.rmdir()
            tmp_dir.write_bytes(b"not a directory")
        with pytest.raises((PermissionError, NotADirectoryError)):
            md.deliver(BODY, received_header=HEADER)
    finally:
        if tmp_dir.is_dir():
            tmp_dir.chmod(0o700)
    assert names(md.path / "new") == [first.name]
    assert first.read_bytes() == b"first"
    if writable:
        assert tmp_dir.read_bytes() == b"not a directory"
    else:
        assert names(tmp_dir) == []


def test_disk_full_in_the_middle_of_writing(tmp_path: Path) -> None:
    """A real write error half-way through (RLIMIT_FSIZE gives EFBIG, even for root)."""
    md = Maildir(tmp_path)
    md.deliver([b"warm up"], received_header=None)
    [warm_up] = names(md.path / "new")
    chunk = b"x" * 65536
    consumed = 0

    def chunks() -> Iterator[bytes]:
        nonlocal consumed
        for _ in range(64):  # 4 MiB, past the 1 MiB limit
            consumed += 1
            yield chunk

    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, old_limit[1]))
    try:
        with pytest.raises(OSError, match="too large") as info:
            md.deliver(chunks(), received_header=HEADER)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert info.value.errno == errno.EFBIG
    assert 1 < consumed < 64  # it failed in the middle, not before or after
    assert_nothing_stored(md, [warm_up])


# -- Maildir: properties and memory ----------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=300), max_size=8),
    header=st.none() | st.binary(max_size=100),
    incremental=st.booleans(),
)
def test_any_bytes_round_trip_exactly(
    chunks: list[bytes], header: bytes | None, incremental: bool
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        md = Maildir(directory)
        if incremental:
            with md.open_message(received_header=header) as msg:
                for chunk in chunks:
                    msg.write(chunk)
                path = Path(msg.commit())
        else:
            path = md.deliver(iter(chunks), received_header=header)
        assert path.read_bytes() == (header or b"") + b"".join(chunks)
        assert names(md.path / "tmp") == []


MESSAGE_SIZE = 50 * 1024 * 1024
CHUNK_SIZE = 64 * 1024


def _fresh_chunks(digest: hashlib._Hash) -> Iterator[bytes]:
    """50 MiB in 64 KiB chunks, each a new object (as if just read from a socket)."""
    for i in range(MESSAGE_SIZE // CHUNK_SIZE):
        chunk = bytes([65 + i % 26]) * (CHUNK_SIZE - 2) + b"\r\n"
        digest.update(chunk)
        yield chunk


def _file_digest(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _streamed_peak(sink: MessageSink) -> tuple[int, str, str]:
    """Stream 50 MiB through ``sink``; return the traced peak growth, the input digest and the description."""
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with sink.open_message(received_header=HEADER) as msg:
            for chunk in _fresh_chunks(digest):
                msg.write(chunk)
            description = msg.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - baseline, digest.hexdigest(), description


LOW_MEMORY = 4 * 1024 * 1024  # far below the 50 MiB message


def test_maildir_streams_50_mb_in_little_memory(tmp_path: Path) -> None:
    growth, digest, description = _streamed_peak(Maildir(tmp_path))
    assert growth < LOW_MEMORY, growth
    path = Path(description)
    assert path.stat().st_size == len(HEADER) + MESSAGE_SIZE
    with path.open("rb") as f:
        assert f.read(len(HEADER)) == HEADER
        rest = hashlib.sha256()
        while block := f.read(1 << 20):
            rest.update(block)
    assert rest.hexdigest() == digest


def test_deliver_consumes_a_generator_lazily(tmp_path: Path) -> None:
    md = Maildir(tmp_path)
    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        baseline, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        path = md.deliver(_fresh_chunks(digest), received_header=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - baseline < LOW_MEMORY
    assert _file_digest(path) == digest.hexdigest()


def test_mbox_and_stdout_stream_50_mb_in_little_memory(tmp_path: Path) -> None:
    growth, _, description = _streamed_peak(Mbox(tmp_path / "mbox"))
    assert growth < LOW_MEMORY, growth
    # CRLF → LF, so each 64 KiB chunk lost one byte; plus the From line and the closing blank line.
    size = Path(description).stat().st_size
    header_lf = len(HEADER.replace(b"\r\n", b"\n"))
    with (tmp_path / "mbox").open("rb") as f:
        from_line = f.readline()
    assert size == len(from_line) + header_lf + MESSAGE_SIZE - MESSAGE_SIZE // CHUNK_SIZE + 1
    with (tmp_path / "out").open("wb") as stream:
        growth, _, _ = _streamed_peak(StdoutSink(stream))
    assert growth < LOW_MEMORY, growth


# -- Mbox ------------------------------------------------------------------------------------------------


def parse_mboxrd(data: bytes) -> list[tuple[bytes, bytes]]:
    """A minimal mboxrd reader: (sender, message) pairs, with one '>' removed from '>+From ' lines."""
    messages: list[tuple[bytes, list[bytes]]] = []
    # Lines end at LF only: a bare CR is part of a line, as for any mbox reader.
    for line in re.findall(rb"[^\n]*\n|[^\n]+\Z", data):
        if line.startswith(b"From "):
            match = FROM_LINE.fullmatch(line)
            assert match is not None, line
            messages.append((match[1], []))
            continue
        assert messages, "data before the first From line"
        if re.match(rb">+From ", line):
            line = line[1:]
        messages[-1][1].append(line)
    result = []
    for sender, lines in messages:
        assert lines, "a message must end with an empty line"
        assert lines[-1] == b"\n"
        result.append((sender, b"".join(lines[:-1])))
    return result


def mbox_form(message: bytes) -> bytes:
    """What a message looks like once stored in an mbox: LF line endings, ending in a newline."""
    message = message.replace(b"\r\n", b"\n")
    return message if not message or message.endswith(b"\n") else message + b"\n"


def test_mbox_appends_with_from_lines(tmp_path: Path) -> None:
    box = Mbox(tmp_path / "mbox")
    with box.open_message(received_header=HEADER, mail_from="a@example.com") as msg:
        for chunk in BODY:
            msg.write(chunk)
        assert msg.commit() == str(tmp_path / "mbox")
    with box.open_message(mail_from="", rcpt_to=["x@y"]) as msg:
        msg.write(b"Subject: second\r\n\r\nno final newline")
        msg.commit()
    data = (tmp_path / "mbox").read_bytes()
    lines = data.split(b"\n")
    assert FROM_LINE.fullmatch(lines[0] + b"\n")
    first_end = data.index(b"\nFrom MAILER-DAEMON ") + 1
    assert data[first_end - 2 : first_end] == b"\n\n"  # a blank line before every From line
    first_from = data[: data.index(b"\n") + 1]
    assert data[:first_end] == first_from + mbox_form(HEADER + b"".join(BODY)) + b"\n"
    assert parse_mboxrd(data) == [
        (b"a@example.com", mbox_form(HEADER + b"".join(BODY))),
        (b"MAILER-DAEMON", b"Subject: second\n\nno final newline\n"),
    ]
    assert (tmp_path / "mbox").stat().st_mode & 0o777 == 0o600


def test_mboxrd_quoting(tmp_path: Path) -> None:
    body = (
        b"Subject: q\r\n\r\n"
        b"From the start\r\n"
        b">From quoted once\r\n"
        b">>From quoted twice\r\n"
        b"not From at the start\r\n"
        b" From after a space\r\n"
        b"From\r\n"
        b">From\r\n"
        b"Fromage\r\n"
        b"From "
    )
    box = Mbox(tmp_path / "mbox")
    with box.open_message(mail_from="s@x") as msg:
        msg.write(body)
        msg.commit()
    data = (tmp_path / "mbox").read_bytes()
    stored = data[data.index(b"\n") + 1 :]
    assert stored == (
        b"Subject: q\n\n"
        b">From the start\n"
        b">>From quoted once\n"
        b">>>From quoted twice\n"
        b"not From at the start\n"
        b" From after a space\n"
        b"From\n"
        b">From\n"
        b"Fromage\n"
        b">From \n"
        b"\n"
    )
    assert parse_mboxrd(data) == [(b"s@x", mbox_form(body))]


@pytest.mark.parametrize("size", [1, 2, 3, 7])
def test_mboxrd_quoting_across_chunk_boundaries(tmp_path: Path, size: int) -> None:
    body = b"a\r\nFrom x\r\n>>From y\r\n>>>>Fro\r\nFro\rFrom z\r\nFrom"
    whole = Mbox(tmp_path / "whole")
    with whole.open_message(mail_from="s") as msg:
        msg.write(body)
        msg.commit()
    split = Mbox(tmp_path / "split")
    with split.open_message(mail_from="s") as msg:
        for i in range(0, len(body), size):
            msg.write(body[i : i + size])
        msg.commit()
    expected = (tmp_path / "whole").read_bytes().split(b"\n", 1)[1]
    assert (tmp_path / "split").read_bytes().split(b"\n", 1)[1] == expected
    assert expected == b"a\n>From x\n>>>From y\n>>>>Fro\nFro\rFrom z\nFrom\n\n"


@settings(max_examples=150, deadline=None)
@given(
    messages=st.lists(
        st.lists(
            st.lists(
                st.sampled_from([b"From ", b">", b"\r", b"\n", b"\r\n", b"F", b"rom", b"x", b" "]),
                max_size=12,
            ).map(b"".join),
            max_size=4,
        ),
        min_size=1,
        max_size=3,
    )
)
def test_mboxrd_round_trip(messages: list[list[bytes]]) -> None:
    """Whatever the bytes and chunking, a mboxrd reader gets each message back (in mbox form)."""
    with tempfile.TemporaryDirectory() as directory:
        box = Mbox(Path(directory) / "mbox")
        for chunks in messages:
            with box.open_message(mail_from="s@x") as msg:
                for chunk in chunks:
                    msg.write(chunk)
                msg.commit()
        data = (Path(directory) / "mbox").read_bytes()
    assert parse_mboxrd(data) == [(b"s@x", mbox_form(b"".join(chunks))) for chunks in messages]


def test_mbox_sender_is_one_token(tmp_path: Path) -> None:
    box = Mbox(tmp_path / "mbox")
    with box.open_message(mail_from='"a b"\r\n@x\x00y') as msg:
        msg.commit()
    first = (tmp_path / "mbox").read_bytes().split(b"\n")[0]
    assert first.startswith(b'From "a_b"__@x_y ')


def test_mbox_adds_the_missing_blank_line_of_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    for existing, gap in [
        (b"From a Thu Jan  1 00:00:00 1970\nbody", b"\n\n"),
        (b"x\n", b"\n"),
        (b"x\n\n", b""),
    ]:
        path.write_bytes(existing)
        with Mbox(path).open_message(mail_from="s") as msg:
            msg.write(b"m\r\n")
            msg.commit()
        data = path.read_bytes()
        assert data.startswith(existing + gap + b"From s ")
        assert data.endswith(b"\nm\n\n")


def test_mbox_abort_leaves_the_file_alone(tmp_path: Path) -> None:
    box = Mbox(tmp_path / "mbox")
    with box.open_message(mail_from="s") as msg:
        msg.write(b"never stored")
    assert not (tmp_path / "mbox").exists()
    with pytest.raises(ValueError, match="aborted"):
        msg.commit()


def test_mbox_failure_while_appending_truncates_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = Mbox(tmp_path / "mbox")
    with box.open_message(mail_from="s") as msg:
        msg.write(b"first\r\n")
        msg.commit()
    before = (tmp_path / "mbox").read_bytes()
    real_write = os.write
    calls = 0

    def failing_write(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:  # after the From line and one block: a partial message is in the file
            raise OSError(errno.ENOSPC, "simulated disk full")
        return real_write(fd, data)

    msg = box.open_message(mail_from="s")
    for _ in range(4):
        msg.write(b"y" * 65536 + b"\r\n")
    monkeypatch.setattr(os, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        msg.commit()
    monkeypatch.undo()
    assert calls == 3
    assert (tmp_path / "mbox").read_bytes() == before


def test_mbox_fsync_failure_truncates_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mbox").write_bytes(b"")
    msg = Mbox(tmp_path / "mbox").open_message(mail_from="s")
    msg.write(b"body\r\n")
    real_fsync = os.fsync
    calls = 0

    def fsync_failing_first(fd: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError(errno.EIO, "simulated I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_failing_first)
    with pytest.raises(OSError, match="simulated"):
        msg.commit()
    monkeypatch.undo()
    assert (tmp_path / "mbox").read_bytes() == b""


def test_mbox_appends_under_an_exclusive_flock(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    path.write_bytes(b"")
    msg = Mbox(path).open_message(mail_from="s")
    msg.write(b"body\r\n")
    done = threading.Event()
    errors: list[BaseException] = []

    def commit() -> None:
        try:
            msg.commit()
        except OSError as exc:  # pragma: no cover - reported below
            errors.append(exc)
        done.set()

    with path.open("rb") as holder:
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
        thread = threading.Thread(target=commit)
        thread.start()
        assert not done.wait(0.3), "appended while another process held the lock"
        assert path.read_bytes() == b""
        fcntl.flock(holder.fileno(), fcntl.LOCK_UN)
    thread.join(10)
    assert done.is_set()
    assert not errors
    assert path.read_bytes().endswith(b"\nbody\n\n")


# -- StdoutSink and the shared protocol ------------------------------------------------------------------


def test_stdout_sink_writes_separator_and_message() -> None:
    stream = io.BytesIO()
    sink = StdoutSink(stream)
    with sink.open_message(received_header=HEADER, mail_from="a@x", rcpt_to=["b@y", "c@z"]) as msg:
        for chunk in BODY:
            msg.write(chunk)
        assert stream.getvalue() == b""  # nothing until commit: sessions never interleave
        assert msg.commit() == "<stdout> message 1"
    with sink.open_message(mail_from="", rcpt_to=["d@w"]) as msg:
        msg.write(b"no newline")
        assert msg.commit() == "<stdout> message 2"
    with sink.open_message(mail_from="x") as msg:
        msg.write(b"discarded")
    message = HEADER + b"".join(BODY)
    assert stream.getvalue() == (
        f"----- message 1 from <a@x> to <b@y>,<c@z> ({len(message)} bytes) -----\n".encode()
        + message
        + b"----- message 2 from <> to <d@w> (10 bytes) -----\n"
        + b"no newline\n"
    )


def test_stdout_separator_cannot_be_split_by_the_envelope() -> None:
    stream = io.BytesIO()
    with StdoutSink(stream).open_message(mail_from="a\r\nb", rcpt_to=["c\nd\u2028"]) as msg:
        msg.commit()
    assert stream.getvalue() == b"----- message 1 from <a??b> to <c?d?> (0 bytes) -----\n"


def test_stdout_sink_defaults_to_stdout_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeStdout:
        buffer = io.BytesIO()

    monkeypatch.setattr(sys, "stdout", FakeStdout())
    sink = StdoutSink()
    with sink.open_message() as msg:
        msg.write(b"x\n")
        msg.commit()
    assert FakeStdout.buffer.getvalue().endswith(b"(2 bytes) -----\nx\n")


def store(sink: MessageSink, chunks: Sequence[bytes]) -> str:
    """What ``smtpproto serve`` does with any sink: typed against the protocol only."""
    with sink.open_message(received_header=HEADER, mail_from="a@x", rcpt_to=["b@y"]) as msg:
        for chunk in chunks:
            msg.write(chunk)
        return msg.commit()


def test_all_sinks_share_the_protocol(tmp_path: Path) -> None:
    stream = io.BytesIO()
    sinks: list[MessageSink] = [
        Maildir(tmp_path / "md"),
        Mbox(tmp_path / "mbox"),
        StdoutSink(stream),
    ]
    descriptions = [store(sink, BODY) for sink in sinks]
    assert Path(descriptions[0]).read_bytes() == HEADER + b"".join(BODY)
    assert descriptions[1] == str(tmp_path / "mbox")
    assert descriptions[2] == "<stdout> message 1"
    assert stream.getvalue().endswith(HEADER + b"".join(BODY))
