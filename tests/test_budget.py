"""The weight budget: keymon's own share, the IP's load, 429 Retry-After and 418 bans."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from keymon.budget import (
    BAN_FILE_POLL,
    WINDOW,
    BanFile,
    ExchangeLimits,
    RecordedBlock,
    SparePlan,
    WeightBudget,
)
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


def budget(fake: FakeTime, clock: FakeClock, per_minute: int = 10, **kw: Any) -> WeightBudget:
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


# ----------------------------------------------------------------------------- extras


async def test_extras_are_granted_only_from_spare_weight(fake: FakeTime, clock: FakeClock) -> None:
    """In the daemon, optional reads are granted at once or not at all: never while the grant
    would eat into the 10 % headroom or the first round's weight still to come, never by
    waiting; granted, their own requests do not pay twice."""
    gate = budget(fake, clock, per_minute=24)
    pending = {"binance": 10}
    gate.spare_extras_for(lambda exchange: pending.get(exchange, 0), lambda _exchange: SparePlan())
    assert gate.try_grant("binance", 10) == 0.0
    # 10 spent + 2 + 2.4 headroom + 10 still to come in the first round > 24: skipped.
    async with gate.extras("binance", 2) as granted:
        assert granted is False
    assert gate.stats("binance")["weight_sent"] == 10
    assert fake.slept == []
    pending["binance"] = 0
    async with gate.extras("binance", 2) as granted:
        assert granted is True
        await gate.acquire("binance", 1)  # the extras' requests: paid by the grant
        await gate.acquire("binance", 1)
    assert gate.stats("binance")["weight_sent"] == 12
    assert gate.try_grant("binance", 9) == 0.0  # 21 spent: 21 + 2 + 2.4 > 24
    async with gate.extras("binance", 2) as granted:
        assert granted is False
    assert fake.slept == []


async def test_extras_stay_within_the_share_the_planned_restriction_reads_leave(
    fake: FakeTime, clock: FakeClock
) -> None:
    """1,200/min with 1,020/min of restriction reads planned (1,000 keys on `auto`): in an
    empty window the extras still get only the spare 60 weight a minute (1,200 less 10 % less
    1,020), so a minute later the restriction reads find their weight."""
    gate = budget(fake, clock, per_minute=1200)
    gate.spare_extras_for(lambda _exchange: 0, lambda _exchange: SparePlan(1020.0, 1000, 2040.0))
    granted = 0
    for _ in range(100):
        async with gate.extras("binance", 2) as ok:
            granted += ok
        fake.now += 0.1
    assert granted == 30
    fake.now += WINDOW
    async with gate.extras("binance", 2) as ok:
        assert ok is True


async def test_the_spare_share_goes_round_the_keys(fake: FakeTime, clock: FakeClock) -> None:
    """Four keys, a spare share of 4 weight a minute (2 extras of weight 2): a key whose
    extras were granted is skipped until most of a round (4 keys x 2 / 4 = 2 min) has
    passed, so a key that asks right after the window frees does not take every grant."""
    gate = budget(fake, clock, per_minute=100)
    gate.spare_extras_for(lambda _exchange: 0, lambda _exchange: SparePlan(86.0, 4, 20.0))
    order = []
    for _ in range(8):  # a minute apart: each time the share has room again
        for key in ("a", "b", "c", "d"):
            async with gate.extras("binance", 2, key) as ok:
                if ok:
                    order.append(key)
        fake.now += WINDOW
    assert order[:4] == ["a", "b", "c", "d"]
    assert {order.count(key) for key in "abcd"} == {order.count("a")}  # evenly


async def test_extras_are_part_of_the_audit_outside_the_daemon(
    fake: FakeTime, clock: FakeClock
) -> None:
    """Without spare_extras_for (keymon check) the optional reads are always sent and paid
    like any request, waiting for the budget if need be."""
    gate = budget(fake, clock, per_minute=4, max_wait=120)
    assert gate.spare_extras is False
    assert gate.try_grant("binance", 3) == 0.0
    async with gate.extras("binance", 2) as granted:
        assert granted is True
        await gate.acquire("binance", 1)
        await gate.acquire("binance", 1)  # waits for the window
    assert fake.slept != []
    assert gate.stats("binance")["weight_sent"] == 5


async def test_no_extras_during_a_block(fake: FakeTime, clock: FakeClock) -> None:
    """While a 429 window lasts the extras are skipped at once, whatever the budget."""
    gate = budget(fake, clock, per_minute=1000)
    gate.spare_extras_for(lambda _exchange: 0, lambda _exchange: SparePlan())
    gate.observe("binance", response(429, **{"Retry-After": "30"}))
    assert gate.try_extra("binance", 2, keep_free=0) is False
    fake.now += 31
    assert gate.try_extra("binance", 2, keep_free=0) is True


# ----------------------------------------------------------------------------- the ban file


def utc(unix: float) -> str:
    return datetime.fromtimestamp(unix, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def read_bans(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


async def test_a_ban_is_recorded_and_stops_the_next_process_at_once(
    fake: FakeTime, clock: FakeClock, tmp_path: Path
) -> None:
    """A 418 seen by one process is in data_dir/bans.json; a later process sends nothing and
    says until when, and where it learned it."""
    path = tmp_path / "data" / "bans.json"  # data_dir does not exist yet: it is created
    first = budget(fake, clock, ban_file=BanFile(path))
    first.observe("binance", response(418, **{"Retry-After": "120"}))
    assert read_bans(path) == {
        "version": 1,
        "exchanges": {
            "binance": {
                "banned_until": utc(clock() + 120).replace("Z", ".000Z"),
                "rate_limited_until": None,
            }
        },
    }
    fake.now += 30  # a later run, 30 s on
    clock.advance(30)
    second = budget(fake, clock, ban_file=BanFile(path), wait_for_recorded=False)
    with pytest.raises(ExchangeRateLimited) as exc:
        await second.acquire("binance", 1)
    assert exc.value.reason is Reason.BANNED
    assert exc.value.retry_after == pytest.approx(90)
    assert exc.value.message == (
        f"binance: not sent: the exchange banned this IP (418) until {utc(clock() + 90)} "
        f"(another 90 s); recorded by an earlier keymon run in {path}"
    )
    assert fake.slept == []
    assert second.stats("binance")["weight_sent"] == 0
    fake.now += 91
    clock.advance(91)
    await second.acquire("binance", 1)  # the ban is over


async def test_a_recorded_429_fails_a_check_at_once_and_the_daemon_waits(
    fake: FakeTime, clock: FakeClock, tmp_path: Path
) -> None:
    """Another process's 429 window: `check` (wait_for_recorded=False) reports rate_limited
    without sending or waiting; the daemon waits it out like its own."""
    path = tmp_path / "bans.json"
    budget(fake, clock, ban_file=BanFile(path)).observe(
        "binance", response(429, **{"Retry-After": "30"})
    )
    check = budget(fake, clock, ban_file=BanFile(path), wait_for_recorded=False)
    with pytest.raises(ExchangeRateLimited) as exc:
        await check.acquire("binance", 1)
    assert exc.value.reason is Reason.RATE_LIMITED
    assert f"next slot at {utc(clock() + 30)} (in 30 s)" in exc.value.message
    assert "recorded by an earlier keymon run" in exc.value.message
    assert fake.slept == []
    daemon = budget(fake, clock, ban_file=BanFile(path))
    started = fake.now
    await daemon.acquire("binance", 1)
    assert fake.now - started == pytest.approx(30)


async def test_own_429_is_waited_out_by_check(
    fake: FakeTime, clock: FakeClock, tmp_path: Path
) -> None:
    """A check's own short 429 is waited for (re-reading its own write is no news)."""
    gate = budget(fake, clock, ban_file=BanFile(tmp_path / "bans.json"), wait_for_recorded=False)
    await gate.acquire("binance", 1)
    gate.observe("binance", response(429, **{"Retry-After": "20"}))
    fake.now += BAN_FILE_POLL  # past the next look at the file
    clock.advance(BAN_FILE_POLL)
    before = fake.now
    await gate.acquire("binance", 1)
    assert fake.now - before == pytest.approx(20 - BAN_FILE_POLL)


