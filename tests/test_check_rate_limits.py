"""`keymon check` is a good neighbour: the weight budget, 429 Retry-After, 418 bans, bans.json.

The Binance simulator is served for real on 127.0.0.1 with a limit of a few weight per minute
(what the bots on the shared IP left over) and `python -m keymon check` runs as a subprocess,
several times in a row, as cron or a CI gate would. The simulator records when each request
arrived and what it answered, so the tests count its 429 and 418 answers and hold every
request's arrival against the Retry-After of the refusals before it.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from keymon.app import App
from keymon.cli import check
from keymon.config import load
from keymon.simulator.binance import BinanceSimulator
from keymon.simulator.server import SimResponse

KEYMON = [sys.executable, "-m", "keymon"]
SECRET = "rateLimitSecret0123456789"


@dataclass(frozen=True)
class Arrival:
    """One exchange request as the simulator saw it: when (real time), what, and the answer."""

    at: float
    path: str
    status: int
    retry_after: float | None


class RecordingBinance(BinanceSimulator):
    """The Binance simulator, noting the real arrival time and answer of every request."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arrivals: list[Arrival] = []
        self._arrivals_lock = threading.Lock()

    def handle(
        self,
        method: str,
        path: str,
        raw_query: str,
        body: bytes,
        headers: Mapping[str, str],
        client_ip: str,
    ) -> SimResponse:
        at = time.time()
        answer = super().handle(method, path, raw_query, body, headers, client_ip)
        retry = answer.headers.get("Retry-After")
        with self._arrivals_lock:
            self.arrivals.append(Arrival(at, path, answer.status, float(retry) if retry else None))
        return answer

    def count(self, status: int) -> int:
        return sum(1 for a in self.arrivals if a.status == status)


class SimClock:
    """Real time plus an offset the test moves forward, so a minute window ends when wanted.

    The simulator's limits are fixed one-minute windows and its Retry-After runs to the
    window's end; moving its clock to a few seconds before that end keeps every wait short.
    """

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def leave(self, seconds: float) -> None:
        """Jump forward (never back) so the current window has ``seconds`` left: to that
        point of this window, or of the next one when less than that is left of this one
        (a window about to turn would end the test's 429 before the test looks)."""
        remaining = 60 - self() % 60
        self.offset += remaining - seconds if remaining >= seconds else remaining + 60 - seconds


@dataclass
class Run:
    status: int
    report: dict[str, Any]
    stderr: str
    seconds: float

    def reasons(self) -> list[str | None]:
        return [k["error"]["reason"] if k["error"] else None for k in self.report["keys"]]


def write_config(tmp_path: Path, url: str, keys: int, **binance: Any) -> Path:
    # One request per audit (apiRestrictions), so that the tests can count each key's request
    # against the limit; the trading-status reads under a 429 have their own test.
    binance.setdefault("trading_status", False)
    data = {
        "data_dir": str(tmp_path / "data"),
        "exchanges": {"binance": {"base_url": url, **binance}},
        "audit": {"timeout": "5s"},
        "trusted_ips": ["127.0.0.1/32"],
        "keys": [
            {
                "name": f"k{n:02d}",
                "client": "acme",
                "exchange": "binance",
                "api_key": f"rateLimitKey{n:02d}",
                "api_secret": SECRET,
            }
            for n in range(keys)
        ],
    }
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def add_keys(sim: BinanceSimulator, keys: int) -> None:
    for n in range(keys):
        sim.add_key(f"rateLimitKey{n:02d}", hmac_secret=SECRET)


def run_check(config: Path) -> Run:
    """`python -m keymon check --format json`, as cron would run it."""
    started = time.monotonic()
    proc = subprocess.run(
        [*KEYMON, "check", "--config", str(config), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "NO_COLOR": "1"},
    )
    seconds = time.monotonic() - started
    assert "Traceback" not in proc.stderr, proc.stderr
    return Run(proc.returncode, json.loads(proc.stdout), proc.stderr, seconds)


