"""The Binance adapter against the simulator, served in-process and for real on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from keymon.audit import Auditor
from keymon.config import Settings
from keymon.errors import ForbiddenRequest
from keymon.exchanges.base import RequestGate
from keymon.exchanges.binance import BinanceAdapter, BinanceAuth, BinanceKey, hmac_signer
from keymon.model import AuditResult, Coverage, Reason, Rule, Severity
from keymon.simulator.binance import BinanceSimulator
from tests.conftest import DOC_API_KEY, DOC_SECRET, FakeClock, key_entry, make_settings

# ----------------------------------------------------------------------------- fixtures


@dataclass
class Exchange:
    """How a test reaches the simulator: a base URL and, in-process, a transport."""

    base_url: str
    transport: Callable[[str], httpx.AsyncBaseTransport | None] | None

    def settings(self, *keys: dict[str, Any], **overrides: Any) -> Settings:
        return make_settings(*keys, base_url=self.base_url, **overrides)

    async def audit(
        self, settings: Settings, name: str | None = None, **kwargs: Any
    ) -> AuditResult:
        async with Auditor(settings, transport_factory=self.transport, **kwargs) as auditor:
            key = next(k for k in settings.keys if name is None or k.name == name)
            return await auditor.audit(key)


@pytest.fixture(params=["in-process", "served"])
def exchange(request: pytest.FixtureRequest, sim: BinanceSimulator) -> Iterator[Exchange]:
    """The simulator reached both ways: an httpx transport, and a real HTTP server."""
    if request.param == "in-process":
        yield Exchange("https://binance.test", lambda _name: sim.transport())
    else:
        with sim.serve_in_thread() as url:
            yield Exchange(url, None)


def binance_adapter(auditor: Auditor) -> BinanceAdapter:
    """The auditor's Binance adapter, typed as such."""
    adapter = auditor.adapters["binance"]
    assert isinstance(adapter, BinanceAdapter)
    return adapter


def doc_key(**extra: Any) -> dict[str, Any]:
    return key_entry("doc-key", DOC_API_KEY, DOC_SECRET, **extra)


def fired(result: AuditResult) -> set[tuple[str, str, str | None]]:
    return {(str(f.rule), str(f.severity), f.permission) for f in result.findings}


# ----------------------------------------------------------------------------- signing


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000"
            "&timestamp=1499827319559",
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71",
        ),
        (
            "symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT"
            "&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559",
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3",
        ),
        (
            "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTCquantity=1&price=0.1&recvWindow=5000"
            "&timestamp=1499827319559",
            "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77",
        ),
    ],
    ids=["B1", "B2-non-ascii", "B3-query-and-body"],
)
def test_hmac_signer_matches_official_vectors(payload: str, expected: str) -> None:
    """keymon's HMAC signer reproduces Binance's published signatures."""
    assert hmac_signer(DOC_SECRET)(payload.encode()) == expected


def test_auth_signs_the_restrictions_call_like_vector_b4() -> None:
    """The apiRestrictions request carries recvWindow, timestamp, the B4 signature and key."""
    from pydantic import SecretStr

    from keymon.config import Secret

    auth = BinanceAuth(
        Secret(SecretStr(DOC_API_KEY), "literal"),
        hmac_signer(DOC_SECRET),
        lambda: 1499827319559,
        5000,
    )
    request = httpx.Request("GET", "https://api.binance.com/sapi/v1/account/apiRestrictions")
    signed = next(auth.auth_flow(request))
    assert signed.url.query.decode() == (
        "recvWindow=5000&timestamp=1499827319559"
        "&signature=82f4e72e95e63d666b6da651e82a701722ad8a785a169318d91f36f279c55821"
    )
    assert signed.headers["X-MBX-APIKEY"] == DOC_API_KEY


def _pem(private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey) -> tuple[str, str]:
    secret = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return secret, public


