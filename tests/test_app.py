"""The daemon: schedule, metrics, health, readiness, reload, budget and shutdown."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from keymon.app import App, phase
from keymon.config import load
from keymon.model import Reason
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import (
    DOC_API_KEY,
    DOC_SECRET,
    SENTINEL,
    SHARED_EXCHANGE_MODULES,
    exchange_modules_after,
    make_settings,
    wait_until,
)

OTHER_KEY, OTHER_SECRET = "otherKey0123456789abcdef", "otherSecret0123456789"
THIRD_KEY, THIRD_SECRET = "thirdKey0123456789abcdef", "thirdSecret0123456789"


def write_config(tmp_path: Path, keys: list[tuple[str, str, str]], **extra: Any) -> Path:
    """A daemon configuration for (name, api_key, secret) triples; secrets in files."""
    entries = []
    for name, api_key, secret in keys:
        secret_file = tmp_path / f"{name}.secret"
        secret_file.write_text(secret + "\n")
        entries.append(
            {
                "name": name,
                "client": "acme",
                "exchange": "binance",
                "api_key": api_key,
                "api_secret": {"file": str(secret_file)},
            }
        )
    config: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "data_dir": str(tmp_path / "data"),
        "exchanges": {"binance": {"base_url": "https://binance.test"}},
        "audit": {"interval": "5m", "jitter": "10s", "timeout": "2s"},
        "keys": entries,
    }
    for section, value in extra.items():
        if isinstance(value, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **value}
        else:
            config[section] = value
    path = tmp_path / "keymon.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


TWO_KEYS = [("doc-key", DOC_API_KEY, DOC_SECRET), ("other-key", OTHER_KEY, OTHER_SECRET)]


@pytest.fixture
def sim2(sim: BinanceSimulator) -> BinanceSimulator:
    """The simulator holding both configured keys."""
    sim.add_key(OTHER_KEY, hmac_secret=OTHER_SECRET)
    sim.add_key(THIRD_KEY, hmac_secret=THIRD_SECRET)
    return sim


AppFactory = Callable[..., "asyncio.Future[App]"]


@pytest.fixture
async def started(tmp_path: Path, sim2: BinanceSimulator) -> AsyncIterator[Callable[..., Any]]:
    """Start an App (HTTP on a free port, no scheduler unless asked) over the simulator."""
    apps: list[App] = []

    async def start(
        keys: list[tuple[str, str, str]] = TWO_KEYS,
        *,
        schedule: bool = False,
        watch_interval: float = 3600,
        **extra: Any,
    ) -> App:
        app = App(
            load(write_config(tmp_path, keys, **extra)),
            transport_factory=lambda _n: sim2.transport(),
            watch_interval=watch_interval,
        )
        apps.append(app)
        await app.start(schedule=schedule)
        return app

    yield start
    for app in apps:
        await app.stop()


async def scrape(app: App) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET /metrics over HTTP and parse it into {(sample, labels): value}."""
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{app.port}/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float | None:
    """The sample whose labels include ``labels`` (None when absent)."""
    for (sample, pairs), v in samples.items():
        if sample == name and set(labels.items()) <= set(pairs):
            return v
    return None


# ----------------------------------------------------------------------------- schedule


def test_phase_is_stable_and_uniform() -> None:
    """A key keeps its place in the interval across restarts; places spread over [0, 1)."""
    assert phase("acme-main") == phase("acme-main")
    values = sorted(phase(f"key-{i}") for i in range(1000))
    assert values[0] >= 0
    assert values[-1] < 1
    assert 0.45 < values[500] < 0.55


# ----------------------------------------------------------------------------- HTTP


async def test_readyz_flips_after_the_first_round(started: Callable[..., Any]) -> None:
    """/readyz is 503 until every key was audited once, then 200; /healthz is 200 throughout."""
    app = await started(schedule=False)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}") as client:
        assert (await client.get("/readyz")).status_code == 503
        await app.audit_key("doc-key")
        assert (await client.get("/readyz")).status_code == 503
        await app.audit_key("other-key")
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ready", "keys": 2}


