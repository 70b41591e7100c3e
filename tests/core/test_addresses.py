"""Paths, domains and xtext (smtpproto._addresses): RFC 5321 §4.1.2/§4.1.3/§4.5.3.1, RFC 6531, RFC 3461."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpproto._addresses import (
    AddressError,
    is_valid_domain,
    parse_path,
    split_path,
    xtext_decode,
    xtext_encode,
)

ATEXT_SPECIALS = "!#$%&'*+-/=?^_`{|}~"


def make_domain(octets: int, label_char: str = "a") -> str:
    """A valid domain of exactly ``octets`` ASCII octets (labels of 50, then the remainder)."""
    labels = []
    while octets > 63:
        labels.append(label_char * 50)
        octets -= 51
    labels.append(label_char * octets)
    return ".".join(labels)


def parse(
    path: str, *, null_ok: bool = False, postmaster_ok: bool = False, utf8: bool = False
) -> str:
    return parse_path(path, null_ok=null_ok, postmaster_ok=postmaster_ok, utf8=utf8)


# A 256-octet path: "<" + 64-octet local part + "@" + 189-octet domain + ">".
LOCAL_64 = "l" * 64
DOMAIN_189 = make_domain(189)
PATH_256 = f"<{LOCAL_64}@{DOMAIN_189}>"
PATH_257 = f"<{LOCAL_64}@{make_domain(190)}>"

# (path, keyword flags, expected mailbox)
ACCEPTED = [
    pytest.param("<>", {"null_ok": True}, "", id="CORE-50-null-reverse-path"),
    pytest.param("<postmaster>", {"postmaster_ok": True}, "postmaster", id="CORE-52-lower"),
    pytest.param("<Postmaster>", {"postmaster_ok": True}, "Postmaster", id="CORE-52-title"),
    pytest.param("<POSTMASTER>", {"postmaster_ok": True}, "POSTMASTER", id="CORE-52-upper"),
    pytest.param("<postmaster@x.test>", {}, "postmaster@x.test", id="CORE-52-with-domain"),
    pytest.param("<a@x.test>", {"null_ok": True, "postmaster_ok": True}, "a@x.test", id="flags"),
    pytest.param("<@a.test,@b.test:x@y.test>", {}, "x@y.test", id="CORE-53-two-hops"),
    pytest.param("<@a.test:x@y.test>", {}, "x@y.test", id="CORE-53-one-hop"),
    pytest.param('<@a.test:"x:y"@y.test>', {}, '"x:y"@y.test', id="CORE-53-quoted-colon"),
    pytest.param("<a@[127.0.0.1]>", {}, "a@[127.0.0.1]", id="CORE-54-ipv4"),
    pytest.param("<a@[255.0.09.1]>", {}, "a@[255.0.09.1]", id="CORE-54-ipv4-snum"),
    pytest.param("<a@[IPv6:2001:db8::1]>", {}, "a@[IPv6:2001:db8::1]", id="CORE-54-ipv6-comp"),
    pytest.param("<a@[IPv6:::1]>", {}, "a@[IPv6:::1]", id="CORE-54-ipv6-loopback"),
    pytest.param("<a@[ipv6:::1]>", {}, "a@[ipv6:::1]", id="CORE-54-ipv6-tag-case"),
    pytest.param("<a@[IPv6:::]>", {}, "a@[IPv6:::]", id="CORE-54-ipv6-unspecified"),
    pytest.param("<a@[IPv6:1:2:3:4:5:6::]>", {}, "a@[IPv6:1:2:3:4:5:6::]", id="CORE-54-six"),
    pytest.param(
        "<a@[IPv6:::ffff:192.0.2.1]>", {}, "a@[IPv6:::ffff:192.0.2.1]", id="CORE-54-v4-comp"
    ),
    pytest.param(
        "<a@[IPv6:1:2:3:4::1.2.3.4]>", {}, "a@[IPv6:1:2:3:4::1.2.3.4]", id="CORE-54-v4-comp-4"
    ),
    pytest.param("<a@[IPv6:::1.2.3.4]>", {}, "a@[IPv6:::1.2.3.4]", id="CORE-54-v4-comp-0"),
    pytest.param(
        "<a@[IPv6:1:2:3:4:5:6:1.2.3.4]>", {}, "a@[IPv6:1:2:3:4:5:6:1.2.3.4]", id="CORE-54-v4-full"
    ),
    pytest.param(
        "<a@[IPv6:1:2:3:4:5:6:7:8]>", {}, "a@[IPv6:1:2:3:4:5:6:7:8]", id="CORE-54-ipv6-full"
    ),
    pytest.param(
        "<a@[IPv6:ABCD:ef01::FFff]>", {}, "a@[IPv6:ABCD:ef01::FFff]", id="CORE-54-hex-case"
    ),
    pytest.param('<"a b"@x.test>', {}, '"a b"@x.test', id="CORE-55-space"),
    pytest.param('<"a\\"b"@x.test>', {}, '"a\\"b"@x.test', id="CORE-55-escaped-quote"),
    pytest.param('<"a\\\\b"@x.test>', {}, '"a\\\\b"@x.test', id="CORE-55-escaped-backslash"),
    pytest.param('<"Joe\\,Smith"@x.test>', {}, '"Joe\\,Smith"@x.test', id="CORE-55-pair-comma"),
    pytest.param('<""@x.test>', {}, '""@x.test', id="CORE-55-empty"),
    pytest.param('<"a>b"@x.test>', {}, '"a>b"@x.test', id="CORE-55-angle"),
    pytest.param('<"a@b"@x.test>', {}, '"a@b"@x.test', id="CORE-55-at"),
    pytest.param("<a.b.c@x.test>", {}, "a.b.c@x.test", id="CORE-56-dots"),
    pytest.param(
        f"<{ATEXT_SPECIALS}@x.test>", {}, f"{ATEXT_SPECIALS}@x.test", id="CORE-56-specials"
    ),
    pytest.param("<a@localhost>", {}, "a@localhost", id="CORE-57-single-label"),
    pytest.param("<a@x-y.1test>", {}, "a@x-y.1test", id="CORE-57-hyphen-digit"),
    pytest.param("<a@1.2.3.4>", {}, "a@1.2.3.4", id="CORE-57-numeric-labels"),
    pytest.param(f"<a@{'b' * 63}.test>", {}, f"a@{'b' * 63}.test", id="CORE-57-label-63"),
    pytest.param("<用户@例子.广告>", {"utf8": True}, "用户@例子.广告", id="UTF8-02-cjk"),
    pytest.param("<jörg@bücher.example>", {"utf8": True}, "jörg@bücher.example", id="UTF8-02-de"),
    pytest.param('<"ü x"@x.test>', {"utf8": True}, '"ü x"@x.test', id="UTF8-02-quoted"),
    pytest.param("<é@[127.0.0.1]>", {"utf8": True}, "é@[127.0.0.1]", id="UTF8-02-literal"),
    pytest.param("<a@मराठी.भारत>", {"utf8": True}, "a@मराठी.भारत", id="UTF8-02-marks"),
    pytest.param("<@bü.test:a@x.test>", {"utf8": True}, "a@x.test", id="UTF8-02-route"),
    pytest.param("<ǅ@x.test>", {"utf8": True, "postmaster_ok": True}, "ǅ@x.test", id="UTF8-02-pm"),
    pytest.param("<a@x.test>", {"utf8": True}, "a@x.test", id="UTF8-02-ascii"),
    pytest.param(f"<{LOCAL_64}@x.test>", {}, f"{LOCAL_64}@x.test", id="CORE-63-local-64"),
    pytest.param(f"<{'é' * 32}@x.test>", {"utf8": True}, f"{'é' * 32}@x.test", id="CORE-63-utf8"),
    pytest.param(PATH_256, {}, PATH_256[1:-1], id="CORE-65-path-256"),
]

# (path, keyword flags, expected kind)
REJECTED = [
    pytest.param("<>", {}, "syntax", id="CORE-51-null-forward-path"),
    pytest.param("<>", {"postmaster_ok": True, "utf8": True}, "syntax", id="CORE-51-flags"),
    pytest.param("<postmaster>", {}, "syntax", id="CORE-52-not-allowed"),
    pytest.param("<Postmaster>", {"null_ok": True}, "syntax", id="CORE-52-null-ok-only"),
    pytest.param("<@a.test:postmaster>", {"postmaster_ok": True}, "syntax", id="CORE-52-route"),
    pytest.param("<postmasters>", {"postmaster_ok": True}, "syntax", id="CORE-52-other-name"),
    pytest.param("<@:x@y.test>", {}, "syntax", id="CORE-53-empty-hop"),
    pytest.param("<@a.test x@y.test>", {}, "syntax", id="CORE-53-no-colon"),
    pytest.param("<@a.test,x@y.test>", {}, "syntax", id="CORE-53-hop-without-at"),
    pytest.param("<@a.test,:x@y.test>", {}, "syntax", id="CORE-53-trailing-comma"),
    pytest.param("<@a.test:>", {}, "syntax", id="CORE-53-no-mailbox"),
    pytest.param("<@[127.0.0.1]:x@y.test>", {}, "syntax", id="CORE-53-literal-hop"),
    pytest.param("<@a_b.test:x@y.test>", {}, "syntax", id="CORE-53-bad-hop-domain"),
    pytest.param("<a@[300.0.0.1]>", {}, "syntax", id="CORE-54-snum-range"),
    pytest.param("<a@[1.2.3]>", {}, "syntax", id="CORE-54-three-snums"),
    pytest.param("<a@[1.2.3.4.5]>", {}, "syntax", id="CORE-54-five-snums"),
    pytest.param("<a@[1.2.3.]>", {}, "syntax", id="CORE-54-empty-snum"),
    pytest.param("<a@[1.2.3.0255]>", {}, "syntax", id="CORE-54-four-digits"),
    pytest.param("<a@[1.2.3.x]>", {}, "syntax", id="CORE-54-not-digit"),
    pytest.param("<a@[1.2.3.٣]>", {"utf8": True}, "syntax", id="CORE-54-unicode-digit"),
    pytest.param("<a@[IPv6:1::2::3]>", {}, "syntax", id="CORE-54-two-elisions"),
    pytest.param("<a@[IPv6:1:2:3:4:5:6:7:8:9]>", {}, "syntax", id="CORE-54-nine-groups"),
    pytest.param("<a@[IPv6:1:2:3:4:5:6:7]>", {}, "syntax", id="CORE-54-seven-groups"),
    pytest.param("<a@[IPv6:1:2:3:4:5:6:7::]>", {}, "syntax", id="CORE-54-comp-seven"),
    pytest.param("<a@[IPv6:12345::]>", {}, "syntax", id="CORE-54-five-hex-digits"),
    pytest.param("<a@[IPv6:g::1]>", {}, "syntax", id="CORE-54-not-hex"),
    pytest.param("<a@[IPv6:1:::2]>", {}, "syntax", id="CORE-54-triple-colon"),
    pytest.param("<a@[IPv6::1]>", {}, "syntax", id="CORE-54-single-leading-colon"),
    pytest.param("<a@[IPv6:fe80::1%eth0]>", {}, "syntax", id="CORE-54-zone-id"),
    pytest.param("<a@[IPv6:]>", {}, "syntax", id="CORE-54-empty-ipv6"),
    pytest.param("<a@[IPv6:::1.2.3.4.5]>", {}, "syntax", id="CORE-54-v4-five"),
    pytest.param("<a@[IPv6:1.2.3.4]>", {}, "syntax", id="CORE-54-v4-alone"),
    pytest.param("<a@[IPv6::1.2.3.4]>", {}, "syntax", id="CORE-54-v4-single-colon"),
    pytest.param("<a@[IPv6:1:2:3:4:5::1.2.3.4]>", {}, "syntax", id="CORE-54-v4-comp-five"),
    pytest.param("<a@[IPv6:1:2:3:4:5:6:7:1.2.3.4]>", {}, "syntax", id="CORE-54-v4-full-seven"),
    pytest.param("<a@[IPv6:1.2.3.4::1]>", {}, "syntax", id="CORE-54-v4-not-last"),
    pytest.param("<a@[ipv6::1]>", {}, "syntax", id="CORE-54-lower-tag-bad-address"),
    pytest.param("<a@[IPv4:1.2.3.4]>", {}, "syntax", id="CORE-54-ipv4-tag"),
    pytest.param("<a@[tag:content]>", {}, "syntax", id="CORE-54-general-literal"),
    pytest.param("<a@[\u0131pv6:::1]>", {"utf8": True}, "syntax", id="CORE-54-dotless-i-tag"),
    pytest.param("<a@[a\\b]>", {}, "syntax", id="CORE-54-backslash"),
    pytest.param("<a@[]>", {}, "syntax", id="CORE-54-empty"),
    pytest.param("<a@[127.0.0.1>", {}, "syntax", id="CORE-54-unclosed"),
    pytest.param("<a@[127.0.0.1].test>", {}, "syntax", id="CORE-54-trailing"),
    pytest.param('<"a"b"@x.test>', {}, "syntax", id="CORE-55-stray-quote"),
    pytest.param('<"unterminated@x.test>', {}, "syntax", id="CORE-55-unterminated"),
    pytest.param('<"a\x01"@x.test>', {}, "syntax", id="CORE-55-control"),
    pytest.param('<"a\x7f"@x.test>', {}, "syntax", id="CORE-55-del"),
    pytest.param('<"a\\\x01"@x.test>', {}, "syntax", id="CORE-55-pair-control"),
    pytest.param('<"a\\é"@x.test>', {"utf8": True}, "syntax", id="CORE-55-pair-non-ascii"),
    pytest.param('<"a\\>', {}, "syntax", id="CORE-55-pair-at-end"),
    pytest.param('<"a b">', {}, "syntax", id="CORE-55-no-domain"),
    pytest.param('<"postmaster">', {"postmaster_ok": True}, "syntax", id="CORE-52-quoted"),
    pytest.param('<"a"."b"@x.test>', {}, "syntax", id="CORE-55-quoted-dot-atoms"),
    pytest.param('<a."b"@x.test>', {}, "syntax", id="CORE-55-mixed"),
    pytest.param("<a..b@x.test>", {}, "syntax", id="CORE-56-double-dot"),
    pytest.param("<.a@x.test>", {}, "syntax", id="CORE-56-leading-dot"),
    pytest.param("<a.@x.test>", {}, "syntax", id="CORE-56-trailing-dot"),
    pytest.param("<@x.test>", {}, "syntax", id="CORE-56-empty-local"),
    pytest.param("<a(b)@x.test>", {}, "syntax", id="CORE-56-parens"),
    pytest.param("<a>b@x.test>", {}, "syntax", id="CORE-56-angle"),
    pytest.param("<a@-a.test>", {}, "syntax", id="CORE-57-leading-hyphen"),
    pytest.param("<a@a-.test>", {}, "syntax", id="CORE-57-trailing-hyphen"),
    pytest.param("<a@a..test>", {}, "syntax", id="CORE-57-empty-label"),
    pytest.param("<a@.test>", {}, "syntax", id="CORE-57-leading-dot"),
    pytest.param("<a@x.test.>", {}, "syntax", id="CORE-57-trailing-dot"),
    pytest.param("<a@a_b.test>", {}, "syntax", id="CORE-57-underscore"),
    pytest.param(f"<a@{'b' * 64}.test>", {}, "syntax", id="CORE-57-label-64"),
    pytest.param(f"<a@{'ü' * 32}.test>", {"utf8": True}, "syntax", id="CORE-57-u-label-64-octets"),
    pytest.param("<a@>", {}, "syntax", id="CORE-57-empty-domain"),
    pytest.param("<a@b@x.test>", {}, "syntax", id="CORE-57-second-at"),
    pytest.param("<a>", {}, "syntax", id="CORE-57-no-domain"),
    pytest.param("<ü@x.test>", {}, "utf8", id="CORE-58-local"),
    pytest.param("<a@bü.test>", {}, "utf8", id="CORE-58-domain"),
    pytest.param('<"ü"@x.test>', {}, "utf8", id="CORE-58-quoted"),
    pytest.param("<ü@@ >", {"null_ok": True, "postmaster_ok": True}, "utf8", id="CORE-58-wins"),
    pytest.param("ü", {}, "utf8", id="CORE-58-no-brackets"),
    pytest.param("<a b@x.test>", {}, "syntax", id="CORE-59-inner-space"),
    pytest.param("< a@x.test>", {}, "syntax", id="CORE-59-leading-space"),
    pytest.param("<a@x.test >", {}, "syntax", id="CORE-59-trailing-space"),
    pytest.param("<a@x.test> ", {}, "syntax", id="CORE-59-after-path"),
    pytest.param(" <a@x.test>", {}, "syntax", id="CORE-59-before-path"),
    pytest.param("<a@\tx.test>", {}, "syntax", id="CORE-59-tab"),
    pytest.param("a@x.test", {}, "syntax", id="no-brackets"),
    pytest.param("<a@x.test", {}, "syntax", id="no-closing-bracket"),
    pytest.param("a@x.test>", {}, "syntax", id="no-opening-bracket"),
    pytest.param("<", {}, "syntax", id="lone-bracket"),
    pytest.param("", {"null_ok": True}, "syntax", id="empty"),
    pytest.param(f"<l{LOCAL_64}@x.test>", {}, "length", id="CORE-63-local-65"),
    pytest.param(f"<{'é' * 33}@x.test>", {"utf8": True}, "length", id="CORE-63-utf8-66-octets"),
    pytest.param(f"<a@{make_domain(256)}>", {}, "length", id="CORE-64-domain-256"),
    pytest.param(PATH_257, {}, "length", id="CORE-65-path-257"),
    pytest.param(f"<@{DOMAIN_189}:{LOCAL_64}@x.test>", {}, "length", id="CORE-65-route-counts"),
    pytest.param("<a\u200b@x.test>", {"utf8": True}, "syntax", id="UTF8-02-zero-width-space"),
    pytest.param("<a@x\u2060y.test>", {"utf8": True}, "syntax", id="UTF8-02-word-joiner"),
    pytest.param("<\ufeffa@x.test>", {"utf8": True}, "syntax", id="UTF8-02-bom"),
    pytest.param("<a\x85@x.test>", {"utf8": True}, "syntax", id="UTF8-02-c1-control"),
    pytest.param('<"a\x9f"@x.test>', {"utf8": True}, "syntax", id="UTF8-02-c1-quoted"),
    pytest.param("<a\x00@x.test>", {"utf8": True}, "syntax", id="UTF8-02-nul"),
    pytest.param("<\ud800@x.test>", {"utf8": True}, "syntax", id="UTF8-02-lone-surrogate"),
    pytest.param("<a@b\u00a0c.test>", {"utf8": True}, "syntax", id="UTF8-02-nbsp-in-label"),
    pytest.param("<a@例子\u3002广告>", {"utf8": True}, "syntax", id="UTF8-02-ideographic-stop"),
    pytest.param("<a@b\u2603.test>", {"utf8": True}, "syntax", id="UTF8-02-symbol-in-label"),
]


@pytest.mark.parametrize(("path", "flags", "expected"), ACCEPTED)
def test_parse_path_accepts(path: str, flags: dict[str, bool], expected: str) -> None:
    assert parse(path, **flags) == expected


@pytest.mark.parametrize(("path", "flags", "kind"), REJECTED)
def test_parse_path_rejects(path: str, flags: dict[str, bool], kind: str) -> None:
    with pytest.raises(AddressError) as info:
        parse(path, **flags)
    assert info.value.kind == kind
    assert info.value.reason
    assert str(info.value) == info.value.reason


def test_boundary_fixtures_have_the_intended_sizes() -> None:
    assert len(PATH_256) == 256
    assert len(PATH_257) == 257
    assert len(make_domain(255)) == 255
    assert len(make_domain(256)) == 256
    assert len(f"{'é' * 32}".encode()) == 64


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        pytest.param("<ü@x.test>", "Non-ASCII address requires SMTPUTF8", id="CORE-58"),
        pytest.param(PATH_257, "Path too long", id="CORE-65"),
        pytest.param(f"<l{LOCAL_64}@x.test>", "Local part too long", id="CORE-63"),
        pytest.param(f"<a@{make_domain(256)}>", "Domain too long", id="CORE-64"),
        pytest.param("<a@x..test>", "Bad domain syntax", id="CORE-57"),
        pytest.param("<a..b@x.test>", "Bad address syntax", id="CORE-56"),
        pytest.param("<>", "Null path not allowed here", id="CORE-51"),
    ],
)
def test_reasons_are_reply_text(path: str, reason: str) -> None:
    with pytest.raises(AddressError, match=f"^{reason}$"):
        parse(path)


def test_syntax_is_reported_before_length() -> None:
    with pytest.raises(AddressError) as info:
        parse(f"<{LOCAL_64}l..@{make_domain(300)}>")
    assert info.value.kind == "syntax"


def test_address_error() -> None:
    error = AddressError("Bad address syntax")
    assert isinstance(error, ValueError)
    assert (error.reason, error.kind) == ("Bad address syntax", "syntax")
    assert AddressError("Path too long", kind="length").kind == "length"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("<a@x.test>", ("<a@x.test>", ""), id="bare"),
        pytest.param("<a@x.test> SIZE=10", ("<a@x.test>", " SIZE=10"), id="params"),
        pytest.param("<a@x.test>  BODY=8BITMIME", ("<a@x.test>", "  BODY=8BITMIME"), id="spaces"),
        pytest.param('<"a>b"@x.test> X=1', ('<"a>b"@x.test>', " X=1"), id="angle-in-quotes"),
        pytest.param('<"a\\">"@x.test>', ('<"a\\">"@x.test>', ""), id="escaped-quote"),
        pytest.param('<"a\\\\">b', ('<"a\\\\">', "b"), id="escaped-backslash"),
        pytest.param("<a\\>b", ("<a\\>", "b"), id="backslash-outside-quotes"),
        pytest.param("<>", ("<>", ""), id="CORE-50-null"),
        pytest.param("<> SIZE=5", ("<>", " SIZE=5"), id="CORE-50-null-params"),
        pytest.param("<a>>", ("<a>", ">"), id="first-close"),
    ],
)
def test_split_path(text: str, expected: tuple[str, str]) -> None:
    assert split_path(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "a@x.test", " <a@x.test>", "<a@x.test", '<"a>b@x.test', '<"a\\>', "<", '<"\\'],
)
def test_split_path_rejects(text: str) -> None:
    with pytest.raises(AddressError) as info:
        split_path(text)
    assert info.value.kind == "syntax"


@pytest.mark.parametrize(
    ("domain", "utf8", "expected"),
    [
        ("x.test", False, True),
        ("localhost", False, True),
        ("[127.0.0.1]", False, True),
        ("[IPv6:2001:db8::1]", False, True),
        ("bücher.example", True, True),
        ("bücher.example", False, False),
        ("[tag:content]", False, False),
        ("x.test.", False, False),
        ("", False, False),
        ("a b", False, False),
        ("x\u200b.test", True, False),
        ("\udc80.test", True, False),
        (make_domain(255), False, True),  # CORE-64 boundary, which a 256-octet path cannot reach
        (make_domain(256), False, False),
        ("é" * 31, True, True),  # a 62-octet U-label
        ("é" * 32, True, False),  # 32 characters, but 64 octets
        (make_domain(254) + "é", True, False),  # 255 characters, 256 octets
    ],
)
def test_is_valid_domain(domain: str, utf8: bool, expected: bool) -> None:
    assert is_valid_domain(domain, utf8=utf8) is expected


def test_is_valid_domain_defaults_to_ascii() -> None:
    assert is_valid_domain("x.test")
    assert not is_valid_domain("bücher.example")


@pytest.mark.parametrize(
    ("encoded", "decoded"),
    [
        pytest.param("a+2Bb", "a+b", id="DSN-04-plus"),
        pytest.param("x+40example.test", "x@example.test", id="DSN-07-at"),
        pytest.param("rfc822;a+3Db", "rfc822;a=b", id="equals"),
        pytest.param("+20+7F+00", " \x7f\x00", id="controls"),
        pytest.param("", "", id="empty"),
        pytest.param("!~", "!~", id="range-ends"),
    ],
)
def test_xtext_decode(encoded: str, decoded: str) -> None:
    assert xtext_decode(encoded) == decoded


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("a+2", id="DSN-08-short-escape"),
        pytest.param("a+", id="DSN-08-bare-plus"),
        pytest.param("a+zz", id="DSN-08-not-hex"),
        pytest.param("a+2b", id="DSN-08-lower-case-hex"),
        pytest.param("a=b", id="DSN-08-equals"),
        pytest.param("abc\x01", id="DSN-08-control"),
        pytest.param("a b", id="DSN-08-space"),
        pytest.param("a\x7f", id="DSN-08-del"),
        pytest.param("ü", id="DSN-08-non-ascii"),
        pytest.param("+C3+A9", id="DSN-08-octet-above-ascii"),
        pytest.param("a\n", id="DSN-08-trailing-newline"),
    ],
)
def test_xtext_decode_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="xtext"):
        xtext_decode(value)


@pytest.mark.parametrize(
    ("plain", "encoded"),
    [
        ("a+b", "a+2Bb"),
        ("a=b", "a+3Db"),
        ("x@example.test", "x@example.test"),
        ("a b\r\n\x7f", "a+20b+0D+0A+7F"),
        ("", ""),
    ],
)
def test_xtext_encode(plain: str, encoded: str) -> None:
    assert xtext_encode(plain) == encoded


def test_xtext_encode_rejects_non_ascii() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        xtext_encode("é")


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_xtext_round_trip(plain: str) -> None:
    encoded = xtext_encode(plain)
    assert all("!" <= char <= "~" and char != "=" for char in encoded)
    assert xtext_decode(encoded) == plain


@given(st.text())
def test_xtext_decode_raises_only_value_error(value: str) -> None:
    try:
        decoded = xtext_decode(value)
    except ValueError:
        return
    # Each "+XX" became one character and everything else was kept.
    assert len(decoded) == len(value) - 2 * value.count("+")
    assert decoded.isascii()


# Text near the grammar, so that random inputs get past the first checks often.
_PATHISH = st.text(
    alphabet=st.sampled_from('<>@.:,"\\[] -+aZ09_\x01\x7fIPv6ü\u200b\ud800é'), max_size=40
)


@given(
    st.one_of(st.text(), _PATHISH, _PATHISH.map(lambda text: f"<{text}>")),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_parse_path_raises_only_address_error(
    path: str, null_ok: bool, postmaster_ok: bool, utf8: bool
) -> None:
    try:
        mailbox = parse_path(path, null_ok=null_ok, postmaster_ok=postmaster_ok, utf8=utf8)
    except AddressError as exc:
        error = exc
    else:
        assert f"<{mailbox}>" == path or path.endswith(f":{mailbox}>")
        assert len(path.encode("utf-8")) <= 256
        return
    assert error.kind in {"syntax", "length", "utf8"}
    assert error.reason
    if not utf8 and not path.isascii():
        assert error.kind == "utf8"


@given(st.one_of(st.text(), _PATHISH.map(lambda text: f"<{text}")))
def test_split_path_raises_only_address_error(text: str) -> None:
    try:
        path, rest = split_path(text)
    except AddressError:
        return
    assert path + rest == text
    assert path.startswith("<")
    assert path.endswith(">")


@given(st.text(), st.booleans())
def test_is_valid_domain_never_raises(text: str, utf8: bool) -> None:
    assert isinstance(is_valid_domain(text, utf8=utf8), bool)


_ATOM = st.text(
    alphabet=string.ascii_letters + string.digits + ATEXT_SPECIALS, min_size=1, max_size=10
)
_LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,18}[A-Za-z0-9])?", fullmatch=True)
_MAILBOX = st.builds(
    "{}@{}".format,
    st.lists(_ATOM, min_size=1, max_size=4).map(".".join),
    st.lists(_LABEL, min_size=1, max_size=4).map(".".join),
)


@given(_MAILBOX, st.booleans(), st.booleans(), st.booleans())
def test_valid_mailbox_is_accepted_unchanged(
    mailbox: str, null_ok: bool, postmaster_ok: bool, utf8: bool
) -> None:
    assert (
        parse_path(f"<{mailbox}>", null_ok=null_ok, postmaster_ok=postmaster_ok, utf8=utf8)
        == mailbox
    )


@given(_MAILBOX, st.lists(_LABEL, min_size=1, max_size=3))
def test_source_route_is_dropped(mailbox: str, hops: list[str]) -> None:
    route = ",".join(f"@{hop}" for hop in hops)
    assert parse(f"<{route}:{mailbox}>") == mailbox


@given(_MAILBOX)
def test_split_path_then_parse(mailbox: str) -> None:
    path, rest = split_path(f"<{mailbox}> SIZE=1")
    assert (path, rest) == (f"<{mailbox}>", " SIZE=1")
    assert parse(path) == mailbox