@pytest.mark.parametrize("key_type", ["hmac", "ed25519", "rsa"])
async def test_three_key_types_are_accepted(
    key_type: str, sim: BinanceSimulator, exchange: Exchange
) -> None:
    """HMAC, Ed25519 and RSA keys each sign a request the simulator accepts."""
    if key_type == "hmac":
        secret = "hmacSecretForTesting0123456789"
        sim.add_key("typedKey", hmac_secret=secret)
    else:
        private = (
            ed25519.Ed25519PrivateKey.generate()
            if key_type == "ed25519"
            else rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
        secret, public = _pem(private)
        sim.add_key("typedKey", public_key_pem=public)
    settings = exchange.settings(key_entry("typed", "typedKey", secret))
    typed = settings.keys[0]
    assert isinstance(typed, BinanceKey)
    assert typed.key_type == key_type
    result = await exchange.audit(settings)
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.permissions["spot_trade"] is True


async def test_wrong_key_type_is_rejected_as_bad_signature(
    sim: BinanceSimulator, exchange: Exchange
) -> None:
    """An HMAC secret configured for an Ed25519 key is -1022: key_rejected, wrong key type."""
    _secret, public = _pem(ed25519.Ed25519PrivateKey.generate())
    sim.add_key("edKey", public_key_pem=public)
    result = await exchange.audit(exchange.settings(key_entry("ed", "edKey", "notTheRightKind")))
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert result.error.code == -1022
    assert "wrong key type" in result.error.message


# ----------------------------------------------------------------------------- facts


async def test_guide_compliant_key_is_healthy(exchange: Exchange) -> None:
    """The default simulated key (IP-restricted, read + spot) audits clean, all mapped."""
    result = await exchange.audit(exchange.settings(doc_key()))
    assert result.ok
    assert result.findings == ()
    facts = result.facts
    assert facts is not None
    assert facts.coverage is Coverage.INTROSPECTION
    assert facts.ip_restricted is True
    assert facts.ip_list is None  # Binance never shows the list
    assert facts.deadlines == ()
    assert facts.created_at is not None
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": True,
        "withdraw": False,
        "internal_transfer": False,
        "margin_loan": False,
        "futures_trade": False,
        "universal_transfer": False,
        "options_trade": False,
        "fix_trade": False,
        "fix_read": False,
        "portfolio_margin": False,
    }


@pytest.mark.parametrize(
    ("restrictions", "expected"),
    [
        ({"enableWithdrawals": True}, ("withdraw_enabled", "critical", None)),
        (
            {"enableInternalTransfer": True},
            ("forbidden_permission", "critical", "internal_transfer"),
        ),
        (
            {"permitsUniversalTransfer": True},
            ("forbidden_permission", "critical", "universal_transfer"),
        ),
        ({"enableFutures": True}, ("forbidden_permission", "warning", "futures_trade")),
        ({"enableVanillaOptions": True}, ("forbidden_permission", "warning", "options_trade")),
        ({"enableMargin": True}, ("forbidden_permission", "warning", "margin_loan")),
        (
            {"enablePortfolioMarginTrading": True},
            ("forbidden_permission", "warning", "portfolio_margin"),
        ),
        ({"enableSpotAndMarginTrading": False}, ("missing_permission", "warning", "spot_trade")),
    ],
    ids=[
        "withdrawals",
        "internal-transfer",
        "universal-transfer",
        "futures",
        "options",
        "margin",
        "portfolio-margin",
        "spot-off",
    ],
)
async def test_each_binance_flag_reaches_its_rule(
    sim: BinanceSimulator,
    exchange: Exchange,
    restrictions: dict[str, object],
    expected: tuple[str, str, str | None],
) -> None:
    """Switching one flag at the exchange raises exactly the finding its mapping implies."""
    sim.update_key(DOC_API_KEY, **restrictions)
    assert fired(await exchange.audit(exchange.settings(doc_key()))) == {expected}


