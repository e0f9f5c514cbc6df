"""Bitrue conformance record: Bitrue's own docs on keymon's calls, and how keymon reads them.

Source (official): Bitrue-exchange/Spot-official-api-docs ``README.md`` (snapshot 2023-07-14):
"Check server time", "Account information (USER_DATA)", "General API Information" (the error
payload ``{"code", "msg"}``), "Error Codes" (with their HTTP statuses), the withdraw section's
error table, the user-data stream's error codes and "LIMITS" (429). Error bodies are that
payload around the table's code and description (constructed, the text verbatim). Bitrue
publishes no official SDK with fixtures.
"""

from __future__ import annotations

import httpx
import pytest

from keymon.model import Coverage, Reason
from tests.conformance.answering import Canned, answering, audit, reason

TIME = "/api/v1/time"
ACCOUNT = "/api/v1/account"

# Bitrue-exchange/Spot-official-api-docs README.md, "Check server time", Response (verbatim).
TIME_EXAMPLE = """{
  "serverTime": 1499827319559
}"""

# Same file, "Account information (USER_DATA)", Response (verbatim). The flags describe the
# account, not the key.
ACCOUNT_EXAMPLE = """{
  "makerCommission": 15,
  "takerCommission": 15,
  "buyerCommission": 0,
  "sellerCommission": 0,
  "canTrade": true,
  "canWithdraw": true,
  "canDeposit": true,
  "updateTime": 123456789,
  "balances": [
    {
      "asset": "BTC",
      "free": "4723846.89208129",
      "locked": "0.00000000"
    },
    {
      "asset": "LTC",
      "free": "4763368.68006011",
      "locked": "0.00000000"
    }
  ]
}"""


def routes(account: Canned) -> dict[str, Canned]:
    return {TIME: (200, TIME_EXAMPLE), ACCOUNT: account}


async def test_account_example_is_accepted_and_claims_nothing_about_the_key() -> None:
    seen: list[httpx.Request] = []
    result = await audit("bitrue", answering(routes((200, ACCOUNT_EXAMPLE)), seen))
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    assert dict(result.facts.permissions) == {}  # canWithdraw is the account's, not the key's
    assert result.facts.ip_restricted is None
    assert [r.url.path for r in seen] == [TIME, ACCOUNT]


# (HTTP status, code, description, reason). Statuses are the table's where it gives one; the
# withdraw table's codes have none (400 here).
ERRORS: list[tuple[int, int, str, Reason]] = [
    # "Http status '4xx'": -1022 covers signature, timestamp and authorization alike. keymon
    # re-syncs and retries; refused again with its stamp provably in time, it is the key's.
    (
        401,
        -1022,
        "Invalid signature or Invalid timestamp or Unauthorized for API.",
        Reason.KEY_REJECTED,
    ),
    # keymon's own malformed request: nothing about the key.
    (412, -1102, "Mandatory parameter is missing or illegal.", Reason.BAD_RESPONSE),
    # "Http status '5xx'".
    (500, -1016, "Service unavailable", Reason.EXCHANGE_UNAVAILABLE),
    (503, 503, "Service unavailable", Reason.EXCHANGE_UNAVAILABLE),
    # The withdraw section's table: the entries about the key.
    (400, 966000, "Ip limit", Reason.KEY_REJECTED),
    (400, 966001, "No privileges", Reason.KEY_REJECTED),
    (400, 32, "User auth error", Reason.KEY_REJECTED),
    # Codes with no meaning for this call stay bad_response.
    (412, -1121, "Invalid symbol name given.", Reason.BAD_RESPONSE),
    (406, -2010, "Order placement or cancellation or withdrawal rejected.", Reason.BAD_RESPONSE),
    # An HTTP 401 with a code the table does not list reads like -1022.
    (401, -9999, "a code Bitrue's table does not list", Reason.KEY_REJECTED),
]


@pytest.mark.parametrize(
    ("status", "code", "msg", "expected"),
    ERRORS,
    ids=[f"{status}-{code}" for status, code, _, _ in ERRORS],
)
async def test_error_table(status: int, code: int, msg: str, expected: Reason) -> None:
    result = await audit("bitrue", answering(routes((status, {"code": code, "msg": msg}))))
    assert reason(result) is expected, result.error
    assert result.error is not None
    assert result.error.code == code


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (429, Reason.RATE_LIMITED),  # "LIMITS": a 429 when a rate limit is violated
        (418, Reason.BANNED),
        (500, Reason.EXCHANGE_UNAVAILABLE),
        (401, Reason.KEY_REJECTED),
    ],
)
async def test_http_statuses_without_a_code(status: int, expected: Reason) -> None:
    result = await audit("bitrue", answering(routes((status, b""))))
    assert reason(result) is expected, result.error
