"""``keymon demo``: keymon against local simulated exchanges, with keys in telling states.

The demo starts the bundled simulators on 127.0.0.1 (one server per exchange), registers keys
in states an operator should recognise (healthy, withdrawals on, no IP restriction with a
deadline close, deleted at the exchange, futures on, an IP outside the trusted list, ...),
writes a configuration that reads their secrets from files, and runs the daemon against it,
printing where to look. With ``--once`` it audits the keys once, exactly as ``keymon check``
would, and exits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from keymon.simulator import DEMO_VENUES, SIMULATORS
from keymon.simulator.demo_keys import DemoKey

if TYPE_CHECKING:
    from keymon.app import App


def demo_keys(now: float) -> list[DemoKey]:
    """The demo's keys, each in a state an operator should recognise: every simulator's own
    (its module's ``DEMO``), in the order of :data:`~keymon.simulator.SIMULATORS`."""
    return [key for venue in DEMO_VENUES.values() for key in venue.keys(now)]


def build_simulators(keys: list[DemoKey]) -> dict[str, Any]:
    """One simulator per exchange of ``keys``, holding every key that still exists there."""
    simulators: dict[str, Any] = {}
    for key in keys:
        simulator = simulators.setdefault(key.exchange, SIMULATORS[key.exchange]())
        if not key.deleted:
            DEMO_VENUES[key.exchange].register(simulator, key)
    return simulators


def write_config(
    directory: Path, base_urls: dict[str, str], keys: list[DemoKey], **extra: Any
) -> Path:
    """A configuration for the demo keys; secrets live in files, as in production."""
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    entries = []
    for key in keys:
        venue = DEMO_VENUES[key.exchange]
        secret = venue.secret_of(key)
        api_key = venue.key_of(key)
        entry: dict[str, Any] = {
            "name": key.name,
            "client": key.client,
            "exchange": key.exchange,
            "api_key": {"file": str(_secret_file(secrets, key.name, "key", api_key))},
            "api_secret": {"file": str(_secret_file(secrets, key.name, "secret", secret))},
        }
        for name in venue.extra:  # "passphrase", "memo": secrets, in files
            path = _secret_file(secrets, key.name, name, getattr(key, name))
            entry[name] = {"file": str(path)}
        entry.update(venue.fields)
        entries.append(entry)
    config: dict[str, Any] = {
        "data_dir": str(directory / "data"),
        "log": {"format": "console", "level": "info"},
        "exchanges": {name: {"base_url": url} for name, url in base_urls.items()},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": entries,
        **extra,
    }
    path = directory / "keymon.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _secret_file(directory: Path, name: str, kind: str, value: str) -> Path:
    path = directory / f"{name}.{kind}"
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


#: Where the demo serves /metrics unless told otherwise (keymon's own port, on loopback).
DEMO_LISTEN = "127.0.0.1:9877"


def port_in_use(listen: str) -> bool:
    """Whether binding ``listen`` would fail now, probed as the daemon binds (SO_REUSEADDR)."""
    from keymon.healthcheck import split_listen

    parts = split_listen(listen)
    if parts is None or parts[1] == 0:
        return False
    host, port = parts
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def choose_listen(listen: str | None) -> str | None:
    """The address the demo serves on, or None (and a message) if it cannot.

    Left to its default, a taken :data:`DEMO_LISTEN` (another demo, a local ``keymon run``)
    falls back to a free port, said on stderr: the URLs printed once the daemon runs name it.
    An address the user asked for is used as given, or refused when taken.
    """
    if listen is not None:
        if port_in_use(listen):
            print(
                f"keymon demo: cannot listen on {listen}: the address is in use (another keymon "
                "demo or keymon run?); pass another --listen, or leave --listen out to have a "
                "free port picked",
                file=sys.stderr,
            )
            return None
        return listen
    if not port_in_use(DEMO_LISTEN):
        return DEMO_LISTEN
    host = DEMO_LISTEN.rsplit(":", 1)[0]
    print(
        f"keymon demo: {DEMO_LISTEN} is in use (another keymon demo or keymon run?); serving "
        "on a free port instead: the URLs below name it",
        file=sys.stderr,
        flush=True,
    )
    return f"{host}:0"


def run_demo(*, fmt: str = "table", once: bool = False, listen: str | None = None) -> int:
    """Serve the simulator and run keymon against it (see the module docstring).

    ``listen`` None means :data:`DEMO_LISTEN`, or a free port when that one is taken.
    """
    from keymon.cli import EXIT_RUNTIME, check, load_or_report, serve

    if not once:
        chosen = choose_listen(listen)
        if chosen is None:
            return EXIT_RUNTIME
        listen = chosen
    keys = demo_keys(time.time())
    simulators = build_simulators(keys)
    with tempfile.TemporaryDirectory(prefix="keymon-demo-") as tmp, contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(sim.serve_in_thread()) for name, sim in simulators.items()
        }
        if once:
            config = write_config(Path(tmp), urls, keys)
            _describe(urls, keys)
            check(config, fmt=fmt)
            return 0
        assert listen is not None  # chosen above
        config = write_config(
            Path(tmp), urls, keys, listen=listen, audit={"interval": "15s", "jitter": "2s"}
        )
        loaded = load_or_report(config, out=sys.stderr)
        if loaded is None:  # pragma: no cover - the demo writes a valid file
            return 2

        def started(app: App) -> None:
            _describe(urls, keys)
            base = f"http://{listen.rsplit(':', 1)[0]}:{app.port}"
            print(
                f"""keymon is auditing every 15 s. Look at:
  {base}/metrics        Prometheus metrics (try: curl -s {base}/metrics | grep finding)
  {base}/readyz         ready once every key was audited
  {_keymon_command()} check --config {config}
                        the same findings as a table (exit status 2: critical)
Change a key at the exchange and watch the metrics follow, e.g.:
  curl -X PATCH {urls[keys[0].exchange]}/_simulator/keys/{keys[0].api_key} \\
       -d '{{"enableWithdrawals": true}}'
Ctrl-C stops the demo.""",
                flush=True,
            )

        return serve(loaded, on_started=started)


def _keymon_command() -> str:
    """How to call keymon from another shell: the venv's script if it is not on PATH."""
    script = Path(sys.executable).parent / "keymon"
    if script.exists() and shutil.which("keymon") != str(script):
        return (
            os.path.relpath(script) if not os.path.relpath(script).startswith("..") else str(script)
        )
    return "keymon"


def _describe(urls: dict[str, str], keys: list[DemoKey]) -> None:
    names = ", ".join(f"{name} at {url}" for name, url in urls.items())
    print(f"keymon demo: simulated {names}", file=sys.stderr)
    for key in keys:
        print(f"  {key.name:<18} {key.exchange:<8} {key.story}", file=sys.stderr)
    print(file=sys.stderr, flush=True)
