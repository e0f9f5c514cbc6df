"""The HTX adapter: signing, the field mapping, and error classification on canned answers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from keymon.audit import Auditor
from keymon.config import Secret, Settings
from keymon.exchanges.htx import HtxAdapter, HtxAuth, HtxSettings, parse_ips, permissions
from keymon.model import AuditResult, Reason
from keymon.simulator.htx import HtxSimulator
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
UID = "123456"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def test_auth_reproduces_the_derived_vector() -> None:
    """HtxAuth signs exchange-apis.md §2.15's derived vector (Timestamp 2023-11-14T22:13:20)."""
    auth = HtxAuth(_secret(KEY), _secret(SECRET), lambda: 1700000000.0)
    request = httpx.Request("GET", "https://api.huobi.pro/v2/user/api-key?uid=123456")
    signed = next(auth.auth_flow(request))
    params = dict(parse_qsl(signed.url.query.decode()))
    assert params["Signature"] == "VO2docXQYWc2Y4JphocNFMmS6RZwXWxWAswXH3ZLWlQ="
    assert params["Timestamp"] == "2023-11-14T22:13:20"
    assert b"Timestamp=2023-11-14T22%3A13%3A20" in signed.url.query
    assert params["AccessKeyId"] == KEY
    assert SECRET not in repr(auth)


def settings(**key_overrides: Any) -> Settings:
    """One HTX key, trusted IP loopback."""
    key = {
        "name": "k",
        "client": "acme",
        "exchange": "htx",
        "api_key": KEY,
        "api_secret": SECRET,
        "uid": UID,
        **key_overrides,
    }
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32"])


async def audit_with(transport: httpx.AsyncBaseTransport, **key_overrides: Any) -> AuditResult:
    """Audit the one key through ``transport``."""
    s = settings(**key_overrides)
    async with Auditor(s, transport_factory=lambda _n: transport) as auditor:
        return await auditor.audit(s.keys[0])


def canned(status: int, body: object) -> httpx.AsyncBaseTransport:
    """Every request answers ``status``/``body``."""

    def handler(request: httpx.Request) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content)

    return httpx.MockTransport(handler)


def listing(**overrides: object) -> dict[str, object]:
    """A v2 answer listing the calling key, with overrides."""
    entry: dict[str, object] = {
        "accessKey": KEY,
        "note": "bot",
        "permission": "readOnly,trade",
        "ipAddresses": "127.0.0.1",
        "validDays": -1,
        "status": "normal",
        "createTime": 1700000000000,
        "updateTime": 1700000000000,
    }
    entry.update(overrides)
    return {"code": 200, "data": [entry], "ok": True}


def test_key_requires_a_uid() -> None:
    """An HTX key without uid (or with a non-numeric one) does not load."""
    key = settings().keys[0].model_dump()
    with pytest.raises(ValidationError, match="uid"):
        Settings(keys=[{k: v for k, v in key.items() if k != "uid"}])
    with pytest.raises(ValidationError, match="uid"):
        settings(uid="abc")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("readOnly", {"read": True, "spot_trade": False, "withdraw": False}),
        ("readOnly,trade", {"read": True, "spot_trade": True, "withdraw": False}),
        ("readOnly,trade,withdraw", {"read": True, "spot_trade": True, "withdraw": True}),
    ],
)
def test_permission_string_maps(value: str, expected: dict[str, bool]) -> None:
    """readOnly -> read, trade -> spot_trade, withdraw -> withdraw."""
    result = permissions(value)
    assert {k: result[k] for k in expected} == expected
    if "trade" not in value:
        assert result["margin_trade"] is False
        assert result["futures_trade"] is False


def test_unknown_permission_is_kept_raw() -> None:
    """An unknown value is kept under its own name."""
    assert permissions("readOnly,otc")["otc"] is True


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ()),
        ("", ()),
        ("1.2.3.4", ("1.2.3.4",)),
        ("1.2.3.4, 10.0.0.0/8", ("1.2.3.4", "10.0.0.0/8")),
    ],
)
def test_ip_addresses_string(value: str | None, expected: tuple[str, ...]) -> None:
    """``ipAddresses`` is a comma string; empty means unbound."""
    assert parse_ips(value) == expected


