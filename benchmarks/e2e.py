"""End-to-end throughput and memory of smtpproto's servers against aiosmtpd, Node's smtp-server, a bare sink, Postfix.

Run from the project root: ``.venv/bin/python benchmarks/e2e.py`` (five rounds, about ten minutes on two
cores) or ``--quick`` (one round). Options: ``--servers`` and ``--workloads`` pick columns and rows by name
(``--list`` shows them), ``--scale`` multiplies the messages per round, ``--no-memory`` / ``--only-memory``,
``--json FILE`` keeps every sample, ``--profile DIR`` attaches ``py-spy`` to each Python server while it is
under load and prints where its time goes.

Every measurement starts a fresh server (``servers.py``, ``node_sink.js`` or Postfix's ``smtp-sink``) in its own process on
127.0.0.1, sends it one warm-up message, then runs the workload's load against it: Postfix's ``smtp-source``
where it can (present, and the workload neither pipelines nor needs STARTTLS), else ``loadgen.py``. Within a
round the servers take turns on one workload (A B C A B C ...), so drift on the machine spreads over all of
them. The figures are medians over the rounds of: messages (or MiB of message) per second from the load
tool's wall time, the server's CPU seconds during the load (utime + stime from /proc/PID/stat), and its peak
RSS (VmHWM from /proc/PID/status). Ratios are against aiosmtpd in the same run.

The memory goals use a fresh server each: peak RSS after one 1 KiB message and then after one 100 MiB
message on the same server, and RSS before and with 1,000 idle connections that each said EHLO.

It installs nothing: ``smtp-source``/``smtp-sink`` come from the Debian package ``postfix``, aiosmtpd and
uvloop from the ``bench`` extra, ``py-spy`` from pip, Node's ``smtp-server`` from npm into ``benchmarks/.node``;
whatever is missing is left out of the table.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import math
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
HOST = "127.0.0.1"
KIB = 1024
MIB = 1024 * 1024
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
ROUNDS = 5
IDLE_CONNECTIONS = 1000
IDLE_BATCH = 100
BIG_MESSAGE = 100 * MIB
READY_TIMEOUT = 30.0
LOAD_TIMEOUT = 300.0


# -- what is measured ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A column: ``kind`` is a ``servers.py`` KIND, ``node`` (``node_sink.js``) or ``smtp-sink`` (Postfix)."""

    name: str
    kind: str
    uvloop: bool = False
    anyio_trio: bool = False  # kind anyio on anyio's trio backend
    starttls: bool = True
    python: bool = True
    idle: bool = True  # can hold IDLE_CONNECTIONS sessions (smtp-sink stops at 256)


@dataclass(frozen=True)
class Workload:
    """A row. ``messages`` per round; ``per_connection`` 1 means a new connection for each message."""

    key: str
    title: str
    size: int
    sessions: int
    per_connection: int
    messages: int
    recipients: int = 1
    lmtp: bool = False
    starttls: bool = False
    pipelining: bool = False
    pinned: bool = False

    @property
    def unit(self) -> str:
        return "MiB/s" if self.size >= MIB else "msgs/s"


SERVERS = [
    Server("smtpproto asyncio", "asyncio"),
    Server("smtpproto asyncio+uvloop", "asyncio", uvloop=True),
    Server("smtpproto blocking", "blocking"),
    Server("smtpproto trio", "trio"),
    Server("smtpproto anyio", "anyio"),
    Server("smtpproto anyio+trio", "anyio", anyio_trio=True),
    Server("asyncio Protocol sink", "sink"),
    Server("aiosmtpd 1.4.6", "aiosmtpd"),
    Server("Node smtp-server 3.21.6", "node", python=False),
    Server("Postfix smtp-sink", "smtp-sink", starttls=False, python=False, idle=False),
]
BASELINE = "aiosmtpd 1.4.6"
OURS = "smtpproto asyncio"
NODE = "Node smtp-server 3.21.6"

