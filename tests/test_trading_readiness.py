"""Trading readiness end to end: Binance's API trading lock, its indicators and the account
status, from the simulator served on 127.0.0.1 (real HTTP) to ``keymon check`` and /metrics.

The daemon (:class:`~keymon.app.App`) and ``keymon check`` audit keys whose lock, indicators
and account status are switched at the simulator between audits, as Binance would switch them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from keymon.app import App
from keymon.cli import check
from keymon.config import load
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET
from tests.notify_receiver import Receiver

TRADING = "/sapi/v1/account/apiTradingStatus"
ACCOUNT = "/sapi/v1/account/status"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def live() -> Iterator[tuple[BinanceSimulator, str]]:
    """A Binance simulator on the real clock, served on 127.0.0.1, holding the doc key."""
    sim = BinanceSimulator()
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    with sim.serve_in_thread() as url:
        yield sim, url


def write_config(tmp_path: Path, url: str, **policy: Any) -> Path:
    (tmp_path / "doc.secret").write_text(DOC_SECRET + "\n")
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "exchanges": {"binance": {"base_url": url}},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": [
            {
                "name": "doc-key",
                "client": "acme",
                "exchange": "binance",
                "api_key": DOC_API_KEY,
                "api_secret": {"file": str(tmp_path / "doc.secret")},
            }
        ],
    }
    if policy:
        config["policies"] = {"market-maker": policy}
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
async def daemon(
    tmp_path: Path, live: tuple[BinanceSimulator, str]
) -> AsyncIterator[Callable[..., Any]]:
    """Start the daemon (no scheduler: the test audits) over the served simulator."""
    apps: list[App] = []

    async def start(**policy: Any) -> App:
        app = App(load(write_config(tmp_path, live[1], **policy)))
        apps.append(app)
        await app.start(schedule=False)
        return app

    yield start
    for app in apps:
        await app.stop()


async def scrape(app: App) -> Samples:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{app.port}/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float | None:
    for (sample, pairs), found in samples.items():
        if sample == name and set(labels.items()) <= set(pairs):
            return found
    return None


def run_check(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, Any]]:
    """``keymon check --format json`` over real HTTP; the status and the one key's entry."""
    capsys.readouterr()  # the daemon's log lines so far
    status = check(config, keys=[], fmt="json")
    out, _err = capsys.readouterr()
    (entry,) = json.loads(out)["keys"]
    return status, entry


def rules(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["rule"]: f for f in entry["findings"]}