async def test_unrestricted_key_carries_trading_authority_deadline(
    sim: BinanceSimulator, exchange: Exchange, clock: FakeClock
) -> None:
    """An open key: ip_unrestricted, and its trading expiry 2 days out is critical."""
    expires_ms = int((clock.now + 2 * 86400) * 1000)
    sim.update_key(DOC_API_KEY, ipRestrict=False, tradingAuthorityExpirationTime=expires_ms)
    sim.set_ip_whitelist(DOC_API_KEY, None)
    result = await exchange.audit(exchange.settings(doc_key()))
    assert result.facts is not None
    (deadline,) = result.facts.deadlines
    assert deadline.kind == "trading_authority"
    assert deadline.at.timestamp() == expires_ms / 1000
    assert fired(result) == {
        ("ip_unrestricted", "critical", None),
        ("review_deadline", "critical", None),
    }


async def test_unknown_flag_is_kept_and_logged_once(
    sim: BinanceSimulator, exchange: Exchange
) -> None:
    """A flag Binance adds later shows under its raw name, with one warning per process."""
    from keymon.exchanges import binance

    binance._unknown_flags_logged.discard("enableSomethingNew")
    sim.update_key(DOC_API_KEY, enableSomethingNew=True)
    settings = exchange.settings(doc_key())
    with structlog.testing.capture_logs() as logs:
        first = await exchange.audit(settings)
        await exchange.audit(settings)
    assert first.facts is not None
    assert first.facts.permissions["enableSomethingNew"] is True
    warnings = [e for e in logs if e["event"] == "unknown_permission_flag"]
    assert [e["flag"] for e in warnings] == ["enableSomethingNew"]


# ----------------------------------------------------------------------------- errors


async def test_ip_refused_names_the_egress_ip(sim: BinanceSimulator, exchange: Exchange) -> None:
    """A key whitelisted to other IPs is key_rejected, and the finding names the refused IP."""
    sim.set_ip_whitelist(DOC_API_KEY, ["203.0.113.10"])
    result = await exchange.audit(exchange.settings(doc_key()))
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert result.error.code == -2015
    assert result.error.refused_ip == "127.0.0.1"
    (finding,) = result.findings
    assert finding.rule is Rule.KEY_REJECTED
    assert finding.severity is Severity.CRITICAL
    assert "refused egress IP 127.0.0.1" in finding.message


@pytest.mark.parametrize(
    ("setup", "api_key", "code"),
    [
        ("delete", DOC_API_KEY, -2015),
        ("none", "unknownKey123", -2015),
        ("none", "bad key!", -2014),
        ("wrong-secret", DOC_API_KEY, -1022),
    ],
    ids=["deleted", "unknown", "malformed", "wrong-secret"],
)
async def test_rejections_are_key_rejected(
    sim: BinanceSimulator, exchange: Exchange, setup: str, api_key: str, code: int
) -> None:
    """Deleted, unknown, malformed keys and wrong secrets are critical key_rejected."""
    if setup == "delete":
        sim.delete_key(DOC_API_KEY)
    secret = "anotherSecretEntirely" if setup == "wrong-secret" else DOC_SECRET
    result = await exchange.audit(exchange.settings(key_entry("k", api_key, secret)))
    assert result.error is not None
    assert (result.error.reason, result.error.code) == (Reason.KEY_REJECTED, code)
    assert result.error.refused_ip is None
    assert fired(result) == {("key_rejected", "critical", None)}


async def test_server_errors_are_exchange_unavailable(
    sim: BinanceSimulator, exchange: Exchange
) -> None:
    """A 503 is exchange_unavailable, never healthy, and no finding is invented."""
    settings = exchange.settings(doc_key())
    async with Auditor(settings, transport_factory=exchange.transport) as auditor:
        await binance_adapter(auditor).sync_time()
        sim.fail_next(1, status=503)
        result = await auditor.audit(settings.keys[0])
    assert result.error is not None
    assert result.error.reason is Reason.EXCHANGE_UNAVAILABLE
    assert result.findings == ()
    assert result.facts is None


