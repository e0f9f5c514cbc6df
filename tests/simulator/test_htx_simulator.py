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
    path: str = "/v2/user/api-key",
) -> tuple[int, Any]:
    """A signed ``GET /v2/user/api-key`` (or ``path``) through the simulator's handler."""
    params = {
        "AccessKeyId": key,
        "SignatureMethod": "HmacSHA256",
        "SignatureVersion": "2",
        "Timestamp": _stamp(clock.now + offset),
        **({"uid": UID, "accessKey": key} if path == "/v2/user/api-key" else {}),
        **(extra or {}),
    }
    signature = sign(secret, presign("GET", "api.huobi.pro", path, params))
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())
    query += f"&Signature={quote(signature, safe='')}"
    response = sim.handle("GET", path, query, b"", {"Host": "api.huobi.pro"}, client_ip)
    if response.body.startswith(b"<html>"):  # an injected failure
        return response.status, response.body.decode()
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


ACCOUNTS = "/v1/account/accounts"


def test_accounts_answer_the_documented_shape(htx: HtxSimulator, clock: FakeClock) -> None:
    """``GET /v1/account/accounts`` ("Get all Accounts of the Current User",
    https://huobiapi.github.io/docs/spot/v1/en/#get-all-accounts-of-the-current-user): the
    documented example's spot, otc and point accounts, ``state`` working."""
    status, body = request(htx, clock, path=ACCOUNTS)
    assert status == 200
    assert body["status"] == "ok"
    assert [(a["type"], a["subtype"], a["state"]) for a in body["data"]] == [
        ("spot", "", "working"),
        ("otc", "", "working"),
        ("point", "", "working"),
    ]
    assert all(isinstance(a["id"], int) for a in body["data"])


def test_account_states_change_at_run_time(htx: HtxSimulator, clock: FakeClock) -> None:
    htx.update_key(KEY, account_state="lock", margin_state="lock")
    _status, body = request(htx, clock, path=ACCOUNTS)
    states = {(a["type"], a["subtype"]): a["state"] for a in body["data"]}
    assert states[("spot", "")] == "lock"
    assert states[("margin", "btcusdt")] == "lock"
    htx.update_key(KEY, account_state="working")
    _status, body = request(htx, clock, path=ACCOUNTS)
    assert body["data"][0]["state"] == "working"
    with pytest.raises(ValueError, match="account_state must be one of working, lock"):
        htx.update_key(KEY, account_state="frozen")
    with pytest.raises(ValueError, match="margin_state"):
        htx.add_key("other", SECRET, UID, margin_state="locked")


def test_accounts_need_a_valid_signature(htx: HtxSimulator, clock: FakeClock) -> None:
    status, body = request(htx, clock, path=ACCOUNTS, secret="wrong")
    assert status == 200
    assert body["err-code"] == "api-signature-not-valid"


def test_fail_next_on_one_path_fails_that_endpoint_alone(
    htx: HtxSimulator, clock: FakeClock
) -> None:
    htx.fail_next(1, status=503, path=ACCOUNTS)
    assert request(htx, clock)[0] == 200  # the key's details answer
    assert request(htx, clock, path=ACCOUNTS)[0] == 503
    assert request(htx, clock, path=ACCOUNTS)[0] == 200  # once only
    assert (htx.requests_to(ACCOUNTS), htx.requests_to("/v2/user/api-key")) == (2, 1)


def test_keys_file_sets_the_account_states(tmp_path: Any, clock: FakeClock) -> None:
    """A keys-file entry takes ``account_state`` and ``margin_state``; a state HTX does not
    document is refused on one line naming the entry."""
    from keymon.simulator.__main__ import InputError, build_simulator

    keys = tmp_path / "keys.yaml"
    keys.write_text(
        f'- {{api_key: {KEY}, secret: {SECRET}, uid: "{UID}", account_state: lock,'
        " margin_state: working}\n"
    )
    sim = build_simulator("htx", keys, 0.0)
    assert isinstance(sim, HtxSimulator)
    # The built simulator runs on the real clock: stamp the request with it.
    status, body = request(sim, clock, path=ACCOUNTS, offset=time.time() - clock.now)
    assert status == 200
    assert [(a["type"], a["state"]) for a in body["data"]][::3] == [
        ("spot", "lock"),
        ("margin", "working"),
    ]
    keys.write_text(
        f'- {{api_key: {KEY}, secret: {SECRET}, uid: "{UID}", account_state: frozen}}\n'
    )
    with pytest.raises(InputError, match="key entry 1: account_state must be one of working, lock"):
        build_simulator("htx", keys, 0.0)
