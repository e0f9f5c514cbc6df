"""The Coinstore adapter: signing against §2.13's vector, the exact request, error mapping."""

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
from keymon.exchanges.coinstore import (
    ACCOUNT_PATH,
    CoinstoreAdapter,
    CoinstoreAuth,
    derived_key,
    sign,
)
from keymon.model import AuditResult, Coverage, Reason
from tests.conftest import FakeClock

KEY = "cs0adapterKey01"
SECRET = "testsecret"
#: exchange-apis.md §2.13's derived vector.
EXPIRES = 1700000000000
VECTOR_KEY = "e15f07d7a92657da3184309ddc47a8ce16a9da7a9aed6d62ae59be3ee18a851f"
VECTOR_SIGN = "4dccee9620c7d980a1edea2f29b35d6dac1cdba4994a428b7db3119826315c9e"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def test_sign_reproduces_the_derived_vector() -> None:
    assert derived_key(SECRET, EXPIRES) == VECTOR_KEY
    assert sign(SECRET, EXPIRES, b"{}") == VECTOR_SIGN


def test_the_key_changes_only_with_the_30_second_bucket() -> None:
    assert derived_key(SECRET, EXPIRES + 1) == derived_key(SECRET, 1700000009999)
    assert derived_key(SECRET, 1700000010000) != VECTOR_KEY


def test_auth_signs_the_vector_when_sent() -> None:
    auth = CoinstoreAuth(_secret(KEY), _secret(SECRET), lambda: EXPIRES)
    request = httpx.Request("POST", f"https://api.coinstore.com{ACCOUNT_PATH}", content=b"{}")
    signed = next(auth.auth_flow(request))
    assert signed.headers["X-CS-APIKEY"] == KEY
    assert signed.headers["X-CS-EXPIRES"] == str(EXPIRES)
    assert signed.headers["X-CS-SIGN"] == VECTOR_SIGN
    assert SECRET not in repr(auth)


def settings() -> Settings:
    key = {
        "name": "k",
        "client": "acme",
        "exchange": "coinstore",
        "api_key": KEY,
        "api_secret": SECRET,
    }
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


async def audit_with(handler: Any, clock: FakeClock | None = None) -> AuditResult:
    s = settings()
    transport = httpx.MockTransport(handler)
    async with Auditor(
        s, transport_factory=lambda _n: transport, clock=clock or FakeClock()
    ) as auditor:
        return await auditor.audit(s.keys[0])


def answer(status: int, body: object) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return handler


async def test_sends_exactly_the_documented_request() -> None:
    """One POST /api/spot/accountList, JSON body {}, the three headers, signed at send time."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"code": 0, "data": []})

    clock = FakeClock(EXPIRES / 1000)
    result = await audit_with(handler, clock)
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    [request] = seen
    assert request.method == "POST"
    assert request.url.host == "api.coinstore.com"
    assert request.url.path == ACCOUNT_PATH
    assert request.url.query == b""
    assert request.content == b"{}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["X-CS-APIKEY"] == KEY
    assert request.headers["X-CS-EXPIRES"] == str(EXPIRES)
    assert request.headers["X-CS-SIGN"] == VECTOR_SIGN


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (401, {"code": 1401, "message": "Unauthorized"}, Reason.KEY_REJECTED, 1401),
        (200, {"code": 1401, "message": "Unauthorized"}, Reason.KEY_REJECTED, 1401),
        (401, {"code": 401, "message": "signature-failed"}, Reason.KEY_REJECTED, 401),
        (200, {"code": 401, "message": "signature-failed"}, Reason.KEY_REJECTED, 401),
        (401, b"", Reason.KEY_REJECTED, None),
        (429, {"code": 429, "message": "Too many visits"}, Reason.RATE_LIMITED, 429),
        (429, b"", Reason.RATE_LIMITED, None),
        (500, b"<html>", Reason.EXCHANGE_UNAVAILABLE, None),
        (503, {"code": 503, "message": "busy"}, Reason.EXCHANGE_UNAVAILABLE, 503),
        (200, b"{trunc", Reason.BAD_RESPONSE, None),
        (200, {"data": []}, Reason.BAD_RESPONSE, "missing"),
        (200, [], Reason.BAD_RESPONSE, "missing"),
        (200, {"code": 3001, "message": "something new"}, Reason.BAD_RESPONSE, 3001),
        (400, {"code": 400, "message": "Invalid request format"}, Reason.BAD_RESPONSE, 400),
    ],
    ids=[
        "1401",
        "1401-at-200",
        "signature-failed",
        "signature-failed-at-200",
        "bare-401",
        "429-coded",
        "429-bare",
        "500",
        "503-coded",
        "truncated",
        "no-code",
        "not-an-object",
        "unknown-code",
        "bad-request",
    ],
)
async def test_errors_are_classified(
    status: int, body: object, expected: Reason, code: int | str | None
) -> None:
    result = await audit_with(answer(status, body))
    assert result.error is not None
    assert result.error.reason is expected
    assert result.error.code == code
    assert SECRET not in result.error.message


async def test_1401_says_coinstore_does_not_tell_the_cause() -> None:
    result = await audit_with(answer(401, {"code": 1401, "message": "Unauthorized"}))
    assert result.error is not None
    message = result.error.message
    for cause in ("deleted", "IP", "permission"):
        assert cause in message
    assert result.error.refused_ip is None


async def test_signature_failed_points_at_the_signing_scheme() -> None:
    result = await audit_with(answer(401, {"code": 401, "message": "signature-failed"}))
    assert result.error is not None
    assert "wrong secret" in result.error.message
    assert "signing scheme" in result.error.message


def test_allowlist_is_the_probe_alone() -> None:
    assert CoinstoreAdapter.read_only_endpoints == frozenset({("POST", ACCOUNT_PATH)})
    assert CoinstoreAdapter.time_path is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/trade/order/place"),
        ("POST", "/api/trade/order/cancelAll"),
        ("GET", ACCOUNT_PATH),
        ("GET", "/api/v2/trade/order/active"),
    ],
    ids=["place", "cancel-all", "probe-as-get", "orders"],
)
async def test_allowlist_refuses_anything_else(method: str, path: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    transport = httpx.MockTransport(handler)
    client = build_client(
        exchange="coinstore",
        base_url="https://api.coinstore.com",
        allowlist=CoinstoreAdapter.read_only_endpoints,
        timeout=5,
        transport=transport,
    )
    async with client:
        with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
            await client.request(method, path)
    assert sent == []