async def test_truncated_json_is_bad_response(sim: BinanceSimulator, exchange: Exchange) -> None:
    """A 200 whose body is cut off is bad_response."""
    settings = exchange.settings(doc_key())
    async with Auditor(settings, transport_factory=exchange.transport) as auditor:
        await binance_adapter(auditor).sync_time()
        sim.truncate_next(1)
        result = await auditor.audit(settings.keys[0])
    assert result.error is not None
    assert result.error.reason is Reason.BAD_RESPONSE
    assert "not JSON" in result.error.message


async def test_missing_security_fields_are_bad_response(
    sim: BinanceSimulator, exchange: Exchange
) -> None:
    """A body without ipRestrict is bad_response, not a key with nothing to report."""
    sim.update_key(DOC_API_KEY, ipRestrict=None)
    result = await exchange.audit(exchange.settings(doc_key()))
    assert result.error is not None
    assert result.error.reason is Reason.BAD_RESPONSE
    assert "ipRestrict" in result.error.message


async def test_rate_limit_then_ban(exchange: Exchange, clock: FakeClock) -> None:
    """Past the weight limit: 429 is rate_limited with Retry-After; pushing on earns a 418."""
    sim = BinanceSimulator(clock=clock, sapi_ip_weight_limit=2, ban_after_rejected=1)
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    if exchange.transport is not None:
        exchange = Exchange(exchange.base_url, lambda _n: sim.transport())
        results = await _audit_times(exchange, 5)
    else:
        with sim.serve_in_thread() as url:
            results = await _audit_times(Exchange(url, None), 5)
    reasons = [r.error.reason if r.error else None for r in results]
    assert reasons[:2] == [None, None]
    assert reasons[2] is Reason.RATE_LIMITED
    assert Reason.BANNED in reasons[3:]
    limited = results[2].error
    assert limited is not None
    assert limited.retry_after is not None
    assert 0 < limited.retry_after <= 60
    banned = next(r.error for r in results if r.error and r.error.reason is Reason.BANNED)
    assert banned.retry_after is not None
    assert banned.retry_after >= 60


async def _audit_times(exchange: Exchange, times: int) -> list[AuditResult]:
    # One request per audit, so that the limit of 2 counts audits (trading_status has its
    # own rate-limit test in tests/exchanges/test_binance_trading.py).
    settings = exchange.settings(
        doc_key(), exchanges={"binance": {"base_url": exchange.base_url, "trading_status": False}}
    )
    async with Auditor(settings, transport_factory=exchange.transport) as auditor:
        return [await auditor.audit(settings.keys[0]) for _ in range(times)]


async def test_clock_drift_is_healed_by_one_resync(
    sim: BinanceSimulator, exchange: Exchange, clock: FakeClock
) -> None:
    """After the server's clock jumps, -1021 triggers one re-sync and the audit succeeds."""
    settings = exchange.settings(doc_key())
    async with Auditor(settings, transport_factory=exchange.transport, clock=clock) as auditor:
        assert (await auditor.audit(settings.keys[0])).ok
        sim.clock_skew_ms = 30_000
        result = await auditor.audit(settings.keys[0])
    assert result.ok, result.error
    time_calls = [r for r in sim.request_log if r.path == "/api/v3/time"]
    assert len(time_calls) == 2  # the first sync, then the forced one


