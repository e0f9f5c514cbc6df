"""The configuration watcher: every secret file of a key is watched, a failure is logged once.

A running :class:`~keymon.app.App` with its real watcher (every 50 ms) over files in tmp_path;
the test edits the files as an operator would and reads the daemon's log events.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from keymon.app import App
from keymon.config import load
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET

OKX_KEY = "okx-key-0123456789abcdef"
PASSPHRASE = "passphrase-ZZq9Xw4"


def write(tmp_path: Path, **extra: Any) -> Path:
    """One Binance key and one OKX key, every secret in a file (the passphrase too)."""
    secrets = {
        "doc.secret": DOC_SECRET,
        "okx.secret": "okx-secret-value",
        "okx.passphrase": PASSPHRASE,
    }
    for name, value in secrets.items():
        if not (tmp_path / name).exists():
            (tmp_path / name).write_text(value + "\n")
    config = {
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "exchanges": {"binance": {"base_url": "https://binance.test"}},
        "audit": {"interval": "5m", "jitter": "10s", "timeout": "2s"},
        "keys": [
            {
                "name": "doc-key",
                "client": "acme",
                "exchange": "binance",
                "api_key": DOC_API_KEY,
                "api_secret": {"file": str(tmp_path / "doc.secret")},
            },
            {
                "name": "okx-key",
                "client": "acme",
                "exchange": "okx",
                "api_key": OKX_KEY,
                "api_secret": {"file": str(tmp_path / "okx.secret")},
                "passphrase": {"file": str(tmp_path / "okx.passphrase")},
            },
        ],
        **extra,
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def app(tmp_path: Path, sim: BinanceSimulator) -> AsyncIterator[App]:
    """A daemon whose watcher looks every 50 ms; audits go to the Binance simulator."""
    daemon = App(
        load(write(tmp_path)), transport_factory=lambda _n: sim.transport(), watch_interval=0.05
    )
    await daemon.start(serve_http=False)
    yield daemon
    await daemon.stop()


async def settle(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Let the watcher run until ``predicate`` holds (bounded)."""
    for _ in range(int(seconds / 0.05)):
        if predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


def reload_success(app: App) -> float | None:
    return app.registry.get_sample_value("keymon_config_last_reload_success")


async def test_a_changed_passphrase_file_is_reloaded(app: App, tmp_path: Path) -> None:
    """A rotated passphrase reaches the key without a restart or a SIGHUP."""
    state = app.store.get("okx-key")
    assert state is not None
    assert state.key.passphrase.get() == PASSPHRASE  # type: ignore[attr-defined]
    with capture_logs() as logs:
        (tmp_path / "okx.passphrase").write_text("rotated-passphrase\n")

        def rotated() -> bool:
            state = app.store.get("okx-key")
            return state is not None and state.key.passphrase.get() == "rotated-passphrase"  # type: ignore[attr-defined]

        await settle(rotated)
    (event,) = [e for e in logs if e["event"] == "config_reloaded"]
    assert event["changed"] == ["okx-key"]


def reloads(logs: list[MutableMapping[str, Any]]) -> int:
    return len([e for e in logs if e["event"] == "config_reloaded"])


async def test_a_file_caught_half_written_is_neither_refused_nor_loaded(
    app: App, tmp_path: Path
) -> None:
    """An editor saving in place: the watcher may see the file half-written; it waits it out.

    Each round writes the configuration in two parts with a pause longer than half a watcher
    round between them, so the watcher sees the first part alone in most rounds. The first part
    ends inside the OKX key: loaded, it would be refused (a broken file) or drop that key.
    """
    config = tmp_path / "keymon.yaml"
    good = config.read_text()
    rounds = 6
    with capture_logs() as logs:
        for n in range(1, rounds + 1):
            text = good.replace("jitter: 10s", f"jitter: {n}s")
            cut = text.index("okx-key") + 3
            with config.open("w") as handle:
                handle.write(text[:cut])
                handle.flush()
                await asyncio.sleep(0.035)
                handle.write(text[cut:])
            await settle(lambda: reloads(logs) == n)  # noqa: B023 (awaited at once)
    assert [e for e in logs if e["event"] == "config_reload_failed"] == []
    assert all(e["removed"] == [] for e in logs if e["event"] == "config_reloaded")
    assert reload_success(app) == 1
    assert sorted(app.store.names()) == ["doc-key", "okx-key"]


async def test_a_failed_reload_is_logged_once_per_change(app: App, tmp_path: Path) -> None:
    """Broken once: one error, not one every 2 s; broken differently: one more; put back: OK."""
    config = tmp_path / "keymon.yaml"
    good = config.read_text()
    with capture_logs() as logs:
        config.write_text(good.replace("interval: 5m", "interval: 5x"))
        await settle(lambda: reload_success(app) == 0)
        await asyncio.sleep(0.5)  # ten more rounds of the watcher on the same broken file
        failures = [e for e in logs if e["event"] == "config_reload_failed"]
        assert len(failures) == 1
        assert any("audit.interval" in p for p in failures[0]["problems"])

        config.write_text(good.replace("timeout: 2s", "timeout: 2x"))
        await settle(lambda: len([e for e in logs if e["event"] == "config_reload_failed"]) == 2)
        await asyncio.sleep(0.5)
        assert len([e for e in logs if e["event"] == "config_reload_failed"]) == 2

        config.write_text(good)  # exactly what is running: nothing to reload, the failure ends
        await settle(lambda: reload_success(app) == 1)
    assert [e["event"] for e in logs if e["event"].startswith("config_")] == [
        "config_changed",
        "config_reload_failed",
        "config_changed",
        "config_reload_failed",
        "config_restored",
    ]
    assert sorted(app.store.names()) == ["doc-key", "okx-key"]


async def test_a_missing_secret_file_that_appears_is_picked_up(
    app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new key whose secret file is not there yet: one error; once the file exists, loaded."""
    monkeypatch.setattr("keymon.app.FAILED_RELOAD_RETRY", 0.2)
    config = tmp_path / "keymon.yaml"
    data = yaml.safe_load(config.read_text())
    data["keys"].append(
        {
            "name": "late-key",
            "client": "acme",
            "exchange": "binance",
            "api_key": "lateKey0123456789abcdef",
            "api_secret": {"file": str(tmp_path / "late.secret")},
        }
    )
    with capture_logs() as logs:
        config.write_text(yaml.safe_dump(data))
        await settle(lambda: reload_success(app) == 0)
        await asyncio.sleep(0.6)  # quiet retries: the same problem is not logged again
        assert len([e for e in logs if e["event"] == "config_reload_failed"]) == 1
        (tmp_path / "late.secret").write_text("late-secret\n")
        await settle(lambda: "late-key" in app.store.names())
    assert reload_success(app) == 1
    assert len([e for e in logs if e["event"] == "config_reload_failed"]) == 1


async def test_a_fifo_in_place_of_a_secret_file_blocks_nothing(app: App, tmp_path: Path) -> None:
    """A FIFO swapped in for a secret file: refused with its location, the watcher goes on."""
    passphrase = tmp_path / "okx.passphrase"
    passphrase.unlink()
    os.mkfifo(passphrase)
    with capture_logs() as logs:
        await settle(lambda: reload_success(app) == 0)
        (failure,) = [e for e in logs if e["event"] == "config_reload_failed"]
        assert any("keys[1].passphrase" in p for p in failure["problems"])
        passphrase.unlink()
        passphrase.write_text(PASSPHRASE + "\n")
        await settle(lambda: reload_success(app) == 1)
    assert app.store.get("okx-key") is not None
