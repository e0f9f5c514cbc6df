"""A fake LBank spot REST v2, written from exchange-apis.md §2.12, LBank's support article on
error codes (21534616606105) and its official connectors, not from keymon's adapter.

Serves ``GET /v2/timestamp.do`` (``{"result": "true", "data": ms, ...}``) and the signed
``POST /v2/supplement/api_Restrictions.do``. A signed request carries, in the query string (as
LBank's official Java connector sends it) or the form body (the official Python connector),
``api_key`` and ``sign``, and in headers ``timestamp`` (ms), ``signature_method``
(``HmacSHA256``) and ``echostr`` (30 to 40 alphanumerics). ``sign`` is hex HMAC-SHA256, under
the secret, of the uppercase hex MD5 of ``api_key``, the three header values and any business
parameters, sorted by name and joined as ``k=v&...``. A header value repeated among the
parameters must agree with the header (``10002`` otherwise).

Every answer is HTTP 200 with ``{"result": "true"|"false", "error_code": ..., "ts": ...}``:
``10001`` a required parameter missing, ``10002`` headers that contradict the parameters,
``10031`` a bad ``echostr``, ``10005`` an unknown key, ``10007`` a bad signature, ``10004``
requests too frequent. What LBank does not document, this fake assumes (and says so):
``10600`` (ccxt's "intercepted by replay attacks filter, check timestamp") for a stamp more
than :data:`TIMESTAMP_WINDOW_MS` from its clock; ``10022`` (insufficient API key
permissions) for an IP the key is not bound to; ``10005`` for a frozen, expired (LBank expires
an unbound trading key after 30 days) or disabled key. The success ``data`` of
``api_Restrictions.do`` is unconfirmed too: :attr:`LbankSimulator.restrictions_data` holds a
guessed shape that tests may replace.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any, ClassVar, Final
from urllib.parse import parse_qsl

from keymon.simulator.demo_keys import DemoKey, DemoVenue, register_liveness
from keymon.simulator.liveness import (
    Answer,
    LivenessSimulator,
    Refusal,
    Request,
    json_response,
)
from keymon.simulator.server import SimResponse

__all__ = ["LbankSimulator", "sign"]

TIME_PATH: Final = "/v2/timestamp.do"
RESTRICTIONS_PATH: Final = "/v2/supplement/api_Restrictions.do"
#: An assumption: LBank does not document how far a timestamp may stray.
TIMESTAMP_WINDOW_MS: Final = 60_000
_REQUIRED: Final = ("api_key", "echostr", "signature_method", "timestamp", "sign")
#: Sent as headers by the official connectors (and signed as if they were parameters).
_HEADERS: Final = ("timestamp", "signature_method", "echostr")
_REFUSALS: Final = {
    Refusal.MISSING_AUTH: (10001, "The required parameters can not be empty"),
    Refusal.UNKNOWN_KEY: (10005, "Secret key does not exist"),
    Refusal.BAD_SIGNATURE: (10007, "Invalid signature"),
    Refusal.TIMESTAMP: (10600, "intercepted by replay attacks filter, check timestamp"),
    Refusal.IP_REFUSED: (10022, "Invalid authorization"),
    Refusal.FROZEN: (10005, "Secret key does not exist"),
    Refusal.EXPIRED: (10005, "Secret key does not exist"),
    Refusal.DISABLED: (10005, "Secret key does not exist"),
    Refusal.RATE_LIMITED: (10004, "Request too frequent"),
}


def sign(secret: str, params: dict[str, str]) -> tuple[str, str]:
    """(uppercase hex MD5 of the sorted ``k=v&...``, hex HMAC-SHA256 of it under ``secret``)."""
    joined = "&".join(f"{name}={params[name]}" for name in sorted(params))
    digest = hashlib.md5(joined.encode()).hexdigest().upper()  # noqa: S324 - LBank's scheme
    return digest, hmac.new(secret.encode(), digest.encode(), hashlib.sha256).hexdigest()


class LbankSimulator(LivenessSimulator):
    """A thread-safe, in-memory LBank v2 fake with an injectable clock (seconds)."""

    probe: ClassVar[tuple[str, str]] = ("POST", RESTRICTIONS_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    #: A generous per-key limit; tests lower it with set_rate_limit.
    rate_limit: ClassVar[tuple[int, float]] = (20, 1.0)
    #: A guessed shape (a third-party project's, not LBank's): unconfirmed.
    restrictions_data: ClassVar[dict[str, Any]] = {
        "enableReading": True,
        "enableSpotTrading": True,
        "enableWithdrawals": False,
        "ipRestrict": True,
        "createTime": 1_700_000_000_000,
    }

    def time_body(self, now_ms: int) -> SimResponse:
        return json_response(200, {"result": "true", "data": now_ms, "error_code": 0, "ts": now_ms})

    def authenticate(self, request: Request, now_ms: int) -> str:
        # api_key, sign and any business parameters: in the query (the official Java
        # connector) or the form body (the official Python connector); timestamp,
        # signature_method and echostr: in headers (every official connector).
        params = dict(parse_qsl(request.raw_query, keep_blank_values=True))
        params |= dict(parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True))
        for name in _HEADERS:
            given = request.header(name)
            if name in params and given is not None and params[name] != given:
                raise Answer(_error(10002, "Validation failed", now_ms))
            if given is not None:
                params[name] = given
        if any(not params.get(name) for name in _REQUIRED):
            raise self.refuse(Refusal.MISSING_AUTH, request)
        echostr = params["echostr"]
        if not (30 <= len(echostr) <= 40 and echostr.isalnum()):
            raise Answer(
                _error(
                    10031, "echostr length must be valid and length must be from 30 to 40", now_ms
                )
            )
        timestamp = params["timestamp"]
        if not timestamp.isdigit() or abs(now_ms - int(timestamp)) > TIMESTAMP_WINDOW_MS:
            raise self.refuse(Refusal.TIMESTAMP, request)
        api_key = params["api_key"]
        key = self.key_for(api_key, request)
        given = params.pop("sign")
        if params["signature_method"] != "HmacSHA256":
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        _, expected = sign(key.secret, params)
        if not hmac.compare_digest(expected, given.lower()):
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        return api_key

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        code, msg = _REFUSALS[why]
        return _error(code, msg, self._now_ms())

    def success(self, request: Request, api_key: str) -> SimResponse:
        now = self._now_ms()
        return json_response(
            200,
            {"result": "true", "data": dict(self.restrictions_data), "error_code": 0, "ts": now},
        )


def _error(code: int, msg: str, now_ms: int) -> SimResponse:
    return json_response(200, {"result": "false", "error_code": code, "msg": msg, "ts": now_ms})


#: ``keymon demo``'s keys here, each in a state an operator should recognise.
DEMO = DemoVenue(
    register_liveness,
    lambda now: [
        DemoKey("sierra-lbank", "sierra", "lbank", "liveness only: accepted from this IP")
    ],
)