class JumpyClock:
    """A local clock that gains 10 s every time it is read: no sync can keep up."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 10
        return self.now


async def test_persistent_skew_is_clock_skew(exchange: Exchange, clock: FakeClock) -> None:
    """When re-syncing does not help, the audit fails with reason clock_skew."""
    settings = exchange.settings(doc_key())
    result = await exchange.audit(settings, clock=JumpyClock(clock.now))
    assert result.error is not None
    assert result.error.reason is Reason.CLOCK_SKEW
    assert result.error.code == -1021
    assert result.findings == ()


async def test_signature_is_made_when_sent_not_when_queued(
    sim: BinanceSimulator, exchange: Exchange, clock: FakeClock
) -> None:
    """A request held 30 s by the weight budget still carries a fresh, accepted timestamp."""

    class SlowGate(RequestGate):
        async def acquire(self, exchange: str, weight: int) -> None:
            clock.advance(30)  # longer than recvWindow: a pre-signed request would fail

    result = await exchange.audit(exchange.settings(doc_key()), clock=clock, gate=SlowGate())
    assert result.ok, result.error


async def test_timeout_is_timeout(sim: BinanceSimulator, served: str) -> None:
    """A real server slower than audit.timeout gives reason timeout, and no httpx error."""
    sim.latency = 2.0
    settings = make_settings(doc_key(), base_url=served, audit={"timeout": "200ms", "jitter": "0s"})
    result = await Exchange(served, None).audit(settings)
    assert result.error is not None
    assert result.error.reason is Reason.TIMEOUT


async def test_refused_connection_is_network() -> None:
    """Nothing listening on the port: reason network."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    result = await Exchange(url, None).audit(make_settings(doc_key(), base_url=url))
    assert result.error is not None
    assert result.error.reason is Reason.NETWORK


# ----------------------------------------------------------------------------- read-only


@pytest.fixture
async def adapter_client(sim: BinanceSimulator) -> AsyncIterator[httpx.AsyncClient]:
    """The guarded client an Auditor builds for Binance, over the simulator."""
    settings = make_settings(doc_key())
    async with Auditor(settings, transport_factory=lambda _n: sim.transport()) as auditor:
        yield binance_adapter(auditor)._client


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/api/v3/order"),
        ("DELETE", "/api/v3/openOrders"),
        ("POST", "/sapi/v1/capital/withdraw/apply"),
        ("GET", "/sapi/v1/capital/withdraw/history"),
        ("POST", "/sapi/v1/account/apiRestrictions"),
        ("GET", "http://elsewhere.test/api/v3/time"),
    ],
    ids=["order", "cancel", "withdraw", "unlisted-get", "right-path-wrong-method", "other-host"],
)
async def test_read_only_allowlist_refuses_before_sending(
    sim: BinanceSimulator, adapter_client: httpx.AsyncClient, method: str, url: str
) -> None:
    """A request off the allowlist raises ForbiddenRequest and never reaches the exchange."""
    with pytest.raises(ForbiddenRequest, match="read-only allowlist"):
        await adapter_client.request(method, url)
    assert sim.request_log == []


async def test_allowlist_lets_the_audit_calls_through(
    sim: BinanceSimulator, adapter_client: httpx.AsyncClient
) -> None:
    """The four calls keymon needs are on the allowlist and nothing else is."""
    assert BinanceAdapter.read_only_endpoints == frozenset(
        {
            ("GET", "/api/v3/time"),
            ("GET", "/sapi/v1/account/apiRestrictions"),
            ("GET", "/sapi/v1/account/apiTradingStatus"),
            ("GET", "/sapi/v1/account/status"),
        }
    )
    response = await adapter_client.get("/api/v3/time")
    assert response.status_code == 200


