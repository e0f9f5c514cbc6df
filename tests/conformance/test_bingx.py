# ruff: noqa: RUF001 - BingX's HTTP error texts are quoted verbatim (en dashes)
"""BingX conformance record: BingX's own docs on keymon's two calls, and how keymon reads them.

Sources (official):
- [PERM] BingX-API/docs-v3 (the source of https://bingx-api.github.io/docs-v3/), commit
  d84f954707dfb75f4e9dc7c09da9e50e128334a7 (2025-10-29), ``static/js/app.4ba922b42c5d07b46306.js``,
  the page "Query API KEY Permissions" (``GET /openApi/v1/account/apiPermissions``): the
  example answer ``responseBody`` and the field table (``permissions`` "1 - Spot trading, 2 -
  Read, 3 - Professional contract trading, 4 - Universal transfer, 5 - Withdraw, 7 - Allow
  intra-sub-account transfer"; ``ipAddresses`` "IP whitelist"; ``note`` "Remark"). The example
  is the bare object, without the ``{"code", "msg", "data"}`` envelope.
- [BASIC] the same file, page "Basic Information": "Common HTTP Error Codes", "Common Business
  Error Codes", "Timestamp Specifications" (5 seconds), "Rate Limiting" and "Query System Time"
  (``GET /openApi/swap/v2/server/time``, its sample response).
- [SPOT] BingX-API/BingX-spot-api-doc ``REST API.md`` at commit
  1d9d095e3aeec97a9fc97aa949de9ce92ac893ee (2023-04-18), "Common Business Error Codes" (the
  only official source of ``100503`` "Server busy").
- [ORDER] docs-v3 as in [PERM], the spot order pages' error lists: ``100414`` "Your account is
  under risk control or without KYC, it's not allowed to place spot order via api" and "risk
  control check fail".

The docs show no creation time, expiry or lock state for a key: those facts stay unknown.
"""

from __future__ import annotations

import pytest

from keymon.model import Coverage, Reason
from tests.conformance.answering import Canned, answering, audit, reason

PERMISSIONS = "/openApi/v1/account/apiPermissions"
TIME = "/openApi/swap/v2/server/time"

# [PERM] responseBody, verbatim (the bundle's object literal written as JSON).
PERMISSIONS_EXAMPLE = '{"apiKey": "", "permissions": [1, 2], "ipAddresses": [], "note": "demo"}'
# [BASIC] "Query System Time", Sample Response, verbatim.
TIME_EXAMPLE = '{"code": 0, "msg": "", "data": {"serverTime": 1675319535362}}'


def routes(answer: Canned) -> dict[str, Canned]:
    return {TIME: (200, TIME_EXAMPLE), PERMISSIONS: answer}


async def test_permissions_example_gives_the_facts_the_docs_describe() -> None:
    """Codes 1 and 2: spot trading and read on; every other documented code off; ``[]``: no
    IP whitelist; no creation time shown. The example carries no envelope and is read as is."""
    result = await audit("bingx", answering(routes((200, PERMISSIONS_EXAMPLE))))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.coverage is Coverage.INTROSPECTION
    assert dict(facts.permissions) == {
        "spot_trade": True,
        "read": True,
        "futures_trade": False,
        "universal_transfer": False,
        "withdraw": False,
        "internal_transfer": False,
    }
    assert facts.ip_restricted is False
    assert facts.ip_list == ()
    assert facts.created_at is None
    assert facts.deadlines == ()
    assert facts.key_locked is None
    # An unbound key that can trade: BingX's 14-day idle deletion is named in the finding.
    assert facts.ip_unrestricted_note is not None
    assert "ip_unrestricted" in {str(f.rule) for f in result.findings}


async def test_permissions_example_inside_the_envelope() -> None:
    """The same object inside BingX's usual envelope (as its other endpoints answer) reads the
    same."""
    wrapped = f'{{"code": 0, "msg": "", "data": {PERMISSIONS_EXAMPLE}}}'
    result = await audit("bingx", answering(routes((200, wrapped))))
    assert result.facts is not None, result.error
    assert {name for name, on in result.facts.permissions.items() if on} == {"spot_trade", "read"}
    assert result.facts.ip_list == ()


@pytest.mark.parametrize(
    ("codes", "on"),
    [
        ([2], {"read"}),
        ([1, 2], {"read", "spot_trade"}),
        ([2, 3], {"read", "futures_trade"}),
        ([2, 4], {"read", "universal_transfer"}),
        ([2, 5], {"read", "withdraw"}),
        ([2, 7], {"read", "internal_transfer"}),
        (
            [1, 2, 3, 4, 5, 7],
            {
                "read",
                "spot_trade",
                "futures_trade",
                "universal_transfer",
                "withdraw",
                "internal_transfer",
            },
        ),
    ],
)
async def test_documented_codes(codes: list[int], on: set[str]) -> None:
    """[PERM]'s table: a code the docs list turns its permission on, and never reads off."""
    body = PERMISSIONS_EXAMPLE.replace("[1, 2]", str(codes)).replace(
        '"ipAddresses": []', '"ipAddresses": ["127.0.0.1"]'
    )
    result = await audit("bingx", answering(routes((200, body))))
    assert result.facts is not None, result.error
    assert {name for name, value in result.facts.permissions.items() if value} == on
    assert result.facts.ip_restricted is True
    assert result.facts.ip_list == ("127.0.0.1",)


