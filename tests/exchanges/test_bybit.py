"""The Bybit adapter: signing, the field mapping, and error classification on canned answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import ExchangesSettings, Secret, Settings
from keymon.exchanges.bybit import BybitAuth
from keymon.model import AuditResult, Reason
from keymon.simulator.bybit import BybitSimulator
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"


def test_auth_reproduces_the_derived_vector() -> None:
    """BybitAuth signs the derived vector of exchange-apis.md §2.1 (not an official one)."""
    auth = BybitAuth(
        Secret(SecretStr(KEY), "literal"),
        Secret(SecretStr(SECRET), "literal"),
        lambda: 1700000000000,
        5000,
    )
    signed = next(auth.auth_flow(httpx.Request("GET", "https://api.bybit.com/v5/user/query-api")))
    assert signed.headers["X-BAPI-API-KEY"] == KEY
    assert signed.headers["X-BAPI-TIMESTAMP"] == "1700000000000"
    assert signed.headers["X-BAPI-RECV-WINDOW"] == "5000"
    assert signed.headers["X-BAPI-SIGN"] == (
        "2fc9e776b3f07b2ee447067e0f627438055b198bb14dba79e1a3d50e40a5bd8d"
    )
    assert SECRET not in repr(auth)


def settings() -> Settings:
    """One Bybit key, trusted IP loopback."""
    key = {"name": "k", "client": "acme", "exchange": "bybit", "api_key": KEY, "api_secret": SECRET}
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


async def audit_with(
    transport: httpx.AsyncBaseTransport, clock: Callable[[], float] | None = None
) -> AuditResult:
    """Audit the one key through ``transport``."""
    s = settings()
    kwargs: dict[str, Any] = {"clock": clock} if clock is not None else {}
    async with Auditor(s, transport_factory=lambda _n: transport, **kwargs) as auditor:
        return await auditor.audit(s.keys[0])


def canned(
    status: int, body: object, headers: dict[str, str] | None = None
) -> httpx.AsyncBaseTransport:
    """Time answers normally; query-api answers ``status``/``body``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v5/market/time":
            return httpx.Response(200, json={"retCode": 0, "retMsg": "OK", "result": {}, "time": 1})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers or {})

    return httpx.MockTransport(handler)


def envelope(code: int, msg: str = "", result: object = None) -> dict[str, object]:
    """A v5 envelope."""
    return {"retCode": code, "retMsg": msg, "result": result or {}, "retExtInfo": {}, "time": 1}


async def test_mapping_of_documented_and_unknown_entries(clock: FakeClock) -> None:
    """Groups map onto keymon's permissions; unknown entries are kept as Group:Value."""
    sim = BybitSimulator(clock=clock)
    sim.add_key(
        KEY,
        SECRET,
        permissions={
            "ContractTrade": ["Order"],
            "Wallet": ["AccountTransfer", "SubMemberTransferList"],
            "Options": ["OptionsTrade"],
            "Earn": ["Earn"],
            "BitCard": ["Card"],
        },
        ips=["127.0.0.1", "203.0.113.0/24"],
    )
    result = await audit_with(sim.transport(), clock)
    assert result.facts is not None
    permissions = result.facts.permissions
    assert permissions["read"] is True
    assert permissions["futures_trade"] is True
    assert permissions["universal_transfer"] is True
    assert permissions["internal_transfer"] is True
    assert permissions["options_trade"] is True
    assert permissions["withdraw"] is False
    assert permissions["Earn:Earn"] is True
    assert permissions["BitCard:Card"] is True
    assert result.facts.ip_restricted is True
    assert result.facts.ip_list == ("127.0.0.1", "203.0.113.0/24")
    assert result.facts.deadlines == ()  # 1970 means no expiry


async def test_read_only_key_has_only_read(clock: FakeClock) -> None:
    """readOnly 1 turns every permission but read off."""
    sim = BybitSimulator(clock=clock)
    sim.add_key(KEY, SECRET, permissions={"Wallet": ["Withdraw"]}, read_only=True)
    result = await audit_with(sim.transport(), clock)
    assert result.facts is not None
    assert result.facts.permissions["read"] is True
    assert result.facts.permissions["withdraw"] is False
    assert result.facts.permissions["spot_trade"] is False


