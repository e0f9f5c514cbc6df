"""KuCoin: ``GET /api/v1/user/api-key`` (record of what was checked, and what was not).

Sources: KuCoin's "Get API Key Info" page (https://www.kucoin.com/docs-new/, Account Info ->
Get API Key Info) documents ``remark``, ``apiKey``, ``apiVersion``, ``permission`` (comma
string: ``General``, ``Spot``, ``Margin``, ``Futures``, ``InnerTransfer``, ``Transfer``, ...),
``ipWhitelist`` (masked), ``createdAt`` (ms), ``uid`` and ``isMaster``. That page's example was
NOT readable in our stored copies: the body below follows the documented fields (as
exchange-apis.md §2.3 and our simulator have them), not verbatim. The error codes (400001-400007
key/passphrase/timestamp/signature, 400006 IP, 429000 rate limit) are covered by
tests/exchanges/test_kucoin.py.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from tests.conformance.answering import audit_routed, respond, routes

KEY = {
    "exchange": "kucoin",
    "api_key": "6576b1b9e4d1e8000114d7c9",
    "api_secret": "secret",
    "passphrase": "passphrase",
}

DOCUMENTED_FIELDS_ANSWER: dict[str, Any] = {
    "code": "200000",
    "data": {
        "remark": "desk",
        "apiKey": "6576b1b9e4d1e8000114d7c9",
        "apiVersion": 3,
        "permission": "General,Spot",
        "ipWhitelist": "203.**.10",
        "createdAt": 1702277562000,
        "uid": 165111215,
        "isMaster": True,
    },
}


def _handler(body: object) -> Any:
    return routes(
        {
            "/api/v1/timestamp": respond(200, {"code": "200000", "data": 1702277562000}),
            "/api/v1/user/api-key": respond(200, body),
        }
    )


async def test_documented_fields() -> None:
    result = await audit_routed(KEY, _handler(DOCUMENTED_FIELDS_ANSWER))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.permissions["read"] is True
    assert facts.permissions["spot_trade"] is True
    assert facts.permissions["withdraw"] is False
    assert facts.ip_restricted is True
    assert facts.ip_list == ("203.**.10",)
    assert facts.created_at == datetime.fromtimestamp(1702277562, UTC)
    assert facts.account_kind == "master"
    assert facts.key_locked is None
    assert facts.last_used_at is None


async def test_sub_account_key() -> None:
    body = copy.deepcopy(DOCUMENTED_FIELDS_ANSWER)
    body["data"]["isMaster"] = False
    result = await audit_routed(KEY, _handler(body))
    assert result.facts is not None
    assert result.facts.account_kind == "sub"
