"""The HTX simulator, checked against exchange-apis.md §2.15 (not against keymon's adapter)."""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from keymon.simulator.htx import HtxSimulator, presign, sign
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
UID = "123456"


@pytest.fixture
def htx(clock: FakeClock) -> HtxSimulator:
    sim = HtxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, UID, ips=["127.0.0.1"])
    return sim


def _stamp(now: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))


def request(
    sim: HtxSimulator,
    clock: FakeClock,
    *,
    secret: str = SECRET,
    key: str = KEY,
    offset: float = 0,
    client_ip: str = "127.0.0.1",
    extra: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """A signed ``GET /v2/user/api-key`` through the simulator's handler."""
    params = {
        "AccessKeyId": key,
        "SignatureMethod": "HmacSHA256",
        "SignatureVersion": "2",
        "Timestamp": _stamp(clock.now + offset),
        "uid": UID,
        "accessKey": key,
        **(extra or {}),
    }
    signature = sign(secret, presign("GET", "api.huobi.pro", "/v2/user/api-key", params))
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    query += f"&Signature={quote(signature, safe='')}"
    response = sim.handle(
        "GET", "/v2/user/api-key", query, b"", {"Host": "api.huobi.pro"}, client_ip
    )
    return response.status, json.loads(response.body) if response.body else None


def test_derived_signature_vector() -> None:
    """exchange-apis.md §2.15's derived vector."""
    params = {
        "AccessKeyId": "testkey",
        "SignatureMethod": "HmacSHA256",
        "SignatureVersion": "2",
        "Timestamp": "2023-11-14T22:13:20",
        "uid": "123456",
    }
    text = presign("GET", "api.huobi.pro", "/v2/user/api-key", params)
    assert text.endswith("Timestamp=2023-11-14T22%3A13%3A20&uid=123456")
    assert sign("testsecret", text) == "VO2docXQYWc2Y4JphocNFMmS6RZwXWxWAswXH3ZLWlQ="


def test_valid_request_lists_the_key(htx: HtxSimulator, clock: FakeClock) -> None:
    """A valid request answers the key with comma strings for permission and ipAddresses."""
    status, body = request(htx, clock)
    assert status == 200
    assert body["code"] == 200
    (entry,) = body["data"]
    assert entry["accessKey"] == KEY
    assert entry["permission"] == "readOnly,trade"
    assert entry["ipAddresses"] == "127.0.0.1"
    assert {"validDays", "status", "createTime", "updateTime", "note"} <= set(entry)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"secret": "wrong"}, "Verification failure"),
        ({"key": "unknown"}, "Incorrect Access key"),
        ({"offset": 3600}, "Timestamp"),
        ({"client_ip": "10.0.0.1"}, "IP"),
    ],
)
def test_refusals_are_api_signature_not_valid(
    htx: HtxSimulator, clock: FakeClock, kwargs: dict[str, Any], fragment: str
) -> None:
    """Every refusal is the v1-style api-signature-not-valid (the one code the doc names)."""
    status, body = request(htx, clock, **kwargs)
    assert status == 200
    assert body["status"] == "error"
    assert body["err-code"] == "api-signature-not-valid"
    assert fragment in body["err-msg"]


def test_deleted_key_is_refused(htx: HtxSimulator, clock: FakeClock) -> None:
    """A deleted key is refused."""
    htx.delete_key(KEY)
    assert request(htx, clock)[1]["err-code"] == "api-signature-not-valid"


def test_rate_limit(htx: HtxSimulator, clock: FakeClock) -> None:
    """Past the per-second limit: HTTP 429; the next second is fresh."""
    htx.set_limit(1)
    assert request(htx, clock)[0] == 200
    assert request(htx, clock)[0] == 429
    assert htx.count_429 == 1
    clock.now += 1
    assert request(htx, clock)[0] == 200


def test_faults(htx: HtxSimulator, clock: FakeClock) -> None:
    """fail_next answers an HTML error; truncate_next cuts the body."""
    htx.fail_next(1, 502)
    response = htx.handle("GET", "/v2/user/api-key", "", b"", {}, "127.0.0.1")
    assert response.status == 502
    htx.truncate_next(1)
    with pytest.raises(json.JSONDecodeError):
        request(htx, clock)


async def test_served_over_http(htx: HtxSimulator, clock: FakeClock) -> None:
    """The simulator answers a real HTTP request (404 off its one path)."""
    with htx.serve_in_thread() as url:
        async with httpx.AsyncClient(base_url=url) as client:
            response = await client.get("/nothing")
    assert response.status_code == 404


def test_latency_is_the_answer_delay(htx: HtxSimulator, clock: FakeClock) -> None:
    """Every answer, failed ones included, carries the injected latency as its delay."""
    assert htx.handle("GET", "/v2/user/api-key", "", b"", {}, "127.0.0.1").delay == 0
    htx.latency = 0.25
    assert htx.latency == 0.25
    assert htx.handle("GET", "/v2/user/api-key", "", b"", {}, "127.0.0.1").delay == 0.25
    htx.fail_next(1, 502)
    failed = htx.handle("GET", "/v2/user/api-key", "", b"", {}, "127.0.0.1")
    assert (failed.status, failed.delay) == (502, 0.25)
    with pytest.raises(ValueError, match="latency"):
        htx.latency = float("nan")


async def test_latency_delays_the_transport(htx: HtxSimulator) -> None:
    """The in-process transport waits out the latency before answering."""
    htx.latency = 0.2
    async with httpx.AsyncClient(transport=htx.transport(), base_url="http://htx.test") as c:
        started = time.monotonic()
        response = await c.get("/nothing")
        elapsed = time.monotonic() - started
    assert response.status_code == 404
    assert elapsed >= 0.2


@pytest.mark.parametrize("skew_ms", [600_000, -600_000])
def test_skew_shifts_server_time_and_refuses_local_stamps(
    htx: HtxSimulator, clock: FakeClock, skew_ms: int
) -> None:
    """With the server clock 10 min off, a Timestamp from the local clock is outside the
    5-minute window: api-signature-not-valid, "Timestamp expired"; one from the server's
    time passes."""
    assert request(htx, clock)[0] == 200
    htx.clock_skew_ms = skew_ms
    assert htx.clock_skew_ms == skew_ms
    assert htx.server_time_ms() == round(clock.now * 1000) + skew_ms
    status, body = request(htx, clock)
    assert status == 200
    assert body["err-code"] == "api-signature-not-valid"
    assert body["err-msg"] == "Signature not valid: Timestamp expired"
    status, body = request(htx, clock, offset=skew_ms / 1000)
    assert (status, body["code"]) == (200, 200)


def test_fault_knobs_validate_their_arguments(htx: HtxSimulator) -> None:
    """The shared knobs refuse nonsense (the old HTX copies took anything)."""
    with pytest.raises(ValueError, match="fail_next"):
        htx.fail_next(-1)
    with pytest.raises(ValueError, match="fail_next"):
        htx.fail_next(1, 600)
    with pytest.raises(ValueError, match="truncate_next"):
        htx.truncate_next(-1)
