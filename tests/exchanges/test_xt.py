"""The XT adapter: signing, the exact request, and every (third-party) code on canned answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.config import Secret, Settings, XtKey, XtSettings
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
from keymon.exchanges.xt import XtAdapter, XtAuth, pre_hash, sign
from keymon.model import Coverage, Reason

KEY = "xtKey01"
SECRET = "xtSecret01"
NOW_MS = 1_700_000_000_000
BASE = "https://sapi.xt.com"
VECTOR_PRE_HASH = (
    "validate-algorithms=HmacSHA256&validate-appkey=testkey&validate-recvwindow=5000"
    "&validate-timestamp=1700000000000#GET#/v4/balances"
)
VECTOR_SIGNATURE = "e66f1bb13d3266a402cc8d7cc2bcb3a561127e7cf92585df7bee3b116cf21876"


def literal(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def key() -> XtKey:
    entry = {"name": "xt", "client": "acme", "exchange": "xt", "api_key": KEY, "api_secret": SECRET}
    loaded = Settings(keys=[entry]).keys[0]
    assert isinstance(loaded, XtKey)
    return loaded


def test_pre_hash_and_sign_reproduce_the_derived_vector() -> None:
    """exchange-apis.md §2.11: GET /v4/balances, no query, recvwindow 5000."""
    message = pre_hash("testkey", 5000, "1700000000000", "GET", "/v4/balances")
    assert message == VECTOR_PRE_HASH
    assert sign("testsecret", message) == VECTOR_SIGNATURE


def test_pre_hash_sorts_the_query_and_appends_the_body() -> None:
    """XT: ``#query`` with its pairs sorted by key, then ``#body`` raw."""
    message = pre_hash("k", 5000, "1", "post", "/v4/order", "symbol=btc_usdt&bizType=SPOT", "{}")
    assert message.endswith("#POST#/v4/order#bizType=SPOT&symbol=btc_usdt#{}")


def test_auth_sets_the_five_headers() -> None:
    auth = XtAuth(literal("testkey"), literal("testsecret"), lambda: NOW_MS, 5000)
    signed = next(auth.auth_flow(httpx.Request("GET", f"{BASE}/v4/balances")))
    assert signed.headers["validate-algorithms"] == "HmacSHA256"
    assert signed.headers["validate-appkey"] == "testkey"
    assert signed.headers["validate-recvwindow"] == "5000"
    assert signed.headers["validate-timestamp"] == str(NOW_MS)
    assert signed.headers["validate-signature"] == VECTOR_SIGNATURE
    assert "testsecret" not in repr(auth)


def envelope(rc: int, mc: str, result: Any = None, ma: list[Any] | None = None) -> dict[str, Any]:
    return {"rc": rc, "mc": mc, "ma": ma or [], "result": result}


Handler = Callable[[httpx.Request], httpx.Response]


def adapter(
    handler: Handler, seen: list[httpx.Request], recv_window: timedelta | None = None
) -> XtAdapter:
    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    transport = ReadOnlyTransport(
        httpx.MockTransport(record),
        base_url=BASE,
        allowlist=XtAdapter.read_only_endpoints,
        exchange="xt",
    )
    client = httpx.AsyncClient(transport=transport, base_url=BASE)
    settings = XtSettings(recv_window=recv_window) if recv_window else XtSettings()
    return XtAdapter(client, settings, clock=lambda: NOW_MS / 1000)


def answering(status: int, body: Any, time_ms: int = NOW_MS) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v4/public/time":
            return httpx.Response(200, json=envelope(0, "SUCCESS", {"serverTime": time_ms}))
        return httpx.Response(status, json=body)

    return handle


OK = envelope(0, "SUCCESS", {"totalUsdtAmount": "0", "assets": []})


async def test_the_exact_requests() -> None:
    """A time sync, then the signed GET with no query and no body; nothing else."""
    seen: list[httpx.Request] = []
    facts = await adapter(answering(200, OK), seen).audit(key())
    assert facts.coverage is Coverage.LIVENESS
    assert [(r.method, r.url.path) for r in seen] == [
        ("GET", "/v4/public/time"),
        ("GET", "/v4/balances"),
    ]
    probe = seen[1]
    assert probe.url.query == b""
    assert probe.content == b""
    assert probe.headers["validate-appkey"] == KEY
    assert probe.headers["validate-recvwindow"] == "5000"
    assert probe.headers["validate-timestamp"] == str(NOW_MS)
    expected = pre_hash(KEY, 5000, str(NOW_MS), "GET", "/v4/balances")
    assert probe.headers["validate-signature"] == sign(SECRET, expected)
    assert "validate-appkey" not in seen[0].headers


