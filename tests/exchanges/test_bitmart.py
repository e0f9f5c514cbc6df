"""The BitMart adapter: signing, the exact request, and every documented code on canned answers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.config import Secret, Settings
from keymon.errors import (
    ExchangeAuthError,
    ExchangeBadResponse,
    ExchangeClockError,
    ExchangeError,
    ExchangeRateLimited,
    ExchangeUnavailable,
    ForbiddenRequest,
)
from keymon.exchanges.base import ReadOnlyTransport
from keymon.exchanges.bitmart import BitmartAdapter, BitmartAuth, BitmartKey, BitmartSettings, sign
from keymon.model import Coverage, Reason

KEY = "bmKey01"
SECRET = "bmSecret01"
MEMO = "bmMemo01"
NOW_MS = 1_700_000_000_000
BASE = "https://api-cloud.bitmart.com"
BODY = b'{"limit":1,"recvWindow":60000}'


def literal(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def key() -> BitmartKey:
    entry = {
        "name": "bm",
        "client": "acme",
        "exchange": "bitmart",
        "api_key": KEY,
        "api_secret": SECRET,
        "memo": MEMO,
    }
    loaded = Settings(keys=[entry]).keys[0]
    assert isinstance(loaded, BitmartKey)
    return loaded


def test_sign_reproduces_the_derived_vector() -> None:
    """exchange-apis.md §2.8: ``1700000000000#testmemo#`` under ``testsecret``."""
    assert (
        sign("testsecret", "1700000000000", "testmemo", "")
        == "893b552ce11ddcdb711b525c2736cf0b10c4009b8e3c961a550685ed2b42623f"
    )


def test_auth_signs_timestamp_memo_and_body() -> None:
    auth = BitmartAuth(literal(KEY), literal(SECRET), literal(MEMO), lambda: NOW_MS)
    request = httpx.Request("POST", f"{BASE}/spot/v4/query/open-orders", content=BODY)
    signed = next(auth.auth_flow(request))
    assert signed.headers["X-BM-KEY"] == KEY
    assert signed.headers["X-BM-TIMESTAMP"] == str(NOW_MS)
    assert signed.headers["X-BM-SIGN"] == sign(SECRET, str(NOW_MS), MEMO, BODY.decode())
    assert SECRET not in repr(auth)
    assert MEMO not in repr(auth)


def test_auth_reproduces_the_vector_on_an_empty_get() -> None:
    auth = BitmartAuth(literal("k"), literal("testsecret"), literal("testmemo"), lambda: NOW_MS)
    signed = next(auth.auth_flow(httpx.Request("GET", f"{BASE}/x")))
    assert (
        signed.headers["X-BM-SIGN"]
        == "893b552ce11ddcdb711b525c2736cf0b10c4009b8e3c961a550685ed2b42623f"
    )


def test_memo_is_required() -> None:
    entry = {
        "name": "k",
        "client": "a",
        "exchange": "bitmart",
        "api_key": KEY,
        "api_secret": SECRET,
    }
    with pytest.raises(ValueError, match="memo"):
        Settings(keys=[entry])


def envelope(code: int, message: str, data: Any = None) -> dict[str, Any]:
    return {"code": code, "message": message, "trace": "t-1", "data": data if data else {}}


Handler = Callable[[httpx.Request], httpx.Response]


def adapter(handler: Handler, seen: list[httpx.Request]) -> BitmartAdapter:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    transport = ReadOnlyTransport(
        httpx.MockTransport(record),
        base_url=BASE,
        allowlist=BitmartAdapter.read_only_endpoints,
        exchange="bitmart",
    )
    client = httpx.AsyncClient(transport=transport, base_url=BASE)
    return BitmartAdapter(client, BitmartSettings(), clock=lambda: NOW_MS / 1000)


def answering(status: int, body: Any, time_ms: int = NOW_MS) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/system/time":
            return httpx.Response(200, json=envelope(1000, "OK", {"server_time": time_ms}))
        return httpx.Response(status, json=body)

    return handle


async def test_the_exact_requests() -> None:
    """A time sync, then the signed POST with its JSON body; nothing else."""
    seen: list[httpx.Request] = []
    facts = await adapter(answering(200, envelope(1000, "success", [])), seen).audit(key())
    assert facts.coverage is Coverage.LIVENESS
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/system/time"),
        ("POST", "/spot/v4/query/open-orders"),
    ]
    probe = seen[1]
    assert probe.content == BODY
    assert probe.url.query == b""
    assert probe.headers["Content-Type"] == "application/json"
    assert probe.headers["X-BM-KEY"] == KEY
    assert probe.headers["X-BM-TIMESTAMP"] == str(NOW_MS)
    assert probe.headers["X-BM-SIGN"] == sign(SECRET, str(NOW_MS), MEMO, BODY.decode())
    assert "X-BM-KEY" not in seen[0].headers


