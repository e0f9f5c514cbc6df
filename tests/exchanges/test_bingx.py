"""The BingX adapter: signing (official vectors), both answer shapes, the idle-deletion note and
error classification, on canned answers and against the simulator."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import Secret, Settings
from keymon.exchanges.bingx import (
    IDLE_DELETION_NOTE,
    BingxAuth,
    parameter_string,
    sign,
    signed_text,
)
from keymon.model import AuditResult, Reason, Rule
from keymon.simulator.bingx import BingxSimulator
from keymon.state import facts_from_json, facts_to_json
from tests.conftest import FakeClock

# BingX-API/BingX-spot-api-doc "Signature Authentication" (exchange-apis.md §2.7).
DOC_KEY = "Zsm4DcrHBTewmVaElrdwA67PmivPv6VDK6JAkiECZ9QfcUnmn67qjCOgvRuZVOzU"
DOC_SECRET = "UuGuyEGt6ZEkpUObCYCmIfh0elYsZVh80jlYwpJuRZEw70t6vomMH7Sjmf94ztSI"
DOC_TIMESTAMP = 1649404670162
V1 = "quoteOrderQty=20&side=BUY&symbol=ETHUSDT&timestamp=1649404670162&type=MARKET"
SIG_V1 = "428a3c383bde514baff0d10d3c20e5adfaacaf799e324546dafe5ccc480dd827"
V2_QUERY = "quoteOrderQty=20&side=BUY&symbol=ETHUSDT"
V2_BODY = "timestamp=1649404670162&type=MARKET"
SIG_V2 = "94e0b4925060a615e1e372d4c929015d4b59d3c89067dc0beeafcfb33a6d8d10"

KEY = "bingxTestKey0001"
SECRET = "bingxTestSecret"
PERMISSIONS = "/openApi/v1/account/apiPermissions"
TIME = "/openApi/swap/v2/server/time"
DAY = 86400.0


def literal(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


# ----------------------------------------------------------------------------- signing


def test_official_vector_query_string() -> None:
    """The documented query-string example signs to the documented signature."""
    assert sign(DOC_SECRET, V1) == SIG_V1


def test_official_vector_query_and_body_joined_without_separator() -> None:
    """Query string and body are signed back to back, no '&' between: the second vector."""
    assert signed_text(V2_QUERY, V2_BODY) == V2_QUERY + V2_BODY
    assert sign(DOC_SECRET, signed_text(V2_QUERY, V2_BODY)) == SIG_V2
    assert sign(DOC_SECRET, f"{V2_QUERY}&{V2_BODY}") != SIG_V2


def test_auth_reproduces_the_official_query_vector() -> None:
    """BingxAuth sorts the parameters, adds the timestamp and signs: the official request."""
    auth = BingxAuth(literal(DOC_KEY), literal(DOC_SECRET), lambda: DOC_TIMESTAMP, None)
    url = "https://open-api.bingx.com/openApi/spot/v1/trade/order?type=MARKET&symbol=ETHUSDT"
    request = httpx.Request("GET", url + "&side=BUY&quoteOrderQty=20")
    signed = next(auth.auth_flow(request))
    assert signed.url.query.decode() == f"{V1}&signature={SIG_V1}"
    assert signed.headers["X-BX-APIKEY"] == DOC_KEY
    assert DOC_SECRET not in repr(auth)


def test_auth_signs_the_body_after_the_query() -> None:
    """A request body is signed right after the query string, without a separator."""
    auth = BingxAuth(literal(DOC_KEY), literal(DOC_SECRET), lambda: DOC_TIMESTAMP, None)
    request = httpx.Request(
        "POST", f"https://open-api.bingx.com/x?{V2_QUERY}", content=b"type=MARKET"
    )
    signed = next(auth.auth_flow(request))
    query, _, signature = signed.url.query.decode().rpartition("&signature=")
    assert query == f"{V2_QUERY}&timestamp={DOC_TIMESTAMP}"
    expected = hmac.new(DOC_SECRET.encode(), f"{query}type=MARKET".encode(), hashlib.sha256)
    assert signature == expected.hexdigest()


def test_auth_signs_the_permissions_call_with_recv_window() -> None:
    """The apiPermissions call carries recvWindow, timestamp, signature (in that order)."""
    auth = BingxAuth(literal(KEY), literal(SECRET), lambda: 1700000000000, 5000)
    signed = next(auth.auth_flow(httpx.Request("GET", f"https://open-api.bingx.com{PERMISSIONS}")))
    text = "recvWindow=5000&timestamp=1700000000000"
    expected = hmac.new(SECRET.encode(), text.encode(), hashlib.sha256).hexdigest()
    assert signed.url.query.decode() == f"{text}&signature={expected}"
    assert signed.headers["X-BX-APIKEY"] == KEY


def test_parameter_string_is_ascii_ordered() -> None:
    """Names sort in ASCII order (upper case before lower case); values are kept as given."""
    pairs = [("timestamp", "1"), ("Zeta", "%20"), ("recvWindow", "5000")]
    assert parameter_string(pairs) == "Zeta=%20&recvWindow=5000&timestamp=1"


# ----------------------------------------------------------------------------- harness


def settings(**bingx: Any) -> Settings:
    """One BingX key, trusted IP loopback."""
    key = {"name": "k", "client": "acme", "exchange": "bingx", "api_key": KEY, "api_secret": SECRET}
    exchanges = {"bingx": bingx} if bingx else {}
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"], exchanges=exchanges)


async def audit_with(
    transport: httpx.AsyncBaseTransport | None,
    clock: Callable[[], float] | None = None,
    s: Settings | None = None,
) -> AuditResult:
    """Audit the one key through ``transport`` (None: the network, at base_url)."""
    s = s or settings()
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    factory = (lambda _n: transport) if transport is not None else None
    async with Auditor(s, transport_factory=factory, **kwargs) as auditor:
        return await auditor.audit(s.keys[0])


def canned(
    status: int, body: object, headers: dict[str, str] | None = None
) -> httpx.AsyncBaseTransport:
    """Server time answers normally; apiPermissions answers ``status``/``body``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == TIME:
            return httpx.Response(200, json={"code": 0, "msg": "", "data": {"serverTime": 1}})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers)

    return httpx.MockTransport(handler)


