"""``keymon demo``: keymon against a local simulated Binance, with keys in telling states.

The demo starts the bundled simulator on 127.0.0.1, registers five keys (a healthy one, one
with withdrawals on, one without an IP restriction whose trading authority expires in two
days, one deleted at the exchange, one with futures on), writes a configuration that reads
their secrets from files, and audits them exactly as ``keymon check`` would.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from keymon.simulator.binance import BinanceSimulator

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


def run_demo(*, fmt: str = "table") -> int:
    """Serve the simulator, audit the demo keys once, print the findings. Exit 0."""
    from keymon.cli import check

    keys = demo_keys(time.time())
    simulator = build_simulator(keys)
    with (
        tempfile.TemporaryDirectory(prefix="keymon-demo-") as tmp,
        simulator.serve_in_thread() as url,
    ):
        config = write_config(Path(tmp), url, keys)
        print(f"keymon demo: simulated Binance at {url}", file=sys.stderr)
        for key in keys:
            print(f"  {key.name:<20} {key.story}", file=sys.stderr)
        print(file=sys.stderr)
        check(config, fmt=fmt)
    return 0
