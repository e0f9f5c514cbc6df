"""Coinstore conformance record: Coinstore's own docs on keymon's call, and how keymon reads it.

Source (official): coinstore-openapi/coinstore-openapi.github.io ``source/en/index.html.md``
(published at https://coinstore-openapi.github.io/en/, "the only official documentation of
Coinstore API"): "Signature Authentication" (``X-CS-EXPIRES`` / 30000, HMAC-SHA256 twice,
payload = query string then body, not sorted), "Request Format" (POST without parameters sends
``{}``), "Return Format" (``code`` 0 success, other failure), "Error Message" (HTTP 400, 401
"signature failed - Invalid API Key", 404, 429 "too many visits", 500) and "Assets Balance"
(``POST /spot/accountList``). The docs list **no** body code for an unknown key, a refused IP,
a stale ``X-CS-EXPIRES`` or a frozen key; the body codes ``1401`` and ``401`` below are
**third-party** (observed by connectors, labelled so). The signing scheme is now confirmed by
the official docs (exchange-apis.md §2.13 had it from third-party code).
"""

from __future__ import annotations

import hashlib
import hmac
import math

import httpx
import pytest

from keymon.exchanges.coinstore import sign
from keymon.model import Coverage, Reason
from tests.conformance.answering import Canned, answering, audit, reason

ACCOUNT = "/api/spot/accountList"

# coinstore-openapi.github.io source/en/index.html.md, "Assets Balance", Response (verbatim).
ACCOUNT_EXAMPLE = """{
    "data": [
        {
            "uid": 315,
            "accountId": 1134971,
            "currency": "USDT",
            "balance": "0.05001",
            "type": 4,
            "typeName": "FROZEN"
        },
        {
            "uid": 315,
            "accountId": 1134971,
            "currency": "USDT",
            "balance": "13297.94999",
            "type": 1,
            "typeName": "AVAILABLE"
        }
    ],
    "code": 0
}"""


def routes(answer: Canned) -> dict[str, Canned]:
    return {ACCOUNT: answer}


def test_signing_follows_the_official_python_example() -> None:
    """The docs' Python example: key = hex(HMAC(secret, str(floor(expires / 30000)))),
    sign = hex(HMAC(key as text, payload)) over json.dumps({}) for accountList."""
    secret, expires = b"secret", 1629291143107
    key = hmac.new(secret, str(math.floor(expires / 30000)).encode(), hashlib.sha256).hexdigest()
    expected = hmac.new(key.encode(), b"{}", hashlib.sha256).hexdigest()
    assert sign("secret", expires, b"{}") == expected


async def test_account_example_is_accepted_and_claims_nothing() -> None:
    seen: list[httpx.Request] = []
    result = await audit("coinstore", answering(routes((200, ACCOUNT_EXAMPLE)), seen))
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    assert dict(result.facts.permissions) == {}
    assert [(r.method, r.url.path, r.content) for r in seen] == [("POST", ACCOUNT, b"{}")]


async def test_code_zero_as_a_string_is_success() -> None:
    """ "Return Format": its example writes ``"code": "0"`` (a string) for success."""
    result = await audit("coinstore", answering(routes((200, '{"code": "0", "data": []}'))))
    assert result.ok, result.error


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, Reason.BAD_RESPONSE),  # "Bad Request - Invalid request format": keymon's request
        (401, Reason.KEY_REJECTED),  # "signature failed - Invalid API Key"
        (404, Reason.BAD_RESPONSE),  # "service not found"
        (429, Reason.RATE_LIMITED),  # "too many visits"
        (500, Reason.EXCHANGE_UNAVAILABLE),  # "internal server error"
    ],
)
async def test_documented_http_statuses(status: int, expected: Reason) -> None:
    result = await audit("coinstore", answering(routes((status, b""))))
    assert reason(result) is expected, result.error


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        # Third-party (connectors' observations, not Coinstore's docs): 1401 "Unauthorized"
        # for an unknown key, an unbound IP or a missing permission alike.
        (200, {"code": 1401, "message": "Unauthorized"}, Reason.KEY_REJECTED),
        # Third-party: 401 "signature-failed".
        (200, {"code": 401, "message": "signature-failed"}, Reason.KEY_REJECTED),
        # A failure code nobody documents: bad_response.
        (200, {"code": 3, "message": "something else"}, Reason.BAD_RESPONSE),
        # The documented HTTP 401 with a body code: the status decides.
        (401, {"code": 9, "message": "Invalid API Key"}, Reason.KEY_REJECTED),
    ],
    ids=["1401-third-party", "401-third-party", "undocumented", "http-401"],
)
async def test_body_codes(status: int, body: object, expected: Reason) -> None:
    result = await audit("coinstore", answering(routes((status, body))))
    assert reason(result) is expected, result.error