async def test_a_running_process_learns_a_ban_recorded_later(
    fake: FakeTime, clock: FakeClock, tmp_path: Path
) -> None:
    """The daemon, already running, stops when a check records a ban (it polls the file)."""
    path = tmp_path / "bans.json"
    daemon = budget(fake, clock, ban_file=BanFile(path))
    await daemon.acquire("binance", 1)
    budget(fake, clock, ban_file=BanFile(path)).observe(
        "binance", response(418, **{"Retry-After": "300"})
    )
    fake.now += BAN_FILE_POLL
    clock.advance(BAN_FILE_POLL)
    with pytest.raises(ExchangeRateLimited) as exc:
        await daemon.acquire("binance", 1)
    assert exc.value.reason is Reason.BANNED


async def test_entries_merge_and_past_ends_are_dropped(
    fake: FakeTime, clock: FakeClock, tmp_path: Path
) -> None:
    """Writers merge (the later end wins); ends already past leave the file."""
    path = tmp_path / "bans.json"
    gate = budget(fake, clock, ban_file=BanFile(path))
    gate.observe("binance", response(429, **{"Retry-After": "10"}))
    other = BanFile(path)  # a second process on the same data_dir
    other.record("gate", RecordedBlock(banned_until=clock() + 600), now=clock())
    other.record("binance", RecordedBlock(rate_limited_until=clock() + 5), now=clock())
    bans = read_bans(path)["exchanges"]
    assert set(bans) == {"binance", "gate"}
    assert bans["binance"]["rate_limited_until"] == utc(clock() + 10).replace("Z", ".000Z")
    clock.advance(20)
    other.record("gate", RecordedBlock(rate_limited_until=clock() + 1), now=clock())
    assert set(read_bans(path)["exchanges"]) == {"gate"}


