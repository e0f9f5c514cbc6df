"""HTX (formerly Huobi) against its own documentation: the key-info answer and error codes.

Sources:
- [ANN] HTX announcement "HTX Will Introduce The API Key Management Endpoints"
  (https://www.huobi.com/support/en-us/detail/900001195006/): ``GET /v2/user/api-key``, the
  ``permission`` values (``readOnly`` required, ``trade`` optional; comma separated),
  ``ipAddresses`` (at most 10, comma separated; "Without any IP address binding, the API key
  will expire in 90 days").
- [DOC] https://huobiapi.github.io/docs/spot/v1/en/ ("Query API key information"): its
  example answer was not readable in our stored copies. The body below is built from the
  documented fields (``accessKey``, ``status``, ``note``, ``permission``, ``ipAddresses``,
  ``validDays``, ``createTime``, ``updateTime``; field names confirmed by the third-party
  schema aluna-crypto/alunajs src/exchanges/huobi/schemas/IHuobiKeySchema.ts), NOT verbatim.
- [ERR] the v1 error codes ``api-signature-not-valid``, ``api-signature-check-failed``,
  ``base-request-exceed-frequency-limit``, ``system-maintenance``, named by HTX's docs and
  listed in exchange-apis.md's "Known corrections"; HTX's full table was not readable here.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from keymon.model import Reason
from tests.conformance.answering import audit_routed, respond, routes

ACCESS_KEY = "4ed49817-3e3f5a1c-1a2b3c4d-5e6f7"
KEY = {"exchange": "htx", "api_key": ACCESS_KEY, "api_secret": "secret", "uid": "100009"}

# [DOC] fields, constructed (see the module docstring): a read+trade key bound to two IPs.
DOCUMENTED_FIELDS_ANSWER: dict[str, Any] = {
    "code": 200,
    "message": "success",
    "data": [
        {
            "accessKey": ACCESS_KEY,
            "status": "normal",
            "note": "desk",
            "permission": "readOnly,trade",
            "ipAddresses": "202.106.196.115,202.106.96.0/24",
            "validDays": -1,
            "createTime": 1591348751000,
            "updateTime": 1591348751000,
        }
    ],
}


def _handler(status: int, body: object) -> Any:
    return routes({"/v2/user/api-key": respond(status, body)})


async def test_documented_fields_map() -> None:
    """readOnly -> read, trade -> spot_trade (margin/futures: ``trade`` may cover them, the
    docs do not say: not visible), withdraw absent -> off; the [ANN] example IPs; created
    2020-06-05; status normal -> not locked."""
    result = await audit_routed(KEY, _handler(200, DOCUMENTED_FIELDS_ANSWER))
    assert result.ok, result.error
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {"read": True, "spot_trade": True, "withdraw": False}
    assert facts.ip_restricted is True
    assert facts.ip_list == ("202.106.196.115", "202.106.96.0/24")
    assert facts.created_at == datetime.fromtimestamp(1591348751, UTC)
    assert facts.deadlines == ()  # validDays is kept raw (its sentinel is unconfirmed)
    assert facts.key_locked is False
    assert facts.account_kind is None
    assert facts.third_party_app is None
    assert facts.last_used_at is None


async def test_read_only_key_and_a_status_other_than_normal() -> None:
    body = copy.deepcopy(DOCUMENTED_FIELDS_ANSWER)
    body["data"][0].update(permission="readOnly", ipAddresses="", status="expired")
    result = await audit_routed(KEY, _handler(200, body))
    facts = result.facts
    assert facts is not None
    assert dict(facts.permissions) == {
        "read": True,
        "spot_trade": False,
        "withdraw": False,
        "margin_trade": False,
        "futures_trade": False,
    }
    assert facts.ip_restricted is False
    assert facts.key_locked is True


@pytest.mark.parametrize(
    ("status", "code", "reason"),
    [
        (200, "api-signature-not-valid", Reason.KEY_REJECTED),
        (200, "api-signature-check-failed", Reason.KEY_REJECTED),
        (200, "base-request-exceed-frequency-limit", Reason.RATE_LIMITED),
        (429, "base-request-exceed-frequency-limit", Reason.RATE_LIMITED),
        (200, "system-maintenance", Reason.EXCHANGE_UNAVAILABLE),
        # A code these sources give no meaning for a key audit: stays bad_response.
        (200, "invalid-parameter", Reason.BAD_RESPONSE),
    ],
)
async def test_error_codes(status: int, code: str, reason: Reason) -> None:
    body = {"status": "error", "err-code": code, "err-msg": "message", "data": None}
    result = await audit_routed(KEY, _handler(status, body))
    assert result.error is not None
    assert result.error.reason is reason, result.error.message