def ok(data: object) -> dict[str, object]:
    """A success envelope."""
    return {"code": 0, "msg": "", "timestamp": 1, "data": data}


def error(code: int, msg: str = "") -> dict[str, object]:
    """An error envelope."""
    return {"code": code, "msg": msg, "timestamp": 1}


def documented(**overrides: object) -> dict[str, object]:
    """The documented apiPermissions data: the guide's key, bound to loopback."""
    data: dict[str, object] = {
        "apiKey": KEY,
        "permissions": [1, 2],
        "ipAddresses": ["127.0.0.1"],
        "note": "mm",
    }
    data.update(overrides)
    return data


# ----------------------------------------------------------------------------- mapping


async def test_documented_codes_map_onto_the_vocabulary() -> None:
    """Codes 1-5 and 7 map; the list is the whole set, so absent codes are off."""
    result = await audit_with(canned(200, ok(documented(permissions=[2, 1, 3]))))
    assert result.facts is not None, result.error
    assert result.facts.permissions == {
        "read": True,
        "spot_trade": True,
        "futures_trade": True,
        "universal_transfer": False,
        "withdraw": False,
        "internal_transfer": False,
    }
    assert result.facts.ip_list == ("127.0.0.1",)
    assert result.facts.ip_restricted is True
    assert result.facts.created_at is None
    assert result.facts.deadlines == ()


