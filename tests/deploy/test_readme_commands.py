"""Every command of deploy/README.md works as written, and a test runs each one.

The commands are read from the README's ``sh`` blocks, so a command added there without a test
fails :func:`test_every_readme_command_is_run_or_accounted_for`. Each is one of:

* a command run inside the container (``docker exec keymon keymon ...``, ``kubectl ... exec
  ... -- keymon ...``, ``docker run --rm ... keymon:<tag> <sub-command>``): run here with that
  prefix removed, in a directory laid out as the image is (``etc/keymon/keymon.yaml``,
  ``run/secrets/keymon/``, ``var/lib/keymon``; ``KEYMON_CONFIG``, ``KEYMON_DATA_DIR``,
  ``TMPDIR`` set and the data directory as the working directory, as the Dockerfile sets
  them) beside a running ``keymon run`` and a simulated exchange;
* a command run here as it is written (``scripts/build-image`` with ``DOCKER=echo``, the
  compose demo's ``curl`` against the demo's simulator on a free port, ``docker kill --signal
  HUP`` as the signal it sends);
* or one of :data:`NEEDS_ENGINE_OR_CLUSTER`, each with the test that covers it, or the reason
  it cannot run here. With a Docker engine, :func:`test_readme_commands_against_the_image`
  builds the image and runs the Docker commands against it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from keymon.simulator.__main__ import build_binance
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET, wait_until
from tests.deploy import DEPLOY, ROOT, project_url, require_tool

README = DEPLOY / "README.md"
KEYMON = [sys.executable, "-m", "keymon"]
SECOND_KEY, SECOND_SECRET = "bravoKey0123456789abcdef", "bravoSecret0123456789"
#: The keys the README's commands name (and the kubectl Secret's files), in the layout.
LAYOUT_KEYS = {
    "acme-binance-main": (DOC_API_KEY, DOC_SECRET),
    "bravo-binance-main": (SECOND_KEY, SECOND_SECRET),
}

#: Commands that need a Docker engine, a registry or a cluster, with what covers them instead.
NEEDS_ENGINE_OR_CLUSTER: dict[str, str] = {
    "docker build -t keymon:0.1.0 --build-arg VERSION=0.1.0 "
    '--build-arg REVISION="$(git rev-parse HEAD)" '
    '--build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" '
    f"--build-arg PROJECT_URL={project_url()} .": (
        "what scripts/build-image runs: test_build_image_passes_the_declared_url_and_the_"
        "callers_arguments (tests/deploy/test_project_url.py) checks the arguments; built by "
        "test_readme_commands_against_the_image with an engine"
    ),
    "docker pull python:3.11-slim-bookworm": "needs a registry",
    "digest=$(docker inspect --format '{{index .RepoDigests 0}}' python:3.11-slim-bookworm)": (
        "needs a registry and an engine"
    ),
    "docker volume create keymon-data": "needs an engine: test_readme_commands_against_the_image",
    "docker inspect --format '{{.State.Health.Status}}' keymon": (
        "needs an engine: test_readme_commands_against_the_image waits for 'healthy'; the "
        "command HEALTHCHECK runs is run here (keymon healthcheck)"
    ),
    "docker logs keymon": (
        "needs an engine; the JSON log lines are tests/test_log.py's, their secrets redacted"
    ),
    "docker compose -f deploy/compose/compose.yaml up --build": (
        "needs an engine; every piece of the stack is run without one by the test_compose_* "
        "tests of tests/deploy/test_artifacts.py"
    ),
    "kubectl create namespace keymon": "needs a cluster",
    "kubectl -n keymon create secret generic keymon-secrets-egress-a "
    "--from-file=acme-binance-main.api-key=./acme.key "
    "--from-file=acme-binance-main.api-secret=./acme.secret "
    "--from-file=bravo-binance-main.api-key=./bravo.key "
    "--from-file=bravo-binance-main.api-secret=./bravo.secret": (
        "needs a cluster; the file names are the ones the overlay's keymon.yaml reads: "
        "test_overlay_keymon_config_validates (tests/deploy/test_artifacts.py)"
    ),
    "kubectl apply -k deploy/kubernetes": (
        "needs a cluster; test_kustomize_builds_one_keymon_per_overlay_with_working_references "
        "builds it with kubectl kustomize"
    ),
    "kubectl -n keymon get pods -l app.kubernetes.io/name=keymon": "needs a cluster",
}

#: `docker run -d ...` starts the container: here, the layout's daemon does.
DOCKER_RUN_DAEMON = re.compile(r"docker run -d --name keymon .* keymon:\S+$")
IN_CONTAINER = (
    re.compile(r"docker exec keymon (keymon(?: .*)?)$"),
    re.compile(r"kubectl -n keymon exec deploy/\S+ -- (keymon(?: .*)?)$"),
    re.compile(r"docker run --rm (?:-v \S+ )+keymon:\S+ (.*)$"),
)


def readme_commands(text: str | None = None) -> list[str]:
    """Every command of the README's ``sh`` blocks: continuations joined, comments dropped."""
    text = README.read_text() if text is None else text
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", text, re.DOTALL | re.MULTILINE):
        pending = ""
        for line in block.splitlines():
            if not pending and line.lstrip().startswith("#"):
                continue
            pending += line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1].rstrip() + " "
                continue
            if shlex.split(pending, comments=True):
                commands.append(_uncommented(pending))  # as written, less a trailing comment
            pending = ""
    return commands


