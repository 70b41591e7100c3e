"""User-space instructions a server spends per message, counted by valgrind: a figure that does not drift.

Run from the project root: ``.venv/bin/python benchmarks/instructions.py [--servers asyncio,trio]
[--workloads conn,keepalive] [--messages 500]``. Needs ``valgrind`` (Debian package ``valgrind``) and Postfix's
``smtp-source`` (package ``postfix``); installs nothing.

On a small shared machine two wall-clock runs of ``e2e.py`` can disagree by more than the change being
measured. Instructions cannot: each server (``servers.py KIND``) runs under ``valgrind --tool=callgrind``
twice, once for a warm-up load and once for that load plus ``--messages`` more, and the difference divided by
``--messages`` is the cost of one message, start-up and warm-up cancelled out. The kernel's share (system
calls, TCP) is not counted; ``e2e.py``'s CPU seconds include it. Workloads: ``conn`` — one 1 KiB message per
connection; ``keepalive`` — 1 KiB messages over four long connections (the per-message cost alone).
"""

from __future__ import annotations

import argparse
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
WARM_UP = 100
SESSIONS = 4
READY_TIMEOUT = 120.0
WORKLOADS = {"conn": [], "keepalive": ["-d"]}
_COLLECTED = re.compile(r"Collected : (\d+)")


def count(kind: str, messages: int, flags: list[str], source: str) -> int:
    """Instructions the server ``kind`` ran in its whole life, having served ``messages`` messages."""
    with tempfile.TemporaryDirectory(prefix="instructions-") as folder:
        ready = Path(folder) / "ready"
        log = Path(folder) / "valgrind"
        command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        command += [sys.executable, str(HERE / "servers.py"), kind]
        with ready.open("w") as out, log.open("w") as err:
            server = subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
            try:
                port = wait_ready(ready, server)
                base = [source, "-s", str(SESSIONS), "-l", "1024", "-M", "bench.test"]
                base += ["-f", "load@bench.test", "-t", "sink@bench.test", *flags]
                subprocess.run([*base, "-m", str(messages), f"{HOST}:{port}"], check=True)
                time.sleep(0.5)  # the last session's close
            finally:
                server.send_signal(signal.SIGINT)
                try:
                    server.wait(60)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
        found = _COLLECTED.search(log.read_text())
        if found is None:
            raise RuntimeError(f"valgrind printed no total for {kind}:\n{log.read_text()[-2000:]}")
        return int(found.group(1))


def wait_ready(path: Path, server: subprocess.Popen[bytes]) -> int:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        text = path.read_text()
        if text.startswith("READY "):
            return int(text.split()[1])
        if server.poll() is not None:
            raise RuntimeError("the server exited before it was ready")
        time.sleep(0.1)
    raise RuntimeError("the server was not ready in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="asyncio,trio,anyio,blocking,sink,aiosmtpd")
    parser.add_argument("--workloads", default="conn,keepalive")
    parser.add_argument(
        "--messages", type=int, default=500, help="messages measured (beyond the warm-up)"
    )
    args = parser.parse_args(argv)
    source = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    if not shutil.which("valgrind") or not Path(source).exists():
        print(
            "needs valgrind and smtp-source (Debian packages valgrind and postfix)", file=sys.stderr
        )
        return 1
    print(
        "| server | "
        + " | ".join(f"{w} (instructions/msg)" for w in args.workloads.split(","))
        + " |"
    )
    print("| --- |" + " --- |" * len(args.workloads.split(",")))
    for kind in args.servers.split(","):
        cells = []
        for workload in args.workloads.split(","):
            flags = WORKLOADS[workload]
            before = count(kind, WARM_UP, flags, source)
            after = count(kind, WARM_UP + args.messages, flags, source)
            cells.append(f"{(after - before) / args.messages:,.0f}")
        print(f"| {kind} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