async def test_undocumented_code_is_kept_under_its_number() -> None:
    """Code 6 is not in the table: kept under its raw number, on, never dropped."""
    body = PERMISSIONS_EXAMPLE.replace("[1, 2]", "[2, 6]")
    result = await audit("bingx", answering(routes((200, body))))
    assert result.facts is not None, result.error
    assert result.facts.permissions["6"] is True


# (HTTP status, code, message as the docs word it, the reason its meaning implies).
ERRORS: list[tuple[int, int, str, Reason]] = [
    # [BASIC] Common Business Error Codes (HTTP 200, a non-zero code).
    (200, 100001, "Signature verification failed", Reason.KEY_REJECTED),
    (200, 100500, "Internal system error", Reason.EXCHANGE_UNAVAILABLE),
    (200, 80012, "Service unavailable", Reason.EXCHANGE_UNAVAILABLE),
    # keymon's own request is malformed: nothing about the key.
    (200, 80014, "Invalid parameter", Reason.BAD_RESPONSE),
    (
        200,
        100004,
        "Permission denied as the API key was created without permission",
        Reason.KEY_REJECTED,
    ),
    (200, 100419, "IP does not match IP whitelist", Reason.KEY_REJECTED),
    (200, 100400, "Invalid parameter", Reason.BAD_RESPONSE),
    (200, 100412, "Null signature", Reason.BAD_RESPONSE),
    (200, 100413, "Incorrect API key", Reason.KEY_REJECTED),
    (200, 100421, "Timestamp mismatch", Reason.CLOCK_SKEW),
    (200, 100410, "Rate limit exceeded", Reason.RATE_LIMITED),
    (200, 101500, "RPC timeout", Reason.EXCHANGE_UNAVAILABLE),
    # [SPOT] Common Business Error Codes.
    (200, 100503, "Server busy", Reason.EXCHANGE_UNAVAILABLE),
    # [ORDER]: the account is under risk control: BingX refuses the key's calls.
    (
        200,
        100414,
        "Your account is under risk control or without KYC, it's not allowed to place spot "
        "order via api,currently,please contact customer service",
        Reason.KEY_REJECTED,
    ),
    # A code the docs give no meaning: bad_response (none is invented).
    (200, 109999, "", Reason.BAD_RESPONSE),
]


@pytest.mark.parametrize(
    ("status", "code", "text", "expected"),
    ERRORS,
    ids=[f"{status}-{code}" for status, code, _, _ in ERRORS],
)
async def test_business_error_codes(status: int, code: int, text: str, expected: Reason) -> None:
    body = {"code": code, "msg": text}
    result = await audit("bingx", answering(routes((status, body))))
    assert reason(result) is expected, result.error


# [BASIC] Common HTTP Error Codes, answered without a BingX envelope.
HTTP_ERRORS: list[tuple[int, str, Reason]] = [
    (400, "Bad Request – Invalid request format", Reason.BAD_RESPONSE),
    (401, "Unauthorized – Invalid API Key", Reason.KEY_REJECTED),
    # "You do not have access to the requested resource": a refusal of the caller, not of the
    # key, which BingX names by code (100004, 100413, 100419); a bare 403 is a block in front
    # of the API (firewall, region), so keymon does not call the key rejected on it.
    (
        403,
        "Forbidden – You do not have access to the requested resource",
        Reason.EXCHANGE_UNAVAILABLE,
    ),
    (404, "Not Found – Request not found", Reason.BAD_RESPONSE),
    (429, "Too Many Requests", Reason.RATE_LIMITED),
    (418, "Received 429 and continued access, so the user is banned", Reason.BANNED),
    (500, "Internal Server Error", Reason.EXCHANGE_UNAVAILABLE),
    (504, "The server failed to get a response", Reason.EXCHANGE_UNAVAILABLE),
]


@pytest.mark.parametrize(
    ("status", "text", "expected"), HTTP_ERRORS, ids=[str(s) for s, _, _ in HTTP_ERRORS]
)
async def test_http_error_codes(status: int, text: str, expected: Reason) -> None:
    result = await audit("bingx", answering(routes((status, text.encode()))))
    assert reason(result) is expected, result.error


async def test_rate_limit_window_header() -> None:
    """[BASIC] Rate Limiting: ``X-RateLimit-Requests-Expire`` is the window's end; a 100410
    waits for it."""
    result = await audit(
        "bingx",
        answering(
            routes((200, {"code": 100410, "msg": "Rate limit exceeded"})),
            headers={"X-RateLimit-Requests-Expire": "1795000061000"},
        ),
    )
    assert reason(result) is Reason.RATE_LIMITED
