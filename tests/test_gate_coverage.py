"""keymon_key_info{coverage} says what the exchange actually showed of a key.

A Gate key without account-read permission gets FORBIDDEN on ``account/detail``: the audit
reports liveness only, and the metric (like ``keymon check``) must say ``liveness``, not the
adapter's ``introspection``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from keymon.app import App
from keymon.config import load
from keymon.simulator.gate import GateSimulator

READER, READER_SECRET = "c5dcfbf1f3a7d00dfeedbeef", "readerSecret0001"
BLIND, BLIND_SECRET = "d6edfcf2f4b8e11efeedbeef", "blindSecret0001"


def _config(tmp_path: Path) -> Path:
    keys = []
    for name, api_key, secret in (
        ("reader", READER, READER_SECRET),
        ("blind", BLIND, BLIND_SECRET),
    ):
        secret_file = tmp_path / f"{name}.secret"
        secret_file.write_text(secret + "\n")
        keys.append(
            {
                "name": name,
                "client": "acme",
                "exchange": "gate",
                "api_key": api_key,
                "api_secret": {"file": str(secret_file)},
            }
        )
    config = {
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "exchanges": {"gate": {"base_url": "https://gate.test"}},
        "audit": {"interval": "5m", "jitter": "10s", "timeout": "2s"},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": keys,
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def _coverage(app: App) -> dict[str, str]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{app.port}/metrics")
    assert response.status_code == 200
    found = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "keymon_key_info":
                found[sample.labels["key"]] = sample.labels["coverage"]
    return found


async def test_key_info_coverage_follows_the_facts(tmp_path: Path) -> None:
    sim = GateSimulator()
    sim.add_key(READER, READER_SECRET)
    sim.add_key(BLIND, BLIND_SECRET, account_read=False)
    app = App(load(_config(tmp_path)), transport_factory=lambda _n: sim.transport())
    await app.start(schedule=False)
    try:
        # Before any audit: what the adapter can show.
        assert await _coverage(app) == {"reader": "introspection", "blind": "introspection"}
        await app.audit_all()
        assert await _coverage(app) == {"reader": "introspection", "blind": "liveness"}
        # The key gains account read (same key, made anew): the next audit introspects it.
        sim.delete_key(BLIND)
        sim.add_key(BLIND, BLIND_SECRET)
        await app.audit_all()
        assert await _coverage(app) == {"reader": "introspection", "blind": "introspection"}
    finally:
        await app.stop()
