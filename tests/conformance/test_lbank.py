"""LBank conformance record: LBank's own sources on keymon's call, and how keymon reads them.

Sources (official): LBank-exchange/lbank-official-api-docs ``API-For-Spot-EN/Error Code.md``
(and ``API-For-Spot-CN/币币交易错误代码.md``, where 10022 reads "insufficient API key
permissions"); LBank support article https://www.lbank.com/support/articles/21534616606105
(the same table); the official connectors: LBank-exchange/lbank-connector-java
(``RequestHandler.sendSignedRequest``, ``RequestBuilder.buildApiKeyRequest``: api_key and sign
in the query of the POST, timestamp/echostr/signature_method as headers),
LBank-exchange/lbank-connector-python (``lbank/old_api.py``, ``lbank/utils.py build_md5``: the
same parameters, signed as sorted ``k=v&...``, uppercase MD5, then HMAC-SHA256 hex) and
LBank-exchange/lbank-connector-nodejs (``src/APIBase.js``). **No** official example answer of
``POST /v2/supplement/api_Restrictions.do`` or of ``GET /v2/timestamp.do`` was found: the
answers below are LBank's ``{"result", "data", "error_code", "ts"}`` envelope (constructed),
and keymon claims no fact from ``api_Restrictions.do``. ``10600`` is third-party (ccxt).
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import parse_qsl

import httpx
import pytest

from keymon.model import Coverage, Reason
from tests.conformance.answering import Canned, answering, audit, reason

TIME = "/v2/timestamp.do"
RESTRICTIONS = "/v2/supplement/api_Restrictions.do"
SECRET = "conformanceSecret0001"

# Constructed: LBank's envelope with the server time in data (the shape ccxt reads).
TIME_ANSWER = {
    "result": "true",
    "data": 1_795_000_000_000,
    "error_code": 0,
    "ts": 1_795_000_000_000,
}
# Constructed: an accepted answer whose data fields LBank does not document.
ACCEPTED = {
    "result": "true",
    "data": {"enableReading": True, "enableWithdrawals": True, "ipRestrict": False},
    "error_code": 0,
    "ts": 1_795_000_000_000,
}


def routes(answer: Canned) -> dict[str, Canned]:
    return {TIME: (200, TIME_ANSWER), RESTRICTIONS: answer}


async def test_the_request_is_the_official_java_connectors() -> None:
    """api_key and sign in the query, an empty body, the three stamps only as headers; the
    signature as lbank-connector-python's build_md5 + build_hmacsha256 compute it."""
    seen: list[httpx.Request] = []
    result = await audit("lbank", answering(routes((200, ACCEPTED)), seen), api_secret=SECRET)
    assert result.ok, result.error
    call = seen[-1]
    assert (call.method, call.url.path, call.content) == ("POST", RESTRICTIONS, b"")
    query = dict(parse_qsl(call.url.query.decode()))
    assert set(query) == {"api_key", "sign"}
    signed = {
        "api_key": query["api_key"],
        "timestamp": call.headers["timestamp"],
        "signature_method": call.headers["signature_method"],
        "echostr": call.headers["echostr"],
    }
    joined = "&".join(f"{k}={signed[k]}" for k in sorted(signed))
    md5 = hashlib.md5(joined.encode()).hexdigest().upper()  # noqa: S324 - LBank's scheme
    assert query["sign"] == hmac.new(SECRET.encode(), md5.encode(), hashlib.sha256).hexdigest()


async def test_undocumented_answer_claims_no_fact() -> None:
    """The answer's fields are undocumented: no permission, IP or withdraw fact is claimed,
    even from a field named like Binance's."""
    result = await audit("lbank", answering(routes((200, ACCEPTED))))
    assert result.ok, result.error
    assert result.facts is not None
    assert result.facts.coverage is Coverage.LIVENESS
    assert dict(result.facts.permissions) == {}
    assert result.facts.ip_restricted is None


# API-For-Spot-EN/Error Code.md: (code, description, the reason its meaning implies).
ERRORS: list[tuple[int, str, Reason]] = [
    (10000, "Internal error", Reason.EXCHANGE_UNAVAILABLE),
    (10001, "The required parameters can not be empty", Reason.BAD_RESPONSE),  # keymon's
    (10002, "Validation Failed", Reason.KEY_REJECTED),
    (10003, "Invalid parameter", Reason.BAD_RESPONSE),  # keymon's own request
    (10004, "Request too frequent", Reason.RATE_LIMITED),
    (10005, "Secret key does not exist", Reason.KEY_REJECTED),
    (10006, "User does not exist", Reason.KEY_REJECTED),
    (10007, "Invalid signature", Reason.KEY_REJECTED),
    (10017, "Server Error", Reason.EXCHANGE_UNAVAILABLE),
    (10022, "Access denied", Reason.KEY_REJECTED),  # CN: insufficient API key permissions
    # Withdraw and trading codes have no meaning for this call.
    (10100, "Has no privilege to withdraw", Reason.BAD_RESPONSE),
    (10008, "Invalid Trading Pair", Reason.BAD_RESPONSE),
    # Third-party only (ccxt): "intercepted by replay attacks filter, check timestamp".
    (10600, "intercepted by replay attacks filter, check timestamp", Reason.CLOCK_SKEW),
]


@pytest.mark.parametrize(
    ("code", "msg", "expected"), ERRORS, ids=[str(code) for code, _, _ in ERRORS]
)
async def test_error_table(code: int, msg: str, expected: Reason) -> None:
    body = {"result": "false", "error_code": code, "msg": msg, "ts": 1}
    result = await audit("lbank", answering(routes((200, body))))
    assert reason(result) is expected, result.error
    assert result.error is not None
    assert result.error.code == code
