"""The weight budget: keymon's own share, the IP's load, 429 Retry-After and 418 bans."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from keymon.budget import WINDOW, ExchangeLimits, WeightBudget
from keymon.errors import ExchangeRateLimited
from keymon.model import Reason
from tests.conftest import FakeClock

SAPI = "X-SAPI-USED-IP-WEIGHT-1M"


class FakeTime:
    """A monotonic clock whose sleep advances it: waiting costs no real time."""

    def __init__(self, wall: FakeClock) -> None:
        self.now = 1000.0
        self.wall = wall
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        self.wall.advance(seconds)


@pytest.fixture
def fake(clock: FakeClock) -> FakeTime:
    """Monotonic time and sleep, tied to the wall clock fixture."""
    return FakeTime(clock)


def budget(fake: FakeTime, clock: FakeClock, per_minute: int = 10, **kw: float) -> WeightBudget:
    limits = {"binance": ExchangeLimits(per_minute, {SAPI: 12_000})}
    return WeightBudget(limits, clock=clock, monotonic=fake, sleep=fake.sleep, **kw)


def response(status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers)


async def test_never_more_than_the_budget_in_any_minute(fake: FakeTime, clock: FakeClock) -> None:
    """Spending 35 weight with a budget of 10/min takes 3 windows; no 60 s holds more than 10."""
    gate = budget(fake, clock, per_minute=10, max_wait=120)
    sent: list[float] = []
    for _ in range(35):
        await gate.acquire("binance", 1)
        sent.append(fake.now)
    for start in sent:
        assert sum(1 for t in sent if start <= t < start + WINDOW) <= 10
    assert sent[-1] - sent[0] >= 3 * WINDOW - 1e-9


async def test_retry_after_is_honoured(fake: FakeTime, clock: FakeClock) -> None:
    """After a 429 with Retry-After: 30, nothing is sent for 30 s."""
    gate = budget(fake, clock, per_minute=100)
    await gate.acquire("binance", 1)
    gate.observe("binance", response(429, **{"Retry-After": "30"}))
    blocked_at = fake.now
    await gate.acquire("binance", 1)
    assert fake.now - blocked_at == pytest.approx(30)
    assert gate.stats("binance")["count_429"] == 1


async def test_long_retry_after_fails_fast(fake: FakeTime, clock: FakeClock) -> None:
    """A wait longer than max_wait is a rate_limited failure now, not a queued request."""
    gate = budget(fake, clock, per_minute=100, max_wait=10)
    gate.observe("binance", response(429, **{"Retry-After": "45"}))
    with pytest.raises(ExchangeRateLimited) as exc:
        await gate.acquire("binance", 1)
    assert exc.value.reason is Reason.RATE_LIMITED
    assert exc.value.retry_after == pytest.approx(45)
    assert fake.slept == []


async def test_nothing_is_sent_during_a_ban(fake: FakeTime, clock: FakeClock) -> None:
    """While a 418 ban lasts every request fails at once with reason banned; then resumes."""
    gate = budget(fake, clock, per_minute=100)
    gate.observe("binance", response(418, **{"Retry-After": "120"}))
    for _ in range(5):
        with pytest.raises(ExchangeRateLimited) as exc:
            await gate.acquire("binance", 1)
        assert exc.value.reason is Reason.BANNED
        fake.now += 20
        clock.advance(20)
    assert gate.banned("binance")
    fake.now += 21
    await gate.acquire("binance", 1)
    assert not gate.banned("binance")
    assert gate.stats("binance")["weight_sent"] == 1


async def test_busy_ip_pauses_until_the_minute_turns(fake: FakeTime, clock: FakeClock) -> None:
    """When the IP (bots included) has used 80 % of its limit, keymon waits for the next minute."""
    clock.now = 60 * 29_916_667 + 20.0  # 20 s into a minute window
    gate = budget(fake, clock, per_minute=100)
    gate.observe("binance", response(200, **{SAPI: "9700"}))
    before = fake.now
    await gate.acquire("binance", 1)
    assert fake.now - before == pytest.approx(40)


async def test_quiet_ip_does_not_pause(fake: FakeTime, clock: FakeClock) -> None:
    """A low used-weight header changes nothing."""
    gate = budget(fake, clock, per_minute=100)
    gate.observe("binance", response(200, **{SAPI: "120"}))
    await gate.acquire("binance", 1)
    assert fake.slept == []


async def test_waiters_are_served_in_order(fake: FakeTime, clock: FakeClock) -> None:
    """Concurrent requests queue fairly and all get through within the budget."""
    gate = budget(fake, clock, per_minute=5, max_wait=120)
    order: list[int] = []

    async def one(i: int) -> None:
        await gate.acquire("binance", 1)
        order.append(i)

    await asyncio.gather(*(one(i) for i in range(12)))
    assert order == list(range(12))
    assert gate.stats("binance")["weight_sent"] == 12


async def test_unknown_exchange_is_not_limited(fake: FakeTime, clock: FakeClock) -> None:
    """An exchange without limits passes straight through."""
    gate = budget(fake, clock)
    await gate.acquire("elsewhere", 1000)
    gate.observe("elsewhere", response(418))
    assert fake.slept == []


async def test_two_request_audits_complete_under_a_tight_budget(clock: FakeClock) -> None:
    """Gate audits take two requests. Under a budget of 10 a minute and twenty keys audited at
    once, five audits complete and fifteen wait their turn (rate_limited); none is left half
    done, its first request spent and its second starved, as granting per request did."""
    from keymon.audit import Auditor
    from keymon.config import Settings
    from keymon.simulator.gate import GateSimulator

    sim = GateSimulator(clock=clock)
    sim.latency = 0.01  # every audit's first request is out before any answer comes back
    keys = []
    for n in range(20):
        api_key = f"gateBudgetKey{n:04d}"
        sim.add_key(api_key, "gateBudgetSecret")
        keys.append(
            {
                "name": f"g{n}",
                "client": "acme",
                "exchange": "gate",
                "api_key": api_key,
                "api_secret": "gateBudgetSecret",
            }
        )
    settings = Settings(keys=keys, trusted_ips=["127.0.0.1/32"])
    fake = FakeTime(clock)
    gate = WeightBudget(
        {"gate": ExchangeLimits(10)}, clock=clock, monotonic=fake, sleep=fake.sleep, max_wait=5
    )
    async with Auditor(
        settings, transport_factory=lambda _n: sim.transport(), clock=clock, gate=gate
    ) as auditor:
        # The clock sync is not part of an audit's grant: measure it before the round.
        await auditor.adapters["gate"].sync_time()  # type: ignore[attr-defined]
        results = await auditor.audit_all(settings.keys, concurrency=20)
    outcomes = [r.error.reason if r.error else "ok" for r in results]
    assert outcomes.count("ok") == 4  # the sync spent 1 of the 10: 9 // 2 whole audits
    assert outcomes.count(Reason.RATE_LIMITED) == 16
    assert gate.stats("gate")["weight_sent"] == 9