async def test_every_documented_code() -> None:
    """4 universal transfer, 5 withdraw, 7 internal transfer; an unknown code is kept raw."""
    result = await audit_with(canned(200, ok(documented(permissions=[2, 4, 5, 7, 6]))))
    assert result.facts is not None, result.error
    p = result.facts.permissions
    assert (p["universal_transfer"], p["withdraw"], p["internal_transfer"]) == (True, True, True)
    assert p["6"] is True
    assert p["spot_trade"] is False
    assert {f.rule for f in result.findings} >= {Rule.WITHDRAW_ENABLED}


async def test_empty_ip_list_is_unrestricted_and_visible() -> None:
    """``ipAddresses: []`` is a key bound to no IP: restricted off, an empty visible list."""
    result = await audit_with(canned(200, ok(documented(ipAddresses=[]))))
    assert result.facts is not None
    assert result.facts.ip_restricted is False
    assert result.facts.ip_list == ()


async def test_binance_style_flags_are_read_too() -> None:
    """The shape exchange-apis.md §2.7 describes: flags, ipRestrict and createTime."""
    data = {
        "ipRestrict": True,
        "createTime": 1671262117327,
        "enableReading": True,
        "enableSpotAndMarginTrading": True,
        "enableWithdrawals": False,
        "enableInternalTransfer": False,
        "enableFutures": False,
        "permitsUniversalTransfer": False,
        "enableCopyTrading": False,
    }
    result = await audit_with(canned(200, ok(data)))
    assert result.facts is not None, result.error
    assert result.facts.permissions == {
        "read": True,
        "spot_trade": True,
        "withdraw": False,
        "internal_transfer": False,
        "futures_trade": False,
        "universal_transfer": False,
        "enableCopyTrading": False,
    }
    assert result.facts.ip_restricted is True
    assert result.facts.ip_list is None  # this shape shows no list: untrusted_ip not evaluated
    assert result.facts.created_at == datetime.fromtimestamp(1671262117.327, UTC)
    assert result.ok
    assert Rule.UNTRUSTED_IP not in {c.rule for c in result.evaluation.checks}


async def test_flags_without_withdrawals_leave_withdraw_not_visible() -> None:
    """BingX's older flag set has no enableWithdrawals: withdraw is then not visible."""
    data = {"ipRestrict": False, "enableReading": True, "enableSpotAndMarginTrading": True}
    result = await audit_with(canned(200, ok(data)))
    assert result.facts is not None
    assert "withdraw" not in result.facts.permissions
    assert Rule.WITHDRAW_ENABLED not in {c.rule for c in result.evaluation.checks}


# ----------------------------------------------------------------------------- deletion risk


async def test_unbound_trading_key_is_at_risk_of_deletion() -> None:
    """An unbound key that can trade: ip_unrestricted says BingX deletes it after 14 idle days."""
    result = await audit_with(canned(200, ok(documented(ipAddresses=[]))))
    assert result.facts is not None
    (finding,) = [f for f in result.findings if f.rule is Rule.IP_UNRESTRICTED]
    assert "14 days without use" in finding.message
    assert result.facts.deadlines == ()  # no date is invented


@pytest.mark.parametrize(
    "data",
    [
        documented(permissions=[2], ipAddresses=[]),
        documented(permissions=[1, 2]),
    ],
    ids=["unbound-read-only", "bound-trading"],
)
async def test_no_deletion_risk_for_read_only_or_bound_keys(data: dict[str, object]) -> None:
    """Read-only keys and IP-bound keys do not expire at BingX: no note."""
    result = await audit_with(canned(200, ok(data)))
    assert result.facts is not None
    assert result.facts.ip_unrestricted_note is None
    assert all("14 days" not in f.message for f in result.findings)


async def test_the_note_survives_a_restart() -> None:
    """The note is stored with the facts; rows written before it existed read back without."""
    result = await audit_with(canned(200, ok(documented(ipAddresses=[]))))
    assert result.facts is not None
    stored = facts_to_json(result.facts)
    assert facts_from_json(stored).ip_unrestricted_note == IDLE_DELETION_NOTE
    legacy = json.loads(stored)
    del legacy["ip_unrestricted_note"]
    assert facts_from_json(json.dumps(legacy)).ip_unrestricted_note is None


