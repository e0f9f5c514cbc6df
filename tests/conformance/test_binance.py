"""Binance against its own sources: the official SDK's fixture and the official error codes.

Sources:
- [SDK] binance/binance-connector-python (commit 29da3291)
  clients/wallet/tests/unit/rest_api/test_account_api.py, ``test_get_api_key_permission_success``:
  the answer of ``GET /sapi/v1/account/apiRestrictions``.
- [ERR] https://developers.binance.com/docs/binance-spot-api-docs/errors (the same table is
  served for every product, e.g. .../derivatives/portfolio-margin-pro/error-code): -1000
  UNKNOWN, -1001 DISCONNECTED, -1002 UNAUTHORIZED, -1003 TOO_MANY_REQUESTS, -1006, -1007
  TIMEOUT, -1008 SERVER_BUSY, -1021 INVALID_TIMESTAMP, -1022 INVALID_SIGNATURE, -2008 (invalid
  API-key ID), -2014 BAD_API_KEY_FMT, -2015 REJECTED_MBX_KEY; HTTP 429 rate limit, 418 IP ban.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from keymon.model import Reason
from tests.conformance.answering import audit_routed, respond, routes

KEY = {"exchange": "binance", "api_key": "k" * 64, "api_secret": "s" * 64}

# [SDK] verbatim.
SDK_API_RESTRICTIONS: dict[str, Any] = {
    "ipRestrict": False,
    "createTime": 1623840271000,
    "enableReading": True,
    "enableWithdrawals": False,
    "enableInternalTransfer": True,
    "enableMargin": False,
    "enableFutures": False,
    "permitsUniversalTransfer": True,
    "enableVanillaOptions": False,
    "enableFixApiTrade": False,
    "enableFixReadOnly": True,
    "enableSpotAndMarginTrading": False,
    "enablePortfolioMarginTrading": True,
}


def _handler(status: int, body: object, headers: dict[str, str] | None = None) -> Any:
    return routes(
        {
            "/api/v3/time": respond(200, {"serverTime": 1623840271000}),
            "/sapi/v1/account/apiRestrictions": respond(status, body, headers),
        }
    )


async def test_sdk_fixture_maps_every_flag() -> None:
    """Each flag onto PRODUCT.md's vocabulary; no IP restriction (list never shown); created
    2021-06-16; no tradingAuthorityExpirationTime (spot trading off): no deadline."""
    result = await audit_routed(KEY, _handler(200, SDK_API_RESTRICTIONS))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {
        "read": True,
        "withdraw": False,
        "internal_transfer": True,
        "margin_loan": False,
        "futures_trade": False,
        "universal_transfer": True,
        "options_trade": False,
        "fix_trade": False,
        "fix_read": True,
        "spot_trade": False,
        "portfolio_margin": True,
    }
    assert facts.ip_restricted is False
    assert facts.ip_list is None  # Binance never shows a key its IP list
    assert facts.created_at == datetime.fromtimestamp(1623840271, UTC)
    assert facts.deadlines == ()
    assert facts.key_locked is None
    assert facts.account_kind is None
    assert facts.third_party_app is None
    assert facts.last_used_at is None


@pytest.mark.parametrize(
    ("status", "code", "msg", "reason"),
    [
        (401, -2015, "Invalid API-key, IP, or permissions for action.", Reason.KEY_REJECTED),
        (401, -2014, "API-key format invalid.", Reason.KEY_REJECTED),
        (400, -2008, "Invalid Api-Key ID.", Reason.KEY_REJECTED),
        (400, -1022, "Signature for this request is not valid.", Reason.KEY_REJECTED),
        (401, -1002, "You are not authorized to execute this request.", Reason.KEY_REJECTED),
        (
            400,
            -1021,
            "Timestamp for this request is outside of the recvWindow.",
            Reason.CLOCK_SKEW,
        ),
        (429, -1003, "Too much request weight used.", Reason.RATE_LIMITED),
        (418, -1003, "Way too much request weight used; IP banned until 1.", Reason.BANNED),
        (
            500,
            -1000,
            "An unknown error occured while processing the request.",
            Reason.EXCHANGE_UNAVAILABLE,
        ),
        (
            503,
            -1001,
            "Internal error; unable to process your request.",
            Reason.EXCHANGE_UNAVAILABLE,
        ),
        (400, -1008, "Server is currently overloaded.", Reason.EXCHANGE_UNAVAILABLE),
        # A documented code with no meaning for this call stays bad_response.
        (400, -1100, "Illegal characters found in a parameter.", Reason.BAD_RESPONSE),
    ],
)
async def test_error_table(status: int, code: int, msg: str, reason: Reason) -> None:
    result = await audit_routed(KEY, _handler(status, {"code": code, "msg": msg}))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message
