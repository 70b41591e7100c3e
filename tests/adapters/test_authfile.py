"""The auth users file (smtpproto_adapters._authfile): parsing, plain and scrypt passwords, CRAM-MD5."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from smtpproto_adapters._authfile import (
    AuthFileError,
    AuthUsers,
    hash_password,
    load_auth_file,
    parse_auth_lines,
)

# RFC 2195 §2 example.
RFC2195_CHALLENGE = "<1896.697170952@postoffice.reston.mci.net>"
RFC2195_SECRET = "tanstaaftanstaaf"
RFC2195_DIGEST = "b913a602c7eda7a495b4e6e7334d3890"

HASH_FORMAT = re.compile(
    r"\$scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+=*)\$([A-Za-z0-9+/]+=*)"
)
# Cheap parameters where a test hashes many passwords; the format and code path are the same.
FAST = {"n": 2, "r": 1, "p": 1}


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "users"
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


# -- parsing ---------------------------------------------------------------------------------------------


def test_plain_entries_comments_and_blank_lines(tmp_path: Path) -> None:
    users = load_auth_file(
        write(
            tmp_path,
            "# users for the test server\n"
            "\n"
            "tim:tanstaaftanstaaf\n"
            "   \n"
            "  # an indented comment\n"
            "alice:pa:ss word \n"
            " bob :secret",  # no final newline
        )
    )
    assert len(users) == 3
    assert "tim" in users
    assert "bob" in users  # user names are stripped
    assert users.check("tim", "tanstaaftanstaaf")
    assert users.check("alice", "pa:ss word ")  # the password is everything after the first ':'
    assert not users.check("alice", "pa:ss word")
    assert users.check("bob", "secret")
    assert users.all_plain


def test_crlf_line_endings_and_bom(tmp_path: Path) -> None:
    users = load_auth_file(write(tmp_path, b"\xef\xbb\xbftim:one\r\nann:two\r\n"))
    assert users.check("tim", "one")
    assert users.check("ann", "two")
    assert not users.check("tim", "one\r")


def test_empty_file_has_no_users(tmp_path: Path) -> None:
    users = load_auth_file(write(tmp_path, ""))
    assert len(users) == 0
    assert not users.check("tim", "x")
    assert len(AuthUsers()) == 0


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("tim:x\n# comment\nno colon here\n", 3, "no ':'"),
        ("\n\n\n\njustauser", 5, "no ':'"),
        ("tim:x\n:password\n", 2, "empty user name"),
        ("  :password\n", 1, "empty user name"),
        ("tim:\n", 1, "empty password"),
        ("tim:x\nann:y\ntim:z\n", 3, "already defined on line 1"),
        ("tim:$scrypt$n=16384,r=8$abc$def\n", 1, "malformed scrypt"),
        ("tim:$scrypt$n=1000,r=8,p=1$c2FsdA==$" + "A" * 44 + "\n", 1, "power of 2"),
        ("tim:$scrypt$n=1,r=8,p=1$c2FsdA==$" + "A" * 44 + "\n", 1, "power of 2"),
        ("tim:$scrypt$n=16384,r=0,p=1$c2FsdA==$" + "A" * 44 + "\n", 1, "at least 1"),
        ("tim:$scrypt$n=16384,r=8,p=1$c2Fsd$" + "A" * 44 + "\n", 1, "base64"),
        ("tim:$scrypt$n=16384,r=8,p=1$c2FsdA==$QUJD\n", 1, "shorter than 16"),
        ("tim:$scrypt$n=1073741824,r=8,p=1$c2FsdA==$" + "A" * 44 + "\n", 1, "MiB of memory"),
    ],
)
def test_malformed_lines_name_the_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(
        AuthFileError, match=rf"^{re.escape(str(path))}, line {line}: .*{re.escape(message)}"
    ):
        load_auth_file(path)


def test_invalid_utf8_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, b"tim:x\nann:\xff\xfe\n")
    with pytest.raises(AuthFileError, match=r", line 2: not valid UTF-8"):
        load_auth_file(path)


def test_auth_file_error_is_a_value_error() -> None:
    assert issubclass(AuthFileError, ValueError)


def test_missing_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_auth_file(tmp_path / "nope")


def test_parse_auth_lines_names_its_source() -> None:
    with pytest.raises(AuthFileError, match=r"^<stdin>, line 2: "):
        parse_auth_lines(["a:b", "broken"], source="<stdin>")
    assert parse_auth_lines(["a:b\n"]).check("a", "b")


# -- plain passwords -------------------------------------------------------------------------------------


def test_plain_check() -> None:
    users = parse_auth_lines(["tim:secret", "ann:sécrét ünïcode"])
    assert users.check("tim", "secret")
    assert not users.check("tim", "Secret")
    assert not users.check("tim", "secret ")
    assert not users.check("tim", "")
    assert not users.check("TIM", "secret")  # user names are case-sensitive
    assert not users.check("nobody", "secret")
    assert users.check("ann", "sécrét ünïcode")


def test_lone_surrogate_password_fails_without_raising() -> None:
    """Undecodable client bytes may reach us as surrogates: they must fail, not crash the session."""
    users = parse_auth_lines(["tim:secret"])
    assert not users.check("tim", "secret\udcff")
    assert not users.check("nobody\udcff", "\udcff")
    assert not users.check_cram_md5("tim", "<1@x>\udcff", "00" * 16)


@given(
    username=st.text(min_size=1)
    .map(str.strip)
    .filter(lambda u: u and ":" not in u and "\n" not in u),
    password=st.text(min_size=1).filter(lambda p: "\n" not in p and not p.endswith("\r")),
)
def test_any_plain_password_round_trips(username: str, password: str) -> None:
    assume(not password.startswith("$scrypt$"))
    assume(not username.startswith("#"))
    users = parse_auth_lines([f"{username}:{password}"])
    assert users.check(username, password)
    assert not users.check(username, password + "x")


# -- scrypt ----------------------------------------------------------------------------------------------


def test_hash_password_format_and_salt() -> None:
    first, second = hash_password("secret"), hash_password("secret")
    match = HASH_FORMAT.fullmatch(first)
    assert match is not None, first
    assert (int(match[1]), int(match[2]), int(match[3])) == (16384, 8, 1)
    assert len(base64.b64decode(match[4])) == 16
    assert len(base64.b64decode(match[5])) == 32
    assert first != second  # a fresh salt each time


def test_hash_matches_hashlib_scrypt() -> None:
    """The stored hash is plain scrypt over the UTF-8 password, so other tools can produce it too."""
    entry = hash_password("pässword", **FAST)
    match = HASH_FORMAT.fullmatch(entry)
    assert match is not None
    salt, digest = base64.b64decode(match[4]), base64.b64decode(match[5])
    expected = hashlib.scrypt("pässword".encode(), salt=salt, n=2, r=1, p=1, dklen=32)
    assert digest == expected


def test_scrypt_entries_check(tmp_path: Path) -> None:
    path = write(tmp_path, f"tim:{hash_password('tanstaaftanstaaf')}\nann:plain\n")
    users = load_auth_file(path)
    assert users.check("tim", "tanstaaftanstaaf")
    assert not users.check("tim", "tanstaaftanstaa")
    assert not users.check("tim", hash_password("tanstaaftanstaaf"))  # the hash is not the password
    assert not users.check("nobody", "tanstaaftanstaaf")
    assert users.check("ann", "plain")
    assert not users.all_plain


def test_scrypt_without_base64_padding_is_accepted() -> None:
    entry = re.sub(r"=+(\$|$)", r"\1", hash_password("secret", **FAST))
    assert entry.count("=") == 3  # only n=, r=, p= are left
    assert parse_auth_lines([f"tim:{entry}"]).check("tim", "secret")


def test_hand_made_scrypt_entry() -> None:
    salt = b"NaCl"
    digest = hashlib.scrypt(b"password", salt=salt, n=1024, r=8, p=16, dklen=64)
    # RFC 7914 §12 test vector, to pin the parameters' meaning.
    assert digest.hex().startswith(
        "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
    )
    line = f"u:$scrypt$n=1024,r=8,p=16${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"
    users = parse_auth_lines([line])
    assert users.check("u", "password")
    assert not users.check("u", "Password")


@pytest.mark.parametrize("params", [{"n": 1000}, {"n": 1}, {"r": 0}, {"p": 0}, {"n": 1 << 30}])
def test_hash_password_rejects_bad_parameters(params: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="scrypt needs"):
        hash_password("x", **params)


@settings(max_examples=30, deadline=None)
@given(password=st.text(), other=st.text())
def test_any_password_hashes_and_checks(password: str, other: str) -> None:
    users = parse_auth_lines([f"u:{hash_password(password, **FAST)}"])
    assert users.check("u", password)
    assert users.check("u", other) == (other == password)


# -- CRAM-MD5 --------------------------------------------------------------------------------------------


def test_cram_md5_rfc2195_vector() -> None:
    users = parse_auth_lines([f"tim:{RFC2195_SECRET}"])
    assert users.check_cram_md5("tim", RFC2195_CHALLENGE, RFC2195_DIGEST)
    assert users.check_cram_md5("tim", RFC2195_CHALLENGE, RFC2195_DIGEST.upper())


def test_cram_md5_wrong_answers() -> None:
    users = parse_auth_lines([f"tim:{RFC2195_SECRET}"])
    wrong_digest = "0" + RFC2195_DIGEST[1:]
    assert not users.check_cram_md5("tim", RFC2195_CHALLENGE, wrong_digest)
    assert not users.check_cram_md5(
        "tim", "<1896.697170953@postoffice.reston.mci.net>", RFC2195_DIGEST
    )
    assert not users.check_cram_md5("nobody", RFC2195_CHALLENGE, RFC2195_DIGEST)
    assert not users.check_cram_md5("tim", RFC2195_CHALLENGE, "")
    assert not users.check_cram_md5("tim", RFC2195_CHALLENGE, RFC2195_DIGEST + "00")


def test_cram_md5_impossible_for_hashed_entries() -> None:
    users = parse_auth_lines([f"tim:{hash_password(RFC2195_SECRET, **FAST)}"])
    assert users.check("tim", RFC2195_SECRET)
    # Even the right digest fails: the server does not know the secret to check it against.
    assert not users.check_cram_md5("tim", RFC2195_CHALLENGE, RFC2195_DIGEST)


@given(
    secret=st.text(min_size=1).filter(lambda s: "\n" not in s and not s.endswith("\r")),
    challenge=st.text(),
)
def test_cram_md5_agrees_with_hmac(secret: str, challenge: str) -> None:
    assume(not secret.startswith("$scrypt$"))
    users = parse_auth_lines([f"u:{secret}"])
    digest = hmac.new(secret.encode(), challenge.encode(), hashlib.md5).hexdigest()
    assert users.check_cram_md5("u", challenge, digest)
