"""Biconomy conformance record: Biconomy's own docs on keymon's call, and how keymon reads it.

Source (official): BiconomyOfficial/apidocs ``README.md`` (v1, MD5; snapshot 2024-06-26):
"Access URL", "error code", "Attention" (``X-SITE-ID: 127`` on every request, unsigned),
"Signature Authentication" (sorted parameters, ``&secret_key=``, uppercase MD5) and "Get User
Assets" (``POST /api/v1/private/user``). ``README_v2.md`` documents the same with SHA256 on
``/api/v2`` paths; keymon uses v1. Biconomy publishes no SDK with fixtures. Its error table has
**no** code for an unknown key, a bad signature, a refused IP or an expired key.
"""

from __future__ import annotations

import hashlib

import httpx
import pytest

from keymon.exchanges.biconomy import sign, signing_string
from keymon.model import Coverage, Reason
from tests.conformance.answering import Canned, answering, audit, reason

USER = "/api/v1/private/user"

# BiconomyOfficial/apidocs README.md, "Get User Assets", Response (verbatim, without the
# markdown's blank lines). withdraw_status is the coin's withdraw channel, not the key's.
USER_EXAMPLE = """{
 "code": 0,
 "message": "successful",
 "result": {
  "USDT": {
   "available": "10718.74453852",
   "freeze": "0.10999996",
   "other_freeze": "0",
   "recharge_status": 0,
   "trade_status": 1,
   "withdraw_fee": "0.1",
   "withdraw_max": "1000",
   "withdraw_min": "0.001",
   "withdraw_status": 1
  },
  "ETH": {
   "available": "395.196",
   "freeze": "0",
   "other_freeze": "0",
   "recharge_status": 1,
   "trade_status": 1,
   "withdraw_fee": "0.01",
   "withdraw_max": "100000",
   "withdraw_min": "0.001",
   "withdraw_status": 1
  },
  "BTC": {
   "available": "46.20370336",
   "freeze": "0",
   "other_freeze": "0",
   "recharge_status": 0,
   "trade_status": 1,
   "withdraw_fee": "0.1",
   "withdraw_max": "100000",
   "withdraw_min": "1",
   "withdraw_status": 1
  }
 }
}"""


def routes(answer: Canned) -> dict[str, Canned]:
    return {USER: answer}


def test_signing_follows_the_docs_example() -> None:
    """ "Signature Authentication": the sorted parameters, then ``&secret_key=secretKey``,
    then uppercase MD5 (the docs' parameter and final strings, verbatim)."""
    params = {
        "market": "BTC_USDT",
        "side": "1",
        "price": "50",
        "amount": "0.02",
        "api_key": "apiKey",
    }
    final = "amount=0.02&api_key=apiKey&market=BTC_USDT&price=50&side=1&secret_key=secretKey"
    assert signing_string(params, "secretKey") == final
    assert sign(params, "secretKey") == hashlib.md5(final.encode()).hexdigest().upper()  # noqa: S324


async def test_user_example_is_accepted_and_claims_nothing() -> None:
    seen: list[httpx.Request] = []
    result = await audit("biconomy", answering(routes((200, USER_EXAMPLE)), seen))
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    assert dict(result.facts.permissions) == {}  # withdraw_status is the coin's, not the key's
    [call] = seen
    assert call.headers["X-SITE-ID"] == "127"
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"


# README.md "error code": (code, description, the reason its meaning implies on this call).
ERRORS: list[tuple[int, str, Reason]] = [
    # The call's only parameters are api_key and sign: an inference, the docs say no more.
    (1, "Invalid parameter", Reason.KEY_REJECTED),
    (2, "Internal error", Reason.EXCHANGE_UNAVAILABLE),
    (3, "Service unavailable", Reason.EXCHANGE_UNAVAILABLE),
    (4, "Method Not Found", Reason.BAD_RESPONSE),  # keymon's own request
    (5, "Service timeout", Reason.EXCHANGE_UNAVAILABLE),
    (10005, "Record Not Found", Reason.BAD_RESPONSE),  # "X-SITE-ID, Setting Error"
    (10022, "Failed real-name authentication", Reason.KEY_REJECTED),
    (10051, "User forbids trading", Reason.KEY_REJECTED),
    # Trading codes have no meaning for this call: bad_response.
    (10, "Insufficient amount", Reason.BAD_RESPONSE),
    (10060, "This trading pair has not yet opened trading", Reason.BAD_RESPONSE),
]


@pytest.mark.parametrize(
    ("code", "message", "expected"), ERRORS, ids=[str(code) for code, _, _ in ERRORS]
)
async def test_error_table(code: int, message: str, expected: Reason) -> None:
    body = {"code": code, "message": message, "result": None}
    result = await audit("biconomy", answering(routes((200, body))))
    assert reason(result) is expected, result.error
    assert result.error is not None
    assert result.error.code == code


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, Reason.KEY_REJECTED),
        (429, Reason.RATE_LIMITED),
        (500, Reason.EXCHANGE_UNAVAILABLE),
        (404, Reason.BAD_RESPONSE),
    ],
)
async def test_http_statuses_without_a_code(status: int, expected: Reason) -> None:
    result = await audit("biconomy", answering(routes((status, b""))))
    assert reason(result) is expected, result.error
