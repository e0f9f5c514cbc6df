"""The MEXC liveness adapter: signing, the request it sends, and what each answer means."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import Secret, Settings
from keymon.errors import ForbiddenRequest
from keymon.exchanges.base import build_client
from keymon.exchanges.mexc import MexcAdapter, MexcAuth, sign
from keymon.model import AuditResult, Coverage, Reason

#: exchange-apis.md §2.6: the doc credentials.
DOC_KEY = "mx0aBYs33eIilxBWC5"
DOC_SECRET = "45d0b3c26f2644f19bfb98b07741b2f5"
ACCOUNT = "/api/v3/account"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


@pytest.mark.parametrize(
    ("payload", "signature"),
    [
        (  # M1, the official "Example 2": everything in the query string
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=1&price=11&recvWindow=5000"
            "&timestamp=1644489390087",
            "fd3e4e8543c5188531eb7279d68ae7d26a573d0fc5ab0d18eb692451654d837a",
        ),
        (  # M2, the official "Example 3": query and body joined without a separator
            "symbol=BTCUSDT&side=BUY&type=LIMITquantity=1&price=11&recvWindow=5000"
            "&timestamp=1644489390087",
            "d1a676610ceb39174c8039b3f548357994b2a34139a8addd33baadba65684592",
        ),
        (  # M3, derived: exactly what keymon signs for GET /api/v3/account
            "recvWindow=5000&timestamp=1644489390087",
            "1103ce19f47c037fc03b8b9d674e10ee76e53272851eb2a3b10321cd353fb9bf",
        ),
    ],
    ids=["M1", "M2", "M3"],
)
def test_sign_reproduces_the_vectors(payload: str, signature: str) -> None:
    assert sign(DOC_SECRET, payload.encode()) == signature


def test_auth_sends_the_derived_vector_request() -> None:
    """MexcAuth adds recvWindow, timestamp and the M3 signature, and the key header."""
    auth = MexcAuth(_secret(DOC_KEY), _secret(DOC_SECRET), lambda: 1644489390087, 5000)
    signed = next(auth.auth_flow(httpx.Request("GET", "https://api.mexc.com" + ACCOUNT)))
    assert signed.url.query.decode() == (
        "recvWindow=5000&timestamp=1644489390087"
        "&signature=1103ce19f47c037fc03b8b9d674e10ee76e53272851eb2a3b10321cd353fb9bf"
    )
    assert signed.headers["X-MEXC-APIKEY"] == DOC_KEY
    assert DOC_SECRET not in repr(auth)


class Canned(httpx.AsyncBaseTransport):
    """Answers /api/v3/time with a server time and the account call with one canned answer."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/api/v3/time":
            return httpx.Response(200, json={"serverTime": 1_795_000_000_000})
        content = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return httpx.Response(self.status, content=content, headers=self.headers)


async def audit_with(transport: httpx.AsyncBaseTransport) -> AuditResult:
    key = {"name": "k", "client": "acme", "exchange": "mexc", "api_key": DOC_KEY}
    settings = Settings(keys=[key | {"api_secret": DOC_SECRET}], trusted_ips=["127.0.0.1/32"])
    async with Auditor(
        settings, transport_factory=lambda _n: transport, clock=lambda: 1_795_000_000.0
    ) as auditor:
        return await auditor.audit(settings.keys[0])


async def test_accepted_key_is_liveness_and_keeps_no_balances() -> None:
    """200 from /api/v3/account: accepted, liveness coverage, no fact, no balance kept."""
    transport = Canned(
        200, {"canWithdraw": True, "canTrade": True, "balances": [{"asset": "USDT"}]}
    )
    result = await audit_with(transport)
    assert result.ok
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    assert dict(result.facts.permissions) == {}  # canWithdraw is the account's, not the key's
    assert "USDT" not in repr(result.facts)  # nothing of the answer is kept
    sent = transport.requests[-1]
    assert (sent.method, sent.url.path) == ("GET", ACCOUNT)
    assert sent.headers["X-MEXC-APIKEY"] == DOC_KEY
    query = dict(part.split("=", 1) for part in sent.url.query.decode().split("&"))
    assert set(query) == {"recvWindow", "timestamp", "signature"}
    assert query["timestamp"] == "1795000000000"


@pytest.mark.parametrize(
    ("status", "body", "expected", "words"),
    [
        (400, {"code": 700001, "msg": "Api key info invalid"}, Reason.KEY_REJECTED, "deleted"),
        (400, {"code": 700002, "msg": "Signature not valid"}, Reason.KEY_REJECTED, "secret"),
        (
            400,
            {"code": 700006, "msg": "IP [198.51.100.7] not in the ip white list"},
            Reason.KEY_REJECTED,
            "refused egress IP 198.51.100.7",
        ),
        (400, {"code": 700007, "msg": "No permission"}, Reason.KEY_REJECTED, "View Account"),
        (400, {"code": 700003, "msg": "outside recvWindow"}, Reason.CLOCK_SKEW, "recvWindow"),
        (429, {"code": 429, "msg": "Too Many Requests"}, Reason.RATE_LIMITED, "too many"),
        (429, b"", Reason.RATE_LIMITED, "rate limited"),
        (418, b"", Reason.BANNED, "banned"),
        (503, b"<html>", Reason.EXCHANGE_UNAVAILABLE, "503"),
        (400, {"code": 123456, "msg": "new"}, Reason.BAD_RESPONSE, "does not know"),
        (200, b'{"canTrade": tr', Reason.BAD_RESPONSE, "not JSON"),
    ],
    ids=[
        "700001",
        "700002",
        "700006",
        "700007",
        "700003",
        "429-code",
        "429-bare",
        "418",
        "503",
        "unknown-code",
        "truncated",
    ],
)
async def test_answers_map_onto_reasons(
    status: int, body: Any, expected: Reason, words: str
) -> None:
    result = await audit_with(Canned(status, body))
    assert result.error is not None
    assert result.error.reason is expected
    assert words in result.error.message
    assert DOC_SECRET not in result.error.message


async def test_refused_ip_is_recorded() -> None:
    body = {"code": 700006, "msg": "IP [2001:db8::7] not in the ip white list"}
    result = await audit_with(Canned(400, body))
    assert result.error is not None
    assert result.error.refused_ip == "2001:db8::7"


def test_allowlist_is_the_probe_and_the_clock() -> None:
    assert MexcAdapter.read_only_endpoints == frozenset(
        {("GET", "/api/v3/account"), ("GET", "/api/v3/time")}
    )


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v3/order"),
        ("POST", "/api/v3/capital/withdraw"),
        ("GET", "/api/v3/sub-account/apiKey"),
        ("POST", "/api/v3/account"),
    ],
    ids=["order", "withdraw", "unlisted-get", "right-path-wrong-method"],
)
async def test_anything_else_is_refused_unsent(method: str, path: str) -> None:
    """The guarded client refuses anything but the two calls, before a byte leaves."""
    transport = Canned(200, {})
    client = build_client(
        exchange="mexc",
        base_url="https://api.mexc.com",
        allowlist=MexcAdapter.read_only_endpoints,
        timeout=5,
        transport=transport,
    )
    async with client:
        with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
            await client.request(method, path)
    assert transport.requests == []
