"""The OKX adapter: signing, the field mapping, and error classification on canned answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import Secret, Settings
from keymon.exchanges.okx import OkxAuth, iso_timestamp
from keymon.model import AuditResult, Reason
from keymon.simulator.okx import OkxSimulator
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
PASSPHRASE = "testpass"


def literal(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def test_iso_timestamp_has_milliseconds() -> None:
    """The documented format: ``2020-12-08T09:08:57.715Z``."""
    assert iso_timestamp(1607418537715) == "2020-12-08T09:08:57.715Z"
    assert iso_timestamp(1700000000000) == "2023-11-14T22:13:20.000Z"


def test_auth_reproduces_the_derived_vector() -> None:
    """OkxAuth signs the derived vector of exchange-apis.md §2.2 (OKX publishes none)."""
    auth = OkxAuth(literal(KEY), literal(SECRET), literal(PASSPHRASE), lambda: 1700000000000)
    signed = next(auth.auth_flow(httpx.Request("GET", "https://www.okx.com/api/v5/account/config")))
    assert signed.headers["OK-ACCESS-KEY"] == KEY
    assert signed.headers["OK-ACCESS-TIMESTAMP"] == "2023-11-14T22:13:20.000Z"
    assert signed.headers["OK-ACCESS-PASSPHRASE"] == PASSPHRASE
    assert signed.headers["OK-ACCESS-SIGN"] == "wMtvZ0zkRT5cgEHcJps8w6jHjcH+ZxrPtkbynwRWsjo="
    assert SECRET not in repr(auth)
    assert PASSPHRASE not in repr(auth)


def test_passphrase_is_required() -> None:
    """An OKX key without a passphrase does not load."""
    key = {"name": "k", "client": "acme", "exchange": "okx", "api_key": KEY, "api_secret": SECRET}
    with pytest.raises(ValueError, match="passphrase"):
        Settings(keys=[key])


def settings(**exchanges: Any) -> Settings:
    """One OKX key, trusted IP loopback."""
    key = {
        "name": "k",
        "client": "acme",
        "exchange": "okx",
        "api_key": KEY,
        "api_secret": SECRET,
        "passphrase": PASSPHRASE,
    }
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


def canned(status: int, body: object) -> httpx.AsyncBaseTransport:
    """Time answers normally; account/config answers ``status``/``body``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v5/public/time":
            return httpx.Response(200, json={"code": "0", "msg": "", "data": [{"ts": "1"}]})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return httpx.MockTransport(handler)


def envelope(code: str, msg: str = "", data: object = None) -> dict[str, object]:
    """A v5 envelope."""
    return {"code": code, "msg": msg, "data": data if data is not None else []}


async def test_guide_key_maps_to_read_and_spot_trade(clock: FakeClock) -> None:
    """read_only,trade: read and spot_trade on, withdraw off, futures not visible."""
    sim = OkxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, ips=["127.0.0.1", "203.0.113.0/24", "2001:db8::1"])
    result = await audit_with(sim.transport(), clock)
    assert result.ok, result.error
    assert result.facts is not None
    permissions = result.facts.permissions
    assert permissions["read"] is True
    assert permissions["spot_trade"] is True
    assert permissions["withdraw"] is False
    for hidden in ("futures_trade", "options_trade", "margin_trade"):
        assert hidden not in permissions  # trade covers them, but OKX does not say
    assert result.facts.ip_restricted is True
    assert result.facts.ip_list == ("127.0.0.1", "203.0.113.0/24", "2001:db8::1")
    assert result.facts.created_at is None
    assert result.facts.deadlines == ()


async def test_read_only_key_cannot_trade_anything(clock: FakeClock) -> None:
    """Without trade, every trading permission is observed off."""
    sim = OkxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, perm=["read_only"])
    result = await audit_with(sim.transport(), clock)
    assert result.facts is not None
    assert result.facts.permissions == {
        "read": True,
        "spot_trade": False,
        "withdraw": False,
        "margin_trade": False,
        "futures_trade": False,
        "options_trade": False,
    }


async def test_withdraw_and_unbound(clock: FakeClock) -> None:
    """withdraw maps to withdraw; ip "" means not restricted and an empty list."""
    sim = OkxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, perm=["read_only", "trade", "withdraw"], ips=[])
    result = await audit_with(sim.transport(), clock)
    assert result.facts is not None
    assert result.facts.permissions["withdraw"] is True
    assert result.facts.ip_restricted is False
    assert result.facts.ip_list == ()


async def test_unknown_perm_values_are_kept() -> None:
    """A perm value keymon does not know is kept under its own name."""
    data = [{"perm": "read_only,trade,transfer", "ip": "127.0.0.1"}]
    result = await audit_with(canned(200, envelope("0", "", data)))
    assert result.facts is not None
    assert result.facts.permissions["transfer"] is True


