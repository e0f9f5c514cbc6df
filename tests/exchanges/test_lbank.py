"""The LBank adapter: MD5-then-HMAC signing against the derived vector, the exact POST it
sends (api_key and sign in the query, as LBank's official Java connector), the mapping of
every code it knows, what it keeps of the unconfirmed answer, and its allowlist."""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import Secret, Settings
from keymon.errors import ForbiddenRequest
from keymon.exchanges.base import build_client
from keymon.exchanges.lbank import LbankAdapter, LbankAuth, make_echostr, presign, sign
from keymon.model import AuditResult, Coverage, KeyFacts, Reason
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
ECHOSTR = "P3LHfw6tUIYWc8R2VQNy0ilKmdg5pjhbxC7"
#: exchange-apis.md §2.12, the derived vector.
VECTOR_JOINED = (
    f"api_key={KEY}&echostr={ECHOSTR}&signature_method=HmacSHA256&timestamp=1700000000000"
)
VECTOR_MD5 = "E6456350952CD085EE94DE6B8E6FB07F"
VECTOR_SIGN = "12c239c2956e5196b032d3601c34432fb50a5643d8ada8af6ea2980392403baf"
PROBE = "/v2/supplement/api_Restrictions.do"
TIME = "/v2/timestamp.do"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def _vector_params() -> dict[str, str]:
    return {
        "timestamp": "1700000000000",
        "signature_method": "HmacSHA256",
        "echostr": ECHOSTR,
        "api_key": KEY,
    }


def test_presign_sorts_by_name() -> None:
    assert presign(_vector_params()) == VECTOR_JOINED


def test_sign_reproduces_the_derived_vector() -> None:
    assert sign(SECRET, _vector_params()) == (VECTOR_MD5, VECTOR_SIGN)


def test_auth_puts_api_key_and_sign_in_the_query_with_the_vector() -> None:
    """As LBank's official Java connector sends it: api_key and sign in the query string, an
    empty body, and timestamp, signature_method and echostr only in headers (signed, but never
    sent as parameters); the secret goes nowhere."""
    auth = LbankAuth(_secret(KEY), _secret(SECRET), lambda: 1700000000000, lambda: ECHOSTR)
    signed = next(auth.auth_flow(httpx.Request("POST", f"https://x.test{PROBE}", data={})))
    assert signed.url.query.decode() == f"api_key={KEY}&sign={VECTOR_SIGN}"
    assert signed.content == b""
    assert signed.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert signed.headers["Content-Length"] == "0"
    assert signed.headers["timestamp"] == "1700000000000"
    assert signed.headers["signature_method"] == "HmacSHA256"
    assert signed.headers["echostr"] == ECHOSTR
    assert SECRET not in str(signed.url)
    assert SECRET not in repr(auth)


def test_auth_signs_business_parameters_too() -> None:
    auth = LbankAuth(_secret(KEY), _secret(SECRET), lambda: 1700000000000, lambda: ECHOSTR)
    signed = next(
        auth.auth_flow(httpx.Request("POST", "https://x.test/p", data={"symbol": "eth_btc"}))
    )
    params = dict(parse_qsl(signed.url.query.decode()))
    given = params.pop("sign")
    assert params == {"api_key": KEY, "symbol": "eth_btc"}
    headers = {name: signed.headers[name] for name in ("timestamp", "signature_method", "echostr")}
    assert given == sign(SECRET, params | headers)[1] != VECTOR_SIGN


def test_echostr_is_fresh_and_in_lbanks_range() -> None:
    first, second = make_echostr(), make_echostr()
    assert first != second
    assert 30 <= len(first) <= 40
    assert first.isalnum()


def settings() -> Settings:
    key = {"name": "k", "client": "acme", "exchange": "lbank", "api_key": KEY, "api_secret": SECRET}
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


def canned(
    answer: tuple[int, object],
    seen: list[httpx.Request] | None = None,
    server_ms: int = 1_795_000_000_000,
) -> httpx.AsyncBaseTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.url.path == TIME:
            body = {"result": "true", "data": server_ms, "error_code": 0, "ts": server_ms}
            return httpx.Response(200, json=body)
        status, body_ = answer
        content = body_ if isinstance(body_, bytes) else json.dumps(body_).encode()
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


def error(code: int | str, msg: str = "") -> tuple[int, object]:
    return 200, {"result": "false", "error_code": code, "msg": msg, "ts": 1}


