"""``keymon healthcheck`` (and its light form ``python -m keymon.healthcheck``, the image's
HEALTHCHECK) against a real ``keymon run``: it follows the configured listen, the
``KEYMON_LISTEN`` override and ``$KEYMON_CONFIG``, and reads no secret."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from keymon.healthcheck import listen_of, probe_url
from tests.conftest import DOC_API_KEY, DOC_SECRET, wait_until
from tests.test_app import write_config

KEYMON = [sys.executable, "-m", "keymon"]
LIGHT = [sys.executable, "-m", "keymon.healthcheck"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("KEYMON_")}
    return {**env, **extra}


def _probe(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=30, check=False, env=_env(**env)
    )


@pytest.fixture
def daemon(tmp_path: Path, served: str) -> Iterator[tuple[Path, int]]:
    """A real ``keymon run`` on 127.0.0.1:<port>; yields its configuration and port."""
    port = _free_port()
    config = write_config(
        tmp_path,
        [("doc-key", DOC_API_KEY, DOC_SECRET)],
        listen=f"127.0.0.1:{port}",
        exchanges={"binance": {"base_url": served}},
    )
    log = (tmp_path / "keymon.log").open("wb")
    proc = subprocess.Popen(
        [*KEYMON, "run", "--config", str(config)], stdout=log, stderr=subprocess.STDOUT, env=_env()
    )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError((tmp_path / "keymon.log").read_text())
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(healthy, timeout=30)
        yield config, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def test_healthcheck_is_healthy_for_a_running_daemon_and_not_once_it_stops(
    daemon: tuple[Path, int], tmp_path: Path
) -> None:
    """Both forms exit 0 against the daemon of the configuration, by --config or KEYMON_CONFIG."""
    config, port = daemon
    result = _probe([*KEYMON, "healthcheck", "--config", str(config)])
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"keymon healthcheck: http://127.0.0.1:{port}/healthz: healthy\n"
    light = _probe(LIGHT, KEYMON_CONFIG=str(config))
    assert light.returncode == 0, light.stderr
    # The same configuration with its secrets unreadable: the health check never looks at them.
    raw = yaml.safe_load(config.read_text())
    raw["keys"][0]["api_secret"] = {"env": "KMTEST_NOT_SET_ANYWHERE"}
    raw["keys"][0]["api_key"] = {"file": str(tmp_path / "missing")}
    blind = tmp_path / "no-secrets.yaml"
    blind.write_text(yaml.safe_dump(raw))
    assert _probe(LIGHT, KEYMON_CONFIG=str(blind)).returncode == 0


def test_keymon_listen_overrides_the_file_as_it_does_for_the_daemon(
    daemon: tuple[Path, int],
) -> None:
    """KEYMON_LISTEN wins over the file's listen: pointing it elsewhere is unhealthy, said so."""
    config, port = daemon
    elsewhere = _free_port()
    result = _probe(LIGHT, KEYMON_CONFIG=str(config), KEYMON_LISTEN=f"127.0.0.1:{elsewhere}")
    assert result.returncode == 1
    assert f"http://127.0.0.1:{elsewhere}/healthz" in result.stderr
    assert "environment variable KEYMON_LISTEN" in result.stderr
    assert "refused" in result.stderr.lower()
    same = _probe(LIGHT, KEYMON_CONFIG=str(config), KEYMON_LISTEN=f":{port}")
    assert same.returncode == 0, same.stderr  # an empty host is every address: loopback


def test_healthcheck_is_unhealthy_when_nothing_listens(tmp_path: Path) -> None:
    """No daemon on the configured port: exit 1 (never 2, Docker's reserved status)."""
    config = tmp_path / "keymon.yaml"
    config.write_text(f'listen: "127.0.0.1:{_free_port()}"\nkeys: []\n')
    for args in (
        [*KEYMON, "healthcheck", "--config", str(config)],
        [*LIGHT, "--config", str(config)],
    ):
        result = _probe(args)
        assert result.returncode == 1, result
        assert "Traceback" not in result.stderr
    assert _probe([*LIGHT, "--bogus"]).returncode == 1
    assert _probe([*KEYMON, "healthcheck", "--bogus"]).returncode == 1


class _Status503(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(503)
        self.end_headers()
        self.wfile.write(b'{"status": "notifier"}')

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_healthcheck_is_unhealthy_on_a_503(tmp_path: Path) -> None:
    """/healthz answering 503 (a stopping daemon, a failing notifier) is unhealthy."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Status503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = tmp_path / "keymon.yaml"
        config.write_text(f'listen: "127.0.0.1:{server.server_address[1]}"\n')
        result = _probe(LIGHT, KEYMON_CONFIG=str(config))
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert result.returncode == 1
    assert "HTTP 503" in result.stderr


@pytest.mark.parametrize(
    ("listen", "url"),
    [
        ("0.0.0.0:9877", "http://127.0.0.1:9877/healthz"),
        (":9877", "http://127.0.0.1:9877/healthz"),
        ("[::]:9000", "http://[::1]:9000/healthz"),
        ("[::1]:9000", "http://[::1]:9000/healthz"),
        ("10.1.2.3:9877", "http://10.1.2.3:9877/healthz"),
        ("keymon.internal:80", "http://keymon.internal:80/healthz"),
        ("127.0.0.1:0", None),
        ("9877", None),
    ],
    ids=["wildcard", "empty-host", "ipv6-wildcard", "ipv6", "address", "name", "port-0", "bad"],
)
def test_probe_url_reaches_a_wildcard_listen_on_loopback(listen: str, url: str | None) -> None:
    """A wildcard host is probed on loopback, a specific one as it is; port 0 cannot be probed."""
    assert probe_url(listen) == url


def test_listen_comes_from_env_then_file_then_default(tmp_path: Path) -> None:
    """KEYMON_LISTEN (any case), else the file's listen, else keymon's default."""
    config = tmp_path / "keymon.yaml"
    config.write_text('listen: "127.0.0.1:9100"\nkeys: [{api_key: {env: UNSET}}]\n')
    assert listen_of(config, {}) == ("127.0.0.1:9100", str(config))
    assert listen_of(config, {"keymon_listen": ":9200"})[0] == ":9200"
    assert listen_of(tmp_path / "missing.yaml", {})[0] == "0.0.0.0:9877"
    config.write_text("listen: [not, a, string\n")
    assert listen_of(config, {})[0] == "0.0.0.0:9877"