async def test_healthz_follows_the_scheduler(started: Callable[..., Any]) -> None:
    """/healthz answers 200 while the scheduler runs."""
    app = await started(schedule=True)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.port}") as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_scrapes_never_call_the_exchange(
    started: Callable[..., Any], sim2: BinanceSimulator
) -> None:
    """Twenty scrapes after one audit round add no request at the exchange."""
    app = await started()
    await app.audit_all()
    before = len(sim2.request_log)
    for _ in range(20):
        await scrape(app)
    assert len(sim2.request_log) == before


async def test_metrics_follow_the_contract(
    started: Callable[..., Any], sim2: BinanceSimulator
) -> None:
    """Every per-key family of PRODUCT.md is there with the documented labels and values."""
    sim2.update_key(OTHER_KEY, enableWithdrawals=True, enableFutures=True)
    app = await started()
    await app.audit_all()
    s = await scrape(app)
    info = value(s, "keymon_key_info", key="doc-key")
    assert info == 1.0
    (labels,) = [dict(p) for (n, p) in s if n == "keymon_key_info" and ("key", "doc-key") in p]
    assert labels == {
        "key": "doc-key",
        "client": "acme",
        "exchange": "binance",
        "policy": "market-maker",
        "key_id": "vmPU...Eh8A",
        "coverage": "introspection",
    }
    assert value(s, "keymon_key_permission_enabled", key="other-key", permission="withdraw") == 1
    assert value(s, "keymon_key_permission_enabled", key="doc-key", permission="withdraw") == 0
    assert value(s, "keymon_key_ip_restricted", key="doc-key") == 1
    assert value(s, "keymon_key_untrusted_ips", key="doc-key") is None  # not visible on Binance
    assert value(s, "keymon_key_created_timestamp_seconds", key="doc-key")
    assert (
        value(
            s,
            "keymon_key_finding",
            key="other-key",
            rule="withdraw_enabled",
            severity="critical",
            permission="",
        )
        == 1
    )
    assert (
        value(
            s,
            "keymon_key_finding",
            key="other-key",
            rule="forbidden_permission",
            severity="warning",
            permission="futures_trade",
        )
        == 1
    )
    assert (
        value(s, "keymon_key_finding", key="doc-key", rule="withdraw_enabled", severity="critical")
        == 0
    )
    assert value(s, "keymon_key_finding", key="doc-key", rule="untrusted_ip") is None
    assert value(s, "keymon_key_review_warning_seconds", key="doc-key") == 14 * 86400
    assert value(s, "keymon_key_review_critical_seconds", key="doc-key") == 3 * 86400
    assert value(s, "keymon_key_audit_ok", key="doc-key") == 1
    assert value(s, "keymon_key_last_audit_success_timestamp_seconds", key="doc-key")
    assert value(s, "keymon_build_info") == 1
    assert value(s, "keymon_config_last_reload_success") == 1
    for reason in Reason:
        assert value(s, "keymon_audit_errors_total", exchange="binance", reason=str(reason)) == 0
    for outcome in ("sent", "failed", "retried", "dropped"):
        assert value(s, "keymon_notifications_total", outcome=outcome) == 0
    assert (
        value(
            s,
            "keymon_exchange_requests_total",
            endpoint="/sapi/v1/account/apiRestrictions",
            status="200",
        )
        == 2
    )
    assert value(s, "keymon_exchange_weight_used", exchange="binance") is not None
    assert value(s, "keymon_audit_duration_seconds_count", exchange="binance") == 2


async def test_last_known_facts_survive_a_failed_audit(
    started: Callable[..., Any], sim2: BinanceSimulator, clock: Any
) -> None:
    """After a failure the facts stay, audit_ok drops, the error carries its reason."""
    sim2.update_key(OTHER_KEY, enableWithdrawals=True)
    app = await started()
    await app.audit_all()
    first = await scrape(app)
    sim2.fail_next(10, status=503)
    await app.audit_key("other-key")
    s = await scrape(app)
    assert value(s, "keymon_key_audit_ok", key="other-key") == 0
    assert value(s, "keymon_key_audit_error", key="other-key", reason="exchange_unavailable") == 1
    assert value(s, "keymon_key_permission_enabled", key="other-key", permission="withdraw") == 1
    assert value(s, "keymon_key_finding", key="other-key", rule="withdraw_enabled") == 1
    assert value(s, "keymon_key_last_audit_success_timestamp_seconds", key="other-key") == value(
        first, "keymon_key_last_audit_success_timestamp_seconds", key="other-key"
    )
    assert value(s, "keymon_audit_errors_total", reason="exchange_unavailable") == 1


