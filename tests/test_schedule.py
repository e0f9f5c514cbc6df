"""The scheduler: the first round at the budget's speed, ``interval: auto``, periods, reloads.

Behaviour, not timing: the daemon audits through the Binance simulator (real signing and
verification, in process); where the weight budget's minute matters, its clock runs 30 times
faster than the wall clock, so a test never waits out a real minute.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs

from keymon.app import App
from keymon.config import (
    AUTO_BUDGET_SHARE,
    AUTO_INTERVAL_FLOOR,
    AUTO_JITTER_SHARE,
    Settings,
    load,
)
from keymon.errors import ConfigError
from keymon.exchanges import EXCHANGES, audit_cost, extras_cost
from keymon.model import Reason
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import make_settings
from tests.test_app import scrape, value

#: The budget's clock runs this much faster than the wall clock in the budget tests.
SPEED = 30.0


def fleet(count: int, prefix: str = "k") -> list[tuple[str, str, str]]:
    return [
        (f"{prefix}{i:02d}", f"{prefix}{i:02d}key0123456789abcdef", f"secret{i}")
        for i in range(count)
    ]


def write(tmp_path: Path, keys: list[tuple[str, str, str]], **sections: Any) -> Path:
    """A configuration of Binance keys (literal secrets are fine in a test's tmp dir)."""
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "exchanges": {"binance": {"base_url": "https://binance.test"}},
        "audit": {"interval": "5m", "jitter": "10s", "timeout": "2s"},
        "keys": [
            {"name": n, "client": "acme", "exchange": "binance", "api_key": k, "api_secret": s}
            for n, k, s in keys
        ],
    }
    for name, section in sections.items():
        config[name] = section
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def sim_for(clock: Any) -> Callable[[list[tuple[str, str, str]]], BinanceSimulator]:
    def make(keys: list[tuple[str, str, str]]) -> BinanceSimulator:
        sim = BinanceSimulator(clock=clock)
        for _, api_key, secret in keys:
            sim.add_key(api_key, hmac_secret=secret)
        return sim

    return make


@pytest.fixture
async def apps() -> AsyncIterator[list[App]]:
    running: list[App] = []
    yield running
    for app in running:
        await app.stop()


def new_app(apps: list[App], config: Path, sim: BinanceSimulator, **options: Any) -> App:
    """A daemon over ``config`` whose exchange requests go to ``sim``, stopped after the test."""
    app = App(load(config), transport_factory=lambda _n: sim.transport(), **options)
    apps.append(app)
    return app


def fast_budget_clock() -> dict[str, Any]:
    """The budget's monotonic clock and sleep, SPEED times faster than real time."""
    origin = time.monotonic()

    def monotonic() -> float:
        return origin + (time.monotonic() - origin) * SPEED

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds / SPEED)

    return {"monotonic": monotonic, "sleep": sleep}


def audited(app: App) -> list[str]:
    return [s.name for s in app.store.snapshot() if s.audited]


async def until(predicate: Callable[[], bool], within: float) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------- first round


