# ruff: noqa: E501, RUF001 - XT's example answer is quoted verbatim (long lines, a full-width semicolon)
"""XT.com conformance record: XT's own docs on keymon's call, and how keymon reads them.

Sources (official): xt-com/xt-api (the source of https://doc.xt.com):
``_user_center_apikey/queryUserApiKey.md`` ("Query user's apiKey (applicable to master and sub
account)", ``GET /v4/user/account/api-key``, example answer), ``createAccountApiKey.md`` and
``modifyAccountApiKey.md`` (the roleScopes codes: QUERY, TRADE "spot and margin trade",
WITHDRAW, LEVER_LOAN "margin pledged", FUTURE, TRANSFER), ``_user_center_documentation/``
(``restApi.md``: production host https://api.xt.com; ``signStatement.md`` and
``signSteps.md``: the validate-* signing; ``errorCode.md``: HTTP statuses, rc, and the
user-center codes) and ``_documentation/errorCode.md`` (the spot table with ``AUTH_001`` ..
``AUTH_106``). The signature walk-through's printed signature cannot be reproduced from the
inputs it prints (its exact body is not given), so it is not used as a vector. ccxt's xt
module (third-party) agrees on the host ``https://api.xt.com`` for ``user/account/api-key``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import httpx
import pytest

from keymon.model import Coverage, Reason
from tests.conformance.answering import Canned, answering, audit, reason

API_KEY = "/v4/user/account/api-key"

# xt-com/xt-api _user_center_apikey/queryUserApiKey.md, Response (verbatim, with XT's own //
# comments; they are stripped before serving, as they are not JSON).
QUERY_EXAMPLE = """{
  "rc": 0,
  "mc": "SUCCESS",
  "ma": [
    {}
  ],
  "result": [
    {
        "id": 1,
        "userAccountId": "1352123154435",                         //account id
        "userAccountLevel": 1,                                    //account level: 1-master account; 2-sub account
        "userId": 1352123154435,                                  //user id
        "keyName": "abc",                                         //apiKey name
        "bindIps": "",                                            //bind ip list
        "accessKey": "b5e58714-2382-4e2f-8762-81b5ec9d363a",      //encryption key
        "secretKey": "17aef63c0cba308089fae03e2b13a4794bd2d411",  //encryption string
        "isLock": 0,                                              //isLock: 0-apiKey is not locked；1-apiKey is locked
        "roleScopes": "QUERY_TRADE",                              //permissions code: QUERY_TRADE: trade is enabled; QUERY_NO_TRADE: trade is not enabled
        "tags": null,                                             //tags
        "createTime": "2023-02-17 05:41:43",                      //apiKey create time
        "updateTime": "2023-02-17 05:41:43"                       //apiKey update time
    },
    {
        "id": 2,
        "userAccountId": "13523123154435",                        //account id
        "userAccountLevel": 1,                                    //account level: 1-master account; 2-sub account
        "userId": 1352123154435,                                  //user id
        "keyName": "bcd",                                         //apiKey name
        "bindIps": "",                                            //bind ip list
        "accessKey": "b5e58714-2382-4e2f-8762-81b5ec9d363a",      //encryption key
        "secretKey": "17aef63c0cba308089fae03e2b13a4794bd2d411",  //encryption string
        "isLock": 0,                                              //isLock: 0-apiKey is not locked；1-apiKey is locked
        "roleScopes": "QUERY_TRADE",                              //permissions code: QUERY_TRADE: trade is enabled; QUERY_NO_TRADE: trade is not enabled
        "tags": null,                                             //tags
        "createTime": "2023-02-17 05:41:43",                      //apiKey create time
        "updateTime": "2023-02-17 05:41:43"                       //apiKey update time
    }
  ]
}"""
EXAMPLE_ACCESS_KEY = "b5e58714-2382-4e2f-8762-81b5ec9d363a"
EXAMPLE_SECRET = "17aef63c0cba308089fae03e2b13a4794bd2d411"


def without_comments(text: str) -> str:
    return re.sub(r"//[^\n]*", "", text)


def routes(answer: Canned) -> dict[str, Canned]:
    return {API_KEY: answer}


async def test_query_example_gives_the_facts_the_docs_describe() -> None:
    """QUERY_TRADE ("trade is enabled"): read and trading on, nothing else; bindIps "": no IP
    binding; isLock 0; a master account's key created 2023-02-17 05:41:43 (read as UTC)."""
    seen: list[httpx.Request] = []
    result = await audit(
        "xt",
        answering(routes((200, without_comments(QUERY_EXAMPLE))), seen),
        api_key=EXAMPLE_ACCESS_KEY,
    )
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.coverage is Coverage.INTROSPECTION
    on = {name for name, value in facts.permissions.items() if value}
    off = {name for name, value in facts.permissions.items() if not value}
    assert on == {"read", "spot_trade", "margin_trade"}
    assert {"withdraw", "futures_trade", "internal_transfer", "universal_transfer"} <= off
    assert facts.ip_restricted is False
    assert facts.ip_list == ()
    assert facts.created_at == datetime(2023, 2, 17, 5, 41, 43, tzinfo=UTC)
    assert facts.key_locked is False
    assert facts.account_kind == "master"
    # XT's answer carries every key's secret: none of it is kept.
    assert EXAMPLE_SECRET not in repr(facts)
    assert [(r.method, r.url.path) for r in seen] == [("GET", API_KEY)]
    # An IP-less key under the market-maker policy: ip_unrestricted fires, untrusted_ip is
    # evaluated (an empty list holds nothing untrusted).
    rules = {str(f.rule) for f in result.findings}
    assert "ip_unrestricted" in rules
    assert "untrusted_ip" in {str(c.rule) for c in result.evaluation.checks}


