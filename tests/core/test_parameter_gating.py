"""MAIL parameters exist only while their extension is in force (RFC 5321 §4.1.1.11: otherwise 555)."""

from __future__ import annotations

from smtpproto import ServerConfig

from .helpers import replies, session


def test_rtls_03_requiretls_hidden_over_tls_is_unsupported() -> None:
    config = ServerConfig(secure=True, hide_requiretls=True)
    out, _ = session(b"EHLO c.test\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\n", config)
    ehlo = [line for line in out.decode().split("\r\n") if line.startswith("250")]
    assert not any(line.endswith("REQUIRETLS") for line in ehlo)
    assert replies(out)[-1].startswith("555 5.5.4")


def test_rtls_requiretls_advertised_over_tls_is_accepted() -> None:
    out, _ = session(
        b"EHLO c.test\r\nMAIL FROM:<a@b.test> REQUIRETLS\r\n", ServerConfig(secure=True)
    )
    assert "\r\n250 REQUIRETLS\r\n" in out.decode()
    assert replies(out)[-1].startswith("250 2.1.0")


def test_auth_parameter_without_auth_is_unsupported() -> None:
    out, _ = session(
        b"EHLO c.test\r\nMAIL FROM:<a@b.test> AUTH=<>\r\n", ServerConfig(auth_methods=())
    )
    assert replies(out)[-1].startswith("555 5.5.4")


def test_auth_16_auth_parameter_accepted_from_unauthenticated_clients() -> None:
    # RFC 4954 §5: the parameter MUST be accepted even before (or without) AUTH, here in plaintext.
    out, events = session(
        b"EHLO c.test\r\nMAIL FROM:<e=mc2@example.com> AUTH=e+3Dmc2@example.com\r\n", ServerConfig()
    )
    assert replies(out)[-1].startswith("250 2.1.0")
    assert events[-1].args["AUTH"] == "e=mc2@example.com"  # type: ignore[union-attr]
