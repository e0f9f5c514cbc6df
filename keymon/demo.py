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


def run_demo(*, fmt: str = "table", once: bool = False, listen: str = "127.0.0.1:9877") -> int:
    """Serve the simulator and run keymon against it (see the module docstring)."""
    from keymon.cli import check, load_or_report, serve

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
