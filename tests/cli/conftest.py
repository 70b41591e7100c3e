"""Fixtures for the command-line tests: ``smtpproto serve`` as a real subprocess, and its output.

Every wait has a timeout, and every process started here is killed (with its whole process group, so
``--workers`` children too) when the test ends, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

#: The interpreter's own console script, i.e. the README's ``.venv/bin/smtpproto``.
SMTPPROTO = str(Path(sys.executable).with_name("smtpproto"))
#: Seconds any one step (start-up, a reply, an exit) may take before the test fails instead of hanging.
TIMEOUT = 15.0
_LISTENING = re.compile(r"^smtpproto listening on (?:\[([^\]]+)\]|([^ :,]+)):(\d+)")


def command(*args: str) -> list[str]:
    """``python -m smtpproto_adapters <args>`` with this interpreter."""
    return [sys.executable, "-m", "smtpproto_adapters", *args]


def run_cli(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a command that is expected to finish on its own (usage errors, hash-password)."""
    return subprocess.run(
        command(*args),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=cwd,
        check=False,
    )


def unverified_context() -> ssl.SSLContext:
    """A client context that accepts the server's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for haproxy's frontend, which cannot report one)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Serve:
    """A running ``smtpproto serve`` subprocess.

    Standard output is read in a background thread: :meth:`line` returns its text lines one by one (the
    start-up line is consumed by the constructor); :attr:`raw` is everything, as bytes.
    """

    def __init__(self, args: list[str], cwd: Path, executable: list[str] | None = None) -> None:
        argv = [*(executable or command()), "serve", *args]
        self.cwd = cwd
        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a group of its own: cleanup kills the workers too
        )
        self.raw = b""
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        first = self.line()
        match = _LISTENING.match(first)
        assert match, f"unexpected start-up line {first!r}"
        self.host = match[1] or match[2]
        self.port = int(match[3])
        self.banner = first

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self.raw += raw
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self._stderr.append(raw)

    @property
    def stderr(self) -> str:
        """Standard error so far."""
        return b"".join(self._stderr).decode("utf-8", "replace")

    def wait_for_stderr(self, text: str, timeout: float = TIMEOUT) -> str:
        """Standard error once it contains ``text`` (the log line may trail the reply it explains)."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr:
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on stderr within {timeout}s: {self.stderr}")
            time.sleep(0.02)
        return self.stderr

    def line(self, timeout: float = TIMEOUT) -> str:
        """The next line of standard output; fails if none comes (or the process ended)."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no output within {timeout}s; stderr: {self.stderr}") from None
        if line is None:
            self.process.wait(TIMEOUT)
            raise AssertionError(
                f"smtpproto exited ({self.process.returncode}) early; stderr: {self.stderr}"
            )
        return line

    def lines_matching(self, pattern: str, count: int) -> list[str]:
        """The next ``count`` stdout lines that match ``pattern`` (others are skipped)."""
        found: list[str] = []
        deadline = time.monotonic() + TIMEOUT
        while len(found) < count:
            line = self.line(max(0.1, deadline - time.monotonic()))
            if re.search(pattern, line):
                found.append(line)
        return found

    def stop(self, signum: int = signal.SIGTERM, group: bool = False) -> int:
        """Send ``signum`` (to the whole process group with ``group``) and return the exit status."""
        if group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        return self.wait()

    def wait(self) -> int:
        """The exit status, once the process has ended and all its output has been read."""
        try:
            status = self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"smtpproto did not exit; stderr: {self.stderr}") from None
        for reader in self._readers:
            reader.join(TIMEOUT)
        return status

    def kill(self) -> None:
        """Kill the process group unconditionally (test cleanup)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(TIMEOUT)
        if self.process.stdout is not None:
            self.process.stdout.close()
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Serve]]:
    """``serve(*flags, cwd=tmp_path)``: start ``smtpproto serve --port 0 --name mx.test ... flags``.

    Reverse lookups are off so that the Received header is predictable (``[127.0.0.1]``).
    """
    started: list[Serve] = []

    def start(*flags: str, cwd: Path | None = None, executable: list[str] | None = None) -> Serve:
        args = ["--port", "0", "--name", "mx.test", "--no-reverse-lookup", *flags]
        server = Serve(args, cwd or tmp_path, executable)
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


def message_files(maildir: Path) -> list[Path]:
    """The messages in a Maildir's ``new/``, oldest name first."""
    return sorted((maildir / "new").iterdir())