def _uncommented(line: str) -> str:
    """``line`` without a trailing ``# comment`` (a ``#`` inside quotes stays)."""
    for match in re.finditer(r"\s#", line):
        head = line[: match.start()]
        if head.count("'") % 2 == 0 and head.count('"') % 2 == 0:
            return head.rstrip()
    return line


def in_container(command: str) -> list[str] | None:
    """The keymon command line a container command runs, or None if it is not one."""
    for pattern in IN_CONTAINER:
        match = pattern.fullmatch(command)
        if match:
            words = shlex.split(match.group(1))
            return words if words[0] == "keymon" else ["keymon", *words]
    return None


def test_the_extraction_sees_the_commands_it_must_see() -> None:
    """The README's blocks yield the commands the issue names, comments and continuations
    handled (a broken extraction would make the other tests vacuous)."""
    commands = readme_commands()
    assert "docker exec keymon keymon check --key acme-binance-main" in commands
    assert "kubectl -n keymon exec deploy/keymon-egress-a -- keymon check" in commands
    assert "docker kill --signal HUP keymon" in commands
    assert any(DOCKER_RUN_DAEMON.fullmatch(c) for c in commands)
    assert len(commands) >= 20
    assert not any("#" in c and "{{" not in c for c in commands), commands
    sample = "```sh\n# note\nfoo a \\\n  b   # why\nbar 'x # y'\n```\n"
    assert readme_commands(sample) == ["foo a b", "bar 'x # y'"]


def test_every_readme_command_is_run_or_accounted_for() -> None:
    """Each command is run by a test below, or listed with what covers it; none is stale."""
    commands = readme_commands()
    unaccounted = [
        c
        for c in commands
        if c not in NEEDS_ENGINE_OR_CLUSTER
        and in_container(c) is None
        and not DOCKER_RUN_DAEMON.fullmatch(c)
        and not c.startswith(("scripts/build-image", "curl ", "docker kill --signal HUP keymon"))
    ]
    assert unaccounted == [], "commands in deploy/README.md no test runs"
    stale = sorted(set(NEEDS_ENGINE_OR_CLUSTER) - set(commands))
    assert stale == [], "listed but no longer in deploy/README.md"


# ----------------------------------------------------------------------------- the layout


