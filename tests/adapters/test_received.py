"""The Received trace header (smtpproto_adapters._received): layout, folding, and resistance to injection."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from email import message_from_bytes
from email.policy import SMTP
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smtpproto_adapters._received import received_header

WHEN = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
DATE = "Mon, 01 Jan 2024 12:00:00 +0000"


def header(**overrides: Any) -> bytes:
    fields: dict[str, Any] = {
        "helo": "client.example",
        "client_hostname": "mail.client.example",
        "client_address": "192.0.2.1",
        "server_name": "mx.example",
        "protocol": "ESMTPS",
        "queue_id": "1a2b3c",
        "recipient": "user@mx.example",
        "when": WHEN,
    }
    fields.update(overrides)
    return received_header(**fields)


def physical_lines(data: bytes) -> list[bytes]:
    assert data.endswith(b"\r\n")
    return data[:-2].split(b"\r\n")


def assert_well_formed(data: bytes) -> None:
    """One header field: CRLF only as folding (CRLF + TAB) or at the end, no other control character."""
    lines = physical_lines(data)
    assert re.match(rb"Received: from( |$)", lines[0])  # a huge HELO name is folded after "from"
    for line in lines:
        assert b"\r" not in line
        assert b"\n" not in line
    for line in lines[1:]:
        assert line.startswith(b"\t")
        assert line[1:2] not in (b"", b" ", b"\t")  # never a whitespace-only continuation line
    text = data.decode("utf-8")
    # No control character but the TAB, CR and LF of folding; no Unicode line or paragraph separator.
    assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029]", text)
    message = message_from_bytes(data + b"\r\nbody\r\n", policy=SMTP)
    assert message.keys() == ["Received"]
    assert message.get_payload() == "body\r\n"


def test_full_header_byte_for_byte() -> None:
    assert header() == (
        b"Received: from client.example (mail.client.example [192.0.2.1])\r\n"
        b"\tby mx.example with ESMTPS id 1a2b3c\r\n"
        b"\tfor <user@mx.example>; Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    )


def test_without_recipient_or_id_the_date_follows_the_last_clause() -> None:
    assert header(recipient=None, queue_id=None, protocol="LMTP") == (
        b"Received: from client.example (mail.client.example [192.0.2.1])\r\n"
        b"\tby mx.example with LMTP; Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    )
    assert header(recipient=None) == (
        b"Received: from client.example (mail.client.example [192.0.2.1])\r\n"
        b"\tby mx.example with ESMTPS id 1a2b3c; Mon, 01 Jan 2024 12:00:00 +0000\r\n"
    )


@pytest.mark.parametrize("hostname", [None, "", "[192.0.2.1]"])
def test_unknown_client_hostname_leaves_the_address_literal(hostname: str | None) -> None:
    assert header(client_hostname=hostname).startswith(
        b"Received: from client.example ([192.0.2.1])\r\n"
    )


def test_missing_helo_uses_the_address_literal() -> None:
    assert header(helo=None, client_hostname=None).startswith(
        b"Received: from [192.0.2.1] ([192.0.2.1])\r\n"
    )
    assert header(helo="").startswith(b"Received: from [192.0.2.1] (mail.client.example")


@pytest.mark.parametrize(
    ("address", "literal"),
    [
        ("192.0.2.1", b"[192.0.2.1]"),
        ("2001:db8::1", b"[IPv6:2001:db8::1]"),
        ("2001:0db8:0000::0001", b"[IPv6:2001:db8::1]"),
        ("::ffff:192.0.2.7", b"[192.0.2.7]"),
        ("", b"[unknown]"),
        ("/run/smtp.sock", b"[/run/smtp.sock]"),
        ("bad\r\naddress", b"[bad??address]"),
    ],
)
def test_address_literals(address: str, literal: bytes) -> None:
    data = header(client_address=address, client_hostname=None)
    assert data.startswith(b"Received: from client.example (" + literal + b")\r\n")


def test_date_keeps_the_offset() -> None:
    when = datetime(2024, 7, 4, 9, 5, 3, tzinfo=timezone(timedelta(hours=2)))
    assert header(when=when).endswith(b"; Thu, 04 Jul 2024 09:05:03 +0200\r\n")


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        header(when=datetime(2024, 1, 1))  # naive: the point of the test


def test_injection_through_helo_is_neutralised() -> None:
    data = header(helo="evil\r\nX-Injected: 1")
    assert_well_formed(data)
    assert b"\r\nX-Injected" not in data
    assert b"\nX-Injected" not in data
    assert data.startswith(b"Received: from evil??X-Injected:?1 (mail.client.example")


@pytest.mark.parametrize(
    "evil",
    [
        "a\rb",
        "a\nb",
        "a\r\n\r\nBody: starts here",
        "a\x00b\x7fc\x1bd",
        "a\x85b\u2028c\u2029d",
        "a\tb c\x0bd\x0ce",
        "a (forged comment) by b",
        "a; Mon, 01 Jan 2000 00:00:00 +0000",
        "a\\",
        "\ud800lone surrogate",
    ],
)
def test_client_text_cannot_break_the_header(evil: str) -> None:
    for field in ("helo", "client_hostname", "recipient", "queue_id", "server_name", "protocol"):
        data = header(**{field: evil})
        assert_well_formed(data)
        assert data.count(b"(") == data.count(b")") == 1  # only the TCP-info comment
        assert data.count(b";") == 1  # only the one before the date
        assert data.endswith(f"; {DATE}\r\n".encode())


def test_recipient_keeps_spaces_of_a_quoted_local_part() -> None:
    data = header(recipient='"john doe"@example.com')
    assert b'\tfor <"john doe"@example.com>; ' in data


def test_non_ascii_names_are_utf8() -> None:
    data = header(helo="bücher.example", recipient="jörg@bücher.example")
    assert "from bücher.example".encode() in data
    assert "for <jörg@bücher.example>;".encode() in data


def test_long_fields_fold_to_78_characters() -> None:
    data = header(
        helo="h" * 60 + ".example",
        client_hostname="r" * 50 + ".example",
        server_name="mx." + "s" * 40 + ".example",
        queue_id="q" * 30,
        recipient="u" * 60 + "@example.com",
        protocol="ESMTPSA",
    )
    assert_well_formed(data)
    lines = physical_lines(data)
    assert all(len(line) <= 78 for line in lines), [len(line) for line in lines]
    # Folding only inserts CRLF before existing whitespace: unfolding gives back the single-line form.
    unfolded = b" ".join(line.lstrip(b"\t") for line in lines).decode()
    assert unfolded == (
        f"Received: from {'h' * 60}.example ({'r' * 50}.example [192.0.2.1]) "
        f"by mx.{'s' * 40}.example with ESMTPSA id {'q' * 30} "
        f"for <{'u' * 60}@example.com>; {DATE}"
    )


def test_an_unbreakable_word_is_cut_to_stay_far_below_998() -> None:
    data = header(helo="x" * 2000, recipient="y" * 2000)
    assert_well_formed(data)
    lines = physical_lines(data)
    assert max(len(line) for line in lines) <= len("Received: from ") + 256
    assert b"x" * 253 + b"..." in data
    assert b"x" * 254 not in data


@given(
    helo=st.none() | st.text(),
    client_hostname=st.none() | st.text(),
    client_address=st.text() | st.ip_addresses().map(str),
    queue_id=st.none() | st.text(),
    recipient=st.none() | st.text(),
)
def test_any_client_text_gives_one_well_formed_header(
    helo: str | None,
    client_hostname: str | None,
    client_address: str,
    queue_id: str | None,
    recipient: str | None,
) -> None:
    data = header(
        helo=helo,
        client_hostname=client_hostname,
        client_address=client_address,
        queue_id=queue_id,
        recipient=recipient,
    )
    assert_well_formed(data)
    # Bare CR or LF never appear; every CRLF but the last is followed by the folding TAB.
    assert data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n")
    assert data.count(b"\r\n") == data.count(b"\r\n\t") + 1


@given(
    helo=st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-0123456789", min_size=1, max_size=60),
    server_name=st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-", min_size=1, max_size=60),
    recipient=st.text(alphabet="abcdefghijklmnopqrstuvwxyz.@+", min_size=1, max_size=60),
)
def test_ordinary_names_always_fit_in_78(helo: str, server_name: str, recipient: str) -> None:
    data = header(helo=helo, server_name=server_name, recipient=recipient)
    assert all(len(line) <= 78 for line in physical_lines(data))
