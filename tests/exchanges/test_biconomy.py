"""The Biconomy adapter: the documented MD5 signing, the exact request, error mapping."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from keymon.audit import Auditor
from keymon.config import Settings
from keymon.errors import ForbiddenRequest
from keymon.exchanges.base import build_client
from keymon.exchanges.biconomy import USER_PATH, BiconomyAdapter, sign, signing_string
from keymon.model import AuditResult, Coverage, Reason
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
#: MD5 of "api_key=testkey&secret_key=testsecret", uppercase (derived; no official vector).
KEY_VECTOR = "26C011E5BFD2CF39F1CFE64CC3FC8293"
#: The docs' "Signature Authentication" example string, hashed (derived; the docs give no hash).
DOC_PARAMS = {
    "market": "BTC_USDT",
    "side": "1",
    "price": "50",
    "amount": "0.02",
    "api_key": "apiKey",
}
DOC_STRING = "amount=0.02&api_key=apiKey&market=BTC_USDT&price=50&side=1&secret_key=secretKey"
DOC_VECTOR = "8473A7DE18054C0619A104CB9D36DAA5"


def test_signing_string_is_the_docs_example() -> None:
    assert signing_string(DOC_PARAMS, "secretKey") == DOC_STRING
    assert sign(DOC_PARAMS, "secretKey") == DOC_VECTOR


def test_sign_of_the_probe_is_uppercase_md5() -> None:
    assert sign({"api_key": KEY}, SECRET) == KEY_VECTOR


def settings() -> Settings:
    key = {
        "name": "k",
        "client": "acme",
        "exchange": "biconomy",
        "api_key": KEY,
        "api_secret": SECRET,
    }
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


async def audit_with(handler: Any) -> AuditResult:
    s = settings()
    transport = httpx.MockTransport(handler)
    async with Auditor(s, transport_factory=lambda _n: transport, clock=FakeClock()) as auditor:
        return await auditor.audit(s.keys[0])


def answer(status: int, body: object) -> Any:
    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return handler


OK = {"code": 0, "message": "successful", "result": {"USDT": {"available": "1", "freeze": "0"}}}


async def test_sends_exactly_the_documented_request() -> None:
    """One form POST to /api/v1/private/user: api_key and sign, X-SITE-ID 127, no secret."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=OK)

    result = await audit_with(handler)
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    [request] = seen
    assert request.method == "POST"
    assert request.url.host == "www.biconomy.com"
    assert request.url.path == USER_PATH
    assert request.url.query == b""
    assert request.headers["X-SITE-ID"] == "127"
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert dict(parse_qsl(request.content.decode())) == {"api_key": KEY, "sign": KEY_VECTOR}
    assert SECRET.encode() not in request.content


@pytest.mark.parametrize(
    ("status", "body", "expected", "code"),
    [
        (200, {"code": 1, "message": "Invalid parameter"}, Reason.KEY_REJECTED, 1),
        (200, {"code": 2, "message": "Internal error"}, Reason.EXCHANGE_UNAVAILABLE, 2),
        (200, {"code": 3, "message": "Service unavailable"}, Reason.EXCHANGE_UNAVAILABLE, 3),
        (200, {"code": 5, "message": "Service timeout"}, Reason.EXCHANGE_UNAVAILABLE, 5),
        (200, {"code": 4, "message": "Method Not Found"}, Reason.BAD_RESPONSE, 4),
        (200, {"code": 10005, "message": "Record Not Found"}, Reason.BAD_RESPONSE, 10005),
        (401, b"", Reason.KEY_REJECTED, None),
        (429, b"Too Many Requests", Reason.RATE_LIMITED, None),
        (502, b"<html>", Reason.EXCHANGE_UNAVAILABLE, None),
        (200, b"{trunc", Reason.BAD_RESPONSE, None),
        (200, {"result": {}}, Reason.BAD_RESPONSE, "missing"),
        (200, [], Reason.BAD_RESPONSE, "missing"),
    ],
    ids=[
        "invalid-parameter",
        "internal",
        "unavailable",
        "timeout",
        "method-not-found",
        "site-id",
        "bare-401",
        "429",
        "502",
        "truncated",
        "no-code",
        "not-an-object",
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


async def test_invalid_parameter_says_it_is_an_inference() -> None:
    result = await audit_with(answer(200, {"code": 1, "message": "Invalid parameter"}))
    assert result.error is not None
    assert "Biconomy documents no finer code" in result.error.message
    assert "signing scheme" in result.error.message
    assert result.error.refused_ip is None


def test_allowlist_is_the_probe_alone() -> None:
    assert BiconomyAdapter.read_only_endpoints == frozenset({("POST", USER_PATH)})
    assert BiconomyAdapter.time_path is None


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/private/trade/limit"),
        ("POST", "/api/v1/private/trade/cancel_batch"),
        ("GET", USER_PATH),
        ("POST", "/api/v2/private/user"),
    ],
    ids=["limit", "cancel-batch", "probe-as-get", "v2-user"],
)
async def test_allowlist_refuses_anything_else(method: str, path: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    transport = httpx.MockTransport(handler)
    client = build_client(
        exchange="biconomy",
        base_url="https://www.biconomy.com",
        allowlist=BiconomyAdapter.read_only_endpoints,
        timeout=5,
        transport=transport,
    )
    async with client:
        with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
            await client.request(method, path)
    assert sent == []