async def test_first_round_goes_out_at_once_when_the_budget_allows(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """20 keys, a budget of 40/min: every first audit goes out together, none spread out."""
    keys = fleet(20)
    sim = sim_for(keys)
    exchanges = {"binance": {"base_url": "https://binance.test", "max_weight_per_minute": 40}}
    app = new_app(apps, write(tmp_path, keys, exchanges=exchanges), sim)
    started = time.monotonic()
    await app.start(serve_http=False)
    await until(lambda: len(audited(app)) == 20, within=10)
    assert time.monotonic() - started < 5  # the old plan spread 20 keys over a warm-up
    assert all(s.last_result is not None and s.last_result.ok for s in app.store.snapshot())
    assert sim.count_429 == 0


async def test_first_round_beyond_the_budget_continues_as_the_window_frees(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """20 keys, a budget for half of them: ten at once, the rest once the minute has passed,
    in the configuration's order, and none of them fails for want of budget.

    (The budget grants the first eleven keys; the clock sync before the first request takes
    one key's grant, so that key's own request waits for the window with the second half.)"""
    keys = fleet(20)
    sim = sim_for(keys)
    # 11: ten audits, and the clock sync before the first one.
    exchanges = {"binance": {"base_url": "https://binance.test", "max_weight_per_minute": 11}}
    app = new_app(apps, write(tmp_path, keys, exchanges=exchanges), sim, **fast_budget_clock())
    await app.start(serve_http=False)
    await until(lambda: len(audited(app)) >= 10, within=10)
    await asyncio.sleep(0.5)  # 15 s on the budget's clock: the window is still full
    first = audited(app)
    assert len(first) == 10
    assert set(first) < {name for name, _, _ in keys[:11]}
    await until(lambda: len(audited(app)) == 20, within=15)  # the budget's minute: 2 s
    assert all(s.last_result is not None and s.last_result.ok for s in app.store.snapshot())
    assert sim.count_429 == 0


async def test_a_reload_during_the_first_round_keeps_the_rest_coming(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """A reload that changes every key's interval while half the first round still waits for
    the budget: the waiting keys are audited as soon as the window frees, not an interval
    later; the audited ones move to the new interval."""
    keys = fleet(20)
    sim = sim_for(keys)
    exchanges = {"binance": {"base_url": "https://binance.test", "max_weight_per_minute": 11}}
    app = new_app(apps, write(tmp_path, keys, exchanges=exchanges), sim, **fast_budget_clock())
    await app.start(serve_http=False)
    await until(lambda: len(audited(app)) >= 10, within=10)
    audit = {"interval": "4m", "jitter": "10s", "timeout": "2s"}
    write(tmp_path, keys, exchanges=exchanges, audit=audit)
    assert await app.reload()
    done = audited(app)[0]
    due = app.scheduler.due(done)
    assert due is not None
    assert due <= 240
    await until(lambda: len(audited(app)) == 20, within=15)


async def test_a_recorded_ban_fails_the_first_round_at_once_and_sends_nothing(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """A 418 ban another keymon process recorded in data_dir/bans.json: every due audit is
    recorded at once as `banned` (so /readyz still turns 200), and nothing reaches the
    exchange."""
    keys = fleet(5)
    sim = sim_for(keys)
    (tmp_path / "data").mkdir()
    until_text = (datetime.now(UTC) + timedelta(minutes=10)).isoformat().replace("+00:00", "Z")
    (tmp_path / "data" / "bans.json").write_text(
        json.dumps(
            {
                "version": 1,
                "exchanges": {"binance": {"banned_until": until_text, "rate_limited_until": None}},
            }
        )
    )
    app = new_app(apps, write(tmp_path, keys), sim)
    await app.start(serve_http=False)
    await until(lambda: len(audited(app)) == 5, within=10)
    for state in app.store.snapshot():
        assert state.last_result is not None
        assert state.last_result.error is not None
        assert state.last_result.error.reason is Reason.BANNED
    assert sim.request_log == []


async def test_periodic_audits_follow_the_interval(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """Short intervals: every key is audited again and again, each gap within the interval
    (plus the audit's own time), and the scheduler keeps one entry per key. (The gap after
    the first-round audit may be up to 1.5 periods: the schedule module's docstring.)"""
    keys = fleet(5)
    sim = sim_for(keys)
    audit = {"interval": "1s", "jitter": "200ms", "timeout": "2s"}
    app = new_app(apps, write(tmp_path, keys, audit=audit), sim)
    seen: dict[str, list[float]] = {name: [] for name, _, _ in keys}
    original = app.audit_key

    async def audit_key(name: str) -> Any:
        seen[name].append(time.monotonic())
        return await original(name)

    app.scheduler._run = audit_key
    await app.start(serve_http=False)
    await asyncio.sleep(4.5)
    for name, times in seen.items():
        assert len(times) >= 3, (name, times)
        gaps = [b - a for a, b in itertools.pairwise(times[1:])]  # the first gap: see below
        assert all(gap <= 1.0 + 0.25 for gap in gaps), (name, gaps)
        assert app.scheduler.scheduled(name)
    assert sum(len(lane.heap) for lane in app.scheduler._lanes.values()) == len(keys)


# ----------------------------------------------------------------------------- extras

RESTRICTIONS = "/sapi/v1/account/apiRestrictions"
TRADING = "/sapi/v1/account/apiTradingStatus"
ACCOUNT = "/sapi/v1/account/status"


def paths(sim: BinanceSimulator) -> list[str]:
    return [r.path for r in sim.request_log]


async def test_first_round_reads_every_key_before_any_trading_status(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """20 keys, a budget of 24/min, audits four at a time: every key's restrictions are read
    in the first round, within seconds; no restriction read waits behind the trading-status
    reads (3 weight an audit would fit only 7 keys in the minute)."""
    keys = fleet(20)
    sim = sim_for(keys)
    exchanges = {"binance": {"base_url": "https://binance.test", "max_weight_per_minute": 24}}
    app = new_app(apps, write(tmp_path, keys, exchanges=exchanges), sim)
    app.scheduler._concurrency = 4  # audits one after the other, as on a slow exchange
    started = time.monotonic()
    with capture_logs() as logs:
        await app.start(serve_http=False)
        await until(lambda: len(audited(app)) == 20, within=10)
    assert time.monotonic() - started < 5
    assert all(s.last_result is not None and s.last_result.ok for s in app.store.snapshot())
    sent = paths(sim)
    assert sent.count(RESTRICTIONS) == 20
    assert TRADING not in sent  # 21 spent + 2 + 10 % headroom > 24: no spare weight
    assert app.scheduler.first_round_weight("binance") == 0
    skipped = [e for e in logs if e["event"] == "trading_status_skipped"]
    assert len(skipped) == 20
    assert {e["reason"] for e in skipped} == {"budget"}
    assert sim.count_429 == 0


async def test_restriction_reads_fill_the_budget_the_trading_status_is_skipped(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """`interval: auto` on a budget the restriction reads fill: the trading status is never
    read, the keys' trading facts stay unknown (no series, no trading rule, no error series),
    and the restriction findings are all there."""
    keys = fleet(10)
    sim = sim_for(keys)
    sim.update_key(keys[0][1], enableWithdrawals=True)
    sim.set_trading_status(keys[1][1], isLocked=True)
    exchanges = {"binance": {"base_url": "https://binance.test", "max_weight_per_minute": 11}}
    audit = {"interval": "auto", "jitter": "1s", "timeout": "2s"}
    app = new_app(apps, write(tmp_path, keys, exchanges=exchanges, audit=audit), sim)
    await app.start()
    await until(lambda: len(audited(app)) == 10, within=10)
    s = await scrape(app)
    assert value(s, "keymon_key_finding", key="k00", rule="withdraw_enabled") == 1.0
    assert value(s, "keymon_key_audit_ok", key="k01") == 1.0
    assert value(s, "keymon_key_trading_locked") is None
    assert value(s, "keymon_key_account_restricted") is None
    assert value(s, "keymon_key_trading_status_error") is None
    assert value(s, "keymon_key_finding", key="k01", rule="trading_locked") is None
    assert TRADING not in paths(sim)
    assert ACCOUNT not in paths(sim)


async def test_with_room_every_audit_reads_the_trading_status(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """A fixed interval the budget easily holds: every audit, first round included, reads the
    trading lock and the account status with the key's restrictions."""
    keys = fleet(5)
    sim = sim_for(keys)
    audit = {"interval": "2s", "jitter": "200ms", "timeout": "2s"}
    app = new_app(apps, write(tmp_path, keys, audit=audit), sim)
    results: list[Any] = []
    original = app.audit_key

    async def audit_key(name: str) -> Any:
        results.append(await original(name))
        return results[-1]

    app.scheduler._run = audit_key
    await app.start(serve_http=False)
    await until(lambda: len(results) >= 15, within=10)
    for result in results:
        assert result.facts is not None
        assert not result.facts.trading_status_skipped
        assert result.facts.trading_status_error is None
        assert result.facts.trading_locked is False
        assert result.facts.account_status == "Normal"
    assert paths(sim).count(TRADING) >= len(results)


# ----------------------------------------------------------------------------- interval: auto


def binance_keys(count: int, **extra: Any) -> list[dict[str, Any]]:
    return [
        {"name": f"k{i}", "client": "c", "exchange": "binance", "api_key": "k", "api_secret": "s"}
        | extra
        for i in range(count)
    ]


def test_auto_interval_follows_the_budget() -> None:
    """interval = keys * weight per audit / (budget * share): 1,000 keys at 1,200/min, 58.8 s."""
    settings = make_settings(*binance_keys(1000), audit={"interval": "auto"})
    expected = timedelta(minutes=1000 * 1 / (1200 * AUTO_BUDGET_SHARE))
    assert settings.interval_for(settings.keys[0]) == expected
    assert timedelta(seconds=58) < expected < timedelta(seconds=60)
    assert settings.jitter_for(settings.keys[0]) == expected * AUTO_JITTER_SHARE


def test_auto_interval_has_a_floor() -> None:
    """A few keys and a large budget: never more often than the floor (10 s)."""
    settings = make_settings(*binance_keys(3), audit={"interval": "auto"})
    assert settings.interval_for(settings.keys[0]) == AUTO_INTERVAL_FLOOR


def test_auto_interval_per_exchange_weight_and_fixed_keys() -> None:
    """Each exchange's keys share its own budget at its own weight per audit; keys with a
    fixed interval on the same exchange take their share first."""
    gate = [
        {"name": f"g{i}", "client": "c", "exchange": "gate", "api_key": "k", "api_secret": "s"}
        for i in range(300)
    ]
    fixed = binance_keys(200, interval="1m")
    auto = [k | {"name": f"a{i}", "interval": "auto"} for i, k in enumerate(binance_keys(500))]
    settings = make_settings(*gate, *fixed, *auto, policies={"market-maker": {"interval": "auto"}})
    by_name = {key.name: key for key in settings.keys}
    gate_budget = settings.exchanges.for_exchange("gate").max_weight_per_minute
    assert audit_cost(EXCHANGES["gate"], settings.exchanges.for_exchange("gate")) == 2
    assert settings.interval_for(by_name["g0"]) == max(
        AUTO_INTERVAL_FLOOR, timedelta(minutes=300 * 2 / (gate_budget * AUTO_BUDGET_SHARE))
    )
    available = 1200 * AUTO_BUDGET_SHARE - 200  # 200 fixed keys at one audit a minute
    assert settings.interval_for(by_name["a0"]) == timedelta(minutes=500 / available)
    assert settings.interval_for(by_name["k0"]) == timedelta(minutes=1)


def test_audit_cost_is_the_heaviest_call() -> None:
    """Where the weight of one audit comes from: the adapter's own weights."""
    settings = make_settings()
    cost = {
        name: audit_cost(EXCHANGES[name], settings.exchanges.for_exchange(name))
        for name in EXCHANGES
    }
    assert (cost["kucoin"], cost["mexc"], cost["gate"]) == (20, 10, 2)
    assert cost["binance"] == 1


def test_audit_cost_is_the_mandatory_weight() -> None:
    """Binance with its trading-status reads on (the default): the audit's cost, which the
    scheduler grants and `interval: auto` plans with, is apiRestrictions alone (1); the two
    trading-status reads are extras of weight 2, and none with trading_status off."""
    on = make_settings().exchanges.for_exchange("binance")
    off = make_settings(exchanges={"binance": {"trading_status": False}})
    off_section = off.exchanges.for_exchange("binance")
    assert (audit_cost(EXCHANGES["binance"], on), extras_cost(EXCHANGES["binance"], on)) == (1, 2)
    assert audit_cost(EXCHANGES["binance"], off_section) == 1
    assert extras_cost(EXCHANGES["binance"], off_section) == 0
    assert extras_cost(EXCHANGES["gate"], make_settings().exchanges.for_exchange("gate")) == 0


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        ("audit: {interval: auto}\n", None),
        ("policies: {market-maker: {interval: auto}}\n", None),
        ("audit: {interval: auto, jitter: 1m}\n", None),
        ("audit: {interval: automatic}\n", "audit.interval: 'automatic' is not a duration or auto"),
        (
            "policies: {market-maker: {interval: Auto}}\n",
            "policies.market-maker.interval: 'Auto' is not a duration or auto",
        ),
        (
            "keys: [{name: a, client: c, exchange: binance, api_key: k, api_secret: s,"
            " interval: auto}, {name: b, client: c, exchange: binance, api_key: k,"
            " api_secret: s, interval: autp}]\n",
            "keys[1].interval: 'autp' is not a duration or auto",
        ),
    ],
    ids=["audit", "policy", "auto-with-long-jitter", "audit-typo", "policy-typo", "key-typo"],
)
def test_interval_auto_is_accepted_at_every_level(
    tmp_path: Path, yaml_text: str, where: str | None
) -> None:
    """`auto` is valid for audit.interval, a policy's and a key's; anything else near it is
    refused with where it is and what is allowed."""
    key = (
        "keys: [{name: a, client: c, exchange: binance, api_key: k, api_secret: s,"
        " interval: auto}]\n"
    )
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml_text if yaml_text.startswith("keys:") else yaml_text + key)
    if where is None:
        settings = load(path).settings
        assert settings.configured_interval(settings.keys[0]) == "auto"
        assert settings.interval_for(settings.keys[0]) == AUTO_INTERVAL_FLOOR
        return
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert any(p.startswith(where) for p in caught.value.problems), caught.value.problems


def test_key_interval_auto_overrides_a_fixed_policy() -> None:
    settings = Settings(
        keys=[
            {
                "name": "a",
                "client": "c",
                "exchange": "binance",
                "api_key": "k",
                "api_secret": "s",
                "interval": "auto",
            }
        ],
        policies={"market-maker": {"interval": "1h"}},
    )
    assert settings.interval_for(settings.keys[0]) == AUTO_INTERVAL_FLOOR


async def test_auto_interval_gauge_and_reload(
    tmp_path: Path, sim_for: Any, apps: list[App]
) -> None:
    """keymon_key_audit_interval_seconds reports the computed interval; adding a key on the
    exchange makes every auto key's interval longer at reload, and moves its next audit."""
    keys = fleet(3)
    sim = sim_for(keys)
    exchanges = {"binance": {"base_url": "https://binance.test", "max_weight_per_minute": 6}}
    audit = {"interval": "auto", "jitter": "1s", "timeout": "2s"}
    app = new_app(apps, write(tmp_path, keys[:2], exchanges=exchanges, audit=audit), sim)
    await app.start()
    await until(lambda: len(audited(app)) == 2, within=10)
    two = 2 * 60 / (6 * AUTO_BUDGET_SHARE)  # 23.5 s
    s = await scrape(app)
    assert value(s, "keymon_key_audit_interval_seconds", key="k00") == pytest.approx(two)
    due = app.scheduler.due("k00")
    assert due is not None
    assert due <= two

    write(tmp_path, keys, exchanges=exchanges, audit=audit)
    assert await app.reload()
    await until(lambda: len(audited(app)) == 3, within=10)  # the new key: at once
    three = 3 * 60 / (6 * AUTO_BUDGET_SHARE)  # 35.3 s
    s = await scrape(app)
    for name in ("k00", "k01", "k02"):
        assert value(s, "keymon_key_audit_interval_seconds", key=name) == pytest.approx(three)
    due = app.scheduler.due("k00")
    assert due is not None
    assert due <= three
