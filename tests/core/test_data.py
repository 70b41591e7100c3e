"""The DATA reader (smtpproto._data.DotReader): end of data, dot-unstuffing, bare line endings, splitting.

Every table case goes through :func:`read_three_ways` (whole, one byte at a time, and with a pipelined
command behind the terminator). The property tests compare the reader with itself under any split and with
:func:`oracle`, a byte-at-a-time restatement of the rules that is slow but easy to check by eye.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smtpproto._config import LineEndings
from smtpproto._data import DotReader

REJECT = LineEndings.REJECT
NORMALIZE = LineEndings.NORMALIZE
ALLOW = LineEndings.ALLOW
POLICIES = list(LineEndings)
END = b"\r\n.\r\n"
TRAILER = b"QUIT\r\n"

# (content, finished, bytes left in the buffer, bare_line_ending)
Result = tuple[bytes, bool, bytes, bool]


def feed(pieces: Iterable[bytes], policy: LineEndings) -> Result:
    """Append each piece to one buffer and read after each, as a connection does.

    Pieces after the end of data are still appended (they are the next commands) but not read.
    """
    reader = DotReader(policy)
    buf = bytearray()
    out = []
    finished = False
    for piece in pieces:
        buf += piece
        if finished:
            continue
        content, finished = reader.read(buf)
        out.append(content)
        if not finished:
            # One read takes everything that can be decided: a second one finds nothing new.
            before = bytes(buf)
            assert reader.read(buf) == (b"", False)
            assert buf == before
    assert len(buf) < 8 or finished, "the reader held back more than a few bytes"
    return b"".join(out), finished, bytes(buf), reader.bare_line_ending


def bytewise(data: bytes) -> list[bytes]:
    """``data`` one byte at a time."""
    return [data[i : i + 1] for i in range(len(data))]


def read_three_ways(data: bytes, policy: LineEndings) -> tuple[bytes, bool]:
    """Read a complete message whole, byte by byte and with trailing bytes; return (content, bare flag).

    Asserts that all three agree, that the message ends exactly at its last byte, and that bytes after the
    terminator stay in the buffer untouched.
    """
    content, finished, left, bare = feed([data], policy)
    assert finished, "the message did not end"
    assert left == b"", f"the message ended early, leaving {left!r}"
    assert feed(bytewise(data), policy) == (content, True, b"", bare), (
        "byte-at-a-time input differs"
    )
    assert feed([data + TRAILER], policy) == (content, True, TRAILER, bare), "trailing bytes differ"
    assert feed(bytewise(data + TRAILER), policy) == (content, True, TRAILER, bare)
    return content, bare


def oracle(data: bytes, policy: LineEndings) -> Result:
    """The rules one byte at a time, for input that contains an end of data; returns like :func:`feed`."""
    normalize = policy is NORMALIZE
    out = bytearray()
    bare = False
    wire_line_start = True  # after a CRLF as sent, or at the very start: the marker may begin here
    repaired_line_start = False  # NORMALIZE only: after a bare CR or LF turned into CRLF
    i = 0
    while i < len(data):
        byte = data[i : i + 1]
        if byte == b"." and (wire_line_start or repaired_line_start):
            if wire_line_start and data[i + 1 : i + 3] == b"\r\n":
                return bytes(out), True, data[i + 3 :], bare
            i += 1  # a stuffed dot: dropped, whatever follows
            wire_line_start = repaired_line_start = False
            continue
        wire_line_start = repaired_line_start = False
        if byte == b"\r" and data[i + 1 : i + 2] == b"\n":
            out += b"\r\n"
            wire_line_start = True
            i += 2
            continue
        if byte in (b"\r", b"\n"):
            bare = True
            out += b"\r\n" if normalize else byte
            repaired_line_start = normalize
        else:
            out += byte
        i += 1
    raise AssertionError("the oracle found no end of data")


# -- examples --------------------------------------------------------------------------------------

SAME_UNDER_ALL_POLICIES = [
    pytest.param(b"Subject: t\r\n\r\nhello\r\n.\r\n", b"Subject: t\r\n\r\nhello\r\n", id="simple"),
    pytest.param(b".\r\n", b"", id="empty-message"),
    pytest.param(b"\r\n.\r\n", b"\r\n", id="one-empty-line"),
    pytest.param(
        b"..leading\r\n...\r\n.x\r\nend\r\n.\r\n",
        b".leading\r\n..\r\nx\r\nend\r\n",
        id="unstuffing",
    ),
    pytest.param(b"..\r\n.\r\n", b".\r\n", id="one-dot-line"),
    pytest.param(
        b"Subject: t\r\n\r\n..leading\r\n...\r\nend\r\n.\r\n",
        b"Subject: t\r\n\r\n.leading\r\n..\r\nend\r\n",
        id="REFERENCE-stuffed-body",
    ),
    pytest.param(
        b".foo\r\nx\r\n.bar\r\n.\r\n", b"foo\r\nx\r\nbar\r\n", id="REFERENCE-unstuffed-dots"
    ),
    pytest.param(b"\x00\xff\xfe\r\n.\r\n", b"\x00\xff\xfe\r\n", id="REFERENCE-nul-and-8bit"),
    pytest.param(
        b"MAIL FROM:<evil@x>\r\nRCPT TO:<y@x>\r\n.\r\n",
        b"MAIL FROM:<evil@x>\r\nRCPT TO:<y@x>\r\n",
        id="REFERENCE-commands-are-content",
    ),
    pytest.param(b"hi\r\n.\r\n", b"hi\r\n", id="REFERENCE-trailing-command-stays"),
    pytest.param(b"a.b\r\nc. .d\r\n.\r\n", b"a.b\r\nc. .d\r\n", id="dots-mid-line"),
    pytest.param(b"\r\n\r\n.\r\n", b"\r\n\r\n", id="empty-lines"),
    pytest.param(
        b"a.b.c.d.e.f.g.h.i.j.\r\n..x\r\n.\r\n", b"a.b.c.d.e.f.g.h.i.j.\r\n.x\r\n", id="many-dots"
    ),
    pytest.param(
        b"a.b.c.d.e.f.g.h.\r\n..x\r\n.\r\n",
        b"a.b.c.d.e.f.g.h.\r\n.x\r\n",
        id="many-dots-then-stuffed",
    ),
    pytest.param(b"." * 40 + b"\r\n.\r\n", b"." * 39 + b"\r\n", id="dot-run"),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
@pytest.mark.parametrize(("data", "content"), SAME_UNDER_ALL_POLICIES)
def test_clean_messages(data: bytes, content: bytes, policy: LineEndings) -> None:
    assert read_three_ways(data, policy) == (content, False)


def test_trailing_bytes_stay_in_the_buffer() -> None:
    buf = bytearray(b"hi\r\n.\r\nQUIT\r\n")
    assert DotReader(REJECT).read(buf) == (b"hi\r\n", True)
    assert buf == b"QUIT\r\n"


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_only_the_first_marker_is_read(policy: LineEndings) -> None:
    assert feed([b"x\r\n.\r\n.\r\n"], policy) == (b"x\r\n", True, b".\r\n", False)
    assert feed(bytewise(b"x\r\n.\r\n.\r\n"), policy) == (b"x\r\n", True, b".\r\n", False)


BARE = [
    # (wire, content under REJECT and ALLOW, content under NORMALIZE)
    pytest.param(b"a\n..x\r\n.\r\n", b"a\n..x\r\n", b"a\r\n.x\r\n", id="lf-then-dots"),
    pytest.param(b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n", b"a\r\n\r\nb\r\n", id="lf-dot-lf"),
    pytest.param(b"a\r.x\r\n.\r\n", b"a\r.x\r\n", b"a\r\nx\r\n", id="cr-dot"),
    pytest.param(b"a\r\r\nb\r\n.\r\n", b"a\r\r\nb\r\n", b"a\r\n\r\nb\r\n", id="cr-crlf"),
    pytest.param(b"\n\r\n.\r\n", b"\n\r\n", b"\r\n\r\n", id="leading-lf"),
    pytest.param(b"\r\r\n.\r\n", b"\r\r\n", b"\r\n\r\n", id="leading-cr"),
    pytest.param(b".\n.\r\n.\r\n", b"\n.\r\n", b"\r\n\r\n", id="first-line-dot-lf"),
    pytest.param(b".\rx\r\n.\r\n", b"\rx\r\n", b"\r\nx\r\n", id="first-line-dot-cr"),
    pytest.param(b"x\r\n.\r\r\n.\r\n", b"x\r\n\r\r\n", b"x\r\n\r\n\r\n", id="dot-cr-crlf"),
    pytest.param(b"x\r\n.\r.\r\n.\r\n", b"x\r\n\r.\r\n", b"x\r\n\r\n\r\n", id="dot-cr-dot"),
    pytest.param(b"x\r\n.\n.\r\n.\r\n", b"x\r\n\n.\r\n", b"x\r\n\r\n\r\n", id="dot-lf-dot"),
    pytest.param(b"a\n\n\n\r\n.\r\n", b"a\n\n\n\r\n", b"a\r\n\r\n\r\n\r\n", id="lf-run"),
    pytest.param(b"a\r\r\r\r\n.\r\n", b"a\r\r\r\r\n", b"a\r\n\r\n\r\n\r\n", id="cr-run"),
    pytest.param(
        b"\x00\n\x00\r\x00\r\n.\r\n", b"\x00\n\x00\r\x00\r\n", b"\x00\r\n\x00\r\n\x00\r\n", id="nul"
    ),
]


@pytest.mark.parametrize("policy", [REJECT, ALLOW], ids=lambda p: p.name)
@pytest.mark.parametrize(("data", "passed", "normalized"), BARE)
def test_bare_line_endings_pass_through(
    data: bytes, passed: bytes, normalized: bytes, policy: LineEndings
) -> None:
    assert read_three_ways(data, policy) == (passed, True)


@pytest.mark.parametrize(("data", "passed", "normalized"), BARE)
def test_bare_line_endings_are_normalized(data: bytes, passed: bytes, normalized: bytes) -> None:
    assert read_three_ways(data, NORMALIZE) == (normalized, True)


def test_bare_flag_covers_only_decided_bytes() -> None:
    reader = DotReader(REJECT)
    buf = bytearray(b"abc\r")
    assert reader.read(buf) == (b"abc", False)
    assert not reader.bare_line_ending  # the CR may still become a CRLF
    buf += b"x"
    assert reader.read(buf) == (b"\rx", False)
    assert reader.bare_line_ending


def test_bare_flag_stays_set_and_reading_goes_on() -> None:
    reader = DotReader(REJECT)
    buf = bytearray(b"a\nb\r\n")
    assert reader.read(buf) == (b"a\nb", False)
    assert reader.bare_line_ending
    buf += b"..c\r\nd\r\n.\r\n"
    assert reader.read(buf) == (b"\r\n.c\r\nd\r\n", True)
    assert reader.bare_line_ending


def test_normalize_repairs_every_region() -> None:
    reader = DotReader(NORMALIZE)
    buf = bytearray(b"a\nb\r\n")
    assert reader.read(buf) == (b"a\r\nb", False)
    buf += b"c\rd\n"
    assert reader.read(buf) == (b"\r\nc\r\nd", False)
    assert buf == b"\n"  # a repaired LF starts a line, so a dot may follow
    buf += b".e\r\n.\r\n"
    assert reader.read(buf) == (b"\r\ne\r\n", True)
    assert buf == b""


# -- SMTP smuggling --------------------------------------------------------------------------------

SMUGGLE_HEAD = b"Subject: t\r\n\r\nline1"
SMUGGLE_TAIL = (
    b"MAIL FROM:<smug@b.test>\r\nRCPT TO:<x@example.test>\r\n"
    b"DATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\n"
)

SMUGGLING = [
    # (sequence, content under REJECT and ALLOW, bare flag, content under NORMALIZE, bare flag)
    pytest.param(b"\n.\n", b"\n.\n", True, b"\r\n\r\n", True, id="lf-dot-lf"),
    pytest.param(b"\n.\r", b"\n.\r", True, b"\r\n\r\n", True, id="lf-dot-cr"),
    pytest.param(b"\r.\n", b"\r.\n", True, b"\r\n\r\n", True, id="cr-dot-lf"),
    pytest.param(b"\r.\r", b"\r.\r", True, b"\r\n\r\n", True, id="cr-dot-cr"),
    pytest.param(b"\n.\r\n", b"\n.\r\n", True, b"\r\n\r\n", True, id="lf-dot-crlf"),
    pytest.param(b"\r.\r\n", b"\r.\r\n", True, b"\r\n\r\n", True, id="cr-dot-crlf"),
    pytest.param(
        b"\r\n\x00.\r\n", b"\r\n\x00.\r\n", False, b"\r\n\x00.\r\n", False, id="crlf-nul-dot-crlf"
    ),
    pytest.param(b"\r\n.\r\r\n", b"\r\n\r\r\n", True, b"\r\n\r\n\r\n", True, id="crlf-dot-cr-crlf"),
    pytest.param(
        b"\r\r\n.\r\r\n", b"\r\r\n\r\r\n", True, b"\r\n\r\n\r\n\r\n", True, id="cr-crlf-dot-cr-crlf"
    ),
    pytest.param(b"\r\n.\n", b"\r\n\n", True, b"\r\n\r\n", True, id="crlf-dot-lf"),
    pytest.param(b"\r\n.\r", b"\r\n\r", True, b"\r\n\r\n", True, id="crlf-dot-cr"),
]


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: f"SMUG-01-03-05-{p.name}")
@pytest.mark.parametrize(
    ("sequence", "passed", "passed_bare", "normalized", "normalized_bare"), SMUGGLING
)
def test_smug_01_03_05_smuggling_sequences_do_not_end_the_message(
    sequence: bytes,
    passed: bytes,
    passed_bare: bool,
    normalized: bytes,
    normalized_bare: bool,
    policy: LineEndings,
) -> None:
    # read_three_ways checks there is exactly one end: at the real final terminator, with nothing left.
    data = SMUGGLE_HEAD + sequence + SMUGGLE_TAIL
    content, bare = read_three_ways(data, policy)
    middle, expected_bare = (
        (normalized, normalized_bare) if policy is NORMALIZE else (passed, passed_bare)
    )
    assert content == SMUGGLE_HEAD + middle + SMUGGLE_TAIL[:-3]
    assert bare is expected_bare


# -- what is held back -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content", "held"),
    [
        pytest.param(b"", b"", b"", id="nothing"),
        pytest.param(b".", b"", b".", id="first-dot"),
        pytest.param(b".\r", b"", b".\r", id="first-dot-cr"),
        pytest.param(b"abc", b"abc", b"", id="text"),
        pytest.param(b"abc\r", b"abc", b"\r", id="cr"),
        pytest.param(b"abc\r\n", b"abc", b"\r\n", id="crlf"),
        pytest.param(b"abc\r\n.", b"abc", b"\r\n.", id="crlf-dot"),
        pytest.param(b"abc\r\n.\r", b"abc", b"\r\n.\r", id="crlf-dot-cr"),
        pytest.param(b"abc\r\n.x", b"abc\r\nx", b"", id="stuffed"),
        pytest.param(b"abc.", b"abc.", b"", id="dot"),
        pytest.param(b"\r\n", b"", b"\r\n", id="only-crlf"),
    ],
)
@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.name)
def test_undecided_bytes_are_held_back(
    data: bytes, content: bytes, held: bytes, policy: LineEndings
) -> None:
    assert feed([data], policy) == (content, False, held, False)
    assert feed(bytewise(data), policy) == (content, False, held, False)


@pytest.mark.parametrize(
    ("policy", "content", "held"),
    [(REJECT, b"abc\n", b""), (ALLOW, b"abc\n", b""), (NORMALIZE, b"abc", b"\n")],
    ids=lambda p: p.name if isinstance(p, LineEndings) else None,
)
def test_a_trailing_bare_lf_is_held_only_when_normalizing(
    policy: LineEndings, content: bytes, held: bytes
) -> None:
    # A repaired LF starts a line whose dot would have to go, so NORMALIZE waits for the next byte.
    assert feed([b"abc\n"], policy) == (content, False, held, policy is not NORMALIZE)


def test_a_marker_split_at_each_byte_still_ends_the_message() -> None:
    for cut in range(len(END) + 1):
        pieces = [b"x" + END[:cut], END[cut:] + TRAILER]
        assert feed(pieces, REJECT) == (b"x\r\n", True, TRAILER, False)


def test_a_marker_lookalike_split_at_each_byte_is_content() -> None:
    data = b"x\r\n.\rx\r\n.\r\n"
    for cut in range(len(data) + 1):
        assert feed([data[:cut], data[cut:]], REJECT) == (b"x\r\n\rx\r\n", True, b"", True)


def test_reading_after_the_end_raises() -> None:
    reader = DotReader(ALLOW)
    buf = bytearray(b".\r\nNOOP\r\n")
    assert reader.read(buf) == (b"", True)
    with pytest.raises(RuntimeError, match="already read"):
        reader.read(buf)
    assert buf == b"NOOP\r\n"


def test_policy_is_kept() -> None:
    assert DotReader(NORMALIZE).policy is NORMALIZE


def test_memory_stays_bounded() -> None:
    piece = (b"x" * 76 + b"\r\n" + b"..stuffed line\r\n" + b"y" * 40 + b"\r\n") * 500
    piece = piece[: 64 * 1024]
    pieces = 50_000_000 // len(piece)
    for policy in POLICIES:
        reader = DotReader(policy)
        buf = bytearray()
        size = 0
        for _ in range(pieces):
            buf += piece
            content, finished = reader.read(buf)
            size += len(content)
            assert not finished
            assert len(buf) < 8
        buf += END
        content, finished = reader.read(buf)
        assert finished
        assert buf == b""
        size += len(content)
        # Only whole pieces are fed, so each stuffed line of each piece lost exactly one dot.
        assert size == pieces * (len(piece) - piece.count(b"\r\n..")) + len(b"\r\n")
        assert not reader.bare_line_ending


# -- properties ------------------------------------------------------------------------------------

# Fragments that make line ends, dots at line starts and terminators likely in generated input.
FRAGMENTS = st.sampled_from(
    [b"\r", b"\n", b".", b"\r\n", b"\r\n.", b"\r\n.\r", END, b"..", b"a", b"b.c", b"\x00", b"\xff"]
)
WIRE = st.lists(st.one_of(FRAGMENTS, st.binary(max_size=6)), max_size=30).map(b"".join)


@st.composite
def splits(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random positions (possibly empty pieces)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


@settings(max_examples=400)
@given(data=st.data(), wire=WIRE, policy=st.sampled_from(POLICIES))
def test_any_split_gives_the_same_result(
    data: st.DataObject, wire: bytes, policy: LineEndings
) -> None:
    whole = feed([wire], policy)
    assert feed(bytewise(wire), policy) == whole
    assert feed(data.draw(splits(wire)), policy) == whole


@settings(max_examples=300)
@given(data=st.data(), wire=WIRE, policy=st.sampled_from(POLICIES))
def test_the_reader_agrees_with_the_oracle(
    data: st.DataObject, wire: bytes, policy: LineEndings
) -> None:
    wire += END
    expected = oracle(wire, policy)
    assert feed([wire], policy) == expected
    assert feed(data.draw(splits(wire)), policy) == expected


LINE = st.one_of(
    st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"", b".", b"..", b".x", b"...", b". ", b".\x00"]),
)


@given(data=st.data(), lines=st.lists(LINE, max_size=20), policy=st.sampled_from(POLICIES))
def test_stuffing_round_trips(data: st.DataObject, lines: list[bytes], policy: LineEndings) -> None:
    content = b"".join(line + b"\r\n" for line in lines)
    wire = b"".join((b"." if line.startswith(b".") else b"") + line + b"\r\n" for line in lines)
    wire += b".\r\n"
    assert feed([wire], policy) == (content, True, b"", False)
    assert feed(data.draw(splits(wire)), policy) == (content, True, b"", False)


@given(data=st.data(), junk=st.binary(max_size=200), policy=st.sampled_from(POLICIES))
def test_arbitrary_bytes_then_a_terminator_end_exactly_once(
    data: st.DataObject, junk: bytes, policy: LineEndings
) -> None:
    wire = junk + END
    expected = oracle(wire, policy)
    content, finished, left, bare = feed(data.draw(splits(wire)), policy)
    assert (content, finished, left, bare) == expected
    assert finished
    # Whatever is left is read as the next message's data, or as commands: never a second end here.
    assert wire.endswith(left)