@pytest.fixture
def sim_clock() -> SimClock:
    return SimClock()


@pytest.fixture
def tiny(sim_clock: SimClock) -> Iterator[tuple[RecordingBinance, str]]:
    """A simulator allowing 5 weight a minute per counter (/api and /sapi), served for real;
    more than 5 further requests in a window after a 429 earn a 418 ban."""
    sim = RecordingBinance(clock=sim_clock, sapi_ip_weight_limit=5, api_ip_weight_limit=5)
    with sim.serve_in_thread() as url:
        yield sim, url


def ban_the_ip(bots: httpx.Client) -> list[int]:
    """The bots on the shared IP keep calling past a 429 until the IP is banned (418)."""
    statuses: list[int] = []
    while 418 not in statuses:
        statuses.append(bots.get("/api/v3/time").status_code)
        assert len(statuses) < 50
    return statuses


# ----------------------------------------------------------------------------- tests


@pytest.mark.timeout(180)
def test_repeated_checks_never_earn_a_ban_nor_send_before_retry_after(
    tmp_path: Path, sim_clock: SimClock, tiny: tuple[RecordingBinance, str]
) -> None:
    """Twelve keys, keymon's budget at its default (1,200/min), the IP's limit at 5/min,
    50 ms per answer: six checks in a row meet 429s and earn no 418. A run waits out a short
    Retry-After and then audits its remaining keys, so only requests that met a 429 fail; a
    run started inside a window an earlier run recorded sends nothing. No request arrives
    after a refusal was answered and before its Retry-After has passed."""
    sim, url = tiny
    sim.latency = 0.05
    add_keys(sim, 12)
    config = write_config(tmp_path, url, keys=12)
    runs = []
    for _ in range(6):
        sim_clock.leave(4)  # the simulator's window turns about 4 s after the run starts
        first = len(sim.arrivals)
        run = run_check(config)
        runs.append((run, sim.arrivals[first:]))

    assert sim.count(418) == 0, [run.stderr for run, _ in runs]
    assert sim.count(429) > 0  # the limit was met, so the test says something
    audited, waited, silent = 0, 0, 0
    for run, arrivals in runs:
        reasons = run.reasons()
        assert set(reasons) <= {None, "rate_limited"}, run.report
        assert run.status == (3 if "rate_limited" in reasons else 0)
        if not arrivals:  # inside the window the previous run recorded
            assert reasons == ["rate_limited"] * 12
            silent += 1
            continue
        # Every key reported rate_limited sent its request and met a 429: none gave up
        # unsent, the others waited for the window to turn, then went.
        refused = [a for a in arrivals if a.status == 429 and a.path != "/api/v3/time"]
        assert reasons.count("rate_limited") == len(refused), (run.report, arrivals)
        audited += reasons.count(None)
        if any(
            a.status == 200 and a.at >= r.at + (r.retry_after or 0) - 0.05
            for r in refused
            for a in arrivals
        ):
            waited += 1
    assert audited >= 10
    assert waited >= 1  # some run waited out a Retry-After and then audited its other keys
    assert silent >= 1  # some run started inside a recorded window and sent nothing
    for refusal in (a for a in sim.arrivals if a.status in (418, 429)):
        assert refusal.retry_after is not None
        # Answered after the 50 ms latency; keymon may have sent others before reading it.
        answered = refusal.at + sim.latency + 0.5
        end = refusal.at + refusal.retry_after
        early = [a for a in sim.arrivals if answered < a.at < end - 0.05]
        assert early == [], (refusal, early)