async def test_changes_are_counted(started: Callable[..., Any], sim2: BinanceSimulator) -> None:
    """A fact that changes between two audits increments keymon_key_changes_total{field}."""
    app = await started()
    await app.audit_all()
    sim2.update_key(DOC_API_KEY, enableWithdrawals=True)
    await app.audit_key("doc-key")
    sim2.delete_key(DOC_API_KEY)
    await app.audit_key("doc-key")
    s = await scrape(app)
    assert value(s, "keymon_key_changes_total", key="doc-key", field="withdraw") == 1
    assert value(s, "keymon_key_changes_total", key="doc-key", field="rejected") == 1
    assert value(s, "keymon_key_finding", key="doc-key", rule="key_rejected") == 1


async def test_fast_rendering_matches_the_collector(
    started: Callable[..., Any], sim2: BinanceSimulator
) -> None:
    """The cached text served on /metrics says exactly what the collector yields."""
    from prometheus_client.exposition import generate_latest

    sim2.update_key(
        OTHER_KEY,
        enableWithdrawals=True,
        ipRestrict=False,
        tradingAuthorityExpirationTime=1_900_000_000_000,
    )
    app = await started()
    await app.audit_all()
    fast = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(app.render_metrics().decode())
        for s in f.samples
        if not s.name.endswith("_created")
    }
    slow = {
        (s.name, tuple(sorted(s.labels.items())), s.value)
        for f in text_string_to_metric_families(generate_latest(app.registry).decode())
        for s in f.samples
        if not s.name.endswith("_created")
    }
    assert fast == slow


async def test_no_secret_or_full_key_in_metrics(tmp_path: Path, sim: BinanceSimulator) -> None:
    """Neither the secret nor the full API key appears anywhere in a scrape."""
    api_key = "KEY" + SENTINEL
    sim.add_key(api_key, hmac_secret=SENTINEL)
    app = App(
        load(write_config(tmp_path, [("s", api_key, SENTINEL)])),
        transport_factory=lambda _n: sim.transport(),
    )
    await app.start(schedule=False)
    try:
        await app.audit_all()
        sim.delete_key(api_key)
        await app.audit_all()
        text = app.render_metrics().decode()
    finally:
        await app.stop()
    assert SENTINEL not in text
    assert api_key[4:-4] not in text
    assert f'key_id="{api_key[:4]}...{api_key[-4:]}"' in text  # only the masked id


# ----------------------------------------------------------------------------- reload


async def test_reload_adds_and_removes_keys(
    started: Callable[..., Any], sim2: BinanceSimulator, tmp_path: Path
) -> None:
    """A reloaded file with one key swapped adds and removes series and jobs, no restart."""
    app = await started(schedule=True)
    await app.audit_all()
    write_config(
        tmp_path, [("doc-key", DOC_API_KEY, DOC_SECRET), ("third-key", THIRD_KEY, THIRD_SECRET)]
    )
    assert await app.reload()
    assert sorted(app.store.names()) == ["doc-key", "third-key"]
    assert not app.scheduler.scheduled("other-key")
    assert app.scheduler.scheduled("third-key")
    await app.audit_key("third-key")
    s = await scrape(app)
    assert value(s, "keymon_key_info", key="other-key") is None
    assert value(s, "keymon_key_audit_ok", key="third-key") == 1
    assert value(s, "keymon_config_last_reload_success") == 1


async def test_invalid_reload_keeps_the_old_configuration(
    started: Callable[..., Any], tmp_path: Path
) -> None:
    """A broken file is refused: reload_success drops to 0, the old keys keep being audited."""
    app = await started(schedule=True)
    (tmp_path / "keymon.yaml").write_text("keys: [{name: x}]\naudit: {interval: 5x}\n")
    assert not await app.reload()
    s = await scrape(app)
    assert value(s, "keymon_config_last_reload_success") == 0
    assert sorted(app.store.names()) == ["doc-key", "other-key"]
    result = await app.audit_key("doc-key")
    assert result is not None
    assert result.ok


