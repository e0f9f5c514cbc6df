"""The KuCoin adapter: signing, the field mapping, masked IPs and error classification."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from keymon.audit import Auditor
from keymon.config import Secret, Settings
from keymon.exchanges.kucoin import KucoinAdapter, KucoinAuth, KucoinKey, sign
from keymon.model import AuditResult, Reason, Rule
from keymon.simulator.kucoin import KucoinSimulator
from tests.conftest import FakeClock

KEY = "testkey"
SECRET = "testsecret"
PASSPHRASE = "testpass"


def _secret(value: str) -> Secret:
    return Secret(SecretStr(value), "literal")


def test_sign_reproduces_the_official_sdk_vector() -> None:
    """Official vector of Kucoin/kucoin-universal-sdk's signing test (exchange-apis.md §2.3)."""
    assert sign("test_api_secret", "test_plain") == "jie/gxS38wLFFaBwl/cAzFbAzlI8MIny96jSXrB+iP4="


@pytest.mark.parametrize("version", [2, 3])
def test_auth_reproduces_the_derived_vectors(version: int) -> None:
    """KucoinAuth signs the derived vectors of exchange-apis.md §2.3 (not official ones)."""
    auth = KucoinAuth(
        _secret(KEY), _secret(SECRET), _secret(PASSPHRASE), version, lambda: 1700000000000
    )
    request = httpx.Request("GET", "https://api.kucoin.com/api/v1/user/api-key")
    signed = next(auth.auth_flow(request))
    assert signed.headers["KC-API-KEY"] == KEY
    assert signed.headers["KC-API-TIMESTAMP"] == "1700000000000"
    assert signed.headers["KC-API-SIGN"] == "lmSswjjoK8koCY5pq8gc9C+f5/LbLv9UPdGcg8OVnHc="
    assert signed.headers["KC-API-PASSPHRASE"] == "5geeOuzPRVAMNghwj4ECAxLPxLiO667f7Kkx53zWBsc="
    assert signed.headers["KC-API-KEY-VERSION"] == str(version)
    assert SECRET not in repr(auth)
    assert PASSPHRASE not in repr(auth)


def test_auth_signs_the_query() -> None:
    """For a GET the signed endpoint includes ?query."""
    auth = KucoinAuth(_secret(KEY), _secret(SECRET), _secret(PASSPHRASE), 3, lambda: 1)
    signed = next(auth.auth_flow(httpx.Request("GET", "https://x.test/api/v1/a?b=1")))
    assert signed.headers["KC-API-SIGN"] == sign(SECRET, "1GET/api/v1/a?b=1")