async def test_recv_window_comes_from_settings_and_offset_from_the_server() -> None:
    seen: list[httpx.Request] = []
    handler = answering(200, OK, time_ms=NOW_MS - 20_000)
    await adapter(handler, seen, recv_window=timedelta(seconds=10)).audit(key())
    assert seen[1].headers["validate-recvwindow"] == "10000"
    assert seen[1].headers["validate-timestamp"] == str(NOW_MS - 20_000)


CODES = [
    ("AUTH_101", ExchangeAuthError, "deleted"),
    ("AUTH_102", ExchangeAuthError, "not activated"),
    ("AUTH_103", ExchangeAuthError, "wrong secret"),
    ("AUTH_104", ExchangeAuthError, "IP"),
    ("AUTH_105", ExchangeClockError, "outdated"),
    ("AUTH_106", ExchangeAuthError, "Read permission"),
    ("429", ExchangeRateLimited, "too many"),
    ("503", ExchangeUnavailable, "unavailable"),
]


@pytest.mark.parametrize("status", [200, 401])
@pytest.mark.parametrize(("code", "error", "word"), CODES)
async def test_codes_whatever_the_status(
    code: str, error: type[ExchangeError], word: str, status: int
) -> None:
    """XT's pages give no HTTP status for these: the envelope's ``mc`` decides."""
    with pytest.raises(error) as raised:
        await adapter(answering(status, envelope(1, code)), []).audit(key())
    assert raised.value.code == code
    assert word in raised.value.message
    assert SECRET not in raised.value.message


async def test_unbound_ip_is_key_rejected_without_an_address() -> None:
    with pytest.raises(ExchangeAuthError) as raised:
        await adapter(answering(200, envelope(1, "AUTH_104")), []).audit(key())
    assert raised.value.reason is Reason.KEY_REJECTED
    assert raised.value.refused_ip is None


async def test_outdated_resyncs_and_retries_once() -> None:
    seen: list[httpx.Request] = []
    answers = iter([envelope(1, "AUTH_105"), OK])

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v4/public/time":
            return httpx.Response(200, json=envelope(0, "SUCCESS", {"serverTime": NOW_MS}))
        return httpx.Response(200, json=next(answers))

    await adapter(handle, seen).audit(key())
    assert [r.url.path for r in seen] == [
        "/v4/public/time",
        "/v4/balances",
        "/v4/public/time",
        "/v4/balances",
    ]


@pytest.mark.parametrize("code", ["AUTH_001", "AUTH_003", "AUTH_007", "COMMON_001"])
async def test_header_and_other_codes_are_bad_response(code: str) -> None:
    with pytest.raises(ExchangeBadResponse, match=code):
        await adapter(answering(200, envelope(1, code)), []).audit(key())


async def test_ma_details_reach_the_message() -> None:
    body = envelope(1, "AUTH_103", ma=["signature error"])
    with pytest.raises(ExchangeAuthError, match="signature error"):
        await adapter(answering(200, body), []).audit(key())


async def test_time_without_server_time_still_audits() -> None:
    """A sync that cannot be read keeps offset 0; the signed call decides."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v4/public/time":
            return httpx.Response(200, json=envelope(0, "SUCCESS", {}))
        return httpx.Response(200, json=OK)

    await adapter(handle, seen).audit(key())
    assert seen[1].headers["validate-timestamp"] == str(NOW_MS)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v4/order"),
        ("POST", "/v4/withdraw"),
        ("GET", "/v4/open-order"),
        ("POST", "/v4/balances"),
    ],
    ids=["order", "withdraw", "unlisted-get", "right-path-wrong-method"],
)
async def test_allowlist_refuses_everything_else(method: str, path: str) -> None:
    seen: list[httpx.Request] = []
    client = adapter(answering(200, OK), seen)._client
    with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
        await client.request(method, path)
    assert seen == []


def test_allowlist_is_the_probe_and_the_clock() -> None:
    assert XtAdapter.read_only_endpoints == frozenset(
        {("GET", "/v4/public/time"), ("GET", "/v4/balances")}
    )
