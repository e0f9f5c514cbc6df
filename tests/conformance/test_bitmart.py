"""BitMart conformance record: BitMart's own docs on keymon's calls, and how keymon reads them.

Sources (official): https://developer-pro.bitmart.com/en/error/ ("List of global HTTP return
codes", "Authentication Error Code" with each code's HTTP status, and its example answer);
the official Python SDK bitmartexchange/bitmart-python-sdk-api (``bitmart/lib/cloud_consts.py``
for the paths ``/system/time`` and ``/spot/v4/query/open-orders``; ``tests/test_api_system.py``,
which reads ``['data']['server_time']``; ``bitmart/lib/cloud_utils.py`` for
``timestamp#memo#body``). No verbatim example answer of ``/system/time`` or of the v4
open-orders query was found in the stored copies: the time answer below is BitMart's envelope
around the SDK's ``data.server_time`` (constructed), and the open-orders answer is the error
page's own success example (verbatim; keymon reads nothing of ``data``).
"""

from __future__ import annotations

import httpx
import pytest

from keymon.model import Coverage, Reason
from tests.conformance.answering import Canned, answering, audit, reason

TIME = "/system/time"
OPEN_ORDERS = "/spot/v4/query/open-orders"
MEMO = "conformanceMemo"

# Constructed: BitMart's envelope; data.server_time as the official SDK's test reads it.
TIME_ANSWER = {
    "code": 1000,
    "trace": "886fb6ae-456b-4654-b4e0-d681ac05cea1",
    "message": "OK",
    "data": {"server_time": 1527777538000},
}

# developer-pro.bitmart.com/en/error/, "Authentication Error Code", Example (verbatim).
OK_EXAMPLE = '{"code": 1000, "message": "OK", "trace": "12323-3243242-34334534-4353","data":{}}'


def routes(answer: Canned) -> dict[str, Canned]:
    return {TIME: (200, TIME_ANSWER), OPEN_ORDERS: answer}


async def test_ok_example_is_accepted_and_claims_nothing() -> None:
    seen: list[httpx.Request] = []
    result = await audit("bitmart", answering(routes((200, OK_EXAMPLE)), seen), memo=MEMO)
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    assert dict(result.facts.permissions) == {}
    assert [(r.method, r.url.path) for r in seen] == [("GET", TIME), ("POST", OPEN_ORDERS)]


def test_time_answer_is_read() -> None:
    from keymon.exchanges.bitmart import BitmartAdapter, BitmartSettings

    adapter = BitmartAdapter(httpx.AsyncClient(), BitmartSettings())
    assert adapter.parse_server_time(TIME_ANSWER) == 1527777538000.0


# developer-pro.bitmart.com/en/error/, "Authentication Error Code": (HTTP status, code,
# error message, the reason its meaning implies). Every row is the page's, verbatim.
ERRORS: list[tuple[int, int, str, Reason]] = [
    (401, 30001, "Header X-BM-KEY is empty", Reason.BAD_RESPONSE),  # keymon's own request
    (401, 30002, "Header X-BM-KEY not found", Reason.KEY_REJECTED),
    (401, 30003, "Header X-BM-KEY has frozen", Reason.KEY_REJECTED),
    (401, 30004, "Header X-BM-SIGN is empty", Reason.BAD_RESPONSE),  # keymon's own request
    (401, 30005, "Header X-BM-SIGN is wrong", Reason.KEY_REJECTED),
    (401, 30006, "Header X-BM-TIMESTAMP is empty", Reason.BAD_RESPONSE),  # keymon's request
    (401, 30007, "Header X-BM-TIMESTAMP range. Within a minute", Reason.CLOCK_SKEW),
    (401, 30008, "Header X-BM-TIMESTAMP invalid format", Reason.BAD_RESPONSE),  # keymon's
    (
        403,
        30010,
        "IP is forbidden. We recommend enabling IP whitelist for API trading. "
        "After that reauth your account",
        Reason.KEY_REJECTED,
    ),
    (403, 30011, "Header X-BM-KEY over expire time", Reason.KEY_REJECTED),
    (403, 30012, "Header X-BM-KEY is forbidden to request it", Reason.KEY_REJECTED),
    (429, 30013, "Request too many requests", Reason.RATE_LIMITED),
    (503, 30014, "Service unavailable", Reason.EXCHANGE_UNAVAILABLE),
    # "Not found" (30000, 404) has no meaning for the key: bad_response.
    (404, 30000, "Not found", Reason.BAD_RESPONSE),
    # A code the table does not list, under a documented status: the status's meaning.
    (401, 39999, "a code BitMart's table does not list", Reason.KEY_REJECTED),
    (403, 39999, "a code BitMart's table does not list", Reason.KEY_REJECTED),
    (400, 39999, "a code BitMart's table does not list", Reason.BAD_RESPONSE),
]


@pytest.mark.parametrize(
    ("status", "code", "message", "expected"),
    ERRORS,
    ids=[f"{status}-{code}" for status, code, _, _ in ERRORS],
)
async def test_error_table(status: int, code: int, message: str, expected: Reason) -> None:
    body = {"code": code, "message": message, "trace": "t", "data": {}}
    result = await audit("bitmart", answering(routes((status, body))), memo=MEMO)
    assert reason(result) is expected, result.error
    assert result.error is not None
    assert result.error.code == code


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        # "List of global HTTP return codes": 401 authentication failed; 403 no permission
        # (the key's, or an IP restriction); 500 BitMart's problem; 404 not found.
        (401, Reason.KEY_REJECTED),
        (403, Reason.KEY_REJECTED),
        (500, Reason.EXCHANGE_UNAVAILABLE),
        (404, Reason.BAD_RESPONSE),
        (429, Reason.RATE_LIMITED),
    ],
)
async def test_http_statuses_without_a_code(status: int, expected: Reason) -> None:
    result = await audit("bitmart", answering(routes((status, b"<html></html>"))), memo=MEMO)
    assert reason(result) is expected, result.error
