"""A fake XT.com spot API v4, written from exchange-apis.md §2.11 and XT's "Signature
Instructions" / "Signature generation" pages (not from keymon's adapter).

Serves ``GET /v4/public/time`` (``result.serverTime``, ms) and the signed ``GET /v4/balances``.
A signed request carries ``validate-appkey``, ``validate-timestamp`` (ms),
``validate-recvwindow`` (ms, at most 60000), ``validate-algorithms`` (HmacMD5, HmacSHA1,
HmacSHA224, HmacSHA256, HmacSHA384 or HmacSHA512) and ``validate-signature``: lowercase hex
HMAC of ``X + Y``, where ``X`` is those four headers sorted by name as ``name=value`` joined
with ``&``, and ``Y`` is ``#METHOD#path``, then ``#query`` (pairs sorted by key) if there is a
query and ``#body`` (raw) if there is a body. A timestamp older than the recvwindow or more
than 1 s ahead of the server is outdated.

Answers use XT's envelope ``{"rc", "mc", "ma", "result"}`` (rc 0, mc ``SUCCESS``). The error
codes are the third-party ones (ccxt): ``AUTH_001``..``AUTH_007`` for a missing or bad header,
``AUTH_101`` unknown key, ``AUTH_102`` key not activated (this fake's answer for a frozen,
expired or disabled key: XT documents nothing finer), ``AUTH_103`` signature, ``AUTH_104``
unbound IP, ``AUTH_105`` outdated. XT's pages give no HTTP status for these; this fake answers
them with HTTP 200, as XT's envelope carries the outcome, and answers a rate limit with HTTP
429 (XT: "429 will be returned") and ``mc`` ``"429"``.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import ClassVar, Final

from keymon.simulator.liveness import (
    Answer,
    LivenessSimulator,
    Refusal,
    Request,
    json_response,
)
from keymon.simulator.server import SimResponse

__all__ = ["ALGORITHMS", "XtSimulator", "signature_payload"]

TIME_PATH: Final = "/v4/public/time"
BALANCES_PATH: Final = "/v4/balances"
MAX_RECV_WINDOW_MS: Final = 60_000
#: How far ahead of the server a timestamp may be.
AHEAD_MS: Final = 1000
ALGORITHMS: Final = {
    "HmacMD5": hashlib.md5,
    "HmacSHA1": hashlib.sha1,
    "HmacSHA224": hashlib.sha224,
    "HmacSHA256": hashlib.sha256,
    "HmacSHA384": hashlib.sha384,
    "HmacSHA512": hashlib.sha512,
}

_REFUSALS: Final[dict[Refusal, tuple[int, str]]] = {
    Refusal.MISSING_AUTH: (200, "AUTH_001"),
    Refusal.UNKNOWN_KEY: (200, "AUTH_101"),
    Refusal.FROZEN: (200, "AUTH_102"),
    Refusal.EXPIRED: (200, "AUTH_102"),
    Refusal.DISABLED: (200, "AUTH_102"),
    Refusal.BAD_SIGNATURE: (200, "AUTH_103"),
    Refusal.IP_REFUSED: (200, "AUTH_104"),
    Refusal.TIMESTAMP: (200, "AUTH_105"),
    Refusal.RATE_LIMITED: (429, "429"),
}


def signature_payload(
    headers: dict[str, str], method: str, path: str, query: str, body: str
) -> str:
    """``X + Y``: the ``validate-*`` headers (sorted, ``&``-joined) and ``#METHOD#path...``."""
    x = "&".join(f"{name}={headers[name]}" for name in sorted(headers))
    y = f"#{method}#{path}"
    if query:
        pairs = sorted(
            part.split("=", 1) if "=" in part else [part, ""] for part in query.split("&")
        )
        y += "#" + "&".join(f"{k}={v}" for k, v in pairs)
    if body:
        y += "#" + body
    return x + y


def _error(status: int, code: str) -> SimResponse:
    return json_response(status, {"rc": 1, "mc": code, "ma": [], "result": None})


class XtSimulator(LivenessSimulator):
    """A thread-safe, in-memory XT spot v4 fake with an injectable clock (seconds)."""

    probe: ClassVar[tuple[str, str]] = ("GET", BALANCES_PATH)
    time_path: ClassVar[str | None] = TIME_PATH
    rate_limit: ClassVar[tuple[int, float]] = (50, 1.0)

    def time_body(self, now_ms: int) -> SimResponse:
        return json_response(
            200, {"rc": 0, "mc": "SUCCESS", "ma": [], "result": {"serverTime": now_ms}}
        )

    def authenticate(self, request: Request, now_ms: int) -> str:
        fields = {
            "validate-algorithms": request.header("validate-algorithms"),
            "validate-appkey": request.header("validate-appkey"),
            "validate-recvwindow": request.header("validate-recvwindow"),
            "validate-timestamp": request.header("validate-timestamp"),
        }
        signature = request.header("validate-signature")
        for name, code in (
            ("validate-appkey", "AUTH_001"),
            ("validate-timestamp", "AUTH_002"),
            ("validate-recvwindow", "AUTH_003"),
            ("validate-algorithms", "AUTH_005"),
        ):
            if not fields[name]:
                raise Answer(_error(200, code))
        if not signature:
            raise Answer(_error(200, "AUTH_007"))
        headers = {name: value for name, value in fields.items() if value is not None}
        window = headers["validate-recvwindow"]
        if not window.isdigit() or not 0 < int(window) <= MAX_RECV_WINDOW_MS:
            raise Answer(_error(200, "AUTH_004"))
        digest = ALGORITHMS.get(headers["validate-algorithms"])
        if digest is None:
            raise Answer(_error(200, "AUTH_006"))
        api_key = headers["validate-appkey"]
        key = self.key_for(api_key, request)
        timestamp = headers["validate-timestamp"]
        if not timestamp.isdigit():
            raise self.refuse(Refusal.TIMESTAMP, request)
        if now_ms - int(timestamp) >= int(window) or int(timestamp) > now_ms + AHEAD_MS:
            raise self.refuse(Refusal.TIMESTAMP, request)
        payload = signature_payload(
            headers,
            request.method,
            request.path,
            request.raw_query,
            request.body.decode("utf-8", "replace"),
        )
        expected = hmac.new(key.secret.encode(), payload.encode(), digest).hexdigest()
        if not hmac.compare_digest(expected, signature.lower()):
            raise self.refuse(Refusal.BAD_SIGNATURE, request)
        return api_key

    def refusal(self, why: Refusal, request: Request | None) -> SimResponse:
        status, code = _REFUSALS[why]
        return _error(status, code)

    def success(self, request: Request, api_key: str) -> SimResponse:
        return json_response(
            200,
            {
                "rc": 0,
                "mc": "SUCCESS",
                "ma": [],
                "result": {
                    "totalUsdtAmount": "1000.00",
                    "totalBtcAmount": "0.0102",
                    "assets": [
                        {
                            "currency": "usdt",
                            "currencyId": 11,
                            "frozenAmount": "0",
                            "availableAmount": "1000.00",
                            "totalAmount": "1000.00",
                            "convertBtcAmount": "0.0102",
                            "convertUsdtAmount": "1000.00",
                        }
                    ],
                },
            },
        )

    def not_found(self, request: Request) -> SimResponse:
        return json_response(404, {"rc": 1, "mc": "404", "ma": [], "result": None})
