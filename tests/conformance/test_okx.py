"""OKX against its own documentation: ``GET /api/v5/account/config`` and the auth error codes.

Sources:
- [DOC] https://www.okx.com/docs-v5/en/#trading-account-rest-api-get-account-configuration —
  field table: ``uid``, ``mainUid`` ("The current request account is main account if uid =
  mainUid. The current request account is sub-account if uid != mainUid."), ``perm``
  (``read_only``, ``trade``, ``withdraw``), ``ip`` (IP addresses linked with the key; empty:
  none), ``label``. The table text was read through a third-party copy (the aahl/mcp-okx tool
  schema); the official example answer was not readable in our stored copies, so the body below
  is built from the documented fields, NOT verbatim.
- [ERR] OKX's v5 error table, as published on OKX's own pages (web3.okx.com ".../error-code",
  "Authentication" block): 50100 API frozen, 50102 timestamp request expired, 50103-50107
  header missing, 50105 passphrase incorrect, 50111 invalid OK-ACCESS-KEY, 50112 invalid
  OK-ACCESS-TIMESTAMP, 50113 invalid signature, 50011 rate limit, 50001 service unavailable.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from keymon.model import Reason
from tests.conformance.answering import audit_routed, respond, routes

KEY = {
    "exchange": "okx",
    "api_key": "okx-conformance",
    "api_secret": "secret",
    "passphrase": "passphrase",
}

DOCUMENTED_FIELDS_ANSWER: dict[str, Any] = {
    "code": "0",
    "msg": "",
    "data": [
        {
            "uid": "44705892343619584",
            "mainUid": "44705892343619584",
            "acctLv": "2",
            "posMode": "long_short_mode",
            "autoLoan": False,
            "label": "v5 test",
            "perm": "read_only,trade",
            "ip": "203.0.113.10,198.51.100.7",
        }
    ],
}
SERVER_TIME = {"code": "0", "msg": "", "data": [{"ts": "1597026383085"}]}


def _handler(status: int, body: object) -> Any:
    return routes(
        {
            "/api/v5/public/time": respond(200, SERVER_TIME),
            "/api/v5/account/config": respond(status, body),
        }
    )


async def test_documented_fields() -> None:
    """read_only -> read, trade -> spot_trade (the products ``trade`` covers beyond spot are not
    shown apart), withdraw absent -> off; two linked IPs; uid = mainUid: a master key."""
    result = await audit_routed(KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.permissions["read"] is True
    assert facts.permissions["spot_trade"] is True
    assert facts.permissions["withdraw"] is False
    assert facts.ip_restricted is True
    assert facts.ip_list == ("203.0.113.10", "198.51.100.7")
    assert facts.created_at is None
    assert facts.deadlines == ()
    assert facts.account_kind == "master"
    assert facts.key_locked is None
    assert facts.third_party_app is None
    assert facts.last_used_at is None


async def test_sub_account_key_and_no_ip() -> None:
    body = copy.deepcopy(DOCUMENTED_FIELDS_ANSWER)
    body["data"][0].update(mainUid="1", ip="", perm="read_only,withdraw")
    result = await audit_routed(KEY, _handler(200, body))
    facts = result.facts
    assert facts is not None
    assert facts.account_kind == "sub"
    assert facts.ip_restricted is False
    assert facts.permissions["withdraw"] is True
    assert facts.permissions["spot_trade"] is False


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (400, "50100", Reason.KEY_REJECTED),
        (401, "50105", Reason.KEY_REJECTED),
        (401, "50111", Reason.KEY_REJECTED),
        (401, "50113", Reason.KEY_REJECTED),
        (401, "50102", Reason.CLOCK_SKEW),
        (429, "50011", Reason.RATE_LIMITED),
        (503, "50001", Reason.EXCHANGE_UNAVAILABLE),
        # Documented, no meaning for a key audit: stays bad_response.
        (400, "51000", Reason.BAD_RESPONSE),
    ],
)
async def test_error_table(status: int, code: str, reason: Reason) -> None:
    result = await audit_routed(KEY, _handler(status, {"code": code, "msg": "message", "data": []}))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message
