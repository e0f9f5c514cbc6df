"""Kraken (spot REST) against its own documentation: GetApiKeyInfo, permissions, errors.

Sources:
- [KEY] https://docs.kraken.com/api-reference/account-data/get-api-key-info — the example
  answer of ``POST /0/private/GetApiKeyInfo`` ("API Key Permissions Required: None"; body
  ``otp``: "Two-factor authentication password (required only if 2FA is configured for the
  API key)").
- [PERMS] https://docs.kraken.com/exchange/guides/rest/api-keys — what each permission allows:
  Query Funds (Balance...), Create & Modify Orders (AddOrder...), Cancel/Close Orders
  (CancelOrder...), Withdraw Funds (Withdraw...). API strings: ``query-funds``,
  ``modify-trades``, ``withdraw-funds``, ``query-open-trades`` appear in [KEY]'s example;
  ``close-trades`` is Cancel/Close Orders.
- [2FA] https://support.kraken.com/hc/en-us/articles/360000714526 ("How does two-factor
  authentication (2FA) for API keys work?"): a client that does not support the key's 2FA gets
  ``EAPI:Invalid signature``.
- [ERR] https://docs.kraken.com/exchange/guides/general/errors — ``EAPI:Invalid key`` (key
  missing, deleted or revoked; repeated, ``EGeneral:Temporary lockout``), ``EAPI:Invalid
  signature``, ``EAPI:Invalid nonce``.
"""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from keymon.audit import Auditor
from keymon.config import Settings
from keymon.exchanges.kraken import NonceSource
from keymon.model import Reason
from keymon.simulator.kraken import KrakenSimulator
from tests.conformance.answering import audit_routed, respond, routes

API_KEY = "4/SDrDBcOOPnm3nPlNfEMMJDeRcIVqPz+QhRxIodyZbI9po/aVRiHsgX"
SECRET = base64.b64encode(b"kraken-conformance-secret").decode()
KEY = {"exchange": "kraken", "api_key": API_KEY, "api_secret": SECRET}

# [KEY] verbatim.
OFFICIAL_KEY_INFO: dict[str, Any] = {
    "error": [],
    "result": {
        "apiKeyName": "my-api-key",
        "apiKey": "4/SDrDBcOOPnm3nPlNfEMMJDeRcIVqPz+QhRxIodyZbI9po/aVRiHsgX",
        "nonce": "1772627060997",
        "nonceWindow": 0,
        "permissions": ["query-funds", "withdraw-funds", "query-open-trades", "modify-trades"],
        "iban": "AA88 N84G WOAK NMOI",
        "validUntil": "0",
        "queryFrom": "0",
        "queryTo": "0",
        "createdTime": "1772542900",
        "modifiedTime": "1772543095",
        "ipAllowlist": [],
        "lastUsed": "1772627061",
    },
}


def _handler(body: object, status: int = 200) -> Any:
    return routes({"/0/private/GetApiKeyInfo": respond(status, body)})


async def test_official_example() -> None:
    """query-funds read, modify-trades spot_trade, withdraw-funds withdraw (critical), the
    documented query-open-trades kept under its name; no allowlist (unrestricted); no expiry
    (validUntil "0"); created 2026-03-03, last used 2026-03-04."""
    result = await audit_routed(KEY, _handler(OFFICIAL_KEY_INFO))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": True,
        "withdraw": True,
        "query-open-trades": True,
    }
    assert facts.ip_restricted is False
    assert facts.ip_list == ()
    assert facts.created_at == datetime.fromtimestamp(1772542900, UTC)
    assert facts.last_used_at == datetime.fromtimestamp(1772627061, UTC)
    assert facts.deadlines == ()
    assert facts.key_locked is None
    assert facts.account_kind is None
    assert facts.third_party_app is None
    assert {f.rule for f in result.findings} >= {"withdraw_enabled", "ip_unrestricted"}


async def test_close_trades_is_kraken_s_own_and_never_hides_a_permission() -> None:
    """A key with Cancel/Close Orders only: ``close-trades`` kept under its name; it cannot
    place an order, so spot_trade is off; withdraw absent is off."""
    body = copy.deepcopy(OFFICIAL_KEY_INFO)
    body["result"]["permissions"] = ["query-funds", "close-trades"]
    body["result"]["validUntil"] = "1790000000"
    result = await audit_routed(KEY, _handler(body))
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": False,
        "withdraw": False,
        "close-trades": True,
    }
    assert [(d.kind, d.at) for d in facts.deadlines] == [
        ("key_expiry", datetime.fromtimestamp(1790000000, UTC))
    ]


async def test_undocumented_names_are_not_mapped() -> None:
    """Names Kraken does not use (exchange-apis.md's guesses) no longer turn spot_trade on."""
    body = copy.deepcopy(OFFICIAL_KEY_INFO)
    body["result"]["permissions"] = ["query-funds", "create-orders", "cancel-close-orders"]
    result = await audit_routed(KEY, _handler(body))
    facts = result.facts
    assert facts is not None
    assert facts.permissions["spot_trade"] is False
    assert facts.permissions["create-orders"] is True


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("EAPI:Invalid key", Reason.KEY_REJECTED),
        ("EAPI:Invalid signature", Reason.KEY_REJECTED),
        ("EGeneral:Permission denied", Reason.KEY_REJECTED),
        ("EAPI:Invalid nonce", Reason.CLOCK_SKEW),
        ("EAPI:Rate limit exceeded", Reason.RATE_LIMITED),
        ("EGeneral:Temporary lockout", Reason.RATE_LIMITED),
        ("EService:Unavailable", Reason.EXCHANGE_UNAVAILABLE),
        ("EService:Busy", Reason.EXCHANGE_UNAVAILABLE),
        # No meaning for this call: stays bad_response.
        ("EGeneral:Invalid arguments", Reason.BAD_RESPONSE),
    ],
)
async def test_error_table(error: str, reason: Reason) -> None:
    result = await audit_routed(KEY, _handler({"error": [error], "result": {}}))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message


async def test_invalid_signature_names_two_factor_authentication() -> None:
    """[2FA]: a 2FA key audited without its one-time password answers EAPI:Invalid signature;
    the finding tells the operator so instead of only "wrong secret"."""
    result = await audit_routed(KEY, _handler({"error": ["EAPI:Invalid signature"], "result": {}}))
    assert result.error is not None
    assert "two-factor" in result.error.message
    assert "one-time password" in result.error.message


async def test_two_factor_key_against_the_simulator() -> None:
    """The simulator enforces a key's 2FA like [2FA] says: no OTP, EAPI:Invalid signature."""
    sim = KrakenSimulator()
    sim.add_key(API_KEY, SECRET, otp="123456")
    s = Settings(keys=[{"name": "k", "client": "acme", **KEY}], trusted_ips=["127.0.0.1/32"])
    async with Auditor(s, transport_factory=lambda _n: sim.transport()) as auditor:
        result = await auditor.audit(s.keys[0])
    assert result.error is not None
    assert result.error.reason is Reason.KEY_REJECTED
    assert "two-factor" in result.error.message


def test_nonce_source_is_milliseconds() -> None:
    """[KEY]'s example nonce (1772627060997) is milliseconds, as keymon's nonces are."""
    assert NonceSource(lambda: 1772627060.997).next("k") == 1772627060997