@pytest.mark.parametrize(
    "content",
    [b"{not json", b"[]", b'{"exchanges": {"binance": {"banned_until": 12}}}', b"\xff\xfe"],
    ids=["not-json", "not-object", "not-a-time", "not-utf8"],
)
async def test_a_corrupt_ban_file_is_a_warning_and_no_ban(
    fake: FakeTime, clock: FakeClock, tmp_path: Path, content: bytes
) -> None:
    """Unreadable: one warning, treated as no ban; the next ban recorded replaces it."""
    path = tmp_path / "bans.json"
    path.write_bytes(content)
    with capture_logs() as logs:
        gate = budget(fake, clock, ban_file=BanFile(path), wait_for_recorded=False)
        await gate.acquire("binance", 1)
    assert [e["event"] for e in logs] == ["ban_file_unreadable"]
    assert logs[0]["log_level"] == "warning"
    gate.observe("binance", response(418, **{"Retry-After": "60"}))
    assert read_bans(path)["exchanges"]["binance"]["banned_until"]


async def test_an_unwritable_data_dir_still_honours_the_ban(
    fake: FakeTime, clock: FakeClock, tmp_path: Path
) -> None:
    """data_dir cannot be created (a file is in the way): one warning; the ban holds here."""
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")
    with capture_logs() as logs:
        gate = budget(fake, clock, ban_file=BanFile(blocker / "bans.json"))
        gate.observe("binance", response(418, **{"Retry-After": "60"}))
        gate.observe("binance", response(418, **{"Retry-After": "60"}))
        with pytest.raises(ExchangeRateLimited) as exc:
            await gate.acquire("binance", 1)
    assert exc.value.reason is Reason.BANNED
    assert "recorded by" not in exc.value.message  # seen by this process itself
    warnings = [e for e in logs if e["event"] == "ban_file_unwritable"]
    assert len(warnings) == 1  # said once, not at every answer


