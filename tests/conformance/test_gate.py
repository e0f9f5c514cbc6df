"""Gate (APIv4) against its own documentation: official example answers, key state, errors.

Sources:
- [DETAIL] https://www.gate.io/docs/developers/apiv4/en/#getaccountdetail-responses —
  ``GET /account/detail`` example (stored copy of the official page).
- [KEYS] https://www.gate.io/docs/developers/apiv4/zh_CN/ "查询主账户下的全部Key信息" —
  ``GET /account/main_keys`` example and table: ``state`` 1 正常 (normal), 2 锁定 (locked),
  3 冻结 (frozen); ``last_access`` 最近使用时间 (last use); ``perms[].name`` includes
  ``account`` 账户信息 (account information) (stored copy of the official page).
- [SDK] gateio/gateapi-python (commit 744afea) docs/AccountDetail.md, docs/SubAccountKey.md
  (``state``), docs/SubAccountKeyPerms.md (``account: account information`` is a permission
  of its own).
- [LABELS] error labels: Gate's label list was not readable in our stored copies; the labels
  below are those of exchange-apis.md §2.4 and ccxt's gate map (third-party).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from keymon.model import Coverage, Reason
from tests.conformance.answering import audit_routed, respond, routes

KEY = {"exchange": "gate", "api_key": "c5dcfbf1f3a7abcdef0123456789", "api_secret": "secret"}

# [DETAIL] verbatim.
OFFICIAL_DETAIL: dict[str, Any] = {
    "user_id": 1667201533,
    "ip_whitelist": ["127.0.0.1"],
    "currency_pairs": ["USDT_BTC"],
    "key": {"mode": 1},
    "tier": 2,
    "copy_trading_role": 1,
}
# [KEYS] verbatim.
OFFICIAL_MAIN_KEYS: list[dict[str, Any]] = [
    {
        "state": 1,
        "mode": 1,
        "name": "test1",
        "user_id": 1,
        "perms": [{"name": "account", "read_only": False}, {"name": "spot", "read_only": False}],
        "ip_whitelist": [],
        "currency_pairs": ["BTC_USD", "ETH_USD"],
        "key": "c5dcfbf1f3a7*****",
        "created_at": 1753030929,
        "update_at": 1756300567,
        "last_access": 1753030929,
    },
    {
        "state": 1,
        "mode": 1,
        "name": "test2",
        "user_id": 1,
        "perms": [{"name": "spot", "read_only": False}, {"name": "account", "read_only": False}],
        "ip_whitelist": [],
        "currency_pairs": ["BTC_USD", "ETH_USD"],
        "key": "52fd0035f665*****",
        "created_at": 1753897991,
        "update_at": 1756300567,
        "last_access": 1753897991,
    },
]
SERVER_TIME = {"server_time": 1753030929000}


def _handler(detail: Any, keys: Any) -> Any:
    return routes(
        {
            "/api/v4/spot/time": respond(200, SERVER_TIME),
            "/api/v4/account/detail": respond(*detail),
            "/api/v4/account/main_keys": respond(*keys),
        }
    )


async def test_official_examples() -> None:
    """The key is ``c5dcfbf1f3a7*****`` of [KEYS]: spot read-write (``spot_trade``), the
    ``account`` write perm kept raw, everything mapped and unlisted off; whitelisted to
    127.0.0.1 per [DETAIL]; created and last used 2025-07-20; state 1: not locked."""
    result = await audit_routed(KEY, _handler((200, OFFICIAL_DETAIL), (200, OFFICIAL_MAIN_KEYS)))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.coverage is Coverage.INTROSPECTION
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": True,
        "margin_trade": False,
        "futures_trade": False,
        "options_trade": False,
        "margin_loan": False,
        "withdraw": False,
        "account": True,
    }
    assert facts.ip_restricted is True
    assert facts.ip_list == ("127.0.0.1",)
    assert facts.created_at == datetime.fromtimestamp(1753030929, UTC)
    assert facts.last_used_at == datetime.fromtimestamp(1753030929, UTC)
    assert facts.deadlines == ()
    assert facts.key_locked is False
    assert facts.account_kind is None
    assert facts.third_party_app is None


@pytest.mark.parametrize(("state", "locked"), [(1, False), (2, True), (3, True), (9, None)])
async def test_key_state_is_the_lock(state: int, locked: bool | None) -> None:
    """[KEYS] ``state``: 2 locked, 3 frozen: the key is locked; an undocumented value: unknown."""
    keys = copy.deepcopy(OFFICIAL_MAIN_KEYS)
    keys[0]["state"] = state
    result = await audit_routed(KEY, _handler((200, OFFICIAL_DETAIL), (200, keys)))
    assert result.facts is not None
    assert result.facts.key_locked is locked


async def test_main_keys_refused_leaves_permissions_not_visible() -> None:
    result = await audit_routed(
        KEY,
        _handler((200, OFFICIAL_DETAIL), (403, {"label": "FORBIDDEN", "message": "No permission"})),
    )
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {}
    assert facts.ip_list == ("127.0.0.1",)
    assert facts.key_locked is None
    assert facts.last_used_at is None


async def test_forbidden_account_detail_is_an_accepted_key() -> None:
    """``FORBIDDEN`` on account/detail comes after authentication: a trading key without the
    ``account`` read permission [SDK]. Not a dead key: accepted, nothing visible (liveness)."""
    result = await audit_routed(
        KEY,
        _handler((403, {"label": "FORBIDDEN", "message": "No permission"}), (200, [])),
    )
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert facts.coverage is Coverage.LIVENESS
    assert dict(facts.permissions) == {}
    assert facts.ip_restricted is None
    assert facts.ip_list is None


@pytest.mark.parametrize(
    ("status", "label", "reason"),
    [
        # [LABELS] third-party.
        (401, "INVALID_KEY", Reason.KEY_REJECTED),
        (401, "INVALID_CREDENTIALS", Reason.KEY_REJECTED),
        (401, "INVALID_SIGNATURE", Reason.KEY_REJECTED),
        (401, "MISSING_REQUIRED_HEADER", Reason.KEY_REJECTED),
        (403, "IP_FORBIDDEN", Reason.KEY_REJECTED),
        (403, "ACCOUNT_LOCKED", Reason.KEY_REJECTED),
        (401, "REQUEST_EXPIRED", Reason.CLOCK_SKEW),
        (429, "TOO_MANY_REQUESTS", Reason.RATE_LIMITED),
        (500, "SERVER_ERROR", Reason.EXCHANGE_UNAVAILABLE),
        # No meaning for a key audit: stays bad_response.
        (400, "INVALID_PARAM_VALUE", Reason.BAD_RESPONSE),
    ],
)
async def test_error_labels(status: int, label: str, reason: Reason) -> None:
    body = {"label": label, "message": "message"}
    result = await audit_routed(KEY, _handler((status, body), (status, body)))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message
