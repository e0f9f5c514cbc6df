"""Trading readiness on HTX end to end: the spot account's ``state`` from
``GET /v1/account/accounts``, from the simulator served on 127.0.0.1 (real HTTP) to
``keymon check`` and /metrics.

The daemon (:class:`~keymon.app.App`) and ``keymon check`` audit a key whose account HTX locks
and unlocks between audits (the simulator's per-key ``account_state``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from structlog.testing import capture_logs

from keymon.app import App
from keymon.cli import check
from keymon.config import load
from keymon.simulator.htx import HtxSimulator
from tests.test_trading_readiness import rules, run_check, scrape, value

API_KEY = "4ed49817-3e3f5a1c-1a2b3c4d-5e6f7"
SECRET = "htx-e2e-secret"
UID = "40000001"
KEY_PATH = "/v2/user/api-key"
ACCOUNTS = "/v1/account/accounts"


@pytest.fixture
def live() -> Iterator[tuple[HtxSimulator, str]]:
    """An HTX simulator on the real clock, served on 127.0.0.1, holding one read+trade key
    bound to 127.0.0.1 (so no other rule fires)."""
    sim = HtxSimulator(limit_per_second=100)  # the accounts call: 100 times/2s
    sim.add_key(API_KEY, SECRET, UID, ips=["127.0.0.1"])
    with sim.serve_in_thread() as url:
        yield sim, url


def write_config(tmp_path: Path, url: str, **htx: Any) -> Path:
    (tmp_path / "htx.secret").write_text(SECRET + "\n")
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "exchanges": {"htx": {"base_url": url, **htx}},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": [
            {
                "name": "htx-key",
                "client": "acme",
                "exchange": "htx",
                "api_key": API_KEY,
                "api_secret": {"file": str(tmp_path / "htx.secret")},
                "uid": UID,
            }
        ],
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def daemon(
    tmp_path: Path, live: tuple[HtxSimulator, str]
) -> AsyncIterator[Callable[..., Any]]:
    """Start the daemon (no scheduler: the test audits) over the served simulator."""
    apps: list[App] = []

    async def start() -> App:
        app = App(load(write_config(tmp_path, live[1])))
        apps.append(app)
        await app.start(schedule=False)
        return app

    yield start
    for app in apps:
        await app.stop()


async def test_a_locked_spot_account_is_critical_and_resolves_when_unlocked(
    tmp_path: Path,
    live: tuple[HtxSimulator, str],
    daemon: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """HTX locks the spot account: the next audit fires ``account_restricted`` (critical,
    quoting ``lock``) in ``check`` and /metrics; unlocking it resolves the finding."""
    sim, url = live
    app = await daemon()
    await app.audit_key("htx-key")
    before = await scrape(app)
    assert value(before, "keymon_key_account_restricted", key="htx-key") == 0.0
    assert value(before, "keymon_key_finding", rule="account_restricted") == 0.0
    status, entry = await asyncio.to_thread(run_check, write_config(tmp_path, url), capsys)
    assert status == 0, entry
    assert entry["facts"]["account_status"] == "working"
    assert entry["facts"]["account_restricted"] is False

    sim.update_key(API_KEY, account_state="lock")
    await app.audit_key("htx-key")
    locked = await scrape(app)
    assert value(locked, "keymon_key_account_restricted", key="htx-key", exchange="htx") == 1.0
    assert value(locked, "keymon_key_finding", rule="account_restricted", severity="critical") == 1
    assert value(locked, "keymon_key_changes_total", field="account_status") == 1.0

    status, entry = await asyncio.to_thread(run_check, write_config(tmp_path, url), capsys)
    assert status == 2
    finding = rules(entry)["account_restricted"]
    assert finding["severity"] == "critical"
    assert '"lock"' in finding["message"]
    assert entry["facts"]["account_status"] == "lock"
    assert entry["facts"]["account_restricted"] is True
    # The trading-lock facts are Binance's: HTX does not show them (null, not false).
    assert entry["facts"]["trading_locked"] is None

    sim.update_key(API_KEY, account_state="working")
    await app.audit_key("htx-key")
    unlocked = await scrape(app)
    assert value(unlocked, "keymon_key_account_restricted", key="htx-key") == 0.0
    assert value(unlocked, "keymon_key_finding", rule="account_restricted") == 0.0
    status, entry = await asyncio.to_thread(run_check, write_config(tmp_path, url), capsys)
    assert status == 0
    assert "account_restricted" not in rules(entry)


def test_a_locked_margin_account_is_named_beside_the_spot_state(
    tmp_path: Path, live: tuple[HtxSimulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The spot account works but the isolated margin account (traded with the same key) is
    locked: the status names it, and the account is reported restricted."""
    sim, url = live
    sim.update_key(API_KEY, margin_state="lock")
    status, entry = run_check(write_config(tmp_path, url), capsys)
    assert status == 2
    assert entry["facts"]["account_status"] == (
        "working; also locked: margin account 10000004 (btcusdt)"
    )
    assert "margin account 10000004 (btcusdt)" in rules(entry)["account_restricted"]["message"]


