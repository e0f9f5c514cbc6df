"""The Bitrue adapter: signing against the docs' vectors, the exact request it sends, the
mapping of every documented code (and -1022's key-or-clock judgement), and its allowlist."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import Secret, Settings
from keymon.errors import ForbiddenRequest
from keymon.exchanges.base import build_client
from keymon.exchanges.bitrue import BitrueAdapter, BitrueAuth, sign
from keymon.model import AuditResult, Coverage, KeyFacts, Reason
from tests.conftest import DOC_API_KEY, DOC_SECRET, FakeClock

#: exchange-apis.md §1.3 B1, which the Bitrue docs reuse verbatim.
B1_PAYLOAD = (
    "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    "&recvWindow=5000&timestamp=1499827319559"
)
B1_SIGNATURE = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
#: exchange-apis.md §2.9: the Bitrue docs' JSON-body example.
JSON_BODY = (
    '{"symbol":"LTCBTC","side":"BUY","type":"LIMIT","timeInForce":"GTC","price":0.1,'
    '"quantity":1,"timestamp":1499827319559,"recvWindow":5000}'
)
JSON_SIGNATURE = "a96755b9616ffcb19b47f38ee1c8e20bb9ff5ffdd3936ace8f457975fbc91a6a"
ACCOUNT = "/api/v1/account"
TIME = "/api/v1/time"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def test_sign_reproduces_the_doc_vector_b1() -> None:
    assert sign(DOC_SECRET, B1_PAYLOAD.encode()) == B1_SIGNATURE


def test_sign_reproduces_the_json_body_vector() -> None:
    assert sign(DOC_SECRET, JSON_BODY.encode()) == JSON_SIGNATURE


def test_auth_signs_b1_as_a_query_string() -> None:
    """With B1's business parameters in the query, the auth appends B1's recvWindow and
    timestamp and produces B1's signature, and the key goes in X-MBX-APIKEY."""
    auth = BitrueAuth(_secret(DOC_API_KEY), _secret(DOC_SECRET), lambda: 1499827319559, 5000)
    query = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"
    signed = next(auth.auth_flow(httpx.Request("GET", f"https://x.test/api/v1/order?{query}")))
    assert signed.url.query.decode() == f"{B1_PAYLOAD}&signature={B1_SIGNATURE}"
    assert signed.headers["X-MBX-APIKEY"] == DOC_API_KEY
    assert DOC_SECRET not in repr(auth)


def test_auth_signs_b1_as_a_body() -> None:
    """B1 sent as a form body (doc example 2): the signed bytes are the query then the body."""
    auth = BitrueAuth(_secret(DOC_API_KEY), _secret(DOC_SECRET), lambda: 1499827319559, 5000)
    body = b"symbol=LTCBTC"
    signed = next(auth.auth_flow(httpx.Request("POST", "https://x.test/p", content=body)))
    query = "recvWindow=5000&timestamp=1499827319559"
    expected = sign(DOC_SECRET, query.encode() + body)
    assert signed.url.query.decode() == f"{query}&signature={expected}"


def settings() -> Settings:
    key = {
        "name": "k",
        "client": "acme",
        "exchange": "bitrue",
        "api_key": DOC_API_KEY,
        "api_secret": DOC_SECRET,
    }
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


def canned(
    answer: tuple[int, object] | Callable[[int], tuple[int, object]],
    seen: list[httpx.Request] | None = None,
    server_ms: int = 1_795_000_000_000,
) -> httpx.AsyncBaseTransport:
    calls = [0]

    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.url.path == TIME:
            return httpx.Response(200, json={"serverTime": server_ms})
        calls[0] += 1
        status, body = answer(calls[0]) if callable(answer) else answer
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return httpx.MockTransport(handler)


async def audit_with(
    transport: httpx.AsyncBaseTransport, clock: Callable[[], float] | None = None
) -> AuditResult:
    s = settings()
    async with Auditor(
        s, transport_factory=lambda _n: transport, clock=clock or FakeClock()
    ) as auditor:
        return await auditor.audit(s.keys[0])


ACCOUNT_BODY: dict[str, Any] = {
    "makerCommission": 15,
    "canTrade": True,
    "canWithdraw": True,
    "canDeposit": True,
    "balances": [{"asset": "BTC", "free": "1", "locked": "0"}],
}


async def test_exact_request() -> None:
    """One unsigned GET /api/v1/time, then GET /api/v1/account with recvWindow, a timestamp
    on the server's clock, the signature, the key header, and nothing else."""
    seen: list[httpx.Request] = []
    clock = FakeClock()
    server_ms = int(clock.now * 1000) + 40_000
    result = await audit_with(canned((200, ACCOUNT_BODY), seen, server_ms), clock)
    assert result.ok, result.error
    assert [(r.method, r.url.path) for r in seen] == [("GET", TIME), ("GET", ACCOUNT)]
    assert "X-MBX-APIKEY" not in seen[0].headers
    call = seen[1]
    assert call.content == b""
    params = dict(httpx.QueryParams(call.url.query.decode()))
    assert set(params) == {"recvWindow", "timestamp", "signature"}
    assert params["recvWindow"] == "5000"
    assert int(params["timestamp"]) == server_ms
    total = call.url.query.decode().rsplit("&signature=", 1)[0]
    assert params["signature"] == sign(DOC_SECRET, total.encode())
    assert call.headers["X-MBX-APIKEY"] == DOC_API_KEY