async def test_a_ban_file_for_unknown_exchanges_or_past_ends_changes_nothing(
    fake: FakeTime, clock: FakeClock, tmp_path: Path
) -> None:
    """Entries of exchanges keymon does not budget, or already over, are ignored."""
    path = tmp_path / "bans.json"
    past = utc(clock() - 5)
    path.write_text(
        json.dumps(
            {
                "version": 1,
                "exchanges": {
                    "binance": {"banned_until": past, "rate_limited_until": past},
                    "elsewhere": {"banned_until": utc(clock() + 600)},
                },
            }
        )
    )
    gate = budget(fake, clock, ban_file=BanFile(path), wait_for_recorded=False)
    await gate.acquire("binance", 1)
    assert fake.slept == []


async def test_check_runs_at_most_four_audits_per_exchange_at_once(clock: FakeClock) -> None:
    """audit_all(per_exchange=4): never more than four Binance requests on the wire, so a
    429 finds at most three more already under way."""
    from keymon.audit import CHECK_PER_EXCHANGE_CONCURRENCY, Auditor
    from keymon.simulator.binance import BinanceSimulator
    from tests.conftest import key_entry, make_settings

    sim = BinanceSimulator(clock=clock)
    sim.latency = 0.01
    entries = []
    for n in range(12):
        sim.add_key(f"inflightKey{n:02d}", hmac_secret="inflightSecret")
        entries.append(key_entry(f"k{n}", f"inflightKey{n:02d}", "inflightSecret"))
    settings = make_settings(*entries)
    in_flight, peak = 0, 0

    class Counting(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self._inner = sim.transport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            nonlocal in_flight, peak
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                return await self._inner.handle_async_request(request)
            finally:
                in_flight -= 1

    async with Auditor(settings, transport_factory=lambda _n: Counting(), clock=clock) as auditor:
        results = await auditor.audit_all(
            settings.keys, per_exchange=CHECK_PER_EXCHANGE_CONCURRENCY
        )
    assert all(r.ok for r in results)
    assert peak == CHECK_PER_EXCHANGE_CONCURRENCY == 4


async def test_the_scheduler_is_granted_whole_audits_and_told_how_long_to_wait(
    fake: FakeTime, clock: FakeClock
) -> None:
    """try_grant: granted while the budget has room (and the grant pays the audit's requests),
    the wait while it has none; a ban or a block beyond max_wait: sent ungranted, to fail."""
    gate = budget(fake, clock, per_minute=4, max_wait=30)
    assert [gate.try_grant("binance", 2) for _ in range(2)] == [0.0, 0.0]
    assert gate.try_grant("binance", 1) == pytest.approx(WINDOW)
    with WeightBudget.prepaid("binance", 2):
        async with gate.audit_scope("binance", 2):  # already granted: no second charge
            await gate.acquire("binance", 1)
            await gate.acquire("binance", 1)
    assert fake.slept == []
    assert gate.stats("binance")["weight_sent"] == 4

    fake.now += WINDOW
    gate.observe("binance", response(429, **{"Retry-After": "10"}))
    assert gate.try_grant("binance", 1) == pytest.approx(10)  # short: the lane waits
    gate.observe("binance", response(429, **{"Retry-After": "300"}))
    assert gate.try_grant("binance", 1) is None  # longer than max_wait: fails at once
    fake.now += 301
    gate.observe("binance", response(418, **{"Retry-After": "120"}))
    assert gate.try_grant("binance", 1) is None
    with pytest.raises(ExchangeRateLimited) as banned:
        await gate.acquire("binance", 1)
    assert banned.value.reason is Reason.BANNED