async def test_file_change_triggers_reload(started: Callable[..., Any], tmp_path: Path) -> None:
    """Editing the configuration file is noticed by the watcher and applied."""
    app = await started(schedule=True, watch_interval=0.05)
    write_config(tmp_path, [("third-key", THIRD_KEY, THIRD_SECRET)])
    for _ in range(200):  # bounded: 10 s at most
        if list(app.store.names()) == ["third-key"]:
            break
        await asyncio.sleep(0.05)
    assert list(app.store.names()) == ["third-key"]


async def test_budget_holds_against_a_small_exchange_limit(tmp_path: Path, clock: Any) -> None:
    """With the exchange allowing 5/min and keymon 4/min, no 429 or 418 ever comes back."""
    sim = BinanceSimulator(clock=clock, sapi_ip_weight_limit=5, api_ip_weight_limit=5)
    keys = [(f"k{i}", f"key{i}abcdefghijklmnop", f"secret{i}") for i in range(6)]
    for _, api_key, secret in keys:
        sim.add_key(api_key, hmac_secret=secret)
    fake_now = [1000.0]

    async def fake_sleep(seconds: float) -> None:
        fake_now[0] += seconds
        clock.advance(seconds)

    config = write_config(
        tmp_path,
        keys,
        exchanges={"binance": {"base_url": "https://binance.test", "max_weight_per_minute": 4}},
    )
    app = App(
        load(config),
        transport_factory=lambda _n: sim.transport(),
        clock=clock,
        monotonic=lambda: fake_now[0],
        sleep=fake_sleep,
    )
    await app.start(serve_http=False, schedule=False)
    try:
        for _ in range(3):
            results = await app.audit_all()
    finally:
        await app.stop()
    assert sim.count_429 == 0
    assert sim.count_418 == 0
    assert all(r.ok for r in results)
    assert fake_now[0] - 1000.0 >= 3 * 60  # 18 audits + time syncs at 4/min took minutes


# ----------------------------------------------------------------------------- end to end