async def test_a_failed_accounts_read_keeps_the_key_facts_and_says_so(
    tmp_path: Path,
    live: tuple[HtxSimulator, str],
    daemon: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``/v2/user/api-key`` answers, ``/v1/account/accounts`` does not (503): the audit
    succeeds, the key's findings stand, the failure is reported on its own (log line, metric,
    check output), and the last known lock stays firing."""
    sim, url = live
    sim.update_key(API_KEY, permission=["readOnly", "trade", "withdraw"], account_state="lock")
    app = await daemon()
    await app.audit_key("htx-key")
    sim.fail_next(1, status=503, path=ACCOUNTS)
    with capture_logs() as logs:
        result = await app.audit_key("htx-key")
    assert result is not None
    assert result.ok
    # The audit's own findings: its account status was not read.
    assert [(f.rule, f.severity) for f in result.findings] == [("withdraw_enabled", "critical")]
    failed = [e for e in logs if e["event"] == "trading_status_failed"]
    assert [(e["reason"], e["exchange"]) for e in failed] == [("exchange_unavailable", "htx")]
    samples = await scrape(app)
    assert value(samples, "keymon_key_audit_ok") == 1.0
    assert value(samples, "keymon_key_finding", rule="withdraw_enabled") == 1.0
    assert value(samples, "keymon_key_trading_status_error", reason="exchange_unavailable") == 1.0
    # Stale, not lifted: the lock read at the audit before stays exported and firing.
    assert value(samples, "keymon_key_account_restricted") == 1.0
    assert value(samples, "keymon_key_finding", rule="account_restricted") == 1.0

    sim.fail_next(1, status=503, path=ACCOUNTS)
    status, entry = await asyncio.to_thread(run_check, write_config(tmp_path, url), capsys)
    assert status == 2
    assert entry["audit_ok"] is True
    assert entry["error"] is None
    assert set(rules(entry)) == {"withdraw_enabled"}
    assert entry["facts"]["permissions"]["withdraw"] is True
    assert entry["facts"]["account_status"] is None
    assert entry["facts"]["trading_status_error"]["reason"] == "exchange_unavailable"

    capsys.readouterr()
    sim.fail_next(1, status=503, path=ACCOUNTS)
    table = await asyncio.to_thread(check, write_config(tmp_path, url), keys=[], fmt="table")
    assert table == 2
    out, _err = capsys.readouterr()
    assert "trading status not read (exchange_unavailable)" in out

    await app.audit_key("htx-key")  # the read works again
    samples = await scrape(app)
    assert value(samples, "keymon_key_trading_status_error") is None


def test_trading_status_off_sends_only_the_key_call(
    tmp_path: Path, live: tuple[HtxSimulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``exchanges.htx.trading_status: false``: one signed call per audit, no account status
    (null), no ``account_restricted``."""
    sim, url = live
    sim.update_key(API_KEY, account_state="lock")
    status, entry = run_check(write_config(tmp_path, url, trading_status=False), capsys)
    assert status == 0
    assert entry["facts"]["account_status"] is None
    assert (sim.requests_to(KEY_PATH), sim.requests_to(ACCOUNTS)) == (1, 0)


def test_the_admin_api_switches_the_account_state(live: tuple[HtxSimulator, str]) -> None:
    """``PATCH /_simulator/keys/<key>`` locks the spot account while the simulator runs;
    unknown fields and states are refused with 400."""
    _sim, url = live
    with httpx.Client(base_url=url) as client:
        response = client.patch(f"/_simulator/keys/{API_KEY}", json={"account_state": "lock"})
        assert response.status_code == 200
        assert response.json()["account_state"] == "lock"
        assert SECRET not in response.text
        bad = client.patch(f"/_simulator/keys/{API_KEY}", json={"account_state": "frozen"})
        assert bad.status_code == 400
        unknown = client.patch(f"/_simulator/keys/{API_KEY}", json={"state": "lock"})
        assert unknown.status_code == 400
        faults = client.post("/_simulator/faults", json={"fail_next": 1, "fail_path": ACCOUNTS})
        assert faults.json()["fail_path"] == ACCOUNTS
        assert client.get("/_simulator/keys").json()[0]["account_state"] == "lock"