async def test_account_flags_are_not_read_as_permissions() -> None:
    """canTrade/canWithdraw describe the account: facts stay liveness-only, balances unkept."""
    result = await audit_with(canned((200, ACCOUNT_BODY)))
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    assert dict(result.facts.permissions) == {}
    assert result.facts == KeyFacts(coverage=Coverage.LIVENESS)  # nothing of the answer kept


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"code": 966000, "msg": "Ip limit"}, Reason.KEY_REJECTED),
        (400, {"code": 966001, "msg": "No privileges"}, Reason.KEY_REJECTED),
        (429, {"code": -1003, "msg": "Too many requests."}, Reason.RATE_LIMITED),
        (429, b"", Reason.RATE_LIMITED),
        (418, b"", Reason.BANNED),
        (400, {"code": -1121, "msg": "Invalid symbol."}, Reason.BAD_RESPONSE),
        (502, b"<html>", Reason.EXCHANGE_UNAVAILABLE),
        (200, b'{"makerCommission": 1', Reason.BAD_RESPONSE),
    ],
    ids=["966000", "966001", "429-code", "429", "418", "unknown-code", "502", "truncated"],
)
async def test_errors_are_classified(status: int, body: object, expected: Reason) -> None:
    result = await audit_with(canned((status, body)))
    assert result.error is not None
    assert result.error.reason is expected


async def test_ip_limit_says_so() -> None:
    result = await audit_with(canned((400, {"code": 966000, "msg": "Ip limit"})))
    assert result.error is not None
    assert "egress IP is not allowed" in result.error.message
    assert result.error.code == 966000


async def test_1022_with_a_good_sync_is_the_key() -> None:
    """-1022 twice, around a re-sync with a 0 ms round trip: the stamp was in time, so the
    key is refused (wrong secret, deleted or unusable): key_rejected, saying why."""
    seen: list[httpx.Request] = []
    refusal = (401, {"code": -1022, "msg": "Invalid signature, timestamp or authorization."})
    result = await audit_with(canned(refusal, seen))
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert result.error.code == -1022
    assert "re-synced" in result.error.message
    assert [r.url.path for r in seen] == [TIME, ACCOUNT, TIME, ACCOUNT]


async def test_1022_then_success_after_resync_is_accepted() -> None:
    """A stale offset: the first stamp is refused, the re-synced one accepted."""

    def answer(call: int) -> tuple[int, object]:
        if call == 1:
            return 401, {"code": -1022, "msg": "Invalid signature, timestamp or authorization."}
        return 200, ACCOUNT_BODY

    result = await audit_with(canned(answer))
    assert result.ok, result.error


class SlowSyncClock:
    """Every reading 3 s later: a sync's round trip is 3 s, too long to vouch for a stamp."""

    def __init__(self) -> None:
        self.now = 1_795_000_000.0

    def __call__(self) -> float:
        self.now += 3
        return self.now


async def test_1022_with_an_unreliable_sync_is_clock_skew() -> None:
    """If keymon cannot bound its stamp within the 1000 ms Bitrue allows ahead, a -1022 that
    persists reads as clock skew, saying that the host's clock is to be checked first."""
    refusal = (401, {"code": -1022, "msg": "Invalid signature, timestamp or authorization."})
    result = await audit_with(canned(refusal), SlowSyncClock())
    assert result.error is not None
    assert result.error.reason is Reason.CLOCK_SKEW
    assert "clock" in result.error.message


async def test_1022_with_a_failing_time_endpoint_is_clock_skew() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == TIME:
            return httpx.Response(503, content=b"down")
        return httpx.Response(401, json={"code": -1022, "msg": "x"})

    result = await audit_with(httpx.MockTransport(handler))
    assert result.error is not None
    assert result.error.reason is Reason.CLOCK_SKEW
    assert "time endpoint failed" in result.error.message


def test_adapter_declares_read_only_endpoints_and_weight() -> None:
    assert BitrueAdapter.read_only_endpoints == {("GET", ACCOUNT), ("GET", TIME)}
    assert BitrueAdapter.weights[ACCOUNT] == 5


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/api/v1/order"),
        ("DELETE", "/api/v1/order"),
        ("POST", "/api/v1/withdraw/commit"),
        ("GET", "/api/v1/withdraw/history"),
        ("POST", ACCOUNT),
        ("GET", "https://other.test/api/v1/account"),
    ],
    ids=["order", "cancel", "withdraw", "unlisted-get", "right-path-wrong-method", "other-host"],
)
async def test_allowlist_refuses_anything_else(method: str, url: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    client = build_client(
        exchange="bitrue",
        base_url="https://openapi.bitrue.com",
        allowlist=BitrueAdapter.read_only_endpoints,
        timeout=5,
        transport=httpx.MockTransport(handler),
    )
    async with client:
        with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
            await client.request(method, url)
    assert sent == []
