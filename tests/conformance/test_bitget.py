"""Bitget against its own documentation: the official example answer and the error codes.

Sources:
- [DOC] https://www.bitget.com/api-doc/spot/account/Get-Account-Info (English and the zh-CN
  page https://www.bitget.com/zh-CN/api-doc/spot/account/Get-Account-Info): the example answer
  and the field table of ``authorities`` (read-only ``coor cpor stor smor ttor wtor taxr chor
  p2pr pllr``; read-write ``coow cpow stow smow ttow wtow wwow chow p2pw pllw taxw``).
- [TIME] https://www.bitget.com/api-doc/common/public/Get-Server-Time (``data.serverTime``).
- [CCXT] third-party: ccxt's ``bitget`` exceptions map (github.com/ccxt/ccxt, python/ccxt/
  bitget.py, ``exceptions.exact``), whose comments quote Bitget's own messages. Bitget's error
  page (api-doc/common/error-code/restapi) was not readable in our stored copies.
"""

from __future__ import annotations

from typing import Any

import pytest

from keymon.model import Reason
from tests.conformance.answering import audit_routed, respond, routes

KEY = {
    "exchange": "bitget",
    "api_key": "bg_conformance",
    "api_secret": "secret",
    "passphrase": "passphrase",
}

# [DOC] verbatim (English page).
OFFICIAL_ACCOUNT_INFO: dict[str, Any] = {
    "code": "00000",
    "msg": "success",
    "requestTime": 1695808949356,
    "data": {
        "userId": "**********",
        "inviterId": "**********",
        "ips": "127.0.0.1",
        "authorities": ["trade", "readonly"],
        "parentId": 1,
        "traderType": "trader",
        "channelCode": "XXX",
        "channel": "YYY",
        "regisTime": "1246566789345",
    },
}
# [TIME] the documented shape.
SERVER_TIME = {"code": "00000", "msg": "success", "requestTime": 0, "data": {"serverTime": "1"}}


def _handler(status: int, body: object) -> Any:
    return routes(
        {
            "/api/v2/public/time": respond(200, SERVER_TIME),
            "/api/v2/spot/account/info": respond(status, body),
        }
    )


async def test_official_example_never_reads_trade_as_off() -> None:
    """``trade`` is a code the field table does not list: the key can trade something, the
    docs do not say what, so no trading permission (nor withdraw/transfer, which that
    vocabulary may not show) reads off. ``readonly`` is read. The rest as documented."""
    result = await audit_routed(KEY, _handler(200, OFFICIAL_ACCOUNT_INFO))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {"read": True, "trade": True}
    for hidden in ("spot_trade", "margin_trade", "futures_trade", "withdraw"):
        assert hidden not in facts.permissions  # not visible, never off
    assert facts.ip_restricted is True
    assert facts.ip_list == ("127.0.0.1",)
    assert facts.created_at is None  # regisTime is the account's registration
    assert facts.deadlines == ()
    assert facts.account_kind is None  # userId is masked in the example
    assert facts.key_locked is None
    assert facts.third_party_app is None
    assert facts.last_used_at is None


async def test_documented_codes_give_full_facts() -> None:
    """A key shown in the table's own codes: each listed write code on, the others off; a
    main account (parentId == userId)."""
    data = dict(OFFICIAL_ACCOUNT_INFO["data"])
    data.update(
        userId="1234567890", parentId=1234567890, authorities=["stor", "stow", "coor", "ttow"]
    )
    body = {**OFFICIAL_ACCOUNT_INFO, "data": data}
    result = await audit_routed(KEY, _handler(200, body))
    assert result.facts is not None
    assert dict(result.facts.permissions) == {
        "read": True,
        "spot_trade": True,
        "margin_trade": False,
        "futures_trade": False,
        "withdraw": False,
        "universal_transfer": False,
        "ttow": True,
    }
    assert result.facts.account_kind == "master"
    sub = {**OFFICIAL_ACCOUNT_INFO, "data": {**data, "parentId": 1}}
    result = await audit_routed(KEY, _handler(200, sub))
    assert result.facts is not None
    assert result.facts.account_kind == "sub"


@pytest.mark.parametrize(
    ("status", "code", "msg", "reason"),
    [
        # [CCXT] quoting Bitget's messages.
        (400, "40006", "Invalid ACCESS_KEY", Reason.KEY_REJECTED),
        (400, "40037", "Apikey does not exist", Reason.KEY_REJECTED),
        (400, "40009", "sign signature error", Reason.KEY_REJECTED),
        (400, "40010", "sign signature error", Reason.KEY_REJECTED),
        (400, "40012", "apikey/password is incorrect", Reason.KEY_REJECTED),
        (400, "40013", "User status is abnormal", Reason.KEY_REJECTED),
        (400, "40014", "Incorrect permissions", Reason.KEY_REJECTED),
        (400, "40018", "Invalid IP", Reason.KEY_REJECTED),
        (400, "40004", "Request timestamp expired", Reason.CLOCK_SKEW),
        (400, "40005", "Invalid ACCESS_TIMESTAMP", Reason.CLOCK_SKEW),
        (400, "40008", "Request timestamp expired", Reason.CLOCK_SKEW),
        (429, "429", "Too Many Requests", Reason.RATE_LIMITED),
        # A code no table gives a meaning to stays bad_response.
        (400, "49999", "something new", Reason.BAD_RESPONSE),
    ],
)
async def test_error_table(status: int, code: str, msg: str, reason: Reason) -> None:
    body = {"code": code, "msg": msg, "requestTime": 1695808949356, "data": None}
    result = await audit_routed(KEY, _handler(status, body))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message
    assert result.error.code == code
