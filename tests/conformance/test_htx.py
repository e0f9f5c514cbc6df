"""HTX (formerly Huobi) against its own documentation: the key-info answer, the accounts
answer and error codes.

Sources:
- [ANN] HTX announcement "HTX Will Introduce The API Key Management Endpoints"
  (https://www.huobi.com/support/en-us/detail/900001195006/): ``GET /v2/user/api-key``, the
  ``permission`` values (``readOnly`` required, ``trade`` optional; comma separated),
  ``ipAddresses`` (at most 10, comma separated; "Without any IP address binding, the API key
  will expire in 90 days").
- [DOC] https://huobiapi.github.io/docs/spot/v1/en/ ("Query API key information"): its
  example answer was not readable in our stored copies. The body below is built from the
  documented fields (``accessKey``, ``status``, ``note``, ``permission``, ``ipAddresses``,
  ``validDays``, ``createTime``, ``updateTime``; field names confirmed by the third-party
  schema aluna-crypto/alunajs src/exchanges/huobi/schemas/IHuobiKeySchema.ts), NOT verbatim.
- [ERR] the v1 error codes ``api-signature-not-valid``, ``api-signature-check-failed``,
  ``base-request-exceed-frequency-limit``, ``system-maintenance``, named by HTX's docs and
  listed in exchange-apis.md's "Known corrections"; HTX's full table was not readable here.
- [ACC] "Get all Accounts of the Current User", ``GET /v1/account/accounts``
  (https://www.htx.com/en-us/opend/newApiPages/?id=7ec4b291-7773-11ed-9966-0242ac110003, also
  https://huobiapi.github.io/docs/spot/v1/en/#get-all-accounts-of-the-current-user): permission
  Read, no parameters, rate limit 100 times/2s; ``state`` ``working`` or ``lock``; ``type``
  spot, margin, point, super-margin, grid-trading, otc-options, trust-credit; ``subtype`` the
  isolated margin account's symbol. ``ACCOUNTS_EXAMPLE`` is the page's success example,
  verbatim in content (its rendering lost the JSON punctuation).
- [ERRTABLE] the spot API's error-code table (https://huobiapi.github.io/docs/spot/v1/en/,
  "Error Code"): ``account-get-accounts-inexistent-error`` "The account doesn't exist in
  current user".
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from keymon.model import Reason
from tests.conformance.answering import audit_routed, respond, routes

ACCESS_KEY = "4ed49817-3e3f5a1c-1a2b3c4d-5e6f7"
KEY = {"exchange": "htx", "api_key": ACCESS_KEY, "api_secret": "secret", "uid": "100009"}

# [DOC] fields, constructed (see the module docstring): a read+trade key bound to two IPs.
DOCUMENTED_FIELDS_ANSWER: dict[str, Any] = {
    "code": 200,
    "message": "success",
    "data": [
        {
            "accessKey": ACCESS_KEY,
            "status": "normal",
            "note": "desk",
            "permission": "readOnly,trade",
            "ipAddresses": "202.106.196.115,202.106.96.0/24",
            "validDays": -1,
            "createTime": 1591348751000,
            "updateTime": 1591348751000,
        }
    ],
}


# [ACC] success example, verbatim in content.
ACCOUNTS_EXAMPLE: dict[str, Any] = {
    "status": "ok",
    "data": [
        {"id": 10000001, "type": "spot", "subtype": "", "state": "working"},
        {"id": 10000002, "type": "otc", "subtype": "", "state": "working"},
        {"id": 10000003, "type": "point", "subtype": "", "state": "working"},
    ],
}


def _handler(status: int, body: object, accounts: Any = None) -> Any:
    return routes(
        {
            "/v2/user/api-key": respond(status, body),
            "/v1/account/accounts": accounts or respond(200, ACCOUNTS_EXAMPLE),
        }
    )


async def test_documented_fields_map() -> None:
    """readOnly -> read, trade -> spot_trade (margin/futures: ``trade`` may cover them, the
    docs do not say: not visible), withdraw absent -> off; the [ANN] example IPs; created
    2020-06-05; status normal -> not locked."""
    result = await audit_routed(KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {"read": True, "spot_trade": True, "withdraw": False}
    assert facts.ip_restricted is True
    assert facts.ip_list == ("202.106.196.115", "202.106.96.0/24")
    assert facts.created_at == datetime.fromtimestamp(1591348751, UTC)
    assert facts.deadlines == ()  # validDays is kept raw (its sentinel is unconfirmed)
    assert facts.key_locked is False
    assert facts.account_kind is None
    assert facts.third_party_app is None
    assert facts.last_used_at is None


async def test_read_only_key_and_a_status_other_than_normal() -> None:
    body = copy.deepcopy(DOCUMENTED_FIELDS_ANSWER)
    body["data"][0].update(permission="readOnly", ipAddresses="", status="expired")
    result = await audit_routed(KEY, _handler(200, body))
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": False,
        "withdraw": False,
        "margin_trade": False,
        "futures_trade": False,
    }
    assert facts.ip_restricted is False
    assert facts.key_locked is True


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (200, "api-signature-not-valid", Reason.KEY_REJECTED),
        (200, "api-signature-check-failed", Reason.KEY_REJECTED),
        (200, "base-request-exceed-frequency-limit", Reason.RATE_LIMITED),
        (429, "base-request-exceed-frequency-limit", Reason.RATE_LIMITED),
        (200, "system-maintenance", Reason.EXCHANGE_UNAVAILABLE),
        # A code these sources give no meaning for a key audit: stays bad_response.
        (200, "invalid-parameter", Reason.BAD_RESPONSE),
    ],
)
async def test_error_codes(status: int, code: str, reason: Reason) -> None:
    body = {"status": "error", "err-code": code, "err-msg": "message", "data": None}
    result = await audit_routed(KEY, _handler(status, body))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message


async def test_documented_accounts_example_maps() -> None:
    """[ACC]'s example: the spot account is ``working``: status quoted, not restricted; no
    trading-lock facts (HTX does not show them)."""
    result = await audit_routed(KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER))
    facts = result.facts
    assert facts is not None
    assert facts.account_status == "working"
    assert facts.account_restricted is False
    assert facts.trading_status_error is None
    assert facts.trading_locked is None


def _accounts_with(**states: str) -> dict[str, Any]:
    body = copy.deepcopy(ACCOUNTS_EXAMPLE)
    for entry in body["data"]:
        entry["state"] = states.get(entry["type"], entry["state"])
    return body


async def test_a_locked_spot_account_is_restricted() -> None:
    body = _accounts_with(spot="lock")
    result = await audit_routed(KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER, respond(200, body)))
    facts = result.facts
    assert facts is not None
    assert facts.account_status == "lock"
    assert facts.account_restricted is True


async def test_locked_accounts_of_other_types() -> None:
    """A locked isolated-margin (``subtype``: its symbol) or cross-margin account is named
    after the spot state; a locked ``otc`` or ``point`` account does not trade through the
    key's orders and is left out."""
    body = _accounts_with(otc="lock", point="lock")
    body["data"] += [
        {"id": 10000004, "type": "margin", "subtype": "btcusdt", "state": "lock"},
        {"id": 10000005, "type": "super-margin", "subtype": "", "state": "lock"},
    ]
    result = await audit_routed(KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER, respond(200, body)))
    facts = result.facts
    assert facts is not None
    assert facts.account_status == (
        "working; also locked: margin account 10000004 (btcusdt), super-margin account 10000005"
    )
    assert facts.account_restricted is True
    only_others = _accounts_with(otc="lock", point="lock")
    result = await audit_routed(
        KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER, respond(200, only_others))
    )
    assert result.facts is not None
    assert result.facts.account_status == "working"
    assert result.facts.account_restricted is False