def settings(**key_extra: Any) -> Settings:
    """One KuCoin key, trusted IP loopback."""
    key = {
        "name": "k",
        "client": "acme",
        "exchange": "kucoin",
        "api_key": KEY,
        "api_secret": SECRET,
        "passphrase": PASSPHRASE,
        **key_extra,
    }
    return Settings(keys=[key], trusted_ips=["127.0.0.1/32", "203.0.113.0/24"])


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
    """The timestamp answers normally; api-key answers ``status``/``body``."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v1/timestamp":
            return httpx.Response(200, json={"code": "200000", "data": 1})
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=headers or {})

    return httpx.MockTransport(handler)


def err(code: str, msg: str = "") -> dict[str, str]:
    """An error envelope."""
    return {"code": code, "msg": msg}


def test_key_needs_a_passphrase_and_a_known_version() -> None:
    """passphrase is required; key_version is 2 or 3 (default 3)."""
    key = settings().keys[0]
    assert isinstance(key, KucoinKey)
    assert key.key_version == 3
    with pytest.raises(ValueError, match="passphrase"):
        Settings(
            keys=[
                {
                    "name": "k",
                    "client": "a",
                    "exchange": "kucoin",
                    "api_key": "x",
                    "api_secret": "y",
                }
            ]
        )
    with pytest.raises(ValueError, match="key_version"):
        settings(key_version=1)


async def test_mapping_of_documented_and_unknown_entries(clock: FakeClock) -> None:
    """Permission names map per §4 (Transfer is withdraw); Earn is kept raw."""
    sim = KucoinSimulator(clock=clock)
    sim.add_key(
        KEY,
        SECRET,
        PASSPHRASE,
        permissions=["General", "Spot", "Margin", "Futures", "InnerTransfer", "Transfer", "Earn"],
        ips=["127.0.0.1", "203.0.113.7"],
    )
    result = await audit_with(sim.transport(), clock)
    assert result.ok, result.error
    assert result.facts is not None
    permissions = result.facts.permissions
    for name in (
        "read",
        "spot_trade",
        "margin_trade",
        "margin_loan",
        "futures_trade",
        "internal_transfer",
        "withdraw",
        "Earn",
    ):
        assert permissions[name] is True, name
    assert result.facts.ip_restricted is True
    assert result.facts.ip_list == ("127.**.1", "203.**.7")
    assert result.facts.created_at == datetime.fromtimestamp(round(clock.now * 1000) / 1000, UTC)
    assert result.facts.deadlines == ()
    assert Rule.UNTRUSTED_IP not in {f.rule for f in result.findings}


async def test_guide_key_shows_absent_permissions_as_off(clock: FakeClock) -> None:
    """General,Spot: every other mapped permission is observed off."""
    sim = KucoinSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE)
    result = await audit_with(sim.transport(), clock)
    assert result.facts is not None
    assert result.facts.permissions["withdraw"] is False
    assert result.facts.permissions["margin_loan"] is False
    assert result.findings == ()


async def test_masked_ip_that_no_trusted_address_fits_is_untrusted(clock: FakeClock) -> None:
    """198.**.9 cannot be in 127.0.0.1/32 or 203.0.113.0/24: untrusted_ip fires."""
    sim = KucoinSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, ips=["127.0.0.1", "198.51.100.9"])
    result = await audit_with(sim.transport(), clock)
    (finding,) = [f for f in result.findings if f.rule == Rule.UNTRUSTED_IP]
    assert "198.**.9" in finding.message
    assert "127.**.1" not in finding.message
    assert "masked" in finding.message


async def test_empty_whitelist_is_unrestricted(clock: FakeClock) -> None:
    """ipWhitelist "" means any IP."""
    sim = KucoinSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, ips=[])
    result = await audit_with(sim.transport(), clock)
    assert result.facts is not None
    assert result.facts.ip_restricted is False
    assert result.facts.ip_list == ()
    assert Rule.IP_UNRESTRICTED in {f.rule for f in result.findings}


async def test_version_2_key_audits(clock: FakeClock) -> None:
    """A version-2 key signs its passphrase the same way and sends version 2."""
    sim = KucoinSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, version=2)
    s = settings(key_version=2)
    transport = sim.transport()
    async with Auditor(s, transport_factory=lambda _n: transport, clock=clock) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.ok, result.error


async def test_clock_drift_is_healed_by_one_resync(clock: FakeClock) -> None:
    """After the server clock jumps, 400002 triggers one re-sync and the audit succeeds."""
    sim = KucoinSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE)
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
        (401, err("400001"), Reason.KEY_REJECTED),
        (401, err("400003", "KC-API-KEY not exists"), Reason.KEY_REJECTED),
        (401, err("400004", "KC-API-PASSPHRASE error"), Reason.KEY_REJECTED),
        (401, err("400005"), Reason.KEY_REJECTED),
        (401, err("400006"), Reason.KEY_REJECTED),
        (401, err("400007"), Reason.KEY_REJECTED),
        (401, err("411100"), Reason.KEY_REJECTED),
        (401, err("400002"), Reason.CLOCK_SKEW),
        (429, err("429000"), Reason.RATE_LIMITED),
        (429, b"", Reason.RATE_LIMITED),
        (401, b"", Reason.KEY_REJECTED),
        (502, b"<html>", Reason.EXCHANGE_UNAVAILABLE),
        (500, err("500000", "Internal Server Error"), Reason.EXCHANGE_UNAVAILABLE),
        (200, b'{"code": "200000", "da', Reason.BAD_RESPONSE),
        (200, {"code": "200000", "data": {"apiKey": KEY}}, Reason.BAD_RESPONSE),
        (200, {"code": "200000", "data": {"apiKey": "o", "permission": ""}}, Reason.BAD_RESPONSE),
        (400, err("999999", "?"), Reason.BAD_RESPONSE),
    ],
)
async def test_error_classification(status: int, body: object, expected: Reason) -> None:
    """Each documented code and status maps to its reason."""
    result = await audit_with(canned(status, body))
    assert result.error is not None
    assert result.error.reason is expected


async def test_ip_refusal_names_the_ip(clock: FakeClock) -> None:
    """400006 from the simulator fills refused_ip with the client IP it quotes."""
    sim = KucoinSimulator(clock=clock)
    sim.add_key(KEY, SECRET, PASSPHRASE, ips=["10.9.9.9"])
    result = await audit_with(sim.transport(), clock)
    assert result.error is not None
    assert result.error.code == 400006
    assert result.error.refused_ip == "127.0.0.1"


async def test_rate_limit_retry_after_from_reset_header() -> None:
    """429000 carries retry_after from gw-ratelimit-reset (ms)."""
    result = await audit_with(canned(429, err("429000"), {"gw-ratelimit-reset": "800"}))
    assert result.error is not None
    assert result.error.retry_after == pytest.approx(0.8)


def test_adapter_declares_read_only_endpoints_and_weight() -> None:
    """Only the two GETs are allowed; the key info weighs 20."""
    assert KucoinAdapter.read_only_endpoints == {
        ("GET", "/api/v1/timestamp"),
        ("GET", "/api/v1/user/api-key"),
    }
    assert KucoinAdapter.weights["/api/v1/user/api-key"] == 20
    assert KucoinAdapter.ip_limit_headers == {}
