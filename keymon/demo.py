"""``keymon demo``: keymon against a local simulated Binance, with keys in telling states.

The demo starts the bundled simulator on 127.0.0.1, registers five keys (a healthy one, one
with withdrawals on, one without an IP restriction whose trading authority expires in two
days, one deleted at the exchange, one with futures on), writes a configuration that reads
their secrets from files, and runs the daemon against it, printing where to look. With
``--once`` it audits the keys once, exactly as ``keymon check`` would, and exits.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from keymon.simulator.binance import BinanceSimulator

if TYPE_CHECKING:
    from keymon.app import App

DAY = 86_400


@dataclass(frozen=True)
class DemoKey:
    """One demo key: its configured name, what the exchange holds, and what it shows."""

    name: str
    client: str
    story: str
    restrictions: dict[str, Any] = field(default_factory=dict)
    ip_whitelist: list[str] | None = None
    deleted: bool = False

    @property
    def api_key(self) -> str:
        return hashlib.sha256(f"demo-key-{self.name}".encode()).hexdigest()

    @property
    def secret(self) -> str:
        return hashlib.sha256(f"demo-secret-{self.name}".encode()).hexdigest()


def demo_keys(now: float) -> list[DemoKey]:
    """The demo's keys, each in a state an operator should recognise."""
    return [
        DemoKey("acme-binance-main", "acme", "healthy: read + spot trading, IP-restricted"),
        DemoKey("bravo-binance", "bravo", "withdrawals switched on", {"enableWithdrawals": True}),
        DemoKey(
            "charlie-binance",
            "charlie",
            "no IP restriction; trading authority expires in 2 days",
            {"ipRestrict": False, "tradingAuthorityExpirationTime": int((now + 2 * DAY) * 1000)},
            ip_whitelist=["0.0.0.0/0", "::/0"],
        ),
        DemoKey("delta-binance", "delta", "deleted at the exchange", deleted=True),
        DemoKey("echo-binance", "echo", "futures trading switched on", {"enableFutures": True}),
    ]


def build_simulator(keys: list[DemoKey]) -> BinanceSimulator:
    """A simulator holding every demo key that still exists at the exchange."""
    simulator = BinanceSimulator()
    for key in keys:
        if not key.deleted:
            simulator.add_key(
                key.api_key,
                hmac_secret=key.secret,
                restrictions=key.restrictions or None,
                ip_whitelist=key.ip_whitelist,
            )
    return simulator


def write_config(directory: Path, base_url: str, keys: list[DemoKey], **extra: Any) -> Path:
    """A configuration for the demo keys; secrets live in files, as in production."""
    secrets = directory / "secrets"
    secrets.mkdir(parents=True, exist_ok=True)
    entries = []
    for key in keys:
        (secrets / f"{key.name}.key").write_text(key.api_key + "\n")
        (secrets / f"{key.name}.secret").write_text(key.secret + "\n")
        (secrets / f"{key.name}.secret").chmod(0o600)
        entries.append(
            {
                "name": key.name,
                "client": key.client,
                "exchange": "binance",
                "api_key": {"file": str(secrets / f"{key.name}.key")},
                "api_secret": {"file": str(secrets / f"{key.name}.secret")},
            }
        )
    config: dict[str, Any] = {
        "data_dir": str(directory / "data"),
        "log": {"format": "console", "level": "info"},
        "exchanges": {"binance": {"base_url": base_url}},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": entries,
        **extra,
    }
    path = directory / "keymon.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_demo(*, fmt: str = "table", once: bool = False, listen: str = "127.0.0.1:9877") -> int:
    """Serve the simulator and run keymon against it (see the module docstring)."""
    from keymon.cli import check, load_or_report, serve

    keys = demo_keys(time.time())
    simulator = build_simulator(keys)
    with (
        tempfile.TemporaryDirectory(prefix="keymon-demo-") as tmp,
        simulator.serve_in_thread() as url,
    ):
        if once:
            config = write_config(Path(tmp), url, keys)
            _describe(url, keys)
            check(config, fmt=fmt)
            return 0
        config = write_config(
            Path(tmp), url, keys, listen=listen, audit={"interval": "15s", "jitter": "2s"}
        )
        loaded = load_or_report(config, out=sys.stderr)
        if loaded is None:  # pragma: no cover - the demo writes a valid file
            return 2

        def started(app: App) -> None:
            _describe(url, keys)
            base = f"http://{listen.rsplit(':', 1)[0]}:{app.port}"
            print(
                f"""keymon is auditing every 15 s. Look at:
  {base}/metrics        Prometheus metrics (try: curl -s {base}/metrics | grep finding)
  {base}/readyz         ready once every key was audited
  {_keymon_command()} check --config {config}
                        the same findings as a table (exit status 2: critical)
Change a key at the exchange and watch the metrics follow, e.g.:
  curl -X PATCH {url}/_simulator/keys/{keys[0].api_key} -d '{{"enableWithdrawals": true}}'
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


def _describe(url: str, keys: list[DemoKey]) -> None:
    print(f"keymon demo: simulated Binance at {url}", file=sys.stderr)
    for key in keys:
        print(f"  {key.name:<20} {key.story}", file=sys.stderr)
    print(file=sys.stderr, flush=True)