@dataclass
class Layout:
    """The image's file system in a directory, and the daemon running in it."""

    root: Path
    config: Path
    data: Path
    port: int
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]

    def run(self, words: list[str]) -> subprocess.CompletedProcess[str]:
        """Run ``keymon ...`` as ``docker exec`` would: same environment and directory."""
        assert words[0] == "keymon"
        return subprocess.run(
            [*KEYMON, *words[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=self.env,
            cwd=self.data,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    """The image's layout under ``tmp_path``, its daemon running against a simulated Binance."""
    sim = BinanceSimulator()
    for api_key, secret in LAYOUT_KEYS.values():
        sim.add_key(api_key, hmac_secret=secret)
    etc, secrets, data = (
        tmp_path / "etc" / "keymon",
        tmp_path / "run" / "secrets" / "keymon",
        tmp_path / "var" / "lib" / "keymon",
    )
    for directory in (etc, secrets, data):
        directory.mkdir(parents=True)
    port = _free_port()
    with sim.serve_in_thread() as url:
        keys = []
        for name, (api_key, secret) in LAYOUT_KEYS.items():
            (secrets / f"{name}.api-key").write_text(api_key + "\n")
            (secrets / f"{name}.api-secret").write_text(secret + "\n")
            keys.append(
                {
                    "name": name,
                    "client": name.split("-")[0],
                    "exchange": "binance",
                    "api_key": {"file": str(secrets / f"{name}.api-key")},
                    "api_secret": {"file": str(secrets / f"{name}.api-secret")},
                }
            )
        config = etc / "keymon.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "listen": f"127.0.0.1:{port}",
                    "data_dir": "/nonexistent/overridden-by-KEYMON_DATA_DIR",
                    "exchanges": {"binance": {"base_url": url}},
                    "trusted_ips": ["127.0.0.1/32"],
                    "keys": keys,
                }
            )
        )
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("KEYMON_")}
        env |= {"KEYMON_CONFIG": str(config), "KEYMON_DATA_DIR": str(data), "TMPDIR": str(data)}
        log = tmp_path / "keymon.log"
        with log.open("wb") as out:
            # The image's CMD: run --config /etc/keymon/keymon.yaml.
            proc = subprocess.Popen(
                [*KEYMON, "run", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=data,
            )
        layout = Layout(tmp_path, config, data, port, env, log, proc)

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log.read_text())
            try:
                return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(ready, timeout=30)
            yield layout
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


#: What each in-container command must do: (exit status, text its stdout holds).
EXPECTED = {
    "check": (0, "acme-binance-main"),
    "history": (0, "no changes recorded"),
    "healthcheck": (0, "healthy"),
    "validate-config": (0, "valid (2 key(s)"),
}


def test_in_container_commands_work_in_the_images_layout(layout: Layout) -> None:
    """`docker exec keymon keymon check --key ...`, its kubectl twin and the others find the
    configuration through KEYMON_CONFIG and work beside the running daemon."""
    ran = []
    for command in readme_commands():
        words = in_container(command)
        if words is None:
            continue
        result = layout.run(words)
        status, text = EXPECTED[words[1]]
        assert result.returncode == status, (command, result.stdout, result.stderr)
        assert text in result.stdout, (command, result.stdout)
        assert "Traceback" not in result.stderr
        ran.append(words[1])
    assert {"check", "history", "healthcheck", "validate-config"} <= set(ran)


def test_docker_kill_hup_reloads_the_daemon(layout: Layout) -> None:
    """`docker kill --signal HUP keymon` sends SIGHUP: the daemon reloads and stays healthy."""
    (command,) = [c for c in readme_commands() if c.startswith("docker kill")]
    assert shlex.split(command)[2:4] == ["--signal", "HUP"]
    layout.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "config_reloaded" in layout.log.read_text(), timeout=15)
    assert layout.run(["keymon", "healthcheck"]).returncode == 0


def test_build_image_commands_run_as_written() -> None:
    """Every `scripts/build-image ...` line runs (docker replaced by echo) and hands its
    arguments on after the labels' build arguments."""
    commands = [c for c in readme_commands() if c.startswith("scripts/build-image")]
    assert len(commands) >= 3
    for command in commands:
        script = f"cd {shlex.quote(str(ROOT))} && digest=python@sha256:{'0' * 64} && {command}"
        result = subprocess.run(
            ["bash", "-c", script],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={"PATH": os.environ["PATH"], "DOCKER": "echo", "PYTHON": sys.executable},
        )
        assert result.returncode == 0, (command, result.stderr)
        args = result.stdout.split()
        assert args[0] == "build"
        assert args[-1] == "."
        assert any(a.startswith("PROJECT_URL=") for a in args)
        if "BASE_IMAGE" in command:
            assert any(a.startswith("BASE_IMAGE=") for a in args)