WORKLOADS = [
    Workload("conn", "1 KiB, 1 msg per connection, 20 sessions", KIB, 20, 1, messages=2000),
    Workload("k100", "1 KiB, 100 msgs per connection, 20 sessions", KIB, 20, 100, messages=4000),
    Workload(
        "pipe",
        "1 KiB, 100 per connection, 20 sessions, pipelined",
        KIB,
        20,
        100,
        messages=4000,
        pipelining=True,
    ),
    Workload("mib", "1 MiB, 4 sessions", MIB, 4, 1, messages=64),
    Workload(
        "lmtp",
        "LMTP, 5 recipients, 1 KiB, 100 per connection, 20 sessions",
        KIB,
        20,
        100,
        messages=2000,
        recipients=5,
        lmtp=True,
    ),
    Workload(
        "tls",
        "STARTTLS, then 1 KiB, 100 per connection, 20 sessions, pipelined",
        KIB,
        20,
        100,
        messages=2000,
        starttls=True,
        pipelining=True,
    ),
    Workload(
        "pin",
        "1 KiB, 100 per connection, 1 session, server and load on one CPU",
        KIB,
        1,
        100,
        messages=1500,
        pinned=True,
    ),
]


@dataclass
class Sample:
    rate: float  # msgs/s or MiB/s, as the workload's unit says
    cpu: float  # server CPU seconds during the load
    rss: float  # server peak RSS, MiB
    seconds: float
    tool: str


@dataclass
class Results:
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    errors: dict[str, dict[str, str]] = field(default_factory=dict)
    memory: dict[str, dict[str, float]] = field(default_factory=dict)
    memory_errors: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, str] = field(default_factory=dict)


# -- tools and availability ----------------------------------------------------------------------------


def tool(name: str) -> str | None:
    """An executable on PATH, in /usr/sbin (Postfix's tools) or beside this Python (py-spy)."""
    found = shutil.which(name)
    if found:
        return found
    for folder in ("/usr/sbin", str(Path(PYTHON).parent)):
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def node_modules() -> Path:
    """Where ``node_sink.js`` finds ``smtp-server``: ``$NODE_MODULES``, else ``benchmarks/.node/node_modules``."""
    return Path(os.environ.get("NODE_MODULES", HERE / ".node" / "node_modules"))


def available(server: Server) -> str | None:
    """None if ``server`` can run here, else why not."""
    if server.kind == "smtp-sink":
        return None if tool("smtp-sink") else "smtp-sink not installed (Debian package postfix)"
    if server.kind == "node":
        if not tool("node"):
            return "node not installed"
        if not (node_modules() / "smtp-server" / "package.json").is_file():
            return f"smtp-server not installed in {node_modules()} (see benchmarks/README.md)"
        return None
    modules = {
        "asyncio": "smtpproto_adapters.asyncio",
        "blocking": "smtpproto_adapters.blocking",
        "trio": "smtpproto_adapters.trio",
        "anyio": "smtpproto_adapters.anyio",
        "aiosmtpd": "aiosmtpd",
        "sink": "asyncio",
    }
    needed = [modules[server.kind]] + (["uvloop"] if server.uvloop else [])
    needed += {"trio": ["trio"], "anyio": ["anyio"]}.get(server.kind, [])
    needed += ["trio"] * server.anyio_trio
    for module in needed:
        try:
            if importlib.util.find_spec(module) is None:
                return f"{module} not importable"
        except ModuleNotFoundError:
            return f"{module} not importable"
    return None


def supports(server: Server, workload: Workload) -> bool:
    return server.starttls or not workload.starttls


def uses_smtp_source(workload: Workload) -> bool:
    return tool("smtp-source") is not None and not (workload.pipelining or workload.starttls)