async def test_unbound_key_has_a_key_expiry(clock: FakeClock) -> None:
    """An unbound key's expiredAt becomes a key_expiry deadline 90 days out."""
    sim = BybitSimulator(clock=clock)
    sim.add_key(KEY, SECRET, ips=["*"])
    result = await audit_with(sim.transport(), clock)
    assert result.facts is not None
    assert result.facts.ip_restricted is False
    assert result.facts.ip_list == ()
    (deadline,) = result.facts.deadlines
    assert deadline.kind == "key_expiry"
    assert abs(deadline.at.timestamp() - (clock.now + 90 * 86400)) < 2


async def test_clock_drift_is_healed_by_one_resync(clock: FakeClock) -> None:
    """After the server clock jumps, 10002 triggers one re-sync and the audit succeeds."""
    sim = BybitSimulator(clock=clock)
    sim.add_key(KEY, SECRET)
    s = settings()
    transport = sim.transport()
    async with Auditor(s, transport_factory=lambda _n: transport, clock=clock) as auditor:
        assert (await auditor.audit(s.keys[0])).ok
        sim.clock_skew_ms = 30_000
        result = await auditor.audit(s.keys[0])
    assert result.ok, result.error


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, envelope(10003, "API key is invalid."), Reason.KEY_REJECTED),
        (200, envelope(10004, "error sign!"), Reason.KEY_REJECTED),
        (200, envelope(10005, "Permission denied"), Reason.KEY_REJECTED),
        (200, envelope(10010, "Unmatched IP"), Reason.KEY_REJECTED),
        (200, envelope(10006, "Too many visits!"), Reason.RATE_LIMITED),
        (200, envelope(10018, "exceeded the IP rate limit"), Reason.RATE_LIMITED),
        (429, b"", Reason.RATE_LIMITED),
        (403, b"Forbidden", Reason.BANNED),
        (401, b"", Reason.KEY_REJECTED),
        (200, envelope(10016, "Server error"), Reason.EXCHANGE_UNAVAILABLE),
        (502, b"<html>", Reason.EXCHANGE_UNAVAILABLE),
        (200, b'{"retCode": 0, "res', Reason.BAD_RESPONSE),
        (200, envelope(0, "", {"apiKey": KEY}), Reason.BAD_RESPONSE),
        (200, envelope(0, "", {"apiKey": "other", "permissions": {}}), Reason.BAD_RESPONSE),
        (200, envelope(99999, "?"), Reason.BAD_RESPONSE),
    ],
)
async def test_error_classification(status: int, body: object, expected: Reason) -> None:
    """Each documented code and status maps to its reason."""
    result = await audit_with(canned(status, body))
    assert result.error is not None
    assert result.error.reason is expected


async def test_ip_refusal_names_the_ip_when_the_message_does() -> None:
    """A 10010 message that quotes an IP fills refused_ip."""
    result = await audit_with(canned(200, envelope(10010, "Unmatched IP, ip: 192.0.2.44")))
    assert result.error is not None
    assert result.error.refused_ip == "192.0.2.44"
    assert "192.0.2.44" in result.error.message


async def test_rate_limit_retry_after_from_reset_header(clock: FakeClock) -> None:
    """10006 carries retry_after from X-Bapi-Limit-Reset-Timestamp."""
    reset = str(int(clock.now * 1000) + 800)
    transport = canned(200, envelope(10006), {"X-Bapi-Limit-Reset-Timestamp": reset})
    result = await audit_with(transport, clock)
    assert result.error is not None
    assert result.error.retry_after == pytest.approx(0.8)


async def test_http_403_pauses_the_exchange_for_ten_minutes(clock: FakeClock) -> None:
    """After a 403 the adapter sends nothing to Bybit until the 10-minute pause has passed."""
    sim = BybitSimulator(clock=clock, ip_limit_per_5s=1)
    sim.add_key(KEY, SECRET)
    s = settings().model_copy(
        update={
            "exchanges": ExchangesSettings.model_validate({"bybit": {"time_sync_interval": "1h"}})
        }
    )
    transport = sim.transport()
    monotonic = FakeClock(0.0)
    async with Auditor(
        s, transport_factory=lambda _n: transport, clock=clock, monotonic=monotonic
    ) as auditor:
        first = await auditor.audit(s.keys[0])  # time sync passes, query-api gets 403
        sent = sim.request_count(KEY)
        second = await auditor.audit(s.keys[0])
        assert sim.request_count(KEY) == sent  # nothing was sent during the pause
        monotonic.advance(601)
        clock.advance(601)
        third = await auditor.audit(s.keys[0])
    assert first.error is not None
    assert first.error.reason is Reason.BANNED
    assert second.error is not None
    assert second.error.reason is Reason.BANNED
    assert third.ok, third.error