def test_check_inside_a_ban_sends_nothing_and_exits_unknown(
    tmp_path: Path, tiny: tuple[RecordingBinance, str]
) -> None:
    """The bots got the IP banned: the first check sends one request (its clock-sync probe),
    is told 418 and records the ban; the next check sends nothing at all and exits 3 at once,
    every key `banned`, with the ban's end in the message."""
    sim, url = tiny
    add_keys(sim, 6)
    with httpx.Client(base_url=url, timeout=5) as bots:
        ban_the_ip(bots)
    bans_by_bots = sim.count(418)
    config = write_config(tmp_path, url, keys=6)

    before = len(sim.arrivals)
    first = run_check(config)
    assert first.status == 3
    assert first.reasons() == ["banned"] * 6
    assert len(sim.arrivals) - before == 1  # the probe alone met the ban
    bans = json.loads((tmp_path / "data" / "bans.json").read_text())
    until = bans["exchanges"]["binance"]["banned_until"]

    second = run_check(config)
    assert len(sim.arrivals) - before == 1  # nothing more was sent
    assert second.status == 3
    assert second.report["status"] == "unknown"
    assert second.reasons() == ["banned"] * 6
    message = second.report["keys"][0]["error"]["message"]
    assert f"until {until[:19]}Z" in message
    assert "recorded by an earlier keymon run" in message
    assert second.seconds < 15  # no waiting, no network: one look at bans.json
    assert sim.count(418) == bans_by_bots + 1


def test_check_inside_a_recorded_429_window_reports_rate_limited_without_sending(
    tmp_path: Path, sim_clock: SimClock, tiny: tuple[RecordingBinance, str]
) -> None:
    """A check whose last requests met a 429 records its Retry-After; the next check, inside
    that window, sends nothing and reports each key `rate_limited` with the window's end."""
    sim, url = tiny
    add_keys(sim, 4)
    sim_clock.leave(50)  # a long Retry-After ahead, yet within the wait bound
    with httpx.Client(base_url=url, timeout=5) as bots:  # the bots leave 1 of 5 on /sapi
        for _ in range(4):
            assert bots.get("/sapi/v1/system/status").status_code == 200
    config = write_config(tmp_path, url, keys=4)
    first = run_check(config)
    # Four audits at once: one fits, three meet the 429; none was left to wait.
    assert sorted(first.reasons(), key=str) == [
        None,
        "rate_limited",
        "rate_limited",
        "rate_limited",
    ]
    assert first.seconds < 30
    sent = len(sim.arrivals)

    second = run_check(config)
    assert len(sim.arrivals) == sent
    assert second.status == 3
    assert second.reasons() == ["rate_limited"] * 4
    message = second.report["keys"][0]["error"]["message"]
    assert "the exchange answered 429; next slot at " in message
    assert "recorded by an earlier keymon run" in message
    assert sim.count(418) == 0


async def test_a_ban_the_daemon_saw_stops_a_later_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon and `check` share data_dir/bans.json: after the daemon met a 418, a check
    on the same configuration sends nothing and says `banned`."""
    sim = BinanceSimulator(api_ip_weight_limit=1, ban_after_rejected=0)
    add_keys(sim, 3)
    with httpx.Client(transport=sim.sync_transport(), base_url="http://binance.test") as bots:
        ban_the_ip(bots)
    config = write_config(tmp_path, "https://binance.test", keys=3)
    data = yaml.safe_load(config.read_text())
    data["listen"] = "127.0.0.1:0"
    config.write_text(yaml.safe_dump(data))
    app = App(load(config), transport_factory=lambda _n: sim.transport())
    await app.start(serve_http=False, schedule=False)
    try:
        results = await app.audit_all()
    finally:
        await app.stop()
    assert [r.error.reason if r.error else None for r in results] == ["banned"] * 3
    assert (tmp_path / "data" / "bans.json").exists()
    sent = len(sim.request_log)

    status = await asyncio.to_thread(check, config, transport_factory=lambda _n: sim.transport())
    out, _ = capsys.readouterr()
    assert status == 3
    assert out.count("audit failed (banned)") == 3
    assert "recorded by an earlier keymon run" in out
    assert len(sim.request_log) == sent