async def test_a_lock_shows_within_one_audit_and_resolves_when_lifted(
    tmp_path: Path,
    live: tuple[BinanceSimulator, str],
    daemon: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Binance locks the account's API trading: the next audit shows ``trading_locked``
    (critical) with the planned recovery time and the tripped indicator, in ``check`` and in
    /metrics; lifting the lock resolves it at the next audit."""
    sim, url = live
    recover_ms = (int(time.time()) + 2 * 3600) * 1000
    app = await daemon()
    await app.audit_key("doc-key")
    before = await scrape(app)
    assert value(before, "keymon_key_trading_locked", key="doc-key") == 0.0
    assert value(before, "keymon_key_account_restricted", key="doc-key") == 0.0
    assert value(before, "keymon_key_finding", rule="trading_locked") == 0.0

    sim.set_trading_status(
        DOC_API_KEY,
        isLocked=True,
        plannedRecoverTime=recover_ms,
        indicators={"BTCUSDT": [{"i": "UFR", "c": 320, "v": 0.995, "t": 0.99}]},
    )
    await app.audit_key("doc-key")
    locked = await scrape(app)
    assert value(locked, "keymon_key_trading_locked", key="doc-key") == 1.0
    assert value(locked, "keymon_key_trading_recover_timestamp_seconds") == recover_ms / 1000
    assert value(locked, "keymon_key_finding", rule="trading_locked", severity="critical") == 1.0
    assert value(locked, "keymon_key_changes_total", field="trading_locked") == 1.0

    status, entry = await asyncio.to_thread(run_check, write_config(tmp_path, url), capsys)
    assert status == 2
    finding = rules(entry)["trading_locked"]
    assert finding["severity"] == "critical"
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(recover_ms / 1000))
    assert f"planned recovery {when}" in finding["message"]
    assert "UFR 0.995 >= 0.99 on BTCUSDT" in finding["message"]
    assert entry["facts"]["trading_locked"] is True
    assert entry["facts"]["trading_recover_at"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(recover_ms / 1000)
    )

    sim.set_trading_status(DOC_API_KEY, isLocked=False, plannedRecoverTime=0, indicators=None)
    await app.audit_key("doc-key")
    lifted = await scrape(app)
    assert value(lifted, "keymon_key_trading_locked", key="doc-key") == 0.0
    assert value(lifted, "keymon_key_trading_recover_timestamp_seconds") is None
    assert value(lifted, "keymon_key_finding", rule="trading_locked") == 0.0
    status, entry = await asyncio.to_thread(run_check, write_config(tmp_path, url), capsys)
    assert status == 0
    assert "trading_locked" not in rules(entry)


def test_the_table_names_the_lock(
    tmp_path: Path, live: tuple[BinanceSimulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The table format shows the lock's finding and its recovery time too."""
    sim, url = live
    sim.set_trading_status(
        DOC_API_KEY, isLocked=True, plannedRecoverTime=(int(time.time()) + 600) * 1000
    )
    status = check(write_config(tmp_path, url), keys=[], fmt="table")
    out, _err = capsys.readouterr()
    assert status == 2
    assert "trading_locked (critical): the exchange has locked API trading" in out
    assert "planned recovery" in out
    assert "trigger condition GCR 150, IFER 150, UFR 300" in out


@pytest.mark.parametrize(
    ("share", "policy", "fires"),
    [(0.85, {}, True), (0.79, {}, False), (0.85, {"lock_risk": "90%"}, False)],
    ids=["85%-of-trigger", "79%-below-default", "85%-below-policy-90%"],
)
def test_an_indicator_near_its_trigger_warns_naming_indicator_and_symbol(
    tmp_path: Path,
    live: tuple[BinanceSimulator, str],
    capsys: pytest.CaptureFixture[str],
    share: float,
    policy: dict[str, Any],
    fires: bool,
) -> None:
    """An indicator at 85 % of its trigger fires ``trading_lock_risk`` (warning) naming the
    indicator and the symbol; below the policy's ``lock_risk`` (80 % by default) it does not."""
    sim, url = live
    sim.set_trading_status(
        DOC_API_KEY,
        indicators={
            "BTCUSDT": [{"i": "GCR", "c": 40, "v": 0.1, "t": 0.99}],
            "ETHUSDT": [
                {"i": "GCR", "c": 50, "v": round(0.99 * share, 6), "t": 0.99},
                {"i": "UFR", "c": 50, "v": 0.2, "t": 0.99},
            ],
        },
    )
    status, entry = run_check(write_config(tmp_path, url, **policy), capsys)
    worst = {i["indicator"]: i for i in entry["facts"]["trading_indicators"]}
    assert worst["GCR"]["symbol"] == "ETHUSDT"
    assert worst["GCR"]["ratio"] == pytest.approx(share)
    if fires:
        assert status == 1
        finding = rules(entry)["trading_lock_risk"]
        assert finding["severity"] == "warning"
        assert "GCR on ETHUSDT is at 85% of its trigger" in finding["message"]
        assert "UFR" not in finding["message"]
    else:
        assert status == 0
        assert "trading_lock_risk" not in rules(entry)


async def test_indicator_ratios_are_exported_per_kind(
    live: tuple[BinanceSimulator, str], daemon: Callable[..., Any]
) -> None:
    """/metrics carries one ratio per indicator kind, the worst symbol's."""
    sim, _url = live
    sim.set_trading_status(
        DOC_API_KEY,
        indicators={
            "BTCUSDT": [{"i": "UFR", "c": 20, "v": 0.05, "t": 0.99}],
            "ETHUSDT": [{"i": "UFR", "c": 20, "v": 0.495, "t": 0.99}],
        },
    )
    app = await daemon()
    await app.audit_key("doc-key")
    samples = await scrape(app)
    ratio = value(samples, "keymon_key_trading_indicator_ratio", indicator="UFR")
    assert ratio == pytest.approx(0.5)
    assert value(samples, "keymon_key_trading_indicator_ratio", indicator="GCR") is None
    assert value(samples, "keymon_key_finding", rule="trading_lock_risk") == 0.0


async def test_an_account_status_other_than_normal_is_critical(
    tmp_path: Path,
    live: tuple[BinanceSimulator, str],
    daemon: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``account/status`` other than ``Normal`` fires ``account_restricted`` quoting it."""
    sim, url = live
    sim.set_account_status(DOC_API_KEY, "Restricted: compliance review")
    status, entry = await asyncio.to_thread(run_check, write_config(tmp_path, url), capsys)
    assert status == 2
    finding = rules(entry)["account_restricted"]
    assert finding["severity"] == "critical"
    assert '"Restricted: compliance review"' in finding["message"]
    assert entry["facts"]["account_status"] == "Restricted: compliance review"
    assert entry["facts"]["account_restricted"] is True
    app = await daemon()
    await app.audit_key("doc-key")
    samples = await scrape(app)
    assert value(samples, "keymon_key_account_restricted") == 1.0
    assert value(samples, "keymon_key_finding", rule="account_restricted") == 1.0


async def test_a_failed_trading_status_read_keeps_the_key_facts_and_says_so(
    tmp_path: Path,
    live: tuple[BinanceSimulator, str],
    daemon: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """apiRestrictions answers, apiTradingStatus does not (503): the audit succeeds, the
    restriction findings stand, and the failure is reported on its own (log line, metric,
    check output). The daemon keeps the last known lock: a failed read never lifts it."""
    sim, url = live
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    sim.set_trading_status(
        DOC_API_KEY, isLocked=True, plannedRecoverTime=(int(time.time()) + 3600) * 1000
    )
    app = await daemon()
    await app.audit_key("doc-key")
    sim.fail_next(1, status=503, path=TRADING)
    with capture_logs() as logs:
        result = await app.audit_key("doc-key")
    assert result is not None
    assert result.ok
    assert [(f.rule, f.severity) for f in result.findings] == [("withdraw_enabled", "critical")]
    failed = [e for e in logs if e["event"] == "trading_status_failed"]
    assert [(e["reason"], e["exchange"]) for e in failed] == [("exchange_unavailable", "binance")]
    samples = await scrape(app)
    assert value(samples, "keymon_key_audit_ok") == 1.0
    assert value(samples, "keymon_key_finding", rule="withdraw_enabled") == 1.0
    assert value(samples, "keymon_key_trading_status_error", reason="exchange_unavailable") == 1.0
    # Stale, not lifted: the lock read at the audit before stays exported and firing.
    assert value(samples, "keymon_key_trading_locked") == 1.0
    assert value(samples, "keymon_key_finding", rule="trading_locked") == 1.0
    assert value(samples, "keymon_key_account_restricted") == 0.0  # account/status answered

    sim.fail_next(1, status=503, path=TRADING)
    status, entry = await asyncio.to_thread(run_check, write_config(tmp_path, url), capsys)
    assert status == 2
    assert entry["audit_ok"] is True
    assert entry["error"] is None
    assert set(rules(entry)) == {"withdraw_enabled"}
    assert entry["facts"]["permissions"]["withdraw"] is True
    assert entry["facts"]["trading_locked"] is None
    assert entry["facts"]["trading_status_error"]["reason"] == "exchange_unavailable"

    await app.audit_key("doc-key")  # the read works again
    samples = await scrape(app)
    assert value(samples, "keymon_key_trading_status_error") is None


def test_the_table_reports_a_failed_trading_status_read(
    tmp_path: Path, live: tuple[BinanceSimulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The table shows the key's findings and, on its own line, the failed read."""
    sim, url = live
    sim.fail_next(1, status=503, path=ACCOUNT)
    status = check(write_config(tmp_path, url), keys=[], fmt="table")
    out, _err = capsys.readouterr()
    assert status == 0
    assert "all rules pass" not in out  # the key is not shown as fully checked
    assert "trading status not read (exchange_unavailable)" in out


def test_trading_status_off_sends_only_the_restrictions_call(
    tmp_path: Path, live: tuple[BinanceSimulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """``exchanges.binance.trading_status: false``: one signed call per audit, no trading
    facts (null, not false), no trading rules."""
    sim, url = live
    sim.set_trading_status(DOC_API_KEY, isLocked=True)
    config = write_config(tmp_path, url)
    data = yaml.safe_load(config.read_text())
    data["exchanges"]["binance"]["trading_status"] = False
    config.write_text(yaml.safe_dump(data))
    status, entry = run_check(config, capsys)
    assert status == 0
    assert entry["facts"]["trading_locked"] is None
    assert entry["facts"]["account_status"] is None
    signed = [r.path for r in sim.request_log if r.api_key == DOC_API_KEY]
    assert signed == ["/sapi/v1/account/apiRestrictions"]


def with_budget(config: Path, per_minute: int) -> Path:
    data = yaml.safe_load(config.read_text())
    data["exchanges"]["binance"]["max_weight_per_minute"] = per_minute
    config.write_text(yaml.safe_dump(data))
    return config


async def test_a_skipped_read_keeps_the_last_known_lock_and_is_no_error(
    tmp_path: Path, live: tuple[BinanceSimulator, str]
) -> None:
    """The daemon reads the lock while its budget has room; once other audits have spent it,
    the next audit reads the key's restrictions only: the lock read before stays (stale, never
    lifted), no error series, a debug line `trading_status_skipped` with reason `budget`."""
    sim, url = live
    sim.update_key(DOC_API_KEY, enableWithdrawals=True)
    sim.set_trading_status(
        DOC_API_KEY, isLocked=True, plannedRecoverTime=(int(time.time()) + 3600) * 1000
    )
    app = App(load(with_budget(write_config(tmp_path, url), 24)))
    await app.start(schedule=False)
    try:
        await app.audit_key("doc-key")
        assert value(await scrape(app), "keymon_key_trading_locked") == 1.0
        # The other keys' restriction reads: 21 of the 24 spent, less than 10 % left.
        assert app.budget.try_grant("binance", 17) == 0.0
        sim.set_trading_status(DOC_API_KEY, isLocked=False, plannedRecoverTime=0)
        before = [r.path for r in sim.request_log]
        with capture_logs() as logs:
            result = await app.audit_key("doc-key")
        sent = [r.path for r in sim.request_log][len(before) :]
        assert sent == ["/sapi/v1/account/apiRestrictions"]
        assert result is not None
        assert result.ok
        assert [f.rule for f in result.findings] == ["withdraw_enabled"]
        skipped = [e for e in logs if e["event"] == "trading_status_skipped"]
        assert [(e["reason"], e["log_level"]) for e in skipped] == [("budget", "debug")]
        assert not [e for e in logs if e["event"] == "trading_status_failed"]
        samples = await scrape(app)
        assert value(samples, "keymon_key_finding", rule="withdraw_enabled") == 1.0
        assert value(samples, "keymon_key_trading_locked") == 1.0  # stale, not lifted
        assert value(samples, "keymon_key_finding", rule="trading_locked") == 1.0
        assert value(samples, "keymon_key_account_restricted") == 0.0
        assert value(samples, "keymon_key_trading_status_error") is None
    finally:
        await app.stop()


async def test_check_reads_the_trading_status_where_the_daemon_would_skip_it(
    tmp_path: Path, live: tuple[BinanceSimulator, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A budget of 4 weight a minute: `keymon check`, which the user asked for, reads the
    lock as part of the audit; the daemon, whose extras must leave headroom, reads the key's
    restrictions and leaves the never-read trading facts unknown (no series, no rule)."""
    sim, url = live
    sim.set_trading_status(DOC_API_KEY, isLocked=True)
    config = with_budget(write_config(tmp_path, url), 4)
    status, entry = await asyncio.to_thread(run_check, config, capsys)
    assert status == 2
    assert rules(entry)["trading_locked"]["severity"] == "critical"
    signed = [r.path for r in sim.request_log if r.api_key == DOC_API_KEY]
    assert signed == [
        "/sapi/v1/account/apiRestrictions",
        TRADING,
        ACCOUNT,
    ]

    app = App(load(config))
    await app.start(schedule=False)
    try:
        result = await app.audit_key("doc-key")
        assert result is not None
        assert result.ok
        assert result.facts is not None
        assert result.facts.trading_locked is None
        samples = await scrape(app)
        assert value(samples, "keymon_key_audit_ok") == 1.0
        assert value(samples, "keymon_key_trading_locked") is None
        assert value(samples, "keymon_key_finding", rule="trading_locked") is None
        assert value(samples, "keymon_key_trading_status_error") is None
    finally:
        await app.stop()
    signed = [r.path for r in sim.request_log if r.api_key == DOC_API_KEY]
    assert signed[3:] == ["/sapi/v1/account/apiRestrictions"]


async def test_a_lock_is_notified_with_what_changed_and_resolved_when_lifted(
    tmp_path: Path, live: tuple[BinanceSimulator, str]
) -> None:
    """Built-in notifications: one message when the lock starts (what changed, what to do),
    one when it lifts."""
    sim, url = live
    with Receiver() as receiver:
        config = write_config(tmp_path, url)
        data = yaml.safe_load(config.read_text())
        data["notify"] = {"urls": [receiver.url()], "send_resolved": True}
        config.write_text(yaml.safe_dump(data))
        app = App(load(config))
        await app.start(serve_http=False, schedule=False)
        try:
            await app.audit_key("doc-key")
            sim.set_trading_status(
                DOC_API_KEY, isLocked=True, plannedRecoverTime=(int(time.time()) + 3600) * 1000
            )
            await app.audit_key("doc-key")
            await app.notifier.deliver_due()
            sim.set_trading_status(DOC_API_KEY, isLocked=False, plannedRecoverTime=0)
            await app.audit_key("doc-key")
            await app.notifier.deliver_due()
        finally:
            await app.stop()
        messages = [(str(m["title"]), str(m["message"])) for m in receiver.delivered]
    assert len(messages) == 2, messages
    (title, body), (resolved, _) = messages
    assert "doc-key: trading_locked" in title
    assert "What changed: trading_locked: off -> on" in body
    assert "planned recovery" in body
    assert "Stop or slow the bots' order flow" in body
    assert "RESOLVED" in resolved.upper()