# -- /proc ----------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICK


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` figure (VmHWM, VmRSS) from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- a server under test --------------------------------------------------------------------------------


class ServerProcess:
    """A fresh server in its own process; ``pid`` is the server itself (taskset execs it)."""

    def __init__(self, server: Server, *, lmtp: bool, tls: tuple[str, str] | None, pinned: bool):
        prefix = ["taskset", "-c", "0"] if pinned else []
        self.threads = server.kind == "blocking"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115  # closed by stop()
        env = None
        if server.kind == "smtp-sink":
            self.port = free_port()
            user = ["-u", "nobody"] if os.geteuid() == 0 else []
            sink = tool("smtp-sink")
            assert sink is not None
            lmtp_flag = ["-L"] if lmtp else []
            command = [*prefix, sink, *user, *lmtp_flag, f"{HOST}:{self.port}", "1024"]
        else:
            if server.kind == "node":
                node = tool("node")
                assert node is not None
                command = [*prefix, node, str(HERE / "node_sink.js")]
                env = {**os.environ, "NODE_PATH": str(node_modules())}
            else:
                command = [*prefix, PYTHON, str(HERE / "servers.py"), server.kind]
                command += ["--loop", "uvloop"] * server.uvloop
                command += ["--anyio-backend", "trio"] * server.anyio_trio
            command += ["--lmtp"] * lmtp
            if tls is not None:
                command += ["--cert", tls[0], "--key", tls[1]]
        self.proc = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=self.log, stdin=subprocess.DEVNULL, env=env
        )
        self.pid = self.proc.pid
        try:
            if server.kind == "smtp-sink":
                self.wait_listening()
            else:
                self.port = self.read_port()
        except BaseException:
            self.stop()
            raise

    def read_port(self) -> int:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(READY_TIMEOUT):
                raise RuntimeError(f"server not ready after {READY_TIMEOUT} s{self.tail()}")
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            self.proc.wait(5)
            raise RuntimeError(f"server did not start{self.tail()}")
        return int(line.split()[1])

    def wait_listening(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((HOST, self.port), timeout=2) as sock:
                    if sock.recv(512).startswith(b"220"):
                        sock.sendall(b"QUIT\r\n")
                        return
            except OSError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise RuntimeError(f"smtp-sink not listening{self.tail()}")

    def tail(self) -> str:
        self.log.seek(0)
        text = self.log.read()[-2000:].decode(errors="replace").strip()
        return f":\n{text}" if text else ""

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def kib(self, key: str) -> int:
        return status_kib(self.pid, key)

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}{self.tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.log.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(
    server: Server, *, lmtp: bool = False, tls: tuple[str, str] | None = None, pinned: bool = False
) -> Iterator[ServerProcess]:
    process = ServerProcess(server, lmtp=lmtp, tls=tls, pinned=pinned)
    try:
        yield process
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        # The server's own last words (a traceback) say more than the client's error.
        raise RuntimeError(f"{type(exc).__name__}: {exc}{process.tail()}") from exc
    finally:
        process.stop()


def self_signed(folder: str) -> tuple[str, str] | None:
    """A throwaway certificate for localhost from the openssl command (None without it)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        return None
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-nodes", "-days", "2", "-subj", "/CN=localhost", "-keyout", key, "-out", cert]
    subprocess.run(command, check=True, capture_output=True)
    return cert, key


# -- load -----------------------------------------------------------------------------------------------


def warm_up(port: int, workload: Workload) -> None:
    """One message through the same path (LHLO, STARTTLS) so first-use costs stay out of the figures."""
    import smtplib

    client: smtplib.SMTP = (smtplib.LMTP if workload.lmtp else smtplib.SMTP)(HOST, port, timeout=30)
    with client:
        if workload.starttls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            client.starttls(context=context)
        client.sendmail("warm@bench.test", ["up@bench.test"], b"Subject: warm-up\r\n\r\nhello\r\n")


def loadgen_command(port: int, workload: Workload, messages: int) -> list[str]:
    command = [PYTHON, str(HERE / "loadgen.py"), str(port), "--messages", str(messages)]
    command += ["--sessions", str(workload.sessions), "--size", str(workload.size)]
    command += ["--per-connection", str(workload.per_connection)]
    command += ["--recipients", str(workload.recipients), "--timeout", str(LOAD_TIMEOUT)]
    command += ["--lmtp"] * workload.lmtp + ["--starttls"] * workload.starttls
    command += [] if workload.pipelining else ["--no-pipelining"]
    return command


def smtp_source_commands(port: int, workload: Workload, messages: int) -> list[list[str]]:
    """smtp-source sends ``-m`` messages over ``-s`` sessions; ``-d`` keeps each connection for more than one.

    With ``-d`` every session sends until the count runs out, so a round of ``per_connection`` messages per
    connection is several runs of ``sessions * per_connection`` messages each.
    """
    source = tool("smtp-source")
    assert source is not None
    base = [source, "-s", str(workload.sessions), "-l", str(workload.size), "-M", "bench.test"]
    base += ["-f", "load@bench.test", "-t", "sink@bench.test", "-r", str(workload.recipients)]
    base += ["-L"] * workload.lmtp
    if workload.per_connection == 1:
        return [[*base, "-m", str(messages), f"{HOST}:{port}"]]
    batch = workload.sessions * workload.per_connection
    return [
        [*base, "-d", "-m", str(min(batch, messages - done)), f"{HOST}:{port}"]
        for done in range(0, messages, batch)
    ]


def run_load(port: int, workload: Workload, messages: int) -> tuple[float, str]:
    """Send the workload; return (seconds under load, tool name). Raises on any failed message."""
    prefix = ["taskset", "-c", "0"] if workload.pinned else []
    if uses_smtp_source(workload):
        started = time.perf_counter()
        for command in smtp_source_commands(port, workload, messages):
            done = subprocess.run(
                prefix + command, capture_output=True, timeout=LOAD_TIMEOUT, check=False
            )
            if done.returncode:
                raise RuntimeError(f"smtp-source failed: {done.stderr.decode()[-500:]}")
        return time.perf_counter() - started, "smtp-source"
    done = subprocess.run(
        prefix + loadgen_command(port, workload, messages),
        capture_output=True,
        timeout=LOAD_TIMEOUT + 30,
        check=False,
    )
    try:
        result = json.loads(done.stdout)
    except ValueError:
        raise RuntimeError(f"loadgen failed: {done.stderr.decode()[-500:]}") from None
    if result["errors"] or result["messages"] != messages:
        raise RuntimeError(
            f"loadgen: {result['messages']}/{messages} sent, {result['first_error']}"
        )
    return float(result["seconds"]), "loadgen"


@contextmanager
def profiling(process: ServerProcess, path: Path | None) -> Iterator[None]:
    """py-spy on the server while the load runs (raw collapsed stacks in ``path``)."""
    spy = tool("py-spy")
    if path is None or spy is None:
        yield
        return
    command = [spy, "record", "--pid", str(process.pid), "--format", "raw", "--rate", "500"]
    command += ["--output", str(path)]
    if process.threads:
        command.append("--gil")  # only the thread running Python: idle threads wait in select()
    recorder = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # py-spy attaches
    try:
        yield
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            recorder.wait(30)
        except subprocess.TimeoutExpired:
            recorder.kill()
            recorder.wait()


def measure(
    server: Server,
    workload: Workload,
    messages: int,
    tls: tuple[str, str] | None,
    profile: Path | None,
) -> Sample:
    with running(
        server, lmtp=workload.lmtp, tls=tls if workload.starttls else None, pinned=workload.pinned
    ) as process:
        warm_up(process.port, workload)
        with profiling(process, profile if server.python else None):
            cpu_before = process.cpu()
            seconds, tool_name = run_load(process.port, workload, messages)
            cpu = process.cpu() - cpu_before
        process.check_alive()
        rss = process.kib("VmHWM") / KIB
    if workload.unit == "MiB/s":
        rate = messages * workload.size / MIB / seconds
    else:
        rate = messages / seconds
    return Sample(rate=rate, cpu=cpu, rss=rss, seconds=seconds, tool=tool_name)


# -- memory goals ---------------------------------------------------------------------------------------


def read_reply(sock: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


def big_message(server: Server) -> dict[str, float]:
    """Peak RSS after one 1 KiB message, then after one 100 MiB message, on one fresh server."""
    small = Workload("small", "", KIB, 1, 1, 1)
    big = Workload("big", "", BIG_MESSAGE, 1, 1, 1, pipelining=True)
    with running(server) as process:
        warm_up(process.port, small)
        run_load(process.port, small, 1)
        after_small = process.kib("VmHWM") / KIB
        run_load(process.port, big, 1)
        process.check_alive()
        after_big = process.kib("VmHWM") / KIB
    return {"rss_1k": after_small, "rss_100m": after_big, "growth": after_big - after_small}


def idle_connections(server: Server, count: int = IDLE_CONNECTIONS) -> dict[str, float]:
    """RSS before and with ``count`` open connections that each got the greeting and said EHLO."""
    raise_nofile()
    with running(server) as process:
        warm_up(process.port, Workload("small", "", KIB, 1, 1, 1))
        time.sleep(0.2)
        before = process.kib("VmRSS")
        socks: list[socket.socket] = []
        try:
            # In batches, so that a server which delays its greeting (Node's smtp-server waits 100 ms for
            # early talkers) is not kept waiting once per connection; a batch stays within any backlog.
            for start in range(0, count, IDLE_BATCH):
                batch = [
                    socket.create_connection((HOST, process.port), timeout=30)
                    for _ in range(min(IDLE_BATCH, count - start))
                ]
                socks += batch
                for sock in batch:
                    read_reply(sock)
                    sock.sendall(b"EHLO idle.bench.test\r\n")
                for sock in batch:
                    read_reply(sock)
            time.sleep(0.5)
            process.check_alive()
            held = process.kib("VmRSS")
        finally:
            for sock in socks:
                sock.close()
    return {
        "rss_idle_before": before / KIB,
        "rss_idle_held": held / KIB,
        "kib_per_idle": (held - before) / count,
    }


# -- profiles -------------------------------------------------------------------------------------------


def frame_name(frame: str) -> str:
    """``Sink.commands (servers.py:112)`` -> ``Sink.commands (servers.py)``: one entry per function."""
    name, _, where = frame.strip().rpartition(" (")
    return f"{name} ({where.rstrip(')').rpartition(':')[0].rpartition('/')[2]})"


def summarize_profile(path: Path, top: int = 15) -> str:
    """Top functions by own (leaf) samples and by samples anywhere on the stack, from py-spy raw output.

    Frames on (nearly) every stack — the event loop's and the script's own entry — are left out of the
    second list.
    """
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    if not path.exists():
        return f"{path}: no profile written"
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(frame) for frame in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return f"{path}: no samples"
    lines = [f"{path.name}: {total} samples while busy", "  own time:"]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines.append("  on the stack:")
    shown = [(name, n) for name, n in inclusive.most_common() if n < 0.9 * total][:top]
    lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in shown]
    return "\n".join(lines)


# -- the table ------------------------------------------------------------------------------------------


def fmt(value: float) -> str:
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def first_line(text: str) -> str:
    """The first line of an error, for a table (the full text went to stderr)."""
    return text.strip().splitlines()[0][:160].replace("|", "/") if text.strip() else "?"


def median(samples: list[Sample], attr: str) -> float:
    return statistics.median(getattr(sample, attr) for sample in samples)


def ratio(value: float, base: float | None) -> str:
    return f" ({value / base:.2f}×)" if base else ""


def render(results: Results, servers: list[Server], workloads: list[Workload], rounds: int) -> str:
    out: list[str] = []
    names = [s.name for s in servers]
    header = "| workload | " + " | ".join(names) + " |"
    rule = "| --- |" + " --- |" * len(names)

    def cell(workload: Workload, name: str, attr: str, with_ratio: bool) -> str:
        error = results.errors.get(workload.key, {}).get(name)
        if error:
            return "error"
        samples = results.samples.get(workload.key, {}).get(name)
        if not samples:
            return "–"
        value = median(samples, attr)
        base_samples = results.samples.get(workload.key, {}).get(BASELINE)
        base = median(base_samples, attr) if base_samples and with_ratio else None
        text = fmt(value)
        return text + (ratio(value, base) if name != BASELINE else "")

    for title, attr, note in (
        ()
        if not workloads
        else (
            ("Throughput", "rate", "(× aiosmtpd: higher is better)"),
            ("Server CPU seconds for the round", "cpu", "(× aiosmtpd: lower is better)"),
            ("Peak server RSS, MiB", "rss", "(× aiosmtpd)"),
        )
    ):
        out += [f"### {title}, median of {rounds} round{'s' * (rounds > 1)} {note}", ""]
        out += [header, rule]
        for workload in workloads:
            unit = f" ({workload.unit})" if attr == "rate" else ""
            cells = [cell(workload, name, attr, True) for name in names]
            out.append(f"| {workload.title}{unit} | " + " | ".join(cells) + " |")
        out.append("")

    out += ["Load per round and tool:", ""]
    for workload in workloads:
        tools = {s.tool for row in results.samples.get(workload.key, {}).values() for s in row}
        out.append(
            f"* {workload.title}: {workload.messages} messages"
            f" of {workload.size} octets, {' / '.join(sorted(tools)) or 'not run'}"
        )
    failures = [
        f"* {key} / {name}: {first_line(message)}"
        for key, row in results.errors.items()
        for name, message in row.items()
    ]
    if failures:
        out += ["", "Errors:", "", *failures]
    out.append("")

    if results.memory or results.memory_errors:
        out += [
            "### Memory",
            "",
            (
                "| server | peak RSS after 1 KiB | after 100 MiB | growth | RSS idle "
                f"| with {IDLE_CONNECTIONS:,} idle connections | per idle connection |"
            ),
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for name in names:
            m = results.memory.get(name, {})
            if not m and name not in results.memory_errors:
                continue

            def show(key: str, form: str, m: dict[str, float] = m) -> str:
                return form.format(m[key]) if key in m else "–"

            cells = [
                show("rss_1k", "{:.1f} MiB"),
                show("rss_100m", "{:.1f} MiB"),
                show("growth", "{:+.1f} MiB"),
                show("rss_idle_before", "{:.1f} MiB"),
                show("rss_idle_held", "{:.1f} MiB"),
                show("kib_per_idle", "{:.1f} KiB"),
            ]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        out.append("")
        if results.memory_errors:
            out += ["Errors:", ""]
            out += [f"* {name}: {first_line(e)}" for name, e in results.memory_errors.items()]
            out.append("")
    out += goals(results, workloads)
    return "\n".join(out)


def goals(results: Results, workloads: list[Workload]) -> list[str]:
    """The performance goals, as ratios from this run."""

    def rate(key: str, name: str) -> float | None:
        samples = results.samples.get(key, {}).get(name)
        return median(samples, "rate") if samples else None

    lines: list[str] = []
    keys = [w.key for w in workloads]
    for key, target in (("k100", 3.0), ("conn", 3.0), ("pin", 3.0), ("mib", 10.0)):
        ours, base = rate(key, OURS), rate(key, BASELINE)
        if key in keys and ours and base:
            met = "met" if ours / base >= target else "not met"
            lines.append(
                f"* {key}: asyncio / aiosmtpd = {ours / base:.2f} (goal ≥ {target:g}: {met})"
            )
    for key in ("conn", "k100", "pipe", "lmtp", "tls", "pin"):
        ours, node = rate(key, OURS), rate(key, NODE)
        if key in keys and ours and node:
            met = "met" if ours >= node else "not met"
            lines.append(
                f"* {key}: asyncio / Node smtp-server = {ours / node:.2f} (goal ≥ 1: {met})"
            )
    memory = results.memory.get(OURS)
    if memory:
        met = "met" if memory["growth"] < 10 else "not met"
        lines.append(
            f"* 1 KiB → 100 MiB peak RSS growth: {memory['growth']:.1f} MiB (goal < 10: {met})"
        )
        met = "met" if memory["kib_per_idle"] < 50 else "not met"
        lines.append(f"* per idle connection: {memory['kib_per_idle']:.1f} KiB (goal < 50: {met})")
    for other in (
        "smtpproto blocking",
        "smtpproto trio",
        "smtpproto anyio",
        "smtpproto anyio+trio",
    ):
        slowdowns = []
        for key in keys:
            ours, theirs = rate(key, OURS), rate(key, other)
            if ours and theirs:
                slowdowns.append((ours / theirs, key))
        if slowdowns:
            worst, key = max(slowdowns)
            met = "met" if worst <= 2 else "not met"
            lines.append(
                f"* {other}: at worst {worst:.2f}× slower than asyncio, on {key} (goal ≤ 2: {met})"
            )
    return ["### Goals, from this run", "", *lines, ""] if lines else []


# -- main -----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one round instead of five")
    parser.add_argument("--rounds", type=int, help=f"rounds per workload (default {ROUNDS})")
    parser.add_argument("--servers", help="comma-separated server names or kinds (see --list)")
    parser.add_argument("--workloads", help="comma-separated workload keys (see --list)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the messages per round")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory goals")
    parser.add_argument("--only-memory", action="store_true", help="only the memory goals")
    parser.add_argument("--json", type=Path, help="write every sample to this file")
    parser.add_argument("--profile", type=Path, help="py-spy each Python server into this folder")
    parser.add_argument("--list", action="store_true", help="list servers and workloads, then exit")
    return parser.parse_args(argv)


def select_servers(spec: str | None) -> list[Server]:
    chosen = SERVERS
    if spec:
        wanted = [part.strip() for part in spec.split(",")]
        chosen = [
            s
            for s in SERVERS
            if s.name in wanted
            or (s.kind in wanted and not s.uvloop and not s.anyio_trio)
            or (s.uvloop and f"{s.kind}+uvloop" in wanted)
            or (s.anyio_trio and "anyio+trio" in wanted)
        ]
    return chosen


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        for server in SERVERS:
            kind = (
                server.kind + ("+uvloop" if server.uvloop else "") + ("+trio" * server.anyio_trio)
            )
            print(f"server   {kind:16s} {server.name:28s} {available(server) or 'available'}")
        for w in WORKLOADS:
            print(f"workload {w.key:16s} {w.title}")
        return 0
    rounds = 1 if args.quick else (args.rounds or ROUNDS)
    servers = []
    for server in select_servers(args.servers):
        why = available(server)
        if why:
            print(f"skipping {server.name}: {why}", file=sys.stderr)
        else:
            servers.append(server)
    workloads = WORKLOADS
    if args.workloads:
        keys = [key.strip() for key in args.workloads.split(",")]
        workloads = [w for w in WORKLOADS if w.key in keys]
    if args.only_memory:
        workloads = []
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    raise_nofile()

    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="e2e-") as folder:
        tls = self_signed(folder)
        for workload in workloads:
            if workload.starttls and tls is None:
                print(f"skipping {workload.key}: no openssl for a certificate", file=sys.stderr)
                continue
            if workload.pinned and shutil.which("taskset") is None:
                print(f"skipping {workload.key}: no taskset (util-linux)", file=sys.stderr)
                continue
            messages = max(1, math.ceil(workload.messages * args.scale))
            for round_no in range(1, rounds + 1):
                for server in servers:
                    if not supports(server, workload):
                        continue
                    profile = None
                    if args.profile:
                        slug = server.name.replace(" ", "-").replace("+", "-")
                        profile = args.profile / f"{slug}-{workload.key}-r{round_no}.txt"
                    try:
                        sample = measure(server, workload, messages, tls, profile)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        results.errors.setdefault(workload.key, {})[server.name] = str(exc)
                        print(f"[{workload.key} r{round_no}] {server.name}: {exc}", file=sys.stderr)
                        continue
                    if profile is not None:
                        results.profiles[str(profile)] = summarize_profile(profile)
                    results.samples.setdefault(workload.key, {}).setdefault(server.name, [])
                    results.samples[workload.key][server.name].append(sample)
                    print(
                        f"[{workload.key} r{round_no} {time.monotonic() - started:5.0f}s] "
                        f"{server.name:26s} {fmt(sample.rate):>8s} {workload.unit:6s} "
                        f"cpu {sample.cpu:5.2f} s  rss {sample.rss:6.1f} MiB  ({sample.tool})",
                        file=sys.stderr,
                    )
        if not args.no_memory:
            for server in servers:
                memory: dict[str, float] = {}
                tests = [big_message] + [idle_connections] * server.idle
                for test in tests:
                    try:
                        memory |= test(server)
                    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                        results.memory_errors[server.name] = str(exc)
                        print(f"[memory] {server.name}: {exc}", file=sys.stderr)
                results.memory[server.name] = memory
                print(
                    f"[memory {time.monotonic() - started:5.0f}s] {server.name:26s} "
                    + "  ".join(f"{k} {v:.1f}" for k, v in memory.items()),
                    file=sys.stderr,
                )

    print(
        f"## e2e — {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, {time.monotonic() - started:.0f} s\n"
    )
    print(render(results, servers, workloads, rounds))
    for summary in results.profiles.values():
        print(summary, end="\n\n")
    if args.json:
        data = {
            "samples": {
                key: {name: [asdict(s) for s in row] for name, row in by_server.items()}
                for key, by_server in results.samples.items()
            },
            "errors": results.errors,
            "memory": results.memory,
            "memory_errors": results.memory_errors,
        }
        args.json.write_text(json.dumps(data, indent=1))
    return 1 if results.errors or results.memory_errors else 0


if __name__ == "__main__":
    sys.exit(main())