async def test_no_spot_account_is_not_shown() -> None:
    body = {"status": "ok", "data": [ACCOUNTS_EXAMPLE["data"][2]]}
    result = await audit_routed(KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER, respond(200, body)))
    assert result.facts is not None
    assert result.facts.account_status is None
    assert result.facts.trading_status_error is None


@pytest.mark.parametrize(
    ("status", "body", "reason"),
    [
        (
            200,
            {
                "status": "error",
                "err-code": "account-get-accounts-inexistent-error",
                "err-msg": "m",
            },
            Reason.BAD_RESPONSE,
        ),
        (
            200,
            {"status": "error", "err-code": "base-request-exceed-frequency-limit", "err-msg": "m"},
            Reason.RATE_LIMITED,
        ),
        (200, {"status": "error", "err-code": "system-maintenance"}, Reason.EXCHANGE_UNAVAILABLE),
        (200, {"status": "ok", "data": [{"id": 1, "type": "spot"}]}, Reason.BAD_RESPONSE),
        (502, b"<html>bad gateway</html>", Reason.EXCHANGE_UNAVAILABLE),
    ],
)
async def test_a_failed_accounts_call_keeps_the_key_facts(
    status: int, body: object, reason: Reason
) -> None:
    """[ERRTABLE]/[ERR] codes on the accounts call: the audit succeeds with the key's facts,
    the account status is not read, and ``trading_status_error`` says why (quoting the code)."""
    result = await audit_routed(KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER, respond(status, body)))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.permissions["spot_trade"] is True
    assert facts.account_status is None
    assert facts.trading_status_error is not None
    assert facts.trading_status_error.reason is reason
    if isinstance(body, dict) and "err-code" in body:
        assert str(body["err-code"]) in facts.trading_status_error.message


async def test_trading_status_off_reads_no_accounts() -> None:
    seen: list[str] = []

    def handler(request: Any) -> Any:
        seen.append(request.url.path)
        return _handler(200, DOCUMENTED_FIELDS_ANSWER)(request)

    result = await audit_routed(KEY, handler, exchanges={"htx": {"trading_status": False}})
    assert result.facts is not None
    assert result.facts.account_status is None
    assert seen == ["/v2/user/api-key"]