async def test_canned_answer_maps() -> None:
    """Permissions, IPs and createTime come through; validDays is no deadline."""
    result = await audit_with(canned(200, listing()))
    assert result.facts is not None, result.error
    assert result.facts.permissions["spot_trade"] is True
    assert result.facts.ip_list == ("127.0.0.1",)
    assert result.facts.ip_restricted is True
    assert result.facts.created_at == datetime.fromtimestamp(1700000000, UTC)
    assert result.facts.deadlines == ()


async def test_empty_ip_addresses_is_unrestricted() -> None:
    """``ipAddresses: ""`` means the key is bound to no IP."""
    result = await audit_with(canned(200, listing(ipAddresses="")))
    assert result.facts is not None
    assert result.facts.ip_restricted is False


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (
            200,
            {"status": "error", "err-code": "api-signature-not-valid", "err-msg": "x"},
            Reason.KEY_REJECTED,
        ),
        (200, {"code": 1003, "message": "something"}, Reason.BAD_RESPONSE),
        (401, b"unauthorized", Reason.KEY_REJECTED),
        (429, b"slow down", Reason.RATE_LIMITED),
        (503, b"<html>", Reason.EXCHANGE_UNAVAILABLE),
        (200, b'{"code": 200, "da', Reason.BAD_RESPONSE),
    ],
)
async def test_errors(status: int, body: object, expected: Reason) -> None:
    """Error bodies and statuses map onto keymon's reasons."""
    result = await audit_with(canned(status, body))
    assert result.error is not None
    assert result.error.reason is expected


@pytest.mark.parametrize(
    "body",
    [
        {"code": 200, "data": None},
        {"code": 200, "data": []},
        {"code": 200, "data": [{"accessKey": "someone-else", "permission": "readOnly"}]},
        listing(permission=None),
    ],
)
async def test_unexpected_shapes_are_bad_response(body: object) -> None:
    """No list, no entry for the calling key, or no permission: bad_response."""
    result = await audit_with(canned(200, body))
    assert result.error is not None
    assert result.error.reason is Reason.BAD_RESPONSE


async def test_against_the_simulator(clock: FakeClock) -> None:
    """The adapter signs requests the simulator accepts and maps its answer."""
    sim = HtxSimulator(clock=clock)
    sim.add_key(KEY, SECRET, UID, permission=["readOnly", "trade", "withdraw"], ips=["127.0.0.1"])
    s = settings()
    async with Auditor(s, transport_factory=lambda _n: sim.transport(), clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.facts is not None, result.error
    assert result.facts.permissions["withdraw"] is True
    assert result.facts.ip_list == ("127.0.0.1",)
    assert result.facts.account_status == "working"
    assert result.facts.trading_status_error is None
    assert (sim.requests_to("/v2/user/api-key"), sim.requests_to("/v1/account/accounts")) == (1, 1)


async def test_a_rejected_key_sends_no_accounts_call(clock: FakeClock) -> None:
    """The key's own call fails the audit: the accounts are not read after it."""
    sim = HtxSimulator(clock=clock)
    sim.add_key(KEY, "othersecret", UID)
    s = settings()
    async with Auditor(s, transport_factory=lambda _n: sim.transport(), clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.error is not None
    assert sim.requests_to("/v1/account/accounts") == 0


def test_an_audit_is_granted_the_weight_of_its_calls() -> None:
    """The key's call is the mandatory request; the accounts read is the one extra request,
    paid from spare budget in the daemon, and none when turned off."""
    on = HtxAdapter(httpx.AsyncClient(), settings().exchanges.htx)
    off = HtxAdapter(httpx.AsyncClient(), HtxSettings(trading_status=False))
    assert (on.audit_weight, on.extras_weight) == (1, 1)
    assert (off.audit_weight, off.extras_weight) == (1, 0)
    assert ("GET", "/v1/account/accounts") in HtxAdapter.read_only_endpoints


async def test_wrong_secret_is_key_rejected(clock: FakeClock) -> None:
    """A wrong secret fails with key_rejected (api-signature-not-valid)."""
    sim = HtxSimulator(clock=clock)
    sim.add_key(KEY, "othersecret", UID)
    s = settings()
    async with Auditor(s, transport_factory=lambda _n: sim.transport(), clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