async def test_keymon_polling_is_use_and_an_idle_key_goes(clock: FakeClock) -> None:
    """Daily audits keep an unbound trading key alive; 14 idle days later it is rejected."""
    sim = BingxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, permissions=[1, 2], ips=[])
    s = settings()
    transport = sim.transport()
    async with Auditor(s, transport_factory=lambda _n: transport, clock=clock) as auditor:
        for _ in range(20):
            clock.advance(DAY)
            assert (await auditor.audit(s.keys[0])).ok
        clock.advance(15 * DAY)
        result = await auditor.audit(s.keys[0])
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert result.error.code == 100413
    assert sim.deleted_idle == [KEY]


# ----------------------------------------------------------------------------- simulator


async def test_against_the_simulator(clock: FakeClock) -> None:
    """The adapter signs requests the simulator accepts and maps its answer."""
    sim = BingxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, permissions=[1, 2, 5], ips=["127.0.0.1", "198.51.100.9"])
    result = await audit_with(sim.transport(), clock)
    assert result.facts is not None, result.error
    assert result.facts.permissions["withdraw"] is True
    assert result.facts.ip_list == ("127.0.0.1", "198.51.100.9")
    assert {f.rule for f in result.findings} == {Rule.WITHDRAW_ENABLED, Rule.UNTRUSTED_IP}


async def test_served_simulator(clock: FakeClock) -> None:
    """The adapter audits a key over a real socket, on a served simulator."""
    sim = BingxSimulator(clock=clock)
    sim.add_key(KEY, SECRET)
    with sim.serve_in_thread() as base_url:
        result = await audit_with(None, clock, settings(base_url=base_url))
    assert result.ok, result.error
    assert result.findings == ()


async def test_clock_drift_is_healed_by_one_resync(clock: FakeClock) -> None:
    """After the server clock jumps a minute, 100421 triggers one re-sync and the audit passes."""
    sim = BingxSimulator(clock=clock)
    sim.add_key(KEY, SECRET)
    s = settings()
    transport = sim.transport()
    async with Auditor(s, transport_factory=lambda _n: transport, clock=clock) as auditor:
        assert (await auditor.audit(s.keys[0])).ok
        sim.clock_skew_ms = 60_000
        result = await auditor.audit(s.keys[0])
    assert result.ok, result.error


async def test_wrong_secret_is_key_rejected(clock: FakeClock) -> None:
    """A wrong secret is 100001, key_rejected, and the message does not quote the secret."""
    sim = BingxSimulator(clock=clock)
    sim.add_key(KEY, "another-secret")
    result = await audit_with(sim.transport(), clock)
    assert result.error is not None
    assert (result.error.reason, result.error.code) == (Reason.KEY_REJECTED, 100001)
    assert SECRET not in result.error.message