async def test_server_time_offset_is_applied() -> None:
    seen: list[httpx.Request] = []
    handler = answering(200, envelope(1000, "success", []), time_ms=NOW_MS + 30_000)
    await adapter(handler, seen).audit(key())
    assert seen[1].headers["X-BM-TIMESTAMP"] == str(NOW_MS + 30_000)


async def test_server_time_as_string_is_read() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/system/time":
            body = envelope(1000, "OK", {"server_time": str(NOW_MS + 5000)})
            return httpx.Response(200, json=body)
        return httpx.Response(200, json=envelope(1000, "success", []))

    await adapter(handle, seen).audit(key())
    assert seen[1].headers["X-BM-TIMESTAMP"] == str(NOW_MS + 5000)


CODES = [
    (30002, 401, "Header X-BM-KEY not found", ExchangeAuthError, "deleted"),
    (30003, 401, "Header X-BM-KEY has frozen", ExchangeAuthError, "frozen"),
    (30005, 401, "Header X-BM-SIGN is wrong", ExchangeAuthError, "memo"),
    (30007, 401, "Header X-BM-TIMESTAMP range. Within a minute", ExchangeClockError, "minute"),
    (30010, 403, "IP is forbidden. We recommend enabling IP whitelist", ExchangeAuthError, "IP"),
    (30011, 403, "Header X-BM-KEY over expire time", ExchangeAuthError, "expired"),
    (30012, 403, "Header X-BM-KEY is forbidden to request it", ExchangeAuthError, "disabled"),
    (30013, 429, "Request too many requests", ExchangeRateLimited, "too many"),
    (30014, 503, "Service unavailable", ExchangeUnavailable, "unavailable"),
]


@pytest.mark.parametrize(("code", "status", "message", "error", "word"), CODES)
async def test_documented_codes(
    code: int, status: int, message: str, error: type[ExchangeError], word: str
) -> None:
    with pytest.raises(error) as raised:
        await adapter(answering(status, envelope(code, message)), []).audit(key())
    assert raised.value.code == code
    assert word in raised.value.message
    assert SECRET not in raised.value.message
    assert MEMO not in raised.value.message


async def test_ip_refusal_is_key_rejected_without_an_address() -> None:
    body = envelope(30010, "IP is forbidden. We recommend enabling IP whitelist for API trading.")
    with pytest.raises(ExchangeAuthError) as raised:
        await adapter(answering(403, body), []).audit(key())
    assert raised.value.reason is Reason.KEY_REJECTED
    assert raised.value.refused_ip is None


async def test_clock_code_resyncs_and_retries_once() -> None:
    seen: list[httpx.Request] = []
    answers = iter(
        [
            envelope(30007, "Header X-BM-TIMESTAMP range. Within a minute"),
            envelope(1000, "success", []),
        ]
    )

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/system/time":
            return httpx.Response(200, json=envelope(1000, "OK", {"server_time": NOW_MS}))
        body = next(answers)
        return httpx.Response(200 if body["code"] == 1000 else 401, json=body)

    await adapter(handle, seen).audit(key())
    assert [r.url.path for r in seen] == [
        "/system/time",
        "/spot/v4/query/open-orders",
        "/system/time",
        "/spot/v4/query/open-orders",
    ]


@pytest.mark.parametrize("code", [30001, 30004, 30006, 30008])
async def test_header_codes_are_bad_response_not_rejection(code: int) -> None:
    """A missing or malformed header is keymon's fault, never the key's."""
    with pytest.raises(ExchangeBadResponse):
        await adapter(answering(401, envelope(code, "Header is empty")), []).audit(key())


async def test_unknown_code_on_200_is_bad_response() -> None:
    with pytest.raises(ExchangeBadResponse, match="50000"):
        await adapter(answering(200, envelope(50000, "Bad Request")), []).audit(key())


async def test_429_without_code_is_rate_limited() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/system/time":
            return httpx.Response(200, json=envelope(1000, "OK", {"server_time": NOW_MS}))
        return httpx.Response(429, text="slow down", headers={"Retry-After": "7"})

    with pytest.raises(ExchangeRateLimited) as raised:
        await adapter(handle, []).audit(key())
    assert raised.value.retry_after == 7


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/spot/v2/submit_order"),
        ("POST", "/account/v1/withdraw/apply"),
        ("GET", "/spot/v1/wallet"),
        ("GET", "/spot/v4/query/open-orders"),
    ],
    ids=["order", "withdraw", "keyed-get", "right-path-wrong-method"],
)
async def test_allowlist_refuses_everything_else(method: str, path: str) -> None:
    seen: list[httpx.Request] = []
    client = adapter(answering(200, envelope(1000, "OK")), seen)._client
    with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
        await client.request(method, path)
    assert seen == []


def test_allowlist_is_the_probe_and_the_clock() -> None:
    assert BitmartAdapter.read_only_endpoints == frozenset(
        {("GET", "/system/time"), ("POST", "/spot/v4/query/open-orders")}
    )