GUESSED = {
    "result": "true",
    "data": {"enableReading": True, "ipRestrict": False, "enableWithdrawals": True},
    "error_code": 0,
    "ts": 1,
}


async def test_exact_request() -> None:
    """GET /v2/timestamp.do unsigned, then a POST to api_Restrictions.do with api_key and sign
    in the query (LBank's official Java connector), an empty body, and timestamp (on the
    server's clock), signature_method and echostr in headers, all three signed."""
    seen: list[httpx.Request] = []
    clock = FakeClock()
    server_ms = int(clock.now * 1000) - 40_000
    result = await audit_with(canned((200, GUESSED), seen, server_ms), clock)
    assert result.ok, result.error
    assert [(r.method, r.url.path) for r in seen] == [("GET", TIME), ("POST", PROBE)]
    call = seen[1]
    assert call.content == b""
    params = dict(parse_qsl(call.url.query.decode()))
    assert set(params) == {"api_key", "sign"}
    assert params["api_key"] == KEY
    assert int(call.headers["timestamp"]) == server_ms
    assert call.headers["signature_method"] == "HmacSHA256"
    assert 30 <= len(call.headers["echostr"]) <= 40
    given = params.pop("sign")
    headers = {name: call.headers[name] for name in ("timestamp", "signature_method", "echostr")}
    assert given == sign(SECRET, params | headers)[1]


async def test_unconfirmed_fields_are_not_kept() -> None:
    """Whatever api_Restrictions.do says, no permission or IP fact is claimed: only the
    acceptance counts, so a withdraw-looking flag is neither a fact nor a finding."""
    result = await audit_with(canned((200, GUESSED)))
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    assert dict(result.facts.permissions) == {}
    assert result.facts.ip_restricted is None
    assert result.findings == ()
    assert result.facts == KeyFacts(coverage=Coverage.LIVENESS)  # nothing of the answer kept


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error(10002, "Validation failed"), Reason.KEY_REJECTED),
        (error(10005, "Secret key does not exist"), Reason.KEY_REJECTED),
        (error("10005"), Reason.KEY_REJECTED),
        (error(10006, "User does not exist"), Reason.KEY_REJECTED),
        (error(10007, "Invalid signature"), Reason.KEY_REJECTED),
        (error(10022, "Invalid authorization"), Reason.KEY_REJECTED),
        (error(10600, "check timestamp"), Reason.CLOCK_SKEW),
        (error(10004, "Request too frequent"), Reason.RATE_LIMITED),
        (error(10000, "Internal error"), Reason.EXCHANGE_UNAVAILABLE),
        (error(10017, "Server Error"), Reason.EXCHANGE_UNAVAILABLE),
        (error(10031, "echostr"), Reason.BAD_RESPONSE),
        ((200, {"result": "false"}), Reason.BAD_RESPONSE),
        ((503, b"<html>"), Reason.EXCHANGE_UNAVAILABLE),
        ((200, b'{"result": "tr'), Reason.BAD_RESPONSE),
    ],
    ids=[
        "10002",
        "10005",
        "10005-str",
        "10006",
        "10007",
        "10022",
        "10600",
        "10004",
        "10000",
        "10017",
        "unknown",
        "no-code",
        "503",
        "truncated",
    ],
)
async def test_errors_are_classified(answer: tuple[int, object], expected: Reason) -> None:
    result = await audit_with(canned(answer))
    assert result.error is not None
    assert result.error.reason is expected


async def test_10022_says_the_ip_may_be_unbound() -> None:
    result = await audit_with(canned(error(10022, "Invalid authorization")))
    assert result.error is not None
    assert "IP" in result.error.message
    assert result.error.refused_ip is None


def test_adapter_declares_read_only_endpoints() -> None:
    assert LbankAdapter.read_only_endpoints == {("POST", PROBE), ("GET", TIME)}


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/v2/supplement/create_order.do"),
        ("POST", "/v2/supplement/withdraw.do"),
        ("POST", "/v2/supplement/user_info.do"),
        ("GET", PROBE),
        ("POST", "https://other.test" + PROBE),
    ],
    ids=["order", "withdraw", "unlisted-post", "right-path-wrong-method", "other-host"],
)
async def test_allowlist_refuses_anything_else(method: str, url: str) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    client = build_client(
        exchange="lbank",
        base_url="https://api.lbkex.com",
        allowlist=LbankAdapter.read_only_endpoints,
        timeout=5,
        transport=httpx.MockTransport(handler),
    )
    async with client:
        with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
            await client.request(method, url)
    assert sent == []
