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
- [TS-DOC] https://developers.binance.com/docs/wallet/account/account-api-trading-status,
  "Account API Trading Status (USER_DATA)", ``GET /sapi/v1/account/apiTradingStatus``, weight
  (IP) 1, response example: ``data`` with ``isLocked``, ``plannedRecoverTime``,
  ``triggerCondition`` {GCR, IFER, UFR} and ``updateTime``; no ``indicators``.
- [TS-OAS] binance/binance-api-swagger (commit 64b327c0), spot_api.yaml, path
  ``/sapi/v1/account/apiTradingStatus``: the same ``data`` plus ``indicators``, "updated every
  30 seconds": {symbol: [{``i`` "UFR" (Unfilled Ratio), ``c`` 20 (count of all orders), ``v``
  0.05 (current value), ``t`` 0.99 (trigger value)}]}; ``triggerCondition`` values are order
  counts. The body below is assembled from the file's per-field ``example`` values (the file
  gives no whole-body example).
- [AS-DOC] https://developers.binance.com/docs/wallet/account/account-status, "Account
  Status (USER_DATA)", ``GET /sapi/v1/account/status``, weight (IP) 1: ``{"data": "Normal"}``
  (same in [TS-OAS]'s spot_api.yaml, path ``/sapi/v1/account/status``).
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


# [TS-DOC] verbatim.
DOC_TRADING_STATUS = """{
  "data": {
    "isLocked": false,
    "plannedRecoverTime": 0,
    "triggerCondition": {
      "GCR": 150,
      "IFER": 150,
      "UFR": 300
    },
    "updateTime": 1547630471725
  }
}"""

# [TS-OAS] assembled from the per-field examples.
OAS_TRADING_STATUS: dict[str, Any] = {
    "data": {
        "isLocked": False,
        "plannedRecoverTime": 0,
        "triggerCondition": {"GCR": 150, "IFER": 150, "UFR": 300},
        "indicators": {"BTCUSDT": [{"i": "UFR", "c": 20, "v": 0.05, "t": 0.99}]},
        "updateTime": 1547630471725,
    }
}

# [AS-DOC] verbatim.
DOC_ACCOUNT_STATUS = '{"data": "Normal"}'


def _handler(
    status: int,
    body: object,
    headers: dict[str, str] | None = None,
    *,
    trading: tuple[int, object] = (200, DOC_TRADING_STATUS),
    account: tuple[int, object] = (200, DOC_ACCOUNT_STATUS),
) -> Any:
    def raw(answer: tuple[int, object]) -> Any:
        code, content = answer
        return respond(code, content.encode() if isinstance(content, str) else content)

    return routes(
        {
            "/api/v3/time": respond(200, {"serverTime": 1623840271000}),
            "/sapi/v1/account/apiRestrictions": respond(status, body, headers),
            "/sapi/v1/account/apiTradingStatus": raw(trading),
            "/sapi/v1/account/status": raw(account),
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


async def test_doc_trading_status_and_account_status() -> None:
    """[TS-DOC] and [AS-DOC]: not locked, no recovery time, the trigger condition as stated,
    indicators not shown (the page's example has none), the account normal: every trading
    rule evaluated, none fires."""
    result = await audit_routed(KEY, _handler(200, SDK_API_RESTRICTIONS))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.trading_status_error is None
    assert facts.trading_locked is False
    assert facts.trading_recover_at is None
    assert dict(facts.trading_trigger or {}) == {"GCR": 150, "IFER": 150, "UFR": 300}
    assert facts.trading_indicators is None
    assert facts.account_status == "Normal"
    assert facts.account_restricted is False
    checked = {str(c.rule) for c in result.evaluation.checks}
    assert {"trading_locked", "account_restricted"} <= checked
    assert "trading_lock_risk" not in checked  # no indicators shown: not evaluated
    assert not {"trading_locked", "account_restricted"} & {str(f.rule) for f in result.findings}


async def test_openapi_indicators() -> None:
    """[TS-OAS]: the indicator UFR of BTCUSDT at 0.05 of a 0.99 trigger (5 %): shown, below
    the default lock_risk (80 %), so trading_lock_risk is evaluated and does not fire."""
    result = await audit_routed(
        KEY, _handler(200, SDK_API_RESTRICTIONS, trading=(200, OAS_TRADING_STATUS))
    )
    facts = result.facts
    assert facts is not None
    assert facts.trading_indicators is not None
    (ufr,) = facts.trading_indicators
    assert (ufr.kind, ufr.symbol, ufr.value, ufr.trigger) == ("UFR", "BTCUSDT", 0.05, 0.99)
    assert ufr.ratio == pytest.approx(0.05 / 0.99)
    assert "trading_lock_risk" in {str(c.rule) for c in result.evaluation.checks}
    assert "trading_lock_risk" not in {str(f.rule) for f in result.findings}


async def test_a_locked_account_per_the_documented_fields() -> None:
    """isLocked true with a plannedRecoverTime (ms): trading_locked fires with the recovery
    time; built from [TS-OAS]'s fields with the lock switched on."""
    locked = {
        "data": {
            **OAS_TRADING_STATUS["data"],
            "isLocked": True,
            "plannedRecoverTime": 1_900_000_000_000,
            "indicators": {"BTCUSDT": [{"i": "UFR", "c": 320, "v": 0.995, "t": 0.99}]},
        }
    }
    result = await audit_routed(KEY, _handler(200, SDK_API_RESTRICTIONS, trading=(200, locked)))
    facts = result.facts
    assert facts is not None
    assert facts.trading_locked is True
    assert facts.trading_recover_at == datetime.fromtimestamp(1_900_000_000, UTC)
    (finding,) = [f for f in result.findings if str(f.rule) == "trading_locked"]
    assert "planned recovery 2030-03-17 17:46 UTC" in finding.message
    assert "UFR 0.995 >= 0.99 on BTCUSDT" in finding.message


@pytest.mark.parametrize(
    ("trading", "account", "reason"),
    [
        (
            (503, {"code": -1001, "msg": "Internal error."}),
            (200, DOC_ACCOUNT_STATUS),
            "exchange_unavailable",
        ),
        ((200, {"data": {"plannedRecoverTime": 0}}), (200, DOC_ACCOUNT_STATUS), "bad_response"),
        ((200, DOC_TRADING_STATUS), (200, {"data": None}), "bad_response"),
        (
            (429, {"code": -1003, "msg": "Too much request weight used."}),
            (200, DOC_ACCOUNT_STATUS),
            "rate_limited",
        ),
    ],
    ids=["trading-503", "trading-without-isLocked", "status-without-data", "trading-429"],
)
async def test_a_failed_trading_read_keeps_the_restriction_facts(
    trading: tuple[int, object], account: tuple[int, object], reason: str
) -> None:
    """Whatever the trading-status calls answer, the audit of apiRestrictions stands: the
    failure is kept beside the facts with its reason, never as the audit's error."""
    result = await audit_routed(
        KEY, _handler(200, SDK_API_RESTRICTIONS, trading=trading, account=account)
    )
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.permissions["universal_transfer"] is True
    assert facts.trading_status_error is not None
    assert str(facts.trading_status_error.reason) == reason


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
