"""The XT adapter: signing, the exact request, the key's own settings from the user-center
API, and every documented code on canned answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
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
from keymon.exchanges.xt import XtAdapter, XtAuth, XtKey, XtSettings, permissions, pre_hash, sign
from keymon.model import Coverage, Reason

KEY = "xtKey01"
SECRET = "xtSecret01"
NOW_MS = 1_700_000_000_000
BASE = "https://api.xt.com"
VECTOR_PRE_HASH = (
    "validate-algorithms=HmacSHA256&validate-appkey=testkey&validate-recvwindow=5000"
    "&validate-timestamp=1700000000000#GET#/v4/balances"
)
VECTOR_SIGNATURE = "e66f1bb13d3266a402cc8d7cc2bcb3a561127e7cf92585df7bee3b116cf21876"


def literal(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def key() -> XtKey:
    config = {
        "name": "xt",
        "client": "acme",
        "exchange": "xt",
        "api_key": KEY,
        "api_secret": SECRET,
    }
    loaded = Settings(keys=[config]).keys[0]
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
    return {"rc": rc, "mc": mc, "ma": ma if ma is not None else [], "result": result}


Handler = Callable[[httpx.Request], httpx.Response]
API_KEY = "/v4/user/account/api-key"


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


def answering(status: int, body: Any) -> Handler:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    return handle


def entry(access_key: str = KEY, **fields: Any) -> dict[str, Any]:
    """One key as XT's example lists it (secretKey included, as XT's answer does)."""
    base: dict[str, Any] = {
        "id": 1,
        "userAccountId": "1352123154435",
        "userAccountLevel": 1,
        "userId": 1352123154435,
        "keyName": "desk",
        "bindIps": "127.0.0.1",
        "accessKey": access_key,
        "secretKey": SECRET,
        "isLock": 0,
        "roleScopes": "QUERY,TRADE",
        "tags": None,
        "createTime": "2023-02-17 05:41:43",
        "updateTime": "2023-02-17 05:41:43",
    }
    return base | fields


def listing(*entries: dict[str, Any]) -> dict[str, Any]:
    return envelope(0, "SUCCESS", list(entries), ma=[{}])


async def test_the_exact_request() -> None:
    """One signed GET of the user-center call, no query, no body, no time sync."""
    seen: list[httpx.Request] = []
    facts = await adapter(answering(200, listing(entry())), seen).audit(key())
    assert facts.coverage is Coverage.INTROSPECTION
    assert [(r.method, r.url.path) for r in seen] == [("GET", API_KEY)]
    call = seen[0]
    assert call.url.query == b""
    assert call.content == b""
    assert call.headers["validate-appkey"] == KEY
    assert call.headers["validate-recvwindow"] == "5000"
    assert call.headers["validate-timestamp"] == str(NOW_MS)
    expected = pre_hash(KEY, 5000, str(NOW_MS), "GET", API_KEY)
    assert call.headers["validate-signature"] == sign(SECRET, expected)


async def test_recv_window_comes_from_settings() -> None:
    seen: list[httpx.Request] = []
    await adapter(answering(200, listing(entry())), seen, timedelta(seconds=10)).audit(key())
    assert seen[0].headers["validate-recvwindow"] == "10000"


async def test_the_guides_key() -> None:
    """QUERY + TRADE, bound to one IP: read and spot (and margin) trading on, the rest off."""
    facts = await adapter(answering(200, listing(entry())), []).audit(key())
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": True,
        "margin_trade": True,
        "margin_loan": False,
        "futures_trade": False,
        "withdraw": False,
        "internal_transfer": False,
        "universal_transfer": False,
    }
    assert facts.ip_restricted is True
    assert facts.ip_list == ("127.0.0.1",)
    assert facts.created_at == datetime(2023, 2, 17, 5, 41, 43, tzinfo=UTC)
    assert facts.deadlines == ()
    assert facts.key_locked is False
    assert facts.account_kind == "master"


async def test_only_the_calling_keys_entry_is_read_and_no_secret_is_kept() -> None:
    other = entry("someone-else", roleScopes="QUERY,WITHDRAW", secretKey="otherSecret")
    facts = await adapter(answering(200, listing(other, entry())), []).audit(key())
    assert facts.permissions["withdraw"] is False
    text = repr(facts)
    assert SECRET not in text
    assert "otherSecret" not in text


@pytest.mark.parametrize(
    ("scopes", "on"),
    [
        ("QUERY,TRADE,WITHDRAW", {"read", "spot_trade", "margin_trade", "withdraw"}),
        (["QUERY", "FUTURE"], {"read", "futures_trade"}),
        ("QUERY,LEVER_LOAN", {"read", "margin_loan"}),
        ("TRANSFER", {"internal_transfer", "universal_transfer"}),
        ("QUERY_TRADE", {"read", "spot_trade", "margin_trade"}),
        ("QUERY_NO_TRADE", {"read"}),
        ("QUERY_TRADE_WITHDRAW", {"read", "spot_trade", "margin_trade", "withdraw"}),
        ("", set()),
    ],
    ids=["codes", "list", "lever-loan", "transfer", "legacy", "legacy-no-trade", "joined", "none"],
)
def test_role_scopes(scopes: Any, on: set[str]) -> None:
    granted = permissions(scopes)
    assert {name for name, value in granted.items() if value} == on
    assert set(granted) >= {"read", "spot_trade", "withdraw", "futures_trade"}


def test_unknown_scope_is_kept_raw() -> None:
    granted = permissions("QUERY,OPTIONS")
    assert granted["OPTIONS"] is True
    assert granted["read"] is True


@pytest.mark.parametrize(
    ("bind_ips", "restricted", "ips"),
    [
        ("", False, ()),
        (None, False, ()),
        ("1.2.3.4, 5.6.7.0/24", True, ("1.2.3.4", "5.6.7.0/24")),
    ],
    ids=["empty", "null", "two"],
)
async def test_bind_ips(bind_ips: Any, restricted: bool, ips: tuple[str, ...]) -> None:
    facts = await adapter(answering(200, listing(entry(bindIps=bind_ips))), []).audit(key())
    assert facts.ip_restricted is restricted
    assert facts.ip_list == ips


async def test_locked_key_and_sub_account_are_kept() -> None:
    body = listing(entry(isLock=1, userAccountLevel=2, createTime="2023-02-20 07:39:56.768"))
    facts = await adapter(answering(200, body), []).audit(key())
    assert facts.key_locked is True
    assert facts.account_kind == "sub"
    assert facts.created_at == datetime(2023, 2, 20, 7, 39, 56, 768000, tzinfo=UTC)


@pytest.mark.parametrize(
    "body",
    [
        listing(entry("someone-else")),
        envelope(0, "SUCCESS", {"not": "a list"}),
        listing(entry(roleScopes=None)),
        listing(entry(roleScopes=7)),
    ],
    ids=["key-not-listed", "not-a-list", "no-scopes", "scopes-not-text"],
)
async def test_unreadable_answers_are_bad_response(body: Any) -> None:
    with pytest.raises(ExchangeBadResponse):
        await adapter(answering(200, body), []).audit(key())


CODES = [
    ("AUTH_101", ExchangeAuthError, "deleted"),
    ("AUTH_102", ExchangeAuthError, "not activated"),
    ("AUTH_103", ExchangeAuthError, "wrong secret"),
    ("AUTH_104", ExchangeAuthError, "IP"),
    ("AUTH_105", ExchangeClockError, "outdated"),
    ("AUTH_106", ExchangeAuthError, "permissions"),
    ("NO_OPERATION_PERMISSION", ExchangeAuthError, "user-center"),
    ("COMMON_001", ExchangeAuthError, "does not exist"),
    ("COMMON_002", ExchangeUnavailable, "busy"),
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


async def test_outdated_is_clock_skew_without_a_retry() -> None:
    """No server time on the user-center host: nothing to re-sync with, so no retry."""
    seen: list[httpx.Request] = []
    with pytest.raises(ExchangeClockError, match="NTP"):
        await adapter(answering(200, envelope(1, "AUTH_105")), seen).audit(key())
    assert len(seen) == 1


@pytest.mark.parametrize(
    "code", ["AUTH_001", "AUTH_003", "AUTH_007", "FAILURE", "PERMISSION_LIMIT"]
)
async def test_header_and_other_codes_are_bad_response(code: str) -> None:
    with pytest.raises(ExchangeBadResponse, match=code):
        await adapter(answering(200, envelope(1, code)), []).audit(key())


async def test_ma_details_reach_the_message() -> None:
    body = envelope(1, "AUTH_103", ma=["signature error"])
    with pytest.raises(ExchangeAuthError, match="signature error"):
        await adapter(answering(200, body), []).audit(key())


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (429, ExchangeRateLimited),
        (500, ExchangeUnavailable),
        (502, ExchangeUnavailable),
        (503, ExchangeUnavailable),
        (404, ExchangeBadResponse),
    ],
)
async def test_http_statuses(status: int, error: type[ExchangeError]) -> None:
    with pytest.raises(error):
        await adapter(answering(status, {"error": "x"}), []).audit(key())


async def test_404_points_at_the_user_center_host() -> None:
    with pytest.raises(ExchangeBadResponse, match=r"api\.xt\.com"):
        await adapter(answering(404, {}), []).audit(key())


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v4/order"),
        ("POST", "/v4/withdraw"),
        ("POST", API_KEY),
        ("PUT", API_KEY),
        ("GET", "/v4/balances"),
    ],
    ids=["order", "withdraw", "create-key", "modify-key", "unlisted-get"],
)
async def test_allowlist_refuses_everything_else(method: str, path: str) -> None:
    seen: list[httpx.Request] = []
    client = adapter(answering(200, listing(entry())), seen)._client
    with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
        await client.request(method, path)
    assert seen == []


def test_allowlist_is_the_one_read() -> None:
    assert XtAdapter.read_only_endpoints == frozenset({("GET", API_KEY)})