async def test_no_httpx_error_escapes(exchange: Exchange, sim: BinanceSimulator) -> None:
    """Every failure mode returns an AuditResult; audit() itself never raises."""
    settings = exchange.settings(doc_key())
    async with Auditor(settings, transport_factory=exchange.transport) as auditor:
        outcomes = []
        for fault in ("fail", "truncate", "skew", "ok"):
            if fault == "fail":
                sim.fail_next(3, status=500)
            elif fault == "truncate":
                sim.truncate_next(3)
            elif fault == "skew":
                sim.clock_skew_ms = -120_000
            outcomes.append(await asyncio.wait_for(auditor.audit(settings.keys[0]), 10))
    assert all(isinstance(o, AuditResult) for o in outcomes)


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (500, -1000, Reason.EXCHANGE_UNAVAILABLE),
        (503, -1001, Reason.EXCHANGE_UNAVAILABLE),
        (500, -1006, Reason.EXCHANGE_UNAVAILABLE),
        (503, -1007, Reason.EXCHANGE_UNAVAILABLE),
        (503, -1008, Reason.EXCHANGE_UNAVAILABLE),
        (400, -1016, Reason.EXCHANGE_UNAVAILABLE),
        (401, -1002, Reason.KEY_REJECTED),
        (400, -1022, Reason.KEY_REJECTED),
        (401, -2008, Reason.KEY_REJECTED),
        (401, -2014, Reason.KEY_REJECTED),
        (401, -2015, Reason.KEY_REJECTED),
        (400, -1003, Reason.RATE_LIMITED),
        (429, -1003, Reason.RATE_LIMITED),
        (418, -1003, Reason.BANNED),
        (400, -1102, Reason.BAD_RESPONSE),
        (403, None, Reason.EXCHANGE_UNAVAILABLE),
        (502, None, Reason.EXCHANGE_UNAVAILABLE),
        (404, None, Reason.BAD_RESPONSE),
    ],
    ids=lambda v: str(v),
)
async def test_every_documented_code_maps_to_its_reason(
    status: int, code: int | None, reason: Reason
) -> None:
    """Each code of errors.md (§1.9) lands on its reason, with Binance's code kept."""
    body = (
        b"<html>blocked</html>"
        if code is None
        else (b'{"code":%d,"msg":"documented message"}' % code)
    )

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v3/time":
            return httpx.Response(200, json={"serverTime": 1_795_000_000_000})
        return httpx.Response(status, content=body, headers={"Retry-After": "7"})

    settings = make_settings(doc_key())
    async with Auditor(
        settings, transport_factory=lambda _n: httpx.MockTransport(answer), clock=FakeClock()
    ) as auditor:
        result = await auditor.audit(settings.keys[0])
    assert result.error is not None
    assert result.error.reason is reason
    assert result.error.code == code
    if status in (418, 429):
        assert result.error.retry_after == 7


async def test_a_429_on_the_trading_status_read_sends_nothing_more(clock: FakeClock) -> None:
    """The IP's limit is met by apiTradingStatus: the audit keeps its restriction facts, the
    read's failure is rate_limited, and account/status is not sent into the limit."""
    sim = BinanceSimulator(clock=clock, sapi_ip_weight_limit=1)
    sim.add_key(DOC_API_KEY, hmac_secret=DOC_SECRET)
    settings = make_settings(doc_key())
    async with Auditor(settings, transport_factory=lambda _n: sim.transport()) as auditor:
        result = await auditor.audit(settings.keys[0])
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.trading_status_error is not None
    assert result.facts.trading_status_error.reason is Reason.RATE_LIMITED
    assert [(r.path, r.status) for r in sim.request_log if r.api_key] == [
        ("/sapi/v1/account/apiRestrictions", 200),
        ("/sapi/v1/account/apiTradingStatus", 429),
    ]


def test_an_audit_is_granted_the_weight_of_its_calls() -> None:
    """apiRestrictions (weight 1) is the audit's mandatory part; the two trading-status reads
    (weight 1 each) are its extras, none with trading_status off."""
    on = BinanceAdapter(httpx.AsyncClient(), make_settings().exchanges.binance)
    off_settings = make_settings(exchanges={"binance": {"trading_status": False}})
    off = BinanceAdapter(httpx.AsyncClient(), off_settings.exchanges.binance)
    assert (on.audit_weight, on.extras_weight) == (1, 2)
    assert (off.audit_weight, off.extras_weight) == (1, 0)
