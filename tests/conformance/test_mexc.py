"""MEXC conformance record: what MEXC's own docs say keymon's calls answer, and how keymon reads it.

Sources (official): mexcdevelop/apidocs, branch ``spot_v3_en``, ``source/index.html.md``
(published at https://mexcdevelop.github.io/apidocs/spot_v3_en/): "Check Server Time", "Account
Information", "HTTP Return Codes", "LIMITS" and "Error Code". MEXC's docs print no example
*error body*; the error bodies below are MEXC's ``{"code", "msg"}`` shape around the code and
description quoted from its table (constructed, the text verbatim). No official SDK fixture
was used.
"""

from __future__ import annotations

import httpx
import pytest

from keymon.model import Coverage, Reason
from tests.conformance.answering import Canned, answering, audit, reason

TIME = "/api/v3/time"
ACCOUNT = "/api/v3/account"

# mexcdevelop/apidocs@spot_v3_en source/index.html.md, "Check Server Time", Response (verbatim).
TIME_EXAMPLE = """{
    "serverTime" : 1645539742000
}"""

# mexcdevelop/apidocs@spot_v3_en source/index.html.md, "Account Information", Response
# (verbatim). canTrade/canWithdraw/canDeposit describe the *account*, not the key.
ACCOUNT_EXAMPLE = """{
    "canTrade": true,
    "canWithdraw": true,
    "canDeposit": true,
    "updateTime": null,
    "accountType": "SPOT",
    "balances": [{
        "asset": "NBNTEST",
        "free": "1111078",
        "locked": "33"
    }, {
        "asset": "MAIN",
        "free": "1020000",
        "locked": "0"
    }],
    "permissions": ["SPOT"]
}"""


def routes(account: Canned) -> dict[str, Canned]:
    return {TIME: (200, TIME_EXAMPLE), ACCOUNT: account}


async def test_account_example_is_accepted_and_claims_nothing_about_the_key() -> None:
    """The docs' account answer: the key is accepted; the account-level canWithdraw: true is
    no fact about the key (liveness: every permission, IP and deadline not visible)."""
    seen: list[httpx.Request] = []
    result = await audit("mexc", answering(routes((200, ACCOUNT_EXAMPLE)), seen))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.coverage is Coverage.LIVENESS
    assert dict(facts.permissions) == {}
    assert facts.ip_restricted is None
    assert facts.ip_list is None
    assert [r.url.path for r in seen] == [TIME, ACCOUNT]


def test_time_example_is_read() -> None:
    from keymon.exchanges.mexc import MexcAdapter, MexcSettings

    adapter = MexcAdapter(httpx.AsyncClient(), MexcSettings())
    assert adapter.parse_server_time({"serverTime": 1645539742000}) == 1645539742000.0


# MEXC's "Error Code" table, every entry about the key, its signature, time, permissions, IP
# or rate limits, with the reason its meaning implies; then the HTTP statuses ("HTTP Return
# Codes": 4XX sender, 403 WAF limit, 429 rate limit, 5XX MEXC; 418 ban with Retry-After).
# Source of every row: mexcdevelop/apidocs@spot_v3_en source/index.html.md.
ERRORS: list[tuple[int, int | None, str, Reason]] = [
    (400, 400, "api key required", Reason.KEY_REJECTED),
    (401, 401, "No authority", Reason.KEY_REJECTED),
    (400, 401, "No authority", Reason.KEY_REJECTED),
    (403, 403, "Access Denied", Reason.RATE_LIMITED),  # 403 = WAF limit ("HTTP Return Codes")
    (429, 429, "Too Many Requests", Reason.RATE_LIMITED),
    (500, 500, "Internal error", Reason.EXCHANGE_UNAVAILABLE),
    (503, 503, "service not available, please try again", Reason.EXCHANGE_UNAVAILABLE),
    (504, 504, "Gateway Time-out", Reason.EXCHANGE_UNAVAILABLE),
    (400, 602, "Signature verification failed", Reason.KEY_REJECTED),
    (400, 10001, "user does not exist", Reason.KEY_REJECTED),
    (400, 10072, "invalid access key", Reason.KEY_REJECTED),
    (400, 10073, "invalid Request-Time", Reason.CLOCK_SKEW),
    (400, 60005, "your account is abnormal", Reason.KEY_REJECTED),
    (400, 700001, "API-key format invalid", Reason.KEY_REJECTED),
    (400, 700002, "Signature for this request is not valid", Reason.KEY_REJECTED),
    (400, 700003, "Timestamp for this request is outside of the recvWindow", Reason.CLOCK_SKEW),
    # keymon's own request malformed: nothing about the key.
    (400, 700005, "recvWindow must less than 60000", Reason.BAD_RESPONSE),
    (400, 700006, "IP non white list", Reason.KEY_REJECTED),
    (400, 700007, "No permission to access the endpoint", Reason.KEY_REJECTED),
    # Codes the table gives no meaning for this call stay bad_response.
    (400, 26, "operation not allowed", Reason.BAD_RESPONSE),
    (400, 10007, "bad symbol", Reason.BAD_RESPONSE),
    (400, 987654, "a code MEXC's table does not list", Reason.BAD_RESPONSE),
    # An HTTP 401 with a code the table does not list: refused (the table's 401 "No authority").
    (401, 987654, "a code MEXC's table does not list", Reason.KEY_REJECTED),
]


@pytest.mark.parametrize(
    ("status", "code", "msg", "expected"),
    ERRORS,
    ids=[f"{status}-{code}" for status, code, _, _ in ERRORS],
)
async def test_error_table(status: int, code: int | None, msg: str, expected: Reason) -> None:
    body = {"code": code, "msg": msg}
    result = await audit("mexc", answering(routes((status, body))))
    assert reason(result) is expected, result.error
    assert result.error is not None
    assert result.error.code == code


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, Reason.KEY_REJECTED),
        (403, Reason.RATE_LIMITED),
        (418, Reason.BANNED),
        (429, Reason.RATE_LIMITED),
        (500, Reason.EXCHANGE_UNAVAILABLE),
        (404, Reason.BAD_RESPONSE),
    ],
)
async def test_http_statuses_without_a_code(status: int, expected: Reason) -> None:
    result = await audit("mexc", answering(routes((status, b"<html>denied</html>"))))
    assert reason(result) is expected, result.error


async def test_refused_ip_names_no_address_because_mexc_names_none() -> None:
    """The table's 700006 text is "IP non white list": no address to report."""
    result = await audit(
        "mexc", answering(routes((400, {"code": 700006, "msg": "IP non white list"})))
    )
    assert result.error is not None
    assert result.error.refused_ip is None