def test_compose_demo_curl_changes_the_simulated_key() -> None:
    """The compose demo's curl, sent to the demo's simulator, switches withdrawals on."""
    curl = require_tool("curl")
    (command,) = [c for c in readme_commands() if c.startswith("curl ")]
    simulator = build_binance(DEPLOY / "compose" / "simulator" / "keys.yaml", 0.0)
    words = shlex.split(command)
    (at,) = [i for i, word in enumerate(words) if word.startswith("http://127.0.0.1:8900/")]
    api_key = words[at].rsplit("/", 1)[1]
    assert json.loads(words[-1]) == {"enableWithdrawals": True}
    with simulator.serve_in_thread() as url:
        before = httpx.get(f"{url}/_simulator/keys/{api_key}", timeout=5).json()
        assert before["restrictions"]["enableWithdrawals"] is False
        words[at] = words[at].replace("http://127.0.0.1:8900", url)
        words = [curl, "-s", "-f", *words[1:]]
        result = subprocess.run(words, capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 0, result.stderr
        state = httpx.get(f"{url}/_simulator/keys/{api_key}", timeout=5).json()
    assert state["restrictions"]["enableWithdrawals"] is True


# ----------------------------------------------------------------------------- with an engine


def _engine() -> str:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run(
        [docker, "info"], capture_output=True, text=True, timeout=30, check=False
    )
    if probe.returncode != 0:
        pytest.skip("no Docker engine reachable (docker info fails)")
    return docker


@pytest.mark.timeout(900)
def test_readme_commands_against_the_image(tmp_path: Path) -> None:
    """With a Docker engine: build the image with scripts/build-image, start it with the
    README's `docker run -d`, and run the README's Docker commands against it (container and
    volume named per test, /srv/keymon a temporary directory, the port published on a free one).

    Written without an engine at hand: unverified until a machine with one runs it.
    """
    docker = _engine()
    suffix = f"test-{os.getpid()}"
    srv = tmp_path / "srv" / "keymon"
    (srv / "secrets").mkdir(parents=True)
    keys = []
    for name, (api_key, secret) in LAYOUT_KEYS.items():
        for kind, value in (("api-key", api_key), ("api-secret", secret)):
            path = srv / "secrets" / f"{name}.{kind}"
            path.write_text(value + "\n")
            path.chmod(0o644)  # readable by the image's UID 10001
        keys.append(
            {
                "name": name,
                "client": name.split("-")[0],
                "exchange": "binance",
                "api_key": {"file": f"/run/secrets/keymon/{name}.api-key"},
                "api_secret": {"file": f"/run/secrets/keymon/{name}.api-secret"},
            }
        )
    # Never a real exchange: an https name that does not resolve (the audit is UNKNOWN).
    (srv / "keymon.yaml").write_text(
        yaml.safe_dump(
            {"exchanges": {"binance": {"base_url": "https://binance.test"}}, "keys": keys}
        )
    )
    (srv / "keymon.yaml").chmod(0o644)

    def adapt(command: str) -> str:
        command = command.replace("/srv/keymon", str(srv))
        command = command.replace("-p 127.0.0.1:9877:9877", "-p 127.0.0.1::9877")
        command = re.sub(r"\bkeymon-data\b", f"keymon-data-{suffix}", command)
        command = re.sub(r"--name keymon\b", f"--name keymon-{suffix}", command)
        return re.sub(
            r"(docker (?:exec|kill --signal HUP|inspect .*?|logs)) keymon\b",
            rf"\1 keymon-{suffix}",
            command,
        )

    def sh(command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd=ROOT,
            env={**os.environ, "DOCKER": docker},
        )

    build = sh("scripts/build-image", timeout=800)
    assert build.returncode == 0, build.stderr[-3000:]
    commands = readme_commands()
    try:
        for command in commands:
            if command.startswith("docker volume create") or DOCKER_RUN_DAEMON.fullmatch(command):
                result = sh(adapt(command))
                assert result.returncode == 0, (command, result.stderr)
        deadline = time.monotonic() + 120
        health = ""
        while time.monotonic() < deadline and health != "healthy":
            health = sh(adapt("docker inspect --format '{{.State.Health.Status}}' keymon")).stdout
            health = health.strip()
            time.sleep(2)
        assert health == "healthy"
        for command in commands:
            words = in_container(command)
            if words is None and not command.startswith(("docker kill", "docker logs")):
                continue
            result = sh(adapt(command))
            if words is not None and words[1] == "check":
                # The exchange is not reachable from here: the audit is UNKNOWN (3), but the
                # configuration was found through KEYMON_CONFIG and every key was tried.
                assert result.returncode in (0, 1, 2, 3), result.stderr
                assert "acme-binance-main" in result.stdout, result.stderr
            else:
                assert result.returncode == 0, (command, result.stdout, result.stderr)
    finally:
        sh(f"docker rm -f keymon-{suffix}")
        sh(f"docker volume rm keymon-data-{suffix}")