@pytest.mark.parametrize(
    ("scopes", "on"),
    [
        # The create/modify pages' codes.
        ("QUERY,TRADE", {"read", "spot_trade", "margin_trade"}),
        ("QUERY,WITHDRAW", {"read", "withdraw"}),
        ("QUERY,LEVER_LOAN", {"read", "margin_loan"}),
        ("QUERY,FUTURE", {"read", "futures_trade"}),
        ("QUERY,TRANSFER", {"read", "internal_transfer", "universal_transfer"}),
        # The query page's own legacy values.
        ("QUERY_NO_TRADE", {"read"}),
    ],
)
async def test_documented_role_scopes(scopes: str, on: set[str]) -> None:
    """A permission the docs say is on is reported on; every other code is off."""
    body = without_comments(QUERY_EXAMPLE).replace('"QUERY_TRADE"', f'"{scopes}"', 1)
    result = await audit("xt", answering(routes((200, body))), api_key=EXAMPLE_ACCESS_KEY)
    assert result.facts is not None, result.error
    assert {name for name, value in result.facts.permissions.items() if value} == on


# (HTTP status, mc, description, the reason its meaning implies). Spot table:
# _documentation/errorCode.md; user-center table: _user_center_documentation/errorCode.md.
ERRORS: list[tuple[int, str, str, Reason]] = [
    (200, "AUTH_001", "missing request header validate-appkey", Reason.BAD_RESPONSE),
    (200, "AUTH_002", "missing request header validate-timestamp", Reason.BAD_RESPONSE),
    (200, "AUTH_003", "missing request header validate-recvwindow", Reason.BAD_RESPONSE),
    (200, "AUTH_004", "bad request header validate-recvwindow", Reason.BAD_RESPONSE),
    (200, "AUTH_005", "missing request header validate-algorithms", Reason.BAD_RESPONSE),
    (200, "AUTH_006", "bad request header validate-algorithms", Reason.BAD_RESPONSE),
    (200, "AUTH_007", "missing request header validate-signature", Reason.BAD_RESPONSE),
    (200, "AUTH_101", "ApiKey does not exist", Reason.KEY_REJECTED),
    (200, "AUTH_102", "ApiKey is not activated", Reason.KEY_REJECTED),
    (200, "AUTH_103", "Signature error", Reason.KEY_REJECTED),
    (200, "AUTH_104", "Unbound IP request", Reason.KEY_REJECTED),
    (200, "AUTH_105", "outdated message", Reason.CLOCK_SKEW),
    (200, "AUTH_106", "Exceeded apikey permission", Reason.KEY_REJECTED),
    (200, "COMMON_001", "The user does not exist", Reason.KEY_REJECTED),
    (200, "COMMON_002", "System busy, please try it later", Reason.EXCHANGE_UNAVAILABLE),
    (
        200,
        "NO_OPERATION_PERMISSION",
        "current account does not have permission to operate",
        Reason.KEY_REJECTED,
    ),
    # No meaning for a read of the key's own settings: bad_response.
    (200, "FAILURE", "fail", Reason.BAD_RESPONSE),
    (
        200,
        "PERMISSION_LIMIT",
        "it's not allowed to operate other user resources",
        Reason.BAD_RESPONSE,
    ),
    # The HTTP statuses of both tables.
    (429, "429", "The request is too frequent", Reason.RATE_LIMITED),
    (500, "500", "Service exception", Reason.EXCHANGE_UNAVAILABLE),
    (502, "502", "Gateway exception", Reason.EXCHANGE_UNAVAILABLE),
    (503, "503", "Service unavailable, please try again later", Reason.EXCHANGE_UNAVAILABLE),
    (404, "404", "interface does not exist", Reason.BAD_RESPONSE),
]


@pytest.mark.parametrize(
    ("status", "code", "text", "expected"),
    ERRORS,
    ids=[f"{status}-{code}" for status, code, _, _ in ERRORS],
)
async def test_error_tables(status: int, code: str, text: str, expected: Reason) -> None:
    body = {"rc": 1, "mc": code, "ma": [text], "result": None}
    result = await audit("xt", answering(routes((status, body))))
    assert reason(result) is expected, result.error
