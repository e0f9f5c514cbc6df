"""Shared plumbing of the benchmarks: measured child processes, the simulator, generated keys.

Everything the benchmarks start is a separate process, so that its CPU time and memory are its
own: :func:`run_measured` runs a command to completion and reads its resource usage with
``wait4(2)`` (user + system CPU seconds and ``ru_maxrss``, the child's peak resident set), and
:class:`Process` does the same for a long-running child (the daemon) that is stopped with
SIGTERM. :class:`Simulator` runs ``python -m keymon.simulator binance`` on 127.0.0.1 with a
keys file; :func:`make_keyset` writes that file, a keymon configuration for the same keys and
the environment the configuration reads its secrets from.

Every wait is bounded: a child that does not finish in time is killed, and each child is also
asked by the kernel to die (``PR_SET_PDEATHSIG``) should the benchmark itself be killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
#: The HMAC secret every generated key shares (the simulator verifies it per request).
SHARED_SECRET = "KeymonBenchSecret0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJK"
SECRET_ENV = "KMB_SECRET"
#: One environment variable per key holds its API key (no literal-secret warnings).
KEY_ENV_PREFIX = "KMB_K"
#: Simulated network latency of every exchange answer, in seconds.
LATENCY = 0.02


class BenchError(RuntimeError):
    """A benchmark step could not run (a process failed to start, an answer was wrong)."""


# ----------------------------------------------------------------------------- processes


try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # not glibc Linux: children then outlive a killed benchmark
    _LIBC = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: SIGTERM it if the benchmark process dies."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: ours, minus keymon overrides, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYMON_", KEY_ENV_PREFIX))}
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(extra or {})
    return env


@dataclass(frozen=True, slots=True)
class Usage:
    """What one child process cost: wall time, CPU time and peak RSS."""

    wall_s: float
    user_s: float
    sys_s: float
    maxrss_kb: int
    returncode: int

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s

    @property
    def maxrss_mb(self) -> float:
        return self.maxrss_kb / 1024


class Process:
    """A child process whose resource usage is collected with ``wait4`` when it ends."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        stdout: IO[bytes] | int | None = subprocess.DEVNULL,
        stderr: IO[bytes] | int | None = subprocess.DEVNULL,
    ) -> None:
        self.argv = list(argv)
        self.started = time.perf_counter()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=REPO,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            preexec_fn=_die_with_parent,
        )
        self.pid = self.popen.pid
        self._usage: Usage | None = None
        self._waiter = threading.Thread(target=self._wait, name=f"wait4-{self.pid}", daemon=True)
        self._waiter.start()

    def _wait(self) -> None:
        _, status, ru = os.wait4(self.pid, 0)
        ended = time.perf_counter()
        code = os.waitstatus_to_exitcode(status)
        self.popen.returncode = code  # Popen must not wait for a child we reaped
        self._usage = Usage(
            wall_s=ended - self.started,
            user_s=ru.ru_utime,
            sys_s=ru.ru_stime,
            maxrss_kb=ru.ru_maxrss,
            returncode=code,
        )

    @property
    def running(self) -> bool:
        return self._waiter.is_alive()

    def wait(self, timeout: float) -> Usage:
        """Wait for the exit (killing the child after ``timeout`` seconds); its usage."""
        self._waiter.join(timeout)
        if self._waiter.is_alive():
            self.kill()
            raise BenchError(f"{' '.join(self.argv[:4])}... did not finish in {timeout:.0f} s")
        assert self._usage is not None
        return self._usage

    def stop(self, timeout: float = 15.0) -> Usage:
        """SIGTERM, then wait; SIGKILL if it does not stop in time."""
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._waiter.join(5)

    def cpu_seconds_now(self) -> float:
        """User + system CPU time so far, from ``/proc/PID/stat`` (clock-tick resolution)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
        return ticks / os.sysconf("SC_CLK_TCK")

    def vm_hwm_kb(self) -> int:
        """Peak resident set so far (``VmHWM``), in KiB."""
        return self._status_kb("VmHWM:")

    def vm_rss_kb(self) -> int:
        """Resident set now (``VmRSS``), in KiB."""
        return self._status_kb("VmRSS:")

    def _status_kb(self, field_name: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field_name):
                return int(line.split()[1])
        return 0


def run_measured(
    argv: Sequence[str], *, env: Mapping[str, str], stdout_path: Path, timeout: float
) -> Usage:
    """Run a command to completion; stdout to ``stdout_path``, stderr to ``*.stderr``."""
    err_path = stdout_path.with_suffix(stdout_path.suffix + ".stderr")
    with stdout_path.open("wb") as out, err_path.open("wb") as err:
        proc = Process(argv, env=env, stdout=out, stderr=err)
        try:
            return proc.wait(timeout)
        finally:
            proc.kill()


# ----------------------------------------------------------------------------- HTTP


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Fetched:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # request sent to last body byte received, client side


def http_get(
    port: int, path: str, *, headers: Mapping[str, str] | None = None, timeout: float = 30.0
) -> Fetched:
    """One GET on a fresh connection to 127.0.0.1, timed from connect to the last byte."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read()
        seconds = time.perf_counter() - started
        return Fetched(
            response.status, {k.lower(): v for k, v in response.getheaders()}, body, seconds
        )
    finally:
        conn.close()


def wait_http_ok(port: int, path: str, *, deadline: float, proc: Process | None = None) -> None:
    """Poll ``path`` until it answers 200 (bounded by ``deadline``, a perf_counter time)."""
    while time.perf_counter() < deadline:
        if proc is not None and not proc.running:
            raise BenchError(f"process {proc.argv[:4]} exited before {path} answered")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, path, timeout=2).status == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"127.0.0.1:{port}{path} did not answer 200 in time")


