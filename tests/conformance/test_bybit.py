"""Bybit against its own documentation: the official example answers and error table.

Sources (the official docs repository, bybit-exchange/docs, commit 072c197d0, which renders
https://bybit-exchange.github.io/docs/v5/...):
- [KEY] docs/v5/user/apikey-info.mdx — ``GET /v5/user/query-api``, response example and table.
- [TIME] docs/v5/market/time.mdx — ``GET /v5/market/time``, response example.
- [ERR] docs/v5/error.mdx — HTTP codes and the "UTA" error table.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from keymon.model import Reason
from tests.conformance.answering import audit_routed, respond, routes

KEY = {"exchange": "bybit", "api_key": "XXXXXXXX", "api_secret": "secret"}

# [KEY] verbatim.
OFFICIAL_QUERY_API: dict[str, Any] = {
    "retCode": 0,
    "retMsg": "",
    "result": {
        "id": "2208369",
        "note": "testnet",
        "apiKey": "XXXXXXXX",
        "readOnly": 1,
        "secret": "",
        "permissions": {
            "ContractTrade": ["Order", "Position"],
            "Spot": ["SpotTrade"],
            "Wallet": ["AccountTransfer", "SubMemberTransfer"],
            "Options": [],
            "Derivatives": ["DerivativesTrade"],
            "CopyTrading": [],
            "BlockTrade": [],
            "Exchange": ["ExchangeHistory"],
            "NFT": [],
            "Affiliate": [],
            "Earn": ["Earn"],
            "FiatP2P": ["FiatP2POrder", "Advertising"],
            "FiatConvertBroker": ["FiatConvertBrokerOrder"],
            "FiatGlobalPay": [],
            "FiatBitPay": ["FaitPayOrder"],
            "BitCard": ["BitCard"],
            "ByXPost": ["ByXPost"],
        },
        "ips": ["18.181.170.164", "13.212.45.47", "13.212.45.48"],
        "type": 1,
        "deadlineDay": -2,
        "expiredAt": "1970-01-01T00:00:00Z",
        "createdAt": "2025-10-13T03:20:45Z",
        "unified": 0,
        "uta": 1,
        "userID": 1448939,
        "inviterID": 0,
        "vipLevel": "PRO-1",
        "mktMakerLevel": "0",
        "affiliateID": 0,
        "rsaPublicKey": "",
        "isMaster": True,
        "parentUid": "0",
        "kycLevel": "LEVEL_1",
        "kycRegion": "MYS",
        "userIDInt64": "0",
        "inviterIDInt64": "0",
        "affiliateIDInt64": "0",
    },
    "retExtInfo": {},
    "time": 1760339648573,
}
# [TIME] verbatim.
OFFICIAL_TIME = {
    "retCode": 0,
    "retMsg": "OK",
    "result": {"timeSecond": "1688639403", "timeNano": "1688639403423213947"},
    "retExtInfo": {},
    "time": 1688639403423,
}
RAW_ENTRIES = (
    "Exchange:ExchangeHistory",
    "Earn:Earn",
    "FiatP2P:FiatP2POrder",
    "FiatP2P:Advertising",
    "FiatConvertBroker:FiatConvertBrokerOrder",
    "FiatBitPay:FaitPayOrder",
    "BitCard:BitCard",
    "ByXPost:ByXPost",
)


def _handler(status: int, body: object, headers: dict[str, str] | None = None) -> Any:
    return routes(
        {
            "/v5/market/time": respond(200, OFFICIAL_TIME),
            "/v5/user/query-api": respond(status, body, headers),
        }
    )


async def test_official_example_is_a_read_only_key() -> None:
    """``readOnly: 1`` ("Read only"): whatever the groups list, the key can trade and move
    nothing; three bound IPs; created 2025-10-13; ``expiredAt`` at the epoch and
    ``deadlineDay: -2`` (an IP-bound key: no expiry); a personal key of a master account."""
    result = await audit_routed(KEY, _handler(200, OFFICIAL_QUERY_API))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": False,
        "futures_trade": False,
        "options_trade": False,
        "withdraw": False,
        "universal_transfer": False,
        "internal_transfer": False,
        **dict.fromkeys(RAW_ENTRIES, False),
    }
    assert facts.ip_restricted is True
    assert facts.ip_list == ("18.181.170.164", "13.212.45.47", "13.212.45.48")
    assert facts.created_at == datetime(2025, 10, 13, 3, 20, 45, tzinfo=UTC)
    assert facts.deadlines == ()
    assert facts.account_kind == "master"
    assert facts.third_party_app is False
    assert facts.key_locked is None
    assert facts.last_used_at is None


async def test_official_example_read_write() -> None:
    """The same key read-write (``readOnly: 0``): each documented entry turns its permission on
    (``ContractTrade``/``Derivatives`` futures, ``SpotTrade``, ``AccountTransfer`` universal,
    ``SubMemberTransfer`` internal); ``Withdraw`` absent from a shown Wallet group is off; a
    sub-account key (``isMaster: false``) bound to a third-party app (``type: 2``)."""
    body = copy.deepcopy(OFFICIAL_QUERY_API)
    body["result"].update(readOnly=0, type=2, isMaster=False, parentUid="1448938")
    result = await audit_routed(KEY, _handler(200, body))
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": True,
        "futures_trade": True,
        "options_trade": False,
        "withdraw": False,
        "universal_transfer": True,
        "internal_transfer": True,
        **dict.fromkeys(RAW_ENTRIES, True),
    }
    assert facts.account_kind == "sub"
    assert facts.third_party_app is True


async def test_unbound_key_expiry() -> None:
    """[KEY]: ``expiredAt``/``deadlineDay`` apply to keys with no IP bound: a deadline."""
    body = copy.deepcopy(OFFICIAL_QUERY_API)
    body["result"].update(ips=["*"], deadlineDay=80, expiredAt="2026-01-01T00:00:00Z")
    result = await audit_routed(KEY, _handler(200, body))
    facts = result.facts
    assert facts is not None
    assert facts.ip_restricted is False
    assert facts.ip_list == ()
    assert [(d.kind, d.at) for d in facts.deadlines] == [
        ("key_expiry", datetime(2026, 1, 1, tzinfo=UTC))
    ]


def _error(code: int, msg: str) -> dict[str, object]:
    return {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": 1}


@pytest.mark.parametrize(
    ("code", "msg", "reason"),
    [
        # [ERR] "UTA" table, verbatim messages.
        (-1, "request expired: o@0, now[] diff[]", Reason.CLOCK_SKEW),
        (-2015, "(Spot) Your api key has expired", Reason.KEY_REJECTED),
        (33004, "(Derivatives) Your api key has expired", Reason.KEY_REJECTED),
        (10000, "Server Timeout", Reason.EXCHANGE_UNAVAILABLE),
        (10002, "The request time exceeds the time window range.", Reason.CLOCK_SKEW),
        (10003, "API key is invalid.", Reason.KEY_REJECTED),
        (
            10004,
            "Error sign, please check your signature generation algorithm.",
            Reason.KEY_REJECTED,
        ),
        (10005, "Permission denied, please check your API key permissions.", Reason.KEY_REJECTED),
        (10006, "Too many visits. Exceeded the API Rate Limit.", Reason.RATE_LIMITED),
        (10007, "User authentication failed.", Reason.KEY_REJECTED),
        (10008, "Common banned, please check your account mode", Reason.KEY_REJECTED),
        (
            10009,
            "Service Restricted: Access is currently unavailable for your region.",
            Reason.KEY_REJECTED,
        ),
        (
            10010,
            "Unmatched IP, please check your API key's bound IP addresses.",
            Reason.KEY_REJECTED,
        ),
        (10016, "Server error.", Reason.EXCHANGE_UNAVAILABLE),
        (10018, "Exceeded the IP Rate Limit.", Reason.RATE_LIMITED),  # struck out, still mapped
        # Documented, but with no meaning for a key audit: stays bad_response.
        (10024, "Compliance rules triggered", Reason.BAD_RESPONSE),
        (10001, "Request parameter error", Reason.BAD_RESPONSE),
    ],
)
async def test_error_table(code: int, msg: str, reason: Reason) -> None:
    result = await audit_routed(KEY, _handler(200, _error(code, msg)))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message
    assert result.error.code == code


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        # [ERR] HTTP codes: 401 wrong key or missing auth headers; 403 IP rate limit breached
        # (or a U.S. IP); 429 system-level frequency protection.
        (401, Reason.KEY_REJECTED),
        (403, Reason.BANNED),
        (429, Reason.RATE_LIMITED),
    ],
)
async def test_http_codes(status: int, reason: Reason) -> None:
    result = await audit_routed(KEY, _handler(status, b""))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message
