"""The asyncio backend on uvloop, whose transports are not ``asyncio.Transport`` instances."""

from __future__ import annotations

import smtplib

import pytest

from .clients import unverified_context
from .conftest import Backend, Recorder

pytest.importorskip("uvloop")

UVLOOP = Backend("asyncio+uvloop", "smtpproto_adapters.asyncio", "asyncio", (("use_uvloop", True),))


@pytest.mark.parametrize("backend", [UVLOOP], ids=["asyncio+uvloop"])
def test_session_on_uvloop(start_server) -> None:
    rec = Recorder()
    server = start_server(rec)
    body = b"Subject: uvloop\r\n\r\n" + b"line\r\n" * 20_000  # several reads' worth
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo("c.test")
        assert client.has_extn("pipelining")
        client.starttls(context=unverified_context())
        client.ehlo("c.test")
        client.sendmail("a@example.org", ["b@example.org"], body)
        client.sendmail("c@example.org", ["d@example.org"], b"Subject: two\r\n\r\nsecond\r\n")
    rec.wait_closed()
    session = rec.closed[0]
    assert session.secure
    assert [each.body for each in rec.stored] == [body, b"Subject: two\r\n\r\nsecond\r\n"]
    assert rec.stored[0].transmission_type == "ESMTPS"
