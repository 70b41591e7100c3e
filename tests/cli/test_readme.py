"""README.md: two one-line set-up commands (the second is what CI runs), a working library example, links."""

from __future__ import annotations

import re
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from .conftest import TIMEOUT, free_port

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```\n", README, flags=re.DOTALL | re.MULTILINE)


def test_two_single_line_setup_commands() -> None:
    commands = blocks("sh")
    assert len(commands) == 2
    assert all(block.count("\n") == 1 for block in commands)
    start, test = (block.strip() for block in commands)
    assert (
        start == "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/smtpproto serve"
    )
    assert test.startswith("python3 -m venv .venv && ")
    assert test.endswith(" && scripts/check")


def test_ci_runs_exactly_the_readme_test_command() -> None:
    test = blocks("sh")[1].strip()
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [line for line in ci.splitlines() if line and not line.lstrip().startswith("#")]
    # The last command of CI is the README's line, after the system tools are in place.
    assert commands[-1] == test
    assert re.search(r"^for tool in swaks curl openssl; ", ci, re.MULTILINE)
    assert "need+=(haproxy)" in ci


def test_the_library_example_serves_mail(tmp_path: Path) -> None:
    [example] = blocks("python")
    assert len([line for line in example.splitlines() if line.strip()]) <= 10
    port = free_port()
    script = tmp_path / "example.py"
    script.write_text(example.replace("2525", str(port)), encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-u", str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = TIMEOUT
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT)
                break
            except ConnectionRefusedError:
                assert process.poll() is None, process.communicate(timeout=TIMEOUT)
                deadline -= 0.05
                assert deadline > 0, "the example did not start listening"
                time.sleep(0.05)
        with client:
            client.sendmail("alice@example.org", ["bob@example.net"], b"Subject: hi\r\n\r\nhi\r\n")
        assert process.stdout is not None
        assert process.stdout.readline() == b"alice@example.org 19 bytes\n"
    finally:
        process.kill()
        process.communicate(timeout=TIMEOUT)


def test_documentation_links_exist() -> None:
    links = re.findall(r"\]\(([^)#]+)\)", README)
    assert {"docs/cli.md", "docs/deployment.md", "docs/adapters.md", "docs/core.md"} <= set(links)
    assert [link for link in links if not (ROOT / link).is_file()] == []