async def test_missing_ip_field_is_not_visible() -> None:
    """No ``ip`` field at all: the IP facts are unknown, not false."""
    result = await audit_with(canned(200, envelope("0", "", [{"perm": "read_only"}])))
    assert result.facts is not None
    assert result.facts.ip_restricted is None
    assert result.facts.ip_list is None


async def test_clock_drift_is_healed_by_one_resync(clock: FakeClock) -> None:
    """After the server clock jumps a minute, 50102 triggers one re-sync and the audit passes."""
    sim = OkxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE)
    s = settings()
    transport = sim.transport()
    async with Auditor(s, transport_factory=lambda _n: transport, clock=clock) as auditor:
        assert (await auditor.audit(s.keys[0])).ok
        sim.clock_skew_ms = 60_000
        result = await auditor.audit(s.keys[0])
    assert result.ok, result.error


async def test_served_simulator(clock: FakeClock) -> None:
    """The adapter audits a key over a real socket, on a served simulator."""
    sim = OkxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, perm=["read_only", "trade", "withdraw"])
    with sim.serve_in_thread() as base_url:
        result = await audit_with(None, clock, settings(okx={"base_url": base_url}))
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.permissions["withdraw"] is True


async def test_served_wrong_passphrase_is_key_rejected(clock: FakeClock) -> None:
    """A wrong passphrase is key_rejected, and the message does not quote the passphrase."""
    sim = OkxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, "another-passphrase")
    with sim.serve_in_thread() as base_url:
        result = await audit_with(None, clock, settings(okx={"base_url": base_url}))
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert result.error.code == "50105"
    assert PASSPHRASE not in result.error.message
    assert "passphrase" in result.error.message


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, envelope("50100", "API frozen"), Reason.KEY_REJECTED),
        (401, envelope("50101", "APIKey does not match current environment"), Reason.KEY_REJECTED),
        (401, envelope("50105", "Invalid OK-ACCESS-PASSPHRASE"), Reason.KEY_REJECTED),
        (401, envelope("50110", "Your IP 1.2.3.4 is not included"), Reason.KEY_REJECTED),
        (401, envelope("50111", "Invalid OK-ACCESS-KEY"), Reason.KEY_REJECTED),
        (401, envelope("50113", "Invalid Sign"), Reason.KEY_REJECTED),
        (401, envelope("50114", "Invalid Authority"), Reason.KEY_REJECTED),
        (401, envelope("50119", "API key doesn't exist"), Reason.KEY_REJECTED),
        (401, envelope("50120", "API key doesn't have permission"), Reason.KEY_REJECTED),
        (401, envelope("50121", "You can't access our API"), Reason.KEY_REJECTED),
        (403, envelope("50035", "requires an IP-bound key"), Reason.KEY_REJECTED),
        (200, envelope("50011", "Rate limit reached"), Reason.RATE_LIMITED),
        (429, envelope("50011", "Rate limit reached"), Reason.RATE_LIMITED),
        (429, envelope("50013", "Systems are busy"), Reason.RATE_LIMITED),
        (429, b"", Reason.RATE_LIMITED),
        (401, b"", Reason.KEY_REJECTED),
        (503, envelope("50001", "Service temporarily unavailable"), Reason.EXCHANGE_UNAVAILABLE),
        (502, b"<html>", Reason.EXCHANGE_UNAVAILABLE),
        (401, envelope("50103", "OK-ACCESS-KEY cannot be empty"), Reason.BAD_RESPONSE),
        (401, envelope("50112", "Invalid OK-ACCESS-TIMESTAMP"), Reason.BAD_RESPONSE),
        (200, b'{"code": "0", "da', Reason.BAD_RESPONSE),
        (200, envelope("0", "", [{"ip": ""}]), Reason.BAD_RESPONSE),
        (200, envelope("0", "", []), Reason.BAD_RESPONSE),
        (200, {"code": 0, "msg": "", "data": []}, Reason.BAD_RESPONSE),
        (200, envelope("59999", "?"), Reason.BAD_RESPONSE),
    ],
)
async def test_error_classification(status: int, body: object, expected: Reason) -> None:
    """Each documented code and status maps to its reason."""
    result = await audit_with(canned(status, body))
    assert result.error is not None
    assert result.error.reason is expected


async def test_persistent_50102_is_clock_skew() -> None:
    """50102 after the forced re-sync fails the audit with clock_skew."""
    result = await audit_with(canned(401, envelope("50102", "Timestamp request expired")))
    assert result.error is not None
    assert result.error.reason is Reason.CLOCK_SKEW


@pytest.mark.parametrize("ip", ["192.0.2.44", "2001:db8::7"])
async def test_ip_refusal_names_the_ip(ip: str) -> None:
    """50110 quotes the refused IP (IPv4 or IPv6): refused_ip is filled."""
    msg = f"Your IP {ip} is not included in your API key's IP whitelist."
    result = await audit_with(canned(401, envelope("50110", msg)))
    assert result.error is not None
    assert result.error.refused_ip == ip
    assert ip in result.error.message