# ----------------------------------------------------------------------------- keys


@dataclass(frozen=True, slots=True)
class KeySet:
    """Generated keys: the simulator's keys file, keymon's environment, the reference's list."""

    count: int
    api_keys: list[str]
    sim_keys_file: Path
    reference_keys_file: Path
    env: dict[str, str] = field(repr=False)


def api_key_for(index: int) -> str:
    """A 64-character alphanumeric API key, like Binance's, distinct per index."""
    return hashlib.sha256(f"keymon-bench-key-{index}".encode()).hexdigest()


def make_keyset(count: int, directory: Path) -> KeySet:
    """Write the simulator's keys file and the reference's key list for ``count`` keys.

    All keys share one HMAC secret (cheap to generate and to load); each has its own API key.
    Flow-style YAML keeps the simulator's start-up parse short even at 10,000 keys.
    """
    directory.mkdir(parents=True, exist_ok=True)
    api_keys = [api_key_for(i) for i in range(count)]
    sim_file = directory / f"sim-keys-{count}.yaml"
    sim_file.write_text(
        "".join(f'- {{api_key: {k}, hmac_secret: "{SHARED_SECRET}"}}\n' for k in api_keys)
    )
    ref_file = directory / f"reference-keys-{count}.json"
    ref_file.write_text(json.dumps({"secret": SHARED_SECRET, "api_keys": api_keys}))
    env = {f"{KEY_ENV_PREFIX}{i:05d}": k for i, k in enumerate(api_keys)}
    env[SECRET_ENV] = SHARED_SECRET
    return KeySet(count, api_keys, sim_file, ref_file, env)


def write_config(
    path: Path,
    keyset: KeySet,
    *,
    base_url: str,
    max_weight_per_minute: int,
    listen_port: int = 0,
    interval: str = "5m",
    jitter: str | None = None,
    log_level: str = "info",
    trading_status: bool | None = None,
) -> Path:
    """A keymon configuration for the key set; secrets come from the environment.

    ``trading_status``: ``exchanges.binance.trading_status`` when given (else the default)."""
    data_dir = path.parent / f"{path.stem}-data"
    lines = [
        f'listen: "{HOST}:{listen_port}"',
        f"data_dir: {data_dir}",
        f"log: {{format: json, level: {log_level}}}",
        f"audit: {{interval: {interval}, timeout: 10s"
        + (f", jitter: {jitter}}}" if jitter else "}"),
        "exchanges:",
        "  binance:",
        f"    base_url: {base_url}",
        f"    max_weight_per_minute: {max_weight_per_minute}",
        *([] if trading_status is None else [f"    trading_status: {str(trading_status).lower()}"]),
        "trusted_ips: [127.0.0.1/32]",
        "keys:",
    ]
    lines += [
        f"  - {{name: bench-{i:05d}, client: c{i % 100:02d}, exchange: binance, "
        f"api_key: {{env: {KEY_ENV_PREFIX}{i:05d}}}, api_secret: {{env: {SECRET_ENV}}}}}"
        for i in range(keyset.count)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- simulator


class Simulator:
    """``python -m keymon.simulator EXCHANGE`` in its own process, on a free 127.0.0.1 port.

    Use it as a context manager, or :meth:`start` several (so that they load in parallel),
    then :meth:`ready` each, and :meth:`close` each at the end."""

    def __init__(
        self,
        keys_file: Path,
        *,
        exchange: str = "binance",
        latency: float = LATENCY,
        start_timeout: float = 60,
    ):
        self.exchange = exchange
        self._keys_file = keys_file
        self._latency = latency
        self._start_timeout = start_timeout
        self.proc: Process | None = None
        self.url = ""
        self.port = 0

    def start(self) -> Simulator:
        """Start the process (without waiting for it to listen)."""
        argv = [PYTHON, "-m", "keymon.simulator", self.exchange, "--host", HOST, "--port", "0"]
        argv += ["--keys", str(self._keys_file), "--latency", str(self._latency)]
        self.proc = Process(argv, env=child_env(), stdout=subprocess.PIPE)
        return self

    def ready(self) -> Simulator:
        """Wait (bounded) for the line with the URL it listens on; kill it if none comes."""
        assert self.proc is not None
        assert self.proc.popen.stdout is not None
        line = _read_line(self.proc.popen.stdout, self._start_timeout)
        if "listening on " not in line:
            self.proc.kill()
            raise BenchError(f"{self.exchange} simulator did not start: {line!r}")
        self.url = line.rsplit("listening on ", 1)[1].strip()
        self.port = int(self.url.rsplit(":", 1)[1])
        return self

    def close(self) -> None:
        """SIGTERM, bounded; SIGKILL if it does not stop."""
        if self.proc is not None:
            try:
                self.proc.stop(10)
            except BenchError:
                self.proc.kill()

    def __enter__(self) -> Simulator:
        self.start()
        return self.ready()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """``GET /_simulator/stats``: 429/418 counts and every exchange request so far."""
        fetched = http_get(self.port, "/_simulator/stats", timeout=30)
        if fetched.status != 200:
            raise BenchError(f"simulator stats answered HTTP {fetched.status}")
        data: dict[str, Any] = json.loads(fetched.body)
        return data


def _read_line(stream: IO[bytes], timeout: float) -> str:
    """The first line of a child's stdout, or '' if none arrives in time."""
    box: list[bytes] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return box[0].decode(errors="replace") if box else ""