KEYMON = [sys.executable, "-m", "keymon"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def daemon(tmp_path: Path, sim2: BinanceSimulator, served: str) -> Any:
    """Start `keymon run` as a subprocess against the served simulator (interval 1 s)."""
    procs: list[subprocess.Popen[str]] = []

    def start(keys: list[tuple[str, str, str]] = TWO_KEYS) -> tuple[subprocess.Popen[str], str]:
        port = _free_port()
        config = write_config(
            tmp_path,
            keys,
            listen=f"127.0.0.1:{port}",
            exchanges={"binance": {"base_url": served}},
            audit={"interval": "1s", "jitter": "200ms"},
            log={"format": "json", "level": "debug"},
        )
        proc = subprocess.Popen(
            [*KEYMON, "run", "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _ok(f"{base}/readyz"), timeout=20)
        return proc, base

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _metric(base: str, name: str, **labels: str) -> float | None:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and set(labels.items()) <= set(s.labels.items()):
                return float(s.value)
    return None


def test_change_at_the_exchange_shows_within_an_interval(
    daemon: Any, sim2: BinanceSimulator
) -> None:
    """Withdrawals switched on at the exchange show in /metrics within interval + jitter."""
    _proc, base = daemon()
    labels = {"key": "doc-key", "rule": "withdraw_enabled"}
    assert _metric(base, "keymon_key_finding", **labels) == 0
    sim2.update_key(DOC_API_KEY, enableWithdrawals=True)
    changed = time.monotonic()
    wait_until(lambda: _metric(base, "keymon_key_finding", **labels) == 1, timeout=10)
    # interval 1 s + jitter 0.2 s, plus one audit's round trip and the poll's own step.
    assert time.monotonic() - changed < 1.2 + 0.8


def test_sigterm_stops_cleanly_and_logs_hold_no_secret(
    daemon: Any, tmp_path: Path, sim2: BinanceSimulator
) -> None:
    """SIGTERM: exit 0 within 5 s; the JSON logs name keys but never a secret."""
    proc, base = daemon()
    assert _metric(base, "keymon_key_audit_ok", key="doc-key") == 1
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0
    assert time.monotonic() - started < 5
    assert "audit_completed" in err
    assert "keymon_stopped" in err
    assert "Traceback" not in err
    for secret in (DOC_SECRET, OTHER_SECRET):
        assert secret not in out + err


def test_sighup_reloads(daemon: Any, tmp_path: Path) -> None:
    """SIGHUP re-reads the file: a key added there is audited without a restart."""
    proc, base = daemon()
    config = tmp_path / "keymon.yaml"
    data = yaml.safe_load(config.read_text())
    (tmp_path / "third.secret").write_text(THIRD_SECRET)
    data["keys"].append(
        {
            "name": "third-key",
            "client": "c",
            "exchange": "binance",
            "api_key": THIRD_KEY,
            "api_secret": {"file": str(tmp_path / "third.secret")},
        }
    )
    config.write_text(yaml.safe_dump(data))
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _metric(base, "keymon_key_audit_ok", key="third-key") == 1, timeout=10)


def test_invalid_config_at_start_exits_2(tmp_path: Path) -> None:
    """`keymon run` on a bad file lists the problems and exits 2, no traceback."""
    config = tmp_path / "bad.yaml"
    config.write_text("audit: {interval: soon}\nkeys: []\n")
    proc = subprocess.run(
        [*KEYMON, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "audit.interval" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_taken_port_is_a_message(tmp_path: Path, sim2: BinanceSimulator) -> None:
    """A listen address in use: one line saying so, exit 1."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, TWO_KEYS, listen=f"127.0.0.1:{port}")
        proc = subprocess.run(
            [*KEYMON, "run", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    assert proc.returncode == 1
    assert "cannot start" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(
    shutil.which("promtool") is None and not os.environ.get("CI"),
    reason="promtool not installed (scripts/test installs it)",
)
def test_promtool_accepts_a_real_scrape(daemon: Any, sim2: BinanceSimulator) -> None:
    """`promtool check metrics` finds nothing to say about a real scrape."""
    sim2.update_key(OTHER_KEY, ipRestrict=False, tradingAuthorityExpirationTime=1_900_000_000_000)
    _proc, base = daemon()
    text = httpx.get(f"{base}/metrics", timeout=5).text
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_per_policy_and_per_key_intervals() -> None:
    """A key's own interval wins over its policy's, which wins over audit.interval."""
    keys = [
        {"name": "plain", "client": "c", "exchange": "binance", "api_key": "k", "api_secret": "s"},
        {
            "name": "by-policy",
            "client": "c",
            "exchange": "binance",
            "api_key": "k",
            "api_secret": "s",
            "policy": "watchful",
        },
        {
            "name": "own",
            "client": "c",
            "exchange": "binance",
            "api_key": "k",
            "api_secret": "s",
            "policy": "watchful",
            "interval": "30s",
        },
    ]
    settings = make_settings(*keys, policies={"market-maker": {}, "watchful": {"interval": "1m"}})
    by_name = {key.name: key for key in settings.keys}
    assert settings.interval_for(by_name["plain"]) == timedelta(minutes=5)
    assert settings.interval_for(by_name["by-policy"]) == timedelta(minutes=1)
    assert settings.interval_for(by_name["own"]) == timedelta(seconds=30)


async def test_key_labels_ride_on_the_info_series(tmp_path: Path, sim2: BinanceSimulator) -> None:
    """A key's configured labels appear on keymon_key_info, and only there."""
    config = write_config(tmp_path, TWO_KEYS)
    data = yaml.safe_load(config.read_text())
    data["keys"][0]["labels"] = {"desk": "eu"}
    config.write_text(yaml.safe_dump(data))
    app = App(load(config), transport_factory=lambda _n: sim2.transport())
    await app.start(schedule=False)
    try:
        await app.audit_all()
        s = await scrape(app)
    finally:
        await app.stop()
    assert value(s, "keymon_key_info", key="doc-key", desk="eu") == 1
    assert value(s, "keymon_key_audit_ok", key="doc-key", desk="eu") is None
    assert value(s, "keymon_key_info", key="other-key", desk="eu") is None


async def test_metrics_served_plain_and_gzipped_alike(
    started: Callable[..., Any], sim2: BinanceSimulator
) -> None:
    """A scrape asking for gzip gets a gzip body with the same samples as a plain one."""
    import gzip

    app = await started()
    await app.audit_all()
    url = f"http://127.0.0.1:{app.port}/metrics"
    async with httpx.AsyncClient() as client:
        plain = await client.get(url, headers={"Accept-Encoding": "identity"})
        async with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
            compressed = b"".join([chunk async for chunk in zipped.aiter_raw()])
            encoding = zipped.headers.get("Content-Encoding")
    assert "Content-Encoding" not in plain.headers
    assert encoding == "gzip"
    assert gzip.decompress(compressed) == plain.content
    assert b'keymon_key_audit_ok{key="doc-key"' in plain.content


def test_unusable_data_dir_is_a_message(tmp_path: Path) -> None:
    """A data_dir that cannot hold the state database: one line saying so, exit 1."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the data directory should be")
    config = write_config(tmp_path, TWO_KEYS, data_dir=str(blocker / "data"))
    proc = subprocess.run(
        [*KEYMON, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1
    assert "cannot start: data_dir" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_streamed_scrape_is_whole_across_chunks(
    tmp_path: Path, sim2: BinanceSimulator
) -> None:
    """A scrape streamed in many small chunks (two keys each), plain and gzipped, parses to
    exactly the series the collector computes afresh: every key's, non-ASCII label values
    intact, each key under its own policy."""
    import gzip

    from prometheus_client.exposition import generate_latest

    keys = [*TWO_KEYS, ("third-key", THIRD_KEY, THIRD_SECRET)]
    strict = {"require": [], "forbid": {"spot_trade": "critical"}}
    path = write_config(tmp_path, keys, policies={"market-maker": {}, "strict": strict})
    data = yaml.safe_load(path.read_text())
    data["keys"][0]["client"] = "Zürich désk"
    data["keys"][0]["labels"] = {"desk": "Zürich — ☃"}
    data["keys"][1]["policy"] = "strict"
    data["keys"][2]["labels"] = {"note": "a\x00b"}  # the cache's own mark character
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    app = App(load(path), transport_factory=lambda _n: sim2.transport())
    await app.start(schedule=False)
    try:
        await app.audit_all()
        app.collector.chunk_keys = 2
        url = f"http://127.0.0.1:{app.port}/metrics"
        async with httpx.AsyncClient() as client:
            plain = await client.get(url, headers={"Accept-Encoding": "identity"})
            async with client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as zipped:
                compressed = b"".join([chunk async for chunk in zipped.aiter_raw()])
        afresh = generate_latest(app.registry).decode()
    finally:
        await app.stop()
    assert gzip.decompress(compressed) == plain.content

    def samples(text: str) -> set[tuple[str, tuple[tuple[str, str], ...], float]]:
        return {
            (s.name, tuple(sorted(s.labels.items())), s.value)
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if not s.name.endswith("_created")
        }

    assert samples(plain.text) == samples(afresh)
    families = [f.name for f in text_string_to_metric_families(plain.text)]
    assert len(families) == len(set(families))  # each family once, its keys' lines together
    s = parse_exposition(plain.text)
    assert value(s, "keymon_key_info", key="doc-key", client="Zürich désk", desk="Zürich — ☃")
    assert value(s, "keymon_key_info", key="third-key", note="a\x00b")
    audited = {dict(labels)["key"] for (name, labels) in s if name == "keymon_key_audit_ok"}
    assert audited == {"doc-key", "other-key", "third-key"}
    spot = {"rule": "forbidden_permission", "permission": "spot_trade"}
    assert value(s, "keymon_key_finding", key="other-key", severity="critical", **spot) == 1
    assert value(s, "keymon_key_finding", key="doc-key", **spot) is None
    assert value(s, "keymon_key_finding", key="third-key", **spot) is None


def parse_exposition(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The exposition text parsed into {(sample, labels): value}, as :func:`scrape` does."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_daemon_of_one_exchange_imports_only_its_adapter(tmp_path: Path) -> None:
    """A daemon whose keys are all Binance's builds Binance's adapter and no other (in a fresh
    interpreter, as ``keymon run`` starts): the other 16 exchanges' modules and models are never
    imported, which spares their start-up CPU and memory."""
    config = write_config(tmp_path, [("doc-key", DOC_API_KEY, DOC_SECRET)])
    script = "from keymon.app import App\nfrom keymon.config import load\nApp(load(sys.argv[1]))\n"
    (modules,) = exchange_modules_after(script, str(config))
    assert modules.split() == sorted([*SHARED_EXCHANGE_MODULES, "keymon.exchanges.binance"])