async def test_recv_window_is_sent(clock: FakeClock) -> None:
    """exchanges.bingx.recv_window goes out as recvWindow in ms."""
    seen: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == PERMISSIONS:
            seen.append(dict(parse_qsl(request.url.query.decode())))
        return httpx.Response(200, json=ok({"serverTime": 1} | documented()))

    await audit_with(httpx.MockTransport(handler), clock, settings(recv_window="2s"))
    assert seen[0]["recvWindow"] == "2000"


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, error(100001, "Signature verification failed"), Reason.KEY_REJECTED),
        (200, error(100413, "Incorrect apiKey"), Reason.KEY_REJECTED),
        (200, error(100413, "Null apiKey"), Reason.KEY_REJECTED),
        (200, error(100419, "IP does not match IP whitelist"), Reason.KEY_REJECTED),
        (200, error(100004, "Permission denied"), Reason.KEY_REJECTED),
        (200, error(100414, "The account is abnormal"), Reason.KEY_REJECTED),
        (400, error(100419, "IP does not match IP whitelist"), Reason.KEY_REJECTED),
        (200, error(100410, "rate limited"), Reason.RATE_LIMITED),
        (429, b"", Reason.RATE_LIMITED),
        (418, b"", Reason.BANNED),
        (401, b"", Reason.KEY_REJECTED),
        (403, b"<html>blocked</html>", Reason.EXCHANGE_UNAVAILABLE),
        (200, error(100500, "We had a problem with our server"), Reason.EXCHANGE_UNAVAILABLE),
        (200, error(100503, "Server busy"), Reason.EXCHANGE_UNAVAILABLE),
        (503, error(99999, "maintenance"), Reason.EXCHANGE_UNAVAILABLE),
        (502, b"<html>", Reason.EXCHANGE_UNAVAILABLE),
        (200, error(100412, "Null signature"), Reason.BAD_RESPONSE),
        (200, error(80014, "Invalid parameters, err: recvWindow"), Reason.BAD_RESPONSE),
        (200, error(100400, "Invalid parameter"), Reason.BAD_RESPONSE),
        (200, b'{"code": 0, "da', Reason.BAD_RESPONSE),
        (200, {"code": "0", "msg": "", "data": documented()}, Reason.BAD_RESPONSE),
        (200, ok(None), Reason.BAD_RESPONSE),
        (200, ok({}), Reason.BAD_RESPONSE),
        (200, ok({"note": "x", "ipAddresses": []}), Reason.BAD_RESPONSE),
        (200, ok(documented(permissions="1,2")), Reason.BAD_RESPONSE),
        (200, ok(documented(permissions=[None])), Reason.BAD_RESPONSE),
        (200, ok(documented(ipAddresses="127.0.0.1")), Reason.BAD_RESPONSE),
        (200, ok([documented()]), Reason.BAD_RESPONSE),
        (404, b"not found", Reason.BAD_RESPONSE),
    ],
)
async def test_error_classification(status: int, body: object, expected: Reason) -> None:
    """Each documented code, status and malformed answer maps to its reason."""
    result = await audit_with(canned(status, body))
    assert result.error is not None
    assert result.error.reason is expected, result.error


@pytest.mark.parametrize(
    "body",
    [error(100421, "Null timestamp or timestamp mismatch"), error(80014, "timestamp is invalid")],
    ids=["100421", "80014"],
)
async def test_persistent_timestamp_refusal_is_clock_skew(body: dict[str, object]) -> None:
    """A timestamp refusal after the forced re-sync fails the audit with clock_skew."""
    result = await audit_with(canned(200, body))
    assert result.error is not None
    assert result.error.reason is Reason.CLOCK_SKEW


async def test_ip_refusal_names_the_ip() -> None:
    """100419 quotes the refused IP: refused_ip is filled and the message names it."""
    msg = (
        "your current request IP is 192.0.2.44 does not match IP whitelist , please go to "
        "https://bingx.com/en/account/api/ to verify the ip you have set"
    )
    result = await audit_with(canned(200, error(100419, msg)))
    assert result.error is not None
    assert result.error.refused_ip == "192.0.2.44"
    assert "192.0.2.44" in result.error.message


@pytest.mark.parametrize(
    ("msg", "headers", "expected"),
    [
        (
            "code:100410:The endpoint trigger frequency limit rule is currently in the disabled "
            "period and will be unblocked after 1795000300000",
            {},
            300.0,
        ),
        ("rate limited", {"X-RateLimit-Requests-Expire": "1795000001000"}, 1.0),
        ("rate limited", {"Retry-After": "7"}, 7.0),
        ("rate limited", {}, None),
    ],
    ids=["message", "expire-header", "retry-after", "unknown"],
)
async def test_rate_limit_says_when_to_retry(
    clock: FakeClock, msg: str, headers: dict[str, str], expected: float | None
) -> None:
    """100410's retry time comes from the message, the Expire header or Retry-After."""
    result = await audit_with(canned(200, error(100410, msg), headers), clock)
    assert result.error is not None
    assert result.error.reason is Reason.RATE_LIMITED
    assert result.error.retry_after == expected
